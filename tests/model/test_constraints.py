"""Constraint parsing: operators, values, readable errors."""

from __future__ import annotations

import pytest

from scheduler.model.constraints import Operator, parse_constraint


@pytest.mark.parametrize(
    ("raw", "op", "value"),
    [
        (["hostname", "UNIQUE"], Operator.UNIQUE, None),
        (["rack", "CLUSTER", "r1"], Operator.CLUSTER, "r1"),
        (["rack", "CLUSTER"], Operator.CLUSTER, None),
        (["zone", "GROUP_BY"], Operator.GROUP_BY, None),
        (["zone", "GROUP_BY", "3"], Operator.GROUP_BY, "3"),
        (["hostname", "LIKE", "node-[ab]"], Operator.LIKE, "node-[ab]"),
        (["hostname", "UNLIKE", "node-c"], Operator.UNLIKE, "node-c"),
        (["rack", "MAX_PER", "2"], Operator.MAX_PER, "2"),
        (["zone", "IS", "z1"], Operator.IS, "z1"),
        (["zone", "is", "z1"], Operator.IS, "z1"),
    ],
)
def test_valid_constraints(raw: list[str], op: Operator, value: str | None) -> None:
    c = parse_constraint(raw)
    assert (c.field, c.operator, c.value) == (raw[0], op, value)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (["hostname"], "a constraint is"),
        (["hostname", "UNIQUE", "x"], "takes no value"),
        (["rack", "LIKE"], "needs a value"),
        (["rack", "LIKE", "("], "regular expression"),
        (["rack", "MAX_PER", "0"], "positive integer"),
        (["rack", "FOO"], "unknown constraint operator"),
        (["", "UNIQUE"], "must not be empty"),
    ],
)
def test_invalid_constraints_say_why(raw: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_constraint(raw)


def test_describe_reads_like_the_constraint() -> None:
    assert parse_constraint(["rack", "MAX_PER", "2"]).describe() == "MAX_PER rack 2"
    assert parse_constraint(["hostname", "UNIQUE"]).describe() == "UNIQUE hostname"

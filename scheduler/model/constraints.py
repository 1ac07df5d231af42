"""Marathon placement constraints: ``[field, OPERATOR, value?]``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Operator(StrEnum):
    """The seven Marathon operators."""

    UNIQUE = "UNIQUE"
    CLUSTER = "CLUSTER"
    GROUP_BY = "GROUP_BY"
    LIKE = "LIKE"
    UNLIKE = "UNLIKE"
    MAX_PER = "MAX_PER"
    IS = "IS"


# Which operators need a value, and of what kind.
_NEEDS_VALUE = {Operator.LIKE, Operator.UNLIKE, Operator.MAX_PER, Operator.IS}
_INT_VALUE = {Operator.MAX_PER, Operator.GROUP_BY}
_NO_VALUE = {Operator.UNIQUE}


@dataclass(frozen=True, slots=True)
class Constraint:
    """One constraint. ``value`` is ``None`` where the operator takes none (or it was omitted).

    For LIKE/UNLIKE the value is a regular expression that must match the *whole* field value.
    For MAX_PER it is the maximum per distinct value (>= 1); for GROUP_BY the optional expected
    number of distinct values.
    """

    field: str
    operator: Operator
    value: str | None = None

    def to_json(self) -> list[str]:
        return [self.field, self.operator.value] + ([self.value] if self.value is not None else [])

    @property
    def int_value(self) -> int:
        """The value as an integer (MAX_PER, GROUP_BY); 0 when absent."""
        return int(self.value) if self.value is not None else 0

    @property
    def pattern(self) -> re.Pattern[str]:
        """The compiled regex of LIKE/UNLIKE (cached by :mod:`re`)."""
        return re.compile(self.value or "")

    def describe(self) -> str:
        """Human text such as ``UNIQUE hostname`` or ``MAX_PER rack 2``."""
        return " ".join([self.operator.value, self.field] + ([self.value] if self.value else []))


def parse_constraint(raw: Any) -> Constraint:
    """Validate one constraint from JSON. Raises ``ValueError`` with a readable message."""
    if not isinstance(raw, list | tuple) or not (2 <= len(raw) <= 3):
        raise ValueError("a constraint is [field, OPERATOR] or [field, OPERATOR, value]")
    if not all(isinstance(x, str) for x in raw):
        raise ValueError("constraint field, operator and value must be strings")
    field, op_text = raw[0], raw[1]
    value = raw[2] if len(raw) == 3 else None
    if not field:
        raise ValueError("constraint field must not be empty")
    try:
        op = Operator(op_text.upper())
    except ValueError:
        known = ", ".join(o.value for o in Operator)
        raise ValueError(
            f"unknown constraint operator {op_text!r}; expected one of {known}"
        ) from None
    if op in _NEEDS_VALUE and value is None:
        raise ValueError(f"{op.value} needs a value")
    if op in _NO_VALUE and value is not None:
        raise ValueError(f"{op.value} takes no value")
    minimum = 1 if op is Operator.MAX_PER else 0
    if op in _INT_VALUE and value is not None and (
        not value.strip().isdigit() or int(value) < minimum
    ):
        raise ValueError(f"{op.value} value must be a positive integer, got {value!r}")
    if op in (Operator.LIKE, Operator.UNLIKE):
        try:
            re.compile(value or "")
        except re.error as e:
            raise ValueError(f"{op.value} value is not a valid regular expression: {e}") from None
    return Constraint(field=field, operator=op, value=value)

"""Validation errors shaped like Marathon's: a message plus ``{path, errors}`` details."""

from __future__ import annotations

from collections import OrderedDict

from pydantic import ValidationError


class SpecError(ValueError):
    """A definition failed validation.

    ``details`` is a list of ``(json_path, [messages])``; the path is a JSON pointer such as
    ``/upgradeStrategy/minimumHealthCapacity`` (``""`` means the whole document).
    """

    def __init__(self, message: str, details: list[tuple[str, list[str]]]) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_json(self) -> dict[str, object]:
        return {
            "message": self.message,
            "details": [{"path": p or "/", "errors": errs} for p, errs in self.details],
        }


def _pointer(loc: tuple[int | str, ...]) -> str:
    # pydantic puts validator-function names in loc for unions/after-validators; keep only
    # real field names and indices so the path points into the user's document.
    parts = [
        str(p)
        for p in loc
        if not (isinstance(p, str) and ("[" in p or p.startswith("function-")))
    ]
    return "".join(f"/{p}" for p in parts)


def errors_from_pydantic(e: ValidationError) -> list[tuple[str, list[str]]]:
    """Group pydantic errors by JSON pointer, with readable messages."""
    grouped: OrderedDict[str, list[str]] = OrderedDict()
    for err in e.errors(include_url=False):
        msg = str(err["msg"])
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        if err["type"] == "extra_forbidden":
            msg = "is not a known field"
        grouped.setdefault(_pointer(tuple(err["loc"])), []).append(msg)
    return list(grouped.items())

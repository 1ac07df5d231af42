"""Timestamps as Marathon writes them: UTC, millisecond precision, a trailing ``Z``."""

from __future__ import annotations

from datetime import UTC, datetime


def iso(dt: datetime) -> str:
    """Format an aware datetime as ``2026-01-01T00:00:00.000Z`` (converted to UTC)."""
    if dt.tzinfo is None:
        raise ValueError("naive datetimes are not allowed; pass an aware datetime")
    u = dt.astimezone(UTC)
    return u.strftime("%Y-%m-%dT%H:%M:%S.") + f"{u.microsecond // 1000:03d}Z"


def parse_iso(text: str) -> datetime:
    """Parse an ISO-8601 timestamp; a missing offset means UTC."""
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)

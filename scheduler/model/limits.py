"""Limits on definitions: every number bounded and finite, every string launchable.

Why each bound exists (the README's "Limits" section lists them for users):

- Durations are at most :data:`MAX_DURATION_SECONDS` (a year) and factors at most
  :data:`MAX_BACKOFF_FACTOR`: larger values mean "never" in practice, and they overflow
  ``datetime`` arithmetic (``now + timedelta(...)``) that the control loop does every pass.
- Numbers are finite (no ``Infinity``/``NaN``, also not as the strings ``"inf"``/``"nan"``,
  nor ``1e400``, which JSON decoders turn into infinity): responses must stay strict JSON.
- Integers are JSON integers (``true`` is not 1, ``"3"`` is not 3), as Marathon requires.
- Strings a task is started with (command, arguments, environment) hold no NUL byte, and
  environment names hold no ``=``: ``execve`` cannot pass them, so such a task could never
  start. Lengths keep one value below Linux's 128 KiB per-argument limit.
- An app id leaves room for the task ids made from it (``<id>.<uuid>``), which name sandbox
  directories (at most 255 bytes on Linux file systems).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, Field, Strict

MAX_DURATION_SECONDS = 365 * 24 * 3600
"""Any duration or interval in a definition (seconds, or an ISO-8601 duration)."""

MAX_BACKOFF_FACTOR = 100.0
MAX_INSTANCES = 2**31 - 1
"""Marathon keeps instances in a 32-bit int."""
MAX_CPUS = 1_000_000.0
MAX_MIB = 1e12
"""``mem`` and ``disk`` (MiB): an exbibyte; beyond it sums lose precision."""
MAX_COUNT = 1_000_000
"""Counters such as ``maxConsecutiveFailures``."""

MAX_APP_ID_LENGTH = 200
"""Characters in an app or group id (``/prod/web``): its task ids stay under 255 bytes."""
MAX_LABELS = 256
MAX_LABEL_KEY_LENGTH = 256
MAX_LABEL_VALUE_LENGTH = 4096
MAX_ENV = 1024
"""Entries of ``env`` / ``environmentVariables``."""
MAX_ENV_NAME_LENGTH = 256
MAX_ENV_VALUE_LENGTH = 65_536
MAX_COMMAND_LENGTH = 100_000
"""``cmd`` / ``command`` and each argument (Linux allows 131,072 bytes per argument)."""
MAX_ARGS = 1024
MAX_TIME_ZONE_LENGTH = 64
"""IANA zone names are at most ~30 characters; longer is a typo or an attack."""

# --- types for model fields -----------------------------------------------------------------

Int = Annotated[int, Strict()]
"""A JSON integer: no bool, no string, no float."""

Float = Annotated[float, Strict(), Field(allow_inf_nan=False)]
"""A finite JSON number: no bool, no string (so no ``"inf"``), no infinity or NaN."""


def _no_nul(v: str) -> str:
    if "\x00" in v:
        raise ValueError("must not contain a NUL character (a process cannot be started "
                         "with it)")
    return v


def _env_name(v: str) -> str:
    if "=" in v:
        raise ValueError("an environment variable name must not contain '='")
    return _no_nul(v)


Launchable = Annotated[str, Field(max_length=MAX_COMMAND_LENGTH), AfterValidator(_no_nul)]
"""A command or argument a process is started with."""

EnvName = Annotated[str, Field(min_length=1, max_length=MAX_ENV_NAME_LENGTH),
                    AfterValidator(_env_name)]
EnvValue = Annotated[str, Field(max_length=MAX_ENV_VALUE_LENGTH), AfterValidator(_no_nul)]
LabelKey = Annotated[str, Field(min_length=1, max_length=MAX_LABEL_KEY_LENGTH)]
LabelValue = Annotated[str, Field(max_length=MAX_LABEL_VALUE_LENGTH)]

Env = Annotated[dict[EnvName, EnvValue], Field(max_length=MAX_ENV)]
Labels = Annotated[dict[LabelKey, LabelValue], Field(max_length=MAX_LABELS)]


# --- checks on raw documents ----------------------------------------------------------------

def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def non_finite_paths(data: Any, prefix: str = "") -> list[str]:
    """JSON pointers of every infinite or NaN number in a decoded JSON document.

    Python's JSON decoder accepts ``Infinity``, ``NaN`` and turns ``1e400`` into infinity;
    free-form fields (``unreachableStrategy``, ``container.volumes``, ``fetch``...) would keep
    them, and every later response would be invalid JSON. Walks the whole document.
    """
    out: list[str] = []
    stack: list[tuple[str, Any]] = [(prefix, data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            out.append(path)
        elif isinstance(value, Mapping):
            stack.extend((f"{path}/{_escape(str(k))}", v) for k, v in value.items())
        elif isinstance(value, list | tuple):
            stack.extend((f"{path}/{i}", v) for i, v in enumerate(value))
    return sorted(out)


def non_finite_details(data: Any) -> list[tuple[str, list[str]]]:
    """:func:`non_finite_paths` as :class:`~scheduler.model.validation.SpecError` details."""
    return [(p, ["must be a finite number (no Infinity or NaN)"])
            for p in non_finite_paths(data)]


# --- arithmetic that never raises -----------------------------------------------------------

_LATEST = datetime.max.replace(tzinfo=UTC)


def bounded_seconds(value: float) -> float:
    """``value`` clamped into ``[0, MAX_DURATION_SECONDS]``; infinity is the maximum and NaN
    too (when a stored number is nonsense, waiting long is the safe reading)."""
    if math.isnan(value):
        return float(MAX_DURATION_SECONDS)
    return float(min(max(value, 0.0), MAX_DURATION_SECONDS))


def bounded_delta(delta: timedelta) -> timedelta:
    """``delta`` clamped into ``[0, MAX_DURATION_SECONDS]``."""
    return min(max(delta, timedelta(0)), timedelta(seconds=MAX_DURATION_SECONDS))


def add_seconds(when: datetime, seconds: float) -> datetime:
    """``when`` plus ``seconds`` (clamped by :func:`bounded_seconds`); past year 9999 this
    is the last representable instant instead of an ``OverflowError``."""
    try:
        return when + timedelta(seconds=bounded_seconds(seconds))
    except OverflowError:
        return _LATEST if when.tzinfo is not None else datetime.max

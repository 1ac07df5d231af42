"""Cron expressions in words, in the same style as ISO-8601 schedules are described
(:func:`scheduler.batch.schedule.describe`): ``every day at 02:30``, ``every 15 minutes on
Monday to Friday``, ``every month on the last day at 00:00``.

Pure: the expression is expanded by croniter (so names, ranges, steps and ``7`` for Sunday
are read exactly as the scheduler reads them) and the resulting sets are put into words.
Anything without a simpler reading falls back to listing the values, never to a wrong
sentence. The time zone is the caller's to add.
"""

from __future__ import annotations

from collections.abc import Sequence

from croniter import croniter  # type: ignore[import-untyped, unused-ignore]

_DAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")
_ALL = None  # an unrestricted field ("*")
_LAST = -1  # croniter's "L" in day-of-month

Field = tuple[int, ...] | None


def describe_cron(expression: str) -> str:
    """``30 2 * * *`` -> ``every day at 02:30``. Raises ``ValueError`` for an expression
    croniter does not accept."""
    try:
        fields, nth = croniter.expand(expression)
    except Exception as e:  # croniter's errors are ValueError/KeyError subclasses
        raise ValueError(f"cron expression {expression!r} is not valid: {e}") from None
    minutes, hours, doms, months, dows = (_field(f) for f in fields[:5])
    nth_dow = {int(k): tuple(sorted(int(n) for n in v)) for k, v in (nth or {}).items()}
    fixed, when = _time(minutes, hours)
    month = None if months is _ALL else _months(months)
    if doms is not _ALL and dows is _ALL and months is not _ALL and len(doms) == 1 \
            and len(months) == 1 and doms[0] != _LAST and fixed:
        return f"every year on {doms[0]} {_MONTHS[months[0] - 1]} {when}"
    if doms is _ALL and dows is _ALL:
        text = f"every day {when}" if fixed else when
    elif doms is _ALL and dows is not _ALL and not nth_dow and fixed:
        text = f"every {_weekdays(dows, nth_dow)} {when}"
    elif dows is _ALL and doms is not _ALL:
        text = f"every month {_monthdays(doms)} {when}" if fixed \
            else f"{when} {_monthdays(doms)} of the month"
    elif doms is _ALL and dows is not _ALL and fixed:
        text = f"every month on {_weekdays(dows, nth_dow)} {when}"
    elif doms is _ALL and dows is not _ALL:
        text = f"{when} on {_weekdays(dows, nth_dow)}"
    else:  # both restricted: as in cron, either matching is enough
        assert doms is not _ALL and dows is not _ALL
        text = f"{when} {_monthdays(doms)} of the month or on {_weekdays(dows, nth_dow)}"
    return text if month is None else f"{text} {month}"


def _field(values: Sequence[object]) -> Field:
    if values == ["*"]:
        return _ALL
    return tuple(sorted(_LAST if str(v).lower() == "l" else int(str(v)) for v in values))


def _step(values: tuple[int, ...], limit: int) -> int | None:
    """The step of ``0, s, 2s, ...`` covering ``range(limit)``, if that is what ``values`` is."""
    if len(values) < 2 or values[0] != 0:
        return None
    step = values[1]
    if limit % step or values != tuple(range(0, limit, step)):
        return None
    return step


def _contiguous(values: tuple[int, ...]) -> bool:
    return len(values) > 2 and values == tuple(range(values[0], values[-1] + 1))


def _and(words: Sequence[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _every(n: int, unit: str) -> str:
    return f"every {unit}" if n == 1 else f"every {n} {unit}s"


def _hours(hours: tuple[int, ...]) -> str:
    return ("hour " if len(hours) == 1 else "hours ") + _and([f"{h:02d}" for h in hours])


def _time(minutes: Field, hours: Field) -> tuple[bool, str]:
    """(fixed times of day?, words): ``(True, "at 02:30")`` or ``(False, "every 15
    minutes")``."""
    mstep = None if minutes is _ALL else _step(minutes, 60)
    if minutes is _ALL or mstep is not None:
        every = _every(mstep or 1, "minute")
        last = 59 if minutes is _ALL else minutes[-1]
        if hours is _ALL:
            return False, every
        if len(hours) == 1 or _contiguous(hours):
            return False, f"{every} from {hours[0]:02d}:00 to {hours[-1]:02d}:{last:02d}"
        return False, f"{every} during {_hours(hours)}"
    past = _and([f":{m:02d}" for m in minutes])
    if hours is _ALL:
        return False, f"every hour at {past}"
    if len(minutes) * len(hours) <= 4:
        return True, "at " + _and([f"{h:02d}:{m:02d}" for h in hours for m in minutes])
    step = _step(hours, 24)
    if step is not None and len(minutes) == 1:
        return False, f"{_every(step, 'hour')} at {past}"
    if len(minutes) == 1 and _contiguous(hours):
        m = minutes[0]
        return False, f"every hour from {hours[0]:02d}:{m:02d} to {hours[-1]:02d}:{m:02d}"
    return False, f"at {past} past {_hours(hours)}"


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _weekdays(dows: tuple[int, ...], nth: dict[int, tuple[int, ...]]) -> str:
    """Days named Monday first (cron counts from Sunday = 0)."""
    dows = tuple(sorted(dows, key=lambda d: (d - 1) % 7))
    if nth:
        return _and([f"the {_and([_ordinal(n) for n in nth[d]])} {_DAYS[d]}" if d in nth
                     else _DAYS[d] for d in dows])
    if _contiguous(tuple((d - 1) % 7 for d in dows)):
        return f"{_DAYS[dows[0]]} to {_DAYS[dows[-1]]}"
    return _and([_DAYS[d] for d in dows])


def _monthdays(doms: tuple[int, ...]) -> str:
    words = [("the last day" if d == _LAST else str(d)) for d in doms]
    if doms == (_LAST,):
        return "on the last day"
    if _contiguous(doms):
        return f"on days {doms[0]} to {doms[-1]}"
    plain = [w for w in words if w != "the last day"]
    text = ("on day " if len(plain) == 1 else "on days ") + _and(plain) if plain else "on"
    return text + (" and the last day" if _LAST in doms else "")


def _months(months: tuple[int, ...]) -> str:
    if _contiguous(months):
        return f"from {_MONTHS[months[0] - 1]} to {_MONTHS[months[-1] - 1]}"
    return "in " + _and([_MONTHS[m - 1] for m in months])

"""Schedules as text: the canonical ``R[n]/<start>/<period>`` to store, and a sentence for
the status page. Pure; the arithmetic lives in :mod:`scheduler.batch.schedule`."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from scheduler.batch.cron_words import describe_cron
from scheduler.batch.schedule import CronSchedule, IsoSchedule, Period, Schedule

__all__ = ["describe", "to_iso"]


def to_iso(s: IsoSchedule) -> str:
    """The canonical ``R[n]/<start>/<period>`` with the start resolved, to store.

    A start written without an offset stays a wall-clock reading in the job's zone (so a start
    in a DST gap keeps its intended local time); an absolute start, including an empty one
    resolved to ``now``, is written in the job's zone with its UTC offset. Parsing the result
    in the same zone gives the same occurrences; ``to_iso`` of that is the same text.
    """
    reps = "R" if s.repetitions is None else f"R{s.repetitions}"
    if s.anchor is not None:
        start = s.anchor.isoformat(timespec=_timespec(s.anchor))
    else:
        local = s.start.astimezone(ZoneInfo(s.tz))
        start = local.isoformat(timespec=_timespec(local))
        if local.utcoffset() == timedelta(0):
            start = start.removesuffix("+00:00") + "Z"
    return f"{reps}/{start}/{s.period.text}"


def _timespec(t: datetime) -> str:
    return "microseconds" if t.microsecond else "seconds"


def describe(s: Schedule) -> str:
    """A sentence for the status page.

    ``every day at 02:00 (Europe/Berlin)``, ``every 15 minutes, 5 times from 2026-01-01 00:00
    UTC``, ``every Monday to Friday at 09:00 (UTC)`` (cron, see :mod:`.cron_words`), ``once
    at 2026-06-01 12:00 UTC``, ``never (R0)``.
    """
    if isinstance(s, CronSchedule):
        return f"{describe_cron(s.expression)} ({s.tz})"
    n = s.repetitions
    start = s.start.astimezone(ZoneInfo(s.tz))
    if n == 0:
        return "never (R0)"
    if n == 1:
        return f"once at {_clock(start, date=True)} {s.tz}"
    p = s.period
    times = "" if n is None else f", {n} times"
    every = "every " + _every(p)
    if p.elapsed == timedelta(0):
        # A pure calendar period fires at one local time of day: say which.
        every += _calendar_position(p, s.wall_start)
        if n is None:
            return f"{every} ({s.tz})"
        return f"{every}{times} from {start:%Y-%m-%d} ({s.tz})"
    return f"{every}{times} from {_clock(start, date=True)} {s.tz}"


def _clock(t: datetime, *, date: bool = False) -> str:
    text = f"{t:%H:%M:%S}" if t.second or t.microsecond else f"{t:%H:%M}"
    return f"{t:%Y-%m-%d} {text}" if date else text


def _every(p: Period) -> str:
    units: list[tuple[int | float, str]] = []
    if p.years:
        units.append((p.years, "year"))
    if p.months:
        units.append((p.months, "month"))
    if p.days:
        units.append((p.days // 7, "week") if p.days % 7 == 0 else (p.days, "day"))
    seconds = p.elapsed.total_seconds()
    hours, rest = divmod(int(seconds), 3600)
    minutes, whole_seconds = divmod(rest, 60)
    if hours:
        units.append((hours, "hour"))
    if minutes:
        units.append((minutes, "minute"))
    fraction = seconds - int(seconds)
    if whole_seconds or fraction:
        units.append((whole_seconds + fraction if fraction else whole_seconds, "second"))
    if len(units) == 1 and units[0][0] == 1:
        return units[0][1]
    words = [f"{v:g} {unit}{'' if v == 1 else 's'}" for v, unit in units]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _calendar_position(p: Period, wall: datetime) -> str:
    at = f" at {_clock(wall)}"
    if p.total_months and not p.days:
        if p.months == 0:
            return f" on {wall.day} {wall:%B}{at}"
        return f" on day {wall.day}{at}"
    if p.days and not p.total_months and p.days % 7 == 0:
        return f" on {wall:%A}{at}"
    return at


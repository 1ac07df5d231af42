"""Job schedules: ISO-8601 repeating intervals and cron, as pure functions of time.

A job's ``schedule`` is one of

* ``R[n]/<start>/<period>`` — an ISO-8601 repeating interval (Chronos). ``R`` repeats forever,
  ``Rn`` fires exactly ``n`` times, ``R0`` never fires. ``start`` is a date and time: with an
  offset or ``Z`` it is an absolute instant; without one its wall-clock fields are read in the
  job's zone (``scheduleTimeZone``); empty means "now" (the caller passes ``now``; it is floored
  to the whole second so the stored canonical text, ``schedule_text.to_iso``, stays short and
  stable).
  ``period`` is an ISO-8601 duration (``P1D``, ``PT15M``, ``P1M``, ``P1DT12H``).
* ``cron: m h dom mon dow`` — a standard 5-field cron expression (as croniter reads it: ``*``,
  lists, ranges, steps, month and weekday names, ``L``, ``#``; when both day-of-month and
  day-of-week are restricted either one matching is enough). The ``cron:`` prefix is
  case-insensitive and may have spaces around the colon. Cron is minute-granular.

Nothing here reads the clock: every function takes the times it needs as arguments, and every
datetime passed in must be timezone-aware (``ValueError`` otherwise).

Time zones and daylight saving time — the rules
------------------------------------------------
All wall-clock arithmetic happens in the job's IANA zone (``tz``, default UTC).

1. **Calendar parts are wall-clock time.** The years, months, weeks and days of a period are
   added to the *local wall-clock reading* of the start: ``P1D`` from 02:00 fires at 02:00 local
   time every day, whether the day between had 23, 24 or 25 hours. Months are added before
   days; a day of month that does not exist is clamped to the month's last day
   (31 January + ``P1M`` → 28/29 February, + ``P2M`` → 31 March).
2. **Time parts are elapsed time.** Hours, minutes and seconds are real elapsed time:
   ``PT24H`` is 86,400 seconds, so across a DST change its local time of day moves by the size
   of the shift (one hour in Berlin or New York, 30 minutes on Lord Howe Island).
3. **Mixed periods** (``P1DT12H``): occurrence ``k`` is ``k`` * the calendar part added to the
   start's wall-clock reading, resolved to an instant (rules 4 and 5), plus ``k`` * the time
   part of elapsed time. Every occurrence is computed directly from the start, never by
   stepping from the previous one, so nothing drifts (31 January + ``P1M`` twice is 31 March,
   not 28 March) and :func:`occurrence` is O(1).
4. **A wall-clock time that does not exist** (inside a spring-forward gap, e.g. 02:30 in
   Europe/Berlin on the last Sunday of March) **fires once, shifted forward by the length of the
   gap**: 02:30 → 03:30 CEST in Berlin and New York, 02:15 → 02:45 on Lord Howe (a 30-minute
   gap). Equivalently: the reading is interpreted with the UTC offset in force *before* the
   transition. It is never skipped. The shift applies to that one occurrence only; the next day
   is back at 02:30.
5. **A wall-clock time that occurs twice** (inside a fall-back overlap, e.g. 02:30 in Berlin on
   the last Sunday of October) **fires once, at its first instance** (``fold=0``, the earlier
   UTC instant, still on summer time).
6. **Cron follows the same rules.** A cron expression matches wall-clock readings in the
   job's zone; each matching reading fires once, resolved by rules 4 and 5. So
   ``cron: 30 2 * * *`` fires at 03:30 CEST on the spring-forward day and once, at 02:30 CEST,
   on the fall-back day, and an hourly cron does *not* fire twice in the repeated hour (it is
   wall-clock, unlike ``PT1H`` which fires every real hour). If a shifted reading lands on the
   same instant as another matching reading (``*/15`` across a one-hour gap: 02:15 → 03:15 and
   03:15 itself), that instant fires once. croniter is only asked for naive wall-clock readings;
   localisation is done here, because croniter's own DST handling differs from these rules.
7. **Zones that skipped a whole calendar day** (Pacific/Apia on 30 December 2011): by rule 4 the
   missing day's occurrence of a pure-calendar period lands on the same instant as the next
   day's. Occurrence times are therefore non-decreasing in general and strictly increasing
   everywhere else; the fire-time functions below report that shared instant once.

Returned fire times are in **UTC**. That is deliberate: Python compares and subtracts two
datetimes that share one ``ZoneInfo`` by their wall-clock fields, ignoring ``fold``, which gives
wrong answers inside a fall-back overlap; UTC values compare correctly everywhere. Convert with
``t.astimezone(ZoneInfo(s.tz))`` for display. ``IsoSchedule.start`` is kept in the job's zone.

Minimum period: :data:`MIN_PERIOD` (1 s). A finer schedule is rejected at parse time
(``ValueError``), never silently skipped by the engine.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import MAXYEAR, UTC, datetime, timedelta
from decimal import Decimal
from typing import TypeAlias
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# isodate ships no type information. croniter's types come from the types-croniter stubs; the
# ignore also covers an environment without them. `unused-ignore` keeps mypy quiet in the other
# case (the project runs mypy with warn_unused_ignores).
import isodate  # type: ignore[import-untyped, unused-ignore]
from croniter import croniter  # type: ignore[import-untyped, unused-ignore]

__all__ = [
    "MIN_PERIOD",
    "CronSchedule",
    "IsoSchedule",
    "Period",
    "Schedule",
    "latest_at_or_before",
    "localize",
    "next_fire",
    "occurrence",
    "occurrences_between",
    "parse_schedule",
    "remaining",
]

MIN_PERIOD = timedelta(seconds=1)
"""The finest period the engine honours; shorter ISO periods are rejected when parsed."""

_CRON = re.compile(r"^\s*cron\s*:\s*(?P<expr>.*?)\s*$", re.IGNORECASE | re.DOTALL)
_REPETITIONS = re.compile(r"^R(?P<n>\d*)$")
# The shape of a period, checked before isodate reads the numbers: isodate folds `PT24H` into
# one day (indistinguishable from `P1D`), truncates `P1.5M` to one month and accepts a bare
# `PT`, so the date and time parts are split here and fractions are allowed only where they
# have one meaning (elapsed hours, minutes, seconds).
_NUM = r"\d+(?:[.,]\d+)?"
_PERIOD = re.compile(
    rf"^P(?P<date>(?:\d+Y)?(?:\d+M)?(?:\d+W)?(?:\d+D)?)"
    rf"(?:T(?P<time>(?:{_NUM}H)?(?:{_NUM}M)?(?:{_NUM}S)?))?$"
)
_CRON_FIELDS = "minute hour day-of-month month day-of-week"
# Any instant a cron expression may be checked from when asking "does it ever fire?".
_CRON_PROBE = datetime(2000, 1, 1)
# Mean Gregorian month; only used to *guess* an occurrence index, which is then verified.
_MEAN_MONTH = timedelta(days=365.2425 / 12)
# A spring-forward gap is at most a day long (Pacific/Apia 2011, Kwajalein 1993).
_MAX_GAP_LOOKBACK = timedelta(days=1)
# Bound on cron readings examined per question; the real number is a handful (at most the
# matching readings inside one DST gap or overlap). Exceeding it means a bug, not a slow job.
_CRON_SCAN_LIMIT = 100_000


# --- types --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Period:
    """An ISO-8601 period split into its calendar part (wall-clock) and its time part (elapsed).

    ``days`` includes weeks (``P1W`` is 7 days). ``text`` is the period as written.
    """

    years: int = 0
    months: int = 0
    days: int = 0
    elapsed: timedelta = timedelta(0)
    text: str = ""

    @property
    def total_months(self) -> int:
        return 12 * self.years + self.months

    @property
    def has_calendar(self) -> bool:
        """True when some part is added in local wall-clock time (years, months, weeks, days)."""
        return bool(self.years or self.months or self.days)

    def approximate(self) -> timedelta:
        """A rough length, only good for estimating how many periods fit in a span."""
        return self.total_months * _MEAN_MONTH + timedelta(days=self.days) + self.elapsed


@dataclass(frozen=True)
class IsoSchedule:
    """``R[n]/<start>/<period>``, parsed. Build it with :func:`parse_schedule`.

    ``repetitions``: ``None`` repeats forever, ``0`` never fires, ``n`` fires ``n`` times.
    ``start``: the first occurrence, aware, in the zone ``tz``.
    ``anchor``: the naive wall-clock reading the start was *written* as, when it was written
    without an offset; calendar parts of the period are added to it (so a start written as
    02:30 on a spring-forward day keeps 02:30 on the following days although its own occurrence
    is 03:30). ``None`` when the start is an absolute instant (offset, ``Z`` or empty start):
    the calendar parts then count from ``start``'s own wall-clock reading.
    ``text``: the schedule exactly as given.
    """

    repetitions: int | None
    start: datetime
    period: Period
    tz: str
    text: str
    anchor: datetime | None = None

    def __post_init__(self) -> None:
        if self.start.tzinfo is None:
            raise ValueError("IsoSchedule.start must be timezone-aware")
        if self.repetitions is not None and self.repetitions < 0:
            raise ValueError("repetitions must be None or >= 0")
        if self.anchor is not None and self.anchor.tzinfo is not None:
            raise ValueError("IsoSchedule.anchor is a naive wall-clock reading")

    @property
    def wall_start(self) -> datetime:
        """The naive local reading that calendar parts of the period are added to."""
        if self.anchor is not None:
            return self.anchor
        return self.start.astimezone(_zone(self.tz)).replace(tzinfo=None)


@dataclass(frozen=True)
class CronSchedule:
    """``cron: <expression>``, parsed. ``expression`` is the 5 fields, single-spaced."""

    expression: str
    tz: str
    text: str


Schedule: TypeAlias = IsoSchedule | CronSchedule


# --- time zone helpers --------------------------------------------------------------------


def _zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)  # ZoneInfo caches instances per key, so this is cheap.
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown IANA time zone {tz!r}") from None


def _aware(t: datetime, name: str) -> datetime:
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {t.isoformat()}")
    return t


def _utc(t: datetime) -> datetime:
    return t.astimezone(UTC)


def _wall(t: datetime, zone: ZoneInfo) -> datetime:
    """The naive wall-clock reading of the instant ``t`` in ``zone``."""
    return t.astimezone(zone).replace(tzinfo=None)


def _localize_utc(wall: datetime, zone: ZoneInfo) -> datetime:
    """:func:`localize`, returned in UTC."""
    # PEP 495 gives every reading two offsets: fold=0 (before a transition) and fold=1 (after).
    # Outside transitions they agree. Inside an overlap both candidates exist and we take the
    # earlier instant; inside a gap neither exists and we take the pre-transition offset,
    # which is the smaller one, i.e. the later instant (= the reading shifted by the gap).
    # Written out with min/max instead of trusting fold so that the rule is visible here.
    offsets = {
        wall.replace(tzinfo=zone, fold=fold).utcoffset() or timedelta(0) for fold in (0, 1)
    }
    candidates = [(wall - off).replace(tzinfo=UTC) for off in offsets]
    if len(candidates) == 1:
        return candidates[0]
    existing = [c for c in candidates if _wall(c, zone) == wall]
    if existing:
        return min(existing)
    return max(candidates)


def localize(wall: datetime, tz: str) -> datetime:
    """The instant at which a naive wall-clock reading in zone ``tz`` fires (rules 4 and 5).

    A reading that does not exist (spring-forward gap) is shifted forward by the gap's length;
    one that occurs twice (fall-back overlap) is its first instance. Returned in ``tz``.
    """
    if wall.tzinfo is not None:
        raise ValueError("localize takes a naive wall-clock reading")
    zone = _zone(tz)
    return _localize_utc(wall, zone).astimezone(zone)


# --- parsing ------------------------------------------------------------------------------


def parse_schedule(text: str, tz: str = "UTC", *, now: datetime | None = None) -> Schedule:
    """Parse a job's ``schedule`` string, read in the IANA zone ``tz``.

    ``now`` is only used for an ISO schedule with an empty start (``R5//PT1H``), which starts at
    ``now`` floored to the whole second; without ``now`` such a schedule is a ``ValueError``
    (the API supplies ``now`` and stores ``schedule_text.to_iso`` of the result). Raises
    ``ValueError`` with a message fit for the user on anything malformed, on an unknown zone,
    and on periods that are zero or shorter than :data:`MIN_PERIOD`.
    """
    zone = _zone(tz)
    if now is not None:
        _aware(now, "now")
    stripped = text.strip()
    if not stripped:
        raise ValueError("schedule is empty")
    cron = _CRON.match(stripped)
    if cron:
        return _parse_cron(cron.group("expr"), tz, text)
    return _parse_iso(stripped, tz, zone, text, now)


def _parse_cron(expr: str, tz: str, text: str) -> CronSchedule:
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(
            f"cron expression {expr!r} must have 5 fields ({_CRON_FIELDS}), not {len(fields)}"
        )
    expression = " ".join(fields)
    try:
        croniter(expression, _CRON_PROBE).get_next(datetime)
    except (ValueError, KeyError, TypeError, IndexError) as e:
        # croniter's errors subclass ValueError; "failed to find next date" means it never fires.
        reason = "it never matches a date" if "find" in str(e) else str(e)
        raise ValueError(f"cron expression {expression!r} is not valid: {reason}") from None
    return CronSchedule(expression=expression, tz=tz, text=text)


def _parse_iso(
    stripped: str, tz: str, zone: ZoneInfo, text: str, now: datetime | None
) -> IsoSchedule:
    parts = [p.strip() for p in stripped.split("/")]
    if len(parts) != 3:
        raise ValueError(
            f"schedule {stripped!r} must be 'R[n]/<start>/<period>' (e.g. "
            "'R/2026-12-01T02:00:00/P1D') or 'cron: <minute hour day-of-month month "
            "day-of-week>'"
        )
    rep_text, start_text, period_text = parts
    reps = _REPETITIONS.match(rep_text)
    if not reps:
        raise ValueError(
            f"repetitions {rep_text!r} must be 'R' (forever) or 'R<n>' with a whole n >= 0"
        )
    repetitions = int(reps.group("n")) if reps.group("n") else None
    period = _parse_period(period_text)
    start, anchor = _parse_start(start_text, zone, now)
    return IsoSchedule(
        repetitions=repetitions, start=start, period=period, tz=tz, text=text, anchor=anchor
    )


def _parse_start(
    start_text: str, zone: ZoneInfo, now: datetime | None
) -> tuple[datetime, datetime | None]:
    """(start in ``zone``, anchor): see :class:`IsoSchedule` for what the anchor is."""
    if not start_text:
        if now is None:
            raise ValueError("an empty start means 'now', but no current time was supplied")
        return _aware(now, "now").replace(microsecond=0).astimezone(zone), None
    try:
        parsed: datetime = isodate.parse_datetime(start_text)
    except (isodate.ISO8601Error, ValueError, TypeError) as e:
        raise ValueError(
            f"start {start_text!r} is not an ISO-8601 date and time such as "
            f"2026-12-01T02:00:00 or 2026-12-01T02:00:00Z ({e})"
        ) from None
    try:
        if parsed.tzinfo is not None:
            return parsed.astimezone(zone), None
        return _localize_utc(parsed, zone).astimezone(zone), parsed
    except (OverflowError, ValueError):
        raise ValueError(f"start {start_text!r} is out of the supported range") from None


def _parse_period(text: str) -> Period:
    shape = _PERIOD.match(text)
    if not shape or text == "P" or text.endswith("T"):
        if text.startswith("P") and re.search(r"[.,]", text.split("T", 1)[0]):
            raise ValueError(
                f"period {text!r}: fractions are only allowed in hours, minutes and seconds "
                "(PT1.5H), not in years, months, weeks or days"
            )
        raise ValueError(
            f"period {text!r} is not an ISO-8601 duration such as P1D, PT15M, P1M or P1DT12H"
        )
    date_part, time_part = shape.group("date"), shape.group("time") or ""
    years = months = days = 0
    elapsed = timedelta(0)
    try:
        if date_part:
            d = isodate.parse_duration("P" + date_part)
            if isinstance(d, timedelta):
                days = d.days
            else:
                years, months = _whole(d.years), _whole(d.months)
                days = d.tdelta.days
        if time_part:
            t = isodate.parse_duration("PT" + time_part)
            elapsed = t if isinstance(t, timedelta) else t.tdelta
    except (isodate.ISO8601Error, ValueError, OverflowError) as e:
        raise ValueError(f"period {text!r} is not a valid ISO-8601 duration ({e})") from None
    period = Period(years=years, months=months, days=days, elapsed=elapsed, text=text)
    if not period.has_calendar and elapsed == timedelta(0):
        raise ValueError(f"period {text!r} is zero; a repeating schedule needs a positive period")
    if not period.has_calendar and elapsed < MIN_PERIOD:
        raise ValueError(
            f"period {text!r} is shorter than {MIN_PERIOD.total_seconds():g} s, the finest the "
            "engine can honour; finer schedules are rejected rather than silently skipped"
        )
    return period


def _whole(v: int | float | Decimal) -> int:
    # The shape check already refused fractions in the date part; this is belt and braces.
    if v != int(v):
        raise ValueError("years and months must be whole numbers")
    return int(v)


# --- ISO arithmetic -----------------------------------------------------------------------


def _add_calendar(wall: datetime, period: Period, k: int) -> datetime:
    """``wall`` + ``k`` * the calendar part: months first (day clamped), then days."""
    months = k * period.total_months
    if months:
        year_shift, month0 = divmod(wall.month - 1 + months, 12)
        year = wall.year + year_shift
        if year > MAXYEAR:
            raise OverflowError("occurrence is after year 9999")
        day = min(wall.day, calendar.monthrange(year, month0 + 1)[1])
        wall = wall.replace(year=year, month=month0 + 1, day=day)
    if period.days:
        wall = wall + timedelta(days=k * period.days)
    return wall


def _occ_utc(s: IsoSchedule, k: int) -> datetime:
    """Occurrence ``k`` in UTC, ignoring ``repetitions``. ``OverflowError`` past year 9999."""
    p = s.period
    if k == 0 or not p.has_calendar:
        base = _utc(s.start)
    else:
        zone = _zone(s.tz)
        base = _localize_utc(_add_calendar(s.wall_start, p, k), zone)
    if p.elapsed:
        base = base + k * p.elapsed
    return base


def occurrence(s: IsoSchedule, k: int) -> datetime:
    """The ``k``-th fire time (``k`` = 0 is the start), in UTC, computed in O(1).

    ``ValueError`` when ``k`` < 0 or ``k`` >= ``repetitions``; ``OverflowError`` when the
    occurrence would fall after the year 9999.
    """
    if k < 0:
        raise ValueError(f"occurrence index must be >= 0, got {k}")
    if s.repetitions is not None and k >= s.repetitions:
        raise ValueError(f"{s.text!r} has {s.repetitions} occurrence(s); index {k} is past them")
    return _occ_utc(s, k)


def _last_index_at_or_before(s: IsoSchedule, when_utc: datetime) -> int | None:
    """The largest index ``k`` < ``repetitions`` with occurrence ``k`` <= ``when``, or None.

    Occurrences are non-decreasing in ``k``, so this is a search: a guess from the period's
    approximate length (exact for pure elapsed periods, off by at most a few for calendar ones),
    then galloping and bisection around it. A PT1S schedule and ten years of downtime take a
    handful of occurrence evaluations, never a walk over the occurrences.
    """
    limit = None if s.repetitions is None else s.repetitions - 1
    if limit is not None and limit < 0:
        return None

    def at_or_before(k: int) -> bool:
        try:
            return _occ_utc(s, k) <= when_utc
        except OverflowError:
            return False  # past year 9999: later than any representable `when`

    if not at_or_before(0):
        return None

    def capped(k: int) -> int:
        return k if limit is None else min(k, limit)

    guess = capped(max(0, (when_utc - _utc(s.start)) // s.period.approximate()))
    lo, hi = 0, None  # invariant: at_or_before(lo); hi is None or not at_or_before(hi)
    if at_or_before(guess):
        lo = guess
        step = 1
        while hi is None:
            if limit is not None and lo == limit:
                return lo
            probe = capped(lo + step)
            if at_or_before(probe):
                lo, step = probe, step * 2
            else:
                hi = probe
    else:
        hi = guess
        step = 1
        while True:
            probe = max(0, hi - step)
            if at_or_before(probe):
                lo = probe
                break
            hi, step = probe, step * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if at_or_before(mid):
            lo = mid
        else:
            hi = mid
    return lo


def _iso_next(s: IsoSchedule, after_utc: datetime | None) -> datetime | None:
    if after_utc is None:
        k = 0
    else:
        last = _last_index_at_or_before(s, after_utc)
        k = 0 if last is None else last + 1
    if s.repetitions is not None and k >= s.repetitions:
        return None
    try:
        return _occ_utc(s, k)
    except OverflowError:
        return None


# --- cron arithmetic ----------------------------------------------------------------------


def _cron_next(s: CronSchedule, after_utc: datetime) -> datetime | None:
    """The earliest fire time strictly after ``after``, in UTC (None past year 9999).

    Resolving readings by rules 4 and 5 is monotonic except inside a gap: a reading in the gap
    fires after later readings that exist (on Lord Howe, 02:20 → 02:50 while 02:40 stays 02:40).
    So the scan starts early enough to see gap readings whose shifted time is after ``after``,
    and keeps the earliest candidate until the readings pass the candidate's own reading; no
    reading at or after that can fire earlier. The look-back compares the offsets a day apart,
    so it assumes one offset change at most within a day before ``after`` (true of every zone
    today; historically only a few double changes exist).
    """
    zone = _zone(s.tz)
    after_local = after_utc.astimezone(zone)
    lookback = max(
        timedelta(0),
        (after_local.utcoffset() or timedelta(0))
        - ((after_utc - _MAX_GAP_LOOKBACK).astimezone(zone).utcoffset() or timedelta(0)),
    )
    readings = croniter(s.expression, after_local.replace(tzinfo=None) - lookback)
    best: datetime | None = None
    best_wall: datetime | None = None
    try:
        for _ in range(_CRON_SCAN_LIMIT):
            wall: datetime = readings.get_next(datetime)
            if best_wall is not None and wall >= best_wall:
                return best
            fire = _localize_utc(wall, zone)
            if fire > after_utc and (best is None or fire < best):
                best, best_wall = fire, _wall(fire, zone)
    except (ValueError, OverflowError):
        return best  # croniter ran past year 9999 (it raises ValueError subclasses)
    raise RuntimeError(f"cron {s.expression!r}: no next fire time found near {after_utc}")


def _cron_latest(s: CronSchedule, when_utc: datetime) -> datetime | None:
    """The latest fire time at or before ``when``, in UTC (None before year 1)."""
    zone = _zone(s.tz)
    # croniter's get_prev is strictly before its start; a microsecond later includes `when`.
    readings = croniter(s.expression, _wall(when_utc, zone) + timedelta(microseconds=1))
    found: datetime | None = None
    try:
        for _ in range(_CRON_SCAN_LIMIT):
            wall: datetime = readings.get_prev(datetime)
            fire = _localize_utc(wall, zone)
            if fire <= when_utc:
                found = fire
                break
    except (ValueError, OverflowError):
        return None
    if found is None:
        raise RuntimeError(f"cron {s.expression!r}: no earlier fire time found near {when_utc}")
    # Readings just before `when`'s may have been shifted out of a gap to later instants that
    # are still <= when; walking forward from `found` with the exact next-fire rule finds them.
    while (later := _cron_next(s, found)) is not None and later <= when_utc:
        found = later
    return found


# --- the questions the engine asks --------------------------------------------------------


def next_fire(s: Schedule, after: datetime | None, now: datetime) -> datetime | None:
    """The first fire time strictly after ``after``, in UTC; None when there is none.

    ISO: with ``after`` = None (never fired) the answer is the start itself, even if it lies in
    the past (what happens to missed occurrences is the engine's policy; see
    :func:`latest_at_or_before`); ``now`` is not used. None when ``Rn`` is used up, for ``R0``,
    and past the year 9999.

    Cron has no start: with ``after`` = None the answer is the first fire time strictly after
    ``now``, i.e. ``next_fire(s, None, now) == next_fire(s, now, now)``. Because ``now`` moves,
    a caller that asks repeatedly must persist a reference (the last fire, or the time the job
    was created or enabled) and pass it as ``after``.
    """
    _aware(now, "now")
    after_utc = None if after is None else _utc(_aware(after, "after"))
    if isinstance(s, IsoSchedule):
        return _iso_next(s, after_utc)
    return _cron_next(s, _utc(now) if after_utc is None else after_utc)


def occurrences_between(
    s: Schedule, after: datetime | None, until: datetime
) -> Iterator[datetime]:
    """Every fire time ``t`` with ``after`` < ``t`` <= ``until``, ascending, in UTC.

    ``after`` = None starts at the ISO schedule's start (inclusive). A cron schedule has no
    start, so it needs an ``after`` (``ValueError`` otherwise). The same instants, in the same
    order, as iterating :func:`next_fire` from ``after``. Lazy; to learn only the newest missed
    occurrence after downtime use :func:`latest_at_or_before`, which does not walk.
    """
    until_utc = _utc(_aware(until, "until"))
    after_utc = None if after is None else _utc(_aware(after, "after"))
    if isinstance(s, IsoSchedule):
        return _iso_between(s, after_utc, until_utc)
    if after_utc is None:
        raise ValueError("a cron schedule has no start; pass `after` (e.g. the last fire time)")
    return _cron_between(s, after_utc, until_utc)


def _iso_between(
    s: IsoSchedule, after_utc: datetime | None, until_utc: datetime
) -> Iterator[datetime]:
    if after_utc is None:
        k = 0
    else:
        last = _last_index_at_or_before(s, after_utc)
        k = 0 if last is None else last + 1
    previous: datetime | None = None
    while s.repetitions is None or k < s.repetitions:
        try:
            t = _occ_utc(s, k)
        except OverflowError:
            return
        if t > until_utc:
            return
        if previous is None or t > previous:  # rule 7: a shared instant is reported once
            yield t
            previous = t
        k += 1


def _cron_between(s: CronSchedule, after_utc: datetime, until_utc: datetime) -> Iterator[datetime]:
    t = _cron_next(s, after_utc)
    while t is not None and t <= until_utc:
        yield t
        t = _cron_next(s, t)


def latest_at_or_before(s: Schedule, when: datetime) -> tuple[int | None, datetime | None]:
    """The newest fire time at or before ``when``: ``(index, time)``, time in UTC.

    ISO: ``index`` is the occurrence number (0 = start); ``(None, None)`` when ``when`` is
    before the start or the schedule is ``R0``; for a used-up ``Rn`` it is the last one.
    Cron: ``(None, time)``. O(log) in the number of occurrences skipped, so it answers at once
    after any length of downtime.
    """
    when_utc = _utc(_aware(when, "when"))
    if isinstance(s, IsoSchedule):
        k = _last_index_at_or_before(s, when_utc)
        return (None, None) if k is None else (k, _occ_utc(s, k))
    return None, _cron_latest(s, when_utc)


def remaining(s: IsoSchedule, after: datetime | None) -> int | None:
    """How many occurrences are still to come after ``after`` (all of them for None).

    None means infinitely many (``R``). 0 means the schedule is used up (or ``R0``).
    """
    if s.repetitions is None:
        return None
    if after is None:
        return s.repetitions
    last = _last_index_at_or_before(s, _utc(_aware(after, "after")))
    return s.repetitions - (0 if last is None else last + 1)

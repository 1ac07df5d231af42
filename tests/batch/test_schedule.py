"""Schedules: parsing, occurrence arithmetic, the engine's questions, and DST, zone by zone.

The DST cases run for Europe/Berlin and America/New_York (one-hour shifts) and
Australia/Lord_Howe (a 30-minute shift, and the southern hemisphere's calendar): each case is
one test, parametrised by zone, so a failure names the case and the zone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import islice, pairwise
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter  # type: ignore[import-untyped, unused-ignore]
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler.batch.schedule import (
    MIN_PERIOD,
    CronSchedule,
    IsoSchedule,
    Schedule,
    latest_at_or_before,
    localize,
    next_fire,
    occurrence,
    occurrences_between,
    parse_schedule,
    remaining,
)
from scheduler.batch.schedule_text import describe, to_iso

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def iso(text: str, tz: str = "UTC", now: datetime | None = None) -> IsoSchedule:
    s = parse_schedule(text, tz, now=now)
    assert isinstance(s, IsoSchedule)
    return s


def cron(text: str, tz: str = "UTC") -> CronSchedule:
    s = parse_schedule(text, tz)
    assert isinstance(s, CronSchedule)
    return s


def at(tz: str, year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    """An aware local time: ``at("Europe/Berlin", 2026, 3, 29, 2, 30)``."""
    return datetime(year, month, day, hour, minute, tzinfo=ZoneInfo(tz))


def wall(t: datetime, tz: str) -> datetime:
    """The naive local reading of ``t`` in ``tz``."""
    return t.astimezone(ZoneInfo(tz)).replace(tzinfo=None)


def offset(t: datetime, tz: str) -> timedelta:
    off = t.astimezone(ZoneInfo(tz)).utcoffset()
    assert off is not None
    return off


# --- parsing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "tz", "repetitions", "start_utc"),
    [
        ("R/2026-12-01T02:00:00/P1D", "Europe/Berlin", None, datetime(2026, 12, 1, 1, tzinfo=UTC)),
        ("R/2026-12-01T02:00:00/P1D", "America/New_York", None,
         datetime(2026, 12, 1, 7, tzinfo=UTC)),
        ("R5/2026-01-01T00:00:00Z/PT15M", "UTC", 5, datetime(2026, 1, 1, tzinfo=UTC)),
        ("R0/2026-01-01T00:00:00Z/PT15M", "UTC", 0, datetime(2026, 1, 1, tzinfo=UTC)),
        ("R12/2026-01-01T00:00:00/PT1H", "UTC", 12, datetime(2026, 1, 1, tzinfo=UTC)),
        # An offset or Z makes the start an absolute instant, whatever the job's zone.
        ("R/2026-12-01T02:00:00Z/P1D", "Europe/Berlin", None, datetime(2026, 12, 1, 2, tzinfo=UTC)),
        ("R/2026-12-01T02:00:00+05:00/P1D", "Europe/Berlin", None,
         datetime(2026, 11, 30, 21, tzinfo=UTC)),
        ("R/20261201T020000Z/PT1H", "UTC", None, datetime(2026, 12, 1, 2, tzinfo=UTC)),
        ("R/2026-12-01T02:00/PT1H", "UTC", None, datetime(2026, 12, 1, 2, tzinfo=UTC)),
        ("  R3 / 2026-12-01T02:00:00Z / P1D  ", "UTC", 3, datetime(2026, 12, 1, 2, tzinfo=UTC)),
    ],
)
def test_parse_valid_iso(
    text: str, tz: str, repetitions: int | None, start_utc: datetime
) -> None:
    s = iso(text, tz)
    assert s.repetitions == repetitions
    assert s.start == start_utc
    assert s.start.tzinfo == ZoneInfo(tz)  # kept in the job's zone
    assert s.tz == tz and s.text == text


def test_naive_start_is_read_in_the_zone_and_offset_start_is_an_instant() -> None:
    naive = iso("R/2026-07-01T09:00:00/P1D", "Europe/Berlin")
    absolute = iso("R/2026-07-01T09:00:00Z/P1D", "Europe/Berlin")
    assert wall(naive.start, "Europe/Berlin") == datetime(2026, 7, 1, 9)
    assert naive.anchor == datetime(2026, 7, 1, 9)
    assert wall(absolute.start, "Europe/Berlin") == datetime(2026, 7, 1, 11)
    assert absolute.anchor is None


@pytest.mark.parametrize(
    ("text", "years", "months", "days", "elapsed"),
    [
        ("P1D", 0, 0, 1, timedelta(0)),
        ("PT24H", 0, 0, 0, timedelta(hours=24)),  # elapsed, not a calendar day
        ("P1W", 0, 0, 7, timedelta(0)),
        ("P1DT12H", 0, 0, 1, timedelta(hours=12)),
        ("PT36H", 0, 0, 0, timedelta(hours=36)),
        ("P1Y2M3W4DT5H6M7.5S", 1, 2, 25, timedelta(hours=5, minutes=6, seconds=7.5)),
        ("PT1.5H", 0, 0, 0, timedelta(minutes=90)),
        ("PT1S", 0, 0, 0, MIN_PERIOD),
        ("P1M", 0, 1, 0, timedelta(0)),
    ],
)
def test_parse_period_splits_calendar_from_elapsed(
    text: str, years: int, months: int, days: int, elapsed: timedelta
) -> None:
    p = iso(f"R/2026-01-01T00:00:00Z/{text}").period
    assert (p.years, p.months, p.days, p.elapsed, p.text) == (years, months, days, elapsed, text)


@pytest.mark.parametrize(
    ("text", "expression"),
    [
        ("cron: 0 2 * * *", "0 2 * * *"),
        ("CRON:0 2 * * *", "0 2 * * *"),
        ("Cron :  */5  *  * * 1-5 ", "*/5 * * * 1-5"),
        ("cron: 30 2 1,15 jan-jun mon", "30 2 1,15 jan-jun mon"),
    ],
)
def test_parse_valid_cron(text: str, expression: str) -> None:
    s = cron(text, "Europe/Berlin")
    assert s.expression == expression and s.tz == "Europe/Berlin" and s.text == text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "schedule is empty"),
        ("   ", "schedule is empty"),
        ("R/2026-01-01T00:00:00Z", "must be 'R[n]/<start>/<period>'"),
        ("R/2026-01-01T00:00:00Z/P1D/P1D", "must be 'R[n]/<start>/<period>'"),
        ("X/2026-01-01T00:00:00Z/P1D", "repetitions 'X'"),
        ("R-1/2026-01-01T00:00:00Z/P1D", "repetitions 'R-1'"),
        ("R1.5/2026-01-01T00:00:00Z/P1D", "repetitions 'R1.5'"),
        ("R/not-a-date/P1D", "start 'not-a-date' is not an ISO-8601 date and time"),
        ("R/2026-13-01T00:00:00/P1D", "start '2026-13-01T00:00:00'"),
        ("R/2026-01-01/P1D", "start '2026-01-01'"),
        ("R//P1D", "empty start means 'now'"),
        ("R/2026-01-01T00:00:00Z/1D", "period '1D' is not an ISO-8601 duration"),
        ("R/2026-01-01T00:00:00Z/-P1D", "period '-P1D'"),
        ("R/2026-01-01T00:00:00Z/P", "period 'P'"),
        ("R/2026-01-01T00:00:00Z/PT", "period 'PT'"),
        ("R/2026-01-01T00:00:00Z/P1DT", "period 'P1DT'"),
        ("R/2026-01-01T00:00:00Z/p1d", "period 'p1d'"),
        ("R/2026-01-01T00:00:00Z/PT0S", "is zero"),
        ("R/2026-01-01T00:00:00Z/P0D", "is zero"),
        ("R/2026-01-01T00:00:00Z/PT0.5S", "shorter than 1 s"),
        ("R/2026-01-01T00:00:00Z/PT0.999S", "rejected rather than silently skipped"),
        ("R/2026-01-01T00:00:00Z/P1.5M", "fractions are only allowed in hours"),
        ("R/2026-01-01T00:00:00Z/P0.5W", "fractions are only allowed in hours"),
        ("cron:", "must have 5 fields"),
        ("cron: * * * *", "must have 5 fields"),
        ("cron: 0 0 * * * *", "must have 5 fields"),
        ("cron: 61 * * * *", "is not valid"),
        ("cron: a b c d e", "is not valid"),
        ("cron: H * * * *", "is not valid"),
        ("cron: 0 0 31 2 *", "never matches a date"),
        ("0 2 * * *", "must be 'R[n]/<start>/<period>'"),
    ],
)
def test_parse_invalid(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=None) as e:
        parse_schedule(text, "UTC")
    assert message in str(e.value)


def test_parse_rejects_unknown_zone() -> None:
    with pytest.raises(ValueError, match="unknown IANA time zone 'Mars/Olympus'"):
        parse_schedule("R/2026-01-01T00:00:00Z/P1D", "Mars/Olympus")


def test_parse_rejects_naive_now() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        parse_schedule("R//PT1H", "UTC", now=datetime(2026, 1, 1))


def test_empty_start_uses_now_floored_to_the_second_and_to_iso_makes_it_stable() -> None:
    now = datetime(2026, 5, 5, 10, 20, 30, 123456, tzinfo=UTC)
    s = iso("R5//PT15M", "Europe/Berlin", now=now)
    assert s.start == datetime(2026, 5, 5, 10, 20, 30, tzinfo=UTC)
    assert s.anchor is None
    stored = to_iso(s)
    assert stored == "R5/2026-05-05T12:20:30+02:00/PT15M"
    again = iso(stored, "Europe/Berlin")  # no `now` needed any more
    assert again.start == s.start and to_iso(again) == stored


def test_period_of_exactly_min_period_is_accepted() -> None:
    s = iso("R3/2026-01-01T00:00:00Z/PT1S")
    assert list(occurrences_between(s, None, NOW)) == [
        datetime(2026, 1, 1, 0, 0, k, tzinfo=UTC) for k in range(3)
    ]


# --- occurrence arithmetic ------------------------------------------------------------------


def test_months_count_from_the_start_and_clamp_to_the_month_end() -> None:
    s = iso("R/2026-01-31T10:00:00/P1M")
    got = [occurrence(s, k) for k in range(4)] + [occurrence(s, 12), occurrence(s, 25)]
    assert got == [
        datetime(2026, 1, 31, 10, tzinfo=UTC),
        datetime(2026, 2, 28, 10, tzinfo=UTC),
        datetime(2026, 3, 31, 10, tzinfo=UTC),  # no drift to the 28th
        datetime(2026, 4, 30, 10, tzinfo=UTC),
        datetime(2027, 1, 31, 10, tzinfo=UTC),
        datetime(2028, 2, 29, 10, tzinfo=UTC),
    ]


def test_yearly_from_a_leap_day() -> None:
    s = iso("R/2028-02-29T00:00:00Z/P1Y")
    assert occurrence(s, 1) == datetime(2029, 2, 28, tzinfo=UTC)
    assert occurrence(s, 4) == datetime(2032, 2, 29, tzinfo=UTC)


def test_mixed_period_is_calendar_then_elapsed() -> None:
    s = iso("R/2026-01-01T00:00:00Z/P1DT12H")
    assert [occurrence(s, k) for k in range(3)] == [
        datetime(2026, 1, 1, tzinfo=UTC),
        datetime(2026, 1, 2, 12, tzinfo=UTC),
        datetime(2026, 1, 4, tzinfo=UTC),
    ]


def test_mixed_period_across_dst_adds_days_on_the_wall_clock_and_hours_elapsed() -> None:
    tz = "Europe/Berlin"
    s = iso("R/2026-03-28T00:00:00/P1DT1H", tz)
    # k=1: 29 March 00:00 (still CET) + 1 real hour; k=2: 30 March 00:00 CEST + 2 real hours.
    assert wall(occurrence(s, 1), tz) == datetime(2026, 3, 29, 1)
    assert wall(occurrence(s, 2), tz) == datetime(2026, 3, 30, 2)


def test_occurrence_is_constant_time() -> None:
    s = iso("R/2026-01-01T00:00:00Z/PT1S")
    began = time.perf_counter()
    assert occurrence(s, 10**9) == datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=10**9)
    # Walking 10**9 occurrences would take many minutes; O(1) is well under a second even on
    # a loaded machine.
    assert time.perf_counter() - began < 0.5


def test_occurrence_index_bounds() -> None:
    s = iso("R3/2026-01-01T00:00:00Z/P1D")
    assert occurrence(s, 2) == datetime(2026, 1, 3, tzinfo=UTC)
    with pytest.raises(ValueError, match="index 3 is past them"):
        occurrence(s, 3)
    with pytest.raises(ValueError, match=">= 0"):
        occurrence(s, -1)


def test_occurrences_past_year_9999_end_the_schedule() -> None:
    s = iso("R/9999-12-30T00:00:00Z/P1D")
    with pytest.raises(OverflowError):
        occurrence(s, 5)
    last = datetime(9999, 12, 31, tzinfo=UTC)
    assert next_fire(s, last, NOW) is None
    assert list(occurrences_between(s, None, datetime.max.replace(tzinfo=UTC))) == [
        datetime(9999, 12, 30, tzinfo=UTC), last
    ]


# --- next_fire, remaining, occurrences_between, latest_at_or_before --------------------------


def test_next_fire_iso() -> None:
    s = iso("R/2026-01-01T00:00:00Z/PT1H")
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    assert next_fire(s, None, NOW) == t0  # never fired: the start, even though it is past
    assert next_fire(s, t0 - DAY, NOW) == t0
    assert next_fire(s, t0, NOW) == t0 + HOUR  # strictly after
    assert next_fire(s, t0 + timedelta(minutes=59, seconds=59), NOW) == t0 + HOUR
    # Any zone works for `after`.
    assert next_fire(s, at("America/New_York", 2025, 12, 31, 19, 30), NOW) == t0 + HOUR


def test_next_fire_rn_is_exhausted_after_n() -> None:
    s = iso("R3/2026-01-01T00:00:00Z/P1D")
    fires: list[datetime] = []
    after = None
    while (t := next_fire(s, after, NOW)) is not None:
        fires.append(t)
        after = t
    assert fires == [datetime(2026, 1, d, tzinfo=UTC) for d in (1, 2, 3)]
    assert remaining(s, fires[-1]) == 0


def test_r0_never_fires() -> None:
    s = iso("R0/2026-01-01T00:00:00Z/P1D")
    assert next_fire(s, None, NOW) is None
    assert list(occurrences_between(s, None, NOW)) == []
    assert latest_at_or_before(s, NOW) == (None, None)
    assert remaining(s, None) == 0


def test_remaining() -> None:
    s = iso("R5/2026-01-01T00:00:00Z/P1D")
    assert remaining(s, None) == 5
    assert remaining(s, datetime(2025, 1, 1, tzinfo=UTC)) == 5
    assert remaining(s, datetime(2026, 1, 2, tzinfo=UTC)) == 3
    assert remaining(s, datetime(2026, 1, 2, 12, tzinfo=UTC)) == 3
    assert remaining(s, datetime(2030, 1, 1, tzinfo=UTC)) == 0
    assert remaining(iso("R/2026-01-01T00:00:00Z/P1D"), NOW) is None


def test_next_fire_cron_without_a_previous_fire_is_strictly_after_now() -> None:
    s = cron("cron: 0 2 * * *")
    now = datetime(2026, 1, 1, 2, 0, tzinfo=UTC)
    assert next_fire(s, None, now) == datetime(2026, 1, 2, 2, 0, tzinfo=UTC)
    assert next_fire(s, None, now - timedelta(seconds=1)) == now
    assert next_fire(s, None, now) == next_fire(s, now, now)
    # With a previous fire, `now` plays no part.
    assert next_fire(s, now - DAY, now + DAY * 30) == now


def test_next_fire_rejects_naive_times() -> None:
    s = iso("R/2026-01-01T00:00:00Z/P1D")
    with pytest.raises(ValueError, match="after must be timezone-aware"):
        next_fire(s, datetime(2026, 1, 1), NOW)
    with pytest.raises(ValueError, match="now must be timezone-aware"):
        next_fire(s, None, datetime(2026, 1, 1))


def test_occurrences_between_bounds() -> None:
    s = iso("R/2026-01-01T00:00:00Z/PT1H")
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    assert list(occurrences_between(s, None, t0 + 2 * HOUR)) == [t0, t0 + HOUR, t0 + 2 * HOUR]
    assert list(occurrences_between(s, t0, t0 + 2 * HOUR)) == [t0 + HOUR, t0 + 2 * HOUR]
    assert list(occurrences_between(s, t0, t0 + 59 * timedelta(minutes=1))) == []
    assert list(occurrences_between(s, None, t0 - HOUR)) == []
    rn = iso("R2/2026-01-01T00:00:00Z/PT1H")
    assert list(occurrences_between(rn, None, NOW)) == [t0, t0 + HOUR]


def test_occurrences_between_is_lazy_over_years() -> None:
    s = iso("R/2016-01-01T00:00:00Z/PT1S")
    got = list(islice(occurrences_between(s, NOW - HOUR, NOW), 3))
    assert got == [NOW - HOUR + timedelta(seconds=k) for k in (1, 2, 3)]


def test_occurrences_between_cron() -> None:
    s = cron("cron: 0 */6 * * *")
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    assert list(occurrences_between(s, t0, t0 + DAY)) == [t0 + 6 * HOUR * k for k in (1, 2, 3, 4)]
    with pytest.raises(ValueError, match="cron schedule has no start"):
        list(occurrences_between(s, None, t0))


def test_latest_at_or_before_after_ten_years_of_downtime_answers_at_once() -> None:
    every_second = iso("R/2026-01-01T00:00:00Z/PT1S")
    monthly = iso("R/2026-01-31T02:00:00/P1M", "Europe/Berlin")
    five_minutes = cron("cron: */5 * * * *", "Australia/Lord_Howe")
    when = datetime(2036, 1, 1, 0, 0, 0, 500_000, tzinfo=UTC)
    began = time.perf_counter()
    k, t = latest_at_or_before(every_second, when)
    assert (k, t) == (315_532_800, datetime(2036, 1, 1, tzinfo=UTC))
    assert latest_at_or_before(monthly, when) == (
        119, at("Europe/Berlin", 2035, 12, 31, 2).astimezone(UTC)
    )
    assert latest_at_or_before(five_minutes, when) == (None, datetime(2036, 1, 1, tzinfo=UTC))
    assert time.perf_counter() - began < 2  # a walk over 315 million seconds would not be


def test_latest_at_or_before_edges() -> None:
    s = iso("R3/2026-01-01T00:00:00Z/P1D")
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    assert latest_at_or_before(s, t0 - timedelta(microseconds=1)) == (None, None)
    assert latest_at_or_before(s, t0) == (0, t0)
    assert latest_at_or_before(s, t0 + DAY + HOUR) == (1, t0 + DAY)
    assert latest_at_or_before(s, t0 + 1000 * DAY) == (2, t0 + 2 * DAY)  # used up: the last
    c = cron("cron: 0 2 * * *")
    assert latest_at_or_before(c, datetime(2026, 1, 5, 2, tzinfo=UTC)) == (
        None, datetime(2026, 1, 5, 2, tzinfo=UTC)
    )


# --- describe / to_iso ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "tz", "expected"),
    [
        ("R/2026-12-01T02:00:00/P1D", "Europe/Berlin", "every day at 02:00 (Europe/Berlin)"),
        ("R5/2026-01-01T00:00:00Z/PT15M", "UTC",
         "every 15 minutes, 5 times from 2026-01-01 00:00 UTC"),
        ("cron: 30 2 * * *", "Europe/Berlin", "every day at 02:30 (Europe/Berlin)"),
        ("R/2026-01-01T00:00:00Z/PT1H", "UTC", "every hour from 2026-01-01 00:00 UTC"),
        ("R/2026-01-01T00:00:00Z/PT24H", "Europe/Berlin",
         "every 24 hours from 2026-01-01 01:00 Europe/Berlin"),
        ("R/2026-01-01T00:00:00Z/P1DT12H", "UTC",
         "every 1 day and 12 hours from 2026-01-01 00:00 UTC"),
        ("R/2026-01-01T00:00:00Z/PT1.5S", "UTC", "every 1.5 seconds from 2026-01-01 00:00 UTC"),
        ("R3/2026-12-01T02:00:00/P2D", "UTC",
         "every 2 days at 02:00, 3 times from 2026-12-01 (UTC)"),
        ("R/2026-12-07T06:30:00/P1W", "UTC", "every week on Monday at 06:30 (UTC)"),
        ("R/2026-12-01T02:00:00/P1M", "UTC", "every month on day 1 at 02:00 (UTC)"),
        ("R/2026-12-24T18:00:00/P1Y", "UTC", "every year on 24 December at 18:00 (UTC)"),
        ("R1/2026-06-01T12:00:00Z/P1D", "UTC", "once at 2026-06-01 12:00 UTC"),
        ("R0/2026-06-01T12:00:00Z/P1D", "UTC", "never (R0)"),
        # A start written in the spring-forward gap: the intended local time is what is shown.
        ("R/2026-03-29T02:30:00/P1D", "Europe/Berlin", "every day at 02:30 (Europe/Berlin)"),
    ],
)
def test_describe(text: str, tz: str, expected: str) -> None:
    assert describe(parse_schedule(text, tz)) == expected


@pytest.mark.parametrize(
    ("text", "tz", "canonical"),
    [
        ("R/2026-12-01T02:00:00/P1D", "Europe/Berlin", "R/2026-12-01T02:00:00/P1D"),
        ("R5/2026-01-01T00:00:00Z/PT15M", "UTC", "R5/2026-01-01T00:00:00Z/PT15M"),
        ("R/20261201T020000Z/PT1H", "Europe/Berlin", "R/2026-12-01T03:00:00+01:00/PT1H"),
        ("R0/2026-12-01T02:00:00.250/PT1H", "UTC", "R0/2026-12-01T02:00:00.250000/PT1H"),
        # Gap start: the written local time is kept (03:30 would move every later day).
        ("R/2026-03-29T02:30:00/P1D", "Europe/Berlin", "R/2026-03-29T02:30:00/P1D"),
        # Second instance of an ambiguous time, given as an instant: the offset is kept.
        ("R/2026-10-25T01:30:00Z/P1D", "Europe/Berlin", "R/2026-10-25T02:30:00+01:00/P1D"),
    ],
)
def test_to_iso_round_trips(text: str, tz: str, canonical: str) -> None:
    s = iso(text, tz)
    assert to_iso(s) == canonical
    again = iso(canonical, tz)
    assert to_iso(again) == canonical
    assert [occurrence(again, k) for k in range(5 if s.repetitions is None else 0)] == [
        occurrence(s, k) for k in range(5 if s.repetitions is None else 0)
    ]
    assert again.start == s.start


# --- DST: the same cases for every zone ---------------------------------------------------------


@dataclass(frozen=True)
class Zone:
    """The 2026 DST facts of a zone, as the cases below need them."""

    tz: str
    shift: timedelta  # size of the DST change
    spring: tuple[int, int, int]  # the spring-forward day
    gap_reading: tuple[int, int]  # a local time that does not exist that day
    gap_fires_at: tuple[int, int]  # where rule 4 puts it
    fall: tuple[int, int, int]  # the fall-back day
    overlap_reading: tuple[int, int]  # a local time that happens twice that day

    def __str__(self) -> str:
        return self.tz


ZONES = [
    Zone("Europe/Berlin", HOUR, (2026, 3, 29), (2, 30), (3, 30), (2026, 10, 25), (2, 30)),
    Zone("America/New_York", HOUR, (2026, 3, 8), (2, 30), (3, 30), (2026, 11, 1), (1, 30)),
    Zone("Australia/Lord_Howe", timedelta(minutes=30), (2026, 10, 4), (2, 15), (2, 45),
         (2026, 4, 5), (1, 45)),
]
by_zone = pytest.mark.parametrize("z", ZONES, ids=str)


def day_before(ymd: tuple[int, int, int], days: int = 1) -> datetime:
    return datetime(*ymd) - timedelta(days=days)


def local_day(z: Zone, ymd: tuple[int, int, int]) -> tuple[datetime, datetime]:
    """(start, end) of that local calendar day, in UTC.

    UTC on purpose: Python subtracts two datetimes sharing one ZoneInfo by wall clock.
    """
    start = localize(datetime(*ymd), z.tz).astimezone(UTC)
    return start, localize(datetime(*ymd) + DAY, z.tz).astimezone(UTC)


@by_zone
def test_zone_facts_hold(z: Zone) -> None:
    """The cases below are only meaningful if the zone really changes on these days."""
    before, after = local_day(z, z.spring)
    assert offset(after, z.tz) - offset(before, z.tz) == z.shift
    assert after - before == DAY - z.shift
    before, after = local_day(z, z.fall)
    assert offset(before, z.tz) - offset(after, z.tz) == z.shift
    assert after - before == DAY + z.shift


@by_zone
def test_localize_gap_reading_is_shifted_forward_by_the_gap(z: Zone) -> None:
    t = localize(datetime(*z.spring, *z.gap_reading), z.tz)
    assert wall(t, z.tz) == datetime(*z.spring, *z.gap_fires_at)
    assert offset(t, z.tz) == offset(local_day(z, z.spring)[1], z.tz)  # summer time


@by_zone
def test_localize_overlap_reading_is_its_first_instance(z: Zone) -> None:
    reading = datetime(*z.fall, *z.overlap_reading)
    t = localize(reading, z.tz)
    first = reading.replace(tzinfo=ZoneInfo(z.tz), fold=0)
    second = reading.replace(tzinfo=ZoneInfo(z.tz), fold=1)
    assert t.astimezone(UTC) == first.astimezone(UTC)
    assert second.astimezone(UTC) - first.astimezone(UTC) == z.shift


@by_zone
def test_p1d_across_spring_forward_keeps_local_time(z: Zone) -> None:
    s = iso(f"R/{day_before(z.spring, 2):%Y-%m-%d}T12:00:00/P1D", z.tz)
    fires = [occurrence(s, k) for k in range(5)]
    assert [wall(t, z.tz).time() for t in fires] == [datetime(2000, 1, 1, 12).time()] * 5
    assert fires[2] - fires[1] == DAY - z.shift  # the short day, in real time


@by_zone
def test_p1d_across_fall_back_keeps_local_time(z: Zone) -> None:
    s = iso(f"R/{day_before(z.fall, 2):%Y-%m-%d}T12:00:00/P1D", z.tz)
    fires = [occurrence(s, k) for k in range(5)]
    assert [wall(t, z.tz).time() for t in fires] == [datetime(2000, 1, 1, 12).time()] * 5
    assert fires[2] - fires[1] == DAY + z.shift  # the long day, in real time


@by_zone
def test_pt24h_across_spring_forward_shifts_local_time_by_the_dst_offset(z: Zone) -> None:
    s = iso(f"R/{day_before(z.spring):%Y-%m-%d}T12:00:00/PT24H", z.tz)
    assert occurrence(s, 1) - occurrence(s, 0) == DAY
    assert wall(occurrence(s, 1), z.tz) == datetime(*z.spring, 12) + z.shift


@by_zone
def test_pt24h_across_fall_back_shifts_local_time_by_the_dst_offset(z: Zone) -> None:
    s = iso(f"R/{day_before(z.fall):%Y-%m-%d}T12:00:00/PT24H", z.tz)
    assert occurrence(s, 1) - occurrence(s, 0) == DAY
    assert wall(occurrence(s, 1), z.tz) == datetime(*z.fall, 12) - z.shift


@by_zone
def test_iso_occurrence_in_spring_gap_runs_once_shifted(z: Zone) -> None:
    h, m = z.gap_reading
    s = iso(f"R/{day_before(z.spring, 2):%Y-%m-%d}T{h:02d}:{m:02d}:00/P1D", z.tz)
    day_start, day_end = local_day(z, z.spring)
    that_day = list(occurrences_between(s, day_start, day_end))
    assert [wall(t, z.tz) for t in that_day] == [datetime(*z.spring, *z.gap_fires_at)]
    # Only that one occurrence moves: the next day is back at the written time.
    following = next_fire(s, that_day[0], NOW)
    assert following is not None
    assert wall(following, z.tz) == datetime(*z.spring, h, m) + DAY


@by_zone
def test_iso_start_in_spring_gap_runs_once_shifted_then_keeps_written_time(z: Zone) -> None:
    h, m = z.gap_reading
    s = iso(f"R/{datetime(*z.spring):%Y-%m-%d}T{h:02d}:{m:02d}:00/P1D", z.tz)
    assert wall(occurrence(s, 0), z.tz) == datetime(*z.spring, *z.gap_fires_at)
    assert wall(occurrence(s, 1), z.tz) == datetime(*z.spring, h, m) + DAY


@by_zone
def test_iso_occurrence_in_fall_overlap_runs_once_first_instance(z: Zone) -> None:
    h, m = z.overlap_reading
    s = iso(f"R/{day_before(z.fall, 2):%Y-%m-%d}T{h:02d}:{m:02d}:00/P1D", z.tz)
    day_start, day_end = local_day(z, z.fall)
    that_day = list(occurrences_between(s, day_start, day_end))
    assert len(that_day) == 1
    first = datetime(*z.fall, h, m, tzinfo=ZoneInfo(z.tz), fold=0)
    assert that_day[0] == first.astimezone(UTC)
    assert offset(that_day[0], z.tz) == offset(day_start, z.tz)  # still summer time


@by_zone
def test_pt1h_across_fall_back_fires_every_real_hour(z: Zone) -> None:
    s = iso(f"R/{datetime(*z.fall):%Y-%m-%d}T00:00:00/PT1H", z.tz)
    day_start, day_end = local_day(z, z.fall)
    fires = list(occurrences_between(s, None, day_end - timedelta(microseconds=1)))
    assert fires[0] == day_start
    assert len(fires) == 25  # a 25-hour day (24.5 hours on Lord Howe) has 25 hourly starts
    assert all(b - a == HOUR for a, b in pairwise(fires))
    assert len(set(fires)) == len(fires)
    if z.shift == HOUR:  # the repeated hour shows up twice on the wall clock
        readings = [wall(t, z.tz) for t in fires]
        assert readings.count(datetime(*z.fall, *z.overlap_reading[:1], 0)) == 2


@by_zone
def test_pt1h_across_spring_forward_fires_every_real_hour(z: Zone) -> None:
    s = iso(f"R/{datetime(*z.spring):%Y-%m-%d}T00:00:00/PT1H", z.tz)
    day_start, day_end = local_day(z, z.spring)
    fires = list(occurrences_between(s, day_start - HOUR, day_end))
    assert all(b - a == HOUR for a, b in pairwise(fires))
    assert fires[0] == day_start and fires[-1] > day_end - HOUR


@by_zone
def test_cron_in_spring_gap_runs_once_shifted(z: Zone) -> None:
    h, m = z.gap_reading
    s = cron(f"cron: {m} {h} * * *", z.tz)
    fires = list(occurrences_between(s, localize(day_before(z.spring), z.tz),
                                      localize(datetime(*z.spring) + 2 * DAY, z.tz)))
    assert [wall(t, z.tz) for t in fires] == [
        day_before(z.spring).replace(hour=h, minute=m),
        datetime(*z.spring, *z.gap_fires_at),
        datetime(*z.spring, h, m) + DAY,
    ]
    assert latest_at_or_before(s, fires[1]) == (None, fires[1])
    assert latest_at_or_before(s, fires[1] - timedelta(seconds=1)) == (None, fires[0])


@by_zone
def test_cron_in_fall_overlap_runs_once_first_instance(z: Zone) -> None:
    h, m = z.overlap_reading
    s = cron(f"cron: {m} {h} * * *", z.tz)
    day_start, day_end = local_day(z, z.fall)
    fires = list(occurrences_between(s, day_start, day_end))
    first = datetime(*z.fall, h, m, tzinfo=ZoneInfo(z.tz), fold=0)
    assert fires == [first.astimezone(UTC)]
    # Asked from inside the second pass of the overlap, the next run is the next day's.
    second = datetime(*z.fall, h, m, tzinfo=ZoneInfo(z.tz), fold=1)
    following = next_fire(s, second, NOW)
    assert following is not None and wall(following, z.tz) == datetime(*z.fall, h, m) + DAY


@by_zone
def test_cron_every_ten_minutes_across_spring_forward_has_no_duplicate(z: Zone) -> None:
    s = cron("cron: */10 * * * *", z.tz)
    day_start, day_end = local_day(z, z.spring)
    fires = list(occurrences_between(s, day_start, day_end))
    assert len(set(fires)) == len(fires)
    assert all(b - a == timedelta(minutes=10) for a, b in pairwise(fires))
    assert len(fires) == (day_end - day_start) // timedelta(minutes=10)


@by_zone
def test_cron_hourly_across_fall_back_fires_each_wall_clock_hour_once(z: Zone) -> None:
    s = cron("cron: 0 * * * *", z.tz)
    day_start, day_end = local_day(z, z.fall)
    fires = list(occurrences_between(s, day_start - timedelta(seconds=1),
                                     day_end - timedelta(seconds=1)))
    readings = [wall(t, z.tz) for t in fires]
    assert readings == [datetime(*z.fall, hour) for hour in range(24)]
    assert len(set(fires)) == 24


def test_cron_gap_readings_fire_in_time_order_among_existing_ones() -> None:
    """Lord Howe skips 02:00-02:30: 02:00 and 02:20 move to 02:30 and 02:50; 02:40 stays."""
    tz = "Australia/Lord_Howe"
    s = cron("cron: */20 2 * * *", tz)
    fires = list(occurrences_between(s, at(tz, 2026, 10, 4), at(tz, 2026, 10, 4, 12)))
    assert [wall(t, tz) for t in fires] == [
        datetime(2026, 10, 4, 2, 30), datetime(2026, 10, 4, 2, 40), datetime(2026, 10, 4, 2, 50)
    ]
    assert latest_at_or_before(s, at(tz, 2026, 10, 4, 2, 45)) == (None, fires[1])


def test_pacific_apia_skipped_day_fires_once() -> None:
    """Samoa skipped 30 December 2011 (rule 7): its occurrence shares the 31st's instant."""
    tz = "Pacific/Apia"
    s = iso("R/2011-12-28T10:00:00/P1D", tz)
    assert occurrence(s, 2) == occurrence(s, 3)
    fires = list(occurrences_between(s, None, at(tz, 2012, 1, 2)))
    assert [wall(t, tz).day for t in fires] == [28, 29, 31, 1]
    assert next_fire(s, fires[1], NOW) == fires[2]


# --- properties ---------------------------------------------------------------------------------

PROPERTY_ZONES = ["UTC", *(z.tz for z in ZONES)]
FAR = datetime(2100, 1, 1, tzinfo=UTC)


@st.composite
def iso_schedules(draw: st.DrawFn) -> IsoSchedule:
    tz = draw(st.sampled_from(PROPERTY_ZONES))
    start = draw(st.datetimes(datetime(2025, 12, 1), datetime(2027, 1, 1)))
    months = draw(st.sampled_from([0, 0, 0, 1, 2]))
    days = draw(st.sampled_from([0, 0, 1, 1, 2, 7]))
    seconds = draw(st.sampled_from([0, 1, 59, 900, 1800, 3600, 5400, 86400, 90000]))
    if not (months or days or seconds):
        seconds = 3600
    period = "P" + (f"{months}M" if months else "") + (f"{days}D" if days else "")
    period += f"T{seconds}S" if seconds else ""
    reps = draw(st.none() | st.integers(0, 12))
    text = f"R{'' if reps is None else reps}/{start:%Y-%m-%dT%H:%M:%S}/{period}"
    return iso(text, tz)


def first_occurrences(s: IsoSchedule, n: int = 40) -> list[datetime]:
    count = n if s.repetitions is None else min(n, s.repetitions)
    return [occurrence(s, k) for k in range(count)]


PROPERTY_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@PROPERTY_SETTINGS
@given(iso_schedules())
def test_property_occurrences_strictly_increase(s: IsoSchedule) -> None:
    fires = first_occurrences(s)
    assert all(a < b for a, b in pairwise(fires))


@PROPERTY_SETTINGS
@given(iso_schedules(), st.integers(0, 59), st.integers(-2 * 86400, 2 * 86400))
def test_property_next_fire_and_latest_agree_with_the_occurrences(
    s: IsoSchedule, index: int, seconds: int
) -> None:
    fires = first_occurrences(s, 60)
    base = fires[min(index, len(fires) - 1)] if fires else s.start
    after = base + timedelta(seconds=seconds)
    got = next_fire(s, after, NOW)
    assert got is None or got > after
    complete = len(fires) == s.repetitions
    if not complete and after >= fires[-1]:
        return  # beyond the occurrences enumerated here
    later = [t for t in fires if t > after]
    earlier = [t for t in fires if t <= after]
    assert got == (later[0] if later else None)
    expected = (len(earlier) - 1, earlier[-1]) if earlier else (None, None)
    assert latest_at_or_before(s, after) == expected
    if s.repetitions is not None:
        assert remaining(s, after) == s.repetitions - len(earlier)


@PROPERTY_SETTINGS
@given(iso_schedules(), st.integers(0, 10 * 86400), st.integers(0, 5 * 86400))
def test_property_occurrences_between_matches_next_fire_iteration(
    s: IsoSchedule, offset_s: int, span_s: int
) -> None:
    after = s.start + timedelta(seconds=offset_s)
    until = after + timedelta(seconds=span_s)
    walked: list[datetime] = []
    t = next_fire(s, after, NOW)
    while t is not None and t <= until and len(walked) < 500:
        walked.append(t)
        t = next_fire(s, t, NOW)
    assert list(islice(occurrences_between(s, after, until), 500)) == walked


@PROPERTY_SETTINGS
@given(iso_schedules())
def test_property_rn_fires_exactly_n_times(s: IsoSchedule) -> None:
    if s.repetitions is None:
        return
    fires = list(occurrences_between(s, None, FAR))
    assert len(fires) == s.repetitions
    assert remaining(s, None) == s.repetitions
    if fires:
        assert remaining(s, fires[-1]) == 0
        assert next_fire(s, fires[-1], NOW) is None


@PROPERTY_SETTINGS
@given(iso_schedules())
def test_property_to_iso_round_trips(s: IsoSchedule) -> None:
    again = iso(to_iso(s), s.tz)
    assert to_iso(again) == to_iso(s)
    assert first_occurrences(again, 10) == first_occurrences(s, 10)


CRON_EXPRESSIONS = [
    "*/10 * * * *", "30 2 * * *", "15,45 1-3 * * *", "0 * * * *", "20,40 2 * * *",
    "*/7 2 * * 0", "0 0 1 * *", "5 1,2,3 * * *",
]
# Instants near every 2026 transition of the property zones, so the properties see DST.
TRANSITIONS = [
    (z.tz, localize(datetime(*ymd), z.tz).astimezone(UTC))
    for z in ZONES for ymd in (z.spring, z.fall)
]


def oracle_localize(reading: datetime, tz: str) -> datetime:
    """Rules 4 and 5 worked out the slow way: try every offset the zone uses nearby."""
    zone = ZoneInfo(tz)
    near = reading.replace(tzinfo=UTC)
    offsets = {(near + timedelta(hours=h)).astimezone(zone).utcoffset() for h in range(-30, 31)}
    instants = sorted((reading - off).replace(tzinfo=UTC) for off in offsets if off is not None)
    existing = [u for u in instants if u.astimezone(zone).replace(tzinfo=None) == reading]
    if existing:
        return existing[0]  # the first instance
    before = (reading - DAY).replace(tzinfo=zone).utcoffset()  # the offset before the gap
    assert before is not None
    return (reading - before).replace(tzinfo=UTC)


def oracle_fires(s: CronSchedule, lo: datetime, hi: datetime) -> list[datetime]:
    """Every fire time in (lo, hi]: all matching readings around the window, resolved, sorted."""
    readings = croniter(s.expression, wall(lo, s.tz) - 2 * DAY)
    fires: set[datetime] = set()
    while (r := readings.get_next(datetime)) <= wall(hi, s.tz) + 2 * DAY:
        t = oracle_localize(r, s.tz)
        if lo < t <= hi:
            fires.add(t)
    return sorted(fires)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(CRON_EXPRESSIONS),
    st.sampled_from(TRANSITIONS),
    st.integers(-36 * 3600, 36 * 3600),
)
def test_property_cron_matches_the_oracle_near_transitions(
    expression: str, zone_and_transition: tuple[str, datetime], shift_s: int
) -> None:
    tz, transition = zone_and_transition
    s = cron(f"cron: {expression}", tz)
    after = transition + timedelta(seconds=shift_s)
    until = after + DAY
    expected = oracle_fires(s, after, until)
    got = list(occurrences_between(s, after, until))
    assert got == expected
    assert all(a < b for a, b in pairwise(got))
    first = next_fire(s, after, NOW)
    assert first is not None and first > after
    if expected:
        assert first == expected[0]
        assert latest_at_or_before(s, expected[-1]) == (None, expected[-1])
        _, before_last = latest_at_or_before(s, expected[-1] - timedelta(microseconds=1))
        assert before_last is not None and before_last < expected[-1]
        if len(expected) > 1:
            assert before_last == expected[-2]


def test_schedule_alias_covers_both_kinds() -> None:
    kinds: list[Schedule] = [cron("cron: 0 2 * * *"), iso("R/2026-01-01T00:00:00Z/P1D")]
    assert [type(k).__name__ for k in kinds] == ["CronSchedule", "IsoSchedule"]

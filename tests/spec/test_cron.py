"""Cron schedules: syntax, errors, next slot (field jumps, leap years, dom/dow, DST)."""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from ansflow.errors import DefinitionError
from ansflow.spec.cron import CronSchedule
from tests.builders import parse

ALL = {
    "minutes": set(range(60)), "hours": set(range(24)), "days": set(range(1, 32)),
    "months": set(range(1, 13)), "weekdays": set(range(7)),
}


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0,
        microsecond: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, microsecond, tzinfo=UTC)


# expression → the fields that differ from "* * * * *"
SYNTAX: dict[str, dict[str, set[int]]] = {
    "* * * * *": {},
    "5 * * * *": {"minutes": {5}},
    "05 08 * * *": {"minutes": {5}, "hours": {8}},
    "  0   0  * * *  ": {"minutes": {0}, "hours": {0}},
    "1-5 * * * *": {"minutes": {1, 2, 3, 4, 5}},
    "*/15 * * * *": {"minutes": {0, 15, 30, 45}},
    "10-30/10 * * * *": {"minutes": {10, 20, 30}},
    "50/5 * * * *": {"minutes": {50, 55}},
    "1,2,3,10-12 * * * *": {"minutes": {1, 2, 3, 10, 11, 12}},
    "0,*/20 */6 * * *": {"minutes": {0, 20, 40}, "hours": {0, 6, 12, 18}},
    "* * 1/10 * *": {"days": {1, 11, 21, 31}},
    "* * 31 * *": {"days": {31}},
    "* * * JAN-MAR *": {"months": {1, 2, 3}},
    "* * * jan,Jun,DeC *": {"months": {1, 6, 12}},
    "* * * */3 *": {"months": {1, 4, 7, 10}},
    "* * * FEB/5 *": {"months": {2, 7, 12}},
    "* * * * MON-FRI": {"weekdays": {1, 2, 3, 4, 5}},
    "* * * * sun": {"weekdays": {0}},
    "* * * * 7": {"weekdays": {0}},
    "* * * * 0,7": {"weekdays": {0}},
    "* * * * 5-7": {"weekdays": {5, 6, 0}},
    "* * * * FRI-7": {"weekdays": {5, 6, 0}},
    "* * * * */2": {"weekdays": {0, 2, 4, 6}},
    "* * * * tue,Thu": {"weekdays": {2, 4}},
    "@hourly": {"minutes": {0}},
    "@daily": {"minutes": {0}, "hours": {0}},
    "@midnight": {"minutes": {0}, "hours": {0}},
    "@Weekly": {"minutes": {0}, "hours": {0}, "weekdays": {0}},
    "@monthly": {"minutes": {0}, "hours": {0}, "days": {1}},
    "@yearly": {"minutes": {0}, "hours": {0}, "days": {1}, "months": {1}},
    "@ANNUALLY": {"minutes": {0}, "hours": {0}, "days": {1}, "months": {1}},
}


@pytest.mark.parametrize(("expression", "fields"), SYNTAX.items(), ids=list(SYNTAX))
def test_syntax(expression: str, fields: dict[str, set[int]]) -> None:
    schedule = CronSchedule.parse(expression)
    parsed = {name: set(getattr(schedule, name)) for name in ALL}
    assert parsed == ALL | fields
    assert schedule.expression == expression


@pytest.mark.parametrize(("expression", "either"), [
    ("0 0 1 * MON", True),
    ("0 0 1-31 * 1", True),
    ("0 0 13 * FRI", True),
    ("0 0 * * MON", False),
    ("0 0 1 * *", False),
    ("0 0 */2 * MON", False),  # vixie: a field starting with '*' is unrestricted here
    ("0 0 13 * */2", False),
    ("@weekly", False),
])
def test_day_fields_combine_like_vixie(expression: str, either: bool) -> None:
    assert CronSchedule.parse(expression).days_either is either


FIELDS_MESSAGE = "expected 5 fields (minute hour day-of-month month day-of-week)"

ERRORS = {
    "61 * * * *": "minute field '61' is out of range 0-59",
    "0-60 * * * *": "minute field '60' is out of range 0-59",
    "* 24 * * *": "hour field '24' is out of range 0-23",
    "* * 0 * *": "day-of-month field '0' is out of range 1-31",
    "* * 32 * *": "day-of-month field '32' is out of range 1-31",
    "* * * 0 *": "month field '0' is out of range 1-12",
    "* * * 13 *": "month field '13' is out of range 1-12",
    "* * * * 8": "day-of-week field '8' is out of range 0-7",
    "* * * * * *": f"{FIELDS_MESSAGE}, got 6",
    "* * * *": f"{FIELDS_MESSAGE}, got 4",
    "": "the cron expression is empty",
    "   ": "the cron expression is empty",
    "@reboot": "unknown cron macro '@reboot' (known: @hourly, @daily, @midnight, @weekly, "
               "@monthly, @yearly, @annually)",
    "*/0 * * * *": "minute field '*/0': the step must be 1-59",
    "*/60 * * * *": "minute field '*/60': the step must be 1-59",
    "* */24 * * *": "hour field '*/24': the step must be 1-23",
    "*/x * * * *": "minute field '*/x': the step 'x' is not a number",
    "*/ * * * *": "minute field '*/': the step '' is not a number",
    "x * * * *": "minute field 'x' is not a number",
    "L * * * *": "minute field 'L' is not a number",
    "? * * * *": "minute field '?' is not a number",
    "\u0663 * * * *": "minute field '\u0663' is not a number",
    "* * * FOO *": "month field 'FOO' is not a number or a month name (JAN-DEC)",
    "* * * MON *": "month field 'MON' is not a number or a month name (JAN-DEC)",
    "* * * * JAN": "day-of-week field 'JAN' is not a number or a weekday name (SUN-SAT)",
    "* * * * MON-FOO": "day-of-week field 'MON-FOO': 'FOO' is not a number or a weekday name "
                       "(SUN-SAT)",
    "* * * * 1#2": "day-of-week field '1#2' is not a number or a weekday name (SUN-SAT)",
    "30-10 * * * *": "minute field '30-10': the range goes backwards (30 > 10)",
    "* * * * SAT-SUN": "day-of-week field 'SAT-SUN': the range goes backwards (6 > 0)",
    "-5 * * * *": "minute field '-5' is missing a number",
    "1- * * * *": "minute field '1-' is missing a number",
    "1,,2 * * * *": "minute field '1,,2' has an empty list item",
    "1, * * * *": "minute field '1,' has an empty list item",
    "0 0 30 2 *": "the schedule never runs: day-of-month '30' does not occur in month '2'",
    "0 0 31 APR,jun *": "the schedule never runs: day-of-month '31' does not occur in month "
                        "'APR,jun'",
    "0 0 30-31 2 */2": "the schedule never runs: day-of-month '30-31' does not occur in month "
                       "'2'",
}


@pytest.mark.parametrize(("expression", "message"), ERRORS.items(), ids=list(ERRORS))
def test_syntax_errors(expression: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        CronSchedule.parse(expression)
    assert str(caught.value) == message


@pytest.mark.parametrize("expression", ["0 0 31 4 MON", "0 0 29 2 *", "0 0 30 2 FRI"])
def test_schedules_that_can_run_are_accepted(expression: str) -> None:
    CronSchedule.parse(expression)


@pytest.mark.parametrize("name", ["Mars/Base", "", "America", "../etc/passwd", "/etc/localtime",
                                  "utc", "Europe/Berlin ", "a\x00b"])
def test_unknown_timezones(name: str) -> None:
    with pytest.raises(ValueError) as caught:
        CronSchedule.parse("* * * * *", name)
    assert str(caught.value) == f"unknown timezone {name!r}"


def test_value_semantics() -> None:
    schedule = CronSchedule.parse("0 2 * * *", "Europe/Berlin")
    assert schedule == CronSchedule.parse("0 2 * * *", "Europe/Berlin")
    assert schedule != CronSchedule.parse("0 2 * * *")
    assert str(schedule) == "0 2 * * * (Europe/Berlin)"
    assert len({schedule, CronSchedule.parse("0 2 * * *", "Europe/Berlin")}) == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        schedule.expression = "* * * * *"  # type: ignore[misc]


# (expression, timezone, moment, the next slot)
NEXT: dict[str, tuple[str, str, datetime, datetime]] = {
    "on a slot: strictly after": ("0 * * * *", "UTC", utc(2024, 5, 1, 10), utc(2024, 5, 1, 11)),
    "just before a slot": (
        "0 * * * *", "UTC", utc(2024, 5, 1, 9, 59, 59, 999999), utc(2024, 5, 1, 10)),
    "within the slot minute": ("0 * * * *", "UTC", utc(2024, 5, 1, 10, 0, 30), utc(2024, 5, 1, 11)),
    "every minute": ("* * * * *", "UTC", utc(2024, 5, 1, 10, 0, 0, 1), utc(2024, 5, 1, 10, 1)),
    "quarter hours": ("*/15 * * * *", "UTC", utc(2024, 5, 1, 10, 15), utc(2024, 5, 1, 10, 30)),
    "quarter hours over an hour": (
        "*/15 * * * *", "UTC", utc(2024, 5, 1, 10, 45), utc(2024, 5, 1, 11)),
    "over midnight": ("30 23,1 * * *", "UTC", utc(2024, 5, 1, 23, 30), utc(2024, 5, 2, 1, 30)),
    "first of next month": ("0 0 1 * *", "UTC", utc(2024, 1, 31), utc(2024, 2, 1)),
    "31st skips short months": ("0 0 31 * *", "UTC", utc(2024, 4, 1), utc(2024, 5, 31)),
    "over new year": ("59 23 31 12 *", "UTC", utc(2024, 12, 31, 23, 59), utc(2025, 12, 31, 23, 59)),
    "yearly": ("@yearly", "UTC", utc(2024, 6, 1), utc(2025, 1, 1)),
    "weekly is Sunday midnight": ("@weekly", "UTC", utc(2024, 9, 4), utc(2024, 9, 8)),
    "leap day": ("0 0 29 2 *", "UTC", utc(2024, 2, 28), utc(2024, 2, 29)),
    "leap day, four years on": ("0 0 29 2 *", "UTC", utc(2024, 2, 29), utc(2028, 2, 29)),
    "leap day, 2100 is not leap": ("0 0 29 2 *", "UTC", utc(2096, 3, 1), utc(2104, 2, 29)),
    "leap day, 2000 is leap": ("0 0 29 2 *", "UTC", utc(1996, 3, 1), utc(2000, 2, 29)),
    "weekdays: Friday to Monday": (
        "0 12 * * MON-FRI", "UTC", utc(2024, 9, 6, 12), utc(2024, 9, 9, 12)),
    "7 is Sunday": ("0 0 * * 7", "UTC", utc(2024, 9, 2), utc(2024, 9, 8)),
    "or: a Friday first": ("0 0 13 * FRI", "UTC", utc(2024, 9, 1), utc(2024, 9, 6)),
    "or: Friday the 13th": ("0 0 13 * FRI", "UTC", utc(2024, 9, 12), utc(2024, 9, 13)),
    "or: a 13th that is a Sunday": ("0 0 13 * FRI", "UTC", utc(2024, 10, 11), utc(2024, 10, 13)),
    "or: day 31 or a Monday in April": ("0 0 31 4 MON", "UTC", utc(2024, 1, 1), utc(2024, 4, 1)),
    "and: star step in day-of-month": (
        "0 0 */2 * MON", "UTC", utc(2024, 9, 1), utc(2024, 9, 9)),  # the 2nd is even
    "and: star step in day-of-week": (
        "0 0 1 * */6", "UTC", utc(2024, 1, 1), utc(2024, 6, 1)),  # the first weekend 1st
    "aware input in another offset": (
        "0 12 * * *", "UTC", datetime(2024, 5, 1, 13, tzinfo=timezone(timedelta(hours=2))),
        utc(2024, 5, 1, 12)),
    "Tokyo": ("0 9 * * *", "Asia/Tokyo", utc(2024, 5, 1), utc(2024, 5, 2)),
    "Kolkata half-hour offset": (
        "0 9 * * *", "Asia/Kolkata", utc(2024, 5, 1), utc(2024, 5, 1, 3, 30)),
    "Berlin winter": ("0 2 * * *", "Europe/Berlin", utc(2024, 1, 10), utc(2024, 1, 10, 1)),
    "Berlin summer": ("0 2 * * *", "Europe/Berlin", utc(2024, 7, 9, 12), utc(2024, 7, 10)),
    # Berlin springs forward 2024-03-31 02:00 CET -> 03:00 CEST (01:00 UTC)
    "Berlin gap: runs at the transition": (
        "30 2 * * *", "Europe/Berlin", utc(2024, 3, 30, 12), utc(2024, 3, 31, 1)),
    "Berlin gap: one second before it": (
        "30 2 * * *", "Europe/Berlin", utc(2024, 3, 31, 0, 59, 59), utc(2024, 3, 31, 1)),
    "Berlin gap: after the transition": (
        "30 2 * * *", "Europe/Berlin", utc(2024, 3, 31, 1), utc(2024, 4, 1, 0, 30)),
    "Berlin slot at the gap's end": (
        "0 3 * * *", "Europe/Berlin", utc(2024, 3, 30, 12), utc(2024, 3, 31, 1)),
    # Berlin falls back 2024-10-27 03:00 CEST -> 02:00 CET (01:00 UTC)
    "Berlin repeat: the first occurrence": (
        "30 2 * * *", "Europe/Berlin", utc(2024, 10, 26, 12), utc(2024, 10, 27, 0, 30)),
    "Berlin repeat: not the second": (
        "30 2 * * *", "Europe/Berlin", utc(2024, 10, 27, 0, 30), utc(2024, 10, 28, 1, 30)),
    "Berlin repeat: from inside the second pass": (
        "*/20 * * * *", "Europe/Berlin", utc(2024, 10, 27, 1, 10), utc(2024, 10, 27, 2)),
    # New York springs forward 2024-03-10 02:00 EST -> 03:00 EDT (07:00 UTC)
    "New York gap": ("30 2 * * *", "America/New_York", utc(2024, 3, 9, 12), utc(2024, 3, 10, 7)),
    "New York gap: next day": (
        "30 2 * * *", "America/New_York", utc(2024, 3, 10, 7), utc(2024, 3, 11, 6, 30)),
    # New York falls back 2024-11-03 02:00 EDT -> 01:00 EST (06:00 UTC)
    "New York repeat: first occurrence": (
        "30 1 * * *", "America/New_York", utc(2024, 11, 2, 12), utc(2024, 11, 3, 5, 30)),
    "New York repeat: not the second": (
        "30 1 * * *", "America/New_York", utc(2024, 11, 3, 5, 30), utc(2024, 11, 4, 6, 30)),
    "New York repeat: from inside the second pass": (
        "*/20 * * * *", "America/New_York", utc(2024, 11, 3, 6, 10), utc(2024, 11, 3, 7)),
    # Lord Howe springs forward half an hour: 02:00 -> 02:30 on 2024-10-06 (15:30 UTC)
    "half-hour gap": (
        "15 2 * * *", "Australia/Lord_Howe", utc(2024, 10, 5), utc(2024, 10, 5, 15, 30)),
    # Samoa skipped 2011-12-30 entirely: 29th 23:59 (-10) -> 31st 00:00 (+14) at 10:00 UTC
    "a skipped day": ("0 12 * * *", "Pacific/Apia", utc(2011, 12, 29, 22), utc(2011, 12, 30, 10)),
    "after a skipped day": (
        "0 12 * * *", "Pacific/Apia", utc(2011, 12, 30, 10), utc(2011, 12, 30, 22)),
}


@pytest.mark.parametrize(("expression", "zone", "moment", "expected"), NEXT.values(),
                         ids=list(NEXT))
def test_next_after(expression: str, zone: str, moment: datetime, expected: datetime) -> None:
    slot = CronSchedule.parse(expression, zone).next_after(moment)
    assert slot == expected
    assert slot.tzinfo is UTC


# (expression, timezone, start, end, slots in (start, end])
COUNTS: dict[str, tuple[str, str, datetime, datetime, int]] = {
    "*/15 over two hours": ("*/15 * * * *", "UTC", utc(2024, 5, 1, 10), utc(2024, 5, 1, 12), 8),
    "start excluded, end included": (
        "0 * * * *", "UTC", utc(2024, 5, 1, 10), utc(2024, 5, 1, 12), 2),
    "nothing in the window": ("0 * * * *", "UTC", utc(2024, 5, 1, 10), utc(2024, 5, 1, 10, 59), 0),
    "end before start": ("* * * * *", "UTC", utc(2024, 5, 1, 10), utc(2024, 5, 1, 9), 0),
    "daily over leap 2024": ("@daily", "UTC", utc(2023, 12, 31, 23), utc(2024, 12, 31, 23), 366),
    "minutes over a day": ("* * * * *", "UTC", utc(2024, 5, 1), utc(2024, 5, 2), 1440),
    "Berlin hourly, spring day (23 hours)": (
        "0 * * * *", "Europe/Berlin", utc(2024, 3, 30, 22, 59), utc(2024, 3, 31, 21, 59), 23),
    "Berlin hourly, autumn day (25 hours)": (
        "0 * * * *", "Europe/Berlin", utc(2024, 10, 26, 21, 59), utc(2024, 10, 27, 22, 59), 24),
    "Berlin daily over a year": (
        "30 2 * * *", "Europe/Berlin", utc(2024, 1, 1), utc(2025, 1, 1), 366),
    "New York daily over a year": (
        "30 1 * * *", "America/New_York", utc(2024, 1, 1), utc(2025, 1, 1), 366),
}


@pytest.mark.parametrize(("expression", "zone", "start", "end", "count"), COUNTS.values(),
                         ids=list(COUNTS))
def test_slots_between_counts(expression: str, zone: str, start: datetime, end: datetime,
                              count: int) -> None:
    slots = list(CronSchedule.parse(expression, zone).slots_between(start, end))
    assert len(slots) == count
    assert slots == sorted(set(slots))
    assert all(start < slot <= end for slot in slots)


@pytest.mark.parametrize(("zone", "start", "end", "expected"), [
    ("Europe/Berlin", utc(2024, 3, 31, 0, 20), utc(2024, 3, 31, 1, 30),
     [(0, 30), (0, 45), (1, 0), (1, 15), (1, 30)]),
    ("Europe/Berlin", utc(2024, 10, 26, 23, 50), utc(2024, 10, 27, 2, 15),
     [(0, 0), (0, 15), (0, 30), (0, 45), (2, 0), (2, 15)]),
    ("America/New_York", utc(2024, 3, 10, 6, 20), utc(2024, 3, 10, 7, 30),
     [(6, 30), (6, 45), (7, 0), (7, 15), (7, 30)]),
    ("America/New_York", utc(2024, 11, 3, 4, 50), utc(2024, 11, 3, 7, 15),
     [(5, 0), (5, 15), (5, 30), (5, 45), (7, 0), (7, 15)]),
])
def test_quarter_hours_across_dst(zone: str, start: datetime, end: datetime,
                                  expected: list[tuple[int, int]]) -> None:
    """The gap's slots collapse onto the transition; the repeated hour runs once."""
    slots = list(CronSchedule.parse("*/15 * * * *", zone).slots_between(start, end))
    day = start + timedelta(minutes=10)
    assert slots == [day.replace(hour=h, minute=m) for h, m in expected]


REFERENCE_EXPRESSIONS = ["*/7 */5 * * *", "0 0 29 2 *", "15 10 1,15 * *", "0 12 13 * FRI",
                         "0 0 */3 * MON", "5-10/2 3 * FEB,MAR SAT,SUN", "@monthly", "59 23 * * *"]


@pytest.mark.parametrize("expression", REFERENCE_EXPRESSIONS)
def test_agrees_with_a_minute_by_minute_walk(expression: str) -> None:
    schedule = CronSchedule.parse(expression)
    start, end = utc(2024, 2, 20), utc(2024, 3, 20)
    walk, moment = [], start
    while moment < end:
        moment += timedelta(minutes=1)
        dom, dow = moment.day in schedule.days, (moment.isoweekday() % 7) in schedule.weekdays
        day = (dom or dow) if schedule.days_either else (dom and dow)
        if (day and moment.minute in schedule.minutes and moment.hour in schedule.hours
                and moment.month in schedule.months):
            walk.append(moment)
    assert walk
    assert list(schedule.slots_between(start, end)) == walk
    assert all(schedule.matches(m) for m in walk)


@pytest.mark.parametrize(("expression", "zone", "moment", "expected"), [
    ("*/15 * * * *", "UTC", utc(2024, 5, 1, 10, 15), True),
    ("*/15 * * * *", "UTC", utc(2024, 5, 1, 10, 15, 59, 999999), True),
    ("*/15 * * * *", "UTC", utc(2024, 5, 1, 10, 16), False),
    ("*/15 * * * *", "UTC", utc(2024, 5, 1, 10, 14, 59), False),
    ("30 2 * * *", "Europe/Berlin", utc(2024, 3, 31, 1), True),  # moved to the transition
    ("30 2 * * *", "Europe/Berlin", utc(2024, 3, 31, 1, 30), False),
    ("30 1 * * *", "America/New_York", utc(2024, 11, 3, 5, 30), True),
    ("30 1 * * *", "America/New_York", utc(2024, 11, 3, 6, 30), False),  # the second 01:30
    ("0 0 29 2 *", "UTC", utc(2028, 2, 29), True),
])
def test_matches(expression: str, zone: str, moment: datetime, expected: bool) -> None:
    assert CronSchedule.parse(expression, zone).matches(moment) is expected


@pytest.mark.parametrize("call", ["next_after", "matches", "slots_between"])
def test_naive_datetimes_are_refused(call: str) -> None:
    schedule = CronSchedule.parse("* * * * *")
    naive = datetime(2024, 5, 1, 10)
    with pytest.raises(ValueError, match="a timezone-aware datetime is required"):
        if call == "slots_between":
            list(schedule.slots_between(utc(2024, 5, 1), naive))
        else:
            getattr(schedule, call)(naive)


def test_sparse_schedules_jump_by_fields() -> None:
    schedules = [CronSchedule.parse("0 0 29 2 *"), CronSchedule.parse("59 23 31 12 *"),
                 CronSchedule.parse("0 0 13 2 FRI", "Europe/Berlin")]
    began = time.perf_counter()
    for _ in range(300):
        for schedule in schedules:
            schedule.next_after(utc(2097, 3, 1))
    assert (time.perf_counter() - began) / 900 < 0.001


def pipeline(*triggers: dict[str, Any]) -> dict[str, Any]:
    return {"name": "p", "triggers": list(triggers),
            "steps": [{"name": "a", "type": "custom", "config": {"script": "true"}}]}


def test_definition_accepts_schedules() -> None:
    spec = parse(pipeline({"schedule": {"cron": "0 2 * * MON-FRI"}},
                                     {"schedule": {"cron": "@daily", "timezone": "Asia/Tokyo"}}))
    assert [t.schedule.timezone for t in spec.triggers if t.schedule] == ["UTC", "Asia/Tokyo"]


def test_definition_rejects_bad_schedules() -> None:
    with pytest.raises(DefinitionError) as caught:
        parse(pipeline(
            {"webhook": {"events": ["push"]}},
            {"schedule": {"cron": "61 * * * *"}},
            {"schedule": {"cron": "0 2 * * *", "timezone": "Mars/Base"}},
            {"schedule": {"cron": "* * * *", "timezone": "Nowhere"}},
        ))
    assert [(d.step, d.field, d.message) for d in caught.value.details] == [
        (None, "triggers[1].schedule.cron", "minute field '61' is out of range 0-59"),
        (None, "triggers[2].schedule.timezone", "unknown timezone 'Mars/Base'"),
        (None, "triggers[3].schedule.cron", f"{FIELDS_MESSAGE}, got 4"),
        (None, "triggers[3].schedule.timezone", "unknown timezone 'Nowhere'"),
    ]

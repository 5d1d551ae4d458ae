"""Cron schedules (``schedule: {cron: "m h dom mon dow", timezone: ...}``): parsing and
the next slot after a moment, computed on the schedule's wall clock.

Syntax: ``*``, numbers, ranges ``a-b``, steps ``*/n``, ``a-b/n`` and ``a/n`` (from ``a``
to the end of the field), lists ``a,b,c``, month names JAN-DEC and weekday names SUN-SAT
(any case), 0 and 7 both Sunday, and the macros @hourly @daily @midnight @weekly
@monthly @yearly @annually.

Day of month and day of week follow vixie cron: when both fields are restricted (neither
starts with ``*``) a day matches if either matches; otherwise both must match.

Matching wall-clock times are found by ``cronsim``; this module keeps what it does not
do our way: errors that name the field and the token, and the daylight-saving rules.

Daylight saving time: slots are wall-clock times in the schedule's timezone.
- A slot whose local time does not exist (the clock springs forward over it) runs at the
  first valid instant after the gap, that is the instant of the transition; several slots
  in one gap (and a slot right at its end) run once.
- A local time that occurs twice (the clock falls back) runs once, at its first occurrence.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim

FIELD_NAMES = ("minute", "hour", "day-of-month", "month", "day-of-week")

MACROS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}

_MONTHS = {name.upper(): i for i, name in enumerate(calendar.month_abbr) if name}
_WEEKDAYS = {name: i for i, name in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"))}
_LONGEST_MONTH = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_ONE_MINUTE = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    lo: int
    hi: int
    names: dict[str, int] = field(default_factory=dict)
    hint: str = ""

    def parse(self, text: str) -> frozenset[int]:
        values: set[int] = set()
        for item in text.split(","):
            if not item:
                raise ValueError(f"{self.name} field {text!r} has an empty list item")
            values.update(self._item(item))
        if self.name == "day-of-week":
            values = {v % 7 for v in values}
        return frozenset(values)

    def _item(self, item: str) -> range:
        base, slash, step_text = item.partition("/")
        step = self._step(item, step_text) if slash else 1
        if base == "*":
            return range(self.lo, self.hi + 1, step)
        if "-" in base:
            first_text, _, last_text = base.partition("-")
            first, last = self._value(item, first_text), self._value(item, last_text)
            if first > last:
                raise ValueError(f"{self.name} field {item!r}: the range goes backwards "
                                 f"({first} > {last})")
            return range(first, last + 1, step)
        first = self._value(item, base)
        return range(first, (self.hi if slash else first) + 1, step)

    def _step(self, item: str, text: str) -> int:
        if not (text.isascii() and text.isdigit()):
            raise ValueError(f"{self.name} field {item!r}: the step {text!r} is not a number")
        step = int(text)
        if not 1 <= step <= self.hi:
            raise ValueError(f"{self.name} field {item!r}: the step must be 1-{self.hi}")
        return step

    def _value(self, item: str, token: str) -> int:
        if not token:
            raise ValueError(f"{self.name} field {item!r} is missing a number")
        if token.isascii() and token.isdigit():
            value = int(token)
        elif token.upper() in self.names:
            value = self.names[token.upper()]
        else:
            where = repr(item) if token == item else f"{item!r}: {token!r}"
            raise ValueError(f"{self.name} field {where} is not a number{self.hint}")
        if not self.lo <= value <= self.hi:
            raise ValueError(f"{self.name} field {token!r} is out of range {self.lo}-{self.hi}")
        return value


_FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day-of-month", 1, 31),
    _Field("month", 1, 12, _MONTHS, " or a month name (JAN-DEC)"),
    _Field("day-of-week", 0, 7, _WEEKDAYS, " or a weekday name (SUN-SAT)"),
)


def load_timezone(name: str) -> ZoneInfo:
    """The IANA timezone ``name`` (e.g. ``Europe/Berlin``); ``ValueError`` if there is none."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown timezone {name!r}") from None


@dataclass(frozen=True, slots=True)
class CronSchedule:
    """A parsed cron expression in a timezone. Immutable and pure: no clock, no I/O.

    Build it with :meth:`parse`. Every method takes and returns aware datetimes; the
    results are in UTC.
    """

    expression: str
    timezone: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: tuple[int, ...]
    months: tuple[int, ...]
    weekdays: tuple[int, ...]  # 0 = Sunday
    days_either: bool  # both day fields restricted: a day matches if either matches
    zone: ZoneInfo = field(repr=False, compare=False)
    fields: str = field(repr=False, compare=False)
    """The five fields (macros expanded), as the wall-clock matcher reads them."""

    @classmethod
    def parse(cls, expression: str, timezone: str = "UTC") -> CronSchedule:
        """Parse ``expression``; ``ValueError`` with a message naming the culprit."""
        text = expression.strip()
        if not text:
            raise ValueError("the cron expression is empty")
        if text.startswith("@"):
            if text.lower() not in MACROS:
                raise ValueError(f"unknown cron macro {text!r} (known: {', '.join(MACROS)})")
            text = MACROS[text.lower()]
        parts = text.split()
        if len(parts) != len(_FIELDS):
            raise ValueError(f"expected 5 fields ({' '.join(FIELD_NAMES)}), got {len(parts)}")
        minutes, hours, days, months, weekdays = (
            tuple(sorted(spec.parse(part))) for spec, part in zip(_FIELDS, parts, strict=True))
        days_either = not parts[2].startswith("*") and not parts[4].startswith("*")
        if not days_either and not any(d <= _LONGEST_MONTH[m] for m in months for d in days):
            raise ValueError(f"the schedule never runs: day-of-month {parts[2]!r} "
                             f"does not occur in month {parts[3]!r}")
        return cls(expression, timezone, minutes, hours, days, months, weekdays, days_either,
                   load_timezone(timezone), " ".join(parts))

    def __str__(self) -> str:
        return f"{self.expression} ({self.timezone})"

    def next_after(self, moment: datetime) -> datetime:
        """The first slot strictly after ``moment`` (aware), in UTC."""
        _require_aware(moment)
        local = moment.astimezone(self.zone).replace(tzinfo=None, fold=0)
        wall = local.replace(second=0, microsecond=0) + _ONE_MINUTE
        while True:
            wall = self._next_wall(wall)
            instant = self._instant(wall)
            # Only in the second pass of a repeated hour can a later wall time map to an
            # earlier instant (its first occurrence, already past).
            if instant > moment:
                return instant
            wall += _ONE_MINUTE

    def slots_between(self, start: datetime, end: datetime) -> Iterator[datetime]:
        """Every slot in ``(start, end]``, in order, in UTC."""
        _require_aware(end)
        slot = self.next_after(start)
        while slot <= end:
            yield slot
            slot = self.next_after(slot)

    def matches(self, moment: datetime) -> bool:
        """Whether the minute of ``moment`` (aware) starts a slot."""
        _require_aware(moment)
        minute = moment.astimezone(UTC).replace(second=0, microsecond=0)
        return self.next_after(minute - timedelta(microseconds=1)) == minute

    def _next_wall(self, wall: datetime) -> datetime:
        """The first matching wall-clock minute at or after ``wall`` (naive, local)."""
        try:
            return next(CronSim(self.fields, wall - timedelta(seconds=1)))
        except StopIteration:  # cronsim looks 50 years ahead; parse refused what never runs
            raise RuntimeError(f"cron schedule {self} has no slot within 50 years") from None

    def _instant(self, wall: datetime) -> datetime:
        """The UTC instant a matching wall time runs at (see the module's DST rules)."""
        first = wall.replace(tzinfo=self.zone).astimezone(UTC)  # fold=0: first occurrence
        if first.astimezone(self.zone).replace(tzinfo=None) == wall:
            return first
        return self._transition(wall)

    def _transition(self, wall: datetime) -> datetime:
        """The instant the clock jumped over the nonexistent ``wall``."""
        # fold=1 reads a gap with the offset after it, fold=0 with the one before: the
        # transition lies between the two readings; bisect on whole seconds (tzdata's unit).
        before = int(wall.replace(tzinfo=self.zone, fold=1).timestamp())
        after = int(wall.replace(tzinfo=self.zone, fold=0).timestamp())
        while after - before > 1:
            middle = (before + after) // 2
            local = datetime.fromtimestamp(middle, self.zone).replace(tzinfo=None)
            if local > wall:
                after = middle
            else:
                before = middle
        return datetime.fromtimestamp(after, UTC)


def _require_aware(moment: datetime) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"a timezone-aware datetime is required, got {moment.isoformat()}")

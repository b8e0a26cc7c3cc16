"""When a schedule fires: a cron expression in a time zone, or a fixed rate.

Cron is the five-field form every scheduler takes (minute, hour, day of month,
month, day of week), each field ``*``, a number, a range ``a-b``, a step ``*/n``
or ``a-b/n``, or a list of those; months and days may be named (``jan``,
``mon``), and day of week 7 is Sunday as 0 is. As in Vixie cron, when both day
fields are restricted a day matching either one fires. Times are computed in the
schedule's time zone (``zoneinfo``), so ``0 9 * * *`` in Europe/Paris fires at 09:00
there through the clock changes; a local time that does not exist that day (in the
spring gap) is skipped, and one that happens twice fires once, the first time.

A rate (``rate_s``) fires every so many seconds from the schedule's start.
Everything returned is an aware UTC datetime.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

UTC = dt.UTC
MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
MIN_RATE_S = 1
MAX_RATE_S = 366 * 24 * 3600
# A schedule that fires less than once in this long (``0 0 30 2 *``) never fires.
SEARCH_DAYS = 366 * 8


class InvalidSchedule(ValueError):
    """The expression, time zone or rate cannot make a schedule; the message says why."""


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    names_from: int = 0


FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day of month", 1, 31),
    _Field("month", 1, 12, MONTHS, 1),
    _Field("day of week", 0, 7, DAYS, 0),
)


@dataclass(frozen=True)
class Cron:
    """A parsed cron expression in ``zone``: the allowed values of each field."""

    expression: str
    zone: ZoneInfo
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 is Sunday
    any_day: bool  # day of month was "*"
    any_weekday: bool  # day of week was "*"

    @classmethod
    def parse(cls, expression: str, timezone: str = "UTC") -> Cron:
        parts = expression.split()
        if len(parts) != 5:
            raise InvalidSchedule(
                f"cron expression {expression!r} has {len(parts)} fields; it needs 5: "
                "minute hour day-of-month month day-of-week"
            )
        values = [_parse_field(text, spec) for text, spec in zip(parts, FIELDS, strict=True)]
        weekdays = frozenset(0 if day == 7 else day for day in values[4])
        return cls(
            expression=" ".join(parts),
            zone=zone_named(timezone),
            minutes=frozenset(values[0]),
            hours=frozenset(values[1]),
            days=frozenset(values[2]),
            months=frozenset(values[3]),
            weekdays=weekdays,
            any_day=parts[2] == "*",
            any_weekday=parts[4] == "*",
        )

    def next_after(self, moment: dt.datetime) -> dt.datetime | None:
        """The first fire time strictly after ``moment`` (aware), or None if there is none."""
        local = moment.astimezone(self.zone).replace(second=0, microsecond=0, tzinfo=None)
        local += dt.timedelta(minutes=1)
        day = local.date()
        for _ in range(SEARCH_DAYS):
            if self._day_matches(day):
                start = local.time() if day == local.date() else dt.time(0, 0)
                fire = self._first_time_on(day, start, moment)
                if fire is not None:
                    return fire
            day += dt.timedelta(days=1)
        return None

    def _day_matches(self, day: dt.date) -> bool:
        if day.month not in self.months:
            return False
        in_month = day.day in self.days
        in_week = (day.isoweekday() % 7) in self.weekdays
        if self.any_day and self.any_weekday:
            return True
        if self.any_day:
            return in_week
        if self.any_weekday:
            return in_month
        return in_month or in_week

    def _first_time_on(
        self, day: dt.date, start: dt.time, moment: dt.datetime
    ) -> dt.datetime | None:
        for hour in sorted(h for h in self.hours if h >= start.hour):
            for minute in sorted(self.minutes):
                if hour == start.hour and minute < start.minute:
                    continue
                naive = dt.datetime.combine(day, dt.time(hour, minute))
                aware = naive.replace(tzinfo=self.zone)
                # A time in the spring gap does not exist: it reads back otherwise.
                if aware.astimezone(UTC).astimezone(self.zone).replace(tzinfo=None) != naive:
                    continue
                fire = aware.astimezone(UTC)  # fold 0: the first of a repeated hour
                # In the second pass of a repeated hour the first one is already past.
                if fire > moment:
                    return fire
        return None


def zone_named(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidSchedule(f"unknown time zone {name!r} (an IANA name: Europe/Paris)") from exc


def check_rate(rate_s: int) -> int:
    if not MIN_RATE_S <= rate_s <= MAX_RATE_S:
        raise InvalidSchedule(f"rate_s must be from {MIN_RATE_S} to {MAX_RATE_S} seconds")
    return rate_s


def next_by_rate(start: dt.datetime, rate_s: int, moment: dt.datetime) -> dt.datetime:
    """The first of ``start``, ``start + rate_s``, … strictly after ``moment``."""
    if moment < start:
        return start
    periods = int((moment - start).total_seconds() // rate_s) + 1
    return start + dt.timedelta(seconds=periods * rate_s)


def _parse_field(text: str, spec: _Field) -> set[int]:
    values: set[int] = set()
    for item in text.lower().split(","):
        values |= _parse_item(item, spec)
    return values


def _parse_item(item: str, spec: _Field) -> set[int]:
    where = f"{spec.name} {item!r}"
    base, _, step_text = item.partition("/")
    step = 1
    if step_text:
        if not step_text.isdigit() or int(step_text) == 0:
            raise InvalidSchedule(f"{where}: the step must be a whole number above 0")
        step = int(step_text)
    if base == "*":
        low, high = spec.low, spec.high
    elif "-" in base:
        first, _, last = base.partition("-")
        low, high = _value(first, spec, where), _value(last, spec, where)
        if low > high:
            raise InvalidSchedule(f"{where}: the range runs backwards")
    else:
        low = high = _value(base, spec, where)
        if step_text:
            high = spec.high  # "5/15": from 5, every 15
    return set(range(low, high + 1, step))


def _value(text: str, spec: _Field, where: str) -> int:
    if text in spec.names:
        return spec.names.index(text) + spec.names_from
    if not text.isdigit():
        raise InvalidSchedule(f"{where}: {text!r} is not a number or a name")
    value = int(text)
    if not spec.low <= value <= spec.high:
        raise InvalidSchedule(f"{where}: {value} is outside {spec.low}-{spec.high}")
    return value

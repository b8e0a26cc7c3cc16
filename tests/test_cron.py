"""Cron expressions and rates: when a schedule fires next, in its own time zone."""

from __future__ import annotations

import datetime as dt

import pytest

from lambda_os.cron import Cron, InvalidSchedule, check_rate, next_by_rate

UTC = dt.UTC


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def fires(expression: str, after: str, count: int = 3, zone: str = "UTC") -> list[str]:
    cron = Cron.parse(expression, zone)
    moment, out = at(after), []
    for _ in range(count):
        moment = cron.next_after(moment)
        out.append(moment.strftime("%Y-%m-%d %H:%M"))
    return out


def test_every_five_minutes_fires_on_the_fives_strictly_after_now():
    assert fires("*/5 * * * *", "2026-12-03T10:05:00") == [
        "2026-12-03 10:10",
        "2026-12-03 10:15",
        "2026-12-03 10:20",
    ]
    assert fires("*/5 * * * *", "2026-12-03T10:06:30", 1) == ["2026-12-03 10:10"]


def test_lists_ranges_steps_and_names():
    assert fires("0 9-17/4 * * mon-fri", "2026-12-04T16:00:00") == [  # a Friday
        "2026-12-04 17:00",
        "2026-12-07 09:00",
        "2026-12-07 13:00",
    ]
    assert fires("30 6 1,15 jan,jul *", "2026-12-03T00:00:00") == [
        "2027-01-01 06:30",
        "2027-01-15 06:30",
        "2027-07-01 06:30",
    ]


def test_sunday_is_0_and_7():
    assert fires("0 0 * * 0", "2026-12-03T00:00:00", 1) == fires("0 0 * * 7", "2026-12-03", 1)
    assert fires("0 0 * * 7", "2026-12-03T00:00:00", 1) == ["2026-12-06 00:00"]


def test_with_both_day_fields_restricted_either_one_fires_as_in_vixie_cron():
    # The 13th, or any Friday.
    assert fires("0 12 13 * fri", "2026-12-03T00:00:00") == [
        "2026-12-04 12:00",
        "2026-12-11 12:00",
        "2026-12-13 12:00",
    ]


def test_a_time_zone_keeps_the_local_hour_through_the_clock_change():
    # 09:00 in Paris is 08:00 UTC in winter and 07:00 UTC in summer.
    assert fires("0 9 * * *", "2027-03-27T09:00:00", 2, "Europe/Paris") == [
        "2027-03-28 07:00",
        "2027-03-29 07:00",
    ]
    assert fires("0 9 * * *", "2026-12-03T09:00:00", 1, "Europe/Paris") == ["2026-12-04 08:00"]


def test_a_local_time_in_the_spring_gap_is_skipped_and_a_repeated_one_fires_once():
    # Paris skips 02:00-03:00 on 2027-03-28 and repeats 02:00-03:00 on 2027-10-31.
    assert fires("30 2 * * *", "2027-03-27T12:00:00", 1, "Europe/Paris") == ["2027-03-29 00:30"]
    autumn = fires("30 2 * * *", "2027-10-30T12:00:00", 2, "Europe/Paris")
    assert autumn == ["2027-10-31 00:30", "2027-11-01 01:30"]


def test_a_date_that_never_comes_makes_no_fire_time():
    assert Cron.parse("0 0 30 2 *").next_after(at("2026-12-03T00:00:00")) is None


@pytest.mark.parametrize(
    "expression,says",
    [
        ("* * * *", "needs 5"),
        ("60 * * * *", "outside 0-59"),
        ("*/0 * * * *", "step"),
        ("5-1 * * * *", "backwards"),
        ("* * * smarch *", "not a number or a name"),
    ],
)
def test_a_bad_expression_says_which_field_and_why(expression, says):
    with pytest.raises(InvalidSchedule, match=says):
        Cron.parse(expression)


def test_an_unknown_time_zone_is_refused():
    with pytest.raises(InvalidSchedule, match="unknown time zone"):
        Cron.parse("* * * * *", "Mars/Olympus")


def test_a_rate_fires_every_period_from_its_start():
    start = at("2026-12-03T10:00:00")
    assert next_by_rate(start, 300, at("2026-12-03T09:00:00")) == start
    assert next_by_rate(start, 300, start) == at("2026-12-03T10:05:00")
    assert next_by_rate(start, 300, at("2026-12-03T10:12:00")) == at("2026-12-03T10:15:00")
    with pytest.raises(InvalidSchedule):
        check_rate(0)


def test_from_inside_a_repeated_hour_the_next_fire_time_is_never_in_the_past():
    # 01:10 UTC on 2027-10-31 is 02:10 in Paris for the second time (CET, after 03:00 CEST).
    # The repeated 02:15, 02:30 and 02:45 fired in the first pass, so next is 03:00 CET.
    cron = Cron.parse("*/15 * * * *", "Europe/Paris")
    moment = at("2027-10-31T01:10:00")
    assert cron.next_after(moment) == at("2027-10-31T02:00:00")

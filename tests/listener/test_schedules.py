"""Schedules fire each tick once: through races, a ticker dying mid-tick, and outages.

The ticker is driven directly on a mongomock catalogue with a publisher that keeps
what it is given, and a clock the test sets; the last test runs a listener on the
real RabbitMQ with a one-second rate and counts the runs.
"""

from __future__ import annotations

import collections
from datetime import UTC, datetime, timedelta

import pytest
from listener_helpers import FakeProvisioner, add_function, running, wait_for

from lambda_os.records import ScheduleRecord, tick_event_id
from listener.schedule import Ticker
from listener.service import Backoff, Listener

NOW = datetime(2026, 12, 3, 10, 0, 30, tzinfo=UTC)


class KeptPublisher:
    def __init__(self) -> None:
        self.published: list[tuple[str | None, bytes]] = []

    def publish(self, body: bytes, *, message_id: str | None = None) -> None:
        self.published.append((message_id, body))


def schedule(catalogue, function, **fields) -> ScheduleRecord:
    return catalogue.add_schedule(ScheduleRecord("", function.id, function.owner, **fields))


def records_of(catalogue, function):
    return catalogue.list_executions({"function_id": function.id}, 100).items


def test_a_due_tick_fires_once_into_its_own_record_and_the_schedule_moves_on(catalogue):
    function = add_function(catalogue, "tick")
    tick = NOW - timedelta(seconds=50)
    rate = schedule(catalogue, function, rate_s=60, start_at=tick, next_fire_at=tick)
    publisher = KeptPublisher()
    ticker = Ticker(catalogue, publisher, clock=lambda: NOW)

    assert ticker.tick_once() == 1
    assert ticker.tick_once() == 0  # the next tick has not come

    assert [mid for mid, _ in publisher.published] == [tick_event_id(rate.id, tick)]
    (record,) = records_of(catalogue, function)
    assert (record.event_id, record.status) == (tick_event_id(rate.id, tick), "queued")
    (stored,) = catalogue.list_schedules(function.id)
    assert stored.next_fire_at == tick + timedelta(seconds=60)
    assert (stored.last_fired_at, stored.missed) == (tick, 0)


def test_two_listeners_racing_for_one_tick_make_one_record_and_one_moves_the_schedule(
    catalogue,
):
    function = add_function(catalogue, "tick")
    cron = schedule(catalogue, function, cron="* * * * *", next_fire_at=NOW.replace(second=0))
    first, second = KeptPublisher(), KeptPublisher()
    seen = catalogue.due_schedules(NOW)  # both read the schedule before either writes
    Ticker(catalogue, first, clock=lambda: NOW)._handle(seen[0], NOW)
    Ticker(catalogue, second, clock=lambda: NOW)._handle(seen[0], NOW)

    tick = tick_event_id(cron.id, NOW.replace(second=0))
    assert [m for m, _ in first.published + second.published] == [tick, tick]
    assert [r.event_id for r in records_of(catalogue, function)] == [tick]
    (stored,) = catalogue.list_schedules(function.id)
    assert stored.next_fire_at == NOW.replace(second=0) + timedelta(minutes=1)


def test_a_ticker_that_died_before_moving_the_schedule_on_fires_the_tick_again_into_the_same_record(
    catalogue,
):
    function = add_function(catalogue, "tick")
    schedule(catalogue, function, cron="* * * * *", next_fire_at=NOW.replace(second=0))
    publisher = KeptPublisher()

    class DiesBeforeAdvancing:
        def __getattr__(self, name):
            return getattr(catalogue, name)

        def advance_schedule(self, *args, **kwargs):
            raise SystemExit("killed")

    with pytest.raises(SystemExit):
        Ticker(DiesBeforeAdvancing(), publisher, clock=lambda: NOW).tick_once()
    assert Ticker(catalogue, publisher, clock=lambda: NOW).tick_once() == 1

    assert len(publisher.published) == 2
    assert len({m for m, _ in publisher.published}) == 1
    assert len(records_of(catalogue, function)) == 1


def test_ticks_missed_while_nothing_ran_are_counted_and_only_a_recent_one_fires(catalogue):
    function = add_function(catalogue, "tick")
    minutely = schedule(
        catalogue, function, cron="* * * * *", next_fire_at=NOW - timedelta(hours=1)
    )
    daily = schedule(catalogue, function, cron="0 5 * * *", next_fire_at=NOW - timedelta(hours=5))
    publisher = KeptPublisher()

    fired = Ticker(catalogue, publisher, missed_after_s=60, clock=lambda: NOW).tick_once()

    assert fired == 1  # the minutely one's latest tick, 30 s ago; not the 60 before it
    assert [m for m, _ in publisher.published] == [
        tick_event_id(minutely.id, NOW.replace(second=0))
    ]
    by_id = {s.id: s for s in catalogue.list_schedules(function.id)}
    assert by_id[minutely.id].missed == 60
    assert by_id[daily.id].missed == 1 and by_id[daily.id].last_fired_at is None
    assert by_id[daily.id].next_fire_at == datetime(2026, 12, 4, 5, 0, tzinfo=UTC)


def test_a_listener_fires_a_one_second_rate_once_per_tick(broker_settings, catalogue):
    function = add_function(catalogue, "every-second")
    now = datetime.now(UTC)
    rate = schedule(catalogue, function, rate_s=1, start_at=now, next_fire_at=now)
    provisioner = FakeProvisioner()
    listener = Listener(broker_settings, catalogue, provisioner, backoff=Backoff(0.1, 0.5))

    with running(listener):
        wait_for(lambda: len(provisioner.runs) >= 3, timeout_s=30, what="three ticks run")

    runs = collections.Counter(run.event_id for run in provisioner.runs)
    assert all(count == 1 for count in runs.values()), runs
    assert all(event_id.startswith(f"schedule-{rate.id}-") for event_id in runs)
    records = records_of(catalogue, function)
    assert len({r.event_id for r in records}) == len(records)


def test_a_pass_that_comes_late_fires_every_tick_since_not_only_the_latest(catalogue):
    function = add_function(catalogue, "tick")
    due = NOW - timedelta(seconds=4)
    rate = schedule(catalogue, function, rate_s=1, start_at=due, next_fire_at=due)
    publisher = KeptPublisher()

    assert Ticker(catalogue, publisher, clock=lambda: NOW).tick_once() == 5

    fired = [m for m, _ in publisher.published]
    assert fired == [tick_event_id(rate.id, due + timedelta(seconds=n)) for n in range(5)]
    (stored,) = catalogue.list_schedules(function.id)
    assert (stored.missed, stored.next_fire_at) == (0, NOW + timedelta(seconds=1))

"""Schedules: fire each due tick once, across restarts and with several listeners running.

Every listener runs a ``Ticker`` on a timer. A pass reads the schedules whose
``next_fire_at`` has come, and for each one fires its latest due tick: the
execution record is claimed under the tick's own event id (``tick_event_id``:
the schedule and the tick's time) and the event, addressed to the function, is
published with confirms, as an asynchronous invocation is. Only then does the
ticker move the schedule on to its next tick, with one conditional write on the
tick it read. So a listener that dies in between leaves the tick due, and the
next pass (its own or another's) fires it again; a tick fired twice has one
event id, hence one execution record and one run. Two tickers racing both claim
the same record; the broker may carry the event twice, the record keeps it once.

A tick more than ``missed_after_s`` overdue was missed while nothing ran: such
ticks are counted on the schedule (``missed``, ``last_missed_at``) and logged, never
fired late in a burst; the ticks since (a pass that came late, a one-second rate) all
fire; the schedule goes on from the next tick after now. A
schedule whose function is gone is left for the function's delete to remove.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from lambda_os.cron import Cron, InvalidSchedule, next_by_rate
from lambda_os.errors import LambdaError, NotFound
from lambda_os.records import FunctionRecord, ScheduleRecord, tick_event_id, utcnow
from listener.events import Event, encode_event
from listener.execute import claim

LOGGER = logging.getLogger(__name__)

SCHEDULE_EVENT_SOURCE = "lambda-os.schedule"
SCHEDULE_EVENT_TYPE = "tick"
MISSED_AFTER_S = 60.0
TICK_INTERVAL_S = 1.0
# Counting the missed ticks of a long outage stops here; the figure says "at least".
MAX_COUNTED_MISSES = 100_000


class ScheduleStore(Protocol):
    def due_schedules(self, now: datetime, limit: int = 100) -> list[ScheduleRecord]: ...

    def advance_schedule(
        self,
        record: ScheduleRecord,
        next_fire_at: datetime | None,
        fired_at: datetime | None,
        missed: int = 0,
        missed_at: datetime | None = None,
    ) -> bool: ...

    def get_function(self, function_id: str) -> FunctionRecord: ...

    def create_execution(self, record: Any) -> Any: ...


class EventPublisher(Protocol):
    def publish(self, body: bytes, *, message_id: str | None = None) -> None: ...


def next_tick(schedule: ScheduleRecord, after: datetime) -> datetime | None:
    """The schedule's first tick strictly after ``after``; None if it has no more."""
    if schedule.rate_s:
        return next_by_rate(aware(schedule.start_at or after), schedule.rate_s, after)
    return Cron.parse(schedule.cron or "", schedule.timezone).next_after(after)


def aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class Ticker:
    """Fires due ticks (see the module doc)."""

    def __init__(
        self,
        catalogue: ScheduleStore,
        publisher: EventPublisher,
        missed_after_s: float = MISSED_AFTER_S,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._catalogue = catalogue
        self._publisher = publisher
        self._missed_after = timedelta(seconds=missed_after_s)
        self._clock = clock

    def tick_once(self) -> int:
        """One pass; how many ticks it fired."""
        now = self._clock()
        fired = 0
        for schedule in self._catalogue.due_schedules(now):
            try:
                fired += self._handle(schedule, now)
            except InvalidSchedule as exc:  # stored before a rule changed: stop it, saying why
                LOGGER.error("schedule %s cannot fire: %s; stopped", schedule.id, exc)
                self._catalogue.advance_schedule(schedule, None, None)
        return fired

    def run(self, stop: threading.Event, interval_s: float = TICK_INTERVAL_S) -> None:
        while not stop.wait(interval_s):
            try:
                self.tick_once()
            except LambdaError as exc:
                LOGGER.warning("schedules: pass failed: %s", exc.description)
            except Exception:
                LOGGER.exception("schedules: pass failed")

    def _handle(self, schedule: ScheduleRecord, now: datetime) -> int:
        due = aware(schedule.next_fire_at or now)
        upcoming = next_tick(schedule, now)
        missed, last_missed, recent = self._due_ticks(schedule, due, now)
        if not recent:
            if self._catalogue.advance_schedule(schedule, upcoming, None, missed, last_missed):
                LOGGER.warning(
                    "schedule %s of function %s: %d ticks missed while nothing ran "
                    "(the latest at %s); going on from %s",
                    schedule.id,
                    schedule.function_id,
                    missed,
                    last_missed.isoformat() if last_missed else "-",
                    upcoming.isoformat() if upcoming else "never",
                )
            return 0
        try:
            function = self._catalogue.get_function(schedule.function_id)
        except NotFound:
            return 0  # deleted: its schedules go with it
        for tick in recent:
            self._fire(function, schedule, tick)
        self._catalogue.advance_schedule(schedule, upcoming, recent[-1], missed, last_missed)
        return len(recent)

    def _due_ticks(
        self, schedule: ScheduleRecord, due: datetime, now: datetime
    ) -> tuple[int, datetime | None, list[datetime]]:
        """From ``due`` to ``now``: how many ticks are past ``missed_after_s`` (and the latest
        of them), and the ticks since, each still to fire."""
        window = now - self._missed_after
        if schedule.rate_s:
            step = timedelta(seconds=schedule.rate_s)
            old = max(0, math.ceil((window - due) / step)) if due < window else 0
            old = min(old, MAX_COUNTED_MISSES)
            last_old = due + (old - 1) * step if old else None
            tick, recent = due + old * step, []
            while tick <= now:
                recent.append(tick)
                tick += step
            return old, last_old, recent
        cron = Cron.parse(schedule.cron or "", schedule.timezone)
        old, last_old, recent = 0, None, []
        tick: datetime | None = due
        while tick is not None and tick <= now and old < MAX_COUNTED_MISSES:
            if tick < window:
                old, last_old = old + 1, tick
            else:
                recent.append(tick)
            tick = cron.next_after(tick)
        return old, last_old, recent

    def _fire(self, function: FunctionRecord, schedule: ScheduleRecord, tick: datetime) -> None:
        """Claim the tick's record and publish its event, addressed to the function."""
        event_id = tick_event_id(schedule.id, tick)
        data = {"schedule_id": schedule.id, "scheduled_at": tick.isoformat()}
        event = Event(
            event_id,
            SCHEDULE_EVENT_SOURCE,
            SCHEDULE_EVENT_TYPE,
            data,
            function_id=function.id,
        )
        claim(self._catalogue, function, event)  # type: ignore[arg-type]
        body = encode_event(
            SCHEDULE_EVENT_SOURCE, SCHEDULE_EVENT_TYPE, data, id=event_id, function_id=function.id
        )
        self._publisher.publish(body, message_id=event_id)
        LOGGER.info("schedule %s: fired the tick of %s (event %s)", schedule.id, tick, event_id)

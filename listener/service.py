"""The listener process: connect, consume, reconnect, and stop cleanly on a signal.

``Listener(settings, catalogue, provisioner).run()`` blocks until ``stop()`` (or a
signal, after ``install_signal_handlers()``) and returns the process exit code:
0 after a clean stop, 2 when the broker refuses the queue declarations (a queue
of that name exists with other arguments: retrying cannot fix configuration).

Connection failures (broker down, connection closed from the broker side,
heartbeat lost) are retried forever in an outer loop with capped exponential
backoff and jitter; the backoff resets once a connection is consuming again.
Messages that were in flight on a lost connection come back from the broker, and
the execution records make running them again harmless: each execution runs
under a lease in the catalogue, so two listeners never run it at once and one
cut off by a dead listener is taken over when its lease lapses.

A function run that fails is retried (``execute``) through the delay queues
(``topology``); after its last attempt the event is dead-lettered for that
function and recorded in the catalogue's dead letters, as every dead letter is.
A sweeper thread (``sweep``) publishes again the events of executions that
nothing would run any more, a ticker (``schedule``) fires the schedules' due
ticks, and a collector (``gather``), on a connection of its own, runs the events
of batching functions in batches.

The same class serves a cluster: a router is a ``Listener`` with no provisioner
whose ``handle`` places each execution on a host (``listener.route``), and a
host's worker is one consuming its own queue (``Topology.for_host``) with the
local provisioner and leases named after the host (``lambda_os.serve``).

The first SIGTERM or SIGINT sets the stop flag: no new message is started,
prefetched ones go back to the queue, in-flight events finish and are acked,
then the connection closes. A second one stops at once: ``SystemExit`` unwinds
``run`` without waiting; outcomes that arrive after it are not stored (their
records go back to ``queued``) and the unacked messages return to the queue. The
caller then closes the provisioner, which removes the containers.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import FrameType
from typing import Any

import pika
import pika.exceptions

from lambda_os.errors import TransientError
from lambda_os.settings import Settings
from listener.admit import Admission, Ceiling
from listener.batch import BatchRunner
from listener.consume import Counters, EventGuard, Session, TopologyError
from listener.events import Event
from listener.execute import LEASE_MARGIN_S, Step, run_event
from listener.gather import Collector
from listener.publish import Publisher, connection_parameters
from listener.schedule import Ticker
from listener.sweep import Sweeper
from listener.topology import Topology
from provisioner.base import Invocation, Outcome, Provisioner

LOGGER = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_CONFIGURATION = 2
DEFAULT_HEARTBEAT_S = 30
# How long a stop waits for the batches running (their retries' backoff ends on stop).
COLLECTOR_STOP_S = 120.0


class Backoff:
    """Exponential delays with jitter: ``initial * 2**n``, capped, each drawn from [d/2, d]."""

    def __init__(
        self,
        initial_s: float = 0.5,
        cap_s: float = 30.0,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._initial = initial_s
        self._cap = cap_s
        self._rng = rng
        self._failures = 0

    def next(self) -> float:
        delay = min(self._cap, self._initial * 2**self._failures)
        self._failures += 1
        return delay / 2 + self._rng() * delay / 2

    def reset(self) -> None:
        self._failures = 0


class _HaltAware:
    """The provisioner, except that an outcome arriving after a halt is not stored.

    After the second signal the caller removes the containers, so late outcomes
    say ``crashed`` about functions that did nothing wrong; as a ``TransientError``
    they put the record back to ``queued`` for the redelivery instead.
    """

    def __init__(self, provisioner: Provisioner, halt: threading.Event) -> None:
        self._provisioner = provisioner
        self._halt = halt

    @property
    def capacity(self) -> int:
        return self._provisioner.capacity

    def run(self, invocation: Invocation) -> Outcome:
        outcome = self._provisioner.run(invocation)
        if self._halt.is_set():
            raise TransientError("the listener was halted during the execution")
        return outcome

    def close(self) -> None:
        self._provisioner.close()


class Listener:
    """Runs every event on the events queue through its matching functions (see the module doc)."""

    def __init__(
        self,
        settings: Settings,
        catalogue: Any,
        provisioner: Provisioner | None,
        *,
        connect: Callable[[], Any] | None = None,
        backoff: Backoff | None = None,
        transient_delay_s: float = 2.0,
        name: str = "lambda-os listener",
        topology: Topology | None = None,
        lease_margin_s: float = LEASE_MARGIN_S,
        owner: str | None = None,
        handle: Callable[[Event], list[Step]] | None = None,
        quota_ceiling: Ceiling | None = None,
    ) -> None:
        """``provisioner`` runs the events here; a router has none and passes ``handle``
        (what it does with each event, as ``run_event`` would) instead. ``owner`` names
        the leases its runs take (a cluster host's worker: one its registry record
        names). ``quota_ceiling``: the most that runs at once on this catalogue, when
        this listener knows it (standalone, alone on its own catalogue); a project's
        at-once quota at or above it is never counted (``listener.admit``)."""
        if (provisioner is None) == (handle is None):
            raise ValueError("a listener takes either a provisioner or a handle")
        self._topology = topology or Topology.from_settings(settings)
        self._lease_margin_s = lease_margin_s
        self._catalogue = catalogue
        self._halt = threading.Event()
        self._stop = threading.Event()
        self._provisioner = None if provisioner is None else _HaltAware(provisioner, self._halt)
        self._capacity = max(
            1, settings.concurrency if provisioner is None else provisioner.capacity
        )
        self._owner = owner
        self._custom_handle = handle
        self._batch_connect = connect
        if connect is None:
            params = connection_parameters(settings.amqp_url, name)
            if params.heartbeat is None:
                params.heartbeat = DEFAULT_HEARTBEAT_S
            connect = lambda: pika.BlockingConnection(params)
            # A name of its own, so that a look at the broker's connections tells them apart.
            batch_params = connection_parameters(settings.amqp_url, f"{name} batches")
            batch_params.heartbeat = params.heartbeat
            self._batch_connect = lambda: pika.BlockingConnection(batch_params)
        self._connect = connect
        self._backoff = backoff or Backoff()
        self._transient_delay_s = transient_delay_s
        self._guard = EventGuard()
        self.counters = Counters()
        self._settings = settings
        self._sweep_interval_s = settings.sweep_interval_s
        self._consuming = threading.Event()
        # A host's runs were admitted by the router that placed them; a router admits its own.
        admits = handle is None and not self._topology.consume_queue
        self._admission = Admission(catalogue, settings) if admits else None
        self._ceiling = quota_ceiling
        # Batches run where events run on this listener's own provisioner: not on a
        # router (which places single runs) nor on a host (whose queue holds placed runs).
        self._batches: Collector | None = None
        self._batching = provisioner is not None and not self._topology.consume_queue

    @property
    def topology(self) -> Topology:
        return self._topology

    def stop(self) -> None:
        """Finish what is in flight and return from ``run``; safe from any thread."""
        self._stop.set()

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT: the first stops cleanly, the second at once (main thread only)."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def run(self) -> int:
        """Consume until stopped; the exit code (see the module doc)."""
        pool = ThreadPoolExecutor(max_workers=self._capacity, thread_name_prefix="execution")
        sweeping = self._start_sweeper()
        collecting = self._start_collector(pool)
        try:
            while not self._stop.is_set():
                try:
                    connection = self._connect()
                except pika.exceptions.AMQPConnectionError as exc:
                    self._wait_to_reconnect(exc)
                    continue
                try:
                    self._session(connection, pool).run(on_consuming=self._on_consuming)
                except TopologyError as exc:
                    LOGGER.error("%s; fix the queue or the settings", exc.description)
                    return EXIT_CONFIGURATION
                except pika.exceptions.AMQPError as exc:
                    self._wait_to_reconnect(exc)
                except Exception as exc:
                    # A bug outside any one message's handling (those are dead-lettered
                    # in the session): a listener that dies here stops the whole platform.
                    LOGGER.error("the session failed; reconnecting", exc_info=exc)
                    self._wait_to_reconnect(exc)
                finally:
                    self._consuming.clear()
                    _close_quietly(connection)
            LOGGER.info("stopped: %s", self.counters.snapshot())
            return EXIT_OK
        finally:
            self._stop.set()  # whatever ended the session (a stop, bad configuration) ends these
            if collecting is not None and not self._halt.is_set():
                # Its batches run on the pool: they finish and are acked before it goes.
                collecting.join(timeout=COLLECTOR_STOP_S)
            # After a halt, do not wait for work whose outcome will not be stored anyway.
            pool.shutdown(wait=not self._halt.is_set(), cancel_futures=True)
            if sweeping is not None:
                sweeping.join(timeout=5)
            if collecting is not None:
                collecting.join(timeout=5)

    def _on_consuming(self) -> None:
        self._consuming.set()
        self._backoff.reset()

    def consuming(self) -> bool:
        """Whether a session is consuming now (its queues are declared); any thread."""
        return self._consuming.is_set()

    def state(self) -> dict[str, Any]:
        """For ``/healthz``: whether it consumes now, and what it has done; any thread."""
        if self._stop.is_set():
            status = "stopping"
        else:
            status = "consuming" if self._consuming.is_set() else "connecting"
        return {
            "status": status,
            "queue": self._topology.consumed_queue,
            **self.counters.snapshot(),
        }

    def _start_sweeper(self) -> threading.Thread | None:
        """The sweeper's and the schedules' ticker's thread, on a publisher connection of
        their own; None when sweeping is switched off (a host's worker, which may not
        publish to the events queue)."""
        if self._sweep_interval_s <= 0:
            return None
        publisher = Publisher(
            dataclasses.replace(
                self._settings,
                events_queue=self._topology.events_queue,
                dead_letter_queue=self._topology.dead_letter_queue,
            ),
            name="lambda-os sweeper",
        )
        sweeper = Sweeper(self._catalogue, publisher, self._settings.sweep_queued_after_s)
        ticker = Ticker(self._catalogue, publisher)
        ticking = threading.Thread(
            target=ticker.run, args=(self._stop,), name="ticker", daemon=True
        )

        def sweep() -> None:
            ticking.start()
            try:
                sweeper.run(self._stop, self._sweep_interval_s)
            finally:
                ticking.join(timeout=5)
                publisher.close()

        thread = threading.Thread(target=sweep, name="sweeper", daemon=True)
        thread.start()
        return thread

    def _start_collector(self, pool: ThreadPoolExecutor) -> threading.Thread | None:
        """The batch collector's thread (``listener.gather``), where batches run here."""
        if not self._batching:
            return None
        assert self._provisioner is not None
        runner = BatchRunner(
            self._catalogue,
            self._provisioner,
            wait=self._stop.wait,
            **self._run_options(),
        )
        self._batches = Collector(
            self._catalogue,
            self._topology,
            self._batch_connect,
            runner,
            pool,
            self._stop,
            max_running=self._capacity // 2,
        )
        thread = threading.Thread(target=self._batches.run, name="batches", daemon=True)
        thread.start()
        return thread

    def _run_options(self) -> dict[str, Any]:
        """How this listener runs an execution: ``execute_step``'s keywords."""
        return {
            "lease_margin_s": self._lease_margin_s,
            "retry_delay_s": self._retry_delay_s,
            "owner": self._owner,
            "admission": self._admission,
            "ceiling": self._ceiling,
        }

    def _session(self, connection: Any, pool: ThreadPoolExecutor) -> Session:
        return Session(
            connection,
            self._topology,
            prefetch=self._capacity,
            pool=pool,
            handle=self._handle,
            counters=self.counters,
            guard=self._guard,
            stop=self._stop,
            halt=self._halt,
            transient_delay_s=self._transient_delay_s,
            dead_letters=self._catalogue,
        )

    def _handle(self, event: Event) -> list[Step]:
        if self._custom_handle is not None:
            return self._custom_handle(event)
        assert self._provisioner is not None
        return run_event(
            self._catalogue,
            self._provisioner,
            event,
            # A host's own queue holds only what a router recorded and placed.
            placed=bool(self._topology.consume_queue),
            batches=self._batches,
            **self._run_options(),
        )

    def _retry_delay_s(self, attempt: int) -> float:
        return self._topology.retry_delay_ms(attempt) / 1000

    def _wait_to_reconnect(self, exc: BaseException) -> None:
        delay = self._backoff.next()
        LOGGER.warning("RabbitMQ connection failed (%r); reconnecting in %.1f s", exc, delay)
        self._stop.wait(delay)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self._stop.is_set():
            LOGGER.warning("%s again: stopping at once", name)
            self._halt.set()
            raise SystemExit(128 + signum)
        LOGGER.info("%s: finishing what is in flight (send it again to stop at once)", name)
        self.stop()


def _close_quietly(connection: Any) -> None:
    try:
        if connection.is_open:
            connection.close()
    except pika.exceptions.AMQPError:
        LOGGER.debug("closing a broken connection failed", exc_info=True)

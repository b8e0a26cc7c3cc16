"""Wiring: build the real parts from ``Settings`` and run the API, the listener, or both.

This is the one place that chooses implementations: the catalogue (MongoDB or the
in-memory one), the provisioner backend (Docker), the broker clients (pika). The
API is always served by gunicorn. In ``standalone`` mode it runs one gthread
worker, and the listener runs as a thread inside that worker. Without
``MONGO_URL``, ``standalone`` starts a FerretDB server of its own on loopback, its
data under the state directory, and the worker uses it as any MongoDB; with
``--embedded-catalogue memory`` the API and the listener share an in-memory
catalogue in that one process instead.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gunicorn.app.base import BaseApplication

from lambda_os.catalogue import Catalogue, connect
from lambda_os.catalogue_server import CatalogueServer, CatalogueServerError
from lambda_os.errors import PermanentError, TransientError
from lambda_os.settings import Settings
from lambda_os.worker import bounded_read_worker

if TYPE_CHECKING:
    from listener.admit import Ceiling

LOGGER = logging.getLogger(__name__)

WSGIApp = Callable[..., Any]
# ``lambda-os standalone`` exits with this when its listener stopped on its own.
EXIT_LISTENER_FAILED = 1


class GunicornServer(BaseApplication):
    """gunicorn run from Python, with the app built by ``factory`` inside each worker."""

    def __init__(self, factory: Callable[[], WSGIApp], options: dict[str, Any]) -> None:
        self._factory = factory
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self) -> WSGIApp:
        return self._factory()


def gunicorn_options(settings: Settings, workers: int) -> dict[str, Any]:
    """How gunicorn serves the API: gthread workers whose reads from a client time out."""
    return {
        "bind": f"{settings.api_host}:{settings.api_port}",
        "workers": workers,
        "worker_class": bounded_read_worker(settings.api_read_timeout_s),
        "threads": max(4, settings.concurrency),
        # Synchronous invocations wait for the function: allow its longest timeout.
        "timeout": 960,
        "graceful_timeout": 60,
        "accesslog": "-",
        "loglevel": settings.log_level.lower(),
    }


def _catalogue(settings: Settings, sole_writer: bool = False) -> Catalogue:
    if not settings.mongo_url:
        LOGGER.warning(
            "MONGO_URL is not set: using the in-memory catalogue; nothing survives a restart"
        )
    return connect(
        settings.mongo_url, settings.mongo_db, settings.embedded_executions_kept, sole_writer
    )


EMBEDDED_CATALOGUES = ("ferretdb", "memory")


def _embedded_server(settings: Settings) -> CatalogueServer | None:
    """Without ``MONGO_URL``: the FerretDB server ``standalone`` keeps its catalogue in.

    Its data lives under the state directory, so functions and executions survive
    a crashed API worker (gunicorn starts a new one on the same data) and a
    restart. None for ``--embedded-catalogue memory``, the stated fallback.
    """
    if settings.mongo_url or settings.embedded_catalogue == "memory":
        return None
    if settings.embedded_catalogue not in EMBEDDED_CATALOGUES:
        raise SystemExit(
            f"--embedded-catalogue must be one of {', '.join(EMBEDDED_CATALOGUES)}, "
            f"not {settings.embedded_catalogue!r}"
        )
    state = Path(settings.state_dir)
    state.mkdir(parents=True, exist_ok=True)
    log = open(state / "ferretdb.log", "ab")  # noqa: SIM115 - the server writes it while it runs
    server = CatalogueServer(state / "catalogue", log=log)
    try:
        server.start()
    except CatalogueServerError as exc:
        log.close()
        raise SystemExit(f"{exc}; or run with --embedded-catalogue memory") from exc
    return server


def _provisioner(settings: Settings) -> Any:
    """The local Docker backend, counted into the process's Prometheus metrics."""
    from provisioner.docker import DockerProvisioner
    from provisioner.metered import MeteredProvisioner

    return MeteredProvisioner(DockerProvisioner(settings))


def _expose_metrics(settings: Settings) -> None:
    """``/metrics`` on a port of its own, for a process without the API (when asked)."""
    if settings.metrics_port:
        from lambda_os import prometheus

        prometheus.serve(settings.metrics_host, settings.metrics_port)
        LOGGER.info("metrics on http://%s:%d/metrics", settings.metrics_host, settings.metrics_port)


def run_api(settings: Settings) -> int:
    """The API alone; invocations go through RabbitMQ to the listeners."""
    from catalog_api.app import create_app, served
    from listener.invoker import BrokerInvoker
    from listener.publish import Publisher
    from listener.replay import Replayer

    if not _authentication_ready(settings):
        return 2
    workers = settings.api_workers
    if not settings.mongo_url and workers > 1:
        LOGGER.warning("no MONGO_URL: running one worker so every request sees one catalogue")
        workers = 1

    def factory() -> WSGIApp:
        catalogue = _catalogue(settings)
        publisher = Publisher(settings, name="lambda-os api")
        app = create_app(
            catalogue,
            settings,
            invoker=BrokerInvoker(settings, catalogue, publisher),
            replayer=Replayer(catalogue, publisher),
            events=publisher,
        )
        return served(app, settings)

    GunicornServer(factory, gunicorn_options(settings, workers)).run()
    return 0


def _authentication_ready(settings: Settings) -> bool:
    """Whether the API may start as configured; if not, says why (before gunicorn forks)."""
    from catalog_api.auth import authenticator_for, refuse_open_bind

    try:
        refuse_open_bind(settings)
        if settings.auth != "tokens":  # that mode's users are read once the catalogue is up
            authenticator_for(settings)
    except PermanentError as exc:
        LOGGER.error("not starting the API: %s", exc)
        return False
    return True


PLACEMENTS = ("local", "cluster")


def run_listener(settings: Settings) -> int:
    """The listener alone, in the foreground; SIGTERM finishes what is in flight.

    With ``placement=cluster`` it is a router: it runs nothing itself and places
    every execution on a registered host (``run_router``).
    """
    from listener.service import Listener

    if settings.placement not in PLACEMENTS:
        raise SystemExit(
            f"--placement must be one of {', '.join(PLACEMENTS)}, not {settings.placement!r}"
        )
    if settings.placement == "cluster":
        return run_router(settings)

    catalogue = catalogue_when_reachable(settings, "lambda-os listener")
    provisioner = _provisioner(settings)
    listener = Listener(settings, catalogue, provisioner)
    _expose_metrics(settings)
    listener.install_signal_handlers()
    try:
        return listener.run()
    finally:
        provisioner.close()


def standalone_ceiling(listener_slots: int, api_threads: int) -> Ceiling:
    """The most ``standalone`` runs at once on a catalogue of its own: a run per listener
    slot and one per API thread (a synchronous invocation)."""
    from listener.admit import Ceiling

    return Ceiling(runs=max(1, listener_slots) + api_threads)


def run_standalone(settings: Settings) -> int:
    """API and listener in one process, over one catalogue."""
    from catalog_api.app import create_app, served
    from listener.invoker import Invoker
    from listener.publish import Publisher
    from listener.replay import Replayer
    from listener.service import Listener

    if not _authentication_ready(settings):
        return 2
    parts: dict[str, Any] = {}
    # Made before gunicorn forks its worker, so the worker's write is seen here.
    listener_failed = multiprocessing.Value("b", 0)
    stopping = threading.Event()

    def listener_died() -> None:
        # The worker cannot stop the server itself: ask the gunicorn master, which
        # stops the worker (worker_exit closes the provisioner) and then returns here.
        listener_failed.value = 1
        os.kill(os.getppid(), signal.SIGTERM)

    def factory() -> WSGIApp:
        # Runs inside the gunicorn worker, so everything below lives in that one process.
        # On its own catalogue server this worker is the only writer, so matches may be
        # cached: an event then costs no function query.
        catalogue = _catalogue(settings, sole_writer=server is not None)
        provisioner = _provisioner(settings)
        # On a MongoDB of its own (a server or memory) nothing else runs its events.
        alone = server is not None or not settings.mongo_url
        ceiling = standalone_ceiling(provisioner.capacity, options["threads"]) if alone else None
        listener = Listener(settings, catalogue, provisioner, quota_ceiling=ceiling)
        thread = threading.Thread(
            target=watch_listener,
            args=(listener.run, stopping, listener_died),
            name="listener",
            daemon=True,
        )
        thread.start()
        parts.update(provisioner=provisioner, listener=listener, thread=thread)
        publisher = Publisher(settings, name="lambda-os api")
        app = create_app(
            catalogue,
            settings,
            invoker=Invoker(catalogue, provisioner, publisher),
            replayer=Replayer(catalogue, publisher),
            events=publisher,
            listener_state=listener.state,
        )
        return served(app, settings)

    def worker_exit(server: Any, worker: Any) -> None:
        stopping.set()
        if "listener" in parts:
            parts["listener"].stop()
            parts["thread"].join(timeout=60)
            parts["provisioner"].close()

    options = gunicorn_options(settings, workers=1)
    options["worker_exit"] = worker_exit
    master = os.getpid()
    server: CatalogueServer | None = _embedded_server(settings)
    if server is not None:
        settings = dataclasses.replace(settings, mongo_url=server.url)
    try:
        GunicornServer(factory, options).run()
    except SystemExit as exc:  # gunicorn's master ends with sys.exit, 0 after a SIGTERM
        # The forked worker unwinds through here too when it exits: let it go as it was.
        if os.getpid() != master or not listener_failed.value:
            raise
        LOGGER.error("stopped because the listener stopped (exit status %s)", exc.code)
    finally:
        if server is not None and os.getpid() == master:
            server.stop()
    return EXIT_LISTENER_FAILED if listener_failed.value else 0


def watch_listener(
    run: Callable[[], int], stopping: threading.Event, on_death: Callable[[], None]
) -> None:
    """Run the standalone listener; if it ends when nobody asked it to, say so and call ``on_death``.

    An API without its listener accepts events that nothing will run, so the
    process must fail where its supervisor sees it rather than serve on.
    """
    try:
        code = run()
    except Exception:
        LOGGER.exception("the listener failed; stopping lambda-os standalone")
        on_death()
        return
    if stopping.is_set():
        return
    LOGGER.error("the listener stopped with exit code %s; stopping lambda-os standalone", code)
    on_death()


def _cluster_catalogue(settings: Settings, command: str) -> Catalogue:
    if not settings.mongo_url:
        raise SystemExit(f"{command} shares the catalogue with the cluster: set MONGO_URL")
    return catalogue_when_reachable(settings, command)


def catalogue_when_reachable(
    settings: Settings,
    command: str,
    backoff: Any = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Catalogue:
    """The shared catalogue, once its server answers.

    A cluster process often starts before (or while) the catalogue server does: a
    host boots faster than the database fails over, and systemd starts every part
    at once. Waiting with a one-line warning per try is what such a daemon owes
    its operator; a traceback and an exit would only make the service manager
    restart it into the same wall.
    """
    from listener.service import Backoff

    delays = backoff or Backoff(initial_s=1.0, cap_s=30.0)
    # Nothing has started yet, so ^C may end the process as SIGTERM does: at once.
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_DFL) if in_main else None
    try:
        while True:
            try:
                return _catalogue(settings)
            except TransientError as exc:
                delay = delays.next()
                LOGGER.warning("%s: %s; trying again in %.1f s", command, exc, delay)
                sleep(delay)
    finally:
        if in_main:
            signal.signal(signal.SIGINT, previous)


@dataclasses.dataclass(frozen=True)
class RouterParts:
    """A cluster router: a listener that places, the keeper of its registry view, and the
    relay of the hosts' replies."""

    listener: Any
    router: Any
    keeper: Any
    mover: Any
    relay: Any


def router_parts(settings: Settings, **listener_options: Any) -> RouterParts:
    """The router's parts on the real catalogue and broker; ``listener_options`` go to it."""
    import socket
    import uuid

    import pika

    from listener.admit import Admission
    from listener.publish import connection_parameters
    from listener.relay import Relay
    from listener.relocate import BrokerQueueMover
    from listener.route import RegistryKeeper, Router
    from listener.service import DEFAULT_HEARTBEAT_S, Listener
    from listener.topology import Topology

    catalogue = _cluster_catalogue(settings, "a cluster router")
    # Its own name, even beside another router in one process: the shares count names.
    router = Router(
        catalogue,
        f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}",
        admission=Admission(catalogue, settings),
    )
    mover = BrokerQueueMover(settings)
    keeper = RegistryKeeper(
        catalogue, router, mover, settings.heartbeat_interval_s, settings.host_lost_after
    )
    listener = Listener(
        settings,
        catalogue,
        None,
        handle=router.handle,
        name="lambda-os router",
        **listener_options,
    )
    params = connection_parameters(settings.amqp_url, "lambda-os relay")
    if params.heartbeat is None:
        params.heartbeat = DEFAULT_HEARTBEAT_S
    relay = Relay(Topology.from_settings(settings), lambda: pika.BlockingConnection(params))
    return RouterParts(listener, router, keeper, mover, relay)


def run_router(settings: Settings, **listener_options: Any) -> int:
    """``lambda-os listener`` with ``placement=cluster``: place every execution on a host."""
    parts = router_parts(settings, **listener_options)
    stop = threading.Event()
    parts.keeper.join(stop)
    keeper = threading.Thread(target=parts.keeper.run, args=(stop,), name="registry", daemon=True)
    keeper.start()
    relay = threading.Thread(target=parts.relay.run, args=(stop,), name="relay", daemon=True)
    relay.start()
    parts.listener.install_signal_handlers()
    try:
        return parts.listener.run()
    finally:
        stop.set()
        keeper.join(timeout=10)
        relay.join(timeout=10)
        parts.mover.close()


@dataclasses.dataclass(frozen=True)
class WorkerParts:
    """A cluster host: a listener on its own queue with the local provisioner, its heartbeat."""

    listener: Any
    heartbeat: Any
    provisioner: Any


def worker_parts(settings: Settings, **listener_options: Any) -> WorkerParts:
    """The host's parts on the real catalogue, broker and Docker Engine."""
    import socket
    import uuid

    from lambda_os.records import HostRecord
    from listener.heartbeat import CountingProvisioner, Heartbeat
    from listener.service import Listener
    from listener.topology import Topology

    catalogue = _cluster_catalogue(settings, "lambda-os worker")
    # Its runs end the placements the routers made: each frees its host slot.
    catalogue.releases_slots = True
    host_id = settings.host_id or socket.gethostname()
    topology = Topology.from_settings(settings).for_host(host_id)
    provisioner = CountingProvisioner(_provisioner(settings))
    # Its runs' leases name the host, so a router that finds it lost can end them.
    owner = f"{host_id}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
    host = HostRecord(
        id=host_id,
        queue=topology.consumed_queue,
        server_id=settings.server_id or None,
        memory_total_mb=settings.host_memory_mb,
        slots_total=settings.concurrency,
        free_memory_mb=settings.host_memory_mb,
        free_slots=settings.concurrency,
        lease_owner=owner,
    )
    listener = Listener(
        # The routers sweep; a host only runs what is in its queue.
        dataclasses.replace(settings, sweep_interval_s=0),
        catalogue,
        provisioner,
        topology=topology,
        owner=owner,
        name=f"lambda-os worker {host_id}",
        **listener_options,
    )
    heartbeat = Heartbeat(catalogue, host, provisioner, settings.heartbeat_interval_s)
    return WorkerParts(listener, heartbeat, provisioner)


def run_worker(settings: Settings, **listener_options: Any) -> int:
    """``lambda-os worker``: serve this host's queue; drain on a clean stop."""
    parts = worker_parts(settings, **listener_options)
    _expose_metrics(settings)
    stop = threading.Event()
    beating = threading.Thread(
        target=parts.heartbeat.run,
        args=(stop, parts.listener.consuming),
        name="heartbeat",
        daemon=True,
    )
    beating.start()
    parts.listener.install_signal_handlers()
    try:
        return parts.listener.run()
    finally:
        parts.heartbeat.drain()
        stop.set()
        beating.join(timeout=10)
        parts.provisioner.close()


def run_controller(settings: Settings) -> int:
    """``lambda-os controller``: reconcile the Nova hosts with the load until a signal.

    SIGTERM or SIGINT ends the loop after the pass in flight: a decision is one
    cloud call and one catalogue write, so nothing is left half done for long. A
    permanent cloud error (bad credentials, unknown image) exits non-zero.
    """
    from lambda_os.errors import PermanentError
    from listener.topology import Topology
    from provisioner.broker_accounts import connect as connect_accounts
    from provisioner.controller import Controller
    from provisioner.nova import connect as connect_cloud
    from provisioner.scaling import Policy

    try:
        Policy.from_settings(settings)
    except ValueError as exc:  # the scale_* settings contradict each other
        raise SystemExit(f"lambda-os controller: {exc}") from exc
    catalogue = _cluster_catalogue(settings, "lambda-os controller")
    try:
        accounts = connect_accounts(settings, Topology.from_settings(settings))
    except PermanentError as exc:
        raise SystemExit(f"lambda-os controller: {exc}") from exc
    if accounts is None:
        LOGGER.warning(
            "controller: no LAMBDA_OS_BROKER_ADMIN_URL: every host shares the worker RabbitMQ "
            "URL, so a compromised host can read every host's invocations"
        )
    controller = Controller(connect_cloud(settings), catalogue, settings, accounts=accounts)
    stop = threading.Event()

    def stopping(signum: int, _frame: Any) -> None:
        LOGGER.info("controller: signal %s, stopping after this pass", signum)
        stop.set()

    signal.signal(signal.SIGTERM, stopping)
    signal.signal(signal.SIGINT, stopping)
    LOGGER.info(
        "controller: platform %s, %d-%d hosts, every %.0f s",
        settings.cloud_platform,
        settings.scale_min_hosts,
        settings.scale_max_hosts,
        settings.scale_interval_s,
    )
    try:
        controller.run(stop)
    except PermanentError as exc:
        LOGGER.error("controller: the cloud refuses for good, change the configuration: %s", exc)
        return 1
    return 0

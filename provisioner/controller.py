"""The scaling controller: look at the registry and the cloud, decide, act, record why.

``provisioner.scaling`` judges; this module gathers what it judges on and carries the
decision out through the ``Cloud`` seam and the catalogue, recording each decision
with its reason as a scaling event. It keeps no state that matters across restarts:
what exists is read from ``Cloud.servers()`` (each server names its host in its
metadata) and the registry on every pass, so a restarted controller boots no
duplicates, and the cooldown is read back from the recorded events.

With broker accounts (``LAMBDA_OS_BROKER_ADMIN_URL``) every host it boots gets a
RabbitMQ user of its own, whose URL goes into that host's user data; the user is
deleted with the server, and at the end of every pass any of the platform's host
users whose server is gone is deleted too (a boot that failed, a server deleted
behind its back, a delete whose user removal failed). A user made in the last
register grace period is kept even without a server: Nova may not list a server
yet whose create answer was lost.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Protocol

from lambda_os.errors import PermanentError, TransientError
from lambda_os.records import HostRecord, ScalingEvent, utcnow
from lambda_os.settings import Settings
from provisioner.broker_accounts import BrokerAccounts, with_credentials
from provisioner.cloud import Cloud, ServerSpec
from provisioner.scaling import (
    BOOT,
    DELETE,
    DRAIN,
    NOTHING,
    REPLACE,
    SCALING_ACTIONS,
    Decision,
    Policy,
    Situation,
    decide,
)
from provisioner.userdata import host_user_data

LOGGER = logging.getLogger(__name__)
# Decisions applied in one pass at most: enough to replace and clean up together,
# few enough that a rule that keeps firing cannot spin.
MAX_STEPS_PER_PASS = 6


class ScalingStore(Protocol):
    """What the controller needs of the catalogue (``lambda_os.catalogue.Catalogue``)."""

    def list_hosts(self, state: str | None = None) -> list[HostRecord]: ...

    def placements_on(self, host_ids: Iterable[str]) -> list[tuple[str, str | None]]: ...

    def oldest_queued_at(self, now: datetime) -> datetime | None: ...

    def drain_host(self, host_id: str) -> bool: ...

    def retire_host(self, host_id: str) -> bool: ...

    def add_scaling_event(self, record: ScalingEvent) -> ScalingEvent: ...

    def last_scaled_at(self, actions: Iterable[str]) -> datetime | None: ...


class Controller:
    """Reconciles the hosts the cloud runs with the load the registry reports."""

    def __init__(
        self,
        cloud: Cloud,
        store: ScalingStore,
        settings: Settings,
        clock: Callable[[], datetime] = utcnow,
        ids: Callable[[], str] = lambda: uuid.uuid4().hex[:8],
        accounts: BrokerAccounts | None = None,
    ) -> None:
        """``accounts``: the hosts' broker users; None shares the worker AMQP URL (weaker)."""
        self._cloud = cloud
        self._store = store
        self._settings = settings
        self._policy = Policy.from_settings(settings)
        self._clock = clock
        self._ids = ids
        # Servers asked to go: Nova lists them a while longer, and asking twice
        # would only record the same decision twice. Losing this on a restart is
        # harmless (a delete of a server going or gone is no error).
        self._deleting: set[str] = set()
        self._host_prefix = f"{settings.cloud_platform}-"
        self._accounts = accounts
        self._users_made: dict[str, datetime] = {}  # host id -> when its user was made

    def situation(self) -> Situation:
        """What the registry and the cloud say now."""
        now = self._clock()
        # A retired host's server is gone by the controller's own hand: history only.
        hosts = [h for h in self._store.list_hosts() if h.state != "retired"]
        # Nova can list a server twice while it moves from its build request into its
        # cell (seen on the test cloud): keep each id once.
        listed = {s.id: s for s in self._cloud.servers()}
        self._deleting &= listed.keys()  # forget those Nova no longer lists
        servers = [s for s in listed.values() if s.id not in self._deleting]
        placed = Counter(host for host, _ in self._store.placements_on(h.id for h in hosts))
        return Situation(
            hosts=hosts,
            servers=servers,
            now=now,
            placed=placed,
            oldest_queued_at=self._store.oldest_queued_at(now),
            last_scaled_at=self._store.last_scaled_at(SCALING_ACTIONS),
            own_prefix=self._host_prefix,
        )

    def step(self) -> Decision:
        """Decide once and apply it; the decision, recorded unless it is to do nothing."""
        decision = decide(self.situation(), self._policy)
        if decision.action == NOTHING:
            LOGGER.debug("scaling: nothing to do: %s", decision.reason)
            return decision
        LOGGER.info(
            "scaling: %s host %s server %s: %s",
            decision.action,
            decision.host_id,
            decision.server_id,
            decision.reason,
        )
        self._apply(decision)
        return decision

    def reconcile(self) -> list[Decision]:
        """Apply decisions until there is nothing to do (or a pass's worth); those applied."""
        applied = []
        for _ in range(MAX_STEPS_PER_PASS):
            decision = self.step()
            if decision.action == NOTHING:
                break
            applied.append(decision)
        self.remove_stray_users()
        return applied

    def remove_stray_users(self) -> list[str]:
        """Delete the platform's host users whose server is gone; the host ids removed."""
        if self._accounts is None:
            return []
        users = self._accounts.host_users()
        if not users:
            return []
        live = {s.host_id for s in self._cloud.servers() if s.id not in self._deleting}
        recent = self._clock() - timedelta(seconds=self._settings.scale_register_grace_s)
        self._users_made = {h: at for h, at in self._users_made.items() if at > recent}
        stray = [h for h in users if h not in live and h not in self._users_made]
        for host_id in stray:
            self._accounts.delete_host_user(host_id)
            LOGGER.info("scaling: deleted the broker user of host %s: its server is gone", host_id)
        return stray

    def run(self, stop: threading.Event) -> None:
        """Reconcile now and every ``scale_interval_s`` until ``stop`` is set.

        A transient failure (the cloud or the catalogue unreachable) waits for the
        next pass; a permanent one (bad credentials, unknown image) ends the loop,
        since only a change of configuration can mend it.
        """
        while not stop.is_set():
            try:
                self.reconcile()
            except TransientError as exc:
                LOGGER.warning("scaling pass failed, trying again next pass: %s", exc)
            stop.wait(self._settings.scale_interval_s)

    # -- applying decisions ----------------------------------------------------

    def _apply(self, decision: Decision) -> None:
        if decision.action == BOOT:
            self._boot(decision)
        elif decision.action == REPLACE:
            # Routers must place nothing more on a host whose server is gone.
            self._store.drain_host(decision.host_id or "")
            self._record(decision)
            self._boot(Decision(BOOT, f"replaces host {decision.host_id}: {decision.reason}"))
        elif decision.action == DRAIN:
            self._store.drain_host(decision.host_id or "")
            self._record(decision)
        elif decision.action == DELETE:
            server_id = decision.server_id or ""
            try:
                self._cloud.delete(server_id)
            except (TransientError, PermanentError) as exc:
                self._record(decision, error=str(exc))
                raise
            self._deleting.add(server_id)
            if decision.host_id:
                self._store.retire_host(decision.host_id)
            self._record(decision)
            self._delete_user(decision.host_id)
        else:
            raise ValueError(f"unknown scaling action {decision.action!r}")

    def _boot(self, decision: Decision) -> None:
        host_id = f"{self._host_prefix}{self._ids()}"
        try:
            amqp_url = self._host_amqp_url(host_id)
        except (TransientError, PermanentError) as exc:
            self._record(Decision(BOOT, decision.reason, host_id), error=str(exc))
            raise
        spec = ServerSpec(
            name=host_id,
            host_id=host_id,
            image=self._settings.cloud_image,
            flavor=self._settings.cloud_flavor,
            network=self._settings.cloud_network,
            user_data=host_user_data(self._settings, host_id, amqp_url),
        )
        try:
            server = self._cloud.boot(spec)
        except (TransientError, PermanentError) as exc:
            # A lost answer may still have made the server: the next pass finds it
            # in servers() by its host id and counts it as booting.
            self._record(Decision(BOOT, decision.reason, host_id), error=str(exc))
            raise
        self._record(Decision(BOOT, decision.reason, host_id, server.id))

    def _host_amqp_url(self, host_id: str) -> str | None:
        """The new host's own broker URL, its user made now; None to share the worker URL."""
        if self._accounts is None:
            return None
        credentials = self._accounts.create_host_user(host_id)
        self._users_made[host_id] = self._clock()
        shared = self._settings.worker_amqp_url or self._settings.amqp_url
        return with_credentials(shared, credentials)

    def _delete_user(self, host_id: str | None) -> None:
        """The deleted server's broker user; a failure is left to the next pass's sweep."""
        if self._accounts is None or not host_id:
            return
        self._users_made.pop(host_id, None)
        try:
            self._accounts.delete_host_user(host_id)
        except (TransientError, PermanentError) as exc:
            LOGGER.warning("scaling: could not delete the broker user of host %s: %s", host_id, exc)

    def _record(self, decision: Decision, error: str | None = None) -> None:
        self._store.add_scaling_event(
            ScalingEvent(
                "",
                decision.action,
                decision.reason,
                host_id=decision.host_id,
                server_id=decision.server_id,
                error=error,
                at=self._clock(),
            )
        )

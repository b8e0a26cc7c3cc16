"""A host's own broker user: it reads its own queue and writes only the platform's
host-output exchange and the dead-letter exchange (issue #13, "Nobody in").

Every test makes its own queues and users, with a random suffix, and removes them.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import cluster_helpers
import pika
import pika.exceptions
import pytest

from lambda_os.errors import PermanentError
from listener.topology import Topology, declare, declare_host_queue, delete
from provisioner.broker_accounts import (
    HostCredentials,
    HostPermissions,
    ManagementAccounts,
    vhost_of,
    with_credentials,
)

pytestmark = pytest.mark.integration
live_cluster = cluster_helpers.live_cluster

ACCESS_REFUSED = 403


class Accounts(ManagementAccounts):
    """The real accounts, remembering every user a test made so it is removed afterwards."""

    made: list[str]

    def create_host_user(self, host_id: str) -> HostCredentials:
        self.made.append(host_id)
        return super().create_host_user(host_id)


@pytest.fixture
def topology(amqp_url) -> Iterator[Topology]:
    suffix = uuid.uuid4().hex[:10]
    made = Topology(f"test.perm.{suffix}", f"test.perm.dead.{suffix}")
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    declare(connection.channel(), made)
    yield made
    channel = connection.channel()
    delete(channel, made)
    for host in ("a", "b"):
        channel.queue_delete(made.host_queue(host))
    connection.close()


@pytest.fixture
def accounts(broker_admin_url, amqp_url, topology) -> Iterator[Accounts]:
    made = Accounts(broker_admin_url, vhost_of(amqp_url), topology, f"test-{uuid.uuid4().hex[:8]}")
    made.made = []
    yield made
    for host_id in made.made:
        made.delete_host_user(host_id)


def connect_as(amqp_url: str, credentials: HostCredentials) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.URLParameters(with_credentials(amqp_url, credentials)))


def refused(call) -> int:
    """The reply code of the broker's refusal of ``call`` (which must be refused)."""
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
        call()
    return caught.value.reply_code


def test_a_host_user_declares_and_consumes_its_own_queue(amqp_url, topology, accounts):
    connection = connect_as(amqp_url, accounts.create_host_user("a"))
    try:
        channel = connection.channel()
        declare_host_queue(channel, topology, topology.host_queue("a"))
        channel.basic_consume(topology.host_queue("a"), lambda *_: None)
        channel.close()
    finally:
        connection.close()


def test_a_host_user_cannot_consume_another_hosts_queue(amqp_url, topology, accounts):
    admin = pika.BlockingConnection(pika.URLParameters(amqp_url))
    declare_host_queue(admin.channel(), topology, topology.host_queue("b"))
    admin.close()
    connection = connect_as(amqp_url, accounts.create_host_user("a"))
    try:
        channel = connection.channel()
        code = refused(lambda: channel.basic_consume(topology.host_queue("b"), lambda *_: None))
        assert code == ACCESS_REFUSED
        channel = connection.channel()
        assert refused(lambda: channel.basic_get(topology.events_queue)) == ACCESS_REFUSED
    finally:
        connection.close()


def test_a_host_user_cannot_publish_through_the_default_exchange(amqp_url, topology, accounts):
    connection = connect_as(amqp_url, accounts.create_host_user("a"))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        code = refused(
            lambda: channel.basic_publish("", topology.host_queue("b"), b"{}", mandatory=True)
        )
        assert code == ACCESS_REFUSED
    finally:
        connection.close()


def test_a_host_user_cannot_declare_other_queues_or_exchanges(amqp_url, topology, accounts):
    connection = connect_as(amqp_url, accounts.create_host_user("a"))
    try:
        for name in (topology.host_queue("b"), topology.events_queue, f"{topology.events_queue}x"):
            channel = connection.channel()
            assert (
                refused(lambda c=channel, n=name: c.queue_declare(n, durable=True))
                == ACCESS_REFUSED
            )
        channel = connection.channel()
        code = refused(
            lambda: channel.exchange_declare(topology.from_hosts_exchange, "direct", durable=True)
        )
        assert code == ACCESS_REFUSED
    finally:
        connection.close()


def test_a_host_user_may_publish_to_the_host_output_and_dead_letter_exchanges(
    amqp_url, topology, accounts
):
    connection = connect_as(amqp_url, accounts.create_host_user("a"))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish(topology.from_hosts_exchange, "no-such-key", b"{}")
        channel.basic_publish(topology.dead_letter_exchange, "no-such-key", b"{}")
    finally:
        connection.close()


def test_the_platforms_host_users_are_listed_and_a_deleted_one_cannot_log_in(
    broker_admin_url, amqp_url, topology, accounts
):
    other = Accounts(broker_admin_url, vhost_of(amqp_url), topology, accounts._platform + "x")
    other.made = []
    try:
        other.create_host_user("b")
        credentials = accounts.create_host_user("a")
        assert accounts.host_users() == ["a"]
        accounts.delete_host_user("a")
        accounts.delete_host_user("a")  # already gone: no error
        assert accounts.host_users() == []
        assert other.host_users() == ["b"]
        with pytest.raises(pika.exceptions.ProbableAuthenticationError):
            connect_as(amqp_url, credentials)
    finally:
        other.delete_host_user("b")


def test_a_user_made_again_gets_a_new_password(amqp_url, topology, accounts):
    first = accounts.create_host_user("a")
    second = accounts.create_host_user("a")
    assert first.password != second.password
    connect_as(amqp_url, second).close()
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        connect_as(amqp_url, first)


def test_wrong_admin_credentials_are_a_permanent_error(amqp_url, topology):
    accounts = ManagementAccounts("http://guest:wrong@127.0.0.1:15672", "/", topology, "t")
    with pytest.raises(PermanentError, match="401"):
        accounts.host_users()


def test_the_permissions_name_only_the_hosts_queue_escaped():
    permissions = HostPermissions.for_host(Topology("ev.q", "ev.dead"), "h-1.x")
    assert permissions.read == r"^ev\.q\.host\.h\-1\.x$"
    assert permissions.configure == permissions.read
    assert permissions.write == r"^(ev\.q\.from\-hosts|ev\.q\.dlx)$"


def test_the_hosts_url_keeps_the_address_and_vhost_with_its_own_credentials():
    credentials = HostCredentials("h", "lambda-os-host-h", "p/w:@x")
    url = with_credentials("amqp://guest:guest@[fd00::1]:5672/%2F?heartbeat=30", credentials)
    assert url == "amqp://lambda-os-host-h:p%2Fw%3A%40x@[fd00::1]:5672/%2F?heartbeat=30"
    assert vhost_of(url) == "/"
    assert vhost_of("amqp://u:p@host/") == "/"
    assert vhost_of("amqp://u:p@host/lambda%2Fprod") == "lambda/prod"
    params = pika.URLParameters(url)
    assert (params.credentials.username, params.credentials.password) == (
        "lambda-os-host-h",
        "p/w:@x",
    )


# -- a worker on its own user, with a router ------------------------------------


def publish_event(cluster: cluster_helpers.LiveCluster, event_type: str, data: dict) -> str:
    event_id = f"evt-{uuid.uuid4().hex[:12]}"
    body = {"event_source": "cluster", "event_type": event_type, "data": data, "id": event_id}
    cluster.channel.basic_publish(
        "",
        cluster.settings.events_queue,
        json.dumps(body).encode(),
        pika.BasicProperties(reply_to=cluster.replies, correlation_id=event_id),
        mandatory=True,
    )
    return event_id


def gather_replies(cluster: cluster_helpers.LiveCluster, *wanted: str) -> set[str]:
    """The correlation ids of the replies, once every wanted one came (or 30 s passed)."""
    seen: set[str] = set()
    deadline = time.monotonic() + 30
    while not set(wanted) <= seen and time.monotonic() < deadline:
        seen.update(cluster.reply_ids())
        time.sleep(0.2)
    return seen


def dead_letter(cluster: cluster_helpers.LiveCluster) -> tuple[Any, bytes]:
    """The first message in the dead-letter queue: its properties and body."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        method, properties, body = cluster.channel.basic_get(
            cluster.settings.dead_letter_queue, auto_ack=True
        )
        if method is not None:
            return properties, body
        time.sleep(0.2)
    pytest.fail("nothing reached the dead-letter queue")


@pytest.mark.mongo
def test_a_worker_on_its_own_user_retries_replies_and_dead_letters_through_a_router(
    live_cluster, broker_admin_url, amqp_url
):
    accounts = Accounts(broker_admin_url, vhost_of(amqp_url), live_cluster.topology, "test-live")
    accounts.made = []
    host_id = f"perm-{uuid.uuid4().hex[:8]}"
    try:
        credentials = accounts.create_host_user(host_id)
        live_cluster.start_worker(host_id, amqp_url=with_credentials(amqp_url, credentials))
        live_cluster.wait_for_hosts(host_id)
        fn = live_cluster.function("guarded", max_retries=1)

        answered = publish_event(live_cluster, fn.event_type, {"n": 1})
        failing = publish_event(live_cluster, fn.event_type, {"no": "n"})  # KeyError: 'n'

        records = {r.event_id: r for r in live_cluster.finished(fn, 2)}
        assert (records[answered].status, records[answered].placed_on) == ("succeeded", host_id)
        # The first attempt failed on the host, its retry went through the delay queue
        # (by the host-output exchange) back to the router, and ran on the host again.
        assert (records[failing].status, records[failing].attempt) == ("failed", 2)
        assert records[failing].placed_on == host_id
        assert {answered, failing} <= gather_replies(live_cluster, answered, failing)
        properties, body = dead_letter(live_cluster)
        assert json.loads(body)["id"] == failing
        assert properties.headers["x-lambda-reason"]
    finally:
        for made in accounts.made:
            accounts.delete_host_user(made)

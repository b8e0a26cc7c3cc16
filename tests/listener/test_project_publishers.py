"""Events cannot cross projects, and the broker enforces it (issue #14).

Two projects' own publisher users on the real RabbitMQ: each may publish only to
the projects exchange, only under its own project's routing keys, and reads no
queue; the real listener then runs a project's event on that project's functions
alone. The catalogue is mongomock. Every test makes its own queues, users and
project ids, with a random suffix, and removes them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pika
import pika.exceptions
import pytest
from listener_helpers import FakeProvisioner, add_function, running, wait_for

from lambda_os import cli
from listener.events import encode_event
from listener.service import Backoff, Listener
from listener.topology import Topology
from provisioner.broker_accounts import ManagementAPI, vhost_of, with_credentials
from provisioner.project_publishers import (
    InvalidProject,
    ProjectCredentials,
    ProjectPermissions,
    ProjectPublishers,
)

pytestmark = pytest.mark.integration

ACCESS_REFUSED = 403


class Publishers(ProjectPublishers):
    """The real publishers, remembering every project a test made one for, to remove it."""

    made: list[str]

    def create(self, project: str) -> ProjectCredentials:
        credentials = super().create(project)
        self.made.append(project)
        return credentials


@pytest.fixture
def topology(broker_settings) -> Topology:
    return Topology.from_settings(broker_settings)


@pytest.fixture
def publishers(broker_admin_url, amqp_url, topology) -> Iterator[Publishers]:
    made = Publishers(
        ManagementAPI(broker_admin_url), vhost_of(amqp_url), topology, "test-projects"
    )
    made.made = []
    yield made
    for project in made.made:
        made.delete(project)


@pytest.fixture
def projects() -> tuple[str, str]:
    suffix = uuid.uuid4().hex[:10]
    return f"alpha-{suffix}", f"beta-{suffix}"


def connect_as(amqp_url: str, credentials: ProjectCredentials) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.URLParameters(with_credentials(amqp_url, credentials)))


def refused(call) -> int:
    """The reply code of the broker's refusal of ``call`` (which must be refused)."""
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
        call()
    return caught.value.reply_code


def confirmed_channel(connection: pika.BlockingConnection):
    channel = connection.channel()
    channel.confirm_delivery()
    return channel


def publish(channel, exchange: str, key: str, body: bytes = b"{}", **properties) -> None:
    channel.basic_publish(exchange, key, body, pika.BasicProperties(**properties), mandatory=True)


# -- the broker's refusals --------------------------------------------------------------


def test_a_project_user_cannot_publish_under_another_projects_routing_key(
    amqp_url, topology, publishers, projects
):
    alpha, beta = projects
    publishers.create(beta)
    connection = connect_as(amqp_url, publishers.create(alpha))
    try:
        for key in (f"{beta}.x", beta, f"{alpha}", f"{alpha}x.y", "#", f".{alpha}.x"):
            channel = confirmed_channel(connection)
            code = refused(lambda c=channel, k=key: publish(c, topology.projects_exchange, k))
            assert code == ACCESS_REFUSED, key
    finally:
        connection.close()


def test_a_project_user_publishes_under_its_own_routing_keys(
    amqp_url, topology, publishers, projects, broker
):
    alpha, _ = projects
    connection = connect_as(amqp_url, publishers.create(alpha))
    try:
        channel = confirmed_channel(connection)
        publish(channel, topology.projects_exchange, f"{alpha}.orders.created", b'{"n": 1}')
    finally:
        connection.close()
    (got,) = broker.get_all(topology.events_queue)
    assert got[1] == b'{"n": 1}'


def test_a_project_user_cannot_publish_to_the_default_exchange(
    amqp_url, topology, publishers, projects
):
    alpha, _ = projects
    connection = connect_as(amqp_url, publishers.create(alpha))
    try:
        for queue in (topology.events_queue, topology.retry_queue(2)):
            channel = confirmed_channel(connection)
            assert refused(lambda c=channel, q=queue: publish(c, "", q)) == ACCESS_REFUSED
        channel = confirmed_channel(connection)
        code = refused(
            lambda: publish(channel, topology.from_hosts_exchange, topology.events_queue)
        )
        assert code == ACCESS_REFUSED
    finally:
        connection.close()


def test_a_project_user_reads_declares_and_binds_nothing(
    amqp_url, topology, publishers, projects, broker
):
    alpha, _ = projects
    replies = broker.temporary_queue()
    connection = connect_as(amqp_url, publishers.create(alpha))
    try:
        for queue in (topology.events_queue, topology.dead_letter_queue, replies):
            channel = connection.channel()
            assert refused(lambda c=channel, q=queue: c.basic_get(q)) == ACCESS_REFUSED
            channel = connection.channel()
            code = refused(lambda c=channel, q=queue: c.basic_consume(q, lambda *_: None))
            assert code == ACCESS_REFUSED
        channel = connection.channel()
        code = refused(lambda: channel.queue_declare(f"{alpha}.mine", durable=False))
        assert code == ACCESS_REFUSED
        channel = connection.channel()
        code = refused(
            lambda: channel.queue_bind(replies, topology.projects_exchange, routing_key="#")
        )
        assert code == ACCESS_REFUSED
    finally:
        connection.close()


def test_a_user_made_again_gets_a_new_password_and_a_deleted_one_cannot_log_in(
    amqp_url, publishers, projects
):
    alpha, _ = projects
    first = publishers.create(alpha)
    second = publishers.create(alpha)
    assert first.password != second.password
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        connect_as(amqp_url, first)
    connect_as(amqp_url, second).close()
    assert publishers.delete(alpha) is True
    assert publishers.delete(alpha) is False  # already gone: said, no error
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        connect_as(amqp_url, second)


def test_a_project_id_that_cannot_be_a_routing_key_segment_gets_no_user(publishers):
    for project in ("a.b", "a*", "#", "", "a b", "x" * 65):
        with pytest.raises(InvalidProject, match="cannot name a publisher"):
            publishers.create(project)


def test_the_permissions_name_only_the_projects_exchange_and_the_project_escaped():
    permissions = ProjectPermissions.for_project(Topology("ev.q", "ev.dead"), "p-1_x")
    assert (permissions.configure, permissions.read) == ("^$", "^$")
    assert permissions.write == r"^ev\.q\.projects$"
    assert permissions.exchange == "ev.q.projects"
    assert (permissions.topic_write, permissions.topic_read) == (r"^p\-1_x\.", "^$")


# -- the listener on the real broker --------------------------------------------------


def make_listener(settings, catalogue, provisioner):
    return Listener(
        settings,
        catalogue,
        provisioner,
        backoff=Backoff(initial_s=0.1, cap_s=0.5),
        transient_delay_s=0.1,
    )


def ran(catalogue) -> list[str]:
    return sorted(r.function_id for r in catalogue.list_executions({}, 1000).items)


def executions_counted(listener, count: int):
    return lambda: listener.counters.snapshot()["executions"] >= count


def test_a_projects_event_runs_its_own_function_and_not_another_projects_on_the_same_trigger(
    broker_settings, amqp_url, topology, publishers, projects, catalogue
):
    alpha, beta = projects
    mine = add_function(catalogue, "mine", owner=alpha)
    theirs = add_function(catalogue, "theirs", owner=beta)
    alpha_user = connect_as(amqp_url, publishers.create(alpha))
    listener = make_listener(broker_settings, catalogue, FakeProvisioner())
    try:
        with running(listener):
            channel = confirmed_channel(alpha_user)
            body = encode_event("orders", "created", {"n": 1}, id="evt-alpha")
            publish(channel, topology.projects_exchange, f"{alpha}.orders", body)
            wait_for(executions_counted(listener, 1), what="alpha's event to run")
            # The same key names beta in the body: the body is not asked.
            forged = b'{"event_source": "orders", "event_type": "created", "project": "%s"}' % (
                beta.encode()
            )
            publish(channel, topology.projects_exchange, f"{alpha}.x", forged, message_id="e2")
            wait_for(executions_counted(listener, 2), what="the second event to run")
    finally:
        alpha_user.close()
    assert ran(catalogue) == [mine.id, mine.id]
    assert theirs.id not in ran(catalogue)
    assert listener.counters.snapshot()["executions"] == 2


def test_an_id_less_projects_event_keeps_its_project_when_republished_with_an_id(
    broker_settings, amqp_url, topology, publishers, projects, catalogue
):
    alpha, beta = projects
    add_function(catalogue, "mine", owner=alpha)
    theirs = add_function(catalogue, "theirs", owner=beta)
    beta_user = connect_as(amqp_url, publishers.create(beta))
    listener = make_listener(broker_settings, catalogue, FakeProvisioner())
    try:
        with running(listener):
            channel = confirmed_channel(beta_user)
            publish(
                channel, topology.projects_exchange, f"{beta}.y", encode_event("orders", "created")
            )
            wait_for(executions_counted(listener, 1), what="beta's event to run")
    finally:
        beta_user.close()
    assert ran(catalogue) == [theirs.id]
    counters = listener.counters.snapshot()
    assert (counters["ids_assigned"], counters["executions"]) == (1, 1)


def test_the_platforms_own_event_on_the_default_exchange_still_runs_every_projects_function(
    broker_settings, broker, projects, catalogue
):
    alpha, beta = projects
    mine = add_function(catalogue, "mine", owner=alpha)
    theirs = add_function(catalogue, "theirs", owner=beta)
    listener = make_listener(broker_settings, catalogue, FakeProvisioner())
    with running(listener):
        broker.publish(broker_settings.events_queue, encode_event("orders", "created", id="e-p"))
        wait_for(executions_counted(listener, 2), what="the platform's event to run")
    assert ran(catalogue) == sorted([mine.id, theirs.id])


def test_an_operators_projects_exchange_event_naming_no_project_is_dead_lettered(
    broker_settings, broker, topology, projects, catalogue
):
    alpha, _ = projects
    add_function(catalogue, "mine", owner=alpha)
    listener = make_listener(broker_settings, catalogue, FakeProvisioner())
    with running(listener):
        broker.channel.basic_publish(
            topology.projects_exchange,
            ".orders",
            encode_event("orders", "created", id="e-n"),
            mandatory=True,
        )
        wait_for(lambda: broker.ready(broker_settings.dead_letter_queue) == 1, what="dead letter")
    assert ran(catalogue) == []
    ((properties, _),) = broker.get_all(broker_settings.dead_letter_queue)
    assert "names no project" in properties.headers["x-lambda-reason"]


# -- the command -----------------------------------------------------------------------


def test_the_command_prints_a_url_that_publishes_as_the_project_and_delete_removes_it(
    broker_settings, broker_admin_url, amqp_url, topology, projects, capsys, monkeypatch
):
    alpha, _ = projects
    monkeypatch.setenv("LAMBDA_OS_BROKER_ADMIN_URL", broker_admin_url)
    flags = ["--amqp-url", amqp_url, "--events-queue", broker_settings.events_queue]
    try:
        assert cli.main(["project-user", "create", alpha, *flags]) == 0
        url = capsys.readouterr().out.strip()
        assert url.startswith(f"amqp://lambda-os-project-{alpha}:")
        connection = pika.BlockingConnection(pika.URLParameters(url))
        channel = confirmed_channel(connection)
        publish(channel, topology.projects_exchange, f"{alpha}.x")
        assert refused(lambda: publish(channel, "", broker_settings.events_queue)) == ACCESS_REFUSED
        connection.close()
    finally:
        assert cli.main(["project-user", "delete", alpha, *flags]) == 0
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        pika.BlockingConnection(pika.URLParameters(url))


def test_the_command_refuses_a_project_id_with_a_dot_without_a_traceback(
    broker_admin_url, capsys, monkeypatch
):
    monkeypatch.setenv("LAMBDA_OS_BROKER_ADMIN_URL", broker_admin_url)
    assert cli.main(["project-user", "create", "a.b"]) == 1
    assert "cannot name a publisher" in capsys.readouterr().err


def test_the_command_says_it_needs_the_broker_admin_url(capsys, monkeypatch):
    monkeypatch.delenv("LAMBDA_OS_BROKER_ADMIN_URL", raising=False)
    assert cli.main(["project-user", "create", "alpha"]) == 1
    assert "LAMBDA_OS_BROKER_ADMIN_URL" in capsys.readouterr().err

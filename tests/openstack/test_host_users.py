"""The controller gives every host it boots a broker user of its own, on the real test
cloud and the real RabbitMQ, and removes it with the server (or once the server is gone).
"""

from __future__ import annotations

import dataclasses

import pika
import pika.exceptions
import pytest
import yaml
from cloud_helpers import wait_for

from lambda_os.records import HostRecord
from listener.topology import Topology
from provisioner.broker_accounts import ManagementAccounts, username, vhost_of
from provisioner.controller import Controller
from provisioner.scaling import BOOT, DELETE
from provisioner.userdata import ENV_FILE

pytestmark = [pytest.mark.integration, pytest.mark.openstack, pytest.mark.mongo]


@pytest.fixture
def cloud(make_cloud):
    return make_cloud()


@pytest.fixture
def settings(openstack_settings, cloud, mongo_url, amqp_url, broker_admin_url):
    return dataclasses.replace(
        openstack_settings,
        cloud_platform=cloud.platform,
        mongo_url=mongo_url,
        amqp_url=amqp_url,
        events_queue=f"test.users.{cloud.platform}",
        broker_admin_url=broker_admin_url,
        scale_min_hosts=1,
        scale_max_hosts=2,
        scale_cooldown_s=0.0,
    )


@pytest.fixture
def accounts(settings, amqp_url):
    made = ManagementAccounts(
        settings.broker_admin_url,
        vhost_of(amqp_url),
        Topology.from_settings(settings),
        settings.cloud_platform,
    )
    yield made
    for host_id in made.host_users():  # this test's platform only
        made.delete_host_user(host_id)


def worker_env(server) -> dict[str, str]:
    config = yaml.safe_load(server.user_data)
    (entry,) = [f for f in config["write_files"] if f["path"] == ENV_FILE]
    return dict(line.split("=", 1) for line in entry["content"].splitlines())


def test_a_booted_host_gets_its_own_broker_user_in_its_user_data_and_loses_it_with_its_server(
    cloud, real_catalogue, settings, accounts
):
    controller = Controller(cloud, real_catalogue, settings, accounts=accounts)
    assert [d.action for d in controller.reconcile()] == [BOOT]
    (server,) = {s.id: s for s in cloud.servers()}.values()
    url = worker_env(server)["AMQP_URL"]
    params = pika.URLParameters(url)
    assert params.credentials.username == username(server.host_id)
    assert params.credentials.password not in (settings.amqp_url, "guest")
    pika.BlockingConnection(params).close()  # the host can log in with it
    assert accounts.host_users() == [server.host_id]

    real_catalogue.register_host(
        HostRecord(
            id=server.host_id,
            queue=f"{settings.events_queue}.host.{server.host_id}",
            server_id=server.id,
            memory_total_mb=4000,
            free_memory_mb=4000,
        )
    )
    real_catalogue.drain_host(server.host_id)  # drained and idle: its server goes
    applied = Controller(
        cloud, real_catalogue, dataclasses.replace(settings, scale_min_hosts=0), accounts=accounts
    ).reconcile()

    assert (DELETE, server.host_id) in [(d.action, d.host_id) for d in applied]
    assert accounts.host_users() == []
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        pika.BlockingConnection(params)
    wait_for(cloud, server.id, lambda s: s is None)


def test_a_host_user_whose_server_is_gone_is_removed_on_reconcile(
    cloud, real_catalogue, settings, accounts
):
    stray = f"{settings.cloud_platform}-gone"
    accounts.create_host_user(stray)
    controller = Controller(cloud, real_catalogue, settings, accounts=accounts)

    controller.reconcile()

    (server,) = {s.id: s for s in cloud.servers()}.values()
    assert accounts.host_users() == [server.host_id]


def test_without_an_admin_url_hosts_share_the_worker_url(cloud, real_catalogue, settings):
    shared = dataclasses.replace(settings, broker_admin_url=None)
    Controller(cloud, real_catalogue, shared).reconcile()
    (server,) = {s.id: s for s in cloud.servers()}.values()
    assert worker_env(server)["AMQP_URL"] == settings.amqp_url

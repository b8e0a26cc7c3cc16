"""The VM player, on the real test cloud: a server becomes a netns running its worker, and goes with it."""

from __future__ import annotations

import dataclasses
import ipaddress
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from cloud_helpers import active, spec, wait_for

from lambda_os.errors import NotFound
from provisioner.userdata import host_user_data
from testing_service.vmplay import RESERVED, VMPlayer, relay_targets

pytestmark = [pytest.mark.integration, pytest.mark.openstack]


def _netns() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], check=True, capture_output=True, text=True)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


def test_a_server_is_played_in_a_netns_with_no_way_out_and_goes_when_deleted(
    make_cloud, openstack_settings, tmp_path: Path
):
    cloud = make_cloud()  # a platform of its own: the player plays only this test's server
    host = spec(openstack_settings)
    server = cloud.boot(
        spec(
            openstack_settings,
            host_id=host.host_id,
            user_data=host_user_data(openstack_settings, host.host_id),
        )
    )
    active(cloud, server.id)
    with VMPlayer(cloud, tmp_path / "vms") as player:
        player.sync()
        vm = player.vms[server.id]
        assert vm.netns in _netns()
        assert vm.env["LAMBDA_OS_SERVER_ID"] == server.id
        assert vm.env["LAMBDA_OS_HOST_ID"] == host.host_id
        routes = subprocess.run(
            ["ip", "-n", vm.netns, "-4", "route"], check=True, capture_output=True, text=True
        ).stdout
        assert "default" not in routes
        assert routes.split()[0] == str(player.subnet), routes
        assert player.subnet.subnet_of(RESERVED) and player.subnet.prefixlen == 24
        cloud.delete(server.id)
        wait_for(cloud, server.id, lambda s: s is None)
        player.sync()
        assert server.id not in player.vms
        assert vm.netns not in _netns()
        bridge = player.bridge
    time.sleep(0.1)
    links = subprocess.run(["ip", "link"], check=True, capture_output=True, text=True).stdout
    assert bridge not in links


def test_two_players_side_by_side_take_different_subnets(make_cloud, tmp_path: Path):
    cloud = make_cloud()
    with VMPlayer(cloud, tmp_path / "a") as first, VMPlayer(cloud, tmp_path / "b") as second:
        assert first.subnet != second.subnet
        assert not first.subnet.overlaps(second.subnet)


@pytest.mark.mongo
def test_a_played_worker_reaches_broker_and_catalogue_through_the_relays_and_registers(
    make_cloud, openstack_settings, amqp_url, mongo_url, real_catalogue, runtime_image, tmp_path
):
    cloud = make_cloud()
    relays = relay_targets(amqp_url=amqp_url, mongo_url=mongo_url)
    fast = {"LAMBDA_OS_HEARTBEAT_INTERVAL_S": "0.5"}
    with VMPlayer(cloud, tmp_path / "vms", extra_env=fast, relays=relays) as player:
        for address in player.relays.values():
            host, _, _port = address.rpartition(":")
            assert host == player.bridge_address
            assert ipaddress.ip_address(host) in player.subnet
        # What the controller writes into a host's user data, for hosts behind the bridge.
        settings = dataclasses.replace(
            openstack_settings,
            amqp_url=amqp_url,
            mongo_url=mongo_url,
            mongo_db=real_catalogue._db.name,
            events_queue=f"test.vmplay.{uuid.uuid4().hex[:10]}",
            worker_amqp_url=player.relayed_url("amqp", amqp_url),
            worker_mongo_url=player.relayed_url("mongo", mongo_url),
        )
        host = spec(settings)
        server = cloud.boot(
            spec(settings, host_id=host.host_id, user_data=host_user_data(settings, host.host_id))
        )
        active(cloud, server.id)
        player.sync()
        vm = player.vms[server.id]
        assert vm.env["AMQP_URL"].startswith(f"amqp://guest:guest@{player.bridge_address}:")

        record = _registered(real_catalogue, host.host_id, vm)
        assert record.server_id == server.id
        assert record.state == "active"
        deadline = time.monotonic() + 30
        while real_catalogue.get_host(host.host_id).heartbeat_at == record.heartbeat_at:
            assert time.monotonic() < deadline, "the worker registered but stopped beating"
            time.sleep(0.3)
        cloud.delete(server.id)
        wait_for(cloud, server.id, lambda s: s is None)
        player.sync()
    _delete_queue(amqp_url, f"{settings.events_queue}.host.{host.host_id}")


def _registered(catalogue, host_id: str, vm, timeout_s: float = 60.0):
    """The host's record once its worker has registered (the worker's log if it does not)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return catalogue.get_host(host_id)
        except NotFound:
            pass
        log = (vm.state_dir / "worker.log").read_text()
        assert vm.process.poll() is None, log
        assert time.monotonic() < deadline, log
        time.sleep(0.3)


def _delete_queue(amqp_url: str, queue: str) -> None:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    connection.channel().queue_delete(queue)
    connection.close()

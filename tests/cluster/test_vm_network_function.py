"""A ``network: true`` function runs on a played VM's own Docker Engine, behind the VM's firewall (#13).

A router in this process places the execution; the host is a server booted through
the real NovaCloud and played in a netns with a dockerd of its own. Its worker
reaches the broker and the catalogue through relays on the player's bridge (the
VM's loopback is its own). The function succeeds, and its container is on the VM's
engine, on the egress network the worker made there; nothing of it is on the
machine's engine. No packet is sent to check the fencing (``tests/openstack/
test_vm_egress.py`` reads the rules).
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import cluster_helpers
import pika
import pytest
from tcp_relay import TcpRelay

from provisioner.cloud import Cloud, ServerSpec
from provisioner.docker.egress import NETWORK
from provisioner.docker.host import OWNER_LABEL, PLATFORM_LABEL
from provisioner.nova import connect
from provisioner.userdata import host_user_data
from testing_service.vmplay import VMPlayer

pytestmark = [pytest.mark.integration, pytest.mark.mongo, pytest.mark.openstack]
live_cluster = cluster_helpers.live_cluster


def _target(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 0


def _relayed(url: str, relay: TcpRelay) -> str:
    parts = urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@" if credentials else ""
    return parts._replace(netloc=f"{netloc}{relay.host}:{relay.port}").geturl()


def wait_active(cloud: Cloud, server_id: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while (server := cloud.get(server_id)) is not None and server.status == "BUILD":
        if time.monotonic() > deadline:
            pytest.fail(f"server {server_id} still building after {timeout_s:.0f} s")
        time.sleep(0.2)
    assert server is not None and server.status == "ACTIVE", server


def test_a_network_function_runs_on_the_vms_own_engine_on_the_egress_network_it_made(
    live_cluster, openstack_settings, runtime_image, docker_client
):
    settings = live_cluster.settings
    cloud = connect(
        dataclasses.replace(
            openstack_settings, cloud_platform=f"lambda-os-test-{uuid.uuid4().hex[:8]}"
        )
    )
    state = Path(tempfile.mkdtemp(prefix="vmpn-", dir="/tmp"))
    host_id = f"vm{uuid.uuid4().hex[:6]}"
    relays: list[TcpRelay] = []
    try:
        with VMPlayer(
            cloud,
            state / "vms",
            extra_env={
                "DEAD_LETTER_QUEUE": settings.dead_letter_queue,
                "LAMBDA_OS_RUNTIME_IMAGE_PREFIX": settings.runtime_image_prefix,
                "LAMBDA_OS_HEARTBEAT_INTERVAL_S": str(settings.heartbeat_interval_s),
                "LAMBDA_OS_CONCURRENCY": "2",
                "LAMBDA_OS_RESERVED_SLOTS": "0",
                "LAMBDA_OS_POOL_SIZE": "0",
            },
            own_docker=True,
            own_docker_images=(runtime_image,),
        ) as player:
            broker = TcpRelay(player.bridge_address, _target(settings.amqp_url)).start()
            catalogue = TcpRelay(player.bridge_address, _target(settings.mongo_url)).start()
            relays += [broker, catalogue]
            vm_settings = dataclasses.replace(
                settings,
                worker_amqp_url=_relayed(settings.amqp_url, broker),
                worker_mongo_url=_relayed(settings.mongo_url, catalogue),
            )
            server = cloud.boot(
                ServerSpec(
                    name=f"lambda-os-test-{host_id}",
                    host_id=host_id,
                    image=openstack_settings.cloud_image,
                    flavor=openstack_settings.cloud_flavor,
                    user_data=host_user_data(vm_settings, host_id),
                )
            )
            wait_active(cloud, server.id)
            player.sync()
            vm = player.vms[server.id]
            live_cluster.wait_for_hosts(host_id, timeout_s=120)
            function = live_cluster.function(f"net-{uuid.uuid4().hex[:6]}", network=True)

            live_cluster.send(function, 1)
            (record,) = live_cluster.finished(function, 1, timeout_s=120)

            assert record.status == "succeeded", record
            assert record.placed_on == host_id
            assert record.result["n"] == 1
            with vm.engine.client() as client:
                on_vm = client.containers.list(all=True, filters={"label": PLATFORM_LABEL})
                networks = [set(c.attrs["NetworkSettings"]["Networks"]) for c in on_vm]
            assert networks == [{NETWORK}]  # the warm container of that run
            # The VM's worker made no container on the machine's engine.
            (owner,) = {c.labels[OWNER_LABEL] for c in on_vm}
            label = f"{OWNER_LABEL}={owner}"
            assert docker_client.containers.list(all=True, filters={"label": label}) == []
    finally:
        for relay in relays:
            relay.stop()
        for server in cloud.servers():
            cloud.delete(server.id)
        connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
        connection.channel().queue_delete(live_cluster.topology.host_queue(host_id))
        connection.close()
        shutil.rmtree(state, ignore_errors=True)

"""Nobody in: on a played VM with its own engine, the worker fences ``network: true`` off the platform (#13).

A server is booted through the real NovaCloud and played in a netns of its own,
with a dockerd of its own. Its worker, started from the server's user data, makes
the egress network on that engine and installs the firewall in the VM's tables.
The test reads back, inside the VM's netns, the iptables rules (drops for the
metadata address, the VM's own addresses, the broker, the catalogue and the API)
and the routes (none out of the machine), and finds the egress network on the VM's
engine and not on the machine's. Nothing is sent to check it.

The worker reaches a catalogue of the test's own, a FerretDB listening on the
player's bridge address; the broker URL names that address too (nothing listens
there: the worker only needs the catalogue before it sets up its engine).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cloud_helpers import active, spec

from lambda_os.catalogue_server import CatalogueServer, free_port
from provisioner.docker.egress import BRIDGE, NETWORK
from provisioner.docker.firewall import CHAIN
from provisioner.docker.platform_addresses import METADATA
from provisioner.userdata import host_user_data
from testing_service.vmplay import VMPlayer

pytestmark = [pytest.mark.integration, pytest.mark.openstack]

API = "84.17.10.4"  # a public address, named only in the worker's settings
SET_UP_TIMEOUT_S = 120.0


def in_vm(netns: str, *argv: str) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", netns, *argv], check=True, capture_output=True, text=True
    ).stdout


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """The workers' state: their data-path sockets must fit a Unix socket path."""
    path = Path(tempfile.mkdtemp(prefix="vmpe-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def wait_for_egress(player: VMPlayer, server_id: str) -> list[str]:
    """The worker's chain in the VM once it is there (the worker sets it up when it starts)."""
    vm = player.vms[server_id]
    deadline = time.monotonic() + SET_UP_TIMEOUT_S
    while True:
        done = subprocess.run(
            ["ip", "netns", "exec", vm.netns, "iptables", "-w", "10", "-S", CHAIN],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode == 0 and "DROP" in done.stdout:
            return done.stdout.splitlines()[1:]
        if vm.process.poll() is not None or time.monotonic() > deadline:
            log = (vm.state_dir / "worker.log").read_text(errors="replace")[-3000:]
            pytest.fail(f"the worker set up no egress firewall in {vm.netns}: {log}")
        time.sleep(0.5)


def test_a_worker_on_its_own_engine_fences_network_functions_off_metadata_host_and_platform(
    make_cloud, openstack_settings, runtime_image, docker_client, short_dir
):
    cloud = make_cloud()
    with VMPlayer(
        cloud,
        short_dir / "vms",
        extra_env={
            "LAMBDA_OS_API_HOST": API,
            "LAMBDA_OS_POOL_SIZE": "0",
            "LAMBDA_OS_RUNTIME_IMAGE_PREFIX": runtime_image.rsplit(":", 1)[0],
        },
        own_docker=True,
        own_docker_images=(runtime_image,),
    ) as player:
        platform_host = player.bridge_address
        catalogue = CatalogueServer(short_dir / "catalogue", host=platform_host)
        catalogue.start()
        try:
            settings = dataclasses.replace(
                openstack_settings,
                worker_mongo_url=catalogue.url,
                worker_amqp_url=f"amqp://guest:guest@{platform_host}:{free_port()}/%2F",
            )
            host = spec(settings)
            server = cloud.boot(
                spec(
                    settings,
                    host_id=host.host_id,
                    user_data=host_user_data(settings, host.host_id),
                )
            )
            active(cloud, server.id)
            player.sync()
            vm = player.vms[server.id]
            ours = wait_for_egress(player, server.id)

            # The VM's engine, not the machine's, is the one the worker drove.
            assert vm.engine is not None and vm.env["DOCKER_HOST"] == vm.engine.url
            with vm.engine.client() as client:
                vm_network = client.api.inspect_network(NETWORK)
            machine_networks = {n.id for n in docker_client.networks.list(names=[NETWORK])}
            assert vm_network["Id"] not in machine_networks
            assert vm_network["Options"]["com.docker.network.bridge.name"] == BRIDGE
            gateway = vm_network["IPAM"]["Config"][0]["Gateway"]

            # The platform's addresses are dropped before anything else.
            drops = []
            for rule in ours:
                if not rule.endswith("-j DROP") or "-d " not in rule or "/32 " not in rule:
                    break
                drops.append(rule.split("-d ")[1].split()[0])
            vm_addresses = {
                f"{address}/32"
                for address in (vm.address, "127.0.0.1", gateway, platform_host, METADATA, API)
            }
            assert vm_addresses <= set(drops), ours
            assert any("--dst-type LOCAL" in r and r.endswith("-j DROP") for r in ours)
            assert "-A LAMBDA-OS-EGRESS -d 169.254.0.0/16" in "\n".join(ours)

            # Every packet from the bridge goes through that chain, and none reaches the VM.
            docker_user = in_vm(vm.netns, "iptables", "-w", "10", "-S", "DOCKER-USER")
            assert docker_user.splitlines()[1].startswith(f"-A DOCKER-USER -i {BRIDGE} ")
            assert docker_user.splitlines()[1].endswith(f"-j {CHAIN}")
            inputs = in_vm(vm.netns, "iptables", "-w", "10", "-S", "INPUT").splitlines()
            assert any(r.startswith(f"-A INPUT -i {BRIDGE} ") and "-j DROP" in r for r in inputs)

            # No route out of the machine: the VM's link and its engine's bridge only.
            routes = in_vm(vm.netns, "ip", "-4", "route").splitlines()
            assert not [r for r in routes if r.startswith("default")], routes
            (link,) = json.loads(in_vm(vm.netns, "ip", "-j", "-4", "addr", "show", "dev", "eth0"))
            (eth0,) = link["addr_info"]
            vm_link = ipaddress.ip_interface(f"{eth0['local']}/{eth0['prefixlen']}").network
            assert {r.split()[0] for r in routes} == {
                str(vm_link),
                vm_network["IPAM"]["Config"][0]["Subnet"],
            }, routes
            assert f"dev {BRIDGE}" in " ".join(routes)
        finally:
            catalogue.stop()
        engine_root = vm.engine.root
    assert not engine_root.exists()

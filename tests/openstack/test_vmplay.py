"""The VM player, on the real test cloud: a server becomes a netns running its worker, and goes with it."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from cloud_helpers import active, spec, wait_for

from provisioner.userdata import host_user_data
from testing_service.vmplay import VMPlayer

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
        assert routes.split()[0] == "198.18.0.0/24", routes
        cloud.delete(server.id)
        wait_for(cloud, server.id, lambda s: s is None)
        player.sync()
        assert server.id not in player.vms
        assert vm.netns not in _netns()
        bridge = player.bridge
    time.sleep(0.1)
    links = subprocess.run(["ip", "link"], check=True, capture_output=True, text=True).stdout
    assert bridge not in links

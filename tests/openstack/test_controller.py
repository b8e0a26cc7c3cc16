"""The scaling controller on the real test cloud and a real catalogue.

Nova's fake driver starts nothing on a server, so each test plays the workers: it
registers and heartbeats hosts in the catalogue for the servers the controller booted.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from cloud_helpers import wait_for

from lambda_os.errors import PermanentError
from lambda_os.records import HostRecord
from provisioner.cloud import HOST_ID_KEY, PLATFORM_KEY
from provisioner.controller import Controller
from provisioner.scaling import BOOT, DELETE, DRAIN, REPLACE

pytestmark = [pytest.mark.integration, pytest.mark.openstack, pytest.mark.mongo]


@pytest.fixture
def cloud(make_cloud):
    """A cloud of its own per test: its own platform name, so servers() is this test's."""
    return make_cloud()


@pytest.fixture
def settings(openstack_settings, cloud, mongo_url):
    return dataclasses.replace(
        openstack_settings,
        cloud_platform=cloud.platform,
        mongo_url=mongo_url,
        scale_min_hosts=1,
        scale_max_hosts=3,
        scale_cooldown_s=0.0,
    )


def controller(cloud, catalogue, settings, **changes) -> Controller:
    return Controller(cloud, catalogue, dataclasses.replace(settings, **changes))


def servers(cloud):
    """The cloud's servers, each once: Nova can list a server twice while it moves from
    its build request to its cell (seen on this test cloud), so the test counts ids."""
    return list({s.id: s for s in cloud.servers()}.values())


def register(catalogue, server, free_mb: int = 3000, running: int = 0) -> HostRecord:
    """What the worker on ``server`` would do once it consumes: register, with its figures."""
    return catalogue.register_host(
        HostRecord(
            id=server.host_id,
            queue=f"lambda.events.host.{server.host_id}",
            server_id=server.id,
            memory_total_mb=4000,
            free_memory_mb=free_mb,
            running=running,
        )
    )


def test_load_above_the_high_mark_boots_a_server_with_the_platforms_metadata(
    cloud, real_catalogue, settings
):
    busy = HostRecord(id="manual-1", queue="q.manual-1", memory_total_mb=4000, free_memory_mb=400)
    real_catalogue.register_host(busy)

    # No minimum: the boot is for the load of the host started by hand.
    applied = controller(cloud, real_catalogue, settings, scale_min_hosts=0).reconcile()

    assert [d.action for d in applied] == [BOOT]
    (server,) = servers(cloud)
    assert server.metadata[PLATFORM_KEY] == cloud.platform
    assert server.host_id == server.metadata[HOST_ID_KEY] == server.name
    config = yaml.safe_load(server.user_data)
    assert "docker.io" in config["packages"]
    (event,) = real_catalogue.list_scaling_events()
    assert (event.action, event.host_id, event.server_id) == (BOOT, server.host_id, server.id)
    assert "above the high mark" in event.reason


def test_idle_hosts_below_the_low_mark_drain_then_lose_their_server_but_never_a_busy_one(
    cloud, real_catalogue, settings
):
    controller(cloud, real_catalogue, settings, scale_min_hosts=2).reconcile()
    first, second = sorted(servers(cloud), key=lambda s: s.host_id)
    register(real_catalogue, first, free_mb=3900)
    register(real_catalogue, second, free_mb=3950, running=1)  # the least loaded, but busy

    applied = controller(cloud, real_catalogue, settings).reconcile()

    assert [(d.action, d.host_id) for d in applied] == [
        (DRAIN, first.host_id),
        (DELETE, first.host_id),
    ]
    # Drained, then retired with its server: kept as history, judged by no one.
    assert real_catalogue.get_host(first.host_id).state == "retired"
    assert real_catalogue.get_host(first.host_id).retired_at is not None
    assert real_catalogue.get_host(second.host_id).state == "active"
    assert wait_for(cloud, first.id, lambda s: s is None) is None
    assert [s.id for s in servers(cloud)] == [second.id]
    newest = real_catalogue.list_scaling_events()[:2]
    assert [e.action for e in newest] == [DELETE, DRAIN]
    assert "drained and idle" in newest[0].reason


def test_a_server_deleted_behind_the_controllers_back_is_replaced(cloud, real_catalogue, settings):
    ctl = controller(cloud, real_catalogue, settings)
    ctl.reconcile()
    (server,) = servers(cloud)
    register(real_catalogue, server)
    cloud.delete(server.id)
    wait_for(cloud, server.id, lambda s: s is None)

    applied = ctl.reconcile()

    assert [(d.action, d.host_id) for d in applied] == [(REPLACE, server.host_id)]
    (replacement,) = servers(cloud)
    assert replacement.host_id != server.host_id
    assert real_catalogue.get_host(server.host_id).state == "draining"
    boot, replace = real_catalogue.list_scaling_events()[:2]
    assert (replace.action, boot.action, boot.host_id) == (REPLACE, BOOT, replacement.host_id)
    assert f"replaces host {server.host_id}" in boot.reason
    assert ctl.reconcile() == []


def test_a_restarted_controller_boots_no_duplicates(cloud, real_catalogue, settings):
    controller(cloud, real_catalogue, settings, scale_min_hosts=2).reconcile()
    booted = {s.id for s in servers(cloud)}
    assert len(booted) == 2

    restarted = controller(cloud, real_catalogue, settings, scale_min_hosts=2)

    assert restarted.reconcile() == []
    assert {s.id for s in servers(cloud)} == booted


def test_a_server_that_never_registers_within_the_grace_period_is_deleted(
    cloud, real_catalogue, settings
):
    controller(cloud, real_catalogue, settings).reconcile()
    (silent,) = servers(cloud)

    applied = controller(cloud, real_catalogue, settings, scale_register_grace_s=0.0).step()

    assert (applied.action, applied.server_id) == (DELETE, silent.id)
    assert "never registered" in applied.reason


def test_the_controller_command_boots_the_minimum_and_stops_cleanly_on_sigterm(
    cloud, real_catalogue, settings
):
    env = {
        **os.environ,
        "MONGO_URL": settings.mongo_url,
        "MONGO_DB": real_catalogue._db.name,
        "OS_CLOUD": settings.os_cloud,
        "OS_CLIENT_CONFIG_FILE": settings.os_client_config_file,
        "LAMBDA_OS_CLOUD_PLATFORM": cloud.platform,
        "LAMBDA_OS_SCALE_MIN_HOSTS": "1",
        "LAMBDA_OS_SCALE_INTERVAL_S": "0.5",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "lambda_os.cli", "controller"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not real_catalogue.list_scaling_events() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.5)  # a few more passes: they must boot nothing more
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=20)
    assert process.returncode == 0, output
    assert [e.action for e in real_catalogue.list_scaling_events()] == [BOOT]
    assert len(servers(cloud)) == 1


def test_a_boot_the_cloud_refuses_is_recorded_with_its_error_and_raised(
    cloud, real_catalogue, settings
):
    ctl = controller(cloud, real_catalogue, settings, cloud_image="no-such-image")

    with pytest.raises(PermanentError, match="no-such-image"):
        ctl.reconcile()

    (event,) = real_catalogue.list_scaling_events()
    assert event.action == BOOT and "no-such-image" in event.error
    assert real_catalogue.last_scaled_at([BOOT]) is None  # a failed boot starts no cooldown
    assert servers(cloud) == []

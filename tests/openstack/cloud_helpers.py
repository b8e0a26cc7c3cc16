"""Helpers of the cloud seam's tests: a host spec as the controller writes one, and waits."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest

from lambda_os.settings import Settings
from provisioner.cloud import Server, ServerSpec
from provisioner.nova import NovaCloud

BOOT_TIMEOUT_S = 60.0
# The network deploy/openstack/setup.sh makes, on the project's Neutron stand-in.
TEST_NETWORK = "lambda-os-hosts"


def spec(settings: Settings, **changes) -> ServerSpec:
    """A host as the controller would ask for one, on the settings' image and flavor."""
    host_id = uuid.uuid4().hex[:8]
    values = {
        "name": f"lambda-os-test-{host_id}",
        "host_id": host_id,
        "image": settings.cloud_image,
        "flavor": settings.cloud_flavor,
        **changes,
    }
    return ServerSpec(**values)


def wait_for(
    cloud: NovaCloud, server_id: str, done: Callable[[Server | None], bool]
) -> Server | None:
    """Poll until ``done`` holds for the server (None once it is gone)."""
    deadline = time.monotonic() + BOOT_TIMEOUT_S
    while True:
        server = cloud.get(server_id)
        if done(server):
            return server
        if time.monotonic() > deadline:
            pytest.fail(f"server {server_id} still {server} after {BOOT_TIMEOUT_S:.0f} s")
        time.sleep(0.2)


def active(cloud: NovaCloud, server_id: str) -> Server:
    server = wait_for(cloud, server_id, lambda s: s is None or s.status != "BUILD")
    assert server is not None and server.status == "ACTIVE", server
    return server

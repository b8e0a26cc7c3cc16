"""Specification: a pooled or warm container is as locked down as a fresh one (issues #5 and #7).

A pooled container is started before its function is known and then resized to
the function's memory; a warm one has already served an execution. Either way
the function inside it must see what a fresh container gives it: no network, an
unprivileged user, a read-only root with a writable /tmp, no capabilities; and
the engine must still hold the container to the function's limits.
"""

from __future__ import annotations

from typing import Any

import pytest

from provisioner.docker.container import PIDS_LIMIT
from provisioner.docker.provisioner import POOL_MEMORY_MB

pytestmark = pytest.mark.integration

# Not the pool's size, so a pooled container keeps it only if it was resized.
MEMORY_MB = POOL_MEMORY_MB + 72

# What the function sees from inside; it only reads files, and sends no traffic.
LOOK_AROUND = """
import errno, os
def handler(event, context):
    try:
        os.close(os.open("/lambda-os-probe", os.O_WRONLY | os.O_CREAT | os.O_EXCL))
        root = "written"
    except OSError as exc:
        root = errno.errorcode[exc.errno]
    with open("/tmp/probe", "w") as probe:
        probe.write(event)
    status = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return {
        "interfaces": sorted(os.listdir("/sys/class/net")),
        "uids": os.getresuid(),
        "gids": os.getresgid(),
        "root in groups": 0 in os.getgroups(),
        "root": root,
        "tmp": open("/tmp/probe").read(),
        "CapEff": status["CapEff"].strip(),
        "NoNewPrivs": status["NoNewPrivs"].strip(),
    }
"""


def locked_down_view(event: str) -> dict[str, Any]:
    """What ``LOOK_AROUND`` returns for ``event`` in a container that is locked down."""
    return {
        "interfaces": ["lo"],
        "uids": [10001, 10001, 10001],
        "gids": [10001, 10001, 10001],
        "root in groups": False,
        "root": "EROFS",  # refused by the read-only mount, before any permission check
        "tmp": event,  # written by this execution, not left from an earlier one
        "CapEff": "0000000000000000",
        "NoNewPrivs": "1",
    }


def assert_engine_holds_the_limits(docker_client, container_id: str) -> None:
    host_config = docker_client.containers.get(container_id).attrs["HostConfig"]

    assert host_config["Memory"] == MEMORY_MB * 1024 * 1024
    assert host_config["MemorySwap"] == host_config["Memory"]  # no swap on top
    assert host_config["PidsLimit"] == PIDS_LIMIT
    assert host_config["ReadonlyRootfs"] is True
    assert host_config["CapDrop"] == ["ALL"] and not host_config["CapAdd"]
    assert "no-new-privileges" in host_config["SecurityOpt"]
    assert host_config["NetworkMode"] == "none"


def test_a_pooled_container_serving_its_first_execution_is_locked_down(
    backend, invocation, pool_ready, docker_client
):
    provisioner = backend(pool_size=1)
    (pooled,) = pool_ready(provisioner, 1)

    outcome = provisioner.run(invocation(LOOK_AROUND, "pooled", memory_mb=MEMORY_MB))

    assert outcome.status == "succeeded", outcome.error
    assert outcome.container_id == pooled
    assert outcome.result == locked_down_view("pooled")
    assert_engine_holds_the_limits(docker_client, outcome.container_id)


def test_a_warm_container_serving_its_second_execution_is_locked_down(
    backend, invocation, docker_client
):
    provisioner = backend(pool_size=0)
    first = provisioner.run(invocation(LOOK_AROUND, "first", memory_mb=MEMORY_MB))

    second = provisioner.run(invocation(LOOK_AROUND, "second", memory_mb=MEMORY_MB))

    assert first.status == "succeeded", first.error
    assert second.status == "succeeded", second.error
    assert second.container_id == first.container_id
    assert second.cold_start is False
    assert second.result == locked_down_view("second")
    assert_engine_holds_the_limits(docker_client, second.container_id)

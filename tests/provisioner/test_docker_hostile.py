"""Specification: a hostile or careless function cannot harm the host or outlive its limits (issue #5).

The first cases run in both modes (a fresh container per execution, and warm +
pool): a handler that ignores SIGTERM, ones that flood their output, even from
processes left running after they return. Another reads the container's settings
back from the engine while the function runs.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

pytestmark = pytest.mark.integration

# Writers that splice a file's pages into the output pipe, faster than the host can copy
# them out, so the pipe rarely runs dry while the host reads it.
FLOOD = """
import os, subprocess, sys, time
SPLICER = '''
import os
with open("/tmp/flood-%d" % os.getpid(), "wb") as f:
    f.write(b"y" * 1024 * 1024)
fd = os.open("/tmp/flood-%d" % os.getpid(), os.O_RDONLY)
while True:
    os.splice(fd, 1, 1024 * 1024, offset_src=0)
'''
def handler(event, context):
    if event in ("flood", "flood and sleep"):
        for _ in range(2):
            subprocess.Popen([sys.executable, "-c", SPLICER])
    if event == "flood and sleep":
        time.sleep(60)
    return event
"""


def run_bounded(provisioner, run, limit_s: float = 60.0) -> Any:
    """``provisioner.run(run)`` on its own thread; the test fails if it has not returned in ``limit_s``."""
    ended: list[Any] = []

    def target() -> None:
        try:
            ended.append(provisioner.run(run))
        except Exception as exc:  # noqa: BLE001 - handed to the test below
            ended.append(exc)

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(limit_s)
    assert not worker.is_alive(), f"the execution was still running after {limit_s} s"
    if isinstance(ended[0], Exception):
        raise ended[0]
    return ended[0]


def test_a_function_that_ignores_sigterm_is_still_stopped_at_its_timeout(
    provisioner, invocation, docker_client
):
    source = """
    import signal, time
    def handler(event, context):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        while True:
            time.sleep(0.1)
    """
    outcome = provisioner.run(invocation(source, timeout_s=1))

    assert (outcome.status, outcome.error["reason"]) == ("timed_out", "timeout")
    assert not docker_client.containers.list(all=True, filters={"id": outcome.container_id})


def test_an_output_flood_is_cut_to_the_last_64_kib_and_the_function_still_returns(
    provisioner, invocation
):
    source = """
    import os, sys
    def handler(event, context):
        chunk = b"x" * 65536
        for _ in range(1600):  # 100 MiB through stdout and stderr
            os.write(1, chunk)
            os.write(2, chunk)
        print("the end", flush=True)
        return "survived"
    """
    outcome = provisioner.run(invocation(source, timeout_s=60))

    assert (outcome.status, outcome.result) == ("succeeded", "survived")
    assert len(outcome.logs.encode()) <= 64 * 1024 + 256  # the tail, plus a note of the cut
    assert "the end" in outcome.logs


def test_background_processes_flooding_output_are_stopped_at_the_timeout(
    provisioner, invocation, docker_client
):
    outcome = run_bounded(provisioner, invocation(FLOOD, "flood and sleep", timeout_s=2))

    assert (outcome.status, outcome.error["reason"]) == ("timed_out", "timeout")
    assert "yyyy" in outcome.logs
    assert not docker_client.containers.list(all=True, filters={"id": outcome.container_id})


def test_a_warm_container_left_flooding_by_a_finished_execution_is_cleared_and_serves_again(
    settings_for, invocation, docker_client
):
    from provisioner.docker import DockerProvisioner

    provisioner = DockerProvisioner(settings_for(pool_size=0), client=docker_client)
    try:
        first = run_bounded(provisioner, invocation(FLOOD, "flood", timeout_s=5))
        second = run_bounded(provisioner, invocation(FLOOD, "again", timeout_s=5))
    finally:
        provisioner.close()

    assert (first.status, first.result) == ("succeeded", "flood")
    assert (second.status, second.result) == ("succeeded", "again")
    assert second.container_id == first.container_id and not second.cold_start
    assert "yyyy" not in second.logs  # the flooders died when the first handler returned


def test_the_engine_holds_the_limits_no_swap_cpu_share_pids_and_no_privilege(
    settings_for, invocation, docker_client
):
    from provisioner.docker import DockerProvisioner

    provisioner = DockerProvisioner(settings_for(pool_size=0), client=docker_client)
    source = """
    import time
    def handler(event, context):
        time.sleep(30)
    """
    run = invocation(source, timeout_s=60, memory_mb=256)
    worker = threading.Thread(target=provisioner.run, args=(run,))
    worker.start()
    try:
        running = []
        deadline = time.monotonic() + 30
        while not running and time.monotonic() < deadline:
            running = docker_client.containers.list(
                filters={"label": f"lambda-os.execution-id={run.execution_id}"}
            )
            time.sleep(0.05)
        host_config = running[0].attrs["HostConfig"]
    finally:
        provisioner.close()
        worker.join()

    assert host_config["Memory"] == 256 * 1024 * 1024
    assert host_config["MemorySwap"] == host_config["Memory"]  # no swap on top
    assert host_config["CpuShares"] > 0
    assert 0 < host_config["PidsLimit"] <= 1024
    assert host_config["Privileged"] is False
    assert host_config["CapDrop"] == ["ALL"] and not host_config["CapAdd"]
    assert "no-new-privileges" in " ".join(host_config["SecurityOpt"])
    assert host_config["ReadonlyRootfs"] is True
    assert host_config["NetworkMode"] == "none"


def test_the_engine_caps_the_cpu_in_proportion_to_memory_in_fresh_and_pooled_containers(
    backend, invocation, docker_client, pool_ready
):
    quick = """
    def handler(event, context):
        return event
    """
    fresh = backend(pool_size=0, warm_idle_s=600.0).run(invocation(quick, 1, memory_mb=512))
    pooled_backend = backend(pool_size=1, warm_idle_s=600.0)
    (pooled,) = pool_ready(pooled_backend, 1)
    resized = pooled_backend.run(invocation(quick, 2, memory_mb=1769))

    def cpu(container_id: str) -> tuple[int, int]:
        host_config = docker_client.api.inspect_container(container_id)["HostConfig"]
        return host_config["CpuPeriod"], host_config["CpuQuota"]

    assert resized.container_id == pooled  # started with the pool's 128 MB, then resized
    assert cpu(fresh.container_id) == (100_000, 28_943)  # 512 / 1769 of one CPU
    assert cpu(resized.container_id) == (100_000, 100_000)  # one CPU at 1769 MB


def test_a_result_over_the_limit_fails_with_the_reason(provisioner, invocation):
    source = """
    def handler(event, context):
        return "x" * (7 * 1024 * 1024)
    """
    outcome = provisioner.run(invocation(source))

    assert outcome.status == "failed"
    assert "limit" in outcome.error["message"]
    assert outcome.result is None


def test_a_frame_forged_past_the_agent_is_refused_by_the_host(provisioner, invocation):
    source = """
    import gc, socket, struct
    def handler(event, context):
        # Find the agent's socket and write an oversized frame around the agent.
        sock = next(o for o in gc.get_objects() if isinstance(o, socket.socket))
        sock.sendall(struct.pack(">I", 12 * 1024 * 1024) + b"{" * 65536)
        return "unreachable"
    """
    outcome = provisioner.run(invocation(source))

    assert (outcome.status, outcome.error["type"]) == ("failed", "ProtocolViolation")
    assert "frame of 12582912 bytes" in outcome.error["message"]
    assert outcome.result is None


def test_a_result_frame_forged_past_the_agent_over_the_result_limit_fails(provisioner, invocation):
    source = """
    import gc, json, socket, struct
    def handler(event, context):
        # A well-formed result frame the agent would have refused: 7 MiB of result.
        sock = next(o for o in gc.get_objects() if isinstance(o, socket.socket))
        reply = {"type": "result", "ok": True, "mark": False, "result": "x" * (7 * 1024 * 1024)}
        body = json.dumps(reply).encode()
        sock.sendall(struct.pack(">I", len(body)) + body)
        return "unreachable"
    """
    outcome = provisioner.run(invocation(source))

    assert (outcome.status, outcome.error["type"]) == ("failed", "ProtocolViolation")
    assert outcome.result is None


def test_a_handler_error_with_a_huge_message_is_reported_cut_short(provisioner, invocation):
    source = """
    def handler(event, context):
        raise ValueError("\U0001f4a5" * (2 * 1024 * 1024))
    """
    outcome = provisioner.run(invocation(source))

    assert (outcome.status, outcome.error["type"]) == ("failed", "ValueError")
    assert outcome.error["reason"] == "handler error"
    assert len(outcome.error["message"]) < 100_000
    assert outcome.error["message"].endswith("[cut]")

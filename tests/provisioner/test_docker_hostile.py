"""Specification: a hostile or careless function cannot harm the host or outlive its limits (issue #5).

The first cases run in both modes (a fresh container per execution, and warm +
pool): a handler that ignores SIGTERM, and one that floods its output. The last
reads the container's settings back from the engine while the function runs.
"""

from __future__ import annotations

import threading
import time

import pytest

pytestmark = pytest.mark.integration


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

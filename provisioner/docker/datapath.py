"""Measure the data path between the host and a runtime container, and print the figures.

    python -m provisioner.docker.datapath [--rounds N]

It compares a round trip over a container's stdio attached through dockerd with
one over the Unix socket our agent uses (a ``ping`` frame, no handler), then
times whole executions through ``DockerProvisioner.run``: warm, first execution
on a pooled container, and first execution in a fresh container, and reads the
memory an idle warm container holds. Everything stays on this machine; the
containers have no network. Speed is measured here, never asserted in a test.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import socket
import statistics
import struct
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import docker

from lambda_os.settings import Settings
from provisioner.base import Invocation
from provisioner.docker.channel import LogTail
from provisioner.docker.host import DEFAULT_DOCKER_HOST
from provisioner.docker.provisioner import DockerProvisioner

ECHO = "import sys\nfor line in sys.stdin:\n    sys.stdout.write(line)\n    sys.stdout.flush()\n"
HELLO = b"def handler(event, context):\n    return event\n"


def percentiles(samples_ms: list[float]) -> str:
    ordered = sorted(samples_ms)
    p50 = statistics.median(ordered)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"p50 {p50:8.3f} ms   p99 {p99:8.3f} ms   (n={len(ordered)})"


def attached_stdio(client: docker.DockerClient, image: str, rounds: int) -> list[float]:
    """Round trips of one line through a container's stdin/stdout attached via dockerd."""
    container = client.containers.create(
        image,
        entrypoint=["/usr/bin/python3", "-u", "-c", ECHO],
        stdin_open=True,
        network_mode="none",
        labels={"lambda-os": "1", "lambda-os.owner": "datapath"},
    )
    try:
        raw = client.api.attach_socket(container.id, params={"stdin": 1, "stdout": 1, "stream": 1})
        sock: socket.socket = raw._sock  # the SDK wraps the hijacked connection
        container.start()
        samples = []
        for _ in range(rounds):
            started = time.perf_counter()
            sock.sendall(b"ping\n")
            header = _exactly(sock, 8)  # stdout is multiplexed: 8-byte frame header
            _exactly(sock, struct.unpack(">xxxxI", header)[0])
            samples.append((time.perf_counter() - started) * 1000)
        return samples
    finally:
        container.remove(force=True)


def _exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("container closed its stdout")
        data += chunk
    return data


def invocation(memory_mb: int = 128, function_id: str = "fn-datapath") -> Invocation:
    return Invocation(
        execution_id=uuid.uuid4().hex,
        function_id=function_id,
        function_name="datapath",
        function_version=1,
        runtime="python3.11",
        handler="main.handler",
        memory_mb=memory_mb,
        timeout_s=30,
        code_sha256=hashlib.sha256(HELLO).hexdigest(),
        package_kind="py",
        package_filename="main.py",
        load_package=lambda: HELLO,
        event_id=uuid.uuid4().hex,
        event_source="bench",
        event_type="datapath",
        data={"n": 1},
    )


def timed(samples: list[float], run: Callable[[], object]) -> None:
    started = time.perf_counter()
    run()
    samples.append((time.perf_counter() - started) * 1000)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2000, help="round trips per warm figure")
    parser.add_argument("--cold", type=int, default=10, help="executions per cold-start figure")
    args = parser.parse_args(argv)
    base = Settings.from_env()
    client = docker.DockerClient(base_url=base.docker_host or DEFAULT_DOCKER_HOST)
    image = f"{base.runtime_image_prefix}:python3.11"
    state = Path(tempfile.mkdtemp(prefix="los-bench-", dir="/tmp"))

    stdio = attached_stdio(client, image, args.rounds)
    print(f"attached stdio round trip (dockerd)   {percentiles(stdio)}")

    settings = Settings(
        state_dir=str(state), runtime_image_prefix=base.runtime_image_prefix, pool_size=0
    )
    provisioner = DockerProvisioner(settings, client=client)
    try:
        provisioner.run(invocation())  # now warm
        ((_key, warm),) = provisioner._inventory.warm()
        pings = []
        for _ in range(args.rounds):
            timed(
                pings,
                lambda: warm.channel.request({"type": "ping"}, time.monotonic() + 5, LogTail()),
            )
        print(f"unix socket round trip (agent ping)   {percentiles(pings)}")
        runs = []
        for _ in range(args.rounds):
            timed(runs, lambda: provisioner.run(invocation()))
        print(f"warm execution, run() end to end     {percentiles(runs)}")
        stats = client.api.stats(warm.id, stream=False)
        usage = stats["memory_stats"].get("usage", 0)
        cache = stats["memory_stats"].get("stats", {}).get("cache", 0)
        print(
            f"idle warm container memory            {(usage - cache) / 2**20:.1f} MiB (cgroup, less page cache)"
        )
        fresh = []
        for i in range(args.cold):
            timed(fresh, lambda i=i: provisioner.run(invocation(function_id=f"fn-fresh-{i}")))
        print(f"first execution, fresh container      {percentiles(fresh)}")
    finally:
        provisioner.close()

    settings = Settings(
        state_dir=str(state), runtime_image_prefix=base.runtime_image_prefix, pool_size=1
    )
    provisioner = DockerProvisioner(settings, client=client)
    try:
        pooled = []
        for i in range(args.cold):
            while not provisioner.pooled("python3.11"):
                time.sleep(0.01)
            timed(pooled, lambda i=i: provisioner.run(invocation(function_id=f"fn-pool-{i}")))
        print(f"first execution, pooled container     {percentiles(pooled)}")
    finally:
        provisioner.close()
        shutil.rmtree(state, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

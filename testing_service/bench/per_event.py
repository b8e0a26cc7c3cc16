"""Case 5: the design this platform replaces, one ``docker run`` of the runtime image per event.

Each event starts a fresh container of the same runtime image with the same
isolation (no network, read-only root, non-root user, memory and pids limits),
runs the trivial handler on the event given as an argument, reads its result
from the container's output and removes the container, through the docker SDK
(``containers.run(..., remove=True)``, what ``docker run --rm`` does). Two run at
once, one per core. Every container carries a label of this run, and any left
behind by an error is removed at the end.
"""

from __future__ import annotations

import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import docker

from testing_service.bench.platform import TRIVIAL_SOURCE

RUNNER = (
    TRIVIAL_SOURCE.decode()
    + "import json, sys\nprint(json.dumps(handler(json.loads(sys.argv[1]), None)))\n"
)


def container_per_event(
    image: str, count: int, parallel: int = 2, docker_host: str | None = None
) -> dict[str, Any]:
    """Run ``count`` events, ``parallel`` at a time; each one's latency and the overall rate."""
    client = docker.DockerClient(base_url=docker_host) if docker_host else docker.from_env()
    label = f"lambda-os.bench={uuid.uuid4().hex[:10]}"

    def one(index: int) -> tuple[float, Any]:
        started = time.perf_counter()
        output = client.containers.run(
            image,
            entrypoint=["/usr/bin/python3", "-I", "-c", RUNNER, json.dumps({"n": index})],
            user="10001:10001",
            network_mode="none",
            mem_limit="128m",
            memswap_limit="128m",
            pids_limit=128,
            read_only=True,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            labels=dict([label.split("=", 1)]),
            remove=True,
        )
        return (time.perf_counter() - started) * 1000, json.loads(output)

    try:
        first = time.perf_counter()
        with ThreadPoolExecutor(
            max_workers=parallel, thread_name_prefix="bench-docker-run"
        ) as pool:
            results = list(pool.map(one, range(count)))
        seconds = time.perf_counter() - first
    finally:
        for container in client.containers.list(all=True, filters={"label": label}):
            container.remove(force=True)
        client.close()
    return {
        "latencies_ms": [latency for latency, _result in results],
        "seconds": seconds,
        "received": len(results),
        "sample_result": results[0][1] if results else None,
        "parallel": parallel,
    }

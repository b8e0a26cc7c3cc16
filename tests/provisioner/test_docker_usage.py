"""What a run takes of its container: CPU time and peak memory, read from its cgroup."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

WORK = """
import time
def handler(event, context):
    if event == "heavy":
        hold = bytearray(80 * 1024 * 1024)  # touched: charged to the container
        for i in range(0, len(hold), 4096):
            hold[i] = 1
        deadline = time.process_time() + 0.3
        while time.process_time() < deadline:
            pass
        return len(hold)
    return 0
"""


def test_a_run_reports_the_cpu_time_and_peak_memory_it_took(backend, invocation):
    provisioner = backend(pool_size=0)

    heavy = provisioner.run(invocation(WORK, "heavy", memory_mb=256))

    assert heavy.status == "succeeded", heavy.error
    assert heavy.cpu_ms is not None and 250 <= heavy.cpu_ms < 5_000, heavy.cpu_ms
    assert heavy.peak_memory_mb is not None and heavy.peak_memory_mb >= 80, heavy.peak_memory_mb


def test_a_light_run_after_a_heavy_one_in_the_same_container_reports_its_own_peak(
    backend, invocation
):
    if not Path("/sys/fs/cgroup/memory").is_dir():
        pytest.skip("cgroup v2: memory.peak is the container's peak so far on most kernels")
    provisioner = backend(pool_size=0)
    heavy = provisioner.run(invocation(WORK, "heavy", memory_mb=256))

    light = provisioner.run(invocation(WORK, "light", memory_mb=256))

    assert light.container_id == heavy.container_id  # warm: the same cgroup
    assert light.cpu_ms is not None and light.cpu_ms < heavy.cpu_ms
    # The high-water mark starts again from the use of now (cgroup v1), so the freed
    # 80 MiB do not count.
    assert light.peak_memory_mb is not None and light.peak_memory_mb < heavy.peak_memory_mb - 40

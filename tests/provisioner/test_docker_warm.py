"""Specification of warm reuse, version isolation, eviction and the pool (issue #7)."""

from __future__ import annotations

import itertools
import threading

import pytest

pytestmark = pytest.mark.integration

COUNTER = """
import os
calls = 0
def handler(event, context):
    global calls
    calls += 1
    if event == "crash":
        os._exit(1)
    if event == "sleep":
        import time
        time.sleep(60)
    if event == "hog":
        hog = b"x" * (512 * 1024 * 1024)
    return {"calls": calls, "pid": os.getpid()}
"""


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def exists(docker_client, container_id: str) -> bool:
    return bool(docker_client.containers.list(all=True, filters={"id": container_id}))


def test_second_execution_reuses_the_warm_container(backend, invocation):
    provisioner = backend(pool_size=0)
    first = provisioner.run(invocation(COUNTER, "a"))
    second = provisioner.run(invocation(COUNTER, "b"))

    assert first.cold_start is True
    assert second.cold_start is False
    assert second.container_id == first.container_id
    assert second.result == {"calls": 2, "pid": first.result["pid"]}


def test_a_new_version_never_runs_in_an_old_versions_container(backend, invocation, docker_client):
    provisioner = backend(pool_size=0)
    old = provisioner.run(invocation(COUNTER, "a", function_id="fn-versions", function_version=1))
    new = provisioner.run(invocation(COUNTER, "a", function_id="fn-versions", function_version=2))

    assert new.container_id != old.container_id
    assert new.cold_start is True
    assert new.result["calls"] == 1
    assert not exists(docker_client, old.container_id)  # the old version's is retired


def test_other_functions_do_not_share_a_warm_container(backend, invocation):
    provisioner = backend(pool_size=0)
    one = provisioner.run(invocation(COUNTER, "a", function_id="fn-one"))
    two = provisioner.run(invocation(COUNTER, "a", function_id="fn-two"))

    assert one.container_id != two.container_id
    assert two.result["calls"] == 1


@pytest.mark.parametrize(
    ("event", "status", "reason", "fields"),
    [
        ("crash", "failed", "crashed", {}),
        ("sleep", "timed_out", "timeout", {"timeout_s": 1}),
        ("hog", "failed", "out of memory", {"memory_mb": 64}),
    ],
)
def test_a_warm_container_that_failed_is_never_reused(
    backend, invocation, docker_client, event, status, reason, fields
):
    provisioner = backend(pool_size=0)
    warm = provisioner.run(invocation(COUNTER, "a", **fields))
    failed = provisioner.run(invocation(COUNTER, event, **fields))
    after = provisioner.run(invocation(COUNTER, "a", **fields))

    assert failed.container_id == warm.container_id
    assert failed.cold_start is False
    assert failed.status == status
    assert failed.error["reason"] == reason
    assert not exists(docker_client, warm.container_id)
    assert after.status == "succeeded"
    assert after.container_id != warm.container_id
    assert after.cold_start is True


def test_a_handler_exception_leaves_the_container_warm(backend, invocation):
    source = """
    def handler(event, context):
        if event == "raise":
            raise RuntimeError("once")
        return "ok"
    """
    provisioner = backend(pool_size=0)
    failed = provisioner.run(invocation(source, "raise"))
    after = provisioner.run(invocation(source, "fine"))

    assert failed.error["reason"] == "handler error"
    assert after.result == "ok"
    assert after.container_id == failed.container_id


def test_an_idle_warm_container_is_removed_after_the_idle_time(backend, invocation, docker_client):
    clock = FakeClock()
    provisioner = backend(clock=clock, pool_size=0, warm_idle_s=600.0)
    outcome = provisioner.run(invocation(COUNTER, "a"))

    clock.now += 599
    assert provisioner.expire_idle() == 0
    clock.now += 2
    assert provisioner.expire_idle() == 1

    assert not exists(docker_client, outcome.container_id)


def test_idle_containers_are_evicted_least_recently_used_first_under_memory_pressure(
    backend, invocation, docker_client
):
    provisioner = backend(pool_size=0, host_memory_mb=300)
    first = provisioner.run(invocation(COUNTER, "a", function_id="fn-first"))
    second = provisioner.run(invocation(COUNTER, "a", function_id="fn-second"))
    third = provisioner.run(invocation(COUNTER, "a", function_id="fn-third"))

    assert third.status == "succeeded"
    assert not exists(docker_client, first.container_id)
    assert exists(docker_client, second.container_id)


def test_a_function_larger_than_the_host_budget_is_refused(backend, invocation):
    from lambda_os.errors import PermanentError

    provisioner = backend(pool_size=0, host_memory_mb=256)
    with pytest.raises(PermanentError, match="budget"):
        provisioner.run(invocation(COUNTER, "a", memory_mb=512))


def test_a_first_execution_takes_a_pooled_container_and_the_pool_refills(
    backend, invocation, pool_ready
):
    provisioner = backend(pool_size=1)
    (pooled,) = pool_ready(provisioner, 1)

    outcome = provisioner.run(invocation(COUNTER, "a"))
    (replacement,) = pool_ready(provisioner, 1)

    assert outcome.status == "succeeded"
    assert outcome.container_id == pooled
    assert outcome.cold_start is True
    assert replacement != pooled


def test_a_pooled_container_takes_the_functions_memory_limit(backend, invocation, pool_ready):
    source = """
    def handler(event, context):
        for path in ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory.max"):
            try:
                return int(open(path).read())
            except OSError:
                pass
    """
    provisioner = backend(pool_size=1)
    (pooled,) = pool_ready(provisioner, 1)

    outcome = provisioner.run(invocation(source, memory_mb=200))

    assert outcome.container_id == pooled
    assert outcome.result == 200 * 1024 * 1024


def test_a_function_with_network_does_not_take_a_pooled_container(backend, invocation, pool_ready):
    provisioner = backend(pool_size=1)
    (pooled,) = pool_ready(provisioner, 1)

    outcome = provisioner.run(invocation(COUNTER, "a", network=True))

    assert outcome.container_id != pooled


WINDOW = """
import time
def handler(event, context):
    started = time.time()
    time.sleep(event)
    return [started, time.time()]
"""


def run_together(provisioner, runs):
    outcomes = []
    threads = [
        threading.Thread(target=lambda r=r: outcomes.append(provisioner.run(r))) for r in runs
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [outcome.status for outcome in outcomes] == ["succeeded"] * len(runs)
    return [outcome.result for outcome in outcomes]


def test_parallel_executions_all_complete(backend, invocation):
    provisioner = backend(pool_size=2)
    runs = [invocation(COUNTER, str(i), function_id=f"fn-{i % 3}") for i in range(8)]
    assert len(run_together(provisioner, runs)) == 8  # every one succeeded


def test_close_removes_busy_warm_and_pooled_containers(
    settings_for, docker_client, invocation, pool_ready
):
    from provisioner.docker import DockerProvisioner

    provisioner = DockerProvisioner(settings_for(pool_size=2), client=docker_client)
    pool_ready(provisioner, 2)
    provisioner.run(invocation(COUNTER, "a"))
    busy = threading.Thread(
        target=provisioner.run, args=(invocation(COUNTER, "sleep", timeout_s=60),)
    )
    busy.start()
    owner = provisioner.host.owner.label

    pool_ready(provisioner, 2)
    provisioner.close()
    busy.join()

    assert not docker_client.containers.list(
        all=True, filters={"label": f"lambda-os.owner={owner}"}
    )


def test_a_function_never_runs_more_executions_at_once_than_its_concurrency(backend, invocation):
    provisioner = backend(pool_size=0, concurrency=4)
    runs = [invocation(WINDOW, 0.5, concurrency=1) for _ in range(3)]
    windows = sorted(run_together(provisioner, runs))
    for (_, first_end), (second_start, _) in itertools.pairwise(windows):
        assert second_start >= first_end  # one after another, though the host had room


def test_a_function_under_its_concurrency_runs_executions_side_by_side(backend, invocation):
    provisioner = backend(pool_size=0, concurrency=4)
    runs = [invocation(WINDOW, 1.0, concurrency=2) for _ in range(2)]
    windows = sorted(run_together(provisioner, runs))
    (_, first_end), (second_start, _) = windows
    assert second_start < first_end


def test_usage_tells_memory_idle_containers_hold_from_memory_in_use(backend, invocation):
    provisioner = backend(pool_size=0, host_memory_mb=2048)
    before = provisioner.usage()
    assert (before.free_memory_mb, before.idle_memory_mb) == (2048, 0)
    assert provisioner.run(invocation(COUNTER, 1, memory_mb=256)).status == "succeeded"
    after = provisioner.usage()
    # The container stays warm: its memory is held, but only by an idle container.
    assert (after.free_memory_mb, after.idle_memory_mb) == (2048 - 256, 256)

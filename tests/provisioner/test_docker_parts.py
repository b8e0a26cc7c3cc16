"""Specification of the Docker backend's parts that need no engine: limits, log tail, inventory."""

from __future__ import annotations

import io
import os
import select
import socket
import threading
import time
import zipfile
from pathlib import Path

import docker.errors
import pytest
import requests.exceptions

from lambda_os.errors import PermanentError, TransientError
from provisioner.docker.channel import Channel, ChannelTimeout, LogTail, Output
from provisioner.docker.container import Limits, container_config
from provisioner.docker.host import Owner, engine_errors
from provisioner.docker.inventory import Inventory


def test_container_config_applies_every_isolation_limit():
    config = container_config(
        "img", "name", Limits(memory_mb=256), {"a": "b"}, Path("/state/containers/x")
    )

    assert config["mem_limit"] == config["memswap_limit"] == "256m"
    assert config["network_mode"] == "none"
    assert config["user"] == "10001:10001"
    assert config["read_only"] is True
    assert config["tmpfs"] == {"/tmp": "rw,nosuid,nodev,size=64m,mode=1777"}
    assert config["pids_limit"] == 128
    assert config["cap_drop"] == ["ALL"]
    assert config["security_opt"] == ["no-new-privileges"]
    assert config["cpu_shares"] == 256
    assert config["volumes"] == {"/state/containers/x": {"bind": "/run/lambda-os", "mode": "ro"}}


def test_a_function_asking_for_network_gets_the_default_bridge():
    config = container_config("img", "n", Limits(memory_mb=128, network=True), {}, Path("/d"))

    assert config["network_mode"] == "bridge"


def test_log_tail_keeps_the_last_64_kib_and_says_it_dropped_the_rest():
    tail = LogTail()
    for i in range(10_000):
        tail.append(f"line {i}\n".encode())

    text = tail.text()

    assert len(text.encode()) <= 64 * 1024
    assert text.startswith("[earlier output dropped]\n")
    assert text.endswith("line 9999\n")


def test_log_tail_cut_never_leaves_half_a_character():
    tail = LogTail(limit=100)
    tail.append("é".encode() * 500)

    assert set(tail.text().split("\n", 1)[1]) == {"é"}


def test_engine_errors_become_transient_or_permanent_with_the_cause_kept():
    server = docker.errors.APIError("boom", response=_Response(500))
    client = docker.errors.APIError("bad", response=_Response(400))
    down = requests.exceptions.ConnectionError("refused")

    for cause, kind in ((server, TransientError), (client, PermanentError), (down, TransientError)):
        with pytest.raises(kind) as caught, engine_errors("do it"):
            raise cause
        assert caught.value.__cause__ is cause


def test_a_label_from_this_live_process_is_not_abandoned_but_a_dead_ones_is():
    me = Owner()

    assert not me.is_abandoned(me.label)
    assert me.is_abandoned(f"{me.hostname}/{2**22 + 1}/1/feedface0000")
    assert me.is_abandoned("not an owner label")
    assert not me.is_abandoned("another-machine/1/1/feedface0000")


class _Response:
    def __init__(self, status: int) -> None:
        self.status_code = status
        self.reason = "test"
        self.url = "http://engine/test"

    def json(self):
        return {"message": "test"}


class _Box:
    def __init__(self, name: str, memory_mb: int, runtime: str = "python3.11") -> None:
        self.id = name
        self.runtime = runtime
        self.last_used = 0.0
        self.memory_mb = memory_mb


def test_inventory_hands_a_warm_container_only_to_its_own_key():
    inventory = Inventory(budget_mb=1024)
    box = _Box("a", 128)
    inventory.put_warm(("fn", 1), box)

    assert inventory.take_warm(("fn", 2)) is None
    assert inventory.take_warm(("fn", 1)) is box
    assert inventory.take_warm(("fn", 1)) is None


def test_inventory_hands_out_a_keys_most_recent_container_and_never_one_evicted_or_removed():
    inventory = Inventory(budget_mb=1024)
    first, second, third, other = (_Box(name, 128) for name in ("1", "2", "3", "o"))
    for box in (first, second, third, other):
        inventory.hold(box.memory_mb)
    inventory.put_warm(("fn", 1), first)
    inventory.put_warm(("fn", 2), other)
    inventory.put_warm(("fn", 1), second)
    inventory.put_warm(("fn", 1), third)

    assert inventory.take_warm(("fn", 1)) is third  # the most recently used of its key
    inventory.put_warm(("fn", 1), third)
    assert inventory.evict_for(1024 - 4 * 128 + 128) == [first]  # the least recently used
    assert inventory.remove_warm_where(lambda key, _c: key == ("fn", 2)) == [other]

    assert [inventory.take_warm(("fn", 1)) for _ in range(3)] == [third, second, None]
    assert inventory.take_warm(("fn", 2)) is None
    assert inventory.warm() == []


def test_inventory_evicts_least_recently_used_warm_before_pooled():
    inventory = Inventory(budget_mb=400)
    pooled, older, newer = _Box("p", 128), _Box("old", 128), _Box("new", 128)
    for box in (pooled, older, newer):
        inventory.hold(box.memory_mb)
    inventory.put_pooled(pooled)
    inventory.put_warm(("fn", 1), older)
    inventory.put_warm(("fn", 2), newer)

    assert inventory.evict_for(128) == [older]
    assert inventory.evict_for(256) == [newer]
    assert inventory.evict_for(512) is None
    assert inventory.held_mb == 128


def test_inventory_refuses_to_evict_when_busy_containers_fill_the_budget():
    inventory = Inventory(budget_mb=256)
    inventory.hold(256)  # two busy containers

    assert inventory.evict_for(128) is None


def test_package_cache_unpacks_once_and_prunes_what_no_execution_asked_for(tmp_path, invocation):
    from provisioner.docker.cache import PackageCache

    now = [1000.0]
    cache = PackageCache(tmp_path / "packages", clock=lambda: now[0])
    old = invocation("def handler(event, context):\n    return 1\n")
    kept = invocation("def handler(event, context):\n    return 2\n")
    old_dir = cache.get(old)
    assert cache.get(old) == old_dir and old.load_package.loads == 1
    now[0] += 500
    kept_dir = cache.get(kept)
    now[0] += 200  # old unused for 700 s, kept for 200 s

    assert cache.prune(unused_for_s=600) == 1
    assert not old_dir.exists() and kept_dir.exists()
    assert cache.get(old).is_dir() and old.load_package.loads == 2  # fetched again on need


def clashing_zip(*names: str) -> bytes:
    """A zip whose entries are written in the given order, each holding a tiny handler."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for name in names:
            archive.writestr(name, "def handler(event, context):\n    return 1\n")
    return buf.getvalue()


@pytest.mark.parametrize(
    "names",
    [("main.py", "main.py/x"), ("main.py/x", "main.py")],
    ids=["file-then-directory", "directory-then-file"],
)
def test_a_package_whose_entries_clash_cannot_be_unpacked_and_is_not_retried(
    tmp_path, invocation, names
):
    from provisioner.docker.cache import PackageCache

    cache = PackageCache(tmp_path / "packages")
    run = invocation(clashing_zip(*names), kind="zip")

    with pytest.raises(PermanentError, match="cannot be unpacked") as caught:
        cache.get(run)
    assert list((tmp_path / "packages").iterdir()) == []  # no entry, no scratch left behind
    # The reason reaches the execution record: the package's own path, not the host's.
    assert str(tmp_path) not in caught.value.description
    assert "'main.py" in caught.value.description


def test_a_request_ends_at_its_deadline_even_if_the_output_never_runs_dry():
    """``/dev/zero`` stands for a pipe that background writers keep full: never empty, never closed."""
    host_end, agent_end = socket.socketpair()
    channel = Channel(host_end)
    channel.output = Output(os.open("/dev/zero", os.O_RDONLY), b"0123456789abcdef")
    channel.poller.register(channel.output.fd, select.POLLIN)
    ended: list[BaseException] = []

    def request() -> None:
        try:
            channel.request({"type": "ping"}, time.monotonic() + 0.5, LogTail())
        except BaseException as exc:  # noqa: BLE001 - handed to the test below
            ended.append(exc)

    worker = threading.Thread(target=request, daemon=True)
    worker.start()
    worker.join(10)
    try:
        assert not worker.is_alive(), "the request was still reading output 10 s later"
        assert isinstance(ended[0], ChannelTimeout)
    finally:
        agent_end.close()
        if not worker.is_alive():
            channel.close()


def test_one_read_of_the_output_takes_at_most_its_limit():
    output = Output(os.open("/dev/zero", os.O_RDONLY), b"0123456789abcdef")
    output.sink = LogTail()
    try:
        output.read_available(limit=3000)
    finally:
        output.close()

    assert len(output.sink.data) + len(output.pending) == 3000


class StillHost:
    """Stands in for DockerHost while a container starts: it keeps ``state``; its agent never connects."""

    def __init__(self, state: dict | None) -> None:
        self._state = state

    def state(self, container_id: str) -> dict | None:
        return self._state

    def logs(self, container_id: str) -> str:
        return "agent log"


@pytest.mark.parametrize(
    ("state", "error"),
    [
        ({"Running": True}, TransientError),  # the agent is slow: a loaded host
        (None, TransientError),  # the container was removed from under the start
        ({"Running": False, "ExitCode": 1, "OOMKilled": False}, PermanentError),  # it died
    ],
    ids=["agent-too-slow", "container-gone", "agent-exited"],
)
def test_a_runtime_too_slow_to_start_is_retried_and_one_that_dies_is_not(tmp_path, state, error):
    from provisioner.docker.container import RuntimeContainer, StartFailed
    from provisioner.docker.provisioner import start_failure_error

    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(tmp_path / "agent.sock"))
    server.listen(1)
    try:
        with pytest.raises(StartFailed) as caught:
            RuntimeContainer._accept(StillHost(state), "c" * 64, server, timeout_s=0.1)
    finally:
        server.close()

    assert isinstance(start_failure_error("python3.11", caught.value), error)


def test_a_handshake_whose_deadline_has_passed_times_out_rather_than_calling_the_agent_gone():
    host_end, agent_end = socket.socketpair()
    try:
        with pytest.raises(ChannelTimeout):
            Channel(host_end).handshake(time.monotonic() - 1)
    finally:
        host_end.close()
        agent_end.close()


def test_the_base_image_is_fetched_through_the_hosts_apt_sources_for_its_suite(tmp_path):
    from provisioner.images import host_sources

    listed = tmp_path / "sources.list.d"
    listed.mkdir()
    (tmp_path / "sources.list").write_text("# nothing here\n")
    (listed / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.invalid/debian\nSuites: bookworm bookworm-updates\n"
    )
    (listed / "old.list").write_text("deb http://mirror.invalid/debian bookworm main\n")
    (listed / "other.sources").write_text(
        "Types: deb\nURIs: http://third.invalid\nSuites: nodistro\n"
    )
    (listed / "off.list.disabled").write_text("deb http://mirror.invalid/debian bookworm main\n")

    assert host_sources("bookworm", tmp_path) == [
        str(listed / "old.list"),
        str(listed / "debian.sources"),
    ]
    assert host_sources("trixie", tmp_path) == []

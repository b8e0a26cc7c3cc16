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
from provisioner.docker.egress import OPTIONS, network_problem
from provisioner.docker.firewall import egress_rules, resolvers_from
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
    assert (config["cpu_period"], config["cpu_quota"]) == (100_000, 14_471)  # 256 / 1769 CPUs
    assert config["volumes"] == {"/state/containers/x": {"bind": "/run/lambda-os", "mode": "ro"}}


def test_the_cpu_cap_follows_memory_at_one_cpu_per_1769_mb_within_a_tenth_and_the_hosts_cores():
    assert Limits(memory_mb=1769, max_cpus=4).cpus == 1.0
    assert Limits(memory_mb=3538, max_cpus=4).cpus == 2.0
    assert Limits(memory_mb=128, max_cpus=4).cpus == 0.1
    assert Limits(memory_mb=10240, max_cpus=2).cpus == 2.0
    assert Limits(memory_mb=128, mb_per_cpu=0).cpus is None
    assert Limits(memory_mb=128, mb_per_cpu=0).cpu_cap() == {}


def test_the_agent_starts_under_at_least_one_cpu_and_only_then_takes_the_functions_cap():
    limits = Limits(memory_mb=128)

    booting = container_config("img", "n", limits, {}, Path("/d"), cpus_at_least=1.0)

    assert booting["cpu_quota"] == 100_000
    assert limits.cpu_cap() == {"cpu_period": 100_000, "cpu_quota": 10_000}


def test_a_resized_container_keeps_its_cpu_policy_and_its_cap_follows_the_new_memory():
    limits = Limits(memory_mb=128, mb_per_cpu=1000, max_cpus=2).resized(1500)

    assert (limits.memory_mb, limits.cpus) == (1500, 1.5)
    assert limits.cpu_cap() == {"cpu_period": 100_000, "cpu_quota": 150_000}


def test_a_function_asking_for_network_gets_the_egress_network_without_ipv6():
    config = container_config("img", "n", Limits(memory_mb=128, network=True), {}, Path("/d"))

    assert config["network_mode"] == "lambda-os-egress"
    assert config["sysctls"] == {"net.ipv6.conf.all.disable_ipv6": "1"}


def test_egress_rules_drop_every_non_public_destination_and_let_dns_reach_the_resolvers():
    rules = egress_rules("br-x", ["10.0.0.2"])
    drops = [rule[1] for rule in rules.chain if rule[0] == "-d" and rule[-1] == "DROP"]

    assert rules.chain[0][:6] == ["-d", "10.0.0.2/32", "-p", "udp", "--dport", "53"]
    assert rules.chain[1][:6] == ["-d", "10.0.0.2/32", "-p", "tcp", "--dport", "53"]
    assert {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"} <= set(drops)
    assert {"100.64.0.0/10", "127.0.0.0/8"} <= set(drops)
    assert ["-m", "addrtype", "--dst-type", "LOCAL"] == rules.chain[2][:4]
    assert [parent for parent, _rule in rules.jumps] == ["DOCKER-USER", "INPUT"]
    assert all(rule[:2] == ["-i", "br-x"] for _parent, rule in rules.jumps)


def test_only_non_loopback_ipv4_resolvers_are_let_through():
    text = "# c\nnameserver 127.0.0.53\nnameserver 10.255.255.53\nnameserver ::1\nsearch x\n"

    assert resolvers_from(text) == ["10.255.255.53"]


def test_a_network_of_our_name_with_inter_container_traffic_on_is_not_taken_as_ours():
    options = dict(OPTIONS, **{"com.docker.network.bridge.enable_icc": "true"})

    assert network_problem({"Driver": "bridge", "Options": OPTIONS}) is None
    assert "enable_icc" in network_problem({"Driver": "bridge", "Options": options})


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


def test_the_pids_counter_is_found_in_cgroup_v1_and_v2(tmp_path):
    from provisioner.docker.probe import pids_current_path

    v1 = "9:name=systemd:/docker/abc\n8:pids:/docker/abc\n4:memory:/docker/abc\n0::/docker/abc\n"
    v2 = "0::/system.slice/docker-abc.scope\n"

    assert pids_current_path(v1, tmp_path) == tmp_path / "pids/docker/abc/pids.current"
    assert (
        pids_current_path(v2, tmp_path) == tmp_path / "system.slice/docker-abc.scope/pids.current"
    )
    assert pids_current_path("4:memory:/docker/abc\n", tmp_path) is None


def test_a_probe_that_cannot_see_the_container_answers_none_rather_than_guessing():
    from provisioner.docker.probe import Probe

    probe = Probe.attach(None)

    assert (probe.tasks(), probe.tmp_used_bytes()) == (None, None)
    probe.close()


def test_tmp_counts_as_memory_only_where_it_is_a_tmpfs():
    from provisioner.docker.probe import tmp_is_tmpfs

    tmpfs = "overlay / overlay ro 0 0\ntmpfs /tmp tmpfs rw,nosuid,nodev,size=65536k 0 0\n"
    on_disk = "overlay / overlay ro 0 0\ntmpfs /dev tmpfs rw 0 0\n"

    assert tmp_is_tmpfs(tmpfs) is True
    assert tmp_is_tmpfs(on_disk) is False

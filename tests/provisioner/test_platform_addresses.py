"""Specification: the egress rules drop the platform's own addresses first, public or not (#13).

The metadata service hands out a worker's credentials; the broker, the catalogue and
the API may sit on public addresses; the host's own addresses are its own. The rule
list is checked as data here, and on the real iptables in a network namespace made
for the test, read back with ``iptables -S``. No packet is sent.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from lambda_os.settings import Settings
from provisioner.docker.firewall import BLOCKED, CHAIN, Iptables, egress_rules
from provisioner.docker.platform_addresses import (
    METADATA,
    UnresolvedHost,
    addresses_from,
    host_addresses,
    platform_addresses,
    resolve,
    settings_hosts,
    url_hosts,
)

# Public addresses (no packet goes to them: they only appear in rules).
BROKER = "84.17.10.1"
CATALOGUE_A = "84.17.10.2"
CATALOGUE_B = "84.17.10.3"
API = "84.17.10.4"


def public_settings() -> Settings:
    return Settings(
        amqp_url=f"amqp://worker:secret@{BROKER}:5672/%2F",
        mongo_url=f"mongodb://u:p@{CATALOGUE_A}:27017,{CATALOGUE_B}:27018/lambda_os?replicaSet=r",
        api_host=API,
    )


def test_the_hosts_of_the_broker_catalogue_and_api_are_read_from_the_settings():
    assert settings_hosts(public_settings()) == [BROKER, CATALOGUE_A, CATALOGUE_B, API]
    assert url_hosts("amqp://guest:guest@broker.example:5672/%2F") == ["broker.example"]
    assert url_hosts("mongodb://[::1]:27017") == []  # the firewall is IPv4 only
    assert url_hosts(None) == url_hosts("") == []


def test_names_resolve_to_ipv4_and_an_unspecified_host_adds_nothing():
    # localhost comes from /etc/hosts: no name server is asked.
    assert resolve("localhost") == ["127.0.0.1"]
    assert resolve(BROKER) == [BROKER]
    assert resolve("0.0.0.0") == []
    assert resolve("::1") == []


def test_a_platform_host_that_does_not_resolve_fails_the_set_up_rather_than_stay_unfenced():
    def no_such_name(*_args, **_kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with pytest.raises(UnresolvedHost, match="'broker.example' does not resolve"):
        resolve("broker.example", lookup=no_such_name)
    assert resolve("broker.example", lookup=lambda *a, **k: [(2, 1, 6, "", (BROKER, 0))]) == [
        BROKER
    ]


def test_the_host_addresses_are_every_ipv4_address_of_every_interface():
    interfaces = [
        {"ifname": "lo", "addr_info": [{"family": "inet", "local": "127.0.0.1"}]},
        {
            "ifname": "eth0",
            "addr_info": [
                {"family": "inet", "local": "84.17.10.9"},
                {"family": "inet", "local": "10.0.0.5"},
                {"family": "inet6", "local": "fe80::1"},
            ],
        },
        {"ifname": "eth1"},
    ]
    assert addresses_from(interfaces) == ["10.0.0.5", "127.0.0.1", "84.17.10.9"]


def test_the_platform_addresses_hold_metadata_the_services_and_this_hosts_interfaces():
    found = platform_addresses(public_settings())

    assert {METADATA, BROKER, CATALOGUE_A, CATALOGUE_B, API, "127.0.0.1"} <= set(found)
    assert set(host_addresses()) <= set(found)
    assert len(found) == len(set(found))


def test_the_platform_addresses_are_dropped_before_anything_else_even_dns():
    rules = egress_rules("br0", resolvers=[BROKER], platform=[API, METADATA, BROKER, API])
    tag = ["-m", "comment", "--comment", "lambda-os egress"]

    assert rules.chain[:3] == [  # each once, in address order
        ["-d", f"{BROKER}/32", *tag, "-j", "DROP"],
        ["-d", f"{API}/32", *tag, "-j", "DROP"],
        ["-d", f"{METADATA}/32", *tag, "-j", "DROP"],
    ]
    assert rules.chain[3][:2] == ["-d", f"{BROKER}/32"] and rules.chain[3][-1] == "RETURN"
    assert [rule[1] for rule in rules.chain[-len(BLOCKED) :]] == list(BLOCKED)


def _in(netns: str, *argv: str) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", netns, *argv], check=True, capture_output=True, text=True
    ).stdout


@pytest.fixture
def netns() -> Iterator[str]:
    """A network namespace standing for a VM: a veth with a public address, and Docker's chain."""
    if shutil.which("iptables") is None or shutil.which("ip") is None:
        pytest.skip("needs ip and iptables")
    name = f"los-fw-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    try:
        _in(name, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
        _in(name, "ip", "addr", "add", "84.17.10.77/24", "dev", "eth0")
        _in(name, "ip", "link", "set", "lo", "up")
        # Docker makes DOCKER-USER when it starts; here there is no engine.
        _in(name, "iptables", "-w", "10", "-N", "DOCKER-USER")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


@pytest.mark.integration
def test_in_a_namespace_the_real_rules_drop_the_platform_and_the_namespaces_own_addresses(netns):
    platform = platform_addresses(public_settings(), netns=netns)

    Iptables(netns=netns).protect("lambda-os0", ["9.9.9.9"], platform)
    Iptables(netns=netns).protect("lambda-os0", ["9.9.9.9"], platform)  # idempotent

    ours = _in(netns, "iptables", "-w", "10", "-S", CHAIN).splitlines()[1:]
    dropped_first = [rule.split()[3] for rule in ours[: len(platform)]]
    assert all(rule.endswith("-j DROP") for rule in ours[: len(platform)])
    assert {
        f"{METADATA}/32",
        f"{BROKER}/32",
        f"{CATALOGUE_A}/32",
        f"{CATALOGUE_B}/32",
        f"{API}/32",
        "84.17.10.77/32",  # the namespace's own interface, not the root namespace's
        "127.0.0.1/32",
    } == set(dropped_first)
    assert "--dport 53" in ours[len(platform)]
    assert len(ours) == len(set(ours))
    docker_user = _in(netns, "iptables", "-w", "10", "-S", "DOCKER-USER").splitlines()
    assert docker_user[1:] == [
        f'-A DOCKER-USER -i lambda-os0 -m comment --comment "lambda-os egress" -j {CHAIN}'
    ]
    inputs = _in(netns, "iptables", "-w", "10", "-S", "INPUT").splitlines()
    assert any(r.startswith("-A INPUT -i lambda-os0 ") and r.endswith("-j DROP") for r in inputs)
    # The root namespace's tables are not those: nothing of this went there.
    root = subprocess.run(
        ["iptables", "-w", "10", "-S"], check=True, capture_output=True, text=True
    )
    assert "84.17.10.77" not in root.stdout

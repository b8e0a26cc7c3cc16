"""Specification: a ``network: true`` function reaches the internet and nothing of ours (issue #18).

Checked by inspection only, never by sending a packet: the container's network
settings, the egress network's options, and the host's iptables rules read back
with ``iptables -S``.
"""

from __future__ import annotations

import subprocess

import pytest

from lambda_os.errors import PermanentError
from provisioner.docker.egress import BRIDGE, NETWORK, EgressNetwork
from provisioner.docker.firewall import CHAIN, Iptables
from provisioner.docker.platform_addresses import METADATA, host_addresses

pytestmark = pytest.mark.integration

QUICK = """
def handler(event, context):
    return open("/proc/sys/net/ipv6/conf/all/disable_ipv6").read().strip()
"""


def rules(chain: str) -> list[str]:
    return subprocess.run(
        ["iptables", "-w", "10", "-S", chain], capture_output=True, text=True, check=True
    ).stdout.splitlines()


@pytest.fixture
def network_run(backend, invocation, docker_client):
    """A network: true function run once; its container is kept warm to be inspected."""
    provisioner = backend(pool_size=0, warm_idle_s=600.0)
    outcome = provisioner.run(invocation(QUICK, network=True))
    assert outcome.status == "succeeded", outcome.error
    return outcome, docker_client.api.inspect_container(outcome.container_id)


def test_a_network_function_joins_the_platforms_egress_network_not_the_default_bridge(
    network_run,
):
    outcome, attrs = network_run

    assert attrs["HostConfig"]["NetworkMode"] == NETWORK
    assert set(attrs["NetworkSettings"]["Networks"]) == {NETWORK}
    assert attrs["HostConfig"]["Sysctls"] == {"net.ipv6.conf.all.disable_ipv6": "1"}
    assert outcome.result == "1"  # no IPv6, so no link-local way round the IPv4 firewall


def test_the_egress_network_is_a_bridge_of_its_own_with_inter_container_traffic_off(
    network_run, docker_client
):
    network = docker_client.api.inspect_network(NETWORK)

    assert network["Driver"] == "bridge"
    assert network["Options"]["com.docker.network.bridge.enable_icc"] == "false"
    assert network["Options"]["com.docker.network.bridge.name"] == BRIDGE
    assert network["Labels"] == {"lambda-os": "1"}
    # Docker's own rule for ICC off: nothing from the bridge back onto it.
    assert any(
        rule.split()[:6] == ["-A", "FORWARD", "-i", BRIDGE, "-o", BRIDGE]
        and rule.endswith("-j DROP")
        for rule in rules("FORWARD")
    )


def test_iptables_drops_what_the_bridge_sends_to_the_host_and_every_non_public_address(
    network_run,
):
    docker_user = rules("DOCKER-USER")
    ours = rules(CHAIN)
    drops = {rule.split("-d ")[1].split()[0] for rule in ours if "-d " in rule and "DROP" in rule}

    # Our jump comes before Docker's RETURN, for packets from the bridge only.
    assert docker_user[1].startswith(f"-A DOCKER-USER -i {BRIDGE} ")
    assert docker_user[1].endswith(f"-j {CHAIN}")
    assert any(
        rule.startswith(f"-A INPUT -i {BRIDGE} ") and rule.endswith("-j DROP")
        for rule in rules("INPUT")
    )
    assert {
        "127.0.0.0/8",
        "169.254.0.0/16",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
    } <= drops
    assert any("--dst-type LOCAL" in rule and rule.endswith("-j DROP") for rule in ours)
    # Before those, the platform's own addresses: metadata, the broker, this host's.
    first = [r.split("-d ")[1].split()[0] for r in ours[1:] if "-d " in r and "-j DROP" in r]
    platform = {f"{a}/32" for a in [METADATA, "127.0.0.1", *host_addresses()]}
    assert platform <= set(first[: len(platform)])
    # Nothing is accepted here; only DNS to the host's resolvers goes on to Docker's rules.
    assert all(rule.endswith("-j DROP") or "--dport 53" in rule for rule in ours[1:])


def test_every_provisioner_ensures_the_rules_and_each_is_there_once(network_run, backend):
    backend(pool_size=0, warm_idle_s=0.0)
    backend(pool_size=0, warm_idle_s=0.0)

    jumps = [rule for rule in rules("DOCKER-USER") if rule.endswith(f"-j {CHAIN}")]
    inputs = [rule for rule in rules("INPUT") if f"-i {BRIDGE} " in rule]
    ours = rules(CHAIN)

    assert len(jumps) == len(inputs) == 1
    assert len(ours) == len(set(ours))


def test_without_iptables_a_network_function_is_refused_and_others_still_run(
    settings_for, docker_client, invocation
):
    from provisioner.docker import DockerProvisioner
    from provisioner.docker.host import DockerHost

    host = DockerHost(client=docker_client)
    egress = EgressNetwork(host, Iptables("/nonexistent/iptables"))
    provisioner = DockerProvisioner(
        settings_for(pool_size=0, warm_idle_s=0.0), host=host, egress=egress
    )
    try:
        with pytest.raises(PermanentError, match="refused.*iptables is not installed"):
            provisioner.run(invocation(QUICK, network=True))
        assert provisioner.run(invocation(QUICK)).status == "succeeded"
    finally:
        provisioner.close()


def test_an_engine_on_another_machine_refuses_network_functions(docker_client):
    from provisioner.docker.host import DockerHost

    egress = EgressNetwork(DockerHost(client=docker_client), Iptables(), engine_is_local=False)

    with pytest.raises(PermanentError, match="another machine"):
        egress.ensure()


def test_rules_removed_while_running_are_put_back_before_the_next_network_container_starts(
    backend, invocation
):
    provisioner = backend(pool_size=0, warm_idle_s=0.0)
    jump = ["-i", BRIDGE, "-m", "comment", "--comment", "lambda-os egress", "-j", CHAIN]
    subprocess.run(["iptables", "-w", "10", "-D", "DOCKER-USER", *jump], check=True)

    outcome = provisioner.run(invocation(QUICK, network=True))

    assert outcome.status == "succeeded"
    first = rules("DOCKER-USER")[1]
    assert first.startswith(f"-A DOCKER-USER -i {BRIDGE} ") and first.endswith(f"-j {CHAIN}")


def test_when_a_platform_address_cannot_be_read_network_functions_are_refused(docker_client):
    from provisioner.docker.host import DockerHost
    from provisioner.docker.platform_addresses import UnresolvedHost

    def unresolved() -> list[str]:
        raise UnresolvedHost("the platform host 'broker.example' does not resolve")

    egress = EgressNetwork(DockerHost(client=docker_client), Iptables(), platform=unresolved)

    with pytest.raises(PermanentError, match="refused.*'broker.example' does not resolve"):
        egress.ensure()

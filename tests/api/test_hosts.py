"""GET /v1/hosts lists the cluster's registry; ``lambda-os hosts`` prints it as a table."""

from __future__ import annotations

import yaml

from catalog_api.meta import OPENAPI_PATH
from lambda_os.hosts_cli import host_table
from lambda_os.records import HostBeat, HostRecord


def register(catalogue, host_id: str, server_id: str | None = None) -> None:
    catalogue.register_host(
        HostRecord(
            id=host_id,
            queue=f"lambda.events.host.{host_id}",
            server_id=server_id,
            memory_total_mb=4096,
            slots_total=8,
        )
    )


def test_without_hosts_the_list_is_empty(client):
    result = client.simulate_get("/v1/hosts")
    assert result.status_code == 200
    assert result.json == {"hosts": []}


def test_hosts_are_listed_by_id_with_state_capacity_warm_functions_and_last_heartbeat(
    client, catalogue
):
    register(catalogue, "compute-2")
    register(catalogue, "compute-1", server_id="5f0c1c8e-nova")
    catalogue.heartbeat_host("compute-1", HostBeat(3000, 6, 2, ("fn-a:3",)))
    catalogue.drain_host("compute-2")

    hosts = client.simulate_get("/v1/hosts").json["hosts"]

    assert [h["id"] for h in hosts] == ["compute-1", "compute-2"]
    first = hosts[0]
    assert first["server_id"] == "5f0c1c8e-nova"
    assert first["state"] == "active"
    assert (first["memory_total_mb"], first["free_memory_mb"]) == (4096, 3000)
    assert (first["slots_total"], first["free_slots"], first["running"]) == (8, 6, 2)
    assert first["warm"] == ["fn-a:3"]
    assert first["heartbeat_at"].endswith("Z")
    assert hosts[1]["state"] == "draining"


def test_every_field_the_api_gives_is_documented():
    document = yaml.safe_load(OPENAPI_PATH.read_text(encoding="utf-8"))
    documented = set(document["components"]["schemas"]["Host"]["properties"])
    given = set(HostRecord(id="h", queue="q").to_api())
    assert given == documented


def test_the_hosts_command_prints_one_line_per_host(client, catalogue):
    register(catalogue, "compute-1", server_id="nova-1")
    catalogue.heartbeat_host("compute-1", HostBeat(3000, 6, 2, ("fn-a:3", "fn-b:1")))

    table = host_table(client.simulate_get("/v1/hosts").json["hosts"]).splitlines()

    assert table[0].split() == [
        "id",
        "server_id",
        "state",
        "memory",
        "slots",
        "warm",
        "heartbeat_at",
    ]
    row = table[1].split()
    assert row[:4] == ["compute-1", "nova-1", "active", "3000/4096"]
    assert row[5:7] == ["6/8", "fn-a:3,fn-b:1"]


def test_scaling_decisions_are_listed_newest_first_with_their_reasons(client, catalogue):
    from lambda_os.records import ScalingEvent

    catalogue.add_scaling_event(ScalingEvent("", "boot", "memory 82% in use", host_id="h1"))
    catalogue.add_scaling_event(ScalingEvent("", "drain", "memory 12% in use", host_id="h0"))

    result = client.simulate_get("/v1/hosts/events", params={"limit": "1"})

    assert result.status_code == 200
    (event,) = result.json["events"]
    assert (event["action"], event["reason"], event["host_id"]) == (
        "drain",
        "memory 12% in use",
        "h0",
    )
    assert event["error"] is None and event["at"]


def test_without_a_controller_there_are_no_scaling_decisions(client):
    assert client.simulate_get("/v1/hosts/events").json == {"events": []}


def test_a_limit_out_of_range_is_refused_with_the_field(client):
    result = client.simulate_get("/v1/hosts/events", params={"limit": "0"})
    assert result.status_code == 422
    assert "limit" in result.text

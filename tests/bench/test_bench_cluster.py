"""``lambda-os bench --cases cluster`` runs the cluster case end to end at tiny counts.

Real RabbitMQ, the real Docker Engine, worker processes and a FerretDB of the
case's own. The figures are checked to be there and to add up, never against a
target: speed is measured by the bench and printed, not asserted in a test.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lambda_os.catalogue_server import find_binary
from lambda_os.cli import build_parser
from lambda_os.settings import load
from testing_service.bench import run_bench
from testing_service.bench.cluster import per_event_commands

TINY = [
    "--cases", "cluster",
    "--warmup", "2",
    "--cluster-latency-events", "5",
    "--cluster-events", "12",
    "--cluster-warm-events", "16",
    "--cluster-functions", "4",
    "--no-profile",
]  # fmt: skip


def test_commands_per_event_leave_out_the_benchs_own_status_reads() -> None:
    before = {"find": 10, "insert": 4, "serverStatus": 1}
    after = {"find": 30, "insert": 14, "serverStatus": 2, "hello": 4}

    assert per_event_commands(before, after, 10) == {
        "total": 3.4,
        "find": 2.0,
        "insert": 1.0,
        "hello": 0.4,
    }


@pytest.mark.integration
def test_the_cluster_case_reports_scaling_warm_hits_and_the_hop(
    tmp_path: Path, amqp_url: str, runtime_image: str, docker_client: object
) -> None:
    if find_binary() is None:
        pytest.skip("the FerretDB catalogue server is not built (run deploy/setup.sh)")
    out = tmp_path / "bench.json"
    prefix = runtime_image.rsplit(":", 1)[0]
    args = build_parser().parse_args(
        ["bench", "--out", str(out), *TINY, "--amqp-url", amqp_url,
         "--runtime-image-prefix", prefix]
    )  # fmt: skip

    code = run_bench(load(args, env={}), args)

    results = json.loads(out.read_text())
    case = results["cases"]["cluster"]
    assert "error" not in case, case.get("traceback")
    assert code == 0
    assert set(case["throughput"]) == {"1", "2", "4"}
    for workers, figures in case["throughput"].items():
        assert figures["events"] == 12
        assert figures["in_flight"] == int(workers) * case["slots_per_worker"]
        assert figures["events_per_s"] > 0
        assert figures["catalogue_commands_per_event"]["total"] > 0
        assert {"router", "workers", "catalogue"} <= set(figures["cpu_ms_per_event"])
    assert case["throughput_ratio"]["1"] == 1.0
    assert case["warm"]["events"] == 16
    assert case["warm"]["workers"] == 4
    assert 0 <= case["warm"]["warm_hit_rate"] <= 1
    assert case["standalone_latency"]["n"] == case["cluster_latency"]["n"] == 5
    assert case["hop_added_p50_ms"] == pytest.approx(
        case["cluster_latency"]["p50_ms"] - case["standalone_latency"]["p50_ms"], abs=0.01
    )
    cluster_targets = {
        t["target"]: t for t in results["targets"] if t["target"].startswith("cluster")
    }
    assert len(cluster_targets) == 3
    assert all(target["met"] is not None for target in cluster_targets.values())

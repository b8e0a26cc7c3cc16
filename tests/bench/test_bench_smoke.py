"""``lambda-os bench`` runs every case end to end with tiny counts and writes well-formed JSON.

No figure is checked against a target here: speed is measured by the bench and
printed, never asserted in a test.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lambda_os.cli import build_parser
from lambda_os.settings import load
from testing_service.bench import DEFAULT_CASES, run_bench
from testing_service.bench.cases import CASES
from testing_service.bench.stats import latency, percentile

TINY = [
    "--warmup", "3",
    "--latency-events", "5",
    "--floor-events", "10",
    "--throughput-events", "10",
    "--registered", "30",
    "--receiving", "3",
    "--cold-starts", "1",
    "--per-event", "1",
    "--celery-events", "5",
    "--memory-events", "20",
    "--embedded-executions-kept", "15",
    "--time-limit-s", "60",
    "--no-profile",
]  # fmt: skip


def test_percentiles_are_nearest_rank() -> None:
    samples = [float(n) for n in range(1, 101)]
    assert percentile(samples, 0.5) == 50.0
    assert percentile(samples, 0.99) == 99.0
    assert latency([]) == {"n": 0, "p50_ms": None, "p99_ms": None, "mean_ms": None}


def test_bench_flags_parse_with_the_settings_flags() -> None:
    args = build_parser().parse_args(["bench", "--cases", "floor", "--concurrency", "3"])
    assert args.cases == "floor"
    assert load(args, env={}).concurrency == 3


def test_the_default_run_is_every_case_but_those_that_start_servers_and_processes() -> None:
    assert set(DEFAULT_CASES.split(",")) == set(CASES) - {"cluster", "processes"}


@pytest.mark.integration
def test_bench_runs_every_case_and_writes_json(
    tmp_path: Path, amqp_url: str, runtime_image: str, docker_client: object
) -> None:
    out = tmp_path / "bench.json"
    prefix = runtime_image.rsplit(":", 1)[0]
    args = build_parser().parse_args(
        [
            "bench",
            "--out",
            str(out),
            *TINY,
            "--amqp-url",
            amqp_url,
            "--runtime-image-prefix",
            prefix,
        ]
    )
    settings = load(args, env={})

    code = run_bench(settings, args)

    results = json.loads(out.read_text())
    failures = {name: case["error"] for name, case in results["cases"].items() if "error" in case}
    assert failures == {}
    assert code == 0
    assert set(results["cases"]) == set(DEFAULT_CASES.split(","))
    assert results["cases"]["throughput1"]["events"] == 10
    assert results["cases"]["throughput1_noid"]["events"] == 10
    assert results["cases"]["standalone"]["events"] == 10
    assert results["cases"]["standalone"]["cpu_ms_per_event"]["standalone"] is not None
    assert results["cases"]["standalone"]["cpu_ms_per_event"]["broker"] is not None
    assert results["cases"]["warm"]["latency"]["n"] == 5
    assert {target["target"] for target in results["targets"]} >= {"warm latency p50"}
    default_targets = [t for t in results["targets"] if not t["target"].startswith("cluster")]
    assert all(target["met"] is not None for target in default_targets)
    assert set(results["ratios"]) == {"floor", "per_event", "celery"}

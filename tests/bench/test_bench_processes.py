"""``lambda-os bench --cases processes`` runs the listener-processes case end to end at tiny counts.

Real RabbitMQ, the real Docker Engine, ``lambda-os listener`` processes and a
FerretDB of the case's own. The figures are checked to be there and to add up,
never against a target: speed is measured by the bench and printed, not asserted.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lambda_os.catalogue_server import find_binary
from lambda_os.cli import build_parser
from lambda_os.settings import load
from testing_service.bench import run_bench
from testing_service.bench.processes import catalogue_share
from testing_service.bench.profiling import py_spy

TINY = [
    "--cases", "processes",
    "--warmup", "4",
    "--processes-events", "12",
    "--no-profile",
]  # fmt: skip


def test_the_catalogue_share_counts_samples_with_a_catalogue_or_driver_frame(
    tmp_path: Path,
) -> None:
    raw = tmp_path / "raw.txt"
    raw.write_text(
        "run (listener/service.py:1);find_matching (lambda_os/catalogue.py:9) 30\n"
        "run (listener/service.py:1);_send (/venv/pymongo/synchronous/pool.py:5) 10\n"
        "run (listener/service.py:1);encode (/venv/bson/__init__.py:2) 10\n"
        "run (listener/service.py:1);consume (listener/consume.py:3) 50\n"
    )

    share = catalogue_share(raw, events=10, listener_cpu_ms=4.0, rate_hz=100)

    assert share["samples"] == 100
    assert share["catalogue_samples"] == 50
    assert share["share"] == 0.5
    assert share["gil_ms_per_event"] == 100.0  # 100 samples at 100 Hz over 10 events
    assert share["catalogue_gil_ms_per_event"] == 50.0
    assert share["catalogue_cpu_ms_per_event"] == 2.0


@pytest.mark.integration
@pytest.mark.mongo
def test_the_processes_case_reports_one_and_two_listeners_and_the_catalogue_share(
    tmp_path: Path, amqp_url: str, runtime_image: str, docker_client: object
) -> None:
    if find_binary() is None:
        pytest.skip("the FerretDB catalogue server is not built (run deploy/setup.sh)")
    out = tmp_path / "bench.json"
    prefix = runtime_image.rsplit(":", 1)[0]
    args = build_parser().parse_args(
        ["bench", "--out", str(out), *TINY, "--amqp-url", amqp_url,
         "--runtime-image-prefix", prefix, "--profile-dir", str(tmp_path / "profile")]
    )  # fmt: skip

    code = run_bench(load(args, env={}), args)

    results = json.loads(out.read_text())
    case = results["cases"]["processes"]
    assert "error" not in case, case.get("traceback")
    assert code == 0
    assert set(case["listeners"]) == {"1", "2"}
    for count, figures in case["listeners"].items():
        assert figures["events"] == 12
        assert figures["events_per_s"] > 0
        assert len(figures["listener_cpu_s_each"]) == int(count)
        assert figures["catalogue_commands_per_event"]["total"] > 0
        assert {"listener", "catalogue", "broker", "load_driver"} <= set(
            figures["cpu_ms_per_event"]
        )
    assert case["two_over_one"] == pytest.approx(
        case["listeners"]["2"]["events_per_s"] / case["listeners"]["1"]["events_per_s"], abs=0.01
    )
    client = case["catalogue_client"]
    if py_spy() is None:
        assert client == {"skipped": "py-spy not found"}
    else:
        assert client["events"] == 12
        assert 0 < client["share"] <= 1
        assert client["catalogue_cpu_ms_per_event"] <= client["listener_cpu_ms_per_event"]
    assert not any(t["target"].startswith("processes") for t in results["targets"])

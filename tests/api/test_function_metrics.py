"""A function's metrics come from its execution records in the window asked for."""

from __future__ import annotations

from datetime import timedelta

import pytest

from lambda_os.catalogue import Catalogue
from lambda_os.metrics import function_metrics, percentile
from lambda_os.records import ExecutionRecord, execution_id_for, utcnow


def store(catalogue: Catalogue, function_id: str, n: int, **fields) -> None:
    event_id = f"ev-{n}"
    record = ExecutionRecord(
        execution_id_for(event_id, function_id), function_id, 1, event_id, **fields
    )
    catalogue.create_execution(record)


def test_the_figures_of_a_functions_runs(client, created, catalogue):
    fid = created["id"]
    now = utcnow()
    for n, ms in enumerate([10.0, 20.0, 30.0, 40.0]):
        store(
            catalogue, fid, n, status="succeeded", duration_ms=ms, cold_start=n == 0, created_at=now
        )
    store(
        catalogue,
        fid,
        10,
        status="timed_out",
        duration_ms=1000.0,
        cold_start=False,
        error={"type": "Timeout", "reason": "timeout"},
        created_at=now,
    )
    store(
        catalogue,
        fid,
        11,
        status="failed",
        duration_ms=5.0,
        cold_start=False,
        error={"type": "ZeroDivisionError", "message": "division by zero"},
        created_at=now,
    )
    store(
        catalogue, fid, 12, status="succeeded", duration_ms=1.0, created_at=now - timedelta(days=3)
    )  # outside the default day

    result = client.simulate_get(f"/v1/functions/{fid}/metrics")
    assert result.status_code == 200, result.text
    m = result.json
    assert m["executions"] == 6
    assert m["by_status"] == {"failed": 1, "succeeded": 4, "timed_out": 1}
    assert m["errors"] == {"timeout": 1, "ZeroDivisionError": 1}
    assert m["duration_ms"]["p50"] == 20.0
    assert m["duration_ms"]["max"] == 1000.0
    assert m["cold_starts"] == 1
    assert m["cold_start_rate"] == pytest.approx(1 / 6)
    assert m["per_day"] == [{"day": now.date().isoformat(), "executions": 6}]

    week = client.simulate_get(f"/v1/functions/{fid}/metrics?window_s=604800").json
    assert week["executions"] == 7
    assert len(week["per_day"]) == 2


def test_no_runs_yet_gives_zero_counts_and_no_percentiles(client, created):
    m = client.simulate_get(f"/v1/functions/{created['id']}/metrics").json
    assert m["executions"] == 0 and m["duration_ms"]["p99"] is None
    assert m["cold_start_rate"] is None


@pytest.mark.parametrize("query", ["window_s=0", "window_s=abc", "window_s=99999999", "x=1"])
def test_a_bad_window_is_a_422(client, created, query):
    assert client.simulate_get(f"/v1/functions/{created['id']}/metrics?{query}").status_code == 422


def test_an_unknown_function_is_a_404(client):
    assert client.simulate_get("/v1/functions/nope/metrics").status_code == 404


def test_percentiles_are_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert [percentile(values, p) for p in (50, 90, 99, 100)] == [50.0, 90.0, 99.0, 100.0]
    assert percentile([7.0], 99) == 7.0


def test_truncation_is_reported():
    assert function_metrics([], utcnow(), truncated=True)["truncated"] is True


def test_the_cpu_time_and_peak_memory_of_its_runs(client, created, catalogue):
    fid = created["id"]
    now = utcnow()
    for n, (cpu, peak) in enumerate([(2.0, 20.0), (4.0, 60.0), (30.0, 90.0)]):
        store(
            catalogue, fid, n, status="succeeded", cpu_ms=cpu, peak_memory_mb=peak, created_at=now
        )
    store(catalogue, fid, 9, status="failed", created_at=now)  # no figures: not counted

    m = client.simulate_get(f"/v1/functions/{fid}/metrics").json

    assert (m["cpu_ms"]["p50"], m["cpu_ms"]["max"], m["cpu_ms"]["total"]) == (4.0, 30.0, 36.0)
    assert (m["peak_memory_mb"]["p50"], m["peak_memory_mb"]["max"]) == (60.0, 90.0)

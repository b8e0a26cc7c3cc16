"""Runs on the real engine show in the process's Prometheus metrics, by function and outcome."""

from __future__ import annotations

import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lambda_os import prometheus
from provisioner.docker import DockerProvisioner
from provisioner.metered import MeteredProvisioner

pytestmark = pytest.mark.integration


def sample(name: str, **labels: str) -> float:
    body, _ = prometheus.exposition()
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


def test_each_run_is_counted_by_function_status_and_reason(settings_for, invocation):
    metered = MeteredProvisioner(DockerProvisioner(settings_for(warm_idle_s=600.0, pool_size=0)))
    try:
        # A source of its own: the counters are the process's, and ids are code hashes.
        tag = f"# {uuid.uuid4().hex}\n"
        ok = invocation(tag + "def handler(event, context):\n    return event\n", 1)
        bad = invocation(tag + "def handler(event, context):\n    return 1 / 0\n", 1)
        for _ in range(2):
            assert metered.run(ok).status == "succeeded"
        assert metered.run(bad).status == "failed"
    finally:
        metered.close()

    fn, broken = ok.function_id, bad.function_id
    assert sample("lambda_os_executions_total", function_id=fn, status="succeeded") == 2
    assert sample("lambda_os_executions_total", function_id=broken, status="failed") == 1
    assert sample("lambda_os_cold_starts_total", function_id=fn) == 1  # the second was warm
    assert sample("lambda_os_execution_duration_seconds_count", function_id=fn) == 2
    errors = sample("lambda_os_execution_errors_total", function_id=broken, reason="handler error")
    assert errors == 1
    assert sample("lambda_os_executions_running") == 0

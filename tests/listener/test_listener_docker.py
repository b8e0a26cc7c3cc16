"""End to end: events on the real RabbitMQ run real functions in real containers.

The listener with ``provisioner.docker.DockerProvisioner`` on the real Docker
Engine and the locally built runtime image; the catalogue is mongomock.
"""

from __future__ import annotations

import textwrap

import pytest
from listener_helpers import add_function, running, wait_for

from listener.events import encode_event
from listener.service import Backoff, Listener

pytestmark = pytest.mark.integration


def run_event(settings, catalogue, provisioner, broker, source: str, data=None, **fields):
    function = add_function(catalogue, "fn", source=textwrap.dedent(source).encode(), **fields)
    listener = Listener(settings, catalogue, provisioner, backoff=Backoff(0.1, 0.5))
    with running(listener):
        broker.publish(settings.events_queue, encode_event("orders", "created", data, id="e-1"))

        def stored():
            items = catalogue.list_executions({"function_id": function.id}, 10).items
            return items[0] if items and items[0].finished else None

        record = wait_for(stored, timeout_s=120, what="the execution record")
    assert broker.ready(settings.events_queue) == 0
    return record


def test_event_runs_a_real_function_in_a_container_and_the_record_holds_its_result(
    docker_settings, docker_provisioner, catalogue, broker
):
    source = """
    def handler(event, context):
        print("hello from the container")
        return {"greeting": "hello " + event["name"]}
    """
    record = run_event(
        docker_settings, catalogue, docker_provisioner, broker, source, {"name": "ada"}
    )
    assert record.status == "succeeded", record.error
    assert record.result == {"greeting": "hello ada"}
    assert "hello from the container" in record.logs
    assert record.event == {"name": "ada"} and record.event_id == "e-1"
    assert record.duration_ms is not None and record.host


def test_function_past_its_timeout_is_recorded_timed_out(
    docker_settings, docker_provisioner, catalogue, broker
):
    source = """
    import time
    def handler(event, context):
        time.sleep(60)
    """
    record = run_event(docker_settings, catalogue, docker_provisioner, broker, source, timeout_s=1)
    assert record.status == "timed_out"
    assert record.error["reason"] == "timeout"


def test_function_that_crashes_its_runtime_is_recorded_failed_crashed(
    docker_settings, docker_provisioner, catalogue, broker
):
    source = """
    import os
    def handler(event, context):
        os._exit(3)
    """
    record = run_event(docker_settings, catalogue, docker_provisioner, broker, source)
    assert record.status == "failed"
    assert record.error["reason"] == "crashed"


def test_function_past_its_memory_is_recorded_failed_out_of_memory(
    docker_settings, docker_provisioner, catalogue, broker
):
    source = """
    def handler(event, context):
        hog = b"x" * (512 * 1024 * 1024)
        return len(hog)
    """
    record = run_event(docker_settings, catalogue, docker_provisioner, broker, source, memory_mb=64)
    assert record.status == "failed"
    assert record.error["reason"] == "out of memory"


def test_lambda_os_send_prints_the_outcome_of_every_function_the_event_runs(
    docker_settings, docker_provisioner, catalogue, capsys
):
    import json

    from lambda_os import cli

    for name, greeting in (("en", "hello"), ("fr", "bonjour")):
        add_function(
            catalogue,
            name,
            source=f"def handler(event, context):\n    return '{greeting} ' + event['name']\n".encode(),
        )
    listener = Listener(docker_settings, catalogue, docker_provisioner, backoff=Backoff(0.1, 0.5))
    with running(listener):
        code = cli.main(
            [
                "send",
                *("--source", "orders", "--type", "created", "--data", '{"name": "ada"}'),
                *("--wait", "60", "--amqp-url", docker_settings.amqp_url),
                *("--events-queue", docker_settings.events_queue),
            ]
        )
    out, err = capsys.readouterr()
    assert code == 0
    assert "2 execution(s) replied" in err
    decoder = json.JSONDecoder()
    replies, at = [], 0
    while (at := out.find("{", at)) != -1:
        reply, end = decoder.raw_decode(out, at)
        replies.append(reply)
        at = end
    assert sorted(r["result"] for r in replies) == ["bonjour ada", "hello ada"]
    assert {r["status"] for r in replies} == {"succeeded"}


def test_a_function_that_fails_its_first_attempt_is_retried_in_a_container_and_succeeds(
    docker_settings, docker_provisioner, catalogue, broker
):
    source = """
    def handler(event, context):
        if context.attempt == 1:
            raise RuntimeError("first attempt fails")
        return {"attempt": context.attempt}
    """
    record = run_event(
        docker_settings, catalogue, docker_provisioner, broker, source, max_retries=2
    )

    assert record.status == "succeeded", record.error
    assert (record.result, record.attempt) == ({"attempt": 2}, 2)
    (first,) = record.attempts
    assert first["status"] == "failed" and first["error"]["type"] == "RuntimeError"

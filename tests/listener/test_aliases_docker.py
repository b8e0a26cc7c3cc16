"""End to end: an event naming an alias runs the aliased version's code in a real container.

The listener on the real RabbitMQ with ``provisioner.docker.DockerProvisioner`` on
the real Docker Engine and the locally built runtime image; the catalogue is mongomock.
"""

from __future__ import annotations

import pytest
from listener_helpers import add_function, running, wait_for

from lambda_os.packages import inspect_package
from lambda_os.records import AliasRecord
from listener.events import encode_event
from listener.service import Backoff, Listener

pytestmark = pytest.mark.integration

V1 = b"def handler(event, context):\n    return {'code': 'v1', 'version': context.function_version}\n"
V2 = b"def handler(event, context):\n    return {'code': 'v2', 'version': context.function_version}\n"


def test_an_event_naming_an_alias_runs_the_old_code_it_points_to_and_one_without_the_latest(
    docker_settings, docker_provisioner, catalogue, broker
):
    function = add_function(catalogue, "canary", source=V1)
    catalogue.publish_version(function.id)
    catalogue.replace_code(function.id, V2, inspect_package(V2, "main.py", "main.handler"))
    catalogue.put_alias(AliasRecord("", function.id, "live", 1))
    # Matched by the same events, but with no alias: it runs only for the plain one.
    bystander = add_function(catalogue, "bystander", source=V2)
    listener = Listener(docker_settings, catalogue, docker_provisioner, backoff=Backoff(0.1, 0.5))

    with running(listener):
        queue = docker_settings.events_queue
        broker.publish(queue, encode_event("orders", "created", {}, id="e-live", alias="live"))
        broker.publish(queue, encode_event("orders", "created", {}, id="e-plain"))

        def finished():
            records = catalogue.list_executions({}, 10).items
            done = {(r.event_id, r.function_id): r for r in records if r.finished}
            return done if len(done) == 3 else None

        records = wait_for(finished, timeout_s=180, what="three finished executions")

    through_alias = records[("e-live", function.id)]
    latest = records[("e-plain", function.id)]
    assert through_alias.status == "succeeded", through_alias.error
    assert through_alias.result == {"code": "v1", "version": 1}
    assert (through_alias.function_version, through_alias.alias) == (1, "live")
    assert latest.result == {"code": "v2", "version": 2}
    assert (latest.function_version, latest.alias) == (2, None)
    assert ("e-live", bystander.id) not in records
    assert records[("e-plain", bystander.id)].status == "succeeded"
    assert broker.ready(docker_settings.events_queue) == 0

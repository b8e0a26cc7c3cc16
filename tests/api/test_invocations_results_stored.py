"""Whatever a function returns, a synchronous invocation ends with a final record, never a 500.

Real containers on the real Docker Engine, through the API's sync invocation and
the real invoker; the catalogue is mongomock, and also the MongoDB named by
the real server (marked ``mongo``: the session's FerretDB, or MONGO_URL), which refuses
keys and values mongomock accepts.
Each result reads back exactly as the function returned it, or the execution
failed and says why.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from api_helpers import TEST_HOST
from falcon.testing import TestClient

from catalog_api.app import create_app
from lambda_os.catalogue import Catalogue, connect
from lambda_os.packages import inspect_package
from lambda_os.settings import Settings
from lambda_os.storable import MAX_STORED_DEPTH, NOT_STORABLE
from listener.invoker import Invoker

pytestmark = pytest.mark.integration

# Sent with every invocation: the event data is stored through the same form as results.
HOSTILE_EVENT = {"$x.y": 2**70, "k\u0000": [[1]]}

SOURCE = rb'''
import sys
import struct


def nested_lists(depth):
    value = 1
    for _ in range(depth):
        value = [value]
    return value


def nested_dicts(depth):
    value = 1
    for _ in range(depth):
        value = {"a": value}
    return value


def send_raw_deep_reply(depth):
    """Write a reply frame ourselves, as a hostile function can: the host must not trust it."""
    frame = sys._getframe()
    while "channel" not in frame.f_locals:
        frame = frame.f_back
    deep = "[" * depth + "]" * depth
    body = ('{"type":"result","ok":true,"mark":false,"result":' + deep + "}").encode()
    frame.f_locals["channel"].sock.sendall(struct.pack(">I", len(body)) + body)


def handler(event, context):
    case = event["case"]
    if case == "hostile keys":
        return {"$where": 1, "a.b": 2, "x\u0000": 3, "%24where": {"$gt": [[1], {"c.d": None}]}}
    if case == "2**70":
        return 2**70
    if case == "5000 deep":
        return nested_lists(5000)
    if case == "past the stored depth":
        return nested_dicts(95)
    if case == "6 MB that fits":
        return [{"a": 1}] * 700_000
    if case == "6 MB too big as stored":
        return [{}] * 2_000_000
    if case == "lone surrogate":
        return {"text": "\ud800"}
    if case == "error with a lone surrogate":
        raise ValueError("\udfff")
    if case == "raw reply too deep":
        send_raw_deep_reply(100_000)
        return None
    raise ValueError(case)
'''


@pytest.fixture(params=["mongomock", pytest.param("mongodb", marks=pytest.mark.mongo)])
def catalogue(request) -> Iterator[Catalogue]:
    if request.param == "mongomock":
        yield connect(None, f"lambda_os_test_{uuid.uuid4().hex[:12]}")
        return
    yield request.getfixturevalue("real_catalogue")


@pytest.fixture
def provisioner(runtime_image: str, docker_client: Any) -> Iterator[Any]:
    from provisioner.docker import DockerProvisioner

    state_dir = tempfile.mkdtemp(prefix="los-", dir="/tmp")  # the socket path must fit
    settings = dataclasses.replace(
        Settings(),
        state_dir=state_dir,
        runtime_image_prefix=runtime_image.rsplit(":", 1)[0],
        concurrency=2,
        pool_size=0,
    )
    backend = DockerProvisioner(settings, client=docker_client)
    yield backend
    backend.close()
    shutil.rmtree(state_dir, ignore_errors=True)


class NoPublisher:
    def publish(self, body: bytes, **properties: Any) -> None:
        raise AssertionError("a synchronous invocation publishes nothing")


@pytest.fixture
def invoke(catalogue: Catalogue, provisioner: Any):
    """POST a sync invocation of the one function; the response and the stored execution."""
    info = inspect_package(SOURCE, "main.py", "main.handler")
    function = catalogue.create_function(
        {
            "name": f"results-{uuid.uuid4().hex[:8]}",
            "runtime": "python3.11",
            "event_source": "tests",
            "event_type": "results",
            "owner": "tests",
            "memory_mb": 512,
            "timeout_s": 60,
        },
        SOURCE,
        info,
    )
    invoker = Invoker(catalogue, provisioner, NoPublisher())
    client = TestClient(create_app(catalogue, Settings(allowed_hosts=TEST_HOST), invoker=invoker))

    def post(case: str) -> tuple[dict[str, Any], dict[str, Any]]:
        data = {"case": case, **HOSTILE_EVENT}
        answer = client.simulate_post(f"/v1/functions/{function.id}/invocations", json=data)
        assert answer.status_code == 200, answer.text[:500]
        execution = client.simulate_get(f"/v1/executions/{answer.json['id']}")
        assert execution.status_code == 200, execution.text[:500]
        assert execution.json["finished_at"] is not None
        assert answer.json["event"] == execution.json["event"] == data
        return answer.json, execution.json

    return post


@pytest.mark.parametrize(
    ("case", "result"),
    [
        (
            "hostile keys",
            {"$where": 1, "a.b": 2, "x\u0000": 3, "%24where": {"$gt": [[1], {"c.d": None}]}},
        ),
        ("2**70", 2**70),
        ("6 MB that fits", [{"a": 1}] * 700_000),
    ],
)
def test_result_the_server_would_refuse_as_is_succeeds_and_reads_back_exactly(invoke, case, result):
    answered, stored = invoke(case)

    assert answered["status"] == "succeeded", answered["error"]
    assert answered["result"] == result
    assert stored["status"] == "succeeded" and stored["result"] == result


@pytest.mark.parametrize(
    ("case", "reason", "message"),
    [
        ("5000 deep", "handler error", "maximum recursion depth"),
        ("past the stored depth", NOT_STORABLE, f"nested more than {MAX_STORED_DEPTH} levels"),
        ("6 MB too big as stored", NOT_STORABLE, "result is 25.6 MiB as stored, limit 15 MiB"),
        ("raw reply too deep", NOT_STORABLE, "nested too deeply for the host to decode"),
        ("lone surrogate", NOT_STORABLE, "the result is not storable: it holds text with a lone"),
        ("error with a lone surrogate", NOT_STORABLE, "the error is not storable: it holds text"),
    ],
)
def test_result_that_cannot_be_stored_fails_the_execution_saying_why(invoke, case, reason, message):
    answered, stored = invoke(case)

    for record in (answered, stored):
        assert record["status"] == "failed" and record["result"] is None
        assert record["error"]["reason"] == reason
        assert message in record["error"]["message"]

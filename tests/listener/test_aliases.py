"""Events and invocations through an alias: which version runs, and that it stays so. No network."""

from __future__ import annotations

import json

import pytest
from listener_helpers import FakeProvisioner, add_function

from lambda_os.catalogue import Catalogue
from lambda_os.errors import InvalidEvent
from lambda_os.packages import inspect_package
from lambda_os.records import AliasRecord, FunctionRecord, split_point
from listener.events import Event, encode_event, parse_event
from listener.execute import run_event
from listener.invoker import Invoker
from listener.match import match

V2_SOURCE = b"def handler(event, context):\n    return 'v2'\n"


def event(event_id: str = "e-1", **fields) -> Event:
    return Event(event_id, "orders", "created", {"n": 1}, **fields)


def two_versions(catalogue: Catalogue, name: str = "fn") -> tuple[FunctionRecord, FunctionRecord]:
    """A function whose versions 1 and 2 are published; version 2 is its current code."""
    v1 = add_function(catalogue, name)
    catalogue.publish_version(v1.id)
    v2 = catalogue.replace_code(
        v1.id, V2_SOURCE, inspect_package(V2_SOURCE, "main.py", "main.handler")
    )
    catalogue.publish_version(v1.id)
    return v1, v2


def point(catalogue: Catalogue, function_id: str, version: int, **split) -> None:
    catalogue.put_alias(AliasRecord("", function_id, "live", version, **split))


# -- the split --------------------------------------------------------------------


def test_the_split_is_the_same_for_every_delivery_of_an_event_to_a_function():
    alias = AliasRecord("a", "f", "live", 1, additional_version=2, additional_weight=0.5)

    chosen = [alias.version_for(f"event-{n}", "f") for n in range(200)]

    assert chosen == [alias.version_for(f"event-{n}", "f") for n in range(200)]
    assert set(chosen) == {1, 2}


@pytest.mark.parametrize("weight", [0.0, 0.1, 0.5, 0.9])
def test_the_split_sends_about_the_weight_of_many_events_to_the_additional_version(weight):
    alias = AliasRecord("a", "f", "live", 1, additional_version=2, additional_weight=weight)
    events = 20_000

    share = sum(alias.version_for(f"e{n}", "f") == 2 for n in range(events)) / events

    assert abs(share - weight) < 0.015


def test_the_split_of_one_event_is_drawn_apart_for_each_function():
    # Otherwise the same events would always take the canary of every function at once.
    agree = sum(
        (split_point(f"e{n}", "f") < 0.5) == (split_point(f"e{n}", "g") < 0.5) for n in range(4000)
    )
    assert 0.45 < agree / 4000 < 0.55


def test_an_alias_without_an_additional_version_always_runs_its_version():
    alias = AliasRecord("a", "f", "live", 7)
    assert {alias.version_for(f"e{n}", "f") for n in range(100)} == {7}


# -- the event contract -----------------------------------------------------------


def test_an_event_may_name_an_alias():
    parsed = parse_event(encode_event("orders", "created", None, id="e-1", alias="live"))
    assert parsed.alias == "live"
    assert parse_event(encode_event("orders", "created")).alias is None


@pytest.mark.parametrize("name", ["Live", "1", "12", "-live", "live_2", "a" * 65, ""])
def test_an_event_naming_something_no_alias_can_be_called_is_refused(name):
    body = json.dumps({"event_source": "s", "event_type": "t", "alias": name}).encode()
    with pytest.raises(InvalidEvent, match="alias"):
        parse_event(body)


# -- which version runs -------------------------------------------------------------


def test_an_event_naming_an_alias_runs_the_aliased_version_of_each_function_that_has_it(
    catalogue,
):
    v1, _v2 = two_versions(catalogue, "aliased")
    other = add_function(catalogue, "no-alias")
    point(catalogue, v1.id, 1)

    matched = match(catalogue, event(alias="live"))

    assert [(f.id, f.version) for f in matched] == [(v1.id, 1)]
    assert {f.id for f in match(catalogue, event())} == {v1.id, other.id}
    assert match(catalogue, event(alias="staging")) == []


def test_the_execution_records_the_alias_and_the_version_that_ran(catalogue):
    v1, v2 = two_versions(catalogue)
    point(catalogue, v1.id, 1)
    provisioner = FakeProvisioner()

    (aliased,) = run_event(catalogue, provisioner, event("e-alias", alias="live"))
    (latest,) = run_event(catalogue, provisioner, event("e-plain"))

    assert (aliased.record.function_version, aliased.record.alias) == (1, "live")
    assert (latest.record.function_version, latest.record.alias) == (2, None)
    assert [run.code_sha256 for run in provisioner.runs] == [v1.code_sha256, v2.code_sha256]
    assert aliased.record.to_api()["alias"] == "live"


def test_a_redelivered_event_through_a_weighted_alias_finds_the_run_it_had(catalogue):
    v1, _v2 = two_versions(catalogue)
    point(catalogue, v1.id, 2, additional_version=1, additional_weight=0.5)
    provisioner = FakeProvisioner()
    first = [run_event(catalogue, provisioner, event(f"e{n}", alias="live"))[0] for n in range(40)]

    again = [run_event(catalogue, provisioner, event(f"e{n}", alias="live"))[0] for n in range(40)]

    assert len(provisioner.runs) == 40
    assert [s.record.id for s in again] == [s.record.id for s in first]
    assert [s.record.function_version for s in again] == [s.record.function_version for s in first]
    assert {s.record.function_version for s in first} == {1, 2}


def test_a_retry_of_a_run_through_an_alias_runs_the_version_it_began_with(catalogue):
    v1, _v2 = two_versions(catalogue)
    point(catalogue, v1.id, 1)
    failing = FakeProvisioner(status="failed")
    (first,) = run_event(catalogue, failing, event(alias="live"), retry_delay_s=float)
    assert first.retry and first.record.attempt == 2

    # The retry message is addressed to the function, without the alias.
    retry = event(function_id=v1.id, attempt=2)
    (second,) = run_event(catalogue, FakeProvisioner(), retry, retry_delay_s=float)

    assert (second.record.status, second.record.function_version) == ("succeeded", 1)
    assert second.record.alias == "live"


def test_an_invocation_through_an_alias_records_it(catalogue):
    v1, _v2 = two_versions(catalogue)
    provisioner = FakeProvisioner()
    invoker = Invoker(catalogue, provisioner, publisher=None)

    record = invoker.invoke(catalogue.get_function_version(v1.id, 1), {"n": 1}, alias="live")

    assert (record.status, record.function_version, record.alias) == ("succeeded", 1, "live")
    assert provisioner.runs[0].code_sha256 == v1.code_sha256

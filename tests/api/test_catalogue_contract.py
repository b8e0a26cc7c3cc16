"""The catalogue's behaviour, the same on mongomock and on a real MongoDB.

Every test runs against both backends: mongomock, and a real MongoDB-wire server
(marked ``mongo``): the MongoDB named by ``MONGO_URL`` when it is set, else the
FerretDB server the test session starts. The real suite uses a database of its
own and drops it afterwards.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from api_helpers import HELLO, HELLO_V2, make_zip

from lambda_os.catalogue import Catalogue, connect, iter_all
from lambda_os.errors import Conflict, NotFound
from lambda_os.packages import inspect_package
from lambda_os.records import ExecutionRecord, execution_id_for


@pytest.fixture(params=["mongomock", pytest.param("mongodb", marks=pytest.mark.mongo)])
def store(request) -> Iterator[Catalogue]:
    if request.param == "mongomock":
        yield connect(None, f"lambda_os_test_{uuid.uuid4().hex[:12]}")
        return
    yield request.getfixturevalue("real_catalogue")


def config(**overrides):
    return {
        "name": "hello",
        "runtime": "python3.11",
        "event_source": "demo",
        "event_type": "greeting",
        "owner": "default",
        **overrides,
    }


def create(store: Catalogue, code: bytes = HELLO, handler: str = "main.handler", **overrides):
    info = inspect_package(code, "hello.py" if code[:2] != b"PK" else "f.zip", handler)
    return store.create_function(config(handler=handler, **overrides), code, info)


def execution(function_id: str = "f1", event_id: str = "ev1", **fields) -> ExecutionRecord:
    return ExecutionRecord(
        id=execution_id_for(event_id, function_id),
        function_id=function_id,
        function_version=1,
        event_id=event_id,
        **fields,
    )


def test_created_function_reads_back_the_same(store):
    record = create(store, environment={"A": "1"}, memory_mb=256)

    stored = store.get_function(record.id)

    assert stored.to_api() == record.to_api()
    assert stored.version == 1 and stored.environment == {"A": "1"}
    assert stored.created_at is not None and stored.created_at == stored.updated_at


def test_name_is_unique_per_owner(store):
    create(store)

    with pytest.raises(Conflict):
        create(store)
    other_owner = create(store, owner="someone-else")
    assert other_owner.name == "hello"


def test_failed_duplicate_keeps_the_first_function_and_its_code(store):
    first = create(store)

    with pytest.raises(Conflict):
        create(store, code=HELLO_V2)

    assert store.get_package(store.get_function(first.id)).data == HELLO


def test_package_reads_back_byte_for_byte_with_its_kind(store):
    package = make_zip({"main.py": HELLO, "lib/x.py": b"X = 1\n"})
    py = create(store)
    zipped = create(store, code=package, name="zipped")

    assert store.get_package(py).data == HELLO
    assert store.get_package(py).content_type == "text/x-python"
    assert store.get_package(py).filename == "main.py"
    assert store.get_package(zipped).data == package
    assert store.get_package(zipped).kind == "zip"


def test_list_filters_and_pages_in_id_order(store):
    for index in range(5):
        create(store, name=f"f{index}", event_type="even" if index % 2 == 0 else "odd")

    first = store.list_functions({"event_type": "even"}, limit=2)
    second = store.list_functions({"event_type": "even"}, limit=2, marker=first.marker)

    assert len(first.items) == 2 and first.marker == first.items[-1].id
    assert len(second.items) == 1 and second.marker is None
    names = sorted(f.name for f in first.items + second.items)
    assert names == ["f0", "f2", "f4"]
    ids = [f.id for f in iter_all(lambda m: store.list_functions({}, 2, m))]
    assert ids == sorted(ids) and len(ids) == 5


def test_find_matching_returns_every_function_for_the_pair_and_only_those(store):
    a = create(store, name="a")
    b = create(store, name="b")
    create(store, name="c", event_type="farewell")

    matched = store.find_matching("demo", "greeting")

    assert sorted(f.id for f in matched) == sorted([a.id, b.id])
    assert store.find_matching("demo", "nothing") == []


def test_update_changes_configuration_and_updated_at(store):
    record = create(store)

    changed = store.update_function(record.id, {"memory_mb": 512, "description": "d"})

    assert changed.memory_mb == 512 and changed.description == "d"
    assert changed.version == 1
    assert changed.updated_at >= record.updated_at
    assert store.get_function(record.id).to_api() == changed.to_api()


def test_update_rename_onto_a_taken_name_is_a_conflict_and_changes_nothing(store):
    create(store, name="taken")
    record = create(store, name="mine")

    with pytest.raises(Conflict):
        store.update_function(record.id, {"name": "taken"})

    assert store.get_function(record.id).name == "mine"


def test_unknown_function_is_not_found_everywhere(store):
    with pytest.raises(NotFound):
        store.get_function("nope")
    with pytest.raises(NotFound):
        store.update_function("nope", {"memory_mb": 256})
    with pytest.raises(NotFound):
        store.delete_function("nope")
    with pytest.raises(NotFound):
        store.replace_code("nope", HELLO, inspect_package(HELLO, "", "main.handler"))


def test_replace_code_makes_the_next_version_and_drops_the_old_package(store):
    record = create(store)

    replaced = store.replace_code(
        record.id, HELLO_V2, inspect_package(HELLO_V2, "", "main.other"), handler="main.other"
    )

    assert replaced.version == 2 and replaced.handler == "main.other"
    assert store.get_package(replaced).data == HELLO_V2
    with pytest.raises(NotFound):
        store.get_package(record)


def test_delete_removes_the_function_and_its_package(store):
    record = create(store)

    store.delete_function(record.id)

    with pytest.raises(NotFound):
        store.get_function(record.id)
    with pytest.raises(NotFound):
        store.get_package(record)
    assert store.find_matching("demo", "greeting") == []


def test_claiming_an_execution_twice_for_one_event_and_function_returns_the_first(store):
    first, created = store.claim_execution(execution(status="running"))
    again, created_again = store.claim_execution(execution(status="queued"))
    other, created_other = store.claim_execution(execution(function_id="f2"))

    assert created and not created_again and created_other
    assert again.id == first.id and again.status == "running"
    assert other.id != first.id
    assert first.created_at is not None


def test_starting_a_new_execution_stores_it_running_under_the_lease_in_one_write(store):
    now = datetime.now(UTC).replace(microsecond=0)
    until = now + timedelta(seconds=90)

    started, created = store.start_execution(execution(), "listener-a", now, until)
    again, created_again = store.start_execution(execution(), "listener-b", now, until)

    assert created and not created_again
    stored = store.get_execution(started.id)
    assert (stored.status, stored.leased_by, stored.lease_until) == ("running", "listener-a", until)
    assert stored.started_at == now and stored.created_at == now
    assert again == stored  # the second caller gets the record as stored, not a lease


def test_an_outcome_is_stored_only_under_the_lease_that_ran_it(store):
    now = datetime.now(UTC).replace(microsecond=0)
    started, _ = store.start_execution(execution(), "listener-a", now, now + timedelta(seconds=1))
    # listener-a stalls past its lease; listener-b takes the run over.
    later = now + timedelta(seconds=2)
    store.acquire_execution(started.id, "listener-b", later, later + timedelta(seconds=90))

    assert not store.finish_execution(started.id, "listener-a", {"status": "failed"})
    assert store.get_execution(started.id).status == "running"
    assert store.finish_execution(started.id, "listener-b", {"status": "succeeded", "result": 7})
    done = store.get_execution(started.id)
    assert (done.status, done.result, done.leased_by, done.lease_until) == (
        "succeeded",
        7,
        None,
        None,
    )
    assert not store.finish_execution(started.id, "listener-b", {"status": "failed"})


def test_an_execution_id_is_derived_from_its_event_and_function(store):
    record = execution()
    with pytest.raises(ValueError, match="execution_id_for"):
        store.claim_execution(dataclasses.replace(record, id="chosen-by-caller"))
    assert execution_id_for("ev1", "f1") == record.id != execution_id_for("ev1", "f2")


def test_execution_updates_read_back_and_list_by_function_and_status(store):
    first, _ = store.claim_execution(execution())
    second, _ = store.claim_execution(execution(event_id="ev2"))
    store.claim_execution(execution(function_id="f2"))

    done = store.update_execution(second.id, {"status": "succeeded", "result": {"ok": True}})

    assert done.status == "succeeded" and done.result == {"ok": True}
    assert store.get_execution(second.id).to_api() == done.to_api()
    listed = store.list_executions({"function_id": "f1", "status": "succeeded"}, limit=10)
    assert [item.id for item in listed.items] == [second.id]
    page = store.list_executions({"function_id": "f1"}, 1).items
    assert [item.id for item in page] == [min(first.id, second.id)]
    with pytest.raises(NotFound):
        store.update_execution("nope", {"status": "failed"})


def test_matching_sees_every_function_change_at_once(store):
    first = create(store, name="first")
    assert [f.id for f in store.find_matching("demo", "greeting")] == [first.id]
    second = create(store, name="second")
    assert {f.id for f in store.find_matching("demo", "greeting")} == {first.id, second.id}
    store.update_function(first.id, {"event_type": "farewell"})
    assert [f.id for f in store.find_matching("demo", "greeting")] == [second.id]
    assert [f.id for f in store.find_matching("demo", "farewell")] == [first.id]
    changed = store.replace_code(second.id, HELLO_V2, inspect_package(HELLO_V2, "", "main.handler"))
    assert [f.version for f in store.find_matching("demo", "greeting")] == [changed.version]
    store.delete_function(second.id)
    assert store.find_matching("demo", "greeting") == []


def test_health_reports_ok_with_the_function_count(store):
    create(store)

    assert store.health() == {"status": "ok", "functions": 1}

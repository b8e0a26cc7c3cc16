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

import pymongo
import pytest
from api_helpers import HELLO, HELLO_V2, make_zip

from lambda_os.catalogue import Catalogue, connect, iter_all
from lambda_os.errors import Conflict, NotFound, PermanentError, TransientError
from lambda_os.packages import inspect_package
from lambda_os.records import DeadLetterRecord, ExecutionRecord, Lease, execution_id_for


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


def test_replace_code_makes_the_next_version_and_keeps_the_old_one_while_it_is_in_use(store):
    record = create(store)
    now = datetime.now(UTC)
    matched_before_the_deploy, _ = store.create_execution(execution(function_id=record.id))

    replaced = store.replace_code(
        record.id, HELLO_V2, inspect_package(HELLO_V2, "", "main.other"), handler="main.other"
    )

    assert replaced.version == 2 and replaced.handler == "main.other"
    assert store.get_package(replaced).data == HELLO_V2
    old = store.get_function_version(record.id, 1)
    assert (old.version, old.handler, store.get_package(old).data) == (1, "main.handler", HELLO)
    assert store.get_function_version(record.id, 2) == replaced
    # In use by a queued execution: kept, however old.
    assert store.prune_retired_versions(now + timedelta(days=1)) == 0
    assert store.get_package(record).data == HELLO
    store.fail_queued_execution(matched_before_the_deploy.id, 1, {"reason": "test"})
    assert store.prune_retired_versions(now - timedelta(days=1)) == 0  # retired too recently
    assert store.prune_retired_versions(now + timedelta(days=1)) == 1
    with pytest.raises(NotFound):
        store.get_package(record)
    with pytest.raises(NotFound, match="no longer kept"):
        store.get_function_version(record.id, 1)


def test_delete_removes_the_function_every_package_and_its_queued_work(store):
    record = create(store)
    v2 = store.replace_code(record.id, HELLO_V2, inspect_package(HELLO_V2, "", "main.handler"))
    queued, _ = store.create_execution(execution(function_id=record.id))

    store.delete_function(record.id)

    with pytest.raises(NotFound):
        store.get_function(record.id)
    for version in (record, v2):
        with pytest.raises(NotFound):
            store.get_package(version)
    assert store.find_matching("demo", "greeting") == []
    cancelled = store.get_execution(queued.id)
    assert (cancelled.status, cancelled.error["reason"]) == ("failed", "function deleted")


def test_claiming_an_execution_twice_for_one_event_and_function_returns_the_first(store):
    first, created = store.create_execution(execution(status="running"))
    again, created_again = store.create_execution(execution(status="queued"))
    other, created_other = store.create_execution(execution(function_id="f2"))

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


def taken_over(store, now):
    """listener-a starts a run whose lease lapses; listener-b takes it over as attempt 2."""
    started, _ = store.start_execution(execution(), "listener-a", now, now + timedelta(seconds=1))
    stale = Lease.of(started)
    later = now + timedelta(seconds=2)
    newer = store.acquire_execution(started.id, "listener-b", later, later + timedelta(seconds=90))
    return stale, newer


def test_an_outcome_is_stored_only_under_the_lease_that_ran_it(store):
    now = datetime.now(UTC).replace(microsecond=0)
    stale, newer = taken_over(store, now)
    assert (newer.status, newer.leased_by, newer.attempt) == ("running", "listener-b", 2)

    assert not store.finish_execution(stale, {"status": "failed"})
    assert store.get_execution(newer.id).status == "running"
    assert store.finish_execution(Lease.of(newer), {"status": "succeeded", "result": 7})
    done = store.get_execution(newer.id)
    assert (done.status, done.result, done.leased_by, done.lease_until) == (
        "succeeded",
        7,
        None,
        None,
    )
    assert not store.finish_execution(Lease.of(newer), {"status": "failed"})


def test_a_stale_owner_can_neither_retry_release_nor_renew_the_newer_run(store):
    now = datetime.now(UTC).replace(microsecond=0)
    stale, newer = taken_over(store, now)

    assert store.retry_execution(stale, {"retry_at": now}, {"attempt": 1}) is None
    assert not store.release_execution(stale)
    assert store.renew_lease(stale, now + timedelta(hours=1)) is None

    current = store.get_execution(newer.id)
    assert (current.status, current.leased_by, current.attempt) == ("running", "listener-b", 2)
    assert current.lease_until == newer.lease_until
    assert store.finish_execution(Lease.of(newer), {"status": "succeeded"})


def test_the_same_holder_name_with_an_older_attempt_is_fenced_out(store):
    now = datetime.now(UTC).replace(microsecond=0)
    started, _ = store.start_execution(execution(), "listener-a", now, now + timedelta(seconds=1))
    old = Lease.of(started)
    later = now + timedelta(seconds=2)
    again = store.acquire_execution(started.id, "listener-a", later, later + timedelta(seconds=90))

    assert again.attempt == 2
    assert not store.finish_execution(old, {"status": "failed"})
    assert store.finish_execution(Lease.of(again), {"status": "succeeded"})


def test_a_retry_queues_the_next_attempt_and_keeps_the_failed_run(store):
    now = datetime.now(UTC).replace(microsecond=0)
    started, _ = store.start_execution(execution(), "listener-a", now, now + timedelta(seconds=90))

    queued = store.retry_execution(
        Lease.of(started), {"retry_at": now, "error": {"reason": "timeout"}}, {"attempt": 1}
    )

    assert (queued.status, queued.attempt, queued.leased_by) == ("queued", 2, None)
    assert queued.attempts == [{"attempt": 1}] and queued.retry_at == now
    assert store.get_execution(started.id).to_api() == queued.to_api()


def test_a_released_run_is_queued_again_at_the_same_attempt(store):
    now = datetime.now(UTC).replace(microsecond=0)
    started, _ = store.start_execution(execution(), "listener-a", now, now + timedelta(seconds=90))

    assert store.release_execution(Lease.of(started))

    current = store.get_execution(started.id)
    assert (current.status, current.attempt, current.started_at) == ("queued", 1, None)
    assert store.acquire_execution(started.id, "listener-b", now, now) is not None


def test_a_renewed_lease_extends_the_run_and_fences_the_same(store):
    now = datetime.now(UTC).replace(microsecond=0)
    started, _ = store.start_execution(execution(), "listener-a", now, now + timedelta(seconds=1))

    renewed = store.renew_lease(Lease.of(started), now + timedelta(seconds=90))

    assert renewed.until == store.get_execution(started.id).lease_until
    later = now + timedelta(seconds=2)  # past the first lease, within the renewed one
    assert store.acquire_execution(started.id, "listener-b", later, later) is None
    assert store.finish_execution(renewed, {"status": "succeeded"})


def test_only_a_queued_attempt_can_be_failed_as_never_run(store):
    now = datetime.now(UTC).replace(microsecond=0)
    queued, _ = store.create_execution(execution())
    running, _ = store.start_execution(execution(event_id="ev2"), "a", now, now)
    error = {"type": "TransientError", "message": "broker down", "reason": "not queued"}

    assert store.fail_queued_execution(queued.id, 2, error) is None  # not that attempt
    failed = store.fail_queued_execution(queued.id, 1, error)
    assert store.fail_queued_execution(running.id, 1, error) is None

    assert (failed.status, failed.error, failed.finished_at is not None) == ("failed", error, True)
    assert store.get_execution(running.id).status == "running"


def test_a_deleted_functions_queued_executions_fail_and_running_ones_go_on(store):
    now = datetime.now(UTC).replace(microsecond=0)
    store.create_execution(execution())
    store.create_execution(execution(event_id="ev2"))
    store.start_execution(execution(event_id="ev3"), "a", now, now)
    store.create_execution(execution(function_id="other"))
    error = {"type": "NotFound", "message": "deleted", "reason": "function deleted"}

    assert store.fail_queued_executions_of("f1", error) == 2

    statuses = {
        r.event_id: r.status for r in store.list_executions({"function_id": "f1"}, 10).items
    }
    assert statuses == {"ev1": "failed", "ev2": "failed", "ev3": "running"}
    assert store.list_executions({"function_id": "other"}, 10).items[0].status == "queued"


def test_an_execution_is_dead_lettered_once(store):
    now = datetime.now(UTC).replace(microsecond=0)
    started, _ = store.start_execution(execution(), "a", now, now + timedelta(seconds=90))
    letter = DeadLetterRecord(id="", kind="retries exhausted", reason="r", queue="q")

    assert store.dead_letter_execution(started.id, letter) is None  # not final yet
    store.finish_execution(Lease.of(started), {"status": "failed"})
    first = store.dead_letter_execution(started.id, letter)
    second = store.dead_letter_execution(started.id, letter)

    assert first is not None and second is None
    assert store.get_execution(started.id).dead_letter_id == first.id
    assert [d.id for d in store.list_dead_letters({}, 10).items] == [first.id]


def test_the_sweeper_finds_lapsed_leases_and_long_queued_records_and_marks_each_once(store):
    now = datetime.now(UTC).replace(microsecond=0)
    hour_ago = now - timedelta(hours=1)
    lapsed, _ = store.start_execution(execution(), "a", hour_ago, hour_ago)
    live, _ = store.start_execution(execution(event_id="ev2"), "b", now, now + timedelta(hours=1))
    waiting, _ = store.create_execution(execution(event_id="ev3", created_at=hour_ago))
    fresh, _ = store.create_execution(execution(event_id="ev4", created_at=now))

    found = store.stranded_executions(now, queued_before=now - timedelta(minutes=5))

    assert {r.id for r in found} == {lapsed.id, waiting.id}
    by_id = {r.id: r for r in found}
    assert store.mark_swept(by_id[waiting.id], now)
    assert not store.mark_swept(by_id[waiting.id], now)  # a second sweeper sends nothing
    assert {r.id for r in store.stranded_executions(now, now - timedelta(minutes=5))} == {lapsed.id}
    assert store.get_execution(live.id).status == "running"
    assert store.get_execution(fresh.id).status == "queued"


def test_an_execution_id_is_derived_from_its_event_and_function(store):
    record = execution()
    with pytest.raises(ValueError, match="execution_id_for"):
        store.create_execution(dataclasses.replace(record, id="chosen-by-caller"))
    assert execution_id_for("ev1", "f1") == record.id != execution_id_for("ev1", "f2")


def test_executions_read_back_and_list_by_function_and_status(store):
    now = datetime.now(UTC).replace(microsecond=0)
    first, _ = store.create_execution(execution())
    second, _ = store.start_execution(execution(event_id="ev2"), "a", now, now)
    store.create_execution(execution(function_id="f2"))

    store.finish_execution(Lease.of(second), {"status": "succeeded", "result": {"ok": True}})

    done = store.get_execution(second.id)
    assert done.status == "succeeded" and done.result == {"ok": True}
    listed = store.list_executions({"function_id": "f1", "status": "succeeded"}, limit=10)
    assert [item.id for item in listed.items] == [second.id]
    page = store.list_executions({"function_id": "f1"}, 1).items
    assert [item.id for item in page] == [min(first.id, second.id)]
    with pytest.raises(NotFound):
        store.get_execution("nope")


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

    assert store.health() == {"status": "ok", "functions": 1, "catalogue": store.kind}


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (pymongo.errors.OperationFailure("[db.go:134] context canceled", 1), TransientError),
        (pymongo.errors.OperationFailure("interrupted at shutdown", 11600), TransientError),
        (pymongo.errors.OperationFailure("UNIQUE constraint failed: index 'x'", 1), Conflict),
        (pymongo.errors.OperationFailure("unknown operator: $foo", 2), PermanentError),
    ],
)
def test_server_errors_become_ours_at_the_seam(store, error, expected):
    """What a server says on shutdown is transient; FerretDB's unique violation a conflict."""

    class Failing:
        def find_one_and_update(self, *args, **kwargs):
            raise error

    store._functions = Failing()
    with pytest.raises(expected):
        store.update_function("f", {"memory_mb": 256})


def test_work_put_back_on_the_queue_is_not_swept_again_until_it_has_waited(store):
    now = datetime.now(UTC).replace(microsecond=0)
    hour_ago = now - timedelta(hours=1)
    started, _ = store.start_execution(
        execution(created_at=hour_ago), "a", hour_ago, now + timedelta(hours=1)
    )
    store.release_execution(Lease.of(started))  # the engine was down: its message is requeued

    assert store.stranded_executions(now, queued_before=now - timedelta(minutes=5)) == []
    later = now + timedelta(minutes=10)
    assert [r.id for r in store.stranded_executions(later, later - timedelta(minutes=5))] == [
        started.id
    ]
    # Taking the lease does not reset when it was last put back.
    leased = store.acquire_execution(started.id, "b", now, now + timedelta(hours=1))
    assert leased.requeued_at == store.get_execution(started.id).requeued_at is not None


@pytest.mark.mongo
def test_of_listeners_racing_to_take_one_lapsed_run_over_exactly_one_wins(mongo_url):
    """Per-document atomicity, which the fencing relies on, through separate connections."""
    import threading

    name = f"lambda_os_test_{uuid.uuid4().hex[:12]}"
    racers = [connect(mongo_url, name) for _ in range(6)]
    now = datetime.now(UTC).replace(microsecond=0)
    try:
        for round_ in range(10):
            record = execution(event_id=f"race-{round_}")
            lapsed = now - timedelta(minutes=1)
            racers[0].start_execution(record, "dead", now - timedelta(hours=1), lapsed)
            winners = []
            start = threading.Barrier(len(racers))

            def take_over(index, catalogue, execution_id=record.id, start=start, won=winners):
                start.wait()
                taken = catalogue.acquire_execution(
                    execution_id, f"listener-{index}", now, now + timedelta(hours=1)
                )
                if taken is not None:
                    won.append(taken.leased_by)

            threads = [
                threading.Thread(target=take_over, args=(i, c)) for i, c in enumerate(racers)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()

            stored = racers[0].get_execution(record.id)
            assert winners == [stored.leased_by] and stored.attempt == 2, (round_, winners)
    finally:
        import pymongo

        client = pymongo.MongoClient(mongo_url, serverSelectionTimeoutMS=5000)
        client.drop_database(name)
        client.close()


@pytest.mark.mongo
def test_a_sole_writer_on_a_real_server_answers_matches_from_memory_and_sees_its_own_changes(
    mongo_url,
):
    name = f"lambda_os_test_{uuid.uuid4().hex[:12]}"
    sole = connect(mongo_url, name, sole_writer=True)
    other = connect(mongo_url, name)
    try:
        first = create(sole, name="first")
        assert [f.id for f in sole.find_matching("demo", "greeting")] == [first.id]
        create(other, name="behind-its-back")  # what a sole writer is promised never happens
        assert [f.id for f in sole.find_matching("demo", "greeting")] == [first.id]
        second = create(sole, name="second")
        found = {f.id for f in sole.find_matching("demo", "greeting")}
        assert {first.id, second.id} <= found and len(found) == 3  # its own change cleared it
    finally:
        import pymongo

        client = pymongo.MongoClient(mongo_url, serverSelectionTimeoutMS=5000)
        client.drop_database(name)
        client.close()

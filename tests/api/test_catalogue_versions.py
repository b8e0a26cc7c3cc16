"""Published versions and aliases in the catalogue, the same on mongomock and on a real server.

As the contract suite (test_catalogue_contract.py) does, every test runs on
mongomock and on a real MongoDB-wire server (marked ``mongo``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from api_helpers import HELLO, HELLO_V2

from lambda_os.catalogue import Catalogue, connect
from lambda_os.errors import Conflict, NotFound
from lambda_os.packages import inspect_package
from lambda_os.records import AliasRecord, ExecutionRecord, execution_id_for


@pytest.fixture(params=["mongomock", pytest.param("mongodb", marks=pytest.mark.mongo)])
def store(request) -> Iterator[Catalogue]:
    if request.param == "mongomock":
        yield connect(None, f"lambda_os_test_{uuid.uuid4().hex[:12]}")
        return
    yield request.getfixturevalue("real_catalogue")


def create(store: Catalogue, name: str = "hello"):
    config = {
        "name": name,
        "runtime": "python3.11",
        "event_source": "demo",
        "event_type": "greeting",
        "owner": "default",
    }
    return store.create_function(config, HELLO, inspect_package(HELLO, "hello.py", "main.handler"))


def new_code(store: Catalogue, function_id: str):
    return store.replace_code(function_id, HELLO_V2, inspect_package(HELLO_V2, "", "main.handler"))


def alias(function_id: str, version: int, other: int | None = None, weight: float = 0.0):
    return AliasRecord("", function_id, "live", version, other, weight)


def queued_run(store: Catalogue, function_id: str, version: int) -> ExecutionRecord:
    record = ExecutionRecord(execution_id_for("ev", function_id), function_id, version, "ev")
    return store.create_execution(record)[0]


def test_publishing_keeps_the_current_revision_under_its_number_and_twice_is_once(store):
    function = create(store)

    published, created = store.publish_version(function.id, "first")
    again, created_again = store.publish_version(function.id, "ignored")

    assert (created, created_again) == (True, False)
    assert published.version == again.version == function.version == 1
    assert again.description == "first" and again.published_at == published.published_at
    api = published.to_api()
    assert (api["code_sha256"], api["configuration"]["memory_mb"]) == (function.code_sha256, 128)
    assert [v.version for v in store.list_published_versions(function.id)] == [1]


def test_changing_a_published_revision_makes_the_next_one_and_the_published_stays(store):
    function = create(store)
    store.publish_version(function.id)

    changed = store.update_function(function.id, {"memory_mb": 512})

    assert (changed.version, changed.memory_mb) == (2, 512)
    assert store.get_published_version(function.id, 1).function.memory_mb == 128
    assert store.get_function_version(function.id, 1).memory_mb == 128
    assert store.get_package(store.get_function_version(function.id, 1)).data == HELLO
    # An unpublished revision is a draft: it changes in place, as ever.
    assert store.update_function(function.id, {"memory_mb": 256}).version == 2


def test_a_change_that_changes_nothing_of_a_published_revision_makes_none(store):
    function = create(store)
    store.publish_version(function.id)

    assert store.update_function(function.id, {"memory_mb": 128}).version == 1


def test_a_published_version_outlives_pruning_until_it_is_deleted(store):
    function = create(store)
    store.publish_version(function.id)
    new_code(store, function.id)
    later = datetime.now(UTC) + timedelta(days=1)

    assert store.prune_retired_versions(later) == 0
    assert store.get_package(store.get_function_version(function.id, 1)).data == HELLO

    store.delete_published_version(function.id, 1)
    with pytest.raises(NotFound, match="not published"):
        store.get_published_version(function.id, 1)
    # Kept like a version just retired, for runs already on their way.
    assert store.get_function_version(function.id, 1).version == 1
    assert store.prune_retired_versions(datetime.now(UTC) - timedelta(minutes=5)) == 0
    assert store.prune_retired_versions(later) == 1
    with pytest.raises(NotFound, match="no longer kept"):
        store.get_function_version(function.id, 1)


def test_a_deleted_version_is_kept_while_a_queued_run_needs_it(store):
    function = create(store)
    store.publish_version(function.id)
    new_code(store, function.id)
    run = queued_run(store, function.id, 1)
    later = datetime.now(UTC) + timedelta(days=1)

    store.delete_published_version(function.id, 1)

    assert store.prune_retired_versions(later) == 0
    store.fail_queued_execution(run.id, 1, {"reason": "test"})
    assert store.prune_retired_versions(later) == 1


def test_pruning_a_revision_keeps_the_package_the_next_revision_shares(store):
    function = create(store)
    store.publish_version(function.id)
    current = store.update_function(function.id, {"timeout_s": 5})  # version 2, same package

    store.delete_published_version(function.id, 1)

    assert store.prune_retired_versions(datetime.now(UTC) + timedelta(days=1)) == 1
    assert store.get_package(store.get_function(function.id)).data == HELLO
    assert current.package_id == store.get_function(function.id).package_id


def test_an_alias_points_only_to_published_versions(store):
    function = create(store)

    with pytest.raises(Conflict, match="not published"):
        store.put_alias(alias(function.id, 1))
    store.publish_version(function.id)
    with pytest.raises(Conflict, match="version 2 of"):
        store.put_alias(alias(function.id, 1, other=2, weight=0.5))

    assert store.list_aliases(function.id) == []


def test_an_alias_is_made_then_replaced_keeping_when_it_was_made(store):
    function = create(store)
    store.publish_version(function.id)
    new_code(store, function.id)
    store.publish_version(function.id)

    made, created = store.put_alias(alias(function.id, 1))
    moved, created_again = store.put_alias(alias(function.id, 2, other=1, weight=0.25))

    assert (created, created_again) == (True, False)
    assert moved.created_at == made.created_at and moved.updated_at >= made.updated_at
    stored = store.get_alias(function.id, "live")
    assert (stored.version, stored.additional_version, stored.additional_weight) == (2, 1, 0.25)
    store.delete_alias(function.id, "live")
    with pytest.raises(NotFound, match="no alias 'live'"):
        store.delete_alias(function.id, "live")


def test_a_version_an_alias_points_to_cannot_be_deleted(store):
    function = create(store)
    store.publish_version(function.id, "keep me")
    new_code(store, function.id)
    store.publish_version(function.id)
    store.put_alias(alias(function.id, 2, other=1, weight=0.1))

    for version in (1, 2):
        with pytest.raises(Conflict, match="alias 'live'"):
            store.delete_published_version(function.id, version)

    assert store.get_published_version(function.id, 1).description == "keep me"
    assert [v.version for v in store.list_published_versions(function.id)] == [1, 2]


def test_deleting_the_function_deletes_its_versions_and_aliases(store):
    function = create(store)
    store.publish_version(function.id)
    v2 = new_code(store, function.id)
    store.publish_version(function.id)
    store.put_alias(alias(function.id, 1))

    store.delete_function(function.id)

    assert store.list_published_versions(function.id) == []
    assert store.list_aliases(function.id) == []
    for revision in (function, v2):
        with pytest.raises(NotFound):
            store.get_package(revision)

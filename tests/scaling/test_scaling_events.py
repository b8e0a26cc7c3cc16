"""The catalogue keeps the controller's decisions, newest first, and what it needs to judge."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from lambda_os.records import ScalingEvent


def test_scaling_events_are_listed_newest_first_with_their_reasons(catalogue):
    catalogue.add_scaling_event(ScalingEvent("", "boot", "memory 80% in use", host_id="h1"))
    catalogue.add_scaling_event(ScalingEvent("", "drain", "memory 10% in use", host_id="h1"))

    listed = catalogue.list_scaling_events()

    assert [(e.action, e.reason) for e in listed] == [
        ("drain", "memory 10% in use"),
        ("boot", "memory 80% in use"),
    ]
    assert listed[0].at is not None
    assert listed[0].to_api()["host_id"] == "h1"


def test_the_last_scaling_time_counts_only_changes_that_went_through(catalogue):
    at = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    catalogue.add_scaling_event(ScalingEvent("", "boot", "r", at=at))
    catalogue.add_scaling_event(ScalingEvent("", "delete", "r", at=at + timedelta(seconds=5)))
    catalogue.add_scaling_event(
        ScalingEvent("", "boot", "r", error="over quota", at=at + timedelta(seconds=9))
    )

    assert catalogue.last_scaled_at(["boot", "drain"]).replace(tzinfo=UTC) == at
    assert catalogue.last_scaled_at(["replace"]) is None


def test_no_execution_waiting_means_no_oldest_queued_time(catalogue):
    assert catalogue.oldest_queued_at(datetime.now(UTC)) is None


def queued(catalogue, event_id: str, created_at: datetime, retry_at: datetime | None = None):
    from lambda_os.records import ExecutionRecord, execution_id_for

    record = ExecutionRecord(
        id=execution_id_for(event_id, "f"),
        function_id="f",
        function_version=1,
        event_id=event_id,
        created_at=created_at,
        retry_at=retry_at,
    )
    catalogue.create_execution(record)


def test_the_oldest_waiting_execution_is_the_oldest_queued_one_not_held_for_a_retry(catalogue):
    now = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    queued(catalogue, "later", now - timedelta(seconds=10))
    queued(catalogue, "older", now - timedelta(seconds=90))
    queued(catalogue, "retrying", now - timedelta(seconds=300), retry_at=now + timedelta(seconds=5))

    oldest = catalogue.oldest_queued_at(now)

    assert oldest.replace(tzinfo=UTC) == now - timedelta(seconds=90)

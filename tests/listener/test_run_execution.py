"""run_execution, run_event and the invokers, on mongomock with a provisioner double. No network."""

from __future__ import annotations

import dataclasses
import json

import pytest
from listener_helpers import FakeProvisioner, add_function, force_fields

from lambda_os.errors import PermanentError, TransientError
from lambda_os.records import execution_id_for
from lambda_os.storable import stored_size
from listener.events import Event, parse_event
from listener.execute import MAX_STORED_EVENT_BYTES, claim, run_event, run_execution
from listener.invoker import BrokerInvoker, Invoker
from listener.match import API_EVENT_SOURCE, match


def event(data=None, event_id="e-1", **fields) -> Event:
    return Event(
        event_id, fields.pop("source", "orders"), fields.pop("type", "created"), data, **fields
    )


class FakePublisher:
    def __init__(self, fail: bool = False, reply: bytes | None = b"{}") -> None:
        self.fail = fail
        self.reply = reply
        self.published: list[dict] = []

    def publish(self, body, *, message_id=None, reply_to=None, correlation_id=None):
        if self.fail:
            raise TransientError("broker down (test double)")
        self.published.append(
            {"body": body, "message_id": message_id, "correlation_id": correlation_id}
        )

    def request(self, body, *, message_id, correlation_id, timeout_s):
        self.publish(body, message_id=message_id, correlation_id=correlation_id)
        return self.reply


def test_matching_finds_every_function_for_the_source_and_type(catalogue):
    a = add_function(catalogue, "a")
    b = add_function(catalogue, "b")
    add_function(catalogue, "other", event_type="deleted")
    assert [f.id for f in match(catalogue, event())] == sorted([a.id, b.id])


def test_function_id_of_an_execution_the_platform_queued_runs_that_function_only(catalogue):
    a = add_function(catalogue, "a")
    add_function(catalogue, "b")
    addressed = event(function_id=a.id, source=API_EVENT_SOURCE, type="invoke")
    claim(catalogue, a, addressed)

    assert [f.id for f in match(catalogue, addressed)] == [a.id]
    catalogue.delete_function(a.id)
    assert match(catalogue, addressed) == []


def test_function_id_the_platform_did_not_queue_is_ignored_and_the_trigger_matches(catalogue):
    a = add_function(catalogue, "a")
    b = add_function(catalogue, "b")
    victim = add_function(catalogue, "victim", event_source="payments", event_type="refund")

    forged = event(function_id=victim.id)
    assert [f.id for f in match(catalogue, forged)] == sorted([a.id, b.id])
    as_the_api = event(function_id=victim.id, source=API_EVENT_SOURCE, type="invoke")
    assert match(catalogue, as_the_api) == []


def test_published_event_addressed_to_another_trigger_function_runs_nothing_of_it(catalogue):
    victim = add_function(catalogue, "victim", event_source="payments", event_type="refund")
    raw = json.dumps(
        {"event_source": "anything", "event_type": "at-all", "id": "e-x", "function_id": victim.id}
    ).encode()
    provisioner = FakeProvisioner()

    assert run_event(catalogue, provisioner, parse_event(raw)) == []
    assert provisioner.runs == []
    assert catalogue.list_executions({}, 10).items == []


def test_execution_runs_and_stores_the_outcome(catalogue):
    function = add_function(catalogue, "echo")
    provisioner = FakeProvisioner()
    record = run_execution(catalogue, provisioner, function, event({"n": 1}))
    assert record.status == "succeeded"
    assert record.result == {"echo": {"n": 1}, "function": "echo"}
    assert (record.logs, record.host, record.cold_start, record.duration_ms) == (
        "ran\n",
        "test-host",
        True,
        5.0,
    )
    assert (record.event_id, record.function_id, record.function_version) == ("e-1", function.id, 1)
    assert record.event == {"n": 1} and record.started_at and record.finished_at
    assert catalogue.get_execution(record.id) == record


def test_invocation_carries_the_function_and_a_package_loader(catalogue):
    function = add_function(
        catalogue, "echo", memory_mb=256, timeout_s=5, environment={"A": "1"}, concurrency=3
    )
    provisioner = FakeProvisioner()
    run_execution(catalogue, provisioner, function, event([1]))
    (invocation,) = provisioner.runs
    assert invocation.package_kind == "py" and invocation.package_filename == "main.py"
    assert invocation.load_package() == b"def handler(event, context):\n    return event\n"
    assert (invocation.memory_mb, invocation.timeout_s, invocation.environment) == (
        256,
        5,
        {"A": "1"},
    )
    assert (invocation.event_id, invocation.data, invocation.attempt) == ("e-1", [1], 1)
    assert invocation.concurrency == 3


def test_redelivered_event_returns_the_finished_record_without_running_again(catalogue):
    function = add_function(catalogue, "echo")
    provisioner = FakeProvisioner()
    first = run_execution(catalogue, provisioner, function, event())
    again = run_execution(catalogue, provisioner, function, event())
    assert again == first
    assert len(provisioner.runs) == 1
    assert catalogue.list_executions({}, 10).items == [first]


def test_execution_cut_off_while_running_is_run_again_as_the_next_attempt(catalogue):
    function = add_function(catalogue, "echo")
    provisioner = FakeProvisioner()
    first = run_execution(catalogue, provisioner, function, event())
    # As a killed listener leaves it: running under a lease that has lapsed.
    force_fields(catalogue, first.id, status="running", leased_by="dead", lease_until=None)
    again = run_execution(catalogue, provisioner, function, event())
    assert (again.id, again.status, again.attempt) == (first.id, "succeeded", 2)
    assert provisioner.runs[-1].attempt == 2


def test_transient_failure_puts_the_record_back_to_queued_and_propagates(catalogue):
    function = add_function(catalogue, "echo")
    with pytest.raises(TransientError):
        run_execution(catalogue, FakeProvisioner(transient_failures=1), function, event())
    (record,) = catalogue.list_executions({}, 10).items
    assert (record.status, record.started_at) == ("queued", None)


def test_permanent_platform_error_is_stored_as_a_failed_record(catalogue):
    function = add_function(catalogue, "echo")
    provisioner = FakeProvisioner(raises=PermanentError("no image for runtime python3.11"))
    record = run_execution(catalogue, provisioner, function, event())
    assert record.status == "failed"
    assert record.error["reason"] == "cannot run"
    assert "no image" in record.error["message"]


def test_function_failure_is_an_outcome_not_an_exception(catalogue):
    function = add_function(catalogue, "echo")
    record = run_execution(catalogue, FakeProvisioner(status="failed"), function, event())
    assert record.status == "failed" and record.error["reason"] == "crashed"


def test_large_event_data_is_stored_as_a_marker(catalogue):
    function = add_function(catalogue, "echo")
    data = "x" * (MAX_STORED_EVENT_BYTES + 1)
    provisioner = FakeProvisioner()
    record = run_execution(catalogue, provisioner, function, event(data))
    assert record.event["truncated"] is True
    assert record.event["size_bytes"] == stored_size(data)  # as BSON, the form the server judges
    assert provisioner.runs[0].data == data  # the function still gets all of it


def test_event_with_two_matching_functions_runs_both_with_one_record_each(catalogue):
    add_function(catalogue, "a")
    add_function(catalogue, "b")
    provisioner = FakeProvisioner()
    records = [step.record for step in run_event(catalogue, provisioner, event())]
    assert sorted(r.result["function"] for r in records) == ["a", "b"]
    run_event(catalogue, provisioner, event())
    assert len(catalogue.list_executions({}, 10).items) == 2
    assert len(provisioner.runs) == 2


def test_event_with_no_match_runs_nothing(catalogue):
    assert run_event(catalogue, FakeProvisioner(), event()) == []
    assert catalogue.list_executions({}, 10).items == []


def test_sync_invocation_runs_the_function_under_a_new_event_id(catalogue):
    function = add_function(catalogue, "echo")
    invoker = Invoker(catalogue, FakeProvisioner(), FakePublisher(), event_ids=lambda: "ev")
    record = invoker.invoke(function, {"x": 1})
    assert (record.status, record.event_id, record.event_source) == (
        "succeeded",
        "ev",
        API_EVENT_SOURCE,
    )
    assert record.result["echo"] == {"x": 1}


def test_sync_invocation_with_the_engine_down_fails_its_record_and_raises(catalogue):
    function = add_function(catalogue, "echo")
    invoker = Invoker(catalogue, FakeProvisioner(transient_failures=1), FakePublisher())
    with pytest.raises(TransientError):
        invoker.invoke(function, None)
    (record,) = catalogue.list_executions({}, 10).items
    assert record.status == "failed" and record.error["reason"] == "unavailable"


def test_async_submission_queues_a_record_and_publishes_an_addressed_event(catalogue):
    function = add_function(catalogue, "echo")
    publisher = FakePublisher()
    provisioner = FakeProvisioner()
    record = Invoker(catalogue, provisioner, publisher).submit(function, {"x": 2})
    assert record.status == "queued"
    assert provisioner.runs == []
    (message,) = publisher.published
    published = parse_event(message["body"])
    assert (published.id, published.function_id, published.data) == (
        record.event_id,
        function.id,
        {"x": 2},
    )
    assert message["message_id"] == record.event_id
    # What the listener does with it: the queued record runs, no second record appears.
    (step,) = run_event(catalogue, provisioner, published)
    final = step.record
    assert (final.id, final.status) == (record.id, "succeeded")


def test_async_submission_that_the_broker_did_not_take_raises_and_fails_its_record(catalogue):
    function = add_function(catalogue, "echo")
    invoker = Invoker(catalogue, FakeProvisioner(), FakePublisher(fail=True))
    with pytest.raises(TransientError):
        invoker.submit(function, None)
    (record,) = catalogue.list_executions({}, 10).items
    assert record.status == "failed" and record.error["reason"] == "not queued"


def test_broker_invoker_returns_the_stored_record_after_the_reply(catalogue, tmp_path):
    from lambda_os.settings import Settings

    function = add_function(catalogue, "echo")
    publisher = FakePublisher(reply=None)  # no listener answered in time
    record = BrokerInvoker(Settings(), catalogue, publisher).invoke(function, 1)
    assert record.status == "queued"
    assert parse_event(publisher.published[0]["body"]).function_id == function.id


def test_execution_leased_by_another_listener_is_deferred_until_its_lease_lapses(catalogue):
    from datetime import timedelta

    from lambda_os.records import utcnow
    from listener.execute import claim, execute_step

    function = add_function(catalogue, "echo", timeout_s=5)
    record, _ = claim(catalogue, function, event())
    now = utcnow()
    # Listener A took the lease and died (kill -9): the record says running, under A.
    catalogue.acquire_execution(record.id, "listener-a", now, now + timedelta(seconds=65))
    provisioner = FakeProvisioner()
    deferred = execute_step(
        catalogue, provisioner, function, event(), record, lambda: now, owner="b"
    )
    assert deferred.defer and not deferred.reply and deferred.record.leased_by == "listener-a"
    assert provisioner.runs == []
    later = now + timedelta(seconds=66)
    step = execute_step(catalogue, provisioner, function, event(), record, lambda: later, owner="b")
    assert (step.record.status, step.record.attempt) == ("succeeded", 2)
    assert step.record.attempts[0]["status"] == "interrupted"
    assert step.record.lease_until is None and provisioner.runs[0].attempt == 2


def test_a_listener_that_lost_its_lease_mid_run_does_not_overwrite_the_run_that_took_over(
    catalogue,
):
    from datetime import timedelta

    from lambda_os.records import utcnow
    from listener.execute import start_step

    function = add_function(catalogue, "echo", timeout_s=5)
    now = utcnow()

    class StalledProvisioner(FakeProvisioner):
        def run(self, invocation):
            # While "a" runs, its lease lapses and listener "b" takes the execution over.
            later = now + timedelta(seconds=120)
            catalogue.acquire_execution(
                invocation.execution_id, "b", later, later + timedelta(seconds=65)
            )
            return super().run(invocation)

    step = start_step(catalogue, StalledProvisioner(), function, event(), lambda: now, owner="a")

    assert (step.record.status, step.record.leased_by) == ("running", "b")
    assert not step.reply  # nothing final to send: b's run will answer
    stored = catalogue.get_execution(step.record.id)
    assert (stored.status, stored.leased_by, stored.attempt) == ("running", "b", 2)


def test_failed_run_is_queued_for_a_retry_until_max_retries_then_asks_for_a_dead_letter(catalogue):
    from listener.execute import claim, execute_step

    function = add_function(catalogue, "echo", max_retries=1)
    provisioner = FakeProvisioner(status="failed")
    record, _ = claim(catalogue, function, event())
    first = execute_step(catalogue, provisioner, function, event(), record, retry_delay_s=float)
    assert first.retry and not first.reply and first.dead_letter is None
    assert (first.record.status, first.record.attempt, first.record.retry_at is not None) == (
        "queued",
        2,
        True,
    )
    retry = event(function_id=function.id, attempt=2)
    second = execute_step(
        catalogue, provisioner, function, retry, first.record, retry_delay_s=float
    )
    assert not second.retry and second.reply
    assert second.record.status == "failed" and len(second.record.attempts) == 1
    assert second.dead_letter.startswith("retries exhausted: 2 attempts")
    # The same retry message again is stale: nothing runs.
    again = execute_step(
        catalogue, provisioner, function, retry, second.record, retry_delay_s=float
    )
    assert not again.reply and again.dead_letter is None and len(provisioner.runs) == 2


class WaitsForCapacity(FakeProvisioner):
    """A backend that makes each run wait ``wait`` (on the test's clock) before it starts."""

    def __init__(self, now: list, wait, catalogue) -> None:
        super().__init__()
        self.now, self.wait, self.catalogue = now, wait, catalogue
        self.lease_at_start = None

    def run(self, invocation):
        self.now[0] += self.wait
        invocation.started()
        self.lease_at_start = self.catalogue.get_execution(invocation.execution_id).lease_until
        return super().run(invocation)


@pytest.mark.parametrize("waited_s", [50, 5])
def test_a_run_that_waited_long_for_capacity_gets_its_whole_lease_again(catalogue, waited_s):
    from datetime import UTC, datetime, timedelta

    function = add_function(catalogue, "queued-behind-others", timeout_s=5)
    leased_at = datetime(2026, 1, 1, tzinfo=UTC)
    now = [leased_at]
    provisioner = WaitsForCapacity(now, timedelta(seconds=waited_s), catalogue)

    run_execution(catalogue, provisioner, function, event([1]), clock=lambda: now[0])

    lease = timedelta(seconds=5 + 60)  # timeout plus the margin
    renewed = waited_s > 30  # only a wait past half the margin is worth a write
    assert provisioner.lease_at_start == (now[0] if renewed else leased_at) + lease


def test_a_stalled_owners_failed_outcome_does_not_requeue_the_run_that_took_over(catalogue):
    """Listener a stalls past its lease, b takes over; a's failure must not reopen the record."""
    from datetime import timedelta

    from lambda_os.catalogue import Lease
    from lambda_os.records import utcnow
    from listener.execute import start_step

    function = add_function(catalogue, "echo", timeout_s=5, max_retries=2)
    now = utcnow()
    taken_over = {}

    class StallsThenFails(FakeProvisioner):
        def run(self, invocation):
            later = now + timedelta(seconds=120)
            taken_over["record"] = catalogue.acquire_execution(
                invocation.execution_id, "b", later, later + timedelta(seconds=65)
            )
            return super().run(invocation)

    step = start_step(
        catalogue,
        StallsThenFails(status="failed"),
        function,
        event(),
        lambda: now,
        owner="a",
        retry_delay_s=float,
    )

    assert not step.retry and not step.reply  # a queues no retry and sends nothing
    stored = catalogue.get_execution(step.record.id)
    assert (stored.status, stored.leased_by, stored.attempt) == ("running", "b", 2)
    # b's outcome is still accepted: the execution runs twice in all, not three times.
    assert catalogue.finish_execution(Lease.of(taken_over["record"]), {"status": "succeeded"})


def test_a_run_whose_lease_was_lost_while_it_waited_for_capacity_never_starts(catalogue):
    from datetime import UTC, datetime, timedelta

    function = add_function(catalogue, "queued-behind-others", timeout_s=5)
    leased_at = datetime(2026, 1, 1, tzinfo=UTC)
    now = [leased_at]

    class LosesLeaseWhileWaiting(FakeProvisioner):
        def run(self, invocation):
            now[0] += timedelta(seconds=200)  # past the lease: another listener takes over
            catalogue.acquire_execution(
                invocation.execution_id, "b", now[0], now[0] + timedelta(seconds=65)
            )
            invocation.started()
            return super().run(invocation)

    provisioner = LosesLeaseWhileWaiting()
    record = run_execution(catalogue, provisioner, function, event([1]), clock=lambda: now[0])

    assert provisioner.runs == []  # started() refused: the function never ran here
    assert (record.status, record.leased_by) == ("running", "b")


def test_an_unforeseen_platform_error_ends_the_record_failed_without_host_details(catalogue):
    function = add_function(catalogue, "echo")
    secret = "/var/lib/lambda-os/sockets/" + "x" * 120
    provisioner = FakeProvisioner(raises=OSError(f"AF_UNIX path too long: {secret}"))

    record = run_execution(catalogue, provisioner, function, event())

    assert record.status == "failed" and record.finished_at is not None
    assert record.error["reason"] == "internal error" and "OSError" in record.error["message"]
    assert secret not in str(record.to_api())
    assert catalogue.get_execution(record.id).to_api() == record.to_api()


def test_an_outcome_the_catalogue_refuses_ends_the_record_failed_as_not_storable(catalogue):
    class RefusesTheFirstOutcome:
        def __init__(self, inner):
            self.inner, self.refused = inner, False

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def finish_execution(self, lease, changes):
            if not self.refused:
                self.refused = True
                raise PermanentError("document too large")
            return self.inner.finish_execution(lease, changes)

    function = add_function(catalogue, "echo")

    record = run_execution(RefusesTheFirstOutcome(catalogue), FakeProvisioner(), function, event())

    stored = catalogue.get_execution(record.id)
    assert (stored.status, stored.error["reason"]) == ("failed", "not storable")
    assert "document too large" in stored.error["message"] and stored.leased_by is None


def test_an_event_matched_before_a_deploy_runs_the_version_it_matched(catalogue):
    from lambda_os.packages import inspect_package
    from listener.execute import claim, execute_step

    function = add_function(catalogue, "echo")
    record, _ = claim(catalogue, function, event())  # matched to version 1, not run yet
    v2_source = b"def handler(event, context):\n    return 2\n"
    v2 = catalogue.replace_code(
        function.id, v2_source, inspect_package(v2_source, "main.py", "main.handler")
    )
    provisioner = FakeProvisioner()

    step = execute_step(catalogue, provisioner, v2, event(), record)

    (invocation,) = provisioner.runs
    assert (invocation.function_version, invocation.code_sha256) == (1, function.code_sha256)
    assert invocation.load_package() == catalogue.get_package(function).data
    assert step.record.status == "succeeded" and step.record.function_version == 1


def test_a_copy_of_an_event_waiting_for_its_retry_does_not_run_the_next_attempt_early(catalogue):
    from datetime import timedelta

    from lambda_os.records import utcnow
    from listener.execute import claim, execute_step

    function = add_function(catalogue, "echo", max_retries=2)
    record, _ = claim(catalogue, function, event())
    failed = execute_step(
        catalogue,
        FakeProvisioner(status="failed"),
        function,
        event(),
        record,
        retry_delay_s=lambda attempt: 60.0,
    )
    assert failed.retry and failed.record.retry_at > utcnow()
    provisioner = FakeProvisioner()

    early = execute_step(catalogue, provisioner, function, event(), failed.record)
    due = execute_step(
        catalogue,
        provisioner,
        function,
        event(),
        failed.record,
        clock=lambda: utcnow() + timedelta(seconds=61),
    )

    assert early.defer and not early.reply
    assert due.record.status == "succeeded" and len(provisioner.runs) == 1


def test_runs_cut_off_by_dead_listeners_do_not_use_up_the_retry_budget():
    from lambda_os.records import ExecutionRecord
    from listener.execute import MAX_TAKEOVERS, spent_attempts

    cut = [{"attempt": n, "status": "interrupted"} for n in (1, 2)]
    record = ExecutionRecord(
        id="x", function_id="f", function_version=1, event_id="e", attempt=3, attempts=cut
    )
    assert spent_attempts(record) == 1  # two takeovers, then this run
    failed = [{"attempt": 1, "status": "failed"}, {"attempt": 2, "status": "interrupted"}]
    assert spent_attempts(dataclasses.replace(record, attempts=failed)) == 2
    many = [{"attempt": n, "status": "interrupted"} for n in range(1, 10)]
    endless = dataclasses.replace(record, attempt=10, attempts=many)
    assert spent_attempts(endless) == 10 - MAX_TAKEOVERS  # past the cap they count


def test_an_execution_whose_version_is_no_longer_kept_fails_saying_so_and_runs_nothing(catalogue):
    from datetime import timedelta

    from lambda_os.packages import inspect_package
    from lambda_os.records import utcnow
    from listener.execute import claim, execute_step

    function = add_function(catalogue, "echo")
    record, _ = claim(catalogue, function, event())
    source = b"def handler(event, context):\n    return 2\n"
    info = inspect_package(source, "main.py", "main.handler")
    v2 = catalogue.replace_code(function.id, source, info)
    catalogue.fail_queued_execution(record.id, 1, {"reason": "test"})  # so v1 is unused
    catalogue.prune_retired_versions(utcnow() + timedelta(days=1))
    reopened, _ = catalogue.create_execution(
        dataclasses.replace(record, event_id="e2", id=execution_id_for("e2", function.id))
    )
    provisioner = FakeProvisioner()

    step = execute_step(catalogue, provisioner, v2, event(), reopened)

    assert provisioner.runs == []
    assert (step.record.status, step.record.error["reason"]) == ("failed", "cannot run")
    assert "no longer kept" in step.record.error["message"]


def test_an_event_a_router_placed_runs_its_recorded_execution_once(catalogue):
    from listener.execute import claim

    function = add_function(catalogue, "echo")
    provisioner = FakeProvisioner()
    queued, _created = claim(catalogue, function, event({"n": 1}))  # as the router records it

    (step,) = run_event(catalogue, provisioner, event({"n": 1}), placed=True)
    (again,) = run_event(catalogue, provisioner, event({"n": 1}), placed=True)

    assert (step.record.id, step.record.status) == (queued.id, "succeeded")
    assert again.record == step.record  # a redelivery finds it finished: not run twice
    assert len(provisioner.runs) == 1
    assert catalogue.list_executions({}, 10).items == [step.record]


def test_a_placed_event_whose_record_is_gone_starts_as_a_new_one(catalogue):
    add_function(catalogue, "echo")
    provisioner = FakeProvisioner()

    (step,) = run_event(catalogue, provisioner, event({"n": 2}), placed=True)

    assert step.record.status == "succeeded"
    assert [r.id for r in catalogue.list_executions({}, 10).items] == [step.record.id]

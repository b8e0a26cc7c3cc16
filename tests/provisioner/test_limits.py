"""Specification of the host's slots shared fairly between functions (issue #18); no engine needed."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from provisioner.limits import FairSlots


class Holder:
    """A thread that takes one of ``slots`` for ``key`` and holds it until released."""

    def __init__(self, slots: FairSlots, key: str, entered: list[str]) -> None:
        self.key = key
        self.inside = threading.Event()
        self.release = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(slots, entered), daemon=True)
        self._thread.start()

    def _run(self, slots: FairSlots, entered: list[str]) -> None:
        with slots.hold(self.key):
            entered.append(self.key)
            self.inside.set()
            self.release.wait()

    def done(self) -> None:
        self.release.set()
        self._thread.join(10)


def eventually(condition: Callable[[], bool], limit_s: float = 10.0) -> None:
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.01)


def settle() -> None:
    """Give waiting threads the chance to take a slot they should not get."""
    time.sleep(0.2)


def test_one_function_holds_every_slot_but_the_reserved_one_and_another_takes_that():
    slots = FairSlots(4, reserved=1)
    entered: list[str] = []
    busy = [Holder(slots, "busy", entered) for _ in range(5)]
    eventually(lambda: slots.held("busy") == 3)
    settle()

    other = Holder(slots, "other", entered)

    assert other.inside.wait(10)
    assert slots.held("busy") == 3  # its other two still wait
    for holder in [*busy, other]:
        holder.done()
    assert entered.count("busy") == 5


def test_a_freed_slot_goes_to_the_waiting_function_that_holds_fewest_not_the_first_waiter():
    slots = FairSlots(2, reserved=0)
    entered: list[str] = []
    first, second = Holder(slots, "a", entered), Holder(slots, "a", entered)
    eventually(lambda: slots.held("a") == 2)
    third = Holder(slots, "a", entered)  # waits first ...
    settle()
    b = Holder(slots, "b", entered)  # ... but b holds none, so it is served first
    settle()

    first.done()

    assert b.inside.wait(10)
    assert not third.inside.is_set()
    second.done()
    assert third.inside.wait(10)
    for holder in (third, b):
        holder.done()


def test_a_host_with_one_slot_still_runs_a_function_at_all():
    slots = FairSlots(1, reserved=1)
    entered: list[str] = []

    holder = Holder(slots, "only", entered)

    assert holder.inside.wait(10)
    holder.done()
    assert slots.held("only") == 0

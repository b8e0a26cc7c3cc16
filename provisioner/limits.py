"""How many executions run at once: a function's own limit, and a fair share of the host's slots.

Backend-neutral, so every provisioner enforces them the same way.

``ConcurrencyLimits`` holds a function to its ``concurrency``. An entry exists
only while the function has executions running or waiting, so memory follows the
functions in use, not the functions registered. A changed limit takes effect for
new executions at once; the ones already running under the old limit finish under it.

``FairSlots`` shares the host's slots between functions. A function's own
``concurrency`` (10 by default) may exceed the host's slots (8), and executions
cannot be pre-empted, so one busy function with long runs would otherwise hold
every slot and make a trivial call of another wait for its runs to end. So one
function never holds more than ``max(1, slots - reserved)`` slots, which keeps
room for the others, and a freed slot goes to the waiting function holding the
fewest, in order of arrival among equals, so no function's waiters starve another's.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class _Entry:
    __slots__ = ("slots", "users")

    def __init__(self, limit: int) -> None:
        self.slots = threading.Semaphore(limit)
        self.users = 0


class ConcurrencyLimits:
    """Semaphores by (key, limit), created on first use and dropped when unused."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, int], _Entry] = {}

    @contextmanager
    def hold(self, key: str, limit: int) -> Iterator[None]:
        """Wait for one of ``key``'s ``limit`` slots and hold it for the block."""
        entry_key = (key, max(1, limit))
        with self._lock:
            entry = self._entries.get(entry_key)
            if entry is None:
                entry = self._entries[entry_key] = _Entry(entry_key[1])
            entry.users += 1
        try:
            with entry.slots:
                yield
        finally:
            with self._lock:
                entry.users -= 1
                if entry.users == 0:
                    del self._entries[entry_key]

    def active(self) -> int:
        """How many functions have executions running or waiting."""
        with self._lock:
            return len(self._entries)


class FairSlots:
    """``total`` slots shared by keys (functions): at most ``per_key`` each, fewest-held first."""

    def __init__(self, total: int, reserved: int = 1) -> None:
        self.total = max(1, total)
        self.per_key = max(1, self.total - max(0, reserved))
        self._changed = threading.Condition()
        self._held: dict[str, int] = {}
        self._in_use = 0
        self._arrivals = itertools.count()
        # Waiters as (arrival number, key), in arrival order.
        self._waiting: list[tuple[int, str]] = []

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        """Wait until ``key`` is next in the fair order and a slot is free; hold it for the block."""
        with self._changed:
            waiter = (next(self._arrivals), key)
            self._waiting.append(waiter)
            try:
                while self._next() != waiter:
                    self._changed.wait()
            finally:
                self._waiting.remove(waiter)
                # Whether it took a slot or gave up, another may now be next in line.
                self._changed.notify_all()
            self._in_use += 1
            self._held[key] = self._held.get(key, 0) + 1
        try:
            yield
        finally:
            with self._changed:
                self._in_use -= 1
                self._held[key] -= 1
                if self._held[key] == 0:
                    del self._held[key]
                self._changed.notify_all()

    def _next(self) -> tuple[int, str] | None:
        """Under the lock: the waiter to take the next slot, None if no slot or no one may."""
        if self._in_use >= self.total:
            return None
        eligible = [w for w in self._waiting if self._held.get(w[1], 0) < self.per_key]
        if not eligible:
            return None
        return min(eligible, key=lambda w: (self._held.get(w[1], 0), w[0]))

    def held(self, key: str) -> int:
        """How many slots ``key`` holds now."""
        with self._changed:
            return self._held.get(key, 0)

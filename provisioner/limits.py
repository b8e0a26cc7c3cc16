"""Per-function concurrency: at most ``limit`` executions of one function at once.

Backend-neutral, so every provisioner enforces a function's ``concurrency`` the
same way. An entry exists only while the function has executions running or
waiting, so memory follows the functions in use, not the functions registered.
A changed limit takes effect for new executions at once; the ones already
running under the old limit finish under it.
"""

from __future__ import annotations

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

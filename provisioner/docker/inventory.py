"""The bookkeeping of warm and pooled containers: who is idle, for what, and what memory is held.

Pure logic under the provisioner's lock, no engine calls, so it can be read and
tested on its own. A container is *busy* (running an execution), *warm* (idle,
loaded with one function version, reusable only for exactly that version) or
*pooled* (idle, started generic for a runtime, waiting for its first function).
Busy, warm and pooled containers together must fit in the host's memory budget;
making room evicts idle ones, least recently used first, warm before pooled.
Warm containers are also indexed by key, so handing one out costs the same
however many other functions have containers warm.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Protocol


class Tracked(Protocol):
    """What the inventory needs to know about a container."""

    id: str
    runtime: str
    last_used: float

    @property
    def memory_mb(self) -> int: ...


class Inventory:
    """Idle containers by function key and by runtime, and the memory budget."""

    def __init__(self, budget_mb: int) -> None:
        self.budget_mb = budget_mb
        self.held_mb = 0
        # Every warm container, least recently used first (eviction's order) ...
        self._warm: OrderedDict[str, tuple[Hashable, Tracked]] = OrderedDict()
        # ... and the same containers by key, most recently used last (take_warm's choice).
        self._warm_by_key: dict[Hashable, OrderedDict[str, Tracked]] = {}
        self._pooled: OrderedDict[str, Tracked] = OrderedDict()

    @property
    def idle_mb(self) -> int:
        """Memory held by idle containers (warm or pooled): given back the moment it is needed."""
        idle = sum(c.memory_mb for _key, c in self._warm.values())
        return idle + sum(c.memory_mb for c in self._pooled.values())

    def fits(self, memory_mb: int) -> bool:
        return self.held_mb + memory_mb <= self.budget_mb

    def hold(self, memory_mb: int) -> None:
        self.held_mb += memory_mb

    def free(self, memory_mb: int) -> None:
        self.held_mb = max(0, self.held_mb - memory_mb)

    def take_warm(self, key: Hashable) -> Tracked | None:
        """The most recently used idle container loaded with ``key``, now busy."""
        same_key = self._warm_by_key.get(key)
        if not same_key:
            return None
        container_id, container = same_key.popitem(last=True)
        if not same_key:
            del self._warm_by_key[key]
        del self._warm[container_id]
        return container

    def take_pooled(self, runtime: str) -> Tracked | None:
        """A pooled container for ``runtime``, now busy."""
        for container_id, container in self._pooled.items():
            if container.runtime == runtime:
                del self._pooled[container_id]
                return container
        return None

    def put_warm(self, key: Hashable, container: Tracked) -> None:
        self._forget_warm(container.id)
        self._warm[container.id] = (key, container)
        self._warm_by_key.setdefault(key, OrderedDict())[container.id] = container

    def _forget_warm(self, container_id: str) -> None:
        """Take ``container_id`` out of the warm containers, if it is among them."""
        entry = self._warm.pop(container_id, None)
        if entry is None:
            return
        key = entry[0]
        same_key = self._warm_by_key[key]
        del same_key[container_id]
        if not same_key:
            del self._warm_by_key[key]

    def put_pooled(self, container: Tracked) -> None:
        self._pooled[container.id] = container

    def pooled_list(self, runtime: str) -> list[Tracked]:
        return [container for container in self._pooled.values() if container.runtime == runtime]

    def pooled(self, runtime: str) -> int:
        return sum(1 for container in self._pooled.values() if container.runtime == runtime)

    def warm(self) -> list[tuple[Hashable, Tracked]]:
        return list(self._warm.values())

    def evict_for(self, memory_mb: int) -> list[Tracked] | None:
        """Idle containers to remove so ``memory_mb`` fits, least recently used first.

        They leave the inventory and their memory is freed at once. None (and
        nothing evicted) when even evicting every idle container would not do.
        """
        if self.held_mb - self.idle_mb + memory_mb > self.budget_mb:
            return None
        evicted: list[Tracked] = []
        while not self.fits(memory_mb):
            if self._warm:
                container = next(iter(self._warm.values()))[1]
                self._forget_warm(container.id)
            else:
                _id, container = self._pooled.popitem(last=False)
            self.free(container.memory_mb)
            evicted.append(container)
        return evicted

    def remove_warm_where(self, doomed: Callable[[Hashable, Tracked], bool]) -> list[Tracked]:
        """Take out the warm containers whose key or container ``doomed(key, container)`` picks."""
        out = [(cid, c) for cid, (key, c) in self._warm.items() if doomed(key, c)]
        for container_id, container in out:
            self._forget_warm(container_id)
            self.free(container.memory_mb)
        return [container for _cid, container in out]

    def drain(self) -> list[Tracked]:
        """Every idle container, taken out (for shutdown)."""
        out = [c for _key, c in self._warm.values()] + list(self._pooled.values())
        for container in out:
            self.free(container.memory_mb)
        self._warm.clear()
        self._warm_by_key.clear()
        self._pooled.clear()
        return out

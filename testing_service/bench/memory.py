"""Memory figures: a container's resident size from its cgroup (v1), docker stats as a fallback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

CGROUP_V1_ROOTS = (
    Path("/sys/fs/cgroup/memory/docker"),
    Path("/sys/fs/cgroup/memory/system.slice"),
)


def container_memory(container_id: str, client: Any = None) -> dict[str, Any]:
    """``usage_bytes`` (the cgroup's ``memory.usage_in_bytes``) and ``resident_bytes``
    (usage less page cache: what the processes hold), with where they were read."""
    for root in CGROUP_V1_ROOTS:
        for name in (container_id, f"docker-{container_id}.scope"):
            directory = root / name
            if (directory / "memory.usage_in_bytes").exists():
                usage = int((directory / "memory.usage_in_bytes").read_text())
                stat = _stat(directory / "memory.stat")
                cache = stat.get("total_cache", stat.get("cache", 0))
                return {
                    "usage_bytes": usage,
                    "resident_bytes": usage - cache,
                    "rss_bytes": stat.get("total_rss", stat.get("rss")),
                    "source": str(directory),
                }
    if client is None:
        return {"usage_bytes": None, "resident_bytes": None, "source": "not found"}
    stats = client.api.stats(container_id, stream=False)["memory_stats"]
    usage = stats.get("usage", 0)
    cache = stats.get("stats", {}).get("cache", 0)
    return {"usage_bytes": usage, "resident_bytes": usage - cache, "source": "docker stats"}


def _stat(path: Path) -> dict[str, int]:
    values = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition(" ")
        if value.isdigit():
            values[key] = int(value)
    return values

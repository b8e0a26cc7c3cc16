"""What the host sees of a running container through its own kernel, without asking the engine.

Two questions are asked of every warm container, and the engine is too slow to
ask on each execution (an inspect or ``docker top`` costs milliseconds; a warm
run costs a tenth of one):

- How many tasks run in it? The pids cgroup's ``pids.current`` counts every
  process and thread. Between executions only docker-init and the agent's one
  thread may be there; the function cannot forge this figure, as it could the
  agent's word, since the handler runs in the agent's process.
- How full is its ``/tmp``? The tmpfs is charged to the container's memory, so
  when the OOM killer ends a container this says how much of the limit was files.
  The host holds a directory descriptor on that tmpfs from the start, which keeps
  it readable after the container has died and its mount namespace is gone.

Both are read through ``/proc/<pid>`` of the container's first process, so they
need the engine on this machine and a host process allowed to look (root, as the
platform runs). Where they cannot be had (a remote engine, a later Nova host),
each answer is None and the platform falls back to what the agent says.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def pids_current_path(proc_cgroup: str, root: Path = CGROUP_ROOT) -> Path | None:
    """Where ``pids.current`` is for a process whose ``/proc/<pid>/cgroup`` reads ``proc_cgroup``.

    cgroup v1 names the ``pids`` hierarchy on its own line; v2 has one ``0::`` line.
    """
    unified = None
    for line in proc_cgroup.splitlines():
        number, controllers, path = line.split(":", 2)
        if "pids" in controllers.split(","):
            return root / "pids" / path.lstrip("/") / "pids.current"
        if number == "0" and not controllers:
            unified = root / path.lstrip("/") / "pids.current"
    return unified


def tmp_is_tmpfs(proc_mounts: str) -> bool:
    """Whether ``/proc/<pid>/mounts`` shows a tmpfs at /tmp; else its usage is not memory."""
    return any(
        fields[1:3] == ["/tmp", "tmpfs"]
        for fields in (line.split() for line in proc_mounts.splitlines())
    )


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _open(path: Path | str, flags: int) -> int | None:
    try:
        return os.open(path, flags | os.O_CLOEXEC)
    except OSError:
        return None


@dataclass
class Probe:
    """Open descriptors on a container's pids counter and its ``/tmp``; either may be None."""

    pids_fd: int | None = None
    tmp_fd: int | None = None

    @classmethod
    def attach(cls, pid: int | None) -> Probe:
        """A probe on the container whose first process is ``pid`` on this host."""
        if not pid:
            return cls()
        proc_cgroup = _read(f"/proc/{pid}/cgroup")
        pids_path = pids_current_path(proc_cgroup) if proc_cgroup else None
        tmpfs = tmp_is_tmpfs(_read(f"/proc/{pid}/mounts"))
        return cls(
            pids_fd=_open(pids_path, os.O_RDONLY) if pids_path else None,
            tmp_fd=_open(f"/proc/{pid}/root/tmp", os.O_RDONLY | os.O_DIRECTORY) if tmpfs else None,
        )

    def tasks(self) -> int | None:
        """Processes and threads in the container now, or None if it cannot be read."""
        if self.pids_fd is None:
            return None
        try:
            return int(os.pread(self.pids_fd, 32, 0))
        except (OSError, ValueError):
            return None

    def tmp_used_bytes(self) -> int | None:
        """Bytes held by files in the container's ``/tmp``, or None if it cannot be read."""
        if self.tmp_fd is None:
            return None
        try:
            stat = os.fstatvfs(self.tmp_fd)
        except OSError:
            return None
        return (stat.f_blocks - stat.f_bfree) * stat.f_frsize

    def close(self) -> None:
        """Let go of both; the tmpfs of a dead container is freed only then."""
        for fd in (self.pids_fd, self.tmp_fd):
            if fd is not None:
                os.close(fd)
        self.pids_fd = self.tmp_fd = None

"""What the host sees of a running container through its own kernel, without asking the engine.

Two questions are asked of every warm container, and the engine is too slow to
ask on each execution (an inspect or ``docker top`` costs milliseconds; a warm
run costs a tenth of one):

- How many tasks run in it? The pids cgroup's ``pids.current`` counts every
  process and thread. Between executions only docker-init and the agent's one
  thread may be there; the function cannot forge this figure, as it could the
  agent's word, since the handler runs in the agent's process.
- How much CPU and memory did a run take? ``cpuacct.usage`` (v2: ``cpu.stat``)
  counts the container's CPU time, read before and after each run; the memory
  cgroup's high-water mark (v1 ``memory.max_usage_in_bytes``, reset to the
  current use before each run; v2 ``memory.peak``, which older kernels cannot
  reset, so there it is the container's peak so far) gives the run's peak.
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


def controller_file(
    proc_cgroup: str, controller: str, v1_name: str, v2_name: str, root: Path = CGROUP_ROOT
) -> Path | None:
    """Where ``controller``'s file is for the process: ``v1_name`` under its v1 hierarchy,
    else ``v2_name`` in its unified cgroup (None when neither is named)."""
    unified = None
    for line in proc_cgroup.splitlines():
        number, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return root / controllers / path.lstrip("/") / v1_name
        if number == "0" and not controllers:
            unified = root / path.lstrip("/") / v2_name
    return unified


def parse_cpu_ns(text: str) -> int:
    """Nanoseconds of CPU from ``cpuacct.usage`` (one number) or ``cpu.stat`` (usage_usec)."""
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "usage_usec":
            return int(value) * 1000
    return int(text.split()[0])


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
    cpu_fd: int | None = None
    peak_fd: int | None = None
    peak_resettable: bool = False  # v1's high-water mark takes a write; v2's may not

    @classmethod
    def attach(cls, pid: int | None) -> Probe:
        """A probe on the container whose first process is ``pid`` on this host."""
        if not pid:
            return cls()
        proc_cgroup = _read(f"/proc/{pid}/cgroup")
        pids_path = pids_current_path(proc_cgroup) if proc_cgroup else None
        tmpfs = tmp_is_tmpfs(_read(f"/proc/{pid}/mounts"))
        cpu_path = controller_file(proc_cgroup, "cpuacct", "cpuacct.usage", "cpu.stat")
        peak_path = controller_file(
            proc_cgroup, "memory", "memory.max_usage_in_bytes", "memory.peak"
        )
        peak_fd = _open(peak_path, os.O_RDWR) if peak_path else None
        if peak_fd is None and peak_path:
            peak_fd = _open(peak_path, os.O_RDONLY)
        resettable = (
            peak_fd is not None and peak_path is not None and peak_path.name != "memory.peak"
        )
        return cls(
            pids_fd=_open(pids_path, os.O_RDONLY) if pids_path else None,
            tmp_fd=_open(f"/proc/{pid}/root/tmp", os.O_RDONLY | os.O_DIRECTORY) if tmpfs else None,
            cpu_fd=_open(cpu_path, os.O_RDONLY) if cpu_path else None,
            peak_fd=peak_fd,
            peak_resettable=resettable,
        )

    def cpu_ns(self) -> int | None:
        """The container's CPU time so far, or None if it cannot be read."""
        if self.cpu_fd is None:
            return None
        try:
            return parse_cpu_ns(os.pread(self.cpu_fd, 4096, 0).decode())
        except (OSError, ValueError, IndexError):
            return None

    def reset_peak(self) -> bool:
        """Start the memory high-water mark from the use of now; False where it cannot be."""
        if self.peak_fd is None or not self.peak_resettable:
            return False
        try:
            os.pwrite(self.peak_fd, b"0", 0)
        except OSError:
            self.peak_resettable = False
            return False
        return True

    def peak_bytes(self) -> int | None:
        """The memory high-water mark (since the last reset), or None if it cannot be read."""
        if self.peak_fd is None:
            return None
        try:
            return int(os.pread(self.peak_fd, 64, 0))
        except (OSError, ValueError):
            return None

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
        for fd in (self.pids_fd, self.tmp_fd, self.cpu_fd, self.peak_fd):
            if fd is not None:
                os.close(fd)
        self.pids_fd = self.tmp_fd = self.cpu_fd = self.peak_fd = None

"""Where the CPU goes per event: every process on the event path, read over one timed run.

On two cores a case's throughput is capped by the CPU that all of its processes
spend per event (the broker, the load driver, the listener or the floor's
consumer or Celery's worker, the function containers), not by the listener's
alone, so py-spy's view of the listener (``profiling``) cannot by itself say what
caps a rate. A ``CpuMeter`` reads each part's cumulative CPU (user + system) when
the load starts and when it ends: other processes from ``/proc/<pid>/stat`` (the
broker found by its command name, ``beam.smp``, Celery's worker by its process
tree), this process with ``getrusage``, containers from their cgroup. The load
driver runs in a process of its own and measures itself inside ``drive``.

Nothing is guessed: a part that cannot be read (a container removed before the
end, a broker in another pid namespace) is named under ``unmeasured``, and the
total is then a lower bound. Two readings cannot see what lived only between
them: a container started and removed within the run (one that crashed, timed
out or was evicted), or a Celery pool child that exited, is missed without a
note; the trivial functions of the throughput cases neither fail nor get
evicted, so there it does not arise. The CPU of anything else on the host
(dockerd, py-spy with ``--profile``, other people's work) is not in the total;
``host_cores_busy``, from ``/proc/stat``, shows how much of it there was.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROC = Path("/proc")
CGROUP = Path("/sys/fs/cgroup")
BROKER_COMM = "beam.smp"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# The order parts are reported in, along the event path.
PARTS = ("broker", "load_driver", "consumer", "listener", "standalone", "worker", "containers")

# One part's readings: process or container -> CPU seconds so far (None: exists, unreadable).
CpuSource = Callable[[], dict[str, float | None]]


def self_cpu_s() -> float:
    """This process's CPU seconds so far, every thread (``getrusage``: microseconds, not ticks)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def parse_pid_stat(line: str, ticks: int = CLOCK_TICKS) -> tuple[str, int, float]:
    """(command name, parent pid, user + system CPU seconds) from a ``/proc/<pid>/stat`` line.

    The name sits in parentheses and may itself hold spaces or ``)``, so fields are
    counted from the last ``)``: state, ppid, ... utime and stime are fields 14 and 15.
    """
    head, _, tail = line.rpartition(")")
    fields = tail.split()
    return head.partition("(")[2], int(fields[1]), (int(fields[11]) + int(fields[12])) / ticks


def processes(proc: Path = PROC) -> dict[int, tuple[str, int, float]]:
    """Every process visible now: pid -> (command name, parent pid, CPU seconds)."""
    table = {}
    for entry in proc.iterdir():
        if entry.name.isdigit():
            try:
                table[int(entry.name)] = parse_pid_stat((entry / "stat").read_text())
            except (OSError, ValueError, IndexError):
                continue  # it exited while we looked
    return table


def named(comm: str = BROKER_COMM, proc: Path = PROC) -> dict[str, float | None]:
    """The processes called ``comm`` (the broker: no pid is written down anywhere)."""
    return {str(pid): cpu for pid, (name, _, cpu) in processes(proc).items() if name == comm}


def tree(root: int, proc: Path = PROC) -> dict[str, float | None]:
    """``root`` and its descendants (a Celery worker and its pool's children)."""
    table = processes(proc)
    kept = {root}
    grew = True
    while grew:  # pids are not in parent-before-child order, so repeat until nothing is added
        new = {pid for pid, (_, ppid, _) in table.items() if ppid in kept and pid not in kept}
        kept |= new
        grew = bool(new)
    return {str(pid): table[pid][2] for pid in kept if pid in table}


def this_process() -> dict[str, float | None]:
    """This process, as a part: the listener or the floor's consumer runs in it."""
    return {"bench": self_cpu_s()}


def cgroup_cpu_s(container_id: str, root: Path = CGROUP) -> float | None:
    """A container's CPU seconds so far from its cgroup, or None if it is not there (removed).

    cgroup v1 (this machine: Docker's cgroupfs driver) keeps nanoseconds in
    ``cpuacct.usage``; v2 keeps ``usage_usec`` in ``cpu.stat``; the systemd driver
    names the directory ``docker-<id>.scope`` under ``system.slice``.
    """
    scope = f"docker-{container_id}.scope"
    candidates = [
        (root / controller / parent / name / "cpuacct.usage", 1e-9)
        for controller in ("cpuacct", "cpu,cpuacct")
        for parent, name in (("docker", container_id), ("system.slice", scope))
    ] + [
        (root / "docker" / container_id / "cpu.stat", 1e-6),
        (root / "system.slice" / scope / "cpu.stat", 1e-6),
    ]
    for path, unit in candidates:
        try:
            text = path.read_text()
        except OSError:
            continue
        return parse_cgroup_usage(text) * unit
    return None


def parse_cgroup_usage(text: str) -> int:
    """The usage counter of ``cpuacct.usage`` (one number) or ``cpu.stat`` (``usage_usec N``)."""
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "usage_usec":
            return int(value)
    return int(text.split()[0])


def containers(ids: Callable[[], Iterable[str]], root: Path = CGROUP) -> CpuSource:
    """A part made of the containers ``ids`` names at each reading (``Platform.containers``)."""
    return lambda: {container_id: cgroup_cpu_s(container_id, root) for container_id in ids()}


def workers(pid: int, proc: Path = PROC) -> CpuSource:
    """A part made of the process ``pid`` and its descendants at each reading."""
    return lambda: tree(pid, proc)


def parse_host_stat(text: str, ticks: int = CLOCK_TICKS) -> float:
    """The host's busy CPU seconds since boot from ``/proc/stat``'s ``cpu`` line.

    Busy is user, nice, system, irq, softirq and steal; guest time is already in user.
    """
    fields = text.splitlines()[0].split()
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / ticks


def host_busy_s(proc: Path = PROC) -> float | None:
    try:
        return parse_host_stat((proc / "stat").read_text())
    except (OSError, ValueError, IndexError):
        return None


def spent(
    name: str, start: dict[str, float | None], end: dict[str, float | None]
) -> tuple[float | None, list[str]]:
    """One part's CPU seconds between two readings, and what of it could not be counted.

    A process or container that appeared after the first reading is counted from
    zero (its counter began inside the run); one that was gone by the second
    reading, or could not be read, is left out and named.
    """
    counted: list[float] = []
    unread = 0
    for key, value in end.items():
        before = start.get(key, 0.0)
        if value is None or before is None:
            unread += 1
        else:
            counted.append(value - before)
    gone = sum(1 for key in start if key not in end)
    notes = []
    if gone:
        notes.append(f"{name}: {gone} gone before the end of the run, their CPU not counted")
    if unread:
        notes.append(f"{name}: {unread} could not be read, their CPU not counted")
    if not counted:
        if not start and not end:
            notes.append(f"{name}: none found")
        return None, notes
    return sum(counted), notes


@dataclass(frozen=True)
class Reading:
    """Every part's readings at one moment."""

    at: float
    parts: dict[str, dict[str, float | None]]
    host_s: float | None


class CpuMeter:
    """Reads every part at ``start`` and ``stop``; ``figures`` says where the CPU went per event.

    ``start`` is meant to be called when the load begins (``run_in_child``'s
    ``started``), so that the child's start-up is outside the window.
    """

    def __init__(
        self,
        sources: dict[str, CpuSource],
        cpus: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        host: Callable[[], float | None] = host_busy_s,
    ) -> None:
        self.sources = sources
        self.cpus = cpus or os.cpu_count() or 1
        self.clock = clock
        self.host = host
        self._start: Reading | None = None
        self._end: Reading | None = None

    def _read(self) -> Reading:
        return Reading(
            self.clock(), {name: source() for name, source in self.sources.items()}, self.host()
        )

    def start(self) -> None:
        self._start = self._read()

    def stop(self) -> None:
        self._end = self._read()

    def figures(self, events: int, **measured: float | None) -> dict[str, Any]:
        """The case's CPU figures; ``measured``: parts that read themselves (the load driver)."""
        if self._start is None or self._end is None:
            return {"cpu": {"unmeasured": ["the run did not start or did not finish"]}}
        seconds: dict[str, float | None] = {}
        notes: list[str] = []
        for name in self.sources:
            seconds[name], part_notes = spent(name, self._start.parts[name], self._end.parts[name])
            notes += part_notes
        for name, value in measured.items():
            seconds[name] = value
            if value is None:
                notes.append(f"{name}: did not report its CPU")
        host = None
        if self._start.host_s is not None and self._end.host_s is not None:
            host = self._end.host_s - self._start.host_s
        return per_event(seconds, events, self._end.at - self._start.at, self.cpus, host, notes)


def per_event(
    seconds: dict[str, float | None],
    events: int,
    wall_s: float,
    cpus: int,
    host_s: float | None = None,
    unmeasured: list[str] | None = None,
) -> dict[str, Any]:
    """CPU ms per event by part and in total, cores busy, and the rate the total allows.

    The ceiling is ``cpus`` seconds of CPU per second over the total per event:
    the most events/s these processes could reach here if nothing else ran.
    """
    ordered = dict(sorted(seconds.items(), key=lambda item: _rank(item[0])))
    counted = [value for value in ordered.values() if value is not None]
    total = sum(counted) if counted else None
    ms = {name: _ms(value, events) for name, value in ordered.items()}
    ms["total"] = _ms(total, events)
    return {
        "cpu_ms_per_event": ms,
        "cores_busy": _div(total, wall_s),
        "cpu": {
            "events": events,
            "wall_s": round(wall_s, 3),
            "cpu_s": {name: _round(value) for name, value in ordered.items()},
            "cpus": cpus,
            "ceiling_events_per_s": round(cpus * 1000 / ms["total"], 1) if ms["total"] else None,
            "host_cores_busy": _div(host_s, wall_s),
            "unmeasured": unmeasured or [],
        },
    }


def _rank(name: str) -> int:
    return PARTS.index(name) if name in PARTS else len(PARTS)


def _ms(value: float | None, events: int) -> float | None:
    return round(value * 1000 / events, 3) if value is not None and events else None


def _div(value: float | None, wall_s: float) -> float | None:
    return round(value / wall_s, 2) if value is not None and wall_s > 0 else None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)

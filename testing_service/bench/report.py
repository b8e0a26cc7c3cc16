"""The speed targets, the ratios against cases 1, 5 and 6, and the printed table."""

from __future__ import annotations

from typing import Any

MIB = 1024 * 1024
# "Flat": the listener grows by at most this much over 100,000 events.
FLAT_GROWTH_BYTES_PER_100K = 10 * MIB


def _get(results: dict[str, Any], *path: str) -> Any:
    value: Any = results
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def _div(a: Any, b: Any) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def ratios(cases: dict[str, Any]) -> dict[str, Any]:
    """The platform's figures over the floor's, the container-per-event design's and Celery's."""
    rate_1 = _get(cases, "throughput1", "events_per_s")
    rate_100 = _get(cases, "throughput100", "events_per_s")
    p50 = _get(cases, "warm", "latency", "p50_ms")
    out: dict[str, Any] = {}
    for name, rate, latency in (
        (
            "floor",
            _get(cases, "floor", "throughput", "events_per_s"),
            _get(cases, "floor", "latency", "p50_ms"),
        ),
        (
            "per_event",
            _get(cases, "per_event", "events_per_s"),
            _get(cases, "per_event", "latency", "p50_ms"),
        ),
        (
            "celery",
            _get(cases, "celery", "events_per_s"),
            _get(cases, "celery", "latency", "p50_ms"),
        ),
    ):
        out[name] = {
            "throughput_1_over_it": _div(rate_1, rate),
            "throughput_100_over_it": _div(rate_100, rate),
            "its_p50_over_warm_p50": _div(latency, p50),
        }
    return out


def targets(cases: dict[str, Any], ratio: dict[str, Any]) -> list[dict[str, Any]]:
    """Each speed target with the measured figure and whether it is met (None: not run)."""
    memory = cases.get("memory") or {}
    growth_100k = None
    if memory.get("events"):
        growth_100k = memory["growth_bytes"] / memory["events"] * 100_000
    idle = _get(cases, "warm", "idle_warm_container", "resident_bytes")
    rows = [
        ("warm latency p50", _get(cases, "warm", "latency", "p50_ms"), "<=", 1.0, "ms"),
        ("warm latency p99", _get(cases, "warm", "latency", "p99_ms"), "<=", 3.0, "ms"),
        (
            "throughput, 1 function",
            _get(cases, "throughput1", "events_per_s"),
            ">=",
            3000,
            "events/s",
        ),
        (
            "throughput, 100 of 10,000 functions",
            _get(cases, "throughput100", "events_per_s"),
            ">=",
            3000,
            "events/s",
        ),
        (
            "throughput without ids over with them (1 function)",
            _div(
                _get(cases, "throughput1_noid", "events_per_s"),
                _get(cases, "throughput1", "events_per_s"),
            ),
            ">=",
            0.9,
            "x",
        ),
        (
            "standalone process over in-process throughput (1 function)",
            _div(
                _get(cases, "standalone", "events_per_s"),
                _get(cases, "throughput1", "events_per_s"),
            ),
            ">=",
            0.9,
            "x",
        ),
        (
            "throughput (1 function) over Celery's",
            _get(ratio, "celery", "throughput_1_over_it"),
            ">=",
            2.0,
            "x",
        ),
        (
            "Celery's p50 over warm p50 (platform lower)",
            _get(ratio, "celery", "its_p50_over_warm_p50"),
            ">",
            1.0,
            "x",
        ),
        (
            "throughput (1 function) over container per event",
            _get(ratio, "per_event", "throughput_1_over_it"),
            ">=",
            500.0,
            "x",
        ),
        (
            "cold start with pool p50",
            _get(cases, "cold", "with_pool", "latency", "p50_ms"),
            "<=",
            25.0,
            "ms",
        ),
        (
            "idle warm container (resident)",
            None if idle is None else round(idle / MIB, 2),
            "<=",
            10.0,
            "MiB",
        ),
        (
            "cluster throughput, 2 workers over 1",
            _get(cases, "cluster", "throughput_ratio", "2"),
            ">=",
            1.8,
            "x",
        ),
        (
            "cluster throughput, 4 workers over 1",
            _get(cases, "cluster", "throughput_ratio", "4"),
            ">=",
            3.4,
            "x",
        ),
        (
            "cluster warm-hit rate, 20 functions on 4 hosts",
            _percent(_get(cases, "cluster", "warm", "warm_hit_rate")),
            ">=",
            95.0,
            "%",
        ),
        (
            "listener growth per 100,000 events",
            None if growth_100k is None else round(growth_100k / MIB, 2),
            "<=",
            FLAT_GROWTH_BYTES_PER_100K / MIB,
            "MiB",
        ),
    ]
    checks = {"<=": lambda a, b: a <= b, ">=": lambda a, b: a >= b, ">": lambda a, b: a > b}
    return [
        {
            "target": name,
            "measured": value,
            "goal": f"{op} {goal:g} {unit}",
            "unit": unit,
            "met": None if value is None else checks[op](value, goal),
        }
        for name, value, op, goal, unit in rows
    ]


def _percent(fraction: Any) -> float | None:
    return None if fraction is None else round(fraction * 100, 2)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def measurements(cases: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(case, events/s, p50 ms, p99 ms) for every case that ran."""
    rows = []

    def add(label: str, rate: Any, latency: Any) -> None:
        latency = latency or {}
        rows.append((label, _fmt(rate), _fmt(latency.get("p50_ms")), _fmt(latency.get("p99_ms"))))

    c = cases
    if "floor" in c:
        add(
            "1 broker floor (pika, no work)",
            _get(c, "floor", "throughput", "events_per_s"),
            _get(c, "floor", "latency"),
        )
    if "warm" in c:
        add("2 warm latency, trivial function", None, _get(c, "warm", "latency"))
    if "throughput1" in c:
        add("3a throughput, 1 function", _get(c, "throughput1", "events_per_s"), None)
    if "throughput1_noid" in c:
        add(
            "3c throughput, 1 function, events without ids",
            _get(c, "throughput1_noid", "events_per_s"),
            None,
        )
    if "standalone" in c:
        add(
            "3d throughput, 1 function, the lambda-os standalone process",
            _get(c, "standalone", "events_per_s"),
            None,
        )
    if "throughput100" in c:
        label = f"3b throughput, {_fmt(_get(c, 'throughput100', 'receiving'))} of {_fmt(_get(c, 'throughput100', 'registered'))} functions"
        add(label, _get(c, "throughput100", "events_per_s"), None)
    if "cold" in c:
        add("4 cold start, with pool", None, _get(c, "cold", "with_pool", "latency"))
        add("4 cold start, without pool", None, _get(c, "cold", "without_pool", "latency"))
    if "per_event" in c:
        add(
            "5 container per event (docker run, 2 at once)",
            _get(c, "per_event", "events_per_s"),
            _get(c, "per_event", "latency"),
        )
    if "celery" in c:
        label = (
            f"6 Celery ({_get(c, 'celery', 'pool')} x{_get(c, 'celery', 'concurrency')}, rpc://)"
        )
        add(label, _get(c, "celery", "events_per_s"), _get(c, "celery", "latency"))
    if "cluster" in c and "throughput" in c["cluster"]:
        add(
            "8 standalone, one at a time (same catalogue)",
            None,
            _get(c, "cluster", "standalone_latency"),
        )
        add(
            "8 cluster, one at a time (router + 1 worker)",
            None,
            _get(c, "cluster", "cluster_latency"),
        )
        for workers, figures in c["cluster"]["throughput"].items():
            add(
                f"8 cluster, {figures['in_flight']} in flight on {workers} worker(s)",
                figures.get("events_per_s"),
                figures.get("latency"),
            )
    if "processes" in c and "listeners" in c["processes"]:
        for count, figures in c["processes"]["listeners"].items():
            add(
                f"processes, {count} listener process(es) on one queue, real catalogue",
                figures.get("events_per_s"),
                None,
            )
    return rows


def table(results: dict[str, Any]) -> str:
    """The printed report: measurements, ratios, targets, errors."""
    cases = results["cases"]
    lines = []
    rows = [("case", "events/s", "p50 ms", "p99 ms"), *measurements(cases)]
    width = max(len(row[0]) for row in rows)
    for row in rows:
        lines.append(f"{row[0]:<{width}}  {row[1]:>10}  {row[2]:>9}  {row[3]:>9}")
    cleanup = _get(cases, "warm", "cleanup_us")
    if isinstance(cleanup, dict) and cleanup.get("executions"):
        lines.append(
            f"2 clean start of each warm execution (agent cleanup + host check): "
            f"p50 {cleanup['p50']:.0f} µs, p99 {cleanup['p99']:.0f} µs "
            f"over {cleanup['executions']:,} executions"
        )
    memory = cases.get("memory")
    if memory and "events" in memory:
        lines.append(
            f"7 listener RSS {memory['rss_before_bytes'] / MIB:.1f} -> {memory['rss_after_bytes'] / MIB:.1f} MiB "
            f"over {memory['events']:,} events ({memory['growth_bytes_per_event']} bytes/event"
            f"{', stopped by the time limit' if memory['stopped_by_time_limit'] else ''})"
        )
        if memory.get("catalogue_fill_events"):
            lines.append(
                f"  after {memory['catalogue_fill_events']:,} events that filled the in-memory "
                f"catalogue to its bound: +{memory['catalogue_fill_bytes'] / MIB:.1f} MiB "
                f"from {memory['rss_start_bytes'] / MIB:.1f} MiB"
            )
    idle = _get(cases, "warm", "idle_warm_container")
    if idle and idle.get("resident_bytes") is not None:
        lines.append(
            f"7 idle warm container {idle['resident_bytes'] / MIB:.1f} MiB resident "
            f"({idle['usage_bytes'] / MIB:.1f} MiB cgroup usage with page cache)"
        )
    lines.append("")
    for name, ratio in results["ratios"].items():
        parts = [f"{key} {_fmt(value)}" for key, value in ratio.items() if value is not None]
        if parts:
            lines.append(f"ratio vs {name}: " + ", ".join(parts))
    lines.append("")
    rows = [("target", "measured", "goal", "met")]
    for target in results["targets"]:
        met = {True: "yes", False: "NO", None: "not run"}[target["met"]]
        rows.append((target["target"], _fmt(target["measured"]), target["goal"], met))
    width = max(len(row[0]) for row in rows)
    for row in rows:
        lines.append(f"{row[0]:<{width}}  {row[1]:>10}  {row[2]:<18}  {row[3]}")
    for name, case in cases.items():
        if isinstance(case, dict) and "error" in case:
            lines.append(f"case {name} FAILED: {case['error']}")
    section = cpu_section(cases)
    if section:
        lines += ["", section]
    section = cluster_section(cases.get("cluster") or {})
    if section:
        lines += ["", section]
    section = processes_section(cases.get("processes") or {})
    if section:
        lines += ["", section]
    return "\n".join(lines)


# The cluster's parts, in the order an event meets them.
CLUSTER_PARTS = ("broker", "load_driver", "router", "catalogue", "workers", "containers")


def cluster_section(case: dict[str, Any]) -> str:
    """The cluster case: hop, scaling, warm hits, then CPU and catalogue commands per event."""
    if "throughput" not in case:
        return ""
    lines = [
        (
            f"8 cluster ({case.get('catalogue')}, {case.get('slots_per_worker')} slots per worker): "
            f"the hop adds {_fmt(case.get('hop_added_p50_ms'))} ms at p50, "
            f"{_fmt(case.get('hop_added_p95_ms'))} ms at p95 over standalone"
        )
    ]
    ratios = case.get("throughput_ratio") or {}
    lines.append(
        "  throughput over 1 worker: "
        + ", ".join(f"{n} workers {_fmt(ratio)}x" for n, ratio in ratios.items())
    )
    warm = case.get("warm") or {}
    if warm:
        lines.append(
            f"  warm hits: {_fmt(warm.get('warm_hits'))} of {_fmt(warm.get('events'))} events "
            f"({_fmt(_percent(warm.get('warm_hit_rate')))} %) over {warm.get('functions')} "
            f"functions on {warm.get('workers')} workers, {warm.get('in_flight')} in flight "
            f"({_fmt(_percent(warm.get('warm_hit_rate_second_half')))} % in the second half)"
        )
    header = ("workers", *CLUSTER_PARTS, "total", "commands")
    rows = [header]
    for workers, figures in case["throughput"].items():
        ms = figures.get("cpu_ms_per_event") or {}
        commands = (figures.get("catalogue_commands_per_event") or {}).get("total")
        rows.append(
            (
                workers,
                *(_fmt(ms.get(part)) for part in CLUSTER_PARTS),
                _fmt(ms.get("total")),
                _fmt(commands),
            )
        )
    lines.append("  CPU ms per event by part, and catalogue commands per event:")
    for row in rows:
        lines.append("  " + "".join(f"{cell:>12}" for cell in row))
    for workers, figures in case["throughput"].items():
        commands = figures.get("catalogue_commands_per_event") or {}
        named = [f"{name} {value}" for name, value in commands.items() if name != "total"]
        if named:
            lines.append(f"  commands per event, {workers} worker(s): " + ", ".join(named))
    return "\n".join(lines)


# The processes case's parts, in the order an event meets them.
PROCESSES_PARTS = ("broker", "load_driver", "listener", "catalogue", "containers")


def processes_section(case: dict[str, Any]) -> str:
    """The processes case: two listener processes over one, CPU and commands per event,
    and the share of the one listener's CPU in the catalogue client."""
    if "listeners" not in case:
        return ""
    lines = [
        (
            f"processes ({case.get('catalogue')}, concurrency "
            f"{case.get('concurrency_per_listener')} per listener): "
            f"two listener processes over one {_fmt(case.get('two_over_one'))}x"
        )
    ]
    header = ("listeners", *PROCESSES_PARTS, "total", "cores busy", "commands")
    rows = [header]
    for count, figures in case["listeners"].items():
        ms = figures.get("cpu_ms_per_event") or {}
        commands = (figures.get("catalogue_commands_per_event") or {}).get("total")
        rows.append(
            (
                count,
                *(_fmt(ms.get(part)) for part in PROCESSES_PARTS),
                _fmt(ms.get("total")),
                _fmt(figures.get("cores_busy")),
                _fmt(commands),
            )
        )
    lines.append("  CPU ms per event by part, and catalogue commands per event:")
    for row in rows:
        lines.append("  " + "".join(f"{cell:>12}" for cell in row))
    for count, figures in case["listeners"].items():
        each = ", ".join(_fmt(value) for value in figures.get("listener_cpu_s_each") or [])
        commands = figures.get("catalogue_commands_per_event") or {}
        named = ", ".join(f"{name} {value}" for name, value in commands.items() if name != "total")
        cut = ", stopped by the time limit" if figures.get("stopped_by_time_limit") else ""
        lines.append(
            f"  {count} listener(s): {_fmt(figures.get('events'))} events{cut}; "
            f"CPU s each {each}; commands per event: {named}"
        )
        for note in _get(figures, "cpu", "unmeasured") or []:
            lines.append(f"    {note}")
    client = case.get("catalogue_client") or {}
    if "share" in client:
        lines.append(
            f"  the catalogue client in 1 listener (py-spy, a second run): "
            f"{_fmt(_percent(client['share']))} % of GIL samples, "
            f"{_fmt(client.get('catalogue_cpu_ms_per_event'))} of "
            f"{_fmt(client.get('listener_cpu_ms_per_event'))} CPU ms per event "
            f"(GIL held: {_fmt(client.get('catalogue_gil_ms_per_event'))} of "
            f"{_fmt(client.get('gil_ms_per_event'))} ms)"
        )
    elif client:
        lines.append(f"  the catalogue client in 1 listener: {client.get('skipped')}")
    return "\n".join(lines)


# The cases whose timed throughput run is read by ``cpu.CpuMeter``, as the table names them.
CPU_CASES = (
    ("floor", "1 broker floor"),
    ("throughput1", "3a throughput, 1 function"),
    ("throughput1_noid", "3c throughput, 1 function, no ids"),
    ("standalone", "3d throughput, standalone process"),
    ("throughput100", "3b throughput, 100 functions"),
    ("celery", "6 Celery"),
)
# The part that consumes the events: the floor's consumer, the listener (in this process or
# the standalone process's) or Celery's worker.
CONSUMERS = ("consumer", "listener", "standalone", "worker")


def cpu_section(cases: dict[str, Any]) -> str:
    """CPU ms per event of every part, for each case that read it; empty if none did.

    On two cores what caps a rate is the CPU all the processes spend per event,
    so beside the parts stands the ceiling it implies (cores over total CPU per
    event) and how busy the host was (more than the parts: something else ran).
    """
    found = [
        (label, cases[name])
        for name, label in CPU_CASES
        if "cpu_ms_per_event" in cases.get(name, {})
    ]
    if not found:
        return ""
    cpus = _get(found[0][1], "cpu", "cpus")
    header = (
        "case",
        "broker",
        "load driver",
        "consumer",
        "containers",
        "total",
        "cores busy",
        "host busy",
        f"ceiling/s, {cpus} cores",
    )
    rows = [header]
    notes = []
    for label, case in found:
        ms = case["cpu_ms_per_event"]
        figures = case.get("cpu", {})
        values = (
            ms.get("broker"),
            ms.get("load_driver"),
            next((ms[key] for key in CONSUMERS if key in ms), None),
            ms.get("containers"),
            ms.get("total"),
            case.get("cores_busy"),
            figures.get("host_cores_busy"),
            figures.get("ceiling_events_per_s"),
        )
        rows.append((label, *map(_fmt, values)))
        notes += [f"  {label}: {note}" for note in figures.get("unmeasured", [])]
    width = max(len(row[0]) for row in rows)
    lines = [
        "CPU per event (ms) in each throughput run (consumer: floor, listener or Celery worker)"
    ]
    for row in rows:
        cells = "".join(f"  {cell:>{len(title)}}" for cell, title in zip(row[1:], header[1:]))
        lines.append(f"{row[0]:<{width}}{cells}")
    return "\n".join(lines + notes)

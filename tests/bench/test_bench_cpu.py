"""Where the CPU goes per event: the readings of /proc and cgroups, the arithmetic, the section.

Plain files under ``tmp_path`` stand in for ``/proc`` and ``/sys/fs/cgroup``, and
readings are plain dicts, so nothing here needs the broker, Docker or a clock.
"""

from __future__ import annotations

from pathlib import Path

from testing_service.bench import cpu
from testing_service.bench.report import cpu_section, table

# utime 250 and stime 50 ticks (fields 14 and 15), ppid 1.
BEAM_STAT = "2945 (beam.smp) S 1 2945 2945 0 -1 4194560 9 0 0 0 250 50 0 0 20 0 30 0 17 0 0\n"


def _pid_stat(pid: int, comm: str, ppid: int, ticks: int) -> str:
    return f"{pid} ({comm}) S {ppid} {pid} {pid} 0 -1 0 0 0 0 0 {ticks} 0 0 0 20 0 1 0 1 0 0\n"


def _fake_proc(tmp_path: Path, processes: list[tuple[int, str, int, int]]) -> Path:
    proc = tmp_path / "proc"
    for pid, comm, ppid, ticks in processes:
        (proc / str(pid)).mkdir(parents=True)
        (proc / str(pid) / "stat").write_text(_pid_stat(pid, comm, ppid, ticks))
    (proc / "self").mkdir()  # not a pid: skipped
    return proc


def test_a_pid_stat_line_gives_name_parent_and_user_plus_system_seconds() -> None:
    assert cpu.parse_pid_stat(BEAM_STAT, ticks=100) == ("beam.smp", 1, 3.0)


def test_a_command_name_with_spaces_and_parentheses_does_not_shift_the_fields() -> None:
    line = _pid_stat(7, "odd (name) x", 3, 120)
    assert cpu.parse_pid_stat(line, ticks=100) == ("odd (name) x", 3, 1.2)


def test_the_broker_is_found_by_its_command_name(tmp_path: Path) -> None:
    proc = _fake_proc(tmp_path, [(10, "beam.smp", 1, 100), (11, "python", 1, 900)])
    ticks = cpu.CLOCK_TICKS
    assert cpu.named("beam.smp", proc) == {"10": 100 / ticks}


def test_a_worker_tree_holds_the_worker_and_all_its_descendants(tmp_path: Path) -> None:
    # pid order is not parent-before-child: 5 is the child of 30.
    proc = _fake_proc(
        tmp_path,
        [(5, "celery", 30, 1), (20, "celery", 1, 1), (30, "celery", 20, 1), (40, "other", 1, 1)],
    )
    assert set(cpu.tree(20, proc)) == {"20", "30", "5"}


def test_a_cgroup_v1_container_reads_cpuacct_usage_in_nanoseconds(tmp_path: Path) -> None:
    directory = tmp_path / "cpuacct" / "docker" / "abc"
    directory.mkdir(parents=True)
    (directory / "cpuacct.usage").write_text("1500000000\n")
    assert cpu.cgroup_cpu_s("abc", tmp_path) == 1.5


def test_a_cgroup_v2_container_reads_usage_usec_from_cpu_stat(tmp_path: Path) -> None:
    directory = tmp_path / "system.slice" / "docker-abc.scope"
    directory.mkdir(parents=True)
    (directory / "cpu.stat").write_text("usage_usec 250000\nuser_usec 200000\nsystem_usec 50000\n")
    assert cpu.cgroup_cpu_s("abc", tmp_path) == 0.25


def test_a_container_without_a_cgroup_reads_as_none(tmp_path: Path) -> None:
    assert cpu.cgroup_cpu_s("gone", tmp_path) is None


def test_the_host_busy_time_leaves_out_idle_and_iowait() -> None:
    text = "cpu  100 10 50 9000 300 5 5 30 0 0\ncpu0 50 5 25 4500 150 2 3 15 0 0\n"
    assert cpu.parse_host_stat(text, ticks=100) == 2.0


def test_spent_counts_what_appeared_during_the_run_from_zero() -> None:
    assert cpu.spent("containers", {"a": 1.0}, {"a": 1.5, "b": 0.25}) == (0.75, [])


def test_spent_names_what_was_gone_or_unreadable_instead_of_guessing() -> None:
    seconds, notes = cpu.spent("containers", {"a": 1.0, "b": 2.0}, {"a": 1.5, "c": None})
    assert seconds == 0.5
    assert notes == [
        "containers: 1 gone before the end of the run, their CPU not counted",
        "containers: 1 could not be read, their CPU not counted",
    ]


def test_spent_of_a_part_not_found_at_all_is_none() -> None:
    assert cpu.spent("broker", {}, {}) == (None, ["broker: none found"])


def test_per_event_divides_each_part_and_the_total_by_the_events() -> None:
    figures = cpu.per_event(
        {"listener": 2.0, "broker": 1.0, "load_driver": 0.5, "containers": 0.5},
        events=1000,
        wall_s=2.5,
        cpus=2,
        host_s=4.5,
    )
    assert figures["cpu_ms_per_event"] == {
        "broker": 1.0,
        "load_driver": 0.5,
        "listener": 2.0,
        "containers": 0.5,
        "total": 4.0,
    }
    assert list(figures["cpu_ms_per_event"]) == [
        "broker",
        "load_driver",
        "listener",
        "containers",
        "total",
    ]
    assert figures["cores_busy"] == 1.6
    assert figures["cpu"]["ceiling_events_per_s"] == 500.0
    assert figures["cpu"]["host_cores_busy"] == 1.8


def test_per_event_with_an_unmeasured_part_totals_the_rest_and_says_so() -> None:
    figures = cpu.per_event(
        {"broker": None, "consumer": 1.0}, 500, 1.0, 2, unmeasured=["broker: none found"]
    )
    assert figures["cpu_ms_per_event"] == {"broker": None, "consumer": 2.0, "total": 2.0}
    assert figures["cpu"]["unmeasured"] == ["broker: none found"]


def test_the_meter_reads_every_part_at_start_and_stop() -> None:
    readings = {"broker": [{"1": 10.0}, {"1": 11.0}], "listener": [{"bench": 5.0}, {"bench": 7.0}]}
    clock = iter([100.0, 102.0])
    host = iter([50.0, 54.0])
    meter = cpu.CpuMeter(
        {name: (lambda values=values: values.pop(0)) for name, values in readings.items()},
        cpus=2,
        clock=lambda: next(clock),
        host=lambda: next(host),
    )

    meter.start()
    meter.stop()
    figures = meter.figures(1000, load_driver=1.0)

    assert figures["cpu_ms_per_event"] == {
        "broker": 1.0,
        "load_driver": 1.0,
        "listener": 2.0,
        "total": 4.0,
    }
    assert figures["cores_busy"] == 2.0
    assert figures["cpu"]["host_cores_busy"] == 2.0
    assert figures["cpu"]["wall_s"] == 2.0


def test_a_load_driver_that_did_not_report_is_named_as_unmeasured() -> None:
    meter = cpu.CpuMeter({}, cpus=2, clock=lambda: 0.0, host=lambda: None)
    meter.start()
    meter.stop()
    assert meter.figures(10, load_driver=None)["cpu"]["unmeasured"] == [
        "load_driver: did not report its CPU"
    ]


def test_the_cpu_section_has_a_row_per_case_and_the_ceiling_on_the_cores() -> None:
    floor = cpu.per_event({"broker": 0.5, "load_driver": 0.25, "consumer": 0.25}, 1000, 1.0, 2)
    platform = cpu.per_event(
        {"broker": 1.0, "load_driver": 0.5, "listener": 2.0, "containers": None},
        1000,
        2.0,
        2,
        unmeasured=["containers: 1 gone before the end of the run, their CPU not counted"],
    )
    cases = {"floor": floor, "throughput1": platform, "warm": {"latency": {}}}

    section = cpu_section(cases)

    lines = section.splitlines()
    assert lines[0].startswith("CPU per event (ms)")
    assert lines[1].split()[:2] == ["case", "broker"]
    assert lines[2].split()[3:8] == ["0.500", "0.250", "0.250", "-", "1.000"]
    assert lines[2].endswith("2,000.0")  # 2 cores / 1 ms per event
    assert lines[3].split()[-1] == "571.4"  # 2 cores / 3.5 ms per event
    assert lines[4] == (
        "  3a throughput, 1 function: "
        "containers: 1 gone before the end of the run, their CPU not counted"
    )


def test_the_printed_table_ends_with_the_cpu_section_and_omits_it_when_none_ran() -> None:
    floor = cpu.per_event({"broker": 0.5, "consumer": 0.25}, 1000, 1.0, 2)
    results = {"cases": {"floor": floor}, "ratios": {}, "targets": []}
    assert table(results).splitlines()[-2].startswith("case")
    assert "CPU per event" not in table({"cases": {}, "ratios": {}, "targets": []})

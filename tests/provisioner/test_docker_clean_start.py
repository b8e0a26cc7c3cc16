"""Specification: every execution starts clean; nothing of one run survives into the next (issue #17).

A warm container keeps what AWS Lambda keeps between runs of one function
version (module state, files in /tmp) and never what a run left running: its
processes are killed when the handler returns, output written after that is
dropped, and a container that cannot be cleared (a thread still running) is
retired. Running out of memory by filling /tmp says so.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration

# Every process in the container but PID 1 and the handler's own, from /proc inside.
OTHERS = """
def others():
    import os
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) not in (1, os.getpid()):
            try:
                found.append(open(f"/proc/{name}/cmdline").read().replace("\\0", " "))
            except OSError:
                pass
    return found
"""

FORK_BOMB = (
    """
import os, subprocess, sys, time
BOMB = '''
import os, time
while True:
    try:
        os.fork()
    except OSError:
        time.sleep(0.01)
'''
def handler(event, context):
    if event == "bomb":
        subprocess.Popen([sys.executable, "-c", BOMB])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                pid = os.fork()
            except BlockingIOError:
                return "the pids limit was reached"
            if pid == 0:
                os._exit(0)
            os.waitpid(pid, 0)
            time.sleep(0.05)
        return "the bomb never reached the pids limit"
    done = subprocess.run(
        [sys.executable, "-c", "print('forked')"], capture_output=True, text=True, check=True
    )
    return {"child said": done.stdout.strip(), "others": others()}
"""
    + OTHERS
)

# Left running after the handler returns: each prints for 5 s, from a moment after.
LEAVE_BEHIND = (
    """
import subprocess, sys, threading, time
CHILD = '''
import time
time.sleep(0.3)
for i in range(50):
    print("left behind by a child process", i, flush=True)
    time.sleep(0.1)
'''
def chatter():
    time.sleep(0.3)
    for i in range(50):
        print("left behind by a thread", i, flush=True)
        time.sleep(0.1)
def handler(event, context):
    if event in ("child", "child and thread"):
        subprocess.Popen([sys.executable, "-c", CHILD, "lambda-os-left-behind"])
    if event == "child and thread":
        threading.Thread(target=chatter, daemon=True).start()
    if event == "look":
        time.sleep(1.0)  # anything still alive would print into this execution
        return others()
    return event
"""
    + OTHERS
)


def exists(docker_client, container_id: str) -> bool:
    return bool(docker_client.containers.list(all=True, filters={"id": container_id}))


def processes_in(docker_client, container_id: str) -> list[str]:
    """The command lines ``docker top`` lists for the container."""
    top = docker_client.containers.get(container_id).top()
    column = top["Titles"].index("CMD")
    return [process[column] for process in top["Processes"]]


def test_after_a_fork_bomb_the_next_run_in_the_same_warm_container_forks_and_succeeds(
    backend, invocation
):
    provisioner = backend(pool_size=0)
    bombed = provisioner.run(invocation(FORK_BOMB, "bomb", memory_mb=256, timeout_s=30))
    after = provisioner.run(invocation(FORK_BOMB, "fork", memory_mb=256, timeout_s=30))

    assert (bombed.status, bombed.result) == ("succeeded", "the pids limit was reached")
    assert after.status == "succeeded", after.error
    assert after.result == {"child said": "forked", "others": []}
    assert after.container_id == bombed.container_id
    assert after.cold_start is False


def test_a_child_process_left_printing_is_gone_and_silent_before_the_next_execution(
    backend, invocation, docker_client
):
    provisioner = backend(pool_size=0)
    first = provisioner.run(invocation(LEAVE_BEHIND, "child"))
    second = provisioner.run(invocation(LEAVE_BEHIND, "look"))

    assert (first.status, second.status) == ("succeeded", "succeeded")
    assert second.container_id == first.container_id  # still warm: nothing was left in it
    assert second.cold_start is False
    assert second.result == []
    assert "left behind" not in first.logs + second.logs
    processes = processes_in(docker_client, second.container_id)
    assert len(processes) == 2, processes  # docker-init and the agent
    assert not any("lambda-os-left-behind" in command for command in processes)


def test_a_thread_left_printing_retires_its_container_and_reaches_no_later_execution(
    backend, invocation, docker_client
):
    provisioner = backend(pool_size=0)
    first = provisioner.run(invocation(LEAVE_BEHIND, "child and thread"))
    second = provisioner.run(invocation(LEAVE_BEHIND, "look"))

    assert (first.status, first.result) == ("succeeded", "child and thread")
    assert second.status == "succeeded", second.error
    assert second.result == []
    assert "left behind" not in first.logs + second.logs
    # A thread cannot be ended inside the agent's process: the container went with it.
    assert second.container_id != first.container_id
    assert not exists(docker_client, first.container_id)


def test_threads_the_handler_waited_for_leave_its_container_warm(backend, invocation):
    source = """
    from concurrent.futures import ThreadPoolExecutor
    def handler(event, context):
        with ThreadPoolExecutor(4) as pool:  # its threads end when the block does
            return sum(pool.map(len, ["a", "bb", "ccc"]))
    """
    provisioner = backend(pool_size=0)
    first = provisioner.run(invocation(source))
    second = provisioner.run(invocation(source))

    assert (first.result, second.result) == (6, 6)
    assert second.container_id == first.container_id
    assert second.cold_start is False


def test_a_forked_child_that_returns_from_the_handler_does_not_answer_for_the_agent(
    backend, invocation
):
    source = """
    import os, time
    def handler(event, context):
        if os.fork() == 0:
            return "from the child"  # no os._exit: it falls back into the agent's loop
        time.sleep(0.2)
        return "from the agent"
    """
    provisioner = backend(pool_size=0)
    first = provisioner.run(invocation(source))
    second = provisioner.run(invocation(source))

    assert (first.status, first.result) == ("succeeded", "from the agent")
    assert (second.status, second.result) == ("succeeded", "from the agent")
    assert second.container_id == first.container_id


def test_a_function_that_silences_the_agents_cleanup_still_has_its_container_retired(
    backend, invocation, docker_client
):
    source = """
    import subprocess, sys
    def handler(event, context):
        if event == "hide":
            sys.modules["__main__"].clean_up = lambda: None  # the agent now says "clean"
            subprocess.Popen(["sleep", "60"])
        return event
    """
    provisioner = backend(pool_size=0)
    hidden = provisioner.run(invocation(source, "hide"))
    after = provisioner.run(invocation(source, "after"))

    assert (hidden.status, after.status) == ("succeeded", "succeeded")
    assert after.container_id != hidden.container_id  # the host counted the tasks itself
    assert not exists(docker_client, hidden.container_id)


def test_a_timer_armed_by_one_execution_never_fires_in_the_next(backend, invocation):
    source = """
    import signal, time
    def handler(event, context):
        if event == "arm":
            signal.signal(signal.SIGALRM, lambda *_: print("alarm from an earlier run"))
            signal.setitimer(signal.ITIMER_REAL, 0.3)
        else:
            time.sleep(0.8)
        return event
    """
    provisioner = backend(pool_size=0)
    armed = provisioner.run(invocation(source, "arm"))
    after = provisioner.run(invocation(source, "wait"))

    assert after.container_id == armed.container_id
    assert after.status == "succeeded", after.error
    assert "alarm" not in after.logs


def test_files_in_tmp_and_module_state_are_kept_for_the_next_run_of_the_same_version(
    backend, invocation
):
    source = """
    runs = 0
    def handler(event, context):
        global runs
        runs += 1
        with open("/tmp/runs", "a") as log:
            log.write(event)
        return {"runs": runs, "tmp": open("/tmp/runs").read()}
    """
    provisioner = backend(pool_size=0)
    provisioner.run(invocation(source, "a"))
    second = provisioner.run(invocation(source, "b"))

    assert second.cold_start is False
    assert second.result == {"runs": 2, "tmp": "ab"}


def test_a_function_that_fills_tmp_past_its_memory_is_told_the_memory_went_to_tmp(
    backend, invocation
):
    source = """
    def handler(event, context):
        chunk = b"t" * (1024 * 1024)
        with open("/tmp/fill", "wb") as fill:
            for _ in range(63):
                fill.write(chunk)
                fill.flush()
        return "never reached: /tmp held 63 MiB within 64 MB"
    """
    provisioner = backend(pool_size=0)
    outcome = provisioner.run(invocation(source, memory_mb=64))

    assert outcome.status == "failed"
    assert outcome.error["reason"] == "out of memory"
    assert "MiB of it in /tmp" in outcome.error["message"], outcome.error


def test_allocating_past_the_limit_with_an_empty_tmp_does_not_blame_tmp(backend, invocation):
    source = """
    def handler(event, context):
        hog = b"x" * (512 * 1024 * 1024)
        return len(hog)
    """
    provisioner = backend(pool_size=0)
    outcome = provisioner.run(invocation(source, memory_mb=64))

    assert outcome.error["reason"] == "out of memory"
    assert "/tmp" not in outcome.error["message"]

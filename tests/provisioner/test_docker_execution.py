"""Specification of one execution in a container on the real Docker Engine (issue #3)."""

from __future__ import annotations

import threading
import time

import pytest

pytestmark = pytest.mark.integration

HELLO = """
def handler(event, context):
    return {"hello": event["name"]}
"""


def removed(docker_client, container_id: str) -> bool:
    return not docker_client.containers.list(all=True, filters={"id": container_id})


def test_hello_returns_its_result_from_a_fresh_container(provisioner, invocation):
    outcome = provisioner.run(invocation(HELLO, {"name": "world"}))

    assert outcome.status == "succeeded"
    assert outcome.result == {"hello": "world"}
    assert outcome.error is None
    assert outcome.cold_start is True
    assert outcome.host
    assert outcome.container_id
    assert outcome.finished_at >= outcome.started_at
    assert outcome.duration_ms > 0


def test_capacity_is_the_configured_concurrency(provisioner, settings):
    assert provisioner.capacity == settings.concurrency


def test_context_gives_the_event_the_function_and_the_time_left(provisioner, invocation):
    source = """
    def handler(event, context):
        return {
            "event_id": context.event_id,
            "event_source": context.event_source,
            "event_type": context.event_type,
            "function_name": context.function_name,
            "function_version": context.function_version,
            "execution_id": context.execution_id,
            "memory_limit_in_mb": context.memory_limit_in_mb,
            "remaining": context.get_remaining_time_in_millis(),
            "remaining_property": context.remaining_time_in_millis,
            "attempt": context.attempt,
        }
    """
    run = invocation(source, None, function_name="ctx", function_version=7, memory_mb=96, attempt=3)

    outcome = provisioner.run(run)

    assert outcome.status == "succeeded", outcome.error
    context = outcome.result
    assert context["event_id"] == run.event_id
    assert context["event_source"] == "spec"
    assert context["event_type"] == "test"
    assert context["function_name"] == "ctx"
    assert context["function_version"] == 7
    assert context["execution_id"] == run.execution_id
    assert context["memory_limit_in_mb"] == 96
    assert context["attempt"] == 3
    assert 0 < context["remaining"] <= run.timeout_s * 1000
    assert 0 < context["remaining_property"] <= run.timeout_s * 1000


def test_environment_variables_reach_the_function(provisioner, invocation):
    source = """
    import os
    def handler(event, context):
        return {"greeting": os.environ.get("GREETING"), "agent": os.environ.get("LAMBDA_OS_AGENT_SOCKET")}
    """
    outcome = provisioner.run(invocation(source, environment={"GREETING": "hi"}))

    assert outcome.result == {"greeting": "hi", "agent": None}


def test_handler_exception_fails_with_type_message_and_traceback(provisioner, invocation):
    source = """
    def handler(event, context):
        raise ValueError("bad input: " + event)
    """
    outcome = provisioner.run(invocation(source, "oops"))

    assert outcome.status == "failed"
    assert outcome.result is None
    assert outcome.error["type"] == "ValueError"
    assert outcome.error["message"] == "bad input: oops"
    assert outcome.error["reason"] == "handler error"
    assert 'raise ValueError("bad input: " + event)' in outcome.error["traceback"]
    assert "/var/task/main.py" in outcome.error["traceback"]


def test_import_error_in_the_package_fails_as_handler_error(provisioner, invocation):
    outcome = provisioner.run(invocation("import no_such_module\n"))

    assert outcome.status == "failed"
    assert outcome.error["type"] == "ModuleNotFoundError"
    assert outcome.error["reason"] == "handler error"


def test_result_that_is_not_json_fails(provisioner, invocation):
    source = """
    def handler(event, context):
        return {"a set": {1, 2}}
    """
    outcome = provisioner.run(invocation(source))

    assert outcome.status == "failed"
    assert "not JSON-serialisable" in outcome.error["message"]
    assert outcome.error["reason"] == "handler error"


def test_sleep_past_timeout_is_timed_out_and_its_container_removed(
    provisioner, invocation, docker_client
):
    source = """
    import time
    def handler(event, context):
        print("going to sleep", flush=True)
        time.sleep(60)
    """
    outcome = provisioner.run(invocation(source, timeout_s=1))

    assert outcome.status == "timed_out"
    assert outcome.error["reason"] == "timeout"
    assert "going to sleep" in outcome.logs
    assert removed(docker_client, outcome.container_id)


def test_allocating_past_the_memory_limit_fails_out_of_memory(provisioner, invocation):
    source = """
    def handler(event, context):
        hog = b"x" * (512 * 1024 * 1024)
        return len(hog)
    """
    outcome = provisioner.run(invocation(source, memory_mb=64))

    assert outcome.status == "failed"
    assert outcome.error["reason"] == "out of memory"


def test_runtime_exiting_mid_execution_is_reported_crashed(provisioner, invocation, docker_client):
    source = """
    import os
    def handler(event, context):
        print("about to exit")
        os._exit(3)
    """
    outcome = provisioner.run(invocation(source))

    assert outcome.status == "failed"
    assert outcome.error["reason"] == "crashed"
    assert "about to exit" in outcome.logs
    assert removed(docker_client, outcome.container_id)


def test_stdout_stderr_and_subprocess_output_are_captured(provisioner, invocation):
    source = """
    import subprocess, sys
    def handler(event, context):
        print("to stdout")
        print("to stderr", file=sys.stderr)
        subprocess.run(["echo", "from a subprocess"], check=True)
        return "done"
    """
    outcome = provisioner.run(invocation(source))

    assert outcome.status == "succeeded"
    assert "to stdout" in outcome.logs
    assert "to stderr" in outcome.logs
    assert "from a subprocess" in outcome.logs


def test_output_keeps_only_the_last_64_kib(provisioner, invocation):
    source = """
    def handler(event, context):
        for i in range(4000):
            print(f"line {i:05d} " + "x" * 90)
        print("THE END")
        return "done"
    """
    outcome = provisioner.run(invocation(source))

    assert outcome.status == "succeeded"
    assert len(outcome.logs.encode()) <= 64 * 1024
    assert outcome.logs.rstrip().endswith("THE END")
    assert "line 00000 " not in outcome.logs
    assert "line 03999 " in outcome.logs


def test_container_sees_only_the_loopback_interface(provisioner, invocation):
    source = """
    import os
    def handler(event, context):
        return sorted(os.listdir("/sys/class/net"))
    """
    outcome = provisioner.run(invocation(source))

    assert outcome.result == ["lo"]


def test_function_asking_for_network_gets_an_interface_beyond_loopback(provisioner, invocation):
    source = """
    import os
    def handler(event, context):
        return sorted(os.listdir("/sys/class/net"))
    """
    outcome = provisioner.run(invocation(source, network=True))

    assert "lo" in outcome.result
    assert len(outcome.result) > 1


def test_runs_as_non_root_on_a_read_only_root_with_a_writable_tmp(provisioner, invocation):
    source = """
    import os
    def handler(event, context):
        try:
            open("/var/task/new-file", "w")
            root_writable = True
        except OSError:
            root_writable = False
        try:
            open("/etc/new-file", "w")
            etc_writable = True
        except OSError:
            etc_writable = False
        with open("/tmp/scratch", "w") as scratch:
            scratch.write("ok")
        return {
            "uid": os.getuid(),
            "gid": os.getgid(),
            "task_writable": root_writable,
            "etc_writable": etc_writable,
            "tmp": open("/tmp/scratch").read(),
        }
    """
    outcome = provisioner.run(invocation(source))

    assert outcome.result == {
        "uid": 10001,
        "gid": 10001,
        "task_writable": False,
        "etc_writable": False,
        "tmp": "ok",
    }


def test_tmp_is_small_and_root_filesystem_is_mounted_read_only(provisioner, invocation):
    source = """
    import os
    def handler(event, context):
        mounts = {}
        for line in open("/proc/self/mounts"):
            device, point, kind, options = line.split()[:4]
            mounts[point] = {"kind": kind, "options": options.split(",")}
        tmp = os.statvfs("/tmp")
        return {"root": mounts["/"], "tmp": mounts["/tmp"], "tmp_bytes": tmp.f_blocks * tmp.f_frsize}
    """
    outcome = provisioner.run(invocation(source))

    assert "ro" in outcome.result["root"]["options"]
    assert outcome.result["tmp"]["kind"] == "tmpfs"
    assert outcome.result["tmp_bytes"] <= 64 * 1024 * 1024


def test_the_function_holds_no_capabilities_and_cannot_gain_any(provisioner, invocation):
    source = """
    def handler(event, context):
        fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
        return {key: fields[key].strip() for key in ("CapEff", "CapPrm", "CapBnd", "NoNewPrivs")}
    """
    outcome = provisioner.run(invocation(source))

    assert outcome.result == {
        "CapEff": "0000000000000000",
        "CapPrm": "0000000000000000",
        "CapBnd": "0000000000000000",
        "NoNewPrivs": "1",
    }


def test_a_fork_bomb_is_stopped_by_the_pids_limit(provisioner, invocation):
    source = """
    import os, signal, time
    def handler(event, context):
        children, error = [], None
        try:
            for _ in range(1000):
                pid = os.fork()
                if pid == 0:
                    time.sleep(60)
                    os._exit(0)
                children.append(pid)
        except OSError as exc:
            error = type(exc).__name__
        for pid in children:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        return {"children": len(children), "error": error}
    """
    outcome = provisioner.run(invocation(source, timeout_s=30))

    assert outcome.status == "succeeded", outcome.error
    assert outcome.result["error"] == "BlockingIOError"
    assert outcome.result["children"] < 128


def test_zip_package_with_a_nested_module(provisioner, invocation, zipped):
    package = zipped(
        {
            "app/__init__.py": "",
            "app/handlers/__init__.py": "",
            "app/handlers/api.py": """
                from app.util.text import shout
                def handler(event, context):
                    return shout(event)
            """,
            "app/util/__init__.py": "",
            "app/util/text.py": """
                def shout(word):
                    return word.upper() + "!"
            """,
        }
    )
    run = invocation(package, "hey", kind="zip", handler="app.handlers.api.handler")

    outcome = provisioner.run(run)

    assert outcome.status == "succeeded", outcome.error
    assert outcome.result == "HEY!"


def test_package_is_fetched_once_per_code_hash(provisioner, invocation):
    first = invocation(HELLO, {"name": "a"})
    second = invocation(HELLO, {"name": "b"}, load_package=first.load_package)

    provisioner.run(first)
    provisioner.run(second)

    assert first.load_package.loads == 1


def test_labels_name_the_platform_the_function_and_the_execution(
    settings_for, invocation, docker_client
):
    from provisioner.docker import DockerProvisioner

    # A fresh container: a pooled one is started before its function is known.
    provisioner = DockerProvisioner(settings_for(pool_size=0), client=docker_client)
    source = """
    import time
    def handler(event, context):
        time.sleep(60)
    """
    run = invocation(source, timeout_s=120, function_version=3)
    outcomes = []
    worker = threading.Thread(target=lambda: outcomes.append(provisioner.run(run)))
    worker.start()
    running = []
    while not running:
        running = docker_client.containers.list(
            filters={"label": f"lambda-os.execution-id={run.execution_id}"}
        )
        time.sleep(0.05)
    labels = running[0].labels
    running[0].kill()  # the execution ends as a crash: killed from outside
    worker.join()

    assert labels["lambda-os"] == "1"
    assert labels["lambda-os.function-id"] == run.function_id
    assert labels["lambda-os.function-version"] == "3"
    assert labels["lambda-os.execution-id"] == run.execution_id
    assert labels["lambda-os.owner"]
    provisioner.close()
    assert outcomes[0].status == "failed"
    assert outcomes[0].error["reason"] == "crashed"


def test_no_container_is_left_after_close(settings, docker_client, invocation):
    from provisioner.docker import DockerProvisioner

    backend = DockerProvisioner(settings, client=docker_client)
    outcomes = [backend.run(invocation(HELLO, {"name": str(i)})) for i in range(2)]
    owner = backend.host.owner.label

    backend.close()

    assert all(outcome.status == "succeeded" for outcome in outcomes)
    assert not docker_client.containers.list(
        all=True, filters={"label": f"lambda-os.owner={owner}"}
    )


def test_the_backend_says_when_an_execution_starts_once_it_has_capacity(provisioner, invocation):
    calls = []
    outcome = provisioner.run(invocation(HELLO, {"name": "x"}, started=lambda: calls.append(1)))

    assert outcome.status == "succeeded"
    assert calls == [1]

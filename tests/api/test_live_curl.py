"""The curl walk-through in swagger/curl-examples.md, run as written against a live gunicorn.

The server is the ``live_api`` fixture (tests/api/conftest.py): the production entry
point under gunicorn, on an in-memory catalogue and a free loopback port. The
commands are read from the markdown and only the base URL is swapped, so the
documentation cannot drift from what works.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CURL_EXAMPLES = REPO / "swagger" / "curl-examples.md"
DOCUMENTED_BASE = "http://127.0.0.1:8080"


def walkthrough(base: str) -> str:
    """The ```sh blocks of curl-examples.md, in order, pointed at ``base``."""
    blocks = re.findall(r"```sh\n(.*?)```", CURL_EXAMPLES.read_text(encoding="utf-8"), re.DOTALL)
    assert blocks, f"no ```sh blocks in {CURL_EXAMPLES}"
    return "\n".join(blocks).replace(DOCUMENTED_BASE, base)


def run_walkthrough(base: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the walk-through against ``base`` in ``cwd``; it must exit 0."""
    if shutil.which("curl") is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("CI=true and curl is not installed")
        pytest.skip("curl is not installed")
    run = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", walkthrough(base)],
        check=False,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    return run


def test_curl_walkthrough_uploads_lists_downloads_updates_and_deletes(live_api, tmp_path):
    run = run_walkthrough(live_api, tmp_path)

    out = run.stdout
    assert '"name": "hello"' in out and '"version": 1' in out
    assert out.count("downloaded code is identical") == 2
    assert '"version": 2' in out
    assert '"memory_mb": 256' in out
    assert '"description": "first release"' in out and '"timeout_s": 10' in out
    assert '"additional_version": 3, "additional_weight": 0.1' in out
    assert "alias 'live'" in out and "points to version 2" in out  # the refused delete
    assert out.rstrip().splitlines()[-1].endswith('does not exist"}')
    with urllib.request.urlopen(live_api + "/v1/functions") as response:
        assert response.read() == b'{"functions": [], "next": null}\n'


def test_live_server_answers_bad_input_with_json_errors(live_api):
    request = urllib.request.Request(
        live_api + "/v1/functions",
        data=b'{"name": ',
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request)

    assert error.value.code == 400
    assert error.value.headers["Content-Type"] == "application/json"


def lambda_os_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lambda_os.cli", *args],
        check=False,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def test_lambda_os_function_command_walks_a_functions_life_against_a_live_api(live_api, tmp_path):
    import json

    (tmp_path / "hello.py").write_text("def handler(event, context):\n    return event\n")
    created = lambda_os_cli(
        "function",
        *("--api", live_api, "create", "--name", "cli-hello", "--code", "hello.py"),
        *("--event-source", "cli", "--event-type", "greeting", "--memory-mb", "256"),
        *("--env", "GREETING=hi"),
        cwd=tmp_path,
    )
    assert created.returncode == 0, created.stderr
    function = json.loads(created.stdout)
    assert (function["memory_mb"], function["environment"]) == (256, {"GREETING": "hi"})

    listed = lambda_os_cli(
        "function", "--api", live_api, "list", "--event-source", "cli", cwd=tmp_path
    )
    assert [f["id"] for f in json.loads(listed.stdout)] == [function["id"]]

    (tmp_path / "hello.py").write_text("def handler(event, context):\n    return [event]\n")
    updated = lambda_os_cli(
        "function", "--api", live_api, "update-code", function["id"], "hello.py", cwd=tmp_path
    )
    assert json.loads(updated.stdout)["version"] == 2

    lambda_os_cli(
        "function", "--api", live_api, "download", function["id"], "-o", "back.py", cwd=tmp_path
    )
    assert (tmp_path / "back.py").read_bytes() == (tmp_path / "hello.py").read_bytes()

    assert (
        lambda_os_cli(
            "function", "--api", live_api, "delete", function["id"], cwd=tmp_path
        ).returncode
        == 0
    )
    missing = lambda_os_cli("function", "--api", live_api, "get", function["id"], cwd=tmp_path)
    assert missing.returncode == 1
    assert "404" in missing.stderr and "Traceback" not in missing.stderr


def test_lambda_os_function_command_reports_a_refused_upload_without_a_traceback(
    live_api, tmp_path
):
    (tmp_path / "hello.py").write_text("def handler(event, context):\n    return event\n")
    refused = lambda_os_cli(
        "function",
        *("--api", live_api, "create", "--name", "bad name!", "--code", "hello.py"),
        *("--event-source", "cli", "--event-type", "greeting"),
        cwd=tmp_path,
    )
    assert refused.returncode == 1
    assert "422" in refused.stderr and "name" in refused.stderr
    assert "Traceback" not in refused.stderr

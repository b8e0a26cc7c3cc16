"""The API behind the real Keystone: tokens of two projects' users, over real HTTP.

The fixture makes two projects with a member and a reader each (unique names,
removed afterwards) on the test cloud's Keystone; the API runs as ``lambda-os api``
serves it with LAMBDA_OS_AUTH=keystone, validating tokens with the cloud's admin
as its service user, and with its token cache off so a revocation shows at once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3

from lambda_os.settings import Settings
from provisioner.nova import credentials, make_session

pytestmark = [pytest.mark.integration, pytest.mark.openstack]

REPO = Path(__file__).resolve().parents[2]
API_TESTS = REPO / "tests" / "api"
sys.path.insert(0, str(API_TESTS))
from api_helpers import (
    CALLERS,
    ENDPOINTS,
    HELLO,
    allowed_for,
    body_for,
    encode_multipart,
    expected_status,
    free_port,
    function_fields,
    stop,
    wait_until_healthy,
)


@dataclass
class Keystone:
    admin: ks_session.Session
    auth_url: str

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.admin.request(self.auth_url + path, method, **kwargs)

    def role_id(self, name: str) -> str:
        return self.call("GET", f"/roles?name={name}").json()["roles"][0]["id"]

    def token(self, user: str, password: str, project_id: str | None) -> str:
        scope = {"project_id": project_id} if project_id else {}
        auth = v3.Password(
            auth_url=self.auth_url,
            username=user,
            password=password,
            user_domain_id="default",
            unscoped=project_id is None,
            **scope,
        )
        return ks_session.Session(auth=auth).get_token()


@pytest.fixture(scope="module")
def keystone(openstack_settings: Settings) -> Keystone:
    admin = make_session(credentials(openstack_settings), timeout_s=30)
    return Keystone(admin, credentials(openstack_settings).auth["auth_url"].rstrip("/"))


@pytest.fixture(scope="module")
def people(keystone: Keystone) -> Iterator[dict[str, Any]]:
    """Projects a and b; a-member, a-reader, b-member; each user's password; all removed after."""
    tag = uuid.uuid4().hex[:8]
    password = uuid.uuid4().hex
    made: dict[str, Any] = {"password": password, "projects": {}, "users": {}}
    try:
        for name in ("a", "b"):
            project = keystone.call(
                "POST", "/projects", json={"project": {"name": f"lambda-os-{name}-{tag}"}}
            ).json()["project"]
            made["projects"][name] = project["id"]
        for user, project, role in (
            ("a-member", "a", "member"),
            ("a-reader", "a", "reader"),
            ("b-member", "b", "member"),
        ):
            name = f"{user}-{tag}"
            body = {"user": {"name": name, "password": password, "domain_id": "default"}}
            user_id = keystone.call("POST", "/users", json=body).json()["user"]["id"]
            made["users"][user] = (name, user_id)
            project_id = made["projects"][project]
            role_id = keystone.role_id(role)
            keystone.call("PUT", f"/projects/{project_id}/users/{user_id}/roles/{role_id}")
        yield made
    finally:
        for _name, user_id in made["users"].values():
            keystone.call("DELETE", f"/users/{user_id}", raise_exc=False)
        for project_id in made["projects"].values():
            keystone.call("DELETE", f"/projects/{project_id}", raise_exc=False)


@pytest.fixture(scope="module")
def api(openstack_settings: Settings) -> Iterator[str]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k != "MONGO_URL"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(
        LAMBDA_OS_API_PORT=str(port),
        LAMBDA_OS_AUTH="keystone",
        LAMBDA_OS_KEYSTONE_CLOUD=openstack_settings.os_cloud or "",
        OS_CLIENT_CONFIG_FILE=openstack_settings.os_client_config_file or "",
        LAMBDA_OS_KEYSTONE_CACHE_S="-1",
        LAMBDA_OS_LOG_LEVEL="WARNING",
    )
    server = subprocess.Popen(
        [sys.executable, str(API_TESTS / "live_server.py")],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until_healthy(base, server)
        yield base
    finally:
        stop(server)


def request(base: str, method: str, path: str, token: str | None, **kwargs: Any):
    """(status, headers, JSON body or None)."""
    headers = dict(kwargs.get("headers", {}))
    if token is not None:
        headers["X-Auth-Token"] = token
    req = urllib.request.Request(
        base + path, data=kwargs.get("body"), method=method, headers=headers
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as answer:
            status, head, raw = answer.status, answer.headers, answer.read()
    except urllib.error.HTTPError as error:
        status, head, raw = error.code, error.headers, error.read()
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = None
    return status, head, body


def upload(base: str, token: str, name: str):
    body, form_type = encode_multipart(
        function_fields(name=name), {"code": ("hello.py", HELLO, "text/x-python")}
    )
    return request(
        base, "POST", "/v1/functions", token, body=body, headers={"Content-Type": form_type}
    )


@pytest.fixture(scope="module")
def tokens(keystone: Keystone, people: dict[str, Any]) -> dict[str, str]:
    projects = people["projects"]
    out = {}
    for user, project in (("a-member", "a"), ("a-reader", "a"), ("b-member", "b")):
        out[user] = keystone.token(people["users"][user][0], people["password"], projects[project])
    return out


def test_a_members_token_creates_a_function_of_its_project(api, tokens, people):
    status, _head, body = upload(api, tokens["a-member"], "keystone-hello")
    assert status == 201, body
    assert body["owner"] == people["projects"]["a"]
    status, _head, listed = request(api, "GET", "/v1/functions", tokens["a-reader"])
    assert status == 200 and [f["name"] for f in listed["functions"]] == ["keystone-hello"]


def test_another_projects_token_finds_nothing(api, tokens):
    status, _head, body = upload(api, tokens["a-member"], "only-a")
    assert status == 201
    status, _head, _ = request(api, "GET", f"/v1/functions/{body['id']}", tokens["b-member"])
    assert status == 404
    status, _head, listed = request(api, "GET", "/v1/functions", tokens["b-member"])
    assert "only-a" not in [f["name"] for f in listed["functions"]]
    status, _head, _ = request(api, "DELETE", f"/v1/functions/{body['id']}", tokens["b-member"])
    assert status == 404
    assert request(api, "GET", f"/v1/functions/{body['id']}", tokens["a-reader"])[0] == 200


def test_a_readers_token_may_not_change_anything(api, tokens):
    status, _head, body = upload(api, tokens["a-reader"], "not-allowed")
    assert status == 403
    assert "member" in body["description"]


# What a caller allowed to act gets from this API server (tests/api/live_server.py): its
# invoker answers at once, and it has no replayer.
LIVE_ALLOWED = {
    ("POST", "/v1/functions/{id}/invocations"): 200,
    ("POST", "/v1/deadletters/{dead_letter_id}/replay"): 503,
}


@pytest.fixture
def a_resources(api, tokens) -> Iterator[dict[str, str]]:
    """Project A's function, a failed execution of it and its dead letter, its version 1
    published and its alias live pointing there, made over HTTP; the function is
    deleted after the test, so the table's many tests stay under A's functions quota."""
    member = tokens["a-member"]
    status, _head, function = upload(api, member, f"table-{uuid.uuid4().hex[:8]}")
    assert status == 201, function
    invocations = f"/v1/functions/{function['id']}/invocations"
    failed = json.dumps({"fail": True}).encode()
    status, _head, execution = request(
        api, "POST", invocations, member, body=failed, headers={"Content-Type": "application/json"}
    )
    assert (status, execution["status"]) == (200, "failed"), execution
    _status, _head, letters = request(
        api, "GET", f"/v1/deadletters?function_id={function['id']}", member
    )
    (letter,) = letters["deadletters"]
    versions = f"/v1/functions/{function['id']}/versions"
    assert request(api, "POST", versions, member)[0] == 201
    alias = json.dumps({"version": 1}).encode()
    status, _head, _ = request(
        api,
        "PUT",
        f"/v1/functions/{function['id']}/aliases/live",
        member,
        body=alias,
        headers={"Content-Type": "application/json"},
    )
    assert status == 201
    yield {"id": function["id"], "execution_id": execution["id"], "dead_letter_id": letter["id"]}
    request(api, "DELETE", f"/v1/functions/{function['id']}", member)  # 404 if the test did


@pytest.mark.parametrize("method,template", ENDPOINTS)
@pytest.mark.parametrize("who", [c for c in CALLERS if c != "no-role"] + ["forged"])
def test_each_keystone_caller_gets_its_answer_on_project_a_resources(
    api, tokens, keystone, a_resources, who, method, template
):
    # Keystone gives no project-scoped token without a role, so "no-role" cannot be.
    token = {"admin": keystone.admin.get_token(), "forged": "gAAAAABforged", None: None}.get(
        who, tokens.get(who or "")
    )
    extra = body_for(method, template)
    body = extra.get("body")
    headers = dict(extra.get("headers", {}))
    if "json" in extra:
        body = json.dumps(extra["json"]).encode()
        headers["Content-Type"] = "application/json"
    path = template.format(**a_resources)

    status, _head, answer = request(api, method, path, token, body=body, headers=headers)

    allowed = LIVE_ALLOWED.get((method, template), allowed_for(method, template))
    expected = expected_status(None if who == "forged" else who, method, allowed)
    assert status == expected, (who, method, path, answer)


def test_the_clouds_admin_sees_the_hosts_and_a_member_does_not(api, tokens, keystone):
    admin_token = keystone.admin.get_token()
    assert request(api, "GET", "/v1/hosts", admin_token)[0] == 200
    assert request(api, "GET", "/v1/hosts", tokens["a-member"])[0] == 403


@pytest.mark.parametrize("token", [None, "forged-token", "gAAAAABnot-a-fernet-token"])
def test_no_token_or_a_forged_one_gets_401_with_keystones_address(api, token, keystone):
    status, head, body = request(api, "GET", "/v1/functions", token)
    assert status == 401
    assert head["WWW-Authenticate"] == f'Keystone uri="{keystone.auth_url}"'
    assert body["title"] == "Authentication required"


def test_a_token_scoped_to_no_project_gets_401(api, keystone, people):
    name = people["users"]["a-member"][0]
    unscoped = keystone.token(name, people["password"], None)
    assert request(api, "GET", "/v1/functions", unscoped)[0] == 401


def test_identity_headers_sent_by_a_client_are_not_believed(api, tokens, people):
    spoofed = {
        "X-Identity-Status": "Confirmed",
        "X-Project-Id": people["projects"]["b"],
        "X-Roles": "admin",
    }
    assert request(api, "GET", "/v1/functions", None, headers=spoofed)[0] == 401
    status = request(api, "GET", "/v1/hosts", tokens["a-member"], headers=spoofed)[0]
    assert status == 403


def test_a_revoked_token_stops_working(api, keystone, people):
    name = people["users"]["a-member"][0]
    token = keystone.token(name, people["password"], people["projects"]["a"])
    assert request(api, "GET", "/v1/functions", token)[0] == 200
    keystone.call("DELETE", "/auth/tokens", headers={"X-Subject-Token": token})
    assert request(api, "GET", "/v1/functions", token)[0] == 401


def test_health_needs_no_token(api):
    assert request(api, "GET", "/healthz", None)[0] == 200


def test_the_function_command_sends_the_users_token(api, tokens):
    assert upload(api, tokens["a-member"], "from-the-cli")[0] == 201
    command = [str(Path(sys.executable).with_name("lambda-os")), "function", "--api", api, "list"]
    env = {k: v for k, v in os.environ.items() if k != "LAMBDA_OS_API_TOKEN"}
    listed = subprocess.run(
        command,
        env={**env, "LAMBDA_OS_API_TOKEN": tokens["a-reader"]},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "from-the-cli" in listed.stdout
    refused = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert refused.returncode != 0
    assert "401" in refused.stderr and "Traceback" not in refused.stderr


def openstack(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).with_name("openstack")), *args]
    return subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=120, check=check
    )


def user_env(api: str, keystone: Keystone, people: dict[str, Any], user: str, project: str):
    """The OS_* variables an openrc of that user in that project sets."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    return {
        **base,
        "OS_AUTH_URL": keystone.auth_url,
        "OS_IDENTITY_API_VERSION": "3",
        "OS_USERNAME": people["users"][user][0],
        "OS_PASSWORD": people["password"],
        "OS_USER_DOMAIN_ID": "default",
        "OS_PROJECT_ID": people["projects"][project],
        "OS_FUNCTION_URL": api,
    }


def test_the_openstack_function_commands_as_a_user_runs_them(api, keystone, people, tmp_path):
    alice = user_env(api, keystone, people, "a-member", "a")
    bob = user_env(api, keystone, people, "b-member", "b")
    code = tmp_path / "hello.py"
    code.write_bytes(HELLO)

    created = openstack(
        alice,
        "function",
        "create",
        "osc-hello",
        "--code",
        str(code),
        "--event-source",
        "osc",
        "--event-type",
        "hello",
        "-f",
        "json",
    )
    function = json.loads(created.stdout)
    assert function["owner"] == people["projects"]["a"]
    listed = json.loads(openstack(alice, "function", "list", "-f", "json").stdout)
    assert "osc-hello" in [row["name"] for row in listed]
    shown = json.loads(openstack(alice, "function", "show", function["id"], "-f", "json").stdout)
    assert shown["event_type"] == "hello"

    run = openstack(alice, "function", "invoke", function["id"], "--data", '{"n": 1}', "-f", "json")
    execution = json.loads(run.stdout)
    assert execution["status"] == "succeeded"
    executions = openstack(
        alice, "function", "execution", "list", "--function", function["id"], "-f", "json"
    )
    assert [row["id"] for row in json.loads(executions.stdout)] == [execution["id"]]
    again = openstack(alice, "function", "execution", "show", execution["id"], "-f", "json")
    assert json.loads(again.stdout)["id"] == execution["id"]
    assert openstack(alice, "function", "execution", "log", execution["id"]).returncode == 0

    # Another project's user: as if the function did not exist, said without a traceback.
    refused = openstack(bob, "function", "show", function["id"], check=False)
    assert refused.returncode != 0
    assert "404" in refused.stderr and "Traceback" not in refused.stderr
    assert "osc-hello" not in openstack(bob, "function", "list").stdout

    openstack(alice, "function", "delete", function["id"])
    assert "osc-hello" not in openstack(alice, "function", "list").stdout

"""API tokens without Keystone (LAMBDA_OS_AUTH=tokens): the admin made at first start,
users, logins, expiry and revocation."""

from __future__ import annotations

import dataclasses
import stat
from datetime import timedelta
from pathlib import Path

import pytest
from api_helpers import HELLO, encode_multipart, function_fields
from falcon.testing import TestClient

from catalog_api.app import create_app
from catalog_api.auth.tokens import ADMIN_SECRET_FILE
from lambda_os.catalogue import Catalogue
from lambda_os.settings import Settings


@pytest.fixture
def lab(catalogue: Catalogue, settings: Settings, tmp_path: Path) -> Settings:
    return dataclasses.replace(settings, auth="tokens", state_dir=str(tmp_path))


@pytest.fixture
def client(catalogue: Catalogue, lab: Settings) -> TestClient:
    return TestClient(create_app(catalogue, lab))


def admin_password(lab: Settings) -> str:
    return (Path(lab.state_dir) / ADMIN_SECRET_FILE).read_text().strip()


def login(client: TestClient, name: str, password: str):
    return client.simulate_post("/v1/auth/tokens", json={"name": name, "password": password})


def token_of(client: TestClient, name: str, password: str) -> str:
    answer = login(client, name, password)
    assert answer.status_code == 201, answer.text
    return answer.json["token"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def add_user(client, admin: str, name: str, project: str, roles: list[str]):
    body = {"name": name, "password": "a-long-password", "project": project, "roles": roles}
    return client.simulate_post("/v1/users", json=body, headers={"X-Auth-Token": admin})


def test_the_first_start_makes_an_admin_whose_password_is_in_a_0600_file(client, lab):
    secret = Path(lab.state_dir) / ADMIN_SECRET_FILE
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    token = token_of(client, "admin", admin_password(lab))
    users = client.simulate_get("/v1/users", headers=bearer(token)).json["users"]
    assert [(u["name"], u["roles"]) for u in users] == [("admin", ["admin"])]
    assert "password" not in users[0]


def test_a_second_start_on_the_same_catalogue_makes_no_new_admin(catalogue, lab, client):
    first = admin_password(lab)
    create_app(catalogue, lab)
    assert admin_password(lab) == first
    assert len(catalogue.list_api_users()) == 1


def test_no_token_a_wrong_password_or_a_made_up_token_gets_401(client, lab):
    assert client.simulate_get("/v1/functions").status_code == 401
    assert login(client, "admin", "wrong").status_code == 401
    assert login(client, "nobody", "x").status_code == 401
    made_up = client.simulate_get("/v1/functions", headers=bearer("made-up"))
    assert made_up.status_code == 401
    assert made_up.headers["WWW-Authenticate"] == 'Bearer realm="lambda-os"'


def test_users_made_by_the_admin_work_in_their_own_project(client, lab):
    admin = token_of(client, "admin", admin_password(lab))
    assert add_user(client, admin, "ann", "team-a", ["member"]).status_code == 201
    assert add_user(client, admin, "ben", "team-b", ["member"]).status_code == 201
    ann = token_of(client, "ann", "a-long-password")
    ben = token_of(client, "ben", "a-long-password")
    body, form_type = encode_multipart(
        function_fields(name="anns"), {"code": ("hello.py", HELLO, "text/x-python")}
    )
    created = client.simulate_post(
        "/v1/functions", body=body, headers={**bearer(ann), "Content-Type": form_type}
    )
    assert created.status_code == 201 and created.json["owner"] == "team-a"
    path = f"/v1/functions/{created.json['id']}"
    assert client.simulate_get(path, headers=bearer(ben)).status_code == 404
    assert client.simulate_delete(path, headers=bearer(ben)).status_code == 404
    assert client.simulate_get(path, headers=bearer(ann)).status_code == 200
    # Only an admin manages users.
    assert add_user(client, ann, "eve", "team-b", ["admin"]).status_code == 403


@pytest.mark.parametrize(
    "body",
    [
        {"name": "x", "password": "short", "project": "p", "roles": ["member"]},
        {"name": "bad name", "password": "a-long-password", "project": "p", "roles": ["member"]},
        {"name": "x", "password": "a-long-password", "project": "p", "roles": ["root"]},
        {"name": "x", "password": "a-long-password", "project": "p", "roles": []},
        {"name": "x", "password": "a-long-password", "project": "p"},
    ],
)
def test_a_bad_user_is_refused_with_422(client, lab, body):
    admin = token_of(client, "admin", admin_password(lab))
    answer = client.simulate_post("/v1/users", json=body, headers=bearer(admin))
    assert answer.status_code == 422, answer.text


def test_a_taken_name_is_a_409_and_the_first_user_keeps_its_password(client, lab):
    admin = token_of(client, "admin", admin_password(lab))
    assert add_user(client, admin, "ann", "team-a", ["member"]).status_code == 201
    again = {"name": "ann", "password": "another-password", "project": "x", "roles": ["admin"]}
    assert client.simulate_post("/v1/users", json=again, headers=bearer(admin)).status_code == 409
    assert login(client, "ann", "a-long-password").status_code == 201
    assert login(client, "ann", "another-password").status_code == 401


def test_a_revoked_token_and_a_deleted_users_tokens_stop_working(client, lab):
    admin = token_of(client, "admin", admin_password(lab))
    add_user(client, admin, "ann", "team-a", ["reader"])
    first = token_of(client, "ann", "a-long-password")
    second = token_of(client, "ann", "a-long-password")
    revoked = client.simulate_delete("/v1/auth/tokens", headers={"X-Auth-Token": first})
    assert revoked.status_code == 204
    assert client.simulate_get("/v1/functions", headers=bearer(first)).status_code == 401
    assert client.simulate_get("/v1/functions", headers=bearer(second)).status_code == 200
    assert client.simulate_delete("/v1/users/ann", headers=bearer(admin)).status_code == 204
    assert client.simulate_get("/v1/functions", headers=bearer(second)).status_code == 401
    assert client.simulate_delete("/v1/users/ann", headers=bearer(admin)).status_code == 404


def test_a_token_expires(catalogue, lab):
    lab = dataclasses.replace(lab, api_token_ttl_s=60)
    client = TestClient(create_app(catalogue, lab))
    token = token_of(client, "admin", admin_password(lab))
    stored = catalogue._api_tokens.find_one({})
    assert stored["_id"] != token  # only its hash is kept
    assert client.simulate_get("/v1/functions", headers=bearer(token)).status_code == 200
    catalogue._api_tokens.update_one(
        {"_id": stored["_id"]},
        {"$set": {"expires_at": stored["expires_at"] - timedelta(minutes=2)}},
    )
    assert client.simulate_get("/v1/functions", headers=bearer(token)).status_code == 401


def test_in_other_modes_the_token_routes_say_they_are_off(catalogue, settings):
    client = TestClient(create_app(catalogue, settings))
    answer = client.simulate_post("/v1/auth/tokens", json={"name": "a", "password": "b"})
    assert answer.status_code == 404
    assert answer.json["title"] == "API tokens are off"

"""Changing functions: PATCH configuration, PUT new code (version + 1), GET code, DELETE."""

from __future__ import annotations

import hashlib

import pytest
from api_helpers import HELLO, HELLO_V2, encode_multipart, make_zip


def test_patch_changes_configuration_only(client, created):
    result = client.simulate_patch(
        f"/v1/functions/{created['id']}",
        json={"memory_mb": 1024, "environment": {"MODE": "loud"}, "description": "louder"},
    )

    assert result.status_code == 200, result.text
    body = result.json
    assert body["memory_mb"] == 1024
    assert body["environment"] == {"MODE": "loud"}
    assert body["description"] == "louder"
    assert body["version"] == created["version"]
    assert body["code_sha256"] == created["code_sha256"]
    assert body["timeout_s"] == created["timeout_s"]
    assert client.simulate_get(f"/v1/functions/{created['id']}").json == body


def test_patch_with_empty_object_changes_nothing(client, created):
    result = client.simulate_patch(f"/v1/functions/{created['id']}", json={})

    assert result.status_code == 200
    assert result.json == created


@pytest.mark.parametrize(
    "field", ["id", "version", "owner", "code_base64", "code_sha256", "code_size", "created_at"]
)
def test_patch_of_code_or_identity_fields_is_422(client, created, field):
    result = client.simulate_patch(f"/v1/functions/{created['id']}", json={field: "x"})

    assert result.status_code == 422
    assert field in result.json["errors"]
    assert client.simulate_get(f"/v1/functions/{created['id']}").json == created


def test_patch_with_invalid_value_is_422_and_keeps_the_function(client, created):
    result = client.simulate_patch(f"/v1/functions/{created['id']}", json={"timeout_s": 0})

    assert result.status_code == 422
    assert client.simulate_get(f"/v1/functions/{created['id']}").json == created


def test_patch_rename_onto_an_existing_name_is_409(client, upload, created):
    other = upload(name="other").json

    result = client.simulate_patch(f"/v1/functions/{other['id']}", json={"name": "hello"})

    assert result.status_code == 409
    assert client.simulate_get(f"/v1/functions/{other['id']}").json["name"] == "other"


def test_patch_handler_to_a_module_the_package_lacks_is_422(client, upload):
    package = make_zip({"main.py": HELLO})
    function = upload(package, "bundle.zip", "application/zip").json

    result = client.simulate_patch(
        f"/v1/functions/{function['id']}", json={"handler": "other.handler"}
    )

    assert result.status_code == 422
    assert "other" in result.json["description"]


def test_patch_handler_function_in_the_same_module_is_accepted(client, created):
    result = client.simulate_patch(f"/v1/functions/{created['id']}", json={"handler": "main.other"})

    assert result.status_code == 200
    assert result.json["handler"] == "main.other"


def test_patch_unknown_function_is_404(client):
    result = client.simulate_patch("/v1/functions/nope", json={"memory_mb": 256})

    assert result.status_code == 404


def test_patch_with_another_media_type_is_415(client, created):
    result = client.simulate_patch(
        f"/v1/functions/{created['id']}", body="x", headers={"Content-Type": "text/plain"}
    )

    assert result.status_code == 415


def test_patch_with_malformed_json_is_400(client, created):
    result = client.simulate_patch(
        f"/v1/functions/{created['id']}",
        body=b"{memory_mb: 1}",
        headers={"Content-Type": "application/json"},
    )

    assert result.status_code == 400


def test_get_code_returns_the_package_byte_for_byte(client, created):
    result = client.simulate_get(f"/v1/functions/{created['id']}/code")

    assert result.status_code == 200
    assert result.content == HELLO
    assert result.headers["content-type"] == "text/x-python"
    assert 'filename="main.py"' in result.headers["content-disposition"]
    assert hashlib.sha256(result.content).hexdigest() == created["code_sha256"]


def test_get_code_of_a_zip_returns_the_zip_byte_for_byte(client, upload):
    package = make_zip({"main.py": HELLO, "data/words.txt": b"hello\n"})
    function = upload(package, "bundle.zip", "application/zip").json

    result = client.simulate_get(f"/v1/functions/{function['id']}/code")

    assert result.content == package
    assert result.headers["content-type"] == "application/zip"
    assert 'filename="hello.zip"' in result.headers["content-disposition"]


def test_put_raw_python_replaces_the_code_as_version_2(client, created):
    url = f"/v1/functions/{created['id']}/code"

    result = client.simulate_put(url, body=HELLO_V2, headers={"Content-Type": "text/x-python"})

    assert result.status_code == 200, result.text
    assert result.json["version"] == 2
    assert result.json["code_sha256"] == hashlib.sha256(HELLO_V2).hexdigest()
    assert client.simulate_get(url).content == HELLO_V2


def test_put_zip_with_new_handler_replaces_the_code(client, created):
    package = make_zip({"pkg/__init__.py": b"", "pkg/app.py": HELLO})

    result = client.simulate_put(
        f"/v1/functions/{created['id']}/code",
        body=package,
        params={"handler": "pkg.app.handler", "filename": "bundle.zip"},
        headers={"Content-Type": "application/zip"},
    )

    assert result.status_code == 200, result.text
    assert result.json["handler"] == "pkg.app.handler"
    assert result.json["version"] == 2


def test_put_multipart_code_part_replaces_the_code(client, created):
    body, content_type = encode_multipart(files={"code": ("hello.py", HELLO_V2, "text/x-python")})

    result = client.simulate_put(
        f"/v1/functions/{created['id']}/code", body=body, headers={"Content-Type": content_type}
    )

    assert result.status_code == 200, result.text
    assert result.json["version"] == 2


def test_every_code_change_adds_one_to_the_version(client, created):
    url = f"/v1/functions/{created['id']}/code"
    for expected in (2, 3, 4):
        result = client.simulate_put(url, body=HELLO, headers={"Content-Type": "text/x-python"})
        assert result.json["version"] == expected


def test_put_refused_package_keeps_the_old_code_and_version(client, created):
    url = f"/v1/functions/{created['id']}/code"

    bad = client.simulate_put(
        url, body=make_zip({"../x.py": b""}), headers={"Content-Type": "application/zip"}
    )

    assert bad.status_code == 422
    assert client.simulate_get(url).content == HELLO
    assert client.simulate_get(f"/v1/functions/{created['id']}").json == created


def test_put_non_zip_body_sent_as_zip_is_422(client, created):
    result = client.simulate_put(
        f"/v1/functions/{created['id']}/code",
        body=HELLO,
        headers={"Content-Type": "application/zip"},
    )

    assert result.status_code == 422
    assert "zip" in result.json["description"]


def test_put_code_with_another_media_type_is_415(client, created):
    result = client.simulate_put(
        f"/v1/functions/{created['id']}/code", body=HELLO, headers={"Content-Type": "image/png"}
    )

    assert result.status_code == 415


def test_put_code_of_unknown_function_is_404(client):
    result = client.simulate_put(
        "/v1/functions/nope/code", body=HELLO, headers={"Content-Type": "text/x-python"}
    )

    assert result.status_code == 404


def test_put_code_over_50_mib_content_length_is_413(client, created):
    result = client.simulate_put(
        f"/v1/functions/{created['id']}/code",
        body=b"",
        headers={"Content-Type": "application/zip", "Content-Length": str(60 * 1024 * 1024)},
    )

    assert result.status_code == 413


def test_delete_answers_204_then_the_function_and_its_code_are_gone(client, created, catalogue):
    url = f"/v1/functions/{created['id']}"

    result = client.simulate_delete(url)

    assert result.status_code == 204
    assert result.content == b""
    assert client.simulate_get(url).status_code == 404
    assert client.simulate_get(url + "/code").status_code == 404
    assert client.simulate_delete(url).status_code == 404
    assert catalogue._db["packages.files"].count_documents({}) == 0


def test_replaced_code_keeps_the_old_package_until_the_sweeper_finds_it_unused(
    client, created, catalogue
):
    from datetime import timedelta

    from lambda_os.records import utcnow

    client.simulate_put(
        f"/v1/functions/{created['id']}/code",
        body=HELLO_V2,
        headers={"Content-Type": "text/x-python"},
    )

    # An event matched to version 1 just before the deploy still runs version 1.
    assert catalogue._db["packages.files"].count_documents({}) == 2
    catalogue.prune_retired_versions(utcnow() + timedelta(seconds=1))
    assert catalogue._db["packages.files"].count_documents({}) == 1


def test_a_barrage_of_bad_requests_leaves_stored_functions_untouched(client, upload, created):
    url = f"/v1/functions/{created['id']}"
    json_type = {"Content-Type": "application/json"}
    bad = [
        client.simulate_post("/v1/functions", body=b"{", headers=json_type),
        upload(),  # duplicate name
        upload(name="x", code=make_zip({"/abs.py": b""}), filename="a.zip"),
        client.simulate_patch(url, body=b"\xff", headers=json_type),
        client.simulate_patch(url, json={"version": 9}),
        client.simulate_patch(url, json={"memory_mb": 1}),
        client.simulate_patch(url, json={"handler": "no-dots"}),
        client.simulate_put(url + "/code", body=b"", headers={"Content-Type": "text/x-python"}),
        client.simulate_put(url + "/code", body=HELLO, headers={"Content-Type": "text/html"}),
        client.simulate_put(
            url + "/code",
            body=make_zip({"x/../../e.py": b""}),
            headers={"Content-Type": "application/zip"},
        ),
        client.simulate_delete(url + "-other"),
    ]

    assert [r.status_code // 100 for r in bad] == [4] * len(bad), [r.status for r in bad]
    assert client.simulate_get(url).json == created
    assert client.simulate_get(url + "/code").content == HELLO
    assert [f["id"] for f in client.simulate_get("/v1/functions").json["functions"]] == [
        created["id"]
    ]


def test_patch_handler_module_renames_a_single_file_package(client, created):
    url = f"/v1/functions/{created['id']}"

    result = client.simulate_patch(url, json={"handler": "app.handler"})

    assert result.status_code == 200
    assert result.json["code_filename"] == "app.py"
    code = client.simulate_get(url + "/code")
    assert code.content == HELLO
    assert 'filename="app.py"' in code.headers["content-disposition"]


def test_delete_fails_the_work_still_queued_for_the_function(client, created, catalogue):
    from lambda_os.records import ExecutionRecord, execution_id_for

    queued, _ = catalogue.create_execution(
        ExecutionRecord(
            id=execution_id_for("ev-queued", created["id"]),
            function_id=created["id"],
            function_version=1,
            event_id="ev-queued",
        )
    )

    assert client.simulate_delete(f"/v1/functions/{created['id']}").status_code == 204

    record = client.simulate_get(f"/v1/executions/{queued.id}").json
    assert (record["status"], record["error"]["reason"]) == ("failed", "function deleted")
    assert record["finished_at"] is not None


def test_patch_environment_value_with_a_nul_is_422_and_keeps_the_old_environment(client, created):
    result = client.simulate_patch(
        f"/v1/functions/{created['id']}", json={"environment": {"MODE": "lo\x00ud"}}
    )

    assert result.status_code == 422
    assert result.json["errors"] == {
        "environment": {"MODE": {"value": ["must not contain a NUL character"]}}
    }
    assert client.simulate_get(f"/v1/functions/{created['id']}").json["environment"] == {}

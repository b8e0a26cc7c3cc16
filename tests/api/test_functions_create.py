"""POST /v1/functions: a function is registered from a multipart form or a JSON document."""

from __future__ import annotations

import base64
import io
import zipfile

import pytest
from api_helpers import HELLO, encode_multipart, function_fields, make_zip
from package_tools import zip_with_utf8_flagged_name

from lambda_os.packages import MAX_UNPACKED_BYTES, MAX_UPLOAD_BYTES


def test_multipart_upload_creates_version_1_with_defaults_and_location(upload):
    result = upload()

    assert result.status_code == 201
    body = result.json
    assert result.headers["location"] == f"/v1/functions/{body['id']}"
    assert body["name"] == "hello"
    assert body["event_source"] == "demo" and body["event_type"] == "greeting"
    assert body["version"] == 1
    assert body["runtime"] == "python3.11"
    assert body["handler"] == "main.handler"
    assert body["memory_mb"] == 128 and body["timeout_s"] == 30
    assert body["environment"] == {} and body["network"] is False
    assert body["max_retries"] == 2 and body["concurrency"] == 10
    assert body["owner"] == "default"
    assert body["code_size"] == len(HELLO)
    assert body["code_filename"] == "main.py"
    assert body["created_at"].endswith("Z")
    assert "package_id" not in body


def test_a_batch_size_and_window_are_stored_and_default_to_no_batching(client):
    doc = {**function_fields(), "code_base64": base64.b64encode(HELLO).decode()}
    plain = client.simulate_post("/v1/functions", json=doc)
    doc = {**doc, "name": "batched", "batch_size": 50, "batch_window_s": 2.5}
    batched = client.simulate_post("/v1/functions", json=doc)

    assert plain.status_code == batched.status_code == 201, (plain.text, batched.text)
    assert (plain.json["batch_size"], plain.json["batch_window_s"]) == (None, 1.0)
    assert (batched.json["batch_size"], batched.json["batch_window_s"]) == (50, 2.5)
    off = client.simulate_patch(batched.headers["location"], json={"batch_size": None})
    assert off.status_code == 200 and off.json["batch_size"] is None, off.text


def test_multipart_form_fields_are_parsed_from_text(upload):
    result = upload(
        memory_mb="256",
        timeout_s="5",
        network="true",
        environment='{"GREETING": "hi"}',
        description="says hello",
        max_retries="0",
        concurrency="3",
    )

    assert result.status_code == 201, result.text
    body = result.json
    assert body["memory_mb"] == 256 and body["timeout_s"] == 5
    assert body["network"] is True
    assert body["environment"] == {"GREETING": "hi"}
    assert body["description"] == "says hello"
    assert body["max_retries"] == 0 and body["concurrency"] == 3


def test_json_upload_with_code_base64_creates_the_function(client):
    doc = {
        **function_fields(),
        "code_base64": base64.b64encode(HELLO).decode(),
        "code_filename": "hello.py",
        "environment": {"A": "1"},
        "memory_mb": 512,
    }

    result = client.simulate_post("/v1/functions", json=doc)

    assert result.status_code == 201, result.text
    assert result.json["memory_mb"] == 512
    assert result.json["environment"] == {"A": "1"}
    code = client.simulate_get(result.headers["location"] + "/code")
    assert code.content == HELLO


def test_zip_package_with_handler_in_a_subpackage_is_accepted(upload):
    package = make_zip({"app/__init__.py": b"", "app/main.py": HELLO, "README": b"x"})

    result = upload(package, "bundle.zip", "application/zip", handler="app.main.handler")

    assert result.status_code == 201, result.text
    assert result.json["code_filename"] == ""
    assert result.json["handler"] == "app.main.handler"


def test_duplicate_name_for_the_same_owner_is_409(upload, created):
    result = upload()

    assert result.status_code == 409
    assert "hello" in result.json["description"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", ""),
        ("name", "a" * 65),
        ("name", "has space"),
        ("name", "dots.not.allowed"),
        ("runtime", "python2.7"),
        ("handler", "nodot"),
        ("handler", "main.handler()"),
        ("memory_mb", "63"),
        ("memory_mb", "4097"),
        ("memory_mb", "lots"),
        ("timeout_s", "0"),
        ("timeout_s", "901"),
        ("event_source", ""),
        ("event_source", "with space"),
        ("event_type", "x" * 129),
        ("event_type", "tab\there"),
        ("environment", "not json"),
        ("environment", '["a list"]'),
        ("environment", '{"A": 1}'),
        ("environment", '{"1BAD": "name"}'),
        ("environment", '{"BIG": "' + "x" * 4096 + '"}'),
        ("description", "d" * 1025),
        ("network", "maybe"),
        ("max_retries", "11"),
        ("concurrency", "0"),
        ("concurrency", "1001"),
        ("batch_size", "0"),
        ("batch_size", "1001"),
        ("batch_size", "2.5"),
        ("batch_window_s", "0"),
        ("batch_window_s", "301"),
        ("batch_window_s", "soon"),
        ("name", "hello\n"),
        ("handler", "main.handler\n"),
        ("event_source", "demo\n"),
        ("environment", '{"A\\n": "x"}'),
    ],
)
def test_each_invalid_field_is_422_naming_the_field(upload, field, value):
    result = upload(**{field: value})

    assert result.status_code == 422, result.text
    assert field in result.json["errors"]
    assert result.json["title"] and result.json["description"]


def test_missing_required_fields_are_422_listing_each(client):
    body, content_type = encode_multipart({}, {"code": ("hello.py", HELLO, "text/x-python")})

    result = client.simulate_post(
        "/v1/functions", body=body, headers={"Content-Type": content_type}
    )

    assert result.status_code == 422
    assert set(result.json["errors"]) == {"name", "event_source", "event_type"}


def test_unknown_field_is_422(upload):
    result = upload(colour="blue")

    assert result.status_code == 422
    assert "colour" in result.json["errors"]


def test_fractional_number_is_refused_not_truncated(client):
    doc = {**function_fields(), "code_base64": base64.b64encode(HELLO).decode(), "memory_mb": 128.5}

    result = client.simulate_post("/v1/functions", json=doc)

    assert result.status_code == 422
    assert "memory_mb" in result.json["errors"]


def test_json_without_code_base64_is_422(client):
    result = client.simulate_post("/v1/functions", json=function_fields())

    assert result.status_code == 422
    assert "code_base64" in result.json["errors"]


def test_json_with_invalid_base64_is_422(client):
    doc = {**function_fields(), "code_base64": "!!not base64!!"}

    result = client.simulate_post("/v1/functions", json=doc)

    assert result.status_code == 422
    assert "code_base64" in result.json["errors"]


def test_multipart_without_a_code_part_is_400(client):
    body, content_type = encode_multipart(function_fields())

    result = client.simulate_post(
        "/v1/functions", body=body, headers={"Content-Type": content_type}
    )

    assert result.status_code == 400
    assert "code" in result.json["description"]


def test_other_media_type_is_415(client):
    result = client.simulate_post(
        "/v1/functions", body="name=hello", headers={"Content-Type": "text/plain"}
    )

    assert result.status_code == 415
    assert result.json["title"] and result.json["description"]


def test_no_content_type_is_415(client):
    result = client.simulate_post("/v1/functions", body=b"")

    assert result.status_code == 415


@pytest.mark.parametrize(
    "body",
    [
        b'{"name": "hello",',
        b"\xff\xfe not utf-8",
        b'{"name": NaN}',
        b"[" * 100_000 + b"]" * 100_000,
        b"[" * 40 + b"]" * 40,
    ],
    ids=["truncated", "not-utf8", "nan", "very-deep", "deeper-than-32"],
)
def test_malformed_json_is_400(client, body):
    result = client.simulate_post(
        "/v1/functions", body=body, headers={"Content-Type": "application/json"}
    )

    assert result.status_code == 400
    assert result.json["description"]


def test_json_that_is_not_an_object_is_400(client):
    result = client.simulate_post("/v1/functions", json=["a", "list"])

    assert result.status_code == 400


def test_multipart_without_boundary_is_400(client):
    result = client.simulate_post(
        "/v1/functions", body=b"whatever", headers={"Content-Type": "multipart/form-data"}
    )

    assert result.status_code == 400


def test_truncated_multipart_is_400(client):
    body, content_type = encode_multipart(
        function_fields(), {"code": ("hello.py", HELLO, "text/x-python")}
    )

    result = client.simulate_post(
        "/v1/functions", body=body[: len(body) // 2], headers={"Content-Type": content_type}
    )

    assert result.status_code == 400


def test_non_utf8_form_field_is_400(client):
    boundary = "b0und"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="name"\r\n\r\n'.encode()
        + b"\xff\xfe\r\n"
        + f"--{boundary}--\r\n".encode()
    )

    result = client.simulate_post(
        "/v1/functions",
        body=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )

    assert result.status_code == 400


def test_content_length_over_the_limit_is_413_before_the_body_is_read(client):
    result = client.simulate_post(
        "/v1/functions",
        body=b"",
        headers={
            "Content-Type": "multipart/form-data; boundary=x",
            "Content-Length": str(MAX_UPLOAD_BYTES + 2 * 1024 * 1024),
        },
    )

    assert result.status_code == 413
    assert "bytes" in result.json["description"]


def test_package_over_50_mib_is_413(upload):
    result = upload(b"#" * (MAX_UPLOAD_BYTES + 1))

    assert result.status_code == 413
    assert "50 MiB" in result.json["description"]


def test_zip_entry_climbing_out_with_dotdot_is_refused(upload):
    package = make_zip({"main.py": HELLO, "../evil.py": b"x = 1\n"})

    result = upload(package, "bundle.zip", "application/zip")

    assert result.status_code == 422
    assert ".." in result.json["description"]


def test_zip_entry_with_absolute_path_is_refused(upload):
    package = make_zip({"main.py": HELLO, "/etc/evil.py": b"x = 1\n"})

    result = upload(package, "bundle.zip", "application/zip")

    assert result.status_code == 422
    assert "absolute" in result.json["description"]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("d/" * 500 + "x.py", "501 levels deep; the limit is 64"),
        ("a" * 300 + ".py", "a name part of 303 bytes; the limit is 255"),
        ("/".join(["b" * 200] * 6), "a path of 1205 bytes; the limit is 1024"),
    ],
    ids=["500-deep", "300-characters", "long-path"],
)
def test_zip_entry_that_no_run_could_unpack_is_refused_at_upload(upload, client, entry, message):
    package = make_zip({"main.py": HELLO, entry: b"x = 1\n"})

    result = upload(package, "bundle.zip", "application/zip")

    assert result.status_code == 422, result.text
    assert message in result.json["description"]
    assert client.simulate_get("/v1/functions").json["functions"] == []


def test_zip_entry_name_flagged_utf8_that_is_not_is_422_not_500(upload):
    result = upload(zip_with_utf8_flagged_name(b"\xff\xfe.py"), "bundle.zip", "application/zip")

    assert result.status_code == 422
    assert "not UTF-8" in result.json["description"]


def test_new_code_with_a_too_deep_zip_is_refused_and_the_old_code_kept(client, created):
    package = make_zip({"main.py": HELLO, "d/" * 100 + "x.py": b""})

    result = client.simulate_put(
        f"/v1/functions/{created['id']}/code",
        body=package,
        headers={"Content-Type": "application/zip"},
    )

    assert result.status_code == 422
    assert client.simulate_get(f"/v1/functions/{created['id']}").json["version"] == 1


@pytest.fixture(scope="module")
def zip_bomb() -> bytes:
    """A small zip that unpacks to just over the 250 MiB limit."""
    buffer = io.BytesIO()
    chunk = b"\0" * (1024 * 1024)
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("main.py", HELLO)
        with archive.open("zeros.bin", "w", force_zip64=True) as member:
            for _ in range(MAX_UNPACKED_BYTES // len(chunk) + 1):
                member.write(chunk)
    return buffer.getvalue()


def test_zip_bomb_is_refused(upload, zip_bomb):
    assert len(zip_bomb) < 1024 * 1024

    result = upload(zip_bomb, "bomb.zip", "application/zip")

    assert result.status_code == 413
    assert "zip bomb" in result.json["description"]


def test_zip_without_the_handler_module_is_refused(upload):
    package = make_zip({"other.py": HELLO})

    result = upload(package, "bundle.zip", "application/zip")

    assert result.status_code == 422
    assert "main" in result.json["description"]


def test_corrupt_zip_is_refused(upload):
    package = make_zip({"main.py": HELLO * 50})
    corrupt = package[:30] + b"\0" * 40 + package[70:]

    result = upload(corrupt, "bundle.zip", "application/zip")

    assert result.status_code == 422


def test_empty_package_is_refused(upload):
    result = upload(b"")

    assert result.status_code == 422
    assert "empty" in result.json["description"]


def test_file_that_is_neither_py_nor_zip_is_refused(upload):
    result = upload(b"hello", "notes.txt", "text/plain")

    assert result.status_code == 422


def test_refused_upload_stores_nothing(client, upload):
    upload(make_zip({"../evil.py": b""}), "bundle.zip", "application/zip")
    upload(name="bad name")

    assert client.simulate_get("/v1/functions").json["functions"] == []


@pytest.mark.parametrize(
    ("environment", "message"),
    [
        ('{"MODE": "a\\u0000b"}', "must not contain a NUL character"),
        ('{"MODE": "\\ud800"}', "must be valid Unicode"),
        ('{"1MODE": "x"}', "must be a variable name"),
        ('{"MO DE": "x"}', "must be a variable name"),
        ('{"MODE=x": "x"}', "must be a variable name"),
        ("[" * 100_000, "must be a JSON object"),
    ],
    ids=["nul", "lone-surrogate", "leading-digit", "space", "equals", "deep-json-text"],
)
def test_environment_the_container_could_not_be_given_is_422_at_create(
    upload, client, environment, message
):
    result = upload(environment=environment)

    assert result.status_code == 422, result.text
    assert message in result.json["description"]
    assert client.simulate_get("/v1/functions").json["functions"] == []


def test_environment_value_with_a_nul_in_a_json_create_is_422(client):
    result = client.simulate_post(
        "/v1/functions",
        json={
            **function_fields(),
            "code_base64": base64.b64encode(HELLO).decode(),
            "environment": {"MODE": "a\x00b"},
        },
    )
    assert result.status_code == 422
    assert "NUL" in result.json["description"]

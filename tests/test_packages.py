"""What an uploaded code package must be to be accepted, and how it is unpacked."""

from __future__ import annotations

import io
import zipfile

import pytest
from package_tools import zip_with_utf8_flagged_name

from lambda_os.errors import InvalidPackage, PackageTooLarge
from lambda_os.packages import (
    MAX_NAME_BYTES,
    MAX_PATH_BYTES,
    MAX_PATH_DEPTH,
    MAX_UNPACKED_BYTES,
    inspect_package,
    unpack,
)

SOURCE = b"def handler(event, context):\n    return event\n"


def make_zip(files: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_single_py_file_is_stored_under_the_handlers_module_name():
    info = inspect_package(SOURCE, "hello.py", "main.handler")
    assert (info.kind, info.filename, info.size) == ("py", "main.py", len(SOURCE))
    assert inspect_package(SOURCE, "hello.py", "hello.handler").filename == "hello.py"


def test_zip_with_the_handler_module_in_a_package_is_accepted(tmp_path):
    data = make_zip({"app/__init__.py": b"", "app/main.py": SOURCE, "app/data.txt": b"x"})
    info = inspect_package(data, "code.zip", "app.main.handler")
    assert info.kind == "zip"
    unpack(data, info.kind, info.filename, tmp_path)
    assert (tmp_path / "app" / "main.py").read_bytes() == SOURCE


@pytest.mark.parametrize(
    ("name", "message"),
    [("../evil.py", "'..'"), ("/etc/evil.py", "absolute"), ("a/../../evil.py", "'..'")],
)
def test_zip_entries_that_escape_the_package_are_refused(name, message):
    data = make_zip({"main.py": SOURCE, name: b"x"})
    with pytest.raises(InvalidPackage, match=message):
        inspect_package(data, "code.zip", "main.handler")


def test_zip_bomb_is_refused_by_counting_real_bytes():
    # 260 MiB of zeros compresses to well under a megabyte.
    data = make_zip({"main.py": SOURCE, "zeros.bin": b"\0" * (MAX_UNPACKED_BYTES + 10 * 2**20)})
    assert len(data) < 2 * 2**20
    with pytest.raises(PackageTooLarge, match="zip bomb"):
        inspect_package(data, "code.zip", "main.handler")


def test_package_without_the_handler_module_is_refused():
    data = make_zip({"other.py": SOURCE})
    with pytest.raises(InvalidPackage, match="'main' is not in the package"):
        inspect_package(data, "code.zip", "main.handler")


@pytest.mark.parametrize("handler", ["main", "main.", ".handler", "main.handler()", "a-b.c"])
def test_malformed_handler_is_refused(handler):
    with pytest.raises(InvalidPackage, match="module.function"):
        inspect_package(SOURCE, "main.py", handler)


def test_other_files_and_non_utf8_source_are_refused():
    with pytest.raises(InvalidPackage, match="neither"):
        inspect_package(b"\x7fELF", "tool.exe", "main.handler")
    with pytest.raises(InvalidPackage, match="UTF-8"):
        inspect_package(b"\xff\xfe", "main.py", "main.handler")
    with pytest.raises(InvalidPackage, match="empty"):
        inspect_package(b"", "main.py", "main.handler")


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([("main.py", SOURCE), (".", b"")], "names no file"),
        ([("main.py", SOURCE), ("main.py/inner.py", b"x")], "both a file and a directory"),
        ([("main.py", SOURCE), ("main.py", b"other")], "appears twice"),
    ],
    ids=["dot-entry", "file-and-directory", "twice"],
)
def test_zip_whose_entries_cannot_all_be_unpacked_is_refused(entries, message):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries:
            archive.writestr(name, data)
    with pytest.raises(InvalidPackage, match=message):
        inspect_package(buffer.getvalue(), "code.zip", "main.handler")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("d/" * 500 + "x.py", "is 501 levels deep; the limit is 64"),
        ("d/" * (MAX_PATH_DEPTH - 1) + "x.py", None),
        ("a" * 300 + ".py", "name part of 303 bytes; the limit is 255"),
        ("pkg/" + "a" * (MAX_NAME_BYTES - 3) + ".py", None),
        ("\u00e9" * 128 + ".py", "name part of 259 bytes"),
        ("/".join(["b" * 200] * 6), f"path of 1205 bytes; the limit is {MAX_PATH_BYTES}"),
    ],
    ids=["500-deep", "64-deep", "300-characters", "255-bytes", "multibyte", "long-path"],
)
def test_zip_entry_names_every_run_could_not_write_are_refused(tmp_path, name, message):
    data = make_zip({"main.py": SOURCE, name: b"x"})
    if message is None:
        info = inspect_package(data, "code.zip", "main.handler")
        unpack(data, info.kind, info.filename, tmp_path)
        assert (tmp_path / name).read_bytes() == b"x"
        return
    with pytest.raises(InvalidPackage, match=message) as caught:
        inspect_package(data, "code.zip", "main.handler")
    assert len(caught.value.description) < 300
    with pytest.raises(InvalidPackage, match=message):
        unpack(data, "zip", "", tmp_path)  # a package stored before the limits came


def test_zip_entry_name_flagged_utf8_that_is_not_is_refused_not_a_crash(tmp_path):
    data = zip_with_utf8_flagged_name(b"\xff\xfe.py")
    with pytest.raises(InvalidPackage, match="not UTF-8"):
        inspect_package(data, "code.zip", "main.handler")
    with pytest.raises(InvalidPackage, match="not UTF-8"):
        unpack(data, "zip", "", tmp_path)


def test_unpack_failure_names_the_file_in_the_package_not_on_the_host(tmp_path):
    # Stored before the checks that refuse it now: a file and a directory of one name.
    data = make_zip({"main.py": SOURCE, "lib": b"x", "lib/inner.py": b"y"})
    dest = tmp_path / "state" / "packages" / "abc"
    with pytest.raises(OSError) as caught:
        unpack(data, "zip", "", dest)
    assert str(tmp_path) not in str(caught.value)
    assert "'lib" in str(caught.value)


def test_a_handler_with_a_trailing_newline_is_refused():
    with pytest.raises(InvalidPackage, match="module.function"):
        inspect_package(SOURCE, "main.py", "main.handler\n")

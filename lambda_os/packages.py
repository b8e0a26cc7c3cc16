"""Code packages: check an upload before it is stored, and unpack it safely for a run.

A package is either one Python source file or a zip archive. The checks here are
the ones a hostile upload must not get past: size before and after unpacking,
absolute or ``..`` paths, zip bombs (declared sizes are not trusted; bytes are
counted as they come out), and a handler whose module is not in the package.

Entry names must also be something every run can write and copy: a name part
over ``MAX_NAME_BYTES`` (Linux's NAME_MAX) fails every run with "File name too
long", a path over ``MAX_PATH_BYTES`` nears PATH_MAX once under the host's
state directory, and a chain deeper than ``MAX_PATH_DEPTH`` makes the recursive
copy into a container overflow the stack. A name flagged UTF-8 that is not
UTF-8 cannot be opened at all. All of these are refused at upload (422).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from lambda_os.errors import InvalidPackage, PackageTooLarge

MAX_UPLOAD_BYTES = 50 * 1024 * 1024
MAX_UNPACKED_BYTES = 250 * 1024 * 1024
MAX_ZIP_ENTRIES = 10_000
MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 1024
MAX_PATH_DEPTH = 64
# \Z, not $: $ also matches before a trailing newline.
HANDLER_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+\Z")


@dataclass(frozen=True)
class PackageInfo:
    """What the catalogue records about an accepted package."""

    kind: str  # "py" or "zip"
    filename: str  # for "py", the name the source is stored and imported under
    sha256: str
    size: int
    unpacked_size: int


def handler_module(handler: str) -> str:
    """``pkg.mod.func`` -> ``pkg.mod``; the handler must name a module and a function."""
    if not HANDLER_PATTERN.fullmatch(handler):
        raise InvalidPackage(f"handler {handler!r} must be 'module.function', e.g. 'main.handler'")
    return handler.rsplit(".", 1)[0]


def inspect_package(data: bytes, upload_name: str, handler: str) -> PackageInfo:
    """Validate an upload and describe it; raise ``InvalidPackage`` saying why it is refused.

    A single ``.py`` file is stored under the handler's module name (``main.py``
    for the default ``main.handler``), whatever it was called on the client.
    """
    if len(data) > MAX_UPLOAD_BYTES:
        raise PackageTooLarge(
            f"package is {len(data)} bytes; the limit is {MAX_UPLOAD_BYTES} bytes (50 MiB)"
        )
    if not data:
        raise InvalidPackage("package is empty")
    module = handler_module(handler)
    sha256 = hashlib.sha256(data).hexdigest()
    if zipfile.is_zipfile(io.BytesIO(data)):
        unpacked, names = _check_zip(data)
        candidates = _module_paths(module)
        if not candidates & names:
            raise InvalidPackage(
                f"handler module {module!r} is not in the package; "
                f"expected one of {sorted(candidates)}"
            )
        return PackageInfo("zip", "", sha256, len(data), unpacked)
    if upload_name and not upload_name.endswith(".py"):
        raise InvalidPackage(f"{upload_name!r} is neither a .py file nor a .zip archive")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidPackage("a .py package must be UTF-8 source text") from exc
    if "." in module:
        raise InvalidPackage(
            f"a single .py file cannot hold package module {module!r}; upload a .zip"
        )
    return PackageInfo("py", f"{module}.py", sha256, len(data), len(data))


def _module_paths(module: str) -> set[str]:
    base = module.replace(".", "/")
    return {f"{base}.py", f"{base}/__init__.py"}


def _safe_member_path(name: str) -> PurePosixPath:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise InvalidPackage(f"zip entry {name!r} has an absolute path")
    if ".." in path.parts:
        raise InvalidPackage(f"zip entry {name!r} climbs out of the package with '..'")
    if not path.parts or path.parts == (".",) or "\0" in name:
        raise InvalidPackage(f"zip entry {name!r} names no file")
    if len(path.parts) > MAX_PATH_DEPTH:
        raise InvalidPackage(
            f"zip entry {_shortened(name)} is {len(path.parts)} levels deep; "
            f"the limit is {MAX_PATH_DEPTH}"
        )
    if len(_fs_bytes(str(path))) > MAX_PATH_BYTES:
        raise InvalidPackage(
            f"zip entry {_shortened(name)} has a path of {len(_fs_bytes(str(path)))} bytes; "
            f"the limit is {MAX_PATH_BYTES}"
        )
    for part in path.parts:
        if len(_fs_bytes(part)) > MAX_NAME_BYTES:
            raise InvalidPackage(
                f"zip entry {_shortened(name)} has a name part of {len(_fs_bytes(part))} "
                f"bytes; the limit is {MAX_NAME_BYTES}"
            )
    return path


def _fs_bytes(name: str) -> bytes:
    """The bytes a name takes on the file system (a Linux one: UTF-8)."""
    return name.encode("utf-8", "surrogateescape")


def _shortened(name: str, limit: int = 80) -> str:
    """A long entry name in a message: its start and end, so the message stays readable."""
    if len(name) <= limit:
        return repr(name)
    return repr(name[: limit // 2] + "..." + name[-limit // 2 :])


def _check_zip(data: bytes) -> tuple[int, set[str]]:
    """Check every entry and count the real unpacked bytes; return them and the file names."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
        if len(infos) > MAX_ZIP_ENTRIES:
            raise InvalidPackage(f"zip has {len(infos)} entries; the limit is {MAX_ZIP_ENTRIES}")
        names: set[str] = set()
        directories: set[str] = set()
        total = 0
        for info in infos:
            path = _safe_member_path(info.filename)
            directories.update(str(parent) for parent in path.parents if str(parent) != ".")
            if info.is_dir():
                directories.add(str(path))
                continue
            if str(path) in names:
                raise InvalidPackage(f"zip entry {info.filename!r} appears twice")
            names.add(str(path))
            # Declared sizes can lie; read in chunks and stop at the limit.
            with archive.open(info) as member:
                while chunk := member.read(1024 * 1024):
                    total += len(chunk)
                    if total > MAX_UNPACKED_BYTES:
                        raise PackageTooLarge(
                            "package unpacks to more than "
                            f"{MAX_UNPACKED_BYTES} bytes (250 MiB): refused as a zip bomb"
                        )
        if clash := sorted(names & directories):
            raise InvalidPackage(f"zip entry {clash[0]!r} is both a file and a directory")
        return total, names
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        NotImplementedError,
        EOFError,
    ) as exc:
        raise InvalidPackage(f"zip archive cannot be read: {exc}") from exc
    except RuntimeError as exc:  # encrypted entries
        raise InvalidPackage(f"zip archive cannot be read: {exc}") from exc
    except UnicodeDecodeError as exc:  # zipfile decodes names flagged UTF-8 as it opens
        raise InvalidPackage(
            f"zip archive has an entry name flagged UTF-8 that is not UTF-8 ({exc.reason})"
        ) from exc


def unpack(data: bytes, kind: str, filename: str, dest: Path) -> None:
    """Write a package's files under ``dest``, re-checking every path as it goes.

    An ``OSError`` names the file relative to the package, never ``dest``: the
    message reaches the execution record, and host paths are not the caller's.
    """
    try:
        _unpack(data, kind, filename, dest)
    except OSError as exc:
        raise _relative_to(exc, dest) from exc
    except UnicodeDecodeError as exc:
        raise InvalidPackage(
            f"zip archive has an entry name that is not UTF-8 ({exc.reason})"
        ) from exc


def _relative_to(exc: OSError, root: Path) -> OSError:
    """The same error (its errno kept, so a host shortage still reads as one), pathless."""
    if exc.filename is None:
        return exc
    try:
        name: str = str(Path(os.fsdecode(exc.filename)).relative_to(root))
    except ValueError:
        name = Path(os.fsdecode(exc.filename)).name
    return type(exc)(exc.errno, exc.strerror, _shortened(name)[1:-1])


def _unpack(data: bytes, kind: str, filename: str, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    if kind == "py":
        (dest / filename).write_bytes(data)
        return
    total = 0
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for info in archive.infolist():
            path = _safe_member_path(info.filename)
            target = dest.joinpath(*path.parts)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as member, open(target, "wb") as out:
                while chunk := member.read(1024 * 1024):
                    total += len(chunk)
                    if total > MAX_UNPACKED_BYTES:
                        raise PackageTooLarge("package unpacks to more than 250 MiB")
                    out.write(chunk)
    for root, dirs, files in os.walk(dest):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o755)
        for name in files:
            os.chmod(os.path.join(root, name), 0o644)

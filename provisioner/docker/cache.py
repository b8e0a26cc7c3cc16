"""Unpacked packages on the host, keyed by their SHA-256, so each is fetched and unpacked once.

``Invocation.load_package`` (a catalogue read) is called only on a miss. An entry
is unpacked into a temporary directory and renamed into place, so a reader never
sees half a package, and a per-key lock stops two threads unpacking the same one.
Entries never change once written: containers receive hard links to their files,
so ``prune`` may remove an entry any time without touching a container that uses it.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import shutil
import threading
import time
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path

from lambda_os.errors import InvalidPackage, PermanentError, TransientError
from lambda_os.packages import unpack
from provisioner.base import Invocation

LOGGER = logging.getLogger(__name__)
# Errors from unpacking that say this host is short of something, not that the package is bad.
HOST_SHORTAGES = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EIO}
)


class PackageCache:
    """A directory of unpacked packages: ``<root>/<sha256>`` (``<sha256>-<file>`` for a .py)."""

    def __init__(self, root: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._last_used: dict[str, float] = {}

    def key(self, invocation: Invocation) -> str:
        if invocation.package_kind == "py":
            return f"{invocation.code_sha256}-{invocation.package_filename}"
        return invocation.code_sha256

    def get(self, invocation: Invocation) -> Path:
        """The directory holding the invocation's unpacked package."""
        key = self.key(invocation)
        target = self.root / key
        self._last_used[key] = self._clock()
        if target.is_dir():
            return target
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if target.is_dir():
                return target
            data = invocation.load_package()
            actual = hashlib.sha256(data).hexdigest()
            if actual != invocation.code_sha256:
                # The function's code changed between reading its record and its package.
                raise TransientError(
                    f"package of function {invocation.function_id} has sha256 {actual}, "
                    f"expected {invocation.code_sha256}"
                )
            scratch = self.root / f".{key}.{uuid.uuid4().hex[:8]}"
            try:
                self._unpack(key, data, invocation, scratch)
                try:
                    scratch.rename(target)
                except OSError as exc:
                    # A full target directory: another process unpacked the same package first.
                    if not target.is_dir():
                        raise TransientError(f"cannot store package {key}: {exc}") from exc
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            LOGGER.info(
                "unpacked package %s for function %s (execution %s)",
                key[:12],
                invocation.function_id,
                invocation.execution_id,
            )
        return target

    @staticmethod
    def _unpack(key: str, data: bytes, invocation: Invocation, scratch: Path) -> None:
        """Unpack into ``scratch``; a package that cannot be unpacked never will be.

        Only a shortage on this host (disk, quota, file descriptors, memory, I/O)
        may pass with a retry: anything else comes from the package itself, such
        as a zip holding both ``main.py`` and ``main.py/x``.
        """
        try:
            unpack(data, invocation.package_kind, invocation.package_filename, scratch)
        except OSError as exc:
            if exc.errno in HOST_SHORTAGES:
                raise TransientError(f"cannot unpack package {key}: {exc}") from exc
            raise PermanentError(f"package {key} cannot be unpacked: {exc}") from exc
        except (InvalidPackage, zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
            raise PermanentError(f"package {key} cannot be unpacked: {exc}") from exc
        except (NotImplementedError, RuntimeError) as exc:  # unknown compression, encryption
            raise PermanentError(f"package {key} cannot be unpacked: {exc}") from exc

    def prune(self, unused_for_s: float) -> int:
        """Remove entries no execution has asked for in ``unused_for_s``; return how many.

        Entries found on disk that this process never used (left by an earlier
        one) count as used when first seen, so they get the same grace period.
        """
        now = self._clock()
        removed = 0
        for entry in self.root.iterdir():
            if entry.name.startswith("."):
                continue  # an unpack in progress
            last_used = self._last_used.setdefault(entry.name, now)
            if now - last_used < unused_for_s:
                continue
            with self._guard:
                lock = self._locks.setdefault(entry.name, threading.Lock())
            with lock:
                if self._last_used.get(entry.name, now) != last_used:
                    continue  # used again meanwhile
                shutil.rmtree(entry, ignore_errors=True)
                self._last_used.pop(entry.name, None)
            with self._guard:
                self._locks.pop(entry.name, None)
            removed += 1
        return removed

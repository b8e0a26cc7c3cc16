"""Fixtures for the provisioner: a DockerProvisioner on the real engine, and invocations to feed it."""

from __future__ import annotations

import hashlib
import io
import shutil
import tempfile
import textwrap
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lambda_os.settings import Settings
from provisioner.base import Invocation


@pytest.fixture
def state_dir() -> Iterator[Path]:
    """A short state directory: the agent's socket path must fit in 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="los-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


MODES = {
    # issue #3: a fresh container for every execution, removed when it ends
    "per-execution": {"warm_idle_s": 0.0, "pool_size": 0},
    # issue #7: containers kept warm per function version, and a pre-started pool
    "warm-and-pool": {"warm_idle_s": 600.0, "pool_size": 2},
}


def make_settings(state_dir: Path, runtime_image: str, **overrides: Any) -> Settings:
    prefix = runtime_image.rsplit(":", 1)[0]
    values: dict[str, Any] = {
        "state_dir": str(state_dir),
        "runtime_image_prefix": prefix,
        "concurrency": 4,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(params=sorted(MODES))
def settings(request, state_dir: Path, runtime_image: str) -> Settings:
    """Settings for each way of running: every behaviour holds in both."""
    return make_settings(state_dir, runtime_image, **MODES[request.param])


@pytest.fixture
def settings_for(state_dir: Path, runtime_image: str) -> Callable[..., Settings]:
    """Settings with the given overrides, for tests about one mode."""
    return lambda **overrides: make_settings(state_dir, runtime_image, **overrides)


def wait_for_pool(backend: Any, size: int, runtime: str = "python3.11") -> list[str]:
    """The pooled container ids once the pool holds ``size`` (a bounded wait, not a timing test)."""
    deadline = time.monotonic() + 120
    while len(pooled := backend.pooled(runtime)) < size:
        assert time.monotonic() < deadline, f"the pool never reached {size} containers"
        time.sleep(0.05)
    return pooled


@pytest.fixture
def provisioner(settings: Settings, docker_client) -> Iterator[Any]:
    """A DockerProvisioner on the real engine; in the pooled mode its pool is full first."""
    from provisioner.docker import DockerProvisioner

    backend = DockerProvisioner(settings, client=docker_client)
    try:
        wait_for_pool(backend, settings.pool_size)
        yield backend
    finally:
        backend.close()


@pytest.fixture
def backend(settings_for: Callable[..., Settings], docker_client) -> Iterator[Callable[..., Any]]:
    """Make DockerProvisioners with given settings; all are closed after the test."""
    from provisioner.docker import DockerProvisioner

    made: list[Any] = []

    def make(clock: Callable[[], float] | None = None, **overrides: Any) -> Any:
        extra = {"clock": clock} if clock else {}
        made.append(DockerProvisioner(settings_for(**overrides), client=docker_client, **extra))
        return made[-1]

    yield make
    for provisioner in made:
        provisioner.close()


@pytest.fixture
def pool_ready() -> Callable[..., list[str]]:
    return wait_for_pool


def zip_package(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, textwrap.dedent(text))
    return buf.getvalue()


class PackageSource:
    """Package bytes that count how often the provisioner asked for them."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.loads = 0

    def __call__(self) -> bytes:
        self.loads += 1
        return self.data


def make_invocation(
    source: str | bytes,
    data: Any = None,
    *,
    kind: str = "py",
    handler: str = "main.handler",
    **fields: Any,
) -> Invocation:
    """An invocation of ``source`` (Python text, or zip bytes with ``kind="zip"``)."""
    package = textwrap.dedent(source).encode() if isinstance(source, str) else source
    values: dict[str, Any] = {
        "execution_id": f"exe-{uuid.uuid4().hex[:12]}",
        "function_id": f"fn-{hashlib.sha256(package).hexdigest()[:12]}",
        "function_name": "spec-function",
        "function_version": 1,
        "runtime": "python3.11",
        "handler": handler,
        "memory_mb": 128,
        "timeout_s": 10,
        "code_sha256": hashlib.sha256(package).hexdigest(),
        "package_kind": kind,
        "package_filename": "main.py" if kind == "py" else "",
        "load_package": PackageSource(package),
        "event_id": f"evt-{uuid.uuid4().hex[:12]}",
        "event_source": "spec",
        "event_type": "test",
        "data": data,
    }
    values.update(fields)
    return Invocation(**values)


@pytest.fixture
def invocation() -> Callable[..., Invocation]:
    return make_invocation


@pytest.fixture
def zipped() -> Callable[[dict[str, str]], bytes]:
    return zip_package

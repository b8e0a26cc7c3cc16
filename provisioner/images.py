"""Runtime images, built on this machine with no registry.

A runtime image is ``<prefix>:<runtime>`` (``lambda-os/runtime:python3.11``). It is
built in two steps: a Debian root filesystem made by ``mmdebstrap`` (minbase plus
python3, fetched through the host's apt sources) imported as ``lambda-os/base:<suite>``,
then the Dockerfile in ``provisioner/runtime/<runtime>/`` on top, which adds the
non-root user and our agent. The runtime image carries a label with the hash of
its build context, so building again is instant when nothing changed and
rebuilds by itself when the agent or Dockerfile did.

Run it as ``deploy/build-runtime-images`` (or ``python -m provisioner.images``).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import logging
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors

from lambda_os.errors import PermanentError, TransientError
from lambda_os.settings import Settings

LOGGER = logging.getLogger(__name__)

RUNTIME_DIR = Path(__file__).resolve().parent / "runtime"
BASE_REPOSITORY = "lambda-os/base"
CONTEXT_LABEL = "lambda-os.context-sha256"
BUILD_COMMAND = "deploy/build-runtime-images"
DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"


@dataclass(frozen=True)
class RuntimeSpec:
    """A runtime we know how to build: its build context and the Debian suite under it."""

    name: str
    context: Path
    suite: str

    @property
    def base_image(self) -> str:
        return f"{BASE_REPOSITORY}:{self.suite}"


# Debian bookworm's python3 is 3.11.
RUNTIMES: dict[str, RuntimeSpec] = {
    "python3.11": RuntimeSpec("python3.11", RUNTIME_DIR / "python3.11", "bookworm"),
}


def runtime_spec(runtime: str) -> RuntimeSpec:
    """The spec for ``runtime``, or ``PermanentError`` naming the runtimes there are."""
    try:
        return RUNTIMES[runtime]
    except KeyError:
        raise PermanentError(
            f"unknown runtime {runtime!r}; known runtimes: {', '.join(sorted(RUNTIMES))}"
        ) from None


def image_name(prefix: str, runtime: str) -> str:
    return f"{prefix}:{runtime}"


def context_sha256(context: Path) -> str:
    """A hash of every file in a build context, names included."""
    digest = hashlib.sha256()
    for path in sorted(p for p in context.rglob("*") if p.is_file()):
        if "__pycache__" in path.parts:
            continue
        digest.update(str(path.relative_to(context)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def _context_tar(context: Path) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path in sorted(p for p in context.rglob("*") if p.is_file()):
            if "__pycache__" in path.parts:
                continue
            tar.add(path, arcname=str(path.relative_to(context)))
    buf.seek(0)
    return buf


def _has_image(client: docker.DockerClient, name: str) -> docker.models.images.Image | None:
    try:
        return client.images.get(name)
    except docker.errors.ImageNotFound:
        return None


def _remove_replaced(client: docker.DockerClient, image_id: str) -> None:
    """Remove the image a rebuild replaced, unless a container still uses it."""
    try:
        client.images.remove(image_id)
    except docker.errors.APIError as exc:
        LOGGER.info("kept the replaced image %s: %s", image_id[:19], exc.explanation)


def host_sources(suite: str, apt_dir: Path = Path("/etc/apt")) -> list[str]:
    """The host's apt source files that name ``suite``, for mmdebstrap to fetch from.

    Without them mmdebstrap falls back to its own default mirror, which a machine
    that reaches Debian only through the mirror its apt is set up with cannot use.
    Files for other suites (third-party repositories) are left out.
    """
    listed = apt_dir / "sources.list.d"
    candidates = [apt_dir / "sources.list"]
    if listed.is_dir():
        candidates += sorted(listed.glob("*.list")) + sorted(listed.glob("*.sources"))
    naming = re.compile(rf"(^|\s){re.escape(suite)}(\s|$)", re.MULTILINE)
    return [
        str(path)
        for path in candidates
        if path.is_file() and naming.search(path.read_text(errors="replace"))
    ]


def ensure_base_image(client: docker.DockerClient, suite: str, rebuild: bool = False) -> str:
    """Import a minbase+python3 Debian root filesystem as ``lambda-os/base:<suite>`` if missing."""
    name = f"{BASE_REPOSITORY}:{suite}"
    if not rebuild and _has_image(client, name) is not None:
        LOGGER.info("base image %s is present", name)
        return name
    if shutil.which("mmdebstrap") is None:
        raise PermanentError("mmdebstrap is not installed: apt-get install mmdebstrap")
    started = time.monotonic()
    LOGGER.info("making a Debian %s root filesystem with mmdebstrap", suite)
    with tempfile.TemporaryDirectory(prefix="lambda-os-rootfs-") as tmp:
        tarball = Path(tmp) / "rootfs.tar"
        command = [
            "mmdebstrap",
            "--variant=minbase",
            "--include=python3",
            "--mode=root",
            "--quiet",
            # Documentation and translations are dead weight in a function's image.
            "--dpkgopt=path-exclude=/usr/share/doc/*",
            "--dpkgopt=path-exclude=/usr/share/man/*",
            "--dpkgopt=path-exclude=/usr/share/info/*",
            "--dpkgopt=path-exclude=/usr/share/locale/*",
            "--dpkgopt=path-include=/usr/share/locale/locale.alias",
            "--customize-hook=rm -rf $1/var/cache/apt/* $1/var/lib/apt/lists/*",
            suite,
            str(tarball),
            *host_sources(suite),
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise PermanentError(
                f"mmdebstrap failed (exit {result.returncode}): {result.stderr.strip()[-2000:]}"
            )
        repository, tag = name.split(":")
        with open(tarball, "rb") as data:
            client.api.import_image_from_data(data, repository=repository, tag=tag)
    LOGGER.info("imported %s in %.1f s", name, time.monotonic() - started)
    return name


def ensure_runtime_image(
    client: docker.DockerClient, runtime: str, prefix: str, rebuild: bool = False
) -> str:
    """Build ``<prefix>:<runtime>`` (and its base) unless it is there and up to date; return it."""
    spec = runtime_spec(runtime)
    name = image_name(prefix, runtime)
    wanted = context_sha256(spec.context)
    try:
        image = _has_image(client, name)
        if not rebuild and image is not None and image.labels.get(CONTEXT_LABEL) == wanted:
            LOGGER.info("runtime image %s is up to date", name)
            return name
        base = ensure_base_image(client, spec.suite, rebuild=rebuild)
        started = time.monotonic()
        LOGGER.info("building runtime image %s from %s", name, spec.context)
        client.images.build(
            fileobj=_context_tar(spec.context),
            custom_context=True,
            tag=name,
            buildargs={"BASE_IMAGE": base, "CONTEXT_SHA256": wanted},
            rm=True,
            forcerm=True,
            network_mode="none",
        )
        LOGGER.info("built %s in %.1f s", name, time.monotonic() - started)
        if image is not None:
            _remove_replaced(client, image.id)
    except docker.errors.BuildError as exc:
        log = "".join(str(line.get("stream", line.get("error", ""))) for line in exc.build_log)
        raise PermanentError(f"building {name} failed: {exc}\n{log[-2000:]}") from exc
    except docker.errors.APIError as exc:
        raise TransientError(f"Docker Engine error while building {name}: {exc}") from exc
    except docker.errors.DockerException as exc:
        raise TransientError(f"Docker Engine is not reachable: {exc}") from exc
    return name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=BUILD_COMMAND,
        description="Build the runtime images that are missing or out of date (no registry used).",
    )
    parser.add_argument(
        "--runtime",
        action="append",
        choices=sorted(RUNTIMES),
        help="runtime to build (repeatable; default: every runtime)",
    )
    parser.add_argument(
        "--rebuild",
        action="store_true",
        help="rebuild the base root filesystem and the runtime images even if present",
    )
    parser.add_argument(
        "--prefix",
        help="image name prefix (default: LAMBDA_OS_RUNTIME_IMAGE_PREFIX or lambda-os/runtime)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = Settings.from_env()
    prefix = args.prefix or settings.runtime_image_prefix
    try:
        client = docker.DockerClient(base_url=settings.docker_host or DEFAULT_DOCKER_HOST)
        for runtime in args.runtime or sorted(RUNTIMES):
            print(ensure_runtime_image(client, runtime, prefix, rebuild=args.rebuild))
    except (PermanentError, TransientError) as exc:
        print(f"{BUILD_COMMAND}: {exc}", file=sys.stderr)
        return 1
    except docker.errors.DockerException as exc:
        print(f"{BUILD_COMMAND}: Docker Engine is not reachable: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

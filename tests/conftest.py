"""Fixtures shared by every suite: the catalogue, and the real parts with their checks.

A real part that is missing skips its tests with a visible reason on a laptop,
and fails them under CI (``CI=true``), where .ci/run must have started it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fault_table import write_table

from lambda_os.catalogue import Catalogue, connect
from lambda_os.catalogue_server import CatalogueServer, CatalogueServerError, find_binary
from lambda_os.settings import Settings

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
# RabbitMQ's management API, as deploy/setup.sh enables it (guest works on loopback only).
BROKER_ADMIN_URL = os.environ.get(
    "LAMBDA_OS_BROKER_ADMIN_URL", "http://guest:guest@127.0.0.1:15672"
)
# deploy/openstack/setup.sh writes this clouds.yaml, with the cloud lambda-os-test in it.
OPENSTACK_CLOUDS_YAML = os.environ.get(
    "OS_CLIENT_CONFIG_FILE", "/var/lib/lambda-os/openstack/clouds.yaml"
)
OPENSTACK_CLOUD = os.environ.get("OS_CLOUD", "lambda-os-test")
RUNTIME_IMAGE = (
    os.environ.get("LAMBDA_OS_RUNTIME_IMAGE_PREFIX", "lambda-os/runtime") + ":python3.11"
)


def missing(reason: str) -> None:
    """Skip with the reason, or fail under CI where every real part must be there."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(reason)


@pytest.fixture
def catalogue() -> Catalogue:
    """A fresh in-memory catalogue (mongomock) for each test."""
    return connect(None, f"test_{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="session")
def mongo_server(tmp_path_factory) -> Iterator[CatalogueServer | None]:
    """The FerretDB server this session starts, or None when ``MONGO_URL`` names a MongoDB."""
    if os.environ.get("MONGO_URL"):
        yield None
        return
    if find_binary() is None:
        missing("the FerretDB catalogue server is not built (run deploy/setup.sh)")
    server = CatalogueServer(tmp_path_factory.mktemp("ferretdb"))
    try:
        server.start()
    except CatalogueServerError as exc:
        missing(str(exc))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mongo_url(mongo_server) -> str:
    """A real MongoDB-wire server: ``MONGO_URL`` when set, else the session's FerretDB."""
    return os.environ.get("MONGO_URL") or mongo_server.url


@pytest.fixture
def real_catalogue(mongo_url) -> Iterator[Catalogue]:
    """A catalogue on the real server, in a database of its own, dropped afterwards."""
    import pymongo

    name = f"lambda_os_test_{uuid.uuid4().hex[:12]}"
    yield connect(mongo_url, name)
    client = pymongo.MongoClient(mongo_url, serverSelectionTimeoutMS=5000)
    client.drop_database(name)
    client.close()


@pytest.fixture(scope="session")
def amqp_url() -> str:
    """The URL of a reachable real RabbitMQ."""
    import pika
    import pika.exceptions

    try:
        pika.BlockingConnection(pika.URLParameters(AMQP_URL)).close()
    except pika.exceptions.AMQPError as exc:
        missing(f"RabbitMQ is not reachable at {AMQP_URL}: {exc!r}")
    return AMQP_URL


@pytest.fixture(scope="session")
def broker_admin_url(amqp_url) -> str:
    """The URL of the broker's management API, with an administrator's credentials."""
    import urllib.error

    from lambda_os.errors import LambdaError
    from listener.topology import Topology
    from provisioner.broker_accounts import ManagementAccounts

    try:
        ManagementAccounts(
            BROKER_ADMIN_URL, "/", Topology("probe", "probe.dead"), "probe"
        ).host_users()
    except (LambdaError, urllib.error.URLError) as exc:
        missing(f"RabbitMQ's management API is not usable at {BROKER_ADMIN_URL}: {exc}")
    return BROKER_ADMIN_URL


@pytest.fixture(scope="session")
def docker_client() -> Iterator[object]:
    """A docker SDK client on a running Docker Engine."""
    import docker
    import docker.errors

    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        missing(f"Docker Engine is not reachable: {exc!r}")
    yield client
    client.close()


@pytest.fixture(scope="session")
def runtime_image(docker_client) -> str:
    """The python3.11 runtime image, which the README's set-up builds."""
    import docker.errors

    try:
        docker_client.images.get(RUNTIME_IMAGE)
    except docker.errors.ImageNotFound:
        missing(f"runtime image {RUNTIME_IMAGE} is not built (run deploy/build-runtime-images)")
    return RUNTIME_IMAGE


def unique(prefix: str) -> str:
    """A name no other test or run uses, for queues and functions."""
    return f"{prefix}.{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def openstack_settings() -> Settings:
    """Settings naming a reachable OpenStack cloud (the local test cloud unless OS_CLOUD says).

    Its project's token is fetched once here, so a cloud that is down skips or fails
    the suite at once instead of test by test.
    """
    from keystoneauth1 import exceptions as ks_exceptions

    from lambda_os.errors import LambdaError
    from provisioner.nova import credentials, make_session

    if not Path(OPENSTACK_CLOUDS_YAML).is_file():
        missing(
            f"no test cloud: {OPENSTACK_CLOUDS_YAML} is missing (run deploy/openstack/setup.sh)"
        )
    settings = Settings(os_cloud=OPENSTACK_CLOUD, os_client_config_file=OPENSTACK_CLOUDS_YAML)
    try:
        session = make_session(credentials(settings), timeout_s=10)
        session.get_token()
    except LambdaError as exc:
        missing(f"the test cloud {OPENSTACK_CLOUD} is not usable: {exc}")
    except ks_exceptions.ClientException as exc:  # raw: no seam converts a bare token fetch
        missing(f"the test cloud {OPENSTACK_CLOUD} does not answer: {exc!r}")
    return settings


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    """The fault table of every fault suite that ran (``tests/fault_table.py``)."""
    write_table(terminalreporter)

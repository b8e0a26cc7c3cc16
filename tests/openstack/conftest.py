"""Clouds on the real test cloud, each under a platform name of its own, cleaned up after.

A platform name per test run keeps these tests' servers apart from anyone else's in
the same project, and lets the clean-up delete exactly what the run made.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Iterator

import pytest

from lambda_os.settings import Settings
from provisioner.nova import NovaCloud, connect


@pytest.fixture(scope="session")
def make_cloud(openstack_settings: Settings) -> Iterator[Callable[[], NovaCloud]]:
    """Makes NovaClouds with fresh platform names; deletes their servers at the end."""
    made: list[NovaCloud] = []

    def make() -> NovaCloud:
        platform = f"lambda-os-test-{uuid.uuid4().hex[:8]}"
        cloud = connect(dataclasses.replace(openstack_settings, cloud_platform=platform))
        made.append(cloud)
        return cloud

    yield make
    for cloud in made:
        for server in cloud.servers():
            cloud.delete(server.id)


@pytest.fixture(scope="session")
def cloud(make_cloud) -> NovaCloud:
    return make_cloud()

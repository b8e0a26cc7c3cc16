"""Specification of the engine side: runtime images, refusals, and containers left behind."""

from __future__ import annotations

import contextlib
import os

import docker.errors
import pytest

from lambda_os.errors import PermanentError
from provisioner.docker.host import OWNER_LABEL, PLATFORM_LABEL, Owner

pytestmark = pytest.mark.integration


def test_unknown_runtime_is_a_permanent_error(provisioner, invocation):
    with pytest.raises(PermanentError, match="unknown runtime 'cobol85'"):
        provisioner.run(invocation("def handler(e, c): pass\n", runtime="cobol85"))


def test_missing_runtime_image_says_how_to_build_it(state_dir, docker_client, invocation):
    from lambda_os.settings import Settings
    from provisioner.docker import DockerProvisioner

    settings = Settings(state_dir=str(state_dir), runtime_image_prefix="lambda-os/not-built")
    backend = DockerProvisioner(settings, client=docker_client)
    try:
        with pytest.raises(PermanentError, match="deploy/build-runtime-images"):
            backend.run(invocation("def handler(e, c): pass\n"))
    finally:
        backend.close()


def test_containers_of_a_dead_process_are_removed_at_start_and_a_live_ones_kept(
    settings, docker_client, runtime_image
):
    from provisioner.docker import DockerProvisioner

    me = Owner()
    dead = f"{me.hostname}/{2**22 + 1}/1/deadbeef0000"
    alive = f"{me.hostname}/{os.getpid()}/{me.label.split('/')[2]}/0123456789ab"
    made = {}
    for name, owner in (("dead", dead), ("alive", alive)):
        made[name] = docker_client.containers.create(
            runtime_image,
            entrypoint=["true"],
            network_mode="none",
            labels={PLATFORM_LABEL: "1", OWNER_LABEL: owner},
        )
    try:
        backend = DockerProvisioner(settings, client=docker_client)
        backend.close()

        remaining = {c.id for c in docker_client.containers.list(all=True)}
        assert made["dead"].id not in remaining
        assert made["alive"].id in remaining
    finally:
        for container in made.values():
            with contextlib.suppress(docker.errors.NotFound):  # the dead one is already gone
                container.remove(force=True)

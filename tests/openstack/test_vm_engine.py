"""A played VM's own Docker Engine: a second dockerd beside the machine's, in the VM's netns (#13).

Checked by inspection: which network namespace the engine runs in, its root, its
networks and images, and that stopping it leaves nothing. No packet is sent.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from testing_service.vmdocker import VMDocker


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"los-vme-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
    yield name
    subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


def same_netns(pid: int, netns: str) -> bool:
    return os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/run/netns/{netns}").st_ino


def test_the_engine_runs_in_the_vms_netns_only_with_roots_socket_and_config_of_its_own():
    engine = VMDocker("vm-x", root=Path("/tmp/vmd-test"))

    argv = engine.argv()

    # --net only: ip netns exec would remount /sys and hide the cgroup hierarchies.
    assert argv[:3] == ["nsenter", "--net=/run/netns/vm-x", "dockerd"]
    assert {
        "--data-root=/tmp/vmd-test/data",
        "--exec-root=/tmp/vmd-test/exec",
        "--pidfile=/tmp/vmd-test/docker.pid",
        "--host=unix:///tmp/vmd-test/docker.sock",
        "--bridge=none",
        "--config-file=/tmp/vmd-test/daemon.json",
    } == set(argv[3:])
    assert not any(arg.startswith("--containerd") for arg in argv)  # it starts its own


@pytest.mark.integration
def test_a_vm_gets_an_engine_of_its_own_in_its_netns_and_stopping_it_leaves_nothing(
    netns, docker_client, runtime_image
):
    engine = VMDocker(netns).start()
    try:
        engine.load([runtime_image])
        with engine.client() as client:
            info = client.info()
            networks = {n.name for n in client.networks.list()}
            images = {tag for image in client.images.list() for tag in image.tags}
        dockerd = engine.process.pid
        containerd = int((engine.root / "exec" / "containerd" / "containerd.pid").read_text())

        assert same_netns(dockerd, netns) and same_netns(containerd, netns)
        assert os.stat(f"/proc/{dockerd}/ns/net").st_ino != os.stat("/proc/self/ns/net").st_ino
        assert info["DockerRootDir"] == str(engine.root / "data")
        assert docker_client.info()["DockerRootDir"] != info["DockerRootDir"]
        assert networks == {"host", "none"}  # --bridge=none: no default bridge
        assert runtime_image in images
        assert len(engine.url) < 100  # its socket path fits a sun_path
    finally:
        engine.stop()

    assert engine.process.poll() is not None
    assert (
        not Path(f"/proc/{containerd}").exists()
        or b"vmd-" not in Path(f"/proc/{containerd}/cmdline").read_bytes()
    )
    assert not engine.root.exists()
    with open("/proc/self/mounts") as mounts:
        assert str(engine.root) not in mounts.read()
    docker_client.ping()  # the machine's engine is untouched

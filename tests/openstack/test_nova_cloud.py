"""The cloud seam on the real test cloud: Keystone, Glance, Nova and the Neutron stand-in."""

from __future__ import annotations

import dataclasses

import pytest
from cloud_helpers import TEST_NETWORK, active, spec, wait_for

from lambda_os.errors import PermanentError, TransientError
from provisioner.cloud import HOST_ID_KEY, PLATFORM_KEY
from provisioner.nova import connect, credentials, make_session

pytestmark = [pytest.mark.integration, pytest.mark.openstack]


@pytest.fixture(scope="module")
def booted(cloud, openstack_settings):
    """Two hosts booted at once (no network, and on the test network), each seen ACTIVE."""
    bare = cloud.boot(spec(openstack_settings, user_data="#cloud-config\nruncmd: [worker]\n"))
    wired = cloud.boot(spec(openstack_settings, network=TEST_NETWORK, metadata={"role": "x"}))
    return active(cloud, bare.id), active(cloud, wired.id), bare


def test_a_booted_server_becomes_active_with_the_platform_and_host_id_in_its_metadata(
    cloud, booted
):
    server, _, first_seen = booted
    assert first_seen.status in ("BUILD", "ACTIVE")
    assert server.status == "ACTIVE"
    assert server.metadata[PLATFORM_KEY] == cloud.platform
    assert server.host_id == server.metadata[HOST_ID_KEY] == first_seen.host_id
    assert server.created.tzinfo is not None


def test_a_server_keeps_the_user_data_it_was_booted_with(booted):
    server, _, _ = booted
    assert server.user_data == "#cloud-config\nruncmd: [worker]\n"


def test_a_server_without_a_network_has_no_address(booted):
    server, _, _ = booted
    assert server.addresses == {}


def test_a_server_on_a_network_gets_a_loopback_address_on_it(booted):
    _, server, _ = booted
    (address,) = server.addresses[TEST_NETWORK]
    assert address.startswith("127.77.0.")
    assert server.metadata["role"] == "x"


def test_servers_lists_only_this_platforms_servers(cloud, make_cloud, booted, openstack_settings):
    bare, wired, _ = booted
    other = make_cloud()
    theirs = active(other, other.boot(spec(openstack_settings)).id)
    assert {s.id for s in cloud.servers()} == {bare.id, wired.id}
    assert [s.id for s in other.servers()] == [theirs.id]


def test_a_deleted_server_is_gone_and_deleting_it_again_is_no_error(cloud, openstack_settings):
    server = active(cloud, cloud.boot(spec(openstack_settings)).id)
    cloud.delete(server.id)
    assert wait_for(cloud, server.id, lambda s: s is None) is None
    assert server.id not in {s.id for s in cloud.servers()}
    cloud.delete(server.id)


def test_an_unknown_image_is_a_permanent_error_that_names_it(cloud, openstack_settings):
    with pytest.raises(PermanentError, match="image 'no-such-image' not found"):
        cloud.boot(spec(openstack_settings, image="no-such-image"))


def test_an_unknown_flavor_is_a_permanent_error_that_names_it(cloud, openstack_settings):
    with pytest.raises(PermanentError, match="flavor 'no-such-flavor' not found"):
        cloud.boot(spec(openstack_settings, flavor="no-such-flavor"))


def test_an_unknown_network_is_a_permanent_error(cloud, openstack_settings):
    with pytest.raises(PermanentError, match="network 'no-such-network' not found"):
        cloud.boot(spec(openstack_settings, network="no-such-network"))


def test_the_session_authenticates_through_keystone(openstack_settings):
    session = make_session(credentials(openstack_settings))
    access = session.auth.get_access(session)
    assert access.project_name == "admin" and access.username == "admin"
    assert "compute" in {entry["type"] for entry in access.service_catalog.catalog}
    # Keystone itself vouches for the token: validating it needs a valid token too.
    identity = session.get_endpoint(service_type="identity", interface="public")
    answer = session.get(
        identity.rstrip("/") + "/auth/tokens", headers={"X-Subject-Token": access.auth_token}
    )
    assert answer.json()["token"]["user"]["name"] == "admin"


def test_a_wrong_password_is_a_permanent_error_saying_the_credentials_were_refused(
    openstack_settings, tmp_path
):
    found = credentials(openstack_settings)
    yaml = tmp_path / "clouds.yaml"
    auth = "\n".join(
        f"      {k}: {'wrong' if k == 'password' else v}" for k, v in found.auth.items()
    )
    yaml.write_text(f"clouds:\n  bad:\n    auth:\n{auth}\n", encoding="utf-8")
    settings = dataclasses.replace(
        openstack_settings, os_cloud="bad", os_client_config_file=str(yaml)
    )
    with pytest.raises(PermanentError, match="credentials were refused"):
        connect(settings).servers()


def test_an_unreachable_keystone_is_a_transient_error(openstack_settings, tmp_path):
    yaml = tmp_path / "clouds.yaml"
    yaml.write_text(
        "clouds:\n  down:\n    auth:\n      auth_url: http://127.0.0.1:9/v3\n"
        "      username: u\n      password: p\n      project_name: p\n"
        "      user_domain_name: Default\n      project_domain_name: Default\n",
        encoding="utf-8",
    )
    settings = dataclasses.replace(
        openstack_settings, os_cloud="down", os_client_config_file=str(yaml)
    )
    with pytest.raises(TransientError, match="unreachable"):
        connect(settings).servers()

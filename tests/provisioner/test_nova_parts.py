"""The Nova seam's parts that need no cloud: where credentials come from, and error kinds."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from keystoneauth1 import exceptions as ks_exceptions
from novaclient import exceptions as nova_exceptions

from lambda_os.errors import PermanentError, TransientError
from lambda_os.settings import Settings, openstack_environment
from provisioner.cloud import Server
from provisioner.nova import credentials, make_session
from provisioner.nova.auth import from_clouds_yaml, from_environment
from provisioner.nova.cloud import one_each
from provisioner.nova.errors import converted, for_status

CLOUDS_YAML = """
clouds:
  test:
    auth:
      auth-url: http://127.0.0.1:5000/v3
      username: admin
      password: secret
      project_name: admin
      user_domain_name: Default
      project_domain_name: Default
    region_name: RegionTwo
    interface: internal
    cacert: /etc/ssl/ca.pem
"""


def test_a_clouds_yaml_entry_gives_auth_region_interface_and_ca(tmp_path):
    path = tmp_path / "clouds.yaml"
    path.write_text(CLOUDS_YAML, encoding="utf-8")
    found = from_clouds_yaml("test", str(path))
    assert found.auth["auth_url"] == "http://127.0.0.1:5000/v3"  # dashes read as underscores
    assert (found.region_name, found.interface, found.verify) == (
        "RegionTwo",
        "internal",
        "/etc/ssl/ca.pem",
    )
    assert found.auth_type == "password"


def test_an_unknown_cloud_name_is_a_permanent_error_listing_the_known_ones(tmp_path):
    path = tmp_path / "clouds.yaml"
    path.write_text(CLOUDS_YAML, encoding="utf-8")
    with pytest.raises(PermanentError, match="no cloud 'prod'.*it has: test"):
        from_clouds_yaml("prod", str(path))


def test_os_cloud_without_a_clouds_yaml_is_a_permanent_error(tmp_path):
    with pytest.raises(PermanentError, match="no clouds.yaml"):
        from_clouds_yaml("test", str(tmp_path / "absent.yaml"))


def test_os_variables_are_used_when_no_cloud_is_named():
    env = {
        "OS_AUTH_URL": "http://127.0.0.1:5000/v3",
        "OS_USERNAME": "u",
        "OS_PASSWORD": "p",
        "OS_REGION_NAME": "RegionOne",
        "OS_CLOUD": "",
        "PATH": "/bin",
    }
    variables = openstack_environment(env)
    assert variables == {
        "auth_url": "http://127.0.0.1:5000/v3",
        "username": "u",
        "password": "p",
        "region_name": "RegionOne",
    }
    found = credentials(Settings(), variables)
    assert found.auth == {"auth_url": "http://127.0.0.1:5000/v3", "username": "u", "password": "p"}
    assert found.region_name == "RegionOne"


def test_no_credentials_at_all_is_a_permanent_error_saying_what_to_set():
    with pytest.raises(PermanentError, match="set OS_CLOUD"):
        from_environment({})


def test_an_unknown_auth_type_is_a_permanent_error():
    found = from_environment({"auth_url": "http://127.0.0.1:5000/v3", "auth_type": "nonesuch"})
    with pytest.raises(PermanentError, match="unknown auth_type 'nonesuch'"):
        make_session(found)


@pytest.mark.parametrize(
    ("status", "message", "kind"),
    [
        (500, "", TransientError),
        (503, "", TransientError),
        (429, "", TransientError),
        (403, "Quota exceeded for instances", TransientError),
        (403, "Policy does not allow", PermanentError),
        (400, "Invalid flavorRef", PermanentError),
        (404, "", PermanentError),
        (401, "", PermanentError),
        (501, "", PermanentError),
    ],
)
def test_http_answers_are_retriable_only_when_retrying_can_help(status, message, kind):
    assert type(for_status(status, "booting", message)) is kind


def test_a_novaclient_error_leaves_the_seam_as_ours_with_its_cause_kept():
    cause = nova_exceptions.ClientException(503, "Service Unavailable")
    expected = pytest.raises(TransientError, match="booting server h1: Service Unavailable")
    with expected as info, converted("booting server h1"):
        raise cause
    assert info.value.__cause__ is cause


def test_a_refused_connection_is_transient_and_a_tls_failure_permanent():
    with pytest.raises(TransientError, match="unreachable"), converted("listing servers"):
        raise ks_exceptions.ConnectFailure("refused")
    with pytest.raises(PermanentError, match="TLS"), converted("listing servers"):
        raise ks_exceptions.SSLError("bad certificate")


def test_a_platform_name_that_cannot_be_a_server_tag_is_refused():
    from keystoneauth1 import session

    from provisioner.nova import NovaCloud

    with pytest.raises(PermanentError, match="without '/' or ','"):
        NovaCloud(session.Session(), platform="a,b")


def listed(server_id: str, status: str, name: str = "h") -> Server:
    return Server(
        id=server_id,
        name=name,
        status=status,
        metadata={},
        addresses={},
        created=datetime(2026, 1, 1, tzinfo=UTC),
    )


def test_a_server_listed_twice_while_it_moves_to_its_cell_counts_once_with_its_cell_status():
    servers = [
        listed("a", "BUILD"),
        listed("b", "ACTIVE"),
        listed("a", "ACTIVE"),
        listed("b", "BUILD"),
    ]

    assert [(s.id, s.status) for s in one_each(servers)] == [("a", "ACTIVE"), ("b", "ACTIVE")]

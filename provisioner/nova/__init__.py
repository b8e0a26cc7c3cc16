"""The Nova implementation of the cloud seam (``provisioner.cloud``).

``connect(settings)`` is what a command calls: it logs in the way the settings
say (a clouds.yaml entry, or the OS_* variables) and returns a ``NovaCloud``.
"""

from __future__ import annotations

from collections.abc import Mapping

from lambda_os.settings import Settings, openstack_environment
from provisioner.nova.auth import Credentials, from_clouds_yaml, from_environment, make_session
from provisioner.nova.cloud import NovaCloud

__all__ = ["NovaCloud", "connect", "credentials", "make_session"]


def credentials(settings: Settings, os_variables: Mapping[str, str] | None = None) -> Credentials:
    """The clouds.yaml entry named by ``os_cloud`` when set, else the OS_* variables."""
    if settings.os_cloud:
        return from_clouds_yaml(settings.os_cloud, settings.os_client_config_file)
    return from_environment(openstack_environment() if os_variables is None else os_variables)


def connect(settings: Settings, os_variables: Mapping[str, str] | None = None) -> NovaCloud:
    """A NovaCloud for this platform, logged in on first use."""
    found = credentials(settings, os_variables)
    return NovaCloud(
        make_session(found),
        platform=settings.cloud_platform,
        region_name=found.region_name,
        interface=found.interface,
    )

"""The ``Cloud`` seam on Nova: python-novaclient on a keystoneauth1 session.

Image, flavor and network are given by name or id, as an operator writes them,
and resolved on each boot (a boot is rare next to its cost, and a renamed image
is then seen at once). The compute API is pinned to microversion 2.52: 2.37 is
the first that can boot with no network (``networks: none``), and 2.52 lets tags
be given at boot, so every cloud since Queens (2018) serves it.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from keystoneauth1 import session as ks_session
from novaclient import client as nova_client
from novaclient import exceptions as nova_exceptions

from lambda_os.errors import PermanentError, TransientError
from provisioner.cloud import HOST_ID_KEY, PLATFORM_KEY, Server, ServerSpec
from provisioner.nova.errors import converted

MICROVERSION = "2.52"


class NovaCloud:
    """This platform's servers in one project of one OpenStack cloud."""

    def __init__(
        self,
        session: ks_session.Session,
        platform: str,
        region_name: str | None = None,
        interface: str | None = None,
    ) -> None:
        # The platform is also a server tag, and Nova's tags are 1-60 characters without
        # "/" or "," (a comma would split the list filter).
        if not 0 < len(platform) <= 60 or "/" in platform or "," in platform:
            raise PermanentError(
                f"platform name {platform!r} must be 1-60 characters without '/' or ','"
            )
        self.platform = platform
        self._nova = nova_client.Client(
            MICROVERSION,
            session=session,
            region_name=region_name,
            endpoint_type=interface or "public",
        )

    def boot(self, spec: ServerSpec) -> Server:
        """Resolve image, flavor and network, then create the server with the platform's tags."""
        with converted(f"booting server {spec.name}"):
            image = self._image(spec.image)
            flavor = self._flavor(spec.flavor)
            nics: Any = (
                "none" if spec.network is None else [{"net-id": self._network(spec.network)}]
            )
            metadata = {**spec.metadata, PLATFORM_KEY: self.platform, HOST_ID_KEY: spec.host_id}
            created = self._nova.servers.create(
                spec.name,
                image,
                flavor,
                meta=metadata,
                userdata=spec.user_data or None,
                nics=nics,
                tags=[self.platform],
            )
        server = self.get(created.id)
        if server is None:
            raise TransientError(f"server {spec.name} ({created.id}) was gone at once after boot")
        return server

    def servers(self) -> list[Server]:
        """This platform's servers: the project's, filtered by the platform's metadata."""
        with converted("listing servers"):
            # The tag narrows the list on Nova's side; the metadata, which the seam promises
            # and which holds the host id, decides.
            found = self._nova.servers.list(search_opts={"tags": self.platform}, limit=-1)
        return one_each(
            _server(s._info) for s in found if s.metadata.get(PLATFORM_KEY) == self.platform
        )

    def get(self, server_id: str) -> Server | None:
        """The server, or None when Nova says it does not exist (any more)."""
        with converted(f"reading server {server_id}"):
            try:
                return _server(self._nova.servers.get(server_id)._info)
            except nova_exceptions.NotFound:
                return None

    def delete(self, server_id: str) -> None:
        """Ask Nova to delete the server; an unknown id is taken as already deleted."""
        with converted(f"deleting server {server_id}"):
            try:
                self._nova.servers.delete(server_id)
            except nova_exceptions.NotFound:
                return

    def _image(self, name_or_id: str) -> str:
        try:
            return self._nova.glance.find_image(name_or_id).id
        except nova_exceptions.NotFound as exc:
            raise PermanentError(
                f"image {name_or_id!r} not found in the cloud's image service "
                "(check LAMBDA_OS_CLOUD_IMAGE)"
            ) from exc

    def _flavor(self, name_or_id: str) -> str:
        try:
            return self._nova.flavors.get(name_or_id).id
        except nova_exceptions.NotFound:
            pass
        try:
            return self._nova.flavors.find(name=name_or_id).id
        except nova_exceptions.NotFound as exc:
            raise PermanentError(
                f"flavor {name_or_id!r} not found (check LAMBDA_OS_CLOUD_FLAVOR)"
            ) from exc

    def _network(self, name_or_id: str) -> str:
        try:
            return str(uuid.UUID(name_or_id))
        except ValueError:
            pass
        try:
            return self._nova.neutron.find_network(name_or_id).id
        except nova_exceptions.NotFound as exc:
            raise PermanentError(
                f"network {name_or_id!r} not found (check LAMBDA_OS_CLOUD_NETWORK)"
            ) from exc


def one_each(servers: Iterable[Server]) -> list[Server]:
    """Each server once, in the order first listed.

    While a server moves from its build request to its cell, Nova's list can show it
    twice (seen on the test cloud); the controller would count it as two hosts. The
    cell's entry says more than the build request's, so a later entry that is past
    ``BUILD`` replaces an earlier one still in it.
    """
    kept: dict[str, Server] = {}
    for server in servers:
        seen = kept.get(server.id)
        if seen is None or (seen.status == "BUILD" and server.status != "BUILD"):
            kept[server.id] = server
    return list(kept.values())


def _server(info: Mapping[str, Any]) -> Server:
    """A Server from Nova's JSON for one server (microversion 2.52)."""
    addresses = {
        network: tuple(entry["addr"] for entry in entries)
        for network, entries in (info.get("addresses") or {}).items()
    }
    fault = info.get("fault") or {}
    return Server(
        id=info["id"],
        name=info["name"],
        status=info["status"],
        metadata=dict(info.get("metadata") or {}),
        addresses=addresses,
        created=datetime.fromisoformat(info["created"]),
        user_data=_decoded(info.get("OS-EXT-SRV-ATTR:user_data")),
        fault=fault.get("message"),
    )


def _decoded(user_data: str | None) -> str | None:
    """Nova shows user data base64-encoded, and only to admins (otherwise the key is absent)."""
    if user_data is None:
        return None
    try:
        return base64.b64decode(user_data).decode("utf-8", errors="replace")
    except (binascii.Error, ValueError):
        return user_data

"""The hosts resource: the cluster's registry as routers and operators see it (read only).

Hosts write their own records (``lambda-os worker``) and routers mark them lost,
all through the catalogue; the API only lists them.
"""

from __future__ import annotations

import falcon

from lambda_os.catalogue import Catalogue


class HostsResource:
    """``/v1/hosts``: every registered host, by id, with its last heartbeat's figures."""

    def __init__(self, catalogue: Catalogue) -> None:
        self._catalogue = catalogue

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"hosts": [host.to_api() for host in self._catalogue.list_hosts()]}

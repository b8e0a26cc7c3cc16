"""The hosts resources: the cluster's registry as routers and operators see it (read only).

Hosts write their own records (``lambda-os worker``) and routers mark them lost,
all through the catalogue; the API only lists them, and the scaling controller's
decisions (``lambda-os controller``) with their reasons.
"""

from __future__ import annotations

import falcon

from catalog_api.schemas import ScalingEventQuerySchema
from lambda_os.catalogue import Catalogue


class HostsResource:
    """``/v1/hosts``: every registered host, by id, with its last heartbeat's figures."""

    def __init__(self, catalogue: Catalogue) -> None:
        self._catalogue = catalogue

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"hosts": [host.to_api() for host in self._catalogue.list_hosts()]}


class HostEventsResource:
    """``/v1/hosts/events``: the scaling controller's latest decisions, newest first, and why."""

    def __init__(self, catalogue: Catalogue) -> None:
        self._catalogue = catalogue

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        query = ScalingEventQuerySchema().load(req.params)
        events = self._catalogue.list_scaling_events(query["limit"])
        resp.media = {"events": [event.to_api() for event in events]}

"""The platform end to end on the test cloud: the controller boots Nova servers, they serve.

Each server the controller boots is played as a VM (``testing_service.vmplay``): its
worker starts from the server's own user data, in a network namespace that reaches
the broker and catalogue only through the player's relays. A router places every
event; where an execution ran is its ``placed_on``.
"""

from __future__ import annotations

import uuid

import nova_cluster as helpers
import pytest
from nova_cluster import eventually

pytestmark = [pytest.mark.integration, pytest.mark.openstack, pytest.mark.mongo]
nova_cluster = helpers.nova_cluster


def name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_an_event_runs_on_the_host_the_controller_booted_through_nova(nova_cluster):
    cluster = nova_cluster(scale_min_hosts=1, scale_max_hosts=1)
    cluster.start_controller()

    (host_id,) = cluster.wait_for_hosts(1)
    server = cluster.server_of(host_id)
    assert cluster.catalogue.get_host(host_id).server_id == server.id
    function = cluster.live.function(name("echo"))
    event_id = cluster.live.send(function, 7)

    (record,) = cluster.live.finished(function, 1)
    assert record.event_id == event_id
    assert record.status == "succeeded", record
    assert record.placed_on == host_id
    assert record.result["n"] == 7
    assert eventually(cluster.live.reply_ids, "the reply") == [event_id]

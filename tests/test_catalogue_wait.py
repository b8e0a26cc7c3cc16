"""A cluster process started before its catalogue server waits for it instead of dying."""

from __future__ import annotations

import logging
import uuid

import pytest

from lambda_os.catalogue_server import CatalogueServer, find_binary, free_port
from lambda_os.serve import catalogue_when_reachable
from lambda_os.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.mongo]


class NoJitter:
    def next(self) -> float:
        return 0.01


def test_the_catalogue_is_taken_once_its_server_starts_answering(tmp_path, caplog):
    if find_binary() is None:
        pytest.fail("the FerretDB catalogue server is not built (run deploy/setup.sh)")
    port = free_port()
    server = CatalogueServer(tmp_path / "late", port=port)
    waits: list[float] = []

    def sleep(delay: float) -> None:
        waits.append(delay)
        if len(waits) == 2:  # two refusals seen: now the server comes up
            server.start()

    settings = Settings(
        mongo_url=f"mongodb://127.0.0.1:{port}/",
        mongo_db=f"wait_{uuid.uuid4().hex[:8]}",
    )
    try:
        with caplog.at_level(logging.WARNING, logger="lambda_os.serve"):
            catalogue = catalogue_when_reachable(settings, "a test", NoJitter(), sleep)
        assert catalogue.list_hosts() == []
    finally:
        server.stop()

    assert len(waits) == 2
    refusals = [r.getMessage() for r in caplog.records]
    assert len(refusals) == 2
    assert all(m.startswith("a test: catalogue unavailable") for m in refusals)
    assert all("trying again in 0.0 s" in m for m in refusals)

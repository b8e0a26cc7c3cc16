"""SIGTERM and SIGINT on a real listener process: the first finishes in flight, the second stops.

The listener runs in a child process (signal handlers belong to a main thread)
with a provisioner double that takes 2 s per execution.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from listener_helpers import wait_for

from listener.events import encode_event

pytestmark = pytest.mark.integration

CHILD = textwrap.dedent(
    """
    import json, logging, sys
    sys.path.insert(0, {helpers!r})
    from listener_helpers import FakeProvisioner, add_function
    from lambda_os.catalogue import connect
    from lambda_os.settings import Settings
    from listener.service import Listener

    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    catalogue = connect(None, "signals")
    add_function(catalogue, "slow")
    settings = Settings(amqp_url={url!r}, events_queue={queue!r}, dead_letter_queue={dead!r})
    listener = Listener(settings, catalogue, FakeProvisioner(capacity=1, delay_s=2.0))
    listener.install_signal_handlers()
    code = listener.run()
    statuses = [r.status for r in catalogue.list_executions({{}}, 100).items]
    print(json.dumps({{"code": code, "statuses": statuses}}), flush=True)
    sys.exit(code)
    """
)


def start_child(settings) -> subprocess.Popen:
    script = CHILD.format(
        helpers=str(Path(__file__).parent),
        url=settings.amqp_url,
        queue=settings.events_queue,
        dead=settings.dead_letter_queue,
    )
    return subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    )


def publish_three(broker, settings) -> None:
    for n in range(3):
        broker.publish(settings.events_queue, encode_event("orders", "created", id=f"e-{n}"))


def test_first_sigterm_finishes_the_event_in_flight_and_returns_the_rest(broker_settings, broker):
    publish_three(broker, broker_settings)
    child = start_child(broker_settings)
    try:
        # prefetch 1: one event taken and running, two still ready
        wait_for(lambda: broker.ready(broker_settings.events_queue) == 2, what="one taken")
        child.send_signal(signal.SIGTERM)
        out, err = child.communicate(timeout=30)
    finally:
        child.kill()
    assert child.returncode == 0, err
    assert json.loads(out) == {"code": 0, "statuses": ["succeeded"]}
    assert broker.ready(broker_settings.events_queue) == 2


def test_second_signal_stops_at_once_and_the_event_in_flight_comes_back(broker_settings, broker):
    publish_three(broker, broker_settings)
    child = start_child(broker_settings)
    try:
        wait_for(lambda: broker.ready(broker_settings.events_queue) == 2, what="one taken")
        child.send_signal(signal.SIGINT)
        time.sleep(0.2)
        child.send_signal(signal.SIGINT)
        _out, err = child.communicate(timeout=30)
    finally:
        child.kill()
    assert child.returncode == 128 + signal.SIGINT, err
    assert "stopping at once" in err
    assert broker.ready(broker_settings.events_queue) == 3  # nothing acked, nothing lost

"""The garbage collector set for a long-running service, once its start-up is done.

CPython's cyclic collector stops every thread while it runs, and a full (oldest
generation) collection walks every tracked object: the modules, the settings,
the in-memory catalogue with its thousands of records. In a service that answers
events in a few milliseconds those walks are the tail of the latency. Two
changes, both standard for servers:

- ``gc.freeze()`` after start-up moves everything alive then (imports, the
  catalogue's indexes, the provisioner) out of the collector's reach for good:
  later collections skip it;
- a higher first threshold (the number of allocations between young collections)
  makes collections rarer, each about as cheap, since an event's garbage is
  freed by reference counting and rarely forms cycles.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000


def settle_for_service() -> None:
    """Call once, when the process has started everything it keeps."""
    gc.collect()
    gc.freeze()
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)

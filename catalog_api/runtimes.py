"""The runtimes a function can name, and the image each one runs in.

A runtime is a name users write in ``runtime`` and a suffix of the runtime image
(``<runtime_image_prefix>:<image_suffix>``) that ``deploy/`` builds. The list is
data passed to ``create_app`` so a deployment (or a test) can offer other ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Runtime:
    """One language runtime the platform can run functions in."""

    name: str
    image_suffix: str
    description: str

    def to_api(self, image_prefix: str) -> dict[str, Any]:
        return {
            "name": self.name,
            "image": f"{image_prefix}:{self.image_suffix}",
            "description": self.description,
        }


RuntimeList = Sequence[Runtime]

RUNTIMES: tuple[Runtime, ...] = (
    Runtime(
        "python3.11",
        "python3.11",
        "CPython 3.11 with the standard library; handler(event, context) returns JSON",
    ),
)

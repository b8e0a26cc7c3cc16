"""Limits on the shape of JSON that enters the platform, shared by the API and the listener.

One definition, so a body the API accepts and an event the listener accepts are
measured the same way.
"""

from __future__ import annotations

from typing import Any

MAX_JSON_DEPTH = 32


def json_depth(value: Any, stop_after: int = MAX_JSON_DEPTH) -> int:
    """Nesting depth of a decoded JSON value (a scalar is 0, ``[1]`` is 1), without recursion.

    Counting stops once the depth passes ``stop_after``, so a hostile value costs
    no more than the limit to measure.
    """
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        level += 1
        deepest = max(deepest, level)
        if deepest > stop_after:
            return deepest
        stack.extend((child, level) for child in children)
    return deepest


def refuse_constant(name: str) -> Any:
    """``parse_constant`` for ``json.loads``: NaN and Infinity are not JSON numbers."""
    raise ValueError(f"{name} is not a JSON number")

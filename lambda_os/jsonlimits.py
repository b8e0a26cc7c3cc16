"""Limits on the shape of JSON that enters the platform, shared by the API and the listener.

One definition, so a body the API accepts and an event the listener accepts are
measured the same way. Beyond depth, ``check_storable`` holds every value to what
the catalogue can store and the API can send back: strings must encode as UTF-8
(JSON's ``\\ud800`` escape decodes to a lone surrogate that does not), and
NaN/Infinity (``1e999`` overflows to it) are not JSON, so an answer holding one
would not parse. What MongoDB refuses but the catalogue stores escaped
(``lambda_os.storable``: integers past 64 bits, NUL, ``$`` and ``.`` in keys) is
accepted and reaches the function as it was sent.
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_JSON_DEPTH = 32
RULES = "numbers must be finite, and strings and object keys must be valid Unicode"


class UnstorableJSON(ValueError):
    """A well-formed JSON value that breaks one of the rules in ``RULES``; says where."""


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


def check_storable(value: Any) -> None:
    """Raise ``UnstorableJSON`` naming the first value (``$.a[0]``) that breaks ``RULES``.

    Iterative, like ``json_depth``, so a deep value cannot exhaust the stack.
    """
    stack: list[tuple[Any, str]] = [(value, "$")]
    while stack:
        item, where = stack.pop()
        if isinstance(item, bool) or item is None:
            continue
        if isinstance(item, int):
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                raise UnstorableJSON(f"{where}: {item} is not a finite number")
        elif isinstance(item, str):
            _check_text(item, where, "string")
        elif isinstance(item, dict):
            for key, child in item.items():
                _check_text(key, where, "key")
                stack.append(
                    (child, f"{where}.{key}" if key.isidentifier() else f"{where}[{_quoted(key)}]")
                )
        elif isinstance(item, list):
            stack.extend((child, f"{where}[{index}]") for index, child in enumerate(item))


def _check_text(text: str, where: str, kind: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise UnstorableJSON(
            f"{where}: {kind} {_quoted(text)} is not valid Unicode ({exc.reason})"
        ) from exc


def _quoted(text: str, limit: int = 40) -> str:
    """``text`` as an ASCII JSON string, shortened: safe to put in any message."""
    quoted = json.dumps(text[:limit])
    return quoted if len(text) <= limit else quoted[:-1] + '..."'

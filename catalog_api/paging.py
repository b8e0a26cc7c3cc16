"""Listings a page at a time: the link to the next page keeps the filters and the limit."""

from __future__ import annotations

from urllib.parse import urlencode


def next_link(path: str, filters: dict[str, str], limit: int, marker: str | None) -> str | None:
    """The relative URL of the page after ``marker``, or None when this was the last page."""
    if marker is None:
        return None
    return f"{path}?{urlencode({**filters, 'limit': limit, 'marker': marker})}"

"""Refusing requests that a web page, rather than the API's own clients, sends.

With authentication off on loopback, any page a browser opens could otherwise
create and run functions: a cross-site multipart form post needs no CORS
preflight, and DNS rebinding lets a page on ``attacker.example`` reach
127.0.0.1 under its own name. So, before any resource runs:

- the ``Host`` header must name this API: localhost, 127.0.0.1, [::1], the bind
  address, or one of ``allowed_hosts`` (``*`` answers any). Only the name is
  compared, not the port, so a reverse proxy on another port still works.
- a write (POST, PUT, PATCH, DELETE) that carries an ``Origin`` must come from
  the API's own origin (the Origin's host and port are the Host header's) or
  one of ``allowed_origins``. Browsers always send Origin on cross-origin
  writes; curl and the SDKs send none, so they are unaffected.

Both refusals are 403 in the API's JSON error shape.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import falcon

from lambda_os.settings import Settings

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
WILDCARD_BINDS = ("", "0.0.0.0", "[::]")
DEFAULT_PORTS = {"http": "80", "https": "443"}


def split_host(value: str) -> tuple[str, str]:
    """``name[:port]`` -> (lower-case name, port or ""); an IPv6 literal keeps its brackets."""
    value = value.strip().lower()
    if value.startswith("["):
        name, _, rest = value.partition("]")
        return name + "]", rest.removeprefix(":")
    if value.count(":") > 1:  # a bare IPv6 address, as a bind address may be given
        return f"[{value}]", ""
    name, _, port = value.partition(":")
    return name.rstrip("."), port


def _names(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


class CrossSiteGuard:
    """Falcon middleware: 403 for an unknown Host, and for a write from a foreign Origin."""

    def __init__(self, settings: Settings) -> None:
        hosts = _names(settings.allowed_hosts)
        self._any_host = "*" in hosts
        bound = split_host(settings.api_host)[0]
        names = [*LOOPBACK_NAMES, *(split_host(host)[0] for host in hosts if host != "*")]
        if bound not in WILDCARD_BINDS:
            names.append(bound)
        self._hosts = frozenset(names)
        self._origins = frozenset(
            origin.rstrip("/").lower() for origin in _names(settings.allowed_origins)
        )

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        host = req.get_header("Host")
        # HTTP/1.0 clients may send no Host; a browser always sends one.
        if host is not None and not self._any_host and split_host(host)[0] not in self._hosts:
            raise falcon.HTTPForbidden(
                title="Unknown host",
                description=f"this API does not answer to the host name {host!r}; "
                "add it to LAMBDA_OS_ALLOWED_HOSTS if it is meant to",
            )
        origin = req.get_header("Origin")
        if (
            req.method in WRITE_METHODS
            and origin is not None
            and not self._same_origin(origin, host)
        ):
            raise falcon.HTTPForbidden(
                title="Cross-origin request",
                description=f"a web page from {origin!r} may not change anything here; "
                "add the origin to LAMBDA_OS_ALLOWED_ORIGINS if it is meant to",
            )

    def _same_origin(self, origin: str, host: str | None) -> bool:
        origin = origin.strip().rstrip("/").lower()
        if origin in self._origins:
            return True
        if host is None:
            return False
        parts = urlsplit(origin)
        if parts.scheme not in DEFAULT_PORTS or not parts.netloc:
            return False  # "null" (a sandboxed or file: page) and anything odd
        default = DEFAULT_PORTS[parts.scheme]
        origin_name, origin_port = split_host(parts.netloc)
        host_name, host_port = split_host(host)
        return (origin_name, origin_port or default) == (host_name, host_port or default)

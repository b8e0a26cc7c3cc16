"""Authentication of API requests, by the mode ``LAMBDA_OS_AUTH`` names.

- ``none``: no credentials; every caller acts for the default project with every
  role. Allowed only when the API binds a loopback address (``refuse_open_bind``),
  so an unauthenticated API is never reachable from another machine.
- ``keystone``: Keystone v3 tokens through keystonemiddleware (``keystone``).

Each mode gives an ``Authenticator`` for the app's ``Authentication`` middleware and,
where the mode needs one, a WSGI wrapper (``protect``); both are built from the
settings alone, in ``lambda_os.serve`` and in tests alike.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

import falcon

from catalog_api.auth.middleware import Authentication, Authenticator
from catalog_api.auth.principal import Principal, local_operator
from lambda_os.errors import PermanentError
from lambda_os.settings import Settings

WSGIApp = Callable[..., Any]
AUTH_MODES = ("none", "keystone")

__all__ = [
    "AUTH_MODES",
    "Authentication",
    "Authenticator",
    "NoAuthentication",
    "authenticator_for",
    "protect",
    "refuse_open_bind",
]


class NoAuthentication:
    """Mode ``none``: whoever reaches the (loopback) API is its local operator."""

    challenge = ""

    def __init__(self, project_id: str) -> None:
        self._principal = local_operator(project_id)

    def authenticate(self, req: falcon.Request) -> Principal | None:
        return self._principal


def authenticator_for(settings: Settings) -> Authenticator:
    if settings.auth == "none":
        return NoAuthentication(settings.default_owner)
    if settings.auth == "keystone":
        from catalog_api.auth.keystone import keystone_identity

        return keystone_identity(settings)
    raise PermanentError(f"LAMBDA_OS_AUTH={settings.auth!r}: choose one of {', '.join(AUTH_MODES)}")


def protect(app: WSGIApp, settings: Settings) -> WSGIApp:
    """``app`` as it is served in this mode (behind ``auth_token`` for Keystone)."""
    if settings.auth == "keystone":
        from catalog_api.auth.keystone import behind_auth_token

        return behind_auth_token(app, settings)
    return app


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def refuse_open_bind(settings: Settings) -> None:
    """``PermanentError`` when the API would answer other machines without authentication."""
    if settings.auth == "none" and not is_loopback(settings.api_host):
        raise PermanentError(
            f"the API would listen on {settings.api_host} without authentication, where other "
            "machines can reach it and run code; set LAMBDA_OS_AUTH=keystone (see the README), "
            "or bind a loopback address (LAMBDA_OS_API_HOST=127.0.0.1)"
        )

"""Authentication of API requests, by the mode ``LAMBDA_OS_AUTH`` names.

- ``none``: no credentials; every caller acts for the default project with every
  role. Allowed only when the API binds a loopback address (``refuse_open_bind``),
  so an unauthenticated API is never reachable from another machine.
- ``keystone``: Keystone v3 tokens through keystonemiddleware (``keystone``).
- ``tokens``: the API's own users and expiring tokens, in the catalogue (``tokens``).

Each mode gives an ``Authenticator`` for the app's ``Authentication`` middleware and,
where the mode needs one, a WSGI wrapper (``protect``); both are built from the
settings alone, in ``lambda_os.serve`` and in tests alike.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import falcon

from catalog_api.auth.middleware import Authentication, Authenticator
from catalog_api.auth.principal import Principal, local_operator
from catalog_api.auth.tokens import ApiTokens
from lambda_os.catalogue import Catalogue
from lambda_os.errors import PermanentError
from lambda_os.settings import Settings

LOGGER = logging.getLogger(__name__)
WSGIApp = Callable[..., Any]
AUTH_MODES = ("none", "keystone", "tokens")

__all__ = [
    "AUTH_MODES",
    "Authentication",
    "Authenticator",
    "NoAuthentication",
    "api_tokens_for",
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


def api_tokens_for(catalogue: Catalogue, settings: Settings) -> ApiTokens | None:
    """Mode ``tokens``' users and tokens on this catalogue (None in other modes); the
    first to find no user makes the admin and says where its password went."""
    if settings.auth != "tokens":
        return None
    tokens = ApiTokens(catalogue, settings.api_token_ttl_s)
    secret = tokens.bootstrap_admin(Path(settings.state_dir))
    if secret is not None:
        LOGGER.warning("made the API user 'admin'; its password is in %s (mode 0600)", secret)
    return tokens


def authenticator_for(settings: Settings) -> Authenticator:
    """The authenticator of modes ``none`` and ``keystone`` (``tokens``: ``api_tokens_for``)."""
    if settings.auth == "tokens":
        raise ValueError("mode tokens needs the catalogue: use api_tokens_for")
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
            "machines can reach it and run code; set LAMBDA_OS_AUTH=keystone or tokens (see the "
            "README), "
            "or bind a loopback address (LAMBDA_OS_API_HOST=127.0.0.1)"
        )

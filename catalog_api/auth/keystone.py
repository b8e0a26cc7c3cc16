"""Keystone tokens: keystonemiddleware's ``auth_token`` in front of the app, as in any
OpenStack service.

``auth_token`` validates the ``X-Auth-Token`` of each request against Keystone with
the API's own service credentials, caches the answer (in process, or in memcached
when configured), and hands the app the token's user in
``environ['keystone.token_auth']``. It runs with ``delay_auth_decision`` so that
the public routes (health, docs) pass without a token and every 401 comes from
``catalog_api.auth.middleware`` in the API's own JSON shape. It also strips any
``X-Identity-Status``/``X-Project-Id``/``X-Roles`` a client sends, and this module
reads the validated token object, never those headers.

The service credentials are a clouds.yaml entry (``LAMBDA_OS_KEYSTONE_CLOUD``) or,
without one, the usual ``OS_*`` variables: the same loader as the Nova seam's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import falcon

from catalog_api.auth.principal import Principal
from lambda_os.errors import PermanentError
from lambda_os.settings import Settings, openstack_environment
from provisioner.nova.auth import Credentials, from_clouds_yaml, from_environment

WSGIApp = Callable[..., Any]


class KeystoneIdentity:
    """The caller as ``auth_token`` validated it: project, user and roles of the token."""

    def __init__(self, www_authenticate_uri: str) -> None:
        self.challenge = f'Keystone uri="{www_authenticate_uri}"'

    def authenticate(self, req: falcon.Request) -> Principal | None:
        token_auth = req.env.get("keystone.token_auth")
        user = getattr(token_auth, "user", None)
        if user is None or not user.project_id:
            return None  # no token, an invalid or expired one, or one scoped to no project
        return Principal(user.project_id, user.user_id or "", frozenset(user.role_names or ()))


def service_credentials(settings: Settings) -> Credentials:
    """Who the API is when it asks Keystone about a token."""
    if settings.keystone_cloud:
        return from_clouds_yaml(settings.keystone_cloud, settings.os_client_config_file)
    if settings.os_cloud:
        return from_clouds_yaml(settings.os_cloud, settings.os_client_config_file)
    return from_environment(openstack_environment())


def auth_token_conf(credentials: Credentials, cache_s: int = 300) -> dict[str, Any]:
    """``auth_token``'s options, given as a paste.ini section would give them."""
    from oslo_config import cfg

    auth_url = credentials.auth.get("auth_url")
    if not auth_url:
        raise PermanentError(f"{credentials.source}: no auth_url for Keystone")
    return {
        **credentials.auth,
        "auth_type": credentials.auth_type,
        "www_authenticate_uri": auth_url,
        "delay_auth_decision": True,
        "token_cache_time": cache_s,
        "region_name": credentials.region_name,
        "interface": credentials.interface or "public",
        "insecure": credentials.verify is False,
        **({"cafile": credentials.verify} if isinstance(credentials.verify, str) else {}),
        # Its own option registry: the process-wide one belongs to whoever embeds us.
        "oslo_config_config": cfg.ConfigOpts(),
    }


def keystone_identity(settings: Settings) -> KeystoneIdentity:
    """The authenticator that reads what ``behind_auth_token`` validated."""
    return KeystoneIdentity(auth_token_conf(service_credentials(settings))["www_authenticate_uri"])


def behind_auth_token(app: WSGIApp, settings: Settings) -> WSGIApp:
    """``app`` behind keystonemiddleware's ``auth_token``."""
    from keystonemiddleware import auth_token

    conf = auth_token_conf(service_credentials(settings), settings.keystone_cache_s)
    return auth_token.AuthProtocol(app, conf)

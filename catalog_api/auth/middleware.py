"""The Falcon middleware every request passes: who is it (401), and may it do this (403).

Which routes need what is one table, ``rule_for``: reading needs any role, changing
anything (and invoking, which runs code) needs ``member``, the cluster's hosts need
``admin``. Whether a caller may see one *particular* resource is the resources'
business (``catalog_api.auth.scope``): another project's function answers 404, the
same as one that does not exist, so ids cannot be probed.
"""

from __future__ import annotations

from typing import Any, Protocol

import falcon

from catalog_api.auth.principal import Principal

# Reachable without credentials: a load balancer's probe, the API's own description, and
# the console's page and script (which hold no data: its calls to /v1 carry the token).
# Logging in and revoking carry their own credentials (catalog_api.users).
PUBLIC_PREFIXES = ("/healthz", "/metrics", "/docs", "/console", "/v1/openapi.yaml", "/v1/auth")
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
ADMIN_ROUTES = ("/v1/hosts", "/v1/quotas", "/v1/users")

READ = "read"
WRITE = "write"
ADMINISTER = "admin"


class Authenticator(Protocol):
    """One way of logging in (Keystone tokens, API tokens, none)."""

    challenge: str  # the WWW-Authenticate value a 401 carries

    def authenticate(self, req: falcon.Request) -> Principal | None:
        """The caller, or None when the request carries no valid credentials."""
        ...


def is_public(path: str) -> bool:
    return any(path == prefix or path.startswith(prefix + "/") for prefix in PUBLIC_PREFIXES)


def rule_for(method: str, route: str) -> str:
    """What a request needs: ``read``, ``write`` or ``admin``."""
    if any(route == prefix or route.startswith(prefix + "/") for prefix in ADMIN_ROUTES):
        return ADMINISTER
    return READ if method in READ_METHODS else WRITE


def allowed(principal: Principal, rule: str) -> bool:
    if rule == ADMINISTER:
        return principal.is_admin
    if rule == WRITE:
        return principal.can_write
    return principal.can_read


class Authentication:
    """Puts the caller in ``req.context.principal``; refuses those without one or the role."""

    def __init__(self, authenticator: Authenticator) -> None:
        self._authenticator = authenticator

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.principal = None
        if is_public(req.path):
            return
        principal = self._authenticator.authenticate(req)
        if principal is None:
            raise falcon.HTTPUnauthorized(
                title="Authentication required",
                description="send a valid token in the X-Auth-Token header "
                "(API tokens also as Authorization: Bearer)",
                challenges=[self._authenticator.challenge],
            )
        req.context.principal = principal

    def process_resource(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, params: dict[str, Any]
    ) -> None:
        principal: Principal | None = req.context.principal
        if principal is None:  # a public route
            return
        rule = rule_for(req.method, req.uri_template or req.path)
        if not allowed(principal, rule):
            needed = {READ: "reader", WRITE: "member", ADMINISTER: "admin"}[rule]
            raise falcon.HTTPForbidden(
                title="Role required",
                description=f"{req.method} {req.path} needs the {needed!r} role in the project; "
                f"this token has {', '.join(sorted(principal.roles)) or 'no role'}",
            )

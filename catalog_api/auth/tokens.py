"""API tokens without Keystone (``LAMBDA_OS_AUTH=tokens``): users and expiring tokens in
the catalogue, for a lab or a single operator.

- At first start there is no user: ``bootstrap_admin`` makes ``admin`` (role admin,
  in its own project) with a random password, written once to a 0600 file under the
  state directory and never stored in clear.
- ``POST /v1/auth/tokens`` with a user's name and password returns a random token
  that expires after ``LAMBDA_OS_API_TOKEN_TTL_S``; ``DELETE`` revokes the token sent.
- Admins create and delete users (``/v1/users``), each in one project with roles
  from ``reader``, ``member``, ``admin``; deleting a user revokes its tokens.

Passwords are kept as PBKDF2-SHA256 with a salt of their own; tokens as their
SHA-256 (a token is 32 random bytes, so a fast hash is enough and a lookup is one
read by id). A stolen copy of the catalogue thus holds no usable secret.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import falcon

from catalog_api.auth.principal import ADMIN, Principal
from lambda_os.catalogue import Catalogue
from lambda_os.errors import Conflict, NotFound
from lambda_os.records import utcnow

LOGGER = logging.getLogger(__name__)
PBKDF2_ITERATIONS = 200_000
ADMIN_USER = "admin"
ADMIN_SECRET_FILE = "admin-secret"


def hash_password(password: str, salt: bytes | None = None) -> dict[str, Any]:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, PBKDF2_ITERATIONS)
    return {"salt": salt.hex(), "hash": digest.hex(), "iterations": PBKDF2_ITERATIONS}


def password_matches(stored: dict[str, Any], password: str) -> bool:
    salt = bytes.fromhex(stored["salt"])
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, int(stored["iterations"]))
    return hmac.compare_digest(digest.hex(), stored["hash"])


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def request_token(req: falcon.Request) -> str | None:
    """The token a request carries: ``X-Auth-Token``, or ``Authorization: Bearer``."""
    token = req.get_header("X-Auth-Token")
    if token:
        return token
    authorization = req.get_header("Authorization") or ""
    scheme, _, value = authorization.partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


class ApiTokens:
    """Users, logins and the authenticator of mode ``tokens``."""

    challenge = 'Bearer realm="lambda-os"'

    def __init__(self, catalogue: Catalogue, ttl_s: float, clock: Any = utcnow) -> None:
        self._catalogue = catalogue
        self._ttl = timedelta(seconds=ttl_s)
        self._clock = clock

    def authenticate(self, req: falcon.Request) -> Principal | None:
        token = request_token(req)
        if not token:
            return None
        record = self._catalogue.get_api_token(token_hash(token))
        if record is None or _aware(record["expires_at"]) <= self._clock():
            return None
        return Principal(record["project"], record["user"], frozenset(record["roles"]))

    def add_user(self, name: str, password: str, project: str, roles: list[str]) -> dict[str, Any]:
        user = {
            "_id": name,
            "project": project,
            "roles": sorted(set(roles)),
            "password": hash_password(password),
            "created_at": self._clock(),
        }
        self._catalogue.add_api_user(user)
        return user

    def login(self, name: str, password: str) -> tuple[str, datetime] | None:
        """A new token for the user and when it expires; None for a wrong name or password."""
        user = self._catalogue.get_api_user(name)
        if user is None or not password_matches(user["password"], password):
            return None
        token = secrets.token_urlsafe(32)
        expires_at = self._clock() + self._ttl
        self._catalogue.add_api_token(
            {
                "_id": token_hash(token),
                "user": name,
                "project": user["project"],
                "roles": user["roles"],
                "expires_at": expires_at,
                "created_at": self._clock(),
            }
        )
        return token, expires_at

    def users(self) -> list[dict[str, Any]]:
        return self._catalogue.list_api_users()

    def user(self, name: str) -> dict[str, Any]:
        user = self._catalogue.get_api_user(name)
        if user is None:
            raise NotFound(f"user {name!r} does not exist")
        return user

    def delete_user(self, name: str) -> None:
        if not self._catalogue.delete_api_user(name):
            raise NotFound(f"user {name!r} does not exist")

    def revoke(self, token: str) -> bool:
        return self._catalogue.delete_api_token(token_hash(token))

    def bootstrap_admin(self, state_dir: Path) -> Path | None:
        """Make the ``admin`` user if there is no user yet; the file its password went to."""
        if self._catalogue.list_api_users():
            return None
        password = secrets.token_urlsafe(24)
        try:
            self.add_user(ADMIN_USER, password, ADMIN_USER, [ADMIN])
        except Conflict:  # another process made it first
            return None
        state_dir.mkdir(parents=True, exist_ok=True)
        path = state_dir / ADMIN_SECRET_FILE
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(password + "\n")
        os.chmod(path, 0o600)
        return path


def user_view(user: dict[str, Any]) -> dict[str, Any]:
    """A user as the API shows it: never its password hash."""
    created = user.get("created_at")
    return {
        "name": user["_id"],
        "project": user["project"],
        "roles": list(user["roles"]),
        "created_at": created.isoformat() if created else None,
    }


def _aware(moment: datetime) -> datetime:
    """mongomock and some servers hand datetimes back naive; they were stored in UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)

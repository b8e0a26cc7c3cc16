"""Who is asking: the project a request acts in, and the roles it holds there.

Every mode of authentication (``catalog_api.auth``) ends in one ``Principal`` per
request; the resources decide what it may see from this alone, so a new way of
logging in never changes what a role allows.
"""

from __future__ import annotations

from dataclasses import dataclass

READER = "reader"
MEMBER = "member"
ADMIN = "admin"


@dataclass(frozen=True)
class Principal:
    """A caller acting in ``project_id`` with ``roles`` (Keystone's role names)."""

    project_id: str
    user_id: str
    roles: frozenset[str]

    @property
    def is_admin(self) -> bool:
        """Admins see every project's resources and the cluster's hosts."""
        return ADMIN in self.roles

    @property
    def can_read(self) -> bool:
        return bool(self.roles & {READER, MEMBER, ADMIN})

    @property
    def can_write(self) -> bool:
        """Members manage their project's functions; readers only look."""
        return bool(self.roles & {MEMBER, ADMIN})

    def sees(self, project_id: str | None) -> bool:
        """Whether a resource owned by ``project_id`` exists as far as this caller knows."""
        return self.is_admin or (project_id is not None and project_id == self.project_id)


def local_operator(project_id: str) -> Principal:
    """The caller of an API without authentication (loopback only): all roles, one project."""
    return Principal(project_id, "local", frozenset({READER, MEMBER, ADMIN}))

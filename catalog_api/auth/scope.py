"""What one caller sees of the catalogue: its own project's records, and nothing else.

Functions belong to the project in their ``owner``; executions and dead letters
belong to their function's project. A record of another project is answered
exactly like one that does not exist (``NotFound`` with the same message), so a
caller cannot learn which ids are taken elsewhere. An execution or dead letter
whose function was deleted is no longer anyone's but an admin's.
"""

from __future__ import annotations

from typing import Any

import falcon

from catalog_api.auth.principal import Principal
from lambda_os.catalogue import Catalogue
from lambda_os.errors import NotFound
from lambda_os.records import DeadLetterRecord, ExecutionRecord, FunctionRecord


def principal_of(req: falcon.Request) -> Principal:
    """The request's caller, as ``catalog_api.auth.middleware.Authentication`` found it."""
    principal: Principal | None = req.context.principal
    if principal is None:
        raise falcon.HTTPUnauthorized(title="Authentication required")
    return principal


def scope_of(req: falcon.Request, catalogue: Catalogue) -> Scope:
    return Scope(catalogue, principal_of(req))


class Scope:
    """The catalogue as ``principal`` may see it."""

    def __init__(self, catalogue: Catalogue, principal: Principal) -> None:
        self._catalogue = catalogue
        self.principal = principal

    def function(self, function_id: str) -> FunctionRecord:
        function = self._catalogue.get_function(function_id)
        if not self.principal.sees(function.owner):
            raise NotFound(f"function {function_id!r} does not exist")
        return function

    def execution(self, execution_id: str) -> ExecutionRecord:
        record = self._catalogue.get_execution(execution_id)
        if not self._sees_function(record.function_id):
            raise NotFound(f"execution {execution_id!r} does not exist")
        return record

    def dead_letter(self, dead_letter_id: str) -> DeadLetterRecord:
        record = self._catalogue.get_dead_letter(dead_letter_id)
        if not self._sees_function(record.function_id):
            raise NotFound(f"dead letter {dead_letter_id!r} does not exist")
        return record

    def function_filters(self, query: dict[str, Any]) -> dict[str, Any]:
        """``query`` narrowed to the caller's project."""
        if self.principal.is_admin:
            return dict(query)
        return {**query, "owner": self.principal.project_id}

    def by_function_filters(self, query: dict[str, Any]) -> dict[str, Any]:
        """``query`` (executions, dead letters) narrowed to the project's functions."""
        if self.principal.is_admin:
            return dict(query)
        own = self._catalogue.function_ids_of(self.principal.project_id)
        asked = query.get("function_id")
        if asked is not None:
            return {**query, "function_id": asked if asked in own else {"$in": []}}
        return {**query, "function_id": {"$in": own}}

    def _sees_function(self, function_id: str | None) -> bool:
        if self.principal.is_admin:
            return True
        if function_id is None:
            return False
        try:
            return self._catalogue.get_function(function_id).owner == self.principal.project_id
        except NotFound:
            return False

"""Logins and users of the API's own tokens (``LAMBDA_OS_AUTH=tokens``).

``/v1/auth/tokens``: POST a name and password for a token (no token needed), DELETE
to revoke the token sent. ``/v1/users`` and ``/v1/users/{name}``: admins list,
create and delete users. In the other modes these answer 404 and say why: Keystone
issues its own tokens, and without authentication there is nobody to log in.
"""

from __future__ import annotations

import falcon
from marshmallow import Schema, fields, validate

from catalog_api.auth.principal import ADMIN, MEMBER, READER
from catalog_api.auth.tokens import ApiTokens, request_token, user_view
from catalog_api.forms import MAX_CONFIG_BODY, read_json_object

NAME = validate.Regexp(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", error="1-64 letters, digits, . _ -")


class LoginSchema(Schema):
    name = fields.String(required=True, validate=validate.Length(1, 64))
    password = fields.String(required=True, validate=validate.Length(1, 1024))


class UserCreateSchema(Schema):
    name = fields.String(required=True, validate=NAME)
    password = fields.String(required=True, validate=validate.Length(12, 1024))
    project = fields.String(required=True, validate=NAME)
    roles = fields.List(
        fields.String(validate=validate.OneOf([READER, MEMBER, ADMIN])),
        required=True,
        validate=validate.Length(1, 3),
    )


def _on(tokens: ApiTokens | None) -> ApiTokens:
    if tokens is None:
        raise falcon.HTTPNotFound(
            title="API tokens are off",
            description="this API does not issue its own tokens: it runs with LAMBDA_OS_AUTH "
            "keystone (get a token from Keystone) or none (no token is needed)",
        )
    return tokens


class TokensResource:
    """``/v1/auth/tokens``: log in, or revoke the token the request carries."""

    def __init__(self, tokens: ApiTokens | None) -> None:
        self._tokens = tokens

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        tokens = _on(self._tokens)
        login = LoginSchema().load(read_json_object(req, MAX_CONFIG_BODY))
        issued = tokens.login(login["name"], login["password"])
        if issued is None:
            raise falcon.HTTPUnauthorized(
                title="Login failed",
                description="no such user, or the wrong password",
                challenges=[tokens.challenge],
            )
        token, expires_at = issued
        resp.status = falcon.HTTP_201
        resp.media = {"token": token, "expires_at": expires_at.isoformat()}

    def on_delete(self, req: falcon.Request, resp: falcon.Response) -> None:
        tokens = _on(self._tokens)
        token = request_token(req)
        if not token or not tokens.revoke(token):
            raise falcon.HTTPUnauthorized(
                title="Authentication required",
                description="send the token to revoke in the X-Auth-Token header",
                challenges=[tokens.challenge],
            )
        resp.status = falcon.HTTP_204


class UsersResource:
    """``/v1/users``: every user (admin), or a new one."""

    def __init__(self, tokens: ApiTokens | None) -> None:
        self._tokens = tokens

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        tokens = _on(self._tokens)
        resp.media = {"users": [user_view(u) for u in tokens.users()]}

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        tokens = _on(self._tokens)
        new = UserCreateSchema().load(read_json_object(req, MAX_CONFIG_BODY))
        user = tokens.add_user(new["name"], new["password"], new["project"], new["roles"])
        resp.status = falcon.HTTP_201
        resp.location = f"/v1/users/{user['_id']}"
        resp.media = user_view(user)


class UserResource:
    """``/v1/users/{name}``: one user (admin); DELETE also revokes its tokens."""

    def __init__(self, tokens: ApiTokens | None) -> None:
        self._tokens = tokens

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        resp.media = user_view(_on(self._tokens).user(name))

    def on_delete(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        _on(self._tokens).delete_user(name)
        resp.status = falcon.HTTP_204

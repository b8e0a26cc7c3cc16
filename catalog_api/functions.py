"""Function resources: create, list, read, change and delete functions and their code.

Each resource validates its input with a schema, checks any package with
``inspect_package`` before the catalogue sees it, and leaves every error to the
handlers registered in ``create_app``.
"""

from __future__ import annotations

import io
import zipfile
from typing import Any

import falcon

from catalog_api.auth.scope import scope_of
from catalog_api.forms import (
    FORM_OVERHEAD_BYTES,
    MAX_CONFIG_BODY,
    MAX_PACKAGE_BODY,
    Form,
    media_type,
    parse_form,
    read_body,
    read_json_object,
)
from catalog_api.paging import next_link
from catalog_api.quotas import QuotaGuard
from catalog_api.runtimes import RuntimeList
from catalog_api.schemas import (
    CodeFormSchema,
    CodeQuerySchema,
    FunctionCreateJSONSchema,
    FunctionListQuerySchema,
    FunctionPatchSchema,
    FunctionSchema,
)
from lambda_os.catalogue import Catalogue
from lambda_os.errors import InvalidPackage
from lambda_os.packages import MAX_UPLOAD_BYTES, inspect_package

MULTIPART = "multipart/form-data"
ZIP_TYPES = ("application/zip", "application/x-zip-compressed")
RAW_CODE_TYPES = (*ZIP_TYPES, "text/x-python", "application/octet-stream")
MAX_FORM_BODY = MAX_UPLOAD_BYTES + FORM_OVERHEAD_BYTES


def function_url(function_id: str) -> str:
    return f"/v1/functions/{function_id}"


class FunctionsResource:
    """``/v1/functions``: register a function with its code, and list functions."""

    def __init__(self, catalogue: Catalogue, runtimes: RuntimeList, quotas: QuotaGuard) -> None:
        self._catalogue = catalogue
        self._quotas = quotas
        names = [runtime.name for runtime in runtimes]
        self._form_schema = FunctionSchema(names)
        self._json_schema = FunctionCreateJSONSchema(names)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        query = FunctionListQuerySchema().load(req.params)
        limit = query.pop("limit")
        marker = query.pop("marker", None)
        filters = scope_of(req, self._catalogue).function_filters(query)
        page = self._catalogue.list_functions(filters, limit, marker)
        resp.media = {
            "functions": [function.to_api() for function in page.items],
            "next": next_link("/v1/functions", query, limit, page.marker),
        }

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        kind = media_type(req)
        if kind == MULTIPART:
            form = code_form(req)
            config = self._form_schema.load(form.fields)
            code, filename = form.code, form.filename
        elif kind == "application/json":
            config = self._json_schema.load(read_json_object(req, MAX_PACKAGE_BODY))
            code, filename = config.pop("code_base64"), config.pop("code_filename")
        else:
            raise falcon.HTTPUnsupportedMediaType(
                description=f"send {MULTIPART} with a 'code' file part, or application/json "
                f"with 'code_base64'; got {kind or 'no Content-Type'}"
            )
        owner = scope_of(req, self._catalogue).principal.project_id
        info = inspect_package(code, filename, config["handler"])
        self._quotas.before_store(owner, new_functions=1, added_bytes=info.size)
        record = self._catalogue.create_function({**config, "owner": owner}, code, info)
        resp.status = falcon.HTTP_201
        resp.location = function_url(record.id)
        resp.media = record.to_api()


class FunctionResource:
    """``/v1/functions/{id}``: read, reconfigure or delete one function."""

    def __init__(self, catalogue: Catalogue, runtimes: RuntimeList) -> None:
        self._catalogue = catalogue
        self._patch_schema = FunctionPatchSchema([runtime.name for runtime in runtimes])

    def on_get(self, req: falcon.Request, resp: falcon.Response, function_id: str) -> None:
        resp.media = scope_of(req, self._catalogue).function(function_id).to_api()

    def on_patch(self, req: falcon.Request, resp: falcon.Response, function_id: str) -> None:
        scope_of(req, self._catalogue).function(function_id)
        changes: dict[str, Any] = self._patch_schema.load(read_json_object(req, MAX_CONFIG_BODY))
        if "handler" in changes:
            changes.update(self._handler_change(function_id, changes["handler"]))
        resp.media = self._catalogue.update_function(function_id, changes).to_api()

    def on_delete(self, req: falcon.Request, resp: falcon.Response, function_id: str) -> None:
        scope_of(req, self._catalogue).function(function_id)
        self._catalogue.delete_function(function_id)
        resp.status = falcon.HTTP_204

    def _handler_change(self, function_id: str, handler: str) -> dict[str, Any]:
        """A new handler must name a module the stored package has; a .py file is renamed."""
        function = self._catalogue.get_function(function_id)
        package = self._catalogue.get_package(function)
        info = inspect_package(package.data, package.filename, handler)
        return {"code_filename": info.filename}


class CodeResource:
    """``/v1/functions/{id}/code``: the package back byte for byte, or a new one (version + 1)."""

    def __init__(self, catalogue: Catalogue, quotas: QuotaGuard) -> None:
        self._catalogue = catalogue
        self._quotas = quotas

    def on_get(self, req: falcon.Request, resp: falcon.Response, function_id: str) -> None:
        function = scope_of(req, self._catalogue).function(function_id)
        package = self._catalogue.get_package(function)
        resp.content_type = package.content_type
        resp.downloadable_as = package.filename or f"{function.name}.zip"
        resp.etag = package.sha256
        resp.data = package.data

    def on_put(self, req: falcon.Request, resp: falcon.Response, function_id: str) -> None:
        scope_of(req, self._catalogue).function(function_id)
        query = CodeQuerySchema().load(req.params)
        kind = media_type(req)
        if kind == MULTIPART:
            form = code_form(req)
            fields = CodeFormSchema().load(form.fields)
            data, filename = form.code, form.filename or query["filename"]
            handler = fields.get("handler", query.get("handler"))
        elif kind in RAW_CODE_TYPES:
            data, filename = read_body(req, MAX_UPLOAD_BYTES), query["filename"]
            handler = query.get("handler")
            if kind in ZIP_TYPES and data and not zipfile.is_zipfile(io.BytesIO(data)):
                raise InvalidPackage(f"the body is sent as {kind} but is not a zip archive")
        else:
            raise falcon.HTTPUnsupportedMediaType(
                description=f"send the package as {', '.join(RAW_CODE_TYPES)} or as "
                f"{MULTIPART} with a 'code' part; got {kind or 'no Content-Type'}"
            )
        function = self._catalogue.get_function(function_id)
        info = inspect_package(data, filename, handler or function.handler)
        self._quotas.before_store(function.owner, 0, added_bytes=info.size - function.code_size)
        resp.media = self._catalogue.replace_code(function_id, data, info, handler).to_api()


def code_form(req: falcon.Request) -> Form:
    """The request's multipart form, which must carry the package in a file part ``code``."""
    form = parse_form(req, read_body(req, MAX_FORM_BODY))
    if form.code is None:
        raise falcon.HTTPBadRequest(
            title="Malformed form", description="the form needs a file part named 'code'"
        )
    return form

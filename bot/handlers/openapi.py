"""The OpenAPI 3.1 document of the HTTP API, generated from the routes and the pydantic models they declare."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, Field, TypeAdapter

from bot.handlers.http import json_response
from core.config import ApiScope

REF = "#/components/schemas/{model}"
H = TypeVar("H", bound=Callable[..., Any])


class ErrorField(BaseModel):
    field: str
    message: str


class ErrorDetail(BaseModel):
    status: int
    message: str
    fields: list[ErrorField] = Field(default_factory=list)


class ErrorBody(BaseModel):
    """The one shape of every error answer."""

    error: ErrorDetail


@dataclass(frozen=True)
class Endpoint:
    """What a handler accepts and answers, for the document."""

    summary: str
    scope: ApiScope | None
    body: Any = None
    query: type[BaseModel] | None = None
    responses: dict[int, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    content_type: str = "application/json"


def documented(
    *,
    summary: str,
    scope: ApiScope | None,
    body: Any = None,
    query: type[BaseModel] | None = None,
    responses: dict[int, Any] | None = None,
    tags: tuple[str, ...] = (),
    content_type: str = "application/json",
) -> Callable[[H], H]:
    """Attach the OpenAPI description to a handler (the handler itself is unchanged)."""

    def attach(handler: H) -> H:
        handler.__openapi__ = Endpoint(  # type: ignore[attr-defined]
            summary, scope, body, query, responses or {}, tags, content_type
        )
        return handler

    return attach


class _Schemas:
    """Collects component schemas from pydantic types, each defined once."""

    def __init__(self) -> None:
        self.components: dict[str, Any] = {}

    def ref(self, annotation: Any, *, mode: str) -> dict[str, Any]:
        schema = TypeAdapter(annotation).json_schema(ref_template=REF, mode=mode)  # type: ignore[arg-type]
        self.components.update(schema.pop("$defs", {}))
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            name = annotation.__name__
            self.components.setdefault(name, schema)
            return {"$ref": REF.format(model=name)}
        return schema


def _parameters(path: str, query: type[BaseModel] | None, schemas: _Schemas) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
        for name in re.findall(r"{(\w+)}", path)
    ]
    if query is not None:
        schema = TypeAdapter(query).json_schema(ref_template=REF, mode="validation")
        schemas.components.update(schema.pop("$defs", {}))
        required = set(schema.get("required", []))
        for name, prop in schema.get("properties", {}).items():
            params.append({"name": name, "in": "query", "required": name in required, "schema": prop})
    return params


ERRORS = {
    400: "invalid JSON or parameters",
    401: "no API key, or an unknown one",
    403: "the key lacks the scope or the tenant",
    404: "no such resource",
    409: "conflicts with the current state",
    413: "body too large",
    422: "invalid fields",
}


def build_document(app: web.Application, *, title: str = "ackbot", version: str = "1") -> dict[str, Any]:
    """The OpenAPI 3.1 document of every documented route of app."""
    schemas = _Schemas()
    error_ref = schemas.ref(ErrorBody, mode="serialization")
    paths: dict[str, dict[str, Any]] = {}
    for route in app.router.routes():
        endpoint: Endpoint | None = getattr(route.handler, "__openapi__", None)
        resource = route.resource
        if endpoint is None or resource is None:
            continue
        path = resource.canonical
        operation: dict[str, Any] = {
            "summary": endpoint.summary,
            "operationId": f"{route.method.lower()}_{re.sub(r'[^a-z0-9]+', '_', path.lower()).strip('_')}",
            "tags": list(endpoint.tags),
            "parameters": _parameters(path, endpoint.query, schemas),
            "responses": {},
        }
        if endpoint.scope is not None:
            operation["security"] = [{"bearer": [endpoint.scope.value]}]
        if endpoint.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {endpoint.content_type: {"schema": schemas.ref(endpoint.body, mode="validation")}},
            }
        for status, model in sorted(endpoint.responses.items()):
            if model is None:
                operation["responses"][str(status)] = {"description": "no content"}
            elif isinstance(model, str):
                operation["responses"][str(status)] = {"description": model}
            else:
                operation["responses"][str(status)] = {
                    "description": "success",
                    "content": {"application/json": {"schema": schemas.ref(model, mode="serialization")}},
                }
        statuses = {400, 413, 422} if endpoint.body is not None or endpoint.query is not None else set()
        if endpoint.scope is not None:
            statuses |= {401, 403}
        if "{" in path:
            statuses.add(404)
        for status in sorted(statuses):
            operation["responses"].setdefault(
                str(status),
                {"description": ERRORS[status], "content": {"application/json": {"schema": error_ref}}},
            )
        paths.setdefault(path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": "ChatOps bot with interactive approvals. Errors are JSON and name the bad field.",
        },
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(schemas.components.items())),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "an ackbot API key"}},
        },
    }


# Filled on the first request: the routes are complete by then, and a frozen app's keys cannot be set.
OPENAPI: web.AppKey[dict[str, Any]] = web.AppKey("openapi", dict)


async def get_openapi(request: web.Request) -> web.Response:
    """GET /api/v1/openapi.json: built once, on first request, from the app's routes."""
    cache = request.app[OPENAPI]
    if not cache:
        cache.update(build_document(request.app))
    return json_response(cache)


def routes() -> list[web.RouteDef]:
    """The document's own route."""
    return [web.get("/api/v1/openapi.json", get_openapi)]

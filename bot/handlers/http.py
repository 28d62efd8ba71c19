"""What every HTTP handler shares: JSON errors, authentication, body limits and query parsing."""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from bot.handlers import db_outage
from bot.handlers.db_outage import DB_OUTAGE
from bot.logs import REQUEST_ID
from core import json_input
from core.auth import AuthError, ForbiddenError, Principal
from core.config import ApiScope, format_loc
from core.json_input import JsonRefused
from core.runtime import Runtime
from core.url_redaction import redact_urls

log = logging.getLogger("ackbot.http")

RUNTIME: web.AppKey[Runtime] = web.AppKey("runtime", Runtime)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
M = TypeVar("M", bound=BaseModel)


def allowed_methods(request: web.Request, reported: str) -> str:
    """A 405's Allow: the methods of the route the path names literally (`/api/v1/rules/test`), not aiohttp's union
    with those of a pattern the path also fits (`/api/v1/rules/{name}`)."""
    for resource in request.app.router.resources():
        if resource.get_info().get("path") == request.path:
            methods = {route.method for route in resource}
            return ",".join(sorted(methods | {"HEAD"} if "GET" in methods else methods))
    return reported


class ApiError(Exception):
    """An error the client should see, with its HTTP status and the fields it concerns."""

    def __init__(self, status: int, message: str, *, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors or []


def invalid_cursor() -> ApiError:
    """The 400 for a cursor query parameter that no page of ours handed out."""
    return ApiError(400, "invalid cursor", errors=[{"field": "cursor", "message": "not a cursor we made"}])


def error_body(status: int, message: str, errors: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The one JSON shape of every error answer."""
    body: dict[str, Any] = {"error": {"status": status, "message": redact_urls(message)}}
    if errors:
        body["error"]["fields"] = [{**e, "message": redact_urls(str(e.get("message", "")))} for e in errors]
    return body


def validation_errors(exc: ValidationError, prefix: tuple[int | str, ...] = ()) -> list[dict[str, Any]]:
    """Each bad field of a pydantic error, named by its path in the request body."""
    fields = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = (*prefix, *error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        fields.append({"field": format_loc(loc) or "(body)", "message": message})
    return fields


def json_response(data: Any, status: int = 200) -> web.Response:
    """A JSON answer; pydantic models are written by pydantic, in JSON mode."""
    if isinstance(data, BaseModel):
        # Straight to JSON text: no dict of the model for json.dumps to walk again.
        return web.Response(text=data.model_dump_json(), status=status, content_type="application/json")
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, default=str))


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every failure into a JSON answer: bad input is a 4xx naming the field, never a traceback."""
    request_id = _request_id(request.headers.get("X-Request-Id"))
    token = REQUEST_ID.set(request_id)
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
    except ApiError as exc:
        status = exc.status
        response = json_response(error_body(exc.status, exc.message, exc.errors), status=exc.status)
    except AuthError as exc:
        status = 401
        response = json_response(error_body(401, str(exc)), status=401)
        response.headers["WWW-Authenticate"] = 'Bearer realm="ackbot"'
    except ForbiddenError as exc:
        status = 403
        response = json_response(error_body(403, str(exc)), status=403)
    except ValidationError as exc:
        status = 422
        response = json_response(error_body(422, "invalid request", validation_errors(exc)), status=422)
    except web.HTTPException as exc:
        status = exc.status
        if exc.status < 400:
            raise
        response = json_response(error_body(exc.status, exc.reason), status=exc.status)
        if exc.status == 405:
            response.headers["Allow"] = allowed_methods(request, exc.headers.get("Allow", ""))
    except Exception as exc:
        outage = request.app.get(DB_OUTAGE)
        if outage is None or not db_outage.is_unavailable(exc):
            log.exception("request %s %s failed (request id %s)", request.method, request.path, request_id)
            response = json_response(error_body(500, f"internal error (request id {request_id})"), status=500)
        else:
            # The database is down, restarting or out of connections: nothing was committed, the client may retry.
            status = 503
            outage.failed(exc, runtime_of(request).db.ping)
            response = json_response(error_body(503, "the database is unavailable; retry shortly"), status=503)
            response.headers["Retry-After"] = str(outage.RETRY_AFTER)
    finally:
        route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
        runtime = request.app.get(RUNTIME)
        if runtime is not None:
            metrics = runtime.metrics
            latency = metrics.labelled(metrics.http_latency, request.method, route, str(status))
            latency.observe(time.perf_counter() - started)
    response.headers["X-Request-Id"] = request_id
    REQUEST_ID.reset(token)
    return response


def _request_id(given: str | None) -> str:
    # A caller's id is kept so logs join across systems, but only if it is short and plain: it goes into logs.
    if given and len(given) <= 64 and all(c.isalnum() or c in "-_.:" for c in given):
        return given
    return secrets.token_hex(8)


def runtime_of(request: web.Request) -> Runtime:
    """The process runtime the app was built with."""
    return request.app[RUNTIME]


def hide_unless_visible(principal: Principal, tenant: str, not_found: str) -> None:
    """Another tenant's item is not there for this key: the very 404 an unknown one gets, so that its existence
    does not show either. Items shared with every tenant ("*") are visible."""
    if not principal.sees(tenant):
        raise ApiError(404, not_found)


def authenticate(request: web.Request, scope: ApiScope) -> Principal:
    """The calling key, which must carry scope; 401/403 otherwise."""
    principal = runtime_of(request).keyring.authenticate(request.headers.get("Authorization"))
    principal.require(scope)
    return principal


class BodyTooLarge(Exception):
    """A request body longer than the limit, declared or sent."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body is larger than {limit} bytes")
        self.limit = limit


async def read_limited(request: web.Request, limit: int) -> bytes:
    """The whole body, read until its end (chunked too), or BodyTooLarge once it passes limit bytes.

    Not ``request.content.read(n)``: that answers with what has arrived so far, which cuts a large body short.
    ``request.read()`` reads to the end and stops at the app's client_max_size (create_app sets it to the limit
    plus one); the body is kept on the request, so a later ``request.text()`` or ``post()`` sees it too.
    """
    if request.content_length is not None and request.content_length > limit:
        raise BodyTooLarge(limit)
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise BodyTooLarge(limit) from None
    if len(raw) > limit:
        raise BodyTooLarge(limit)
    return raw


async def read_body(request: web.Request) -> bytes:
    """The request body, within the size limit and not blank; 413 or 400 otherwise."""
    try:
        raw = await read_limited(request, runtime_of(request).config.server.max_body_bytes)
    except BodyTooLarge as exc:
        raise ApiError(413, str(exc)) from None
    if not raw.strip():
        raise ApiError(400, "request body is empty: send a JSON document")
    return raw


def json_refusal(exc: JsonRefused, *, what: str = "request body") -> ApiError:
    """The 400 for a document json_input refused, naming the field."""
    where = what if exc.field == "(body)" else f"{what} field {exc.field}"
    return ApiError(400, f"{where} is {exc.message}", errors=[{"field": exc.field, "message": exc.message}])


def decode_json(raw: bytes) -> Any:
    """A body read by read_body as JSON; 400 naming the field if it is not JSON, is too deep or is not finite."""
    try:
        return json_input.loads(raw)
    except JsonRefused as exc:
        raise json_refusal(exc) from None


async def read_json(request: web.Request) -> Any:
    """The request body as JSON, within the size limit; 413 or 400 otherwise."""
    return decode_json(await read_body(request))


def parse_model(model: type[M], data: Any, *, prefix: tuple[int | str, ...] = ()) -> M:
    """Validate data as model; a 422 naming each bad field otherwise."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ApiError(422, "invalid request", errors=validation_errors(exc, prefix)) from None


def parse_json_model(model: type[M], raw: bytes) -> M:
    """Validate a body read by read_body as model, parsed by pydantic; the answer to a bad body is the one
    decode_json and parse_model give."""
    if not json_input.surely_shallow(raw):
        # Possibly nested past the limit outside the free-form fields, which check themselves: the checked way.
        return parse_model(model, decode_json(raw))
    try:
        return model.model_validate_json(raw)
    except ValidationError:
        # Whatever pydantic's parser refused is parsed and validated again the usual way, so that a bad body gets
        # the same 400 or 422, naming the same fields, and a body only json.loads reads (UTF-16, say) still passes.
        return parse_model(model, decode_json(raw))


def query_model(model: type[M], request: web.Request) -> M:
    """Validate the query string as model (unknown parameters are errors)."""
    return parse_model(model, dict(request.query))

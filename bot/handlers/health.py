"""Probes and metrics: /healthz, /readyz, /metrics."""

from __future__ import annotations

import logging

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from bot.handlers.http import json_response, runtime_of
from core.store import migrate

log = logging.getLogger("ackbot.health")


async def healthz(request: web.Request) -> web.Response:
    """The process is up and serving."""
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready when the database answers and its schema is at the revision this code needs."""
    runtime = runtime_of(request)
    try:
        await runtime.db.ping()
        revision = await migrate.current_revision(runtime.db)
    except Exception as exc:
        log.warning("readiness: database unreachable: %s", type(exc).__name__)
        return json_response({"status": "unavailable", "database": "unreachable"}, status=503)
    head = migrate.head_revision()
    if revision != head:
        return json_response(
            {"status": "unavailable", "database": "reachable", "migrations": {"current": revision, "head": head}},
            status=503,
        )
    return json_response({"status": "ready", "database": "reachable", "migrations": {"current": revision}})


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition."""
    body = runtime_of(request).metrics.render()
    response = web.Response(body=body)
    response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return response


def routes() -> list[web.RouteDef]:
    """The probe routes."""
    return [web.get("/healthz", healthz), web.get("/readyz", readyz), web.get("/metrics", metrics)]

"""Probes and metrics: /healthz, /readyz, /metrics."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel

from bot.handlers import db_outage
from bot.handlers.db_outage import DB_OUTAGE
from bot.handlers.http import json_response, runtime_of
from bot.handlers.openapi import documented
from core.store import migrate

log = logging.getLogger("ackbot.health")

# Seconds /readyz waits for the database before it answers 503 (orchestrators' probes time out at 1-10 s).
READY_TIMEOUT = 2.0


class Health(BaseModel):
    status: str


class Migrations(BaseModel):
    current: str | None
    head: str | None = None


class Readiness(BaseModel):
    status: str
    database: str
    migrations: Migrations | None = None
    reason: str | None = None


@documented(summary="The process is up", scope=None, responses={200: Health}, tags=("probes",))
async def healthz(request: web.Request) -> web.Response:
    """The process is up and serving."""
    return json_response(Health(status="ok"))


@documented(
    summary="Database reachable and migrated",
    scope=None,
    responses={200: Readiness, 503: Readiness},
    tags=("probes",),
)
async def readyz(request: web.Request) -> web.Response:
    """Ready when the database answers and its schema is at the revision this code needs."""
    runtime = runtime_of(request)
    outage = request.app[DB_OUTAGE]
    try:
        # At once: a database that does not answer within the probe's time is as unready as one that refuses.
        await asyncio.wait_for(runtime.db.ping(), READY_TIMEOUT)
        revision = await asyncio.wait_for(migrate.current_revision(runtime.db), READY_TIMEOUT)
    except Exception as exc:
        # Whatever the failure, the process is not ready; only a connection failure is an outage to report.
        if db_outage.is_unavailable(exc):
            outage.failed(exc, runtime.db.ping)
        else:
            log.warning("readiness: the database check failed: %s", db_outage.describe(exc))
        unready = Readiness(status="unavailable", database="unreachable", reason=db_outage.describe(exc))
        return json_response(unready, status=503)
    outage.recovered()
    head = migrate.head_revision()
    if revision != head:
        migrations = Migrations(current=revision, head=head)
        return json_response(Readiness(status="unavailable", database="reachable", migrations=migrations), 503)
    return json_response(Readiness(status="ready", database="reachable", migrations=Migrations(current=revision)))


@documented(
    summary="Prometheus metrics (text exposition format)", scope=None, responses={200: "metrics"}, tags=("probes",)
)
async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition."""
    body = runtime_of(request).metrics.render()
    response = web.Response(body=body)
    response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return response


def routes() -> list[web.RouteDef]:
    """The probe routes."""
    return [web.get("/healthz", healthz), web.get("/readyz", readyz), web.get("/metrics", metrics)]

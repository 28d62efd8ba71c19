"""Builds the one aiohttp Application that serves the API, the probes and (later) the chat surfaces."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from bot import slack as slack_app
from bot import teams as teams_app
from bot.cards import slack as slack_cards
from bot.cards import teams as teams_cards
from bot.handlers import ack_page as ack_page_routes
from bot.handlers import ack_tokens as ack_tokens_api
from bot.handlers import alerts, channels, deliveries, events, health, openapi, rules
from bot.handlers import approvals as approvals_api
from bot.handlers import audit as audit_api
from bot.handlers import reports as reports_api
from bot.handlers import silences as silences_api
from bot.handlers.db_outage import DB_OUTAGE, DatabaseOutage
from bot.handlers.http import RUNTIME, error_middleware
from core.channels.registry import ChannelRegistry, default_registry
from core.clock import Clock, SystemClock
from core.config import AckbotConfig
from core.runtime import Runtime

log = logging.getLogger("ackbot")


def build_registry(config: AckbotConfig | None = None) -> ChannelRegistry:
    """Every channel type this build knows: core's, and the chat platforms' from bot/."""
    registry = default_registry()
    # The Slack channel borrows the Slack app's token and API URL and people's Slack ids: bound to the config here.
    registry.register(slack_app.SlackChannel.for_config(config) if config is not None else slack_app.SlackChannel)
    # The Teams channel needs the process's bot (adapter, database): build_runtime binds it (teams_app.bind).
    registry.register(teams_app.TeamsChannel)
    return registry


def build_runtime(config: AckbotConfig, *, clock: Clock | None = None, run_dispatcher: bool = True) -> Runtime:
    """The process's core parts, with the renderers the webhook channels borrow from bot/cards."""
    runtime = Runtime(
        config=config,
        registry=build_registry(config),
        clock=clock or SystemClock(),
        run_dispatcher=run_dispatcher,
        renderers={
            "slack": slack_cards.render,
            "teams": teams_cards.render,
            "teams_workflows": teams_cards.render_for_workflows,
        },
    )
    teams_app.bind(runtime)
    return runtime


def freeze_after_startup(app: web.Application) -> None:
    """Once the app has started, take what lives as long as the process out of the garbage collector's view.

    Config, routes, SQLAlchemy's and pydantic's models: a large heap that a full collection would walk again and
    again under load, a pause that every request waits behind (docs/performance-history.md has the figures).
    Frozen, a full collection walks only what requests made since.
    """

    async def freeze(_app: web.Application) -> None:
        gc.collect()  # nothing that is garbage already goes into the frozen generation
        gc.freeze()

    app.on_startup.append(freeze)


def create_app(runtime: Runtime, *, migrate_db: bool = True) -> web.Application:
    """The aiohttp application; the runtime starts and stops with it."""
    app = web.Application(middlewares=[error_middleware], client_max_size=runtime.config.server.max_body_bytes + 1)
    app[RUNTIME] = runtime
    app[DB_OUTAGE] = outage = DatabaseOutage()
    app[openapi.OPENAPI] = {}
    for module in (health, events, alerts, rules, deliveries, channels, openapi):
        app.add_routes(module.routes())
    # Approvals, ack tokens, the audit log and the web ack page.
    for module in (approvals_api, ack_tokens_api, audit_api, ack_page_routes):
        app.add_routes(module.routes())

    # Noise control: silences, the report and digest windows.
    for module in (silences_api, reports_api):
        app.add_routes(module.routes())

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await runtime.start(migrate_db=migrate_db)
        yield
        await outage.close()
        await runtime.stop()

    app.cleanup_ctx.append(lifecycle)

    async def release_long_polls(_app: web.Application) -> None:
        # Shutdown waits for running handlers before the cleanup above: answer the long polls first.
        runtime.approvals.release_waiters()

    app.on_shutdown.append(release_long_polls)
    # After the runtime's hooks: Slack starts once the runtime has its HTTP session, and stops before it closes.
    slack_app.mount(app, runtime)
    # POST /api/messages: the Teams bot (authentication off, loopback only, when no teams.app_id is set).
    teams_app.mount(app, runtime)
    return app

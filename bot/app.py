"""Builds the one aiohttp Application that serves the API, the probes and (later) the chat surfaces."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from bot.cards import slack as slack_cards
from bot.cards import teams as teams_cards
from bot.handlers import alerts, channels, deliveries, events, health, rules
from bot.handlers.http import RUNTIME, error_middleware
from core.channels.registry import ChannelRegistry, default_registry
from core.clock import Clock, SystemClock
from core.config import AckbotConfig
from core.runtime import Runtime

log = logging.getLogger("ackbot")


def build_registry() -> ChannelRegistry:
    """Every channel type this build knows: core's, and the chat platforms' from bot/."""
    return default_registry()


def build_runtime(config: AckbotConfig, *, clock: Clock | None = None, run_dispatcher: bool = True) -> Runtime:
    """The process's core parts, with the renderers the webhook channels borrow from bot/cards."""
    return Runtime(
        config=config,
        registry=build_registry(),
        clock=clock or SystemClock(),
        run_dispatcher=run_dispatcher,
        renderers={
            "slack": slack_cards.render,
            "teams": teams_cards.render,
            "teams_workflows": teams_cards.render_for_workflows,
        },
    )


def create_app(runtime: Runtime, *, migrate_db: bool = True) -> web.Application:
    """The aiohttp application; the runtime starts and stops with it."""
    app = web.Application(middlewares=[error_middleware], client_max_size=runtime.config.server.max_body_bytes + 1)
    app[RUNTIME] = runtime
    for module in (health, events, alerts, rules, deliveries, channels):
        app.add_routes(module.routes())

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await runtime.start(migrate_db=migrate_db)
        yield
        await runtime.stop()

    app.cleanup_ctx.append(lifecycle)
    return app

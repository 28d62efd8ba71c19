"""POST /api/messages: where the Bot Framework delivers Teams activities to the bot (bot/teams)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from bot.teams.bot import TeamsBot

MESSAGES_PATH = "/api/messages"

TEAMS_BOT: web.AppKey[TeamsBot] = web.AppKey("teams_bot")


async def messages(request: web.Request) -> web.StreamResponse:
    """One activity: authenticated and run by the Teams bot; invokes are answered in the response body."""
    return await request.app[TEAMS_BOT].process(request)


def routes() -> list[web.RouteDef]:
    return [web.post(MESSAGES_PATH, messages)]

"""Microsoft Teams: the Bot Framework bot (CloudAdapter at POST /api/messages) and the "teams" channel.

bot.py       the adapter, inbound authentication, proactive post / update / 1:1 chats
handler.py   the TeamsActivityHandler: installs, card actions, text commands
activity.py  what bot.py and handler.py both read or build of an activity
channel.py   the "teams" channel type the dispatcher sends through
package.py   the Teams app package (manifest.json and icons) admins upload
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from bot.handlers import teams_messages
from bot.handlers.teams_messages import TEAMS_BOT
from bot.teams.bot import TeamsBot
from bot.teams.channel import TeamsChannel
from core.runtime import Runtime

__all__ = ["TEAMS_BOT", "TeamsBot", "TeamsChannel", "bind", "bot_of", "mount"]


def bind(runtime: Runtime) -> TeamsBot:
    """Create the process's Teams bot and bind the runtime's "teams" channel type to it."""
    bot = TeamsBot(runtime)
    runtime.registry.register(TeamsChannel.bound_to(bot), replace=True)
    return bot


def bot_of(runtime: Runtime) -> TeamsBot | None:
    """The Teams bot the runtime's "teams" channel type is bound to, if any."""
    if TeamsChannel.type not in runtime.registry:
        return None
    bot: Any = getattr(runtime.registry.get(TeamsChannel.type), "bot", None)
    return bot if isinstance(bot, TeamsBot) else None


def mount(app: web.Application, runtime: Runtime) -> TeamsBot:
    """Serve POST /api/messages with the runtime's Teams bot (bound now if build_runtime did not)."""
    bot = bot_of(runtime) or bind(runtime)
    app[TEAMS_BOT] = bot
    app.add_routes(teams_messages.routes())

    async def announce(_app: web.Application) -> None:
        bot.log_startup()

    app.on_startup.append(announce)
    return bot

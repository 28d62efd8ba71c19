"""Slack: the Bolt AsyncApp (HTTP at POST /slack/events, or Socket Mode) and the "slack" channel (post / update).

The Bolt app only translates: its listeners live in bot/handlers/slack_actions.py (button clicks) and
bot/handlers/slack_commands.py (the slash command), and call the same core functions every surface calls.

The channel posts with ``chat.postMessage`` (to its configured channel, or to a person's DM opened with
``conversations.open``), remembers ``{"channel": id, "ts": ts}``, and edits with ``chat.update``. Slack's error
codes become typed channel errors through one table, SLACK_ERRORS; the dispatcher does the retrying.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import itertools
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Mapping
from datetime import timedelta
from typing import Any, ClassVar

import aiohttp
from aiohttp import web
from pydantic import Field
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.middleware import RequestVerification
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from bot import slack_ingress
from bot.cards import slack as slack_cards
from bot.handlers import slack_actions, slack_commands
from bot.handlers.http import ApiError
from bot.logs import RateLimitedLog
from core.channels.base import BaseChannel, ChannelContext, ChannelSettings, Notification, SendResult, parse_retry_after
from core.channels.errors import ChannelError, PermanentChannelError, TransientChannelError
from core.config import AckbotConfig, SlackConfig
from core.runtime import Runtime
from core.secrets import SecretRef, resolve_secret

log = logging.getLogger("ackbot.slack")

EVENTS_PATH = "/slack/events"

# ---------------------------------------------------------------- Slack's error codes, in one table

_P = PermanentChannelError
_T = TransientChannelError

# Every Slack Web API error code we know the meaning of: the exception it becomes, and what it tells an operator
# reading a dead delivery. A code not listed here is decided by the HTTP status (see slack_error).
SLACK_ERRORS: dict[str, tuple[type[ChannelError], str]] = {
    # The destination: fix the config or the workspace.
    "channel_not_found": (_P, "the channel does not exist, or is private and the bot was not invited"),
    "not_in_channel": (_P, "the bot is not a member of the channel: /invite it there"),
    "is_archived": (_P, "the channel is archived"),
    "channel_is_archived": (_P, "the channel is archived"),
    "user_not_found": (_P, "no such Slack user"),
    "users_not_found": (_P, "no such Slack user"),
    "user_disabled": (_P, "the Slack user is deactivated"),
    "cannot_dm_bot": (_P, "the person is a bot and cannot be sent a direct message"),
    "user_is_bot": (_P, "the person is a bot and cannot be sent a direct message"),
    "message_not_found": (_P, "the message to update was deleted"),
    "cant_update_message": (_P, "only messages the bot posted can be updated"),
    "edit_window_closed": (_P, "the message is too old to be edited"),
    "restricted_action": (_P, "the workspace does not let the bot post here"),
    "restricted_action_read_only_channel": (_P, "the channel is read-only"),
    "restricted_action_thread_only_channel": (_P, "the channel accepts thread replies only"),
    "restricted_action_non_threadable_channel": (_P, "the channel does not allow threads"),
    "posting_to_general_channel_denied": (_P, "only admins may post to this channel"),
    "team_access_not_granted": (_P, "the token has no access to this workspace"),
    # The credentials: fix the token or the app's scopes.
    "invalid_auth": (_P, "the bot token is not valid"),
    "not_authed": (_P, "no bot token was sent"),
    "account_inactive": (_P, "the bot token belongs to a deleted user or app"),
    "token_revoked": (_P, "the bot token was revoked"),
    "token_expired": (_P, "the bot token expired"),
    "no_permission": (_P, "the bot token lacks a permission"),
    "missing_scope": (_P, "the app lacks an OAuth scope (see manifest.yml) and must be reinstalled"),
    "not_allowed_token_type": (_P, "this method needs a bot token (xoxb-)"),
    "ekm_access_denied": (_P, "the workspace's encryption keys deny access"),
    "org_login_required": (_P, "the workspace is migrating to an Enterprise Grid org"),
    # The message: a bug in what we sent.
    "msg_too_long": (_P, "the message text is too long"),
    "no_text": (_P, "the message has no text"),
    "invalid_blocks": (_P, "a block is invalid"),
    "invalid_blocks_format": (_P, "the blocks are not a list of block objects"),
    "invalid_attachments": (_P, "an attachment is invalid"),
    "too_many_attachments": (_P, "too many attachments"),
    "invalid_arguments": (_P, "the request's arguments are invalid"),
    "invalid_arg_name": (_P, "an argument name is invalid"),
    "invalid_charset": (_P, "the request's character set is invalid"),
    "invalid_form_data": (_P, "the request's form data is invalid"),
    "invalid_post_type": (_P, "the request's content type is not accepted"),
    "missing_post_type": (_P, "the request has no content type"),
    "invalid_json": (_P, "the request's JSON is invalid"),
    "json_not_object": (_P, "the request's JSON is not an object"),
    "method_deprecated": (_P, "the Web API method is deprecated"),
    "deprecated_endpoint": (_P, "the Web API endpoint is deprecated"),
    "unknown_method": (_P, "Slack does not know the Web API method"),
    # Slack's own momentary state: try again later.
    "ratelimited": (_T, "posting too fast; Slack said when to try again"),
    "rate_limited": (_T, "posting too fast; Slack said when to try again"),
    "message_limit_exceeded": (_T, "the workspace is sending too many messages"),
    "internal_error": (_T, "a Slack-side error"),
    "fatal_error": (_T, "a Slack-side error"),
    "service_unavailable": (_T, "Slack is unavailable"),
    "request_timeout": (_T, "Slack timed out reading the request"),
    "team_added_to_org": (_T, "the workspace is migrating to an Enterprise Grid org"),
}


def slack_error(exc: SlackApiError, *, method: str, label: str) -> ChannelError:
    """The typed channel error for a Slack Web API failure, from SLACK_ERRORS or, failing that, the status."""
    response = exc.response
    status = int(response.status_code)
    data = response.data if isinstance(response.data, dict) else {}
    code = str(data.get("error") or ("ratelimited" if status == 429 else f"HTTP {status}"))
    kind, meaning = SLACK_ERRORS.get(code, (None, ""))
    if kind is None:
        # A 200 with ok:false is Slack refusing this request; 429 and 5xx are Slack's state of the moment.
        kind = _T if status == 429 or status >= 500 else _P
    detail = f"{code} ({meaning})" if meaning else code
    if code == "missing_scope" and data.get("needed"):
        detail += f"; needs {data['needed']}"
    message = f"{label}: {method} failed: {detail}"
    if kind is _T:
        retry_after = parse_retry_after(_header(response, "Retry-After"))
        return TransientChannelError(message, status_code=status, retry_after=retry_after)
    return PermanentChannelError(message, status_code=status)


def _header(response: AsyncSlackResponse, name: str) -> str | None:
    headers: Mapping[str, Any] = response.headers or {}
    value = next((v for k, v in headers.items() if k.lower() == name.lower()), None)
    if isinstance(value, list):  # some slack_sdk versions keep every value of a header
        value = value[0] if value else None
    return None if value is None else str(value)


def web_client(
    config: SlackConfig, token: str, *, session: aiohttp.ClientSession | None, timeout: float
) -> AsyncWebClient:
    """A Slack Web API client at the configured base URL; it never retries by itself (the dispatcher does)."""
    return AsyncWebClient(
        token=token,
        base_url=config.api_base_url,
        session=session if session is not None and not session.closed else None,
        timeout=max(1, round(timeout)),
        retry_handlers=[],
        logger=log,
    )


# ---------------------------------------------------------------- the channel

# A Slack user id (U…, or W… on Enterprise Grid): a delivery aimed at one goes to that person's DM.
USER_ID_RE = re.compile(r"^[UW][A-Z0-9]{2,}$")
PERSON_PREFIX = "person:"


class SlackChannelSettings(ChannelSettings):
    """Where messages go, and (optionally) a bot token other than the Slack app's."""

    channel: str = Field(
        default="",
        max_length=200,
        description="channel name (#ops) or id (C0123ABC) for deliveries that name no person",
    )
    token: SecretRef | None = Field(default=None, description="bot token reference; default: slack.bot_token")
    timeout: float = Field(default=10.0, gt=0, le=120, description="seconds for each Web API call")


class SlackChannel(BaseChannel):
    """Posts Block Kit with the bot token and edits it when the approval or alert changes."""

    type: ClassVar[str] = "slack"
    Settings = SlackChannelSettings
    settings: SlackChannelSettings
    supports_update: ClassVar[bool] = True
    # chat.postMessage allows about one message a second per channel (short bursts pass): pace by Slack channel.
    RATE_PER_SECOND: ClassVar[float] = 1.0
    # A click waits on these messages: three attempts, 1s / 2s / 4s apart, then the delivery is dead and the channel's
    # health says why while someone can still act. Slack's 429s (ratelimited, with Retry-After) are not counted, and
    # are waited out for at most ten minutes: a card later than that is about a state that has likely changed.
    RETRY_FOR: ClassVar[timedelta] = timedelta(minutes=10)
    MAX_ATTEMPTS: ClassVar[int | None] = 3
    BACKOFF_BASE: ClassVar[float] = 1.0
    BACKOFF_MAX: ClassVar[float] = 4.0
    # Direct-message channel ids (each person costs one conversations.open per process) and channel ids by name.
    DM_CACHE_SIZE: ClassVar[int] = 1000
    # The app's settings and people's Slack ids, bound by for_config() when the process is assembled.
    app_config: ClassVar[SlackConfig] = SlackConfig()
    people: ClassVar[Mapping[str, str]] = {}

    def __init__(self, name: str, settings: ChannelSettings, context: ChannelContext) -> None:
        if not isinstance(settings, SlackChannelSettings):
            raise TypeError(f"SlackChannel needs SlackChannelSettings, not {type(settings).__name__}")
        super().__init__(name, settings, context)
        # Slack's ids for the names and people this channel posted to, so that pacing keys on one id per
        # conversation: "#ops" and "C0OPS" (the posts and the edits of the same channel) share one bucket.
        self._dm: dict[str, str] = {}
        self._ids: dict[str, str] = {}
        self._web_client: AsyncWebClient | None = None

    @classmethod
    def for_config(cls, config: AckbotConfig) -> builtins.type[SlackChannel]:
        """This class bound to a config: its Slack app (token, API URL) and its people's Slack user ids."""
        people = {p.name: p.identities.slack for p in config.people if p.identities.slack}
        return type(cls.__name__, (cls,), {"app_config": config.slack, "people": people, "__doc__": cls.__doc__})

    @property
    def label(self) -> str:
        return f"slack channel {self.name!r}"

    def _client(self) -> AsyncWebClient:
        reference = self.settings.token or self.app_config.bot_token
        if reference is None:
            raise PermanentChannelError(f"{self.label}: no bot token (set slack.bot_token or the channel's token)")
        # Resolved at every send (a rotated token takes effect at once); the client is kept while it stays the same,
        # as building one reads the proxy settings from the environment and sets up its handlers every time.
        token = self.resolve_secret(reference)
        cached = self._web_client
        if cached is None or cached.token != token or (cached.session is not None and cached.session.closed):
            cached = self._web_client = web_client(
                self.app_config, token, session=self.context.http, timeout=self.settings.timeout
            )
        return cached

    async def _call(self, method: str, call: Awaitable[AsyncSlackResponse]) -> dict[str, Any]:
        """Await one Web API call; every failure comes out as a PermanentChannelError or a TransientChannelError."""
        try:
            response = await call
        except SlackApiError as exc:
            raise slack_error(exc, method=method, label=self.label) from None
        except TimeoutError:
            raise TransientChannelError(f"{self.label}: {method} timed out after {self.settings.timeout:g}s") from None
        except (aiohttp.ClientError, OSError) as exc:
            # Refused or reset connections, DNS and TLS failures: the network, not the request.
            detail = self.redact(str(exc))[:300]
            raise TransientChannelError(f"{self.label}: {method} failed: {type(exc).__name__}: {detail}") from None
        except SlackClientError as exc:
            raise PermanentChannelError(f"{self.label}: {method} failed: {self.redact(str(exc))[:300]}") from None
        data = response.data
        return data if isinstance(data, dict) else {}

    def _conversation_of(self, note: Notification) -> str:
        """The channel name or id, or the Slack user id, a delivery goes to."""
        target = (note.target or "").strip()
        if target.startswith(PERSON_PREFIX):
            person = target.removeprefix(PERSON_PREFIX)
            user = self.people.get(person)
            if user is None:
                raise PermanentChannelError(f"{self.label}: person {person!r} has no Slack user id (identities.slack)")
            return user
        if target:
            return target
        if not self.settings.channel:
            raise PermanentChannelError(f"{self.label}: no channel configured and the delivery names nobody")
        return self.settings.channel

    def destination(self, note: Notification) -> str:
        """Pace by Slack conversation: two ackbot channels posting into #ops share #ops' one message a second."""
        ref = note.extra.get("message_ref")
        if isinstance(ref, Mapping) and ref.get("channel"):
            return f"slack:{ref['channel']}"
        try:
            conversation = self._conversation_of(note)
        except PermanentChannelError:
            return f"slack:{self.name}"
        return f"slack:{self._dm.get(conversation) or self._ids.get(conversation) or conversation}"

    async def _open_dm(self, client: AsyncWebClient, user: str) -> str:
        cached = self._dm.get(user)
        if cached is not None:
            return cached
        data = await self._call("conversations.open", client.conversations_open(users=user))
        channel = data.get("channel")
        channel_id = channel.get("id") if isinstance(channel, dict) else None
        if not isinstance(channel_id, str) or not channel_id:
            raise TransientChannelError(f"{self.label}: conversations.open returned no channel id")
        if len(self._dm) >= self.DM_CACHE_SIZE:
            self._dm.pop(next(iter(self._dm)))
        self._dm[user] = channel_id
        return channel_id

    @staticmethod
    def build_message(note: Notification) -> dict[str, Any]:
        """The Block Kit message for a notification: the cards' view for its purpose and state."""
        return slack_cards.render(note)

    async def send(self, note: Notification) -> SendResult:
        """Post the message to the channel, or to the person's DM; remember where it went."""
        message = self.build_message(note)
        client = self._client()
        conversation = self._conversation_of(note)
        if USER_ID_RE.match(conversation):
            conversation = await self._open_dm(client, conversation)
        data = await self._call(
            "chat.postMessage",
            client.chat_postMessage(channel=conversation, unfurl_links=False, unfurl_media=False, **message),
        )
        channel, ts = data.get("channel"), data.get("ts")
        if isinstance(channel, str) and channel != conversation and len(self._ids) < self.DM_CACHE_SIZE:
            self._ids[conversation] = channel
        if not isinstance(channel, str) or not isinstance(ts, str):
            # Posted, but not addressable: later updates will post anew instead of editing.
            log.warning("%s: chat.postMessage returned no channel/ts; updates will post a new message", self.label)
            return SendResult(message_ref=None, status_code=200)
        return SendResult(message_ref={"channel": channel, "ts": ts}, status_code=200)

    async def update(self, message_ref: Mapping[str, Any], note: Notification) -> SendResult:
        """Edit a message this channel posted, in place."""
        channel, ts = message_ref.get("channel"), message_ref.get("ts")
        if not isinstance(channel, str) or not isinstance(ts, str):
            raise PermanentChannelError(f"{self.label}: the message reference {dict(message_ref)!r} has no channel/ts")
        message = self.build_message(note)
        # An edit replaces only what it names: an empty list removes the old colour bar when the new view has none.
        message.setdefault("attachments", [])
        await self._call("chat.update", self._client().chat_update(channel=channel, ts=ts, **message))
        return SendResult(message_ref={"channel": channel, "ts": ts}, status_code=200)


# ---------------------------------------------------------------- the Bolt app


def build_bolt_app(
    runtime: Runtime, config: SlackConfig, *, client: AsyncWebClient, signing_secret: str | None
) -> AsyncApp:
    """Bolt's AsyncApp with our listeners; request verification is on unless the app runs over Socket Mode."""
    bolt = AsyncApp(
        name="ackbot",
        logger=log,
        client=client,
        signing_secret=signing_secret,
        # Socket Mode requests arrive over our own authenticated WebSocket and carry no signature.
        request_verification_enabled=not config.socket_mode,
        # Listeners ack() first; their slow work runs after Slack has its answer (it allows 3 seconds).
        process_before_response=False,
    )
    slack_actions.register(bolt, runtime)
    slack_commands.register(bolt, runtime, command=config.command)
    return bolt


class SlackSurface:
    """The Slack app of this process: built when the app starts (secrets are resolved then), stopped with it."""

    # Seconds between Socket Mode connection attempts while Slack cannot be reached at start-up.
    SOCKET_RETRY: ClassVar[tuple[float, ...]] = (1.0, 2.0, 5.0, 10.0, 30.0)

    def __init__(self, runtime: Runtime, config: SlackConfig) -> None:
        self.runtime = runtime
        self.config = config
        self.bolt: AsyncApp | None = None
        self.socket: AsyncSocketModeHandler | None = None
        # Requests refused for their signature: one log line per interval however many arrive.
        self.refused = RateLimitedLog(log)
        # Checked on the raw body before Bolt parses anything (bot/slack_ingress.py); None over Socket Mode.
        self.signing_secret: str | None = None
        self._connecting: asyncio.Task[None] | None = None

    async def start(self) -> None:
        config = self.config
        if config.bot_token is None:
            return
        token = resolve_secret(config.bot_token)
        secret = resolve_secret(config.signing_secret) if config.signing_secret and not config.socket_mode else None
        client = web_client(config, token, session=self.runtime.http, timeout=10)
        self.bolt = build_bolt_app(self.runtime, config, client=client, signing_secret=secret)
        self.signing_secret = secret
        if config.socket_mode and config.app_token is not None:
            # The handler's own client opens the WebSocket URL (apps.connections.open) with the app-level token.
            socket_client = AsyncWebClient(base_url=config.api_base_url, logger=log)
            self.socket = AsyncSocketModeHandler(self.bolt, resolve_secret(config.app_token), web_client=socket_client)
            # Alerts keep flowing while Slack is unreachable: connect in the background, retrying.
            self._connecting = asyncio.create_task(self._connect(self.socket), name="ackbot-slack-socket")
        log.info("Slack app ready (%s, command %s)", "Socket Mode" if self.socket else EVENTS_PATH, config.command)

    async def _connect(self, socket: AsyncSocketModeHandler) -> None:
        for attempt in itertools.count():
            try:
                await socket.connect_async()  # type: ignore[no-untyped-call]
                log.info("Slack Socket Mode connected")
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                delay = self.SOCKET_RETRY[min(attempt, len(self.SOCKET_RETRY) - 1)]
                log.warning("Slack Socket Mode connection failed (%s); retrying in %gs", type(exc).__name__, delay)
                await asyncio.sleep(delay)

    async def stop(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connecting
            self._connecting = None
        if self.socket is not None:
            with contextlib.suppress(Exception):
                await self.socket.close_async()  # type: ignore[no-untyped-call]
            self.socket = None
        self.bolt = None


SLACK: web.AppKey[SlackSurface] = web.AppKey("slack", SlackSurface)


# Bolt logs every request whose signature it refuses, body and all, at INFO: anyone can fill the log (and a
# click's body holds its ack token). Its lines are dropped; slack_events logs one short line instead, rate-limited.
_BOLT_VERIFICATION_LOG = logging.getLogger(f"slack_bolt.{RequestVerification.__name__}")


def _warnings_only(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING


_BOLT_VERIFICATION_LOG.addFilter(_warnings_only)


async def slack_events(request: web.Request) -> web.StreamResponse:
    """Commands, interactivity and events on one URL: Bolt checks the signature, then runs the listeners."""
    surface = request.app[SLACK]
    bolt = surface.bolt
    if bolt is None:
        raise web.HTTPServiceUnavailable(reason="the Slack app is not running")
    limit = surface.runtime.config.server.max_body_bytes
    try:
        body = await slack_ingress.checked_body(request, secret=surface.signing_secret, limit=limit)
    except ApiError as exc:
        if exc.status == 401:
            size = request.content_length or 0
            surface.refused.warning(
                "Slack request refused: no valid signature (%d bytes from %s)", size, request.remote
            )
        raise
    bolt_request = AsyncBoltRequest(body=body, query=request.query_string, headers=dict(request.headers))
    return await to_aiohttp_response(await bolt.async_dispatch(bolt_request))


def mount(app: web.Application, runtime: Runtime) -> SlackSurface | None:
    """Add Slack to the web app when a bot token is configured: the route (HTTP mode) and the start/stop hooks."""
    config = runtime.config.slack
    if not config.enabled:
        return None
    surface = SlackSurface(runtime, config)
    app[SLACK] = surface
    if not config.socket_mode:
        app.router.add_post(EVENTS_PATH, slack_events)

    async def lifecycle(_app: web.Application) -> AsyncIterator[None]:
        await surface.start()
        yield
        await surface.stop()

    app.cleanup_ctx.append(lifecycle)
    return surface


# ---------------------------------------------------------------- the app manifest

MANIFEST_PLACEHOLDER_URL = "https://ackbot.example.com"
BOT_SCOPES = ("chat:write", "chat:write.public", "commands", "im:write", "users:read")


def manifest(
    *, url: str = MANIFEST_PLACEHOLDER_URL, command: str = "/ackbot", socket_mode: bool = False
) -> dict[str, Any]:
    """The Slack app manifest (manifest.yml is this, for the placeholder URL): commands, interactivity, scopes."""
    endpoint = url.rstrip("/") + EVENTS_PATH
    slash: dict[str, Any] = {
        "command": command,
        "description": "Alerts and approvals: list, pending, ack, silence, test, status, help",
        "usage_hint": slack_commands.USAGE_HINT,
        "should_escape": False,
    }
    interactivity: dict[str, Any] = {"is_enabled": True}
    if not socket_mode:
        # Over Socket Mode, Slack sends commands and clicks down the WebSocket: no request URLs.
        slash["url"] = endpoint
        interactivity["request_url"] = endpoint
    return {
        "_metadata": {"major_version": 1, "minor_version": 1},
        "display_information": {
            "name": "ackbot",
            "description": "Alerts and approvals with Acknowledge / Deny / Escalate buttons.",
            "background_color": "#1f2a44",
        },
        "features": {
            "app_home": {
                "home_tab_enabled": False,
                "messages_tab_enabled": True,
                "messages_tab_read_only_enabled": True,
            },
            "bot_user": {"display_name": "ackbot", "always_online": True},
            "slash_commands": [slash],
        },
        "oauth_config": {"scopes": {"bot": list(BOT_SCOPES)}},
        "settings": {
            "interactivity": interactivity,
            "org_deploy_enabled": False,
            "socket_mode_enabled": socket_mode,
            "token_rotation_enabled": False,
        },
    }

"""A fake Slack on loopback: the Web API (/api/<method>) and response_urls (/response/<id>), recording every call.

    async with FakeSlack(token="xoxb-test") as slack:
        config = {"api_base_url": slack.api_url, ...}
        slack.fail("chat.postMessage", "channel_not_found")              # the next call answers ok:false
        slack.fail("chat.postMessage", "ratelimited", status=429, retry_after=7)
        ... run ackbot ...
        [post] = slack.calls_to("chat.postMessage")                      # method, arguments, headers
        await slack.wait_for("chat.update")                               # calls made after an ack() come later

Socket Mode too: apps.connections.open (with the app-level token) hands out a ws:// URL on this server, which
says hello; `await slack.send_envelope("slash_commands", payload)` pushes a request down the socket and the
client's acknowledgement is recorded as a "socket_ack" call.

It answers like Slack: ok:true documents with the fields ackbot reads (channel ids, message ts), ok:false with an
error code otherwise, and HTTP 429 with Retry-After when told. Messages are kept by (channel, ts), so a test can
read what a channel shows after chat.update. Requests without the expected bot token get invalid_auth.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import WSMsgType, web
from multidict import CIMultiDictProxy
from slack_sdk.errors import SlackObjectFormationError
from slack_sdk.models.blocks import Block


@dataclass(frozen=True)
class Call:
    """One request as it arrived: the Web API method (or "response_url"), its arguments and headers."""

    method: str
    args: dict[str, Any]
    headers: CIMultiDictProxy[str]
    path: str


@dataclass
class _Failure:
    error: str
    status: int
    headers: dict[str, str]
    times: int


@dataclass
class FakeSlack:
    """The Web API methods ackbot calls, plus any response_url; unknown methods answer unknown_method."""

    token: str = "xoxb-test-token"
    app_token: str = "xapp-test-token"
    team_id: str = "T0ACME"
    bot_user_id: str = "U0ACKBOT"
    calls: list[Call] = field(default_factory=list)
    # Messages as Slack would show them now, by (channel id, ts).
    messages: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    # Channel names and the ids Slack knows them by; posting to an unknown name is channel_not_found.
    channels: dict[str, str] = field(default_factory=lambda: {"ops": "C0OPS", "alerts": "C0ALERTS"})

    def __post_init__(self) -> None:
        # Every message that would not pass Slack's Block Kit checks, with the reason; tests expect it empty.
        self.block_errors: list[str] = []
        self._failures: dict[str, list[_Failure]] = {}
        self._response_messages: dict[str, tuple[str, str]] = {}
        self._ts = 0
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.sockets: list[web.WebSocketResponse] = []
        self._envelopes = 0
        self.port = 0

    # ---------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> FakeSlack:
        app = web.Application()
        app.router.add_post("/api/{method}", self._api)
        app.router.add_post("/response/{id}", self._response_url)
        app.router.add_get("/socket", self._socket)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None and server.sockets
        self.port = server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_exc: object) -> None:
        for socket in self.sockets:
            await socket.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        """What slack.api_base_url is set to."""
        return f"{self.base_url}/api/"

    def response_url(self, name: str = "r1", *, message: tuple[str, str] | None = None) -> str:
        """A response_url to put into a signed payload: what ackbot posts there is recorded as "response_url".

        With `message` (channel id, ts), the url belongs to that message, as a click's does: a post with
        replace_original replaces it, as Slack would.
        """
        if message is not None:
            self._response_messages[name] = message
        return f"{self.base_url}/response/{name}"

    # ---------------------------------------------------------------- scripting

    def fail(
        self,
        method: str,
        error: str,
        *,
        status: int = 200,
        retry_after: float | None = None,
        headers: Mapping[str, str] | None = None,
        times: int = 1,
    ) -> None:
        """The next `times` calls of a method answer ok:false with this error (and this HTTP status)."""
        sent = dict(headers or {})
        if retry_after is not None:
            sent["Retry-After"] = f"{retry_after:g}"
        self._failures.setdefault(method, []).append(_Failure(error, status, sent, times))

    def calls_to(self, method: str) -> list[Call]:
        """The calls of one method so far, in order."""
        return [call for call in self.calls if call.method == method]

    async def wait_for(self, method: str, count: int = 1, within: float = 5.0) -> list[Call]:
        """Wait until `count` calls of a method have arrived (work after ack() reaches Slack a moment later)."""
        try:
            async with asyncio.timeout(within), self._changed:
                await self._changed.wait_for(lambda: len(self.calls_to(method)) >= count)
        except TimeoutError:
            seen = [call.method for call in self.calls]
            raise AssertionError(f"expected {count} call(s) of {method} within {within}s; saw {seen}") from None
        return self.calls_to(method)

    # ---------------------------------------------------------------- the server side

    async def _record(self, call: Call) -> None:
        async with self._changed:
            self.calls.append(call)
            self._changed.notify_all()

    @staticmethod
    async def _arguments(request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        if request.content_type == "application/json":
            document = json.loads(raw or b"{}")
            args = dict(document) if isinstance(document, dict) else {}
        else:
            args = dict(parse_qsl(raw.decode("utf-8")))
            # Form posts carry structures as JSON strings (blocks=[...]); decode them as Slack does.
            for key in ("blocks", "attachments"):
                if isinstance(args.get(key), str):
                    args[key] = json.loads(args[key])
        args.update({k: v for k, v in request.query.items() if k not in args})
        return args

    def _next_ts(self) -> str:
        self._ts += 1
        return f"1700000000.{self._ts:06d}"

    def _channel_id(self, channel: str) -> str | None:
        name = channel.lstrip("#")
        if name in self.channels:
            return self.channels[name]
        if channel[:1] in ("C", "G", "D") and channel[1:].isalnum() and channel.isupper():
            return channel
        return None

    def _scripted_failure(self, method: str) -> web.Response | None:
        queue = self._failures.get(method)
        if not queue:
            return None
        failure = queue[0]
        failure.times -= 1
        if failure.times <= 0:
            queue.pop(0)
        return web.json_response({"ok": False, "error": failure.error}, status=failure.status, headers=failure.headers)

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args = await self._arguments(request)
        await self._record(Call(method, args, request.headers, request.path))
        failed = self._scripted_failure(method)
        if failed is not None:
            return failed
        # Socket Mode URLs are handed out for the app-level token only; everything else wants the bot token.
        expected = self.app_token if method == "apps.connections.open" else self.token
        if request.headers.get("Authorization") != f"Bearer {expected}":
            return web.json_response({"ok": False, "error": "invalid_auth"})
        handler = getattr(self, "_m_" + method.replace(".", "_"), None)
        if handler is None:
            return web.json_response({"ok": False, "error": "unknown_method"}, status=404)
        document: dict[str, Any] = handler(args)
        return web.json_response(document)

    async def _response_url(self, request: web.Request) -> web.Response:
        args = await self._arguments(request)
        await self._record(Call("response_url", args, request.headers, request.path))
        failed = self._scripted_failure("response_url")
        if failed is not None:
            return failed
        invalid = self._invalid_blocks(args)
        if invalid:
            self.block_errors.append(f"response_url: {invalid}")
            return web.json_response({"ok": False, "error": "invalid_blocks"}, status=400)
        key = self._response_messages.get(request.match_info["id"])
        if key in self.messages and args.get("replace_original") in (True, "true"):
            self.messages[key] = {k: args.get(k) for k in ("text", "blocks", "attachments")}
        return web.json_response({"ok": True})

    def _invalid_blocks(self, args: dict[str, Any]) -> str | None:
        """Why a message's blocks (and its attachments' blocks) would be refused, or None."""
        groups = [args.get("blocks") or []]
        groups += [a.get("blocks") or [] for a in args.get("attachments") or [] if isinstance(a, dict)]
        for blocks in groups:
            if not isinstance(blocks, list):
                return "blocks is not a list"
            if len(blocks) > 50:
                return f"{len(blocks)} blocks, at most 50"
            for block in blocks:
                try:
                    parsed = Block.parse(block)
                    if parsed is None:
                        return f"unknown block {block!r:.80}"
                    parsed.validate_json()
                except (SlackObjectFormationError, KeyError, TypeError) as exc:
                    return f"{type(exc).__name__}: {exc}"
        return None

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        self.sockets.append(socket)
        await socket.send_json({"type": "hello", "num_connections": 1, "connection_info": {"app_id": "A0ACKBOT"}})
        async with self._changed:
            self._changed.notify_all()
        async for message in socket:
            if message.type == WSMsgType.TEXT:
                await self._record(Call("socket_ack", json.loads(message.data), request.headers, request.path))
        return socket

    async def wait_for_socket(self, within: float = 5.0) -> None:
        """Wait until a Socket Mode client is connected."""
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(lambda: any(not s.closed for s in self.sockets))

    async def send_envelope(self, kind: str, payload: dict[str, Any]) -> str:
        """Push a request down the newest socket, as Slack does in Socket Mode; returns its envelope id."""
        self._envelopes += 1
        envelope_id = f"env-{self._envelopes}"
        await self.sockets[-1].send_json(
            {
                "envelope_id": envelope_id,
                "type": kind,
                "payload": payload,
                "accepts_response_payload": kind != "events_api",
                "retry_attempt": 0,
                "retry_reason": "",
            }
        )
        return envelope_id

    # ---------------------------------------------------------------- methods

    def _m_apps_connections_open(self, _args: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "url": f"ws://127.0.0.1:{self.port}/socket"}

    def _m_auth_test(self, _args: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "url": "https://acme.slack.com/",
            "team": "Acme",
            "user": "ackbot",
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": "B0ACKBOT",
            "is_enterprise_install": False,
        }

    def _m_conversations_open(self, args: dict[str, Any]) -> dict[str, Any]:
        users = str(args.get("users") or "")
        if not users or "," in users:
            return {"ok": False, "error": "users_not_found" if not users else "not_implemented"}
        digest = hashlib.sha1(users.encode()).hexdigest()[:8].upper()
        return {"ok": True, "channel": {"id": f"D{digest}"}}

    def _m_chat_postMessage(self, args: dict[str, Any]) -> dict[str, Any]:
        invalid = self._invalid_blocks(args)
        if invalid:
            self.block_errors.append(f"chat.postMessage: {invalid}")
            return {"ok": False, "error": "invalid_blocks"}
        channel = self._channel_id(str(args.get("channel") or ""))
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        if not args.get("text") and not args.get("blocks"):
            return {"ok": False, "error": "no_text"}
        ts = self._next_ts()
        message = {k: args.get(k) for k in ("text", "blocks", "attachments")}
        self.messages[(channel, ts)] = message
        return {"ok": True, "channel": channel, "ts": ts, "message": {**message, "ts": ts}}

    def _m_chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        invalid = self._invalid_blocks(args)
        if invalid:
            self.block_errors.append(f"chat.update: {invalid}")
            return {"ok": False, "error": "invalid_blocks"}
        key = (str(args.get("channel") or ""), str(args.get("ts") or ""))
        if key not in self.messages:
            return {"ok": False, "error": "message_not_found"}
        self.messages[key] = {k: args.get(k) for k in ("text", "blocks", "attachments")}
        return {"ok": True, "channel": key[0], "ts": key[1], "text": args.get("text", "")}

    def _m_chat_postEphemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        if self._channel_id(str(args.get("channel") or "")) is None:
            return {"ok": False, "error": "channel_not_found"}
        return {"ok": True, "message_ts": self._next_ts()}

    def _m_users_info(self, args: dict[str, Any]) -> dict[str, Any]:
        user = str(args.get("user") or "")
        return {"ok": True, "user": {"id": user, "name": user.lower(), "real_name": user, "profile": {}}}

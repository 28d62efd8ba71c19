"""A fake Bot Framework connector (the Teams side of the Bot Connector REST API v3) on loopback.

It is what an activity's ``serviceUrl`` points at in tests. It records every activity the bot sends,
replies to, updates, and every conversation it creates, and can answer errors on demand:

    async with FakeConnector() as connector:
        connector.fail_next(429, retry_after="2")        # the next write is refused
        ... the bot posts to connector.service_url ...
        [sent] = connector.sent                            # Recorded(conversation_id, activity_id, activity)
        [updated] = connector.updated

Activities shaped the way Teams posts them to the bot (install, channel events, messages, card actions) are
built by the functions at the end of this module.

Routes (as the Bot Framework SDK calls them):
    POST /v3/conversations                                       create a conversation (1:1 chats)
    POST /v3/conversations/{conversationId}/activities           send to a conversation
    POST /v3/conversations/{conversationId}/activities/{id}      reply to an activity
    PUT  /v3/conversations/{conversationId}/activities/{id}      update an activity
    GET  /v3/conversations/{conversationId}/members/{memberId}   one member (TeamsInfo.get_member)
"""

from __future__ import annotations

import asyncio
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass(frozen=True)
class Recorded:
    """One activity the bot sent, replied or updated."""

    conversation_id: str
    activity_id: str
    activity: dict[str, Any]
    reply_to: str | None = None
    authorization: str | None = None

    @property
    def cards(self) -> list[dict[str, Any]]:
        """The Adaptive Cards attached to the activity."""
        return [
            a["content"]
            for a in self.activity.get("attachments") or []
            if a.get("contentType") == "application/vnd.microsoft.card.adaptive"
        ]

    @property
    def card(self) -> dict[str, Any]:
        """The one Adaptive Card attached to the activity."""
        (card,) = self.cards
        return card


@dataclass
class Failure:
    status: int
    retry_after: str | None = None
    body: dict[str, Any] = field(default_factory=dict)


class FakeConnector:
    """An aiohttp server speaking the Bot Connector API on 127.0.0.1."""

    def __init__(self) -> None:
        self.sent: list[Recorded] = []
        self.replies: list[Recorded] = []
        self.updated: list[Recorded] = []
        self.created: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str]] = []
        self._failures: list[Failure] = []
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._changed = asyncio.Event()
        self.port = 0

    # ---------------------------------------------------------------- control

    def fail_next(self, status: int, *, times: int = 1, retry_after: str | None = None) -> None:
        """Answer the next `times` writes (send, reply, update, create) with this status."""
        for _ in range(times):
            self._failures.append(
                Failure(status, retry_after, {"error": {"code": f"Http{status}", "message": f"fake {status}"}})
            )

    async def wait_for(self, kind: str = "sent", count: int = 1, within: float = 10.0) -> list[Recorded]:
        """The first `count` records of a kind ("sent", "replies", "updated"), waiting up to `within` seconds."""
        records: list[Recorded] = getattr(self, kind)
        async with asyncio.timeout(within):
            while len(records) < count:
                self._changed.clear()
                await self._changed.wait()
        return records[:count]

    @property
    def service_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def activities(self) -> list[Recorded]:
        """Everything posted (sent and replies), in order."""
        return sorted(self.sent + self.replies, key=lambda r: int(r.activity_id.rsplit("-", 1)[-1]))

    # ---------------------------------------------------------------- server

    async def __aenter__(self) -> FakeConnector:
        app = web.Application()
        app.router.add_post("/v3/conversations", self._create)
        app.router.add_post("/v3/conversations/{conversation}/activities", self._send)
        app.router.add_post("/v3/conversations/{conversation}/activities/{activity}", self._reply)
        app.router.add_put("/v3/conversations/{conversation}/activities/{activity}", self._update)
        app.router.add_get("/v3/conversations/{conversation}/members/{member}", self._member)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _failure(self) -> web.Response | None:
        if not self._failures:
            return None
        failure = self._failures.pop(0)
        headers = {"Retry-After": failure.retry_after} if failure.retry_after else {}
        return web.json_response(failure.body, status=failure.status, headers=headers)

    def _next_id(self) -> str:
        return f"act-{next(self._ids)}"

    async def _record(self, request: web.Request, into: list[Recorded], *, reply_to: str | None = None) -> web.Response:
        conversation = request.match_info["conversation"]
        self.requests.append((request.method, request.path))
        failed = self._failure()
        if failed is not None:
            return failed
        activity = json.loads(await request.read())
        activity_id = request.match_info["activity"] if into is self.updated else self._next_id()
        into.append(Recorded(conversation, activity_id, activity, reply_to, request.headers.get("Authorization")))
        self._changed.set()
        return web.json_response({"id": activity_id}, status=200 if into is self.updated else 201)

    async def _send(self, request: web.Request) -> web.Response:
        return await self._record(request, self.sent)

    async def _reply(self, request: web.Request) -> web.Response:
        return await self._record(request, self.replies, reply_to=request.match_info["activity"])

    async def _update(self, request: web.Request) -> web.Response:
        return await self._record(request, self.updated)

    async def _create(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.path))
        failed = self._failure()
        if failed is not None:
            return failed
        params = json.loads(await request.read())
        self.created.append(params)
        self._changed.set()
        member = (params.get("members") or [{}])[0].get("id", "user")
        return web.json_response({"id": f"a:1on1-{member}", "serviceUrl": self.service_url}, status=201)

    async def _member(self, request: web.Request) -> web.Response:
        member = request.match_info["member"]
        return web.json_response({"id": member, "name": "Member", "aadObjectId": member})


# ---------------------------------------------------------------- activities as Teams sends them

TENANT = "a1b2c3d4-0000-4000-8000-00000000000a"
BOT_ID = "28:bot-app"
TEAM_ID = "19:general-platform@thread.tacv2"
OPS_ID = "19:ops-platform@thread.tacv2"
ALICE = "aaaaaaaa-1111-4111-8111-111111111111"  # an approver (people: alice)
MALLORY = "bbbbbbbb-2222-4222-8222-222222222222"  # nobody ackbot knows
_ids = itertools.count(1)


def _base(service_url: str, conversation: dict[str, Any], sender: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "id": f"f:{next(_ids)}",
        "timestamp": "2026-01-01T12:00:00.000Z",
        "serviceUrl": service_url,
        "channelId": "msteams",
        "from": sender or {"id": "29:alice", "name": "Alice", "aadObjectId": ALICE},
        "conversation": {"tenantId": TENANT, **conversation},
        "recipient": {"id": BOT_ID, "name": "ackbot"},
        "locale": "en-US",
    }


def team_channel(conversation_id: str = TEAM_ID) -> dict[str, Any]:
    return {"id": conversation_id, "conversationType": "channel", "isGroup": True}


def team_data(event: str | None = None, channel: dict[str, Any] | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"team": {"id": TEAM_ID, "name": "Platform"}, "tenant": {"id": TENANT}}
    if event:
        data["eventType"] = event
    if channel:
        data["channel"] = channel
    return data


def installed_in_team(service_url: str) -> list[dict[str, Any]]:
    """What Teams sends when the app is added to a team: conversationUpdate (bot added), then installationUpdate."""
    update = _base(service_url, team_channel())
    update.update(type="conversationUpdate", membersAdded=[{"id": BOT_ID}], channelData=team_data("teamMemberAdded"))
    install = _base(service_url, team_channel())
    install.update(type="installationUpdate", action="add", channelData=team_data())
    return [update, install]


def channel_created(service_url: str, channel_id: str = OPS_ID, name: str = "Ops") -> dict[str, Any]:
    activity = _base(service_url, team_channel())
    activity.update(
        type="conversationUpdate", channelData=team_data("channelCreated", {"id": channel_id, "name": name})
    )
    return activity


def removed_from_team(service_url: str) -> dict[str, Any]:
    activity = _base(service_url, team_channel())
    activity.update(type="installationUpdate", action="remove", channelData=team_data())
    return activity


def personal_install(service_url: str, aad: str = ALICE, name: str = "Alice") -> dict[str, Any]:
    activity = _base(
        service_url,
        {"id": f"a:1personal-{aad}", "conversationType": "personal"},
        {"id": f"29:{aad}", "name": name, "aadObjectId": aad},
    )
    activity.update(type="installationUpdate", action="add", channelData={"tenant": {"id": TENANT}})
    return activity


def message(
    service_url: str,
    text: str,
    *,
    conversation: dict[str, Any] | None = None,
    sender: dict[str, Any] | None = None,
    mention: bool = False,
    value: dict[str, Any] | None = None,
    reply_to: str | None = None,
) -> dict[str, Any]:
    """A message to the bot: 1:1 by default; in a channel thread with mention=True (the way Teams shapes it)."""
    if conversation is None:
        conversation = {"id": f"a:1personal-{ALICE}", "conversationType": "personal"}
    activity = _base(service_url, conversation, sender)
    activity.update(type="message", text=text, textFormat="plain")
    if conversation.get("conversationType") == "channel":
        activity["channelData"] = team_data(channel={"id": conversation["id"].split(";")[0]})
    if mention:
        activity["text"] = f"<at>ackbot</at> {text}"
        activity["entities"] = [
            {"type": "mention", "text": "<at>ackbot</at>", "mentioned": {"id": BOT_ID, "name": "ackbot"}}
        ]
    if value is not None:
        activity["value"] = value
    if reply_to:
        activity["replyToId"] = reply_to
    return activity


def card_action(
    service_url: str,
    *,
    verb: str,
    data: dict[str, Any],
    conversation_id: str = OPS_ID,
    reply_to: str | None = None,
    sender: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An Action.Execute click (or a refresh) as Teams posts it: an invoke named adaptiveCard/action."""
    conversation = team_channel(f"{conversation_id};messageid={reply_to or '1'}")
    activity = _base(service_url, conversation, sender)
    activity.update(
        type="invoke",
        name="adaptiveCard/action",
        channelData=team_data(channel={"id": conversation_id}),
        value={"action": {"type": "Action.Execute", "verb": verb, "data": data}, "trigger": "manual"},
    )
    if reply_to:
        activity["replyToId"] = reply_to
    return activity

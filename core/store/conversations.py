"""Teams conversations the bot is in: stored references for proactive messages, found by the names operators use.

A reference is a Bot Framework ConversationReference as JSON; core keeps it opaque (it never imports botbuilder).
Rows are written when the bot is installed in a team, group chat or 1:1 chat, when a team channel is created, and
whenever someone talks to the bot (so @mentioning it in a channel makes that channel reachable). Uninstalling marks
them not installed rather than deleting them, so `ackbot teams conversations` can say why a send fails.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel
from sqlalchemy import func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from core.models.common import UtcDatetime
from core.store.tables import TeamsConversationRow

ConversationKind = Literal["channel", "groupChat", "personal"]


class TeamsConversation(BaseModel):
    """One conversation the bot can post to."""

    conversation_id: str
    name: str
    kind: ConversationKind
    tenant_id: str | None = None
    team_id: str | None = None
    team_name: str | None = None
    channel_id: str | None = None
    channel_name: str | None = None
    user_aad_id: str | None = None
    service_url: str
    reference: dict[str, Any]
    installed: bool = True
    created_at: UtcDatetime
    updated_at: UtcDatetime


class AmbiguousConversationError(LookupError):
    """A name that more than one conversation answers to; the message lists their ids."""

    def __init__(self, key: str, matches: list[TeamsConversation]) -> None:
        self.key = key
        self.matches = matches
        ids = ", ".join(m.conversation_id for m in matches[:5])
        super().__init__(f"{len(matches)} Teams conversations are named {key!r} ({ids}): use the conversation id")


def _model(row: TeamsConversationRow) -> TeamsConversation:
    return TeamsConversation(
        conversation_id=row.conversation_id,
        name=row.name,
        kind=row.kind,
        tenant_id=row.tenant_id,
        team_id=row.team_id,
        team_name=row.team_name,
        channel_id=row.channel_id,
        channel_name=row.channel_name,
        user_aad_id=row.user_aad_id,
        service_url=row.service_url,
        reference=row.reference,
        installed=row.installed,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


async def upsert(
    *,
    session: AsyncSession,
    conversation_id: str,
    name: str | None,
    kind: ConversationKind,
    service_url: str,
    reference: dict[str, Any],
    now: datetime,
    tenant_id: str | None = None,
    team_id: str | None = None,
    team_name: str | None = None,
    channel_id: str | None = None,
    channel_name: str | None = None,
    user_aad_id: str | None = None,
) -> None:
    """Store or refresh a conversation (installed again if it had been removed); one statement, race-free.

    Every activity carries the ids but not always the names (a message in a channel has no team name): a name
    given as None never overwrites a known one, and a new row without a name is named by its id.
    """
    given: dict[str, Any] = {
        "name": name[:300] if name else None,
        "kind": kind,
        "tenant_id": tenant_id,
        "team_id": team_id,
        "team_name": team_name[:300] if team_name else None,
        "channel_id": channel_id,
        "channel_name": channel_name[:300] if channel_name else None,
        "user_aad_id": user_aad_id,
        "service_url": service_url,
        "reference": reference,
        "installed": True,
        "updated_at": now,
    }
    changes = {key: value for key, value in given.items() if value is not None}
    values = {**given, "name": given["name"] or conversation_id[:300]}
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(TeamsConversationRow).values(conversation_id=conversation_id, created_at=now, **values)
    await session.execute(statement.on_conflict_do_update(index_elements=["conversation_id"], set_=changes))


async def rename_team(*, session: AsyncSession, team_id: str, team_name: str, now: datetime) -> None:
    """A team was renamed: its channels' names ("Team/Channel") follow."""
    rows = (
        await session.execute(select(TeamsConversationRow).where(TeamsConversationRow.team_id == team_id))
    ).scalars()
    for row in rows:
        row.team_name = team_name[:300]
        if row.channel_name:
            row.name = f"{team_name}/{row.channel_name}"[:300]
        row.updated_at = now


async def mark_removed(
    *, session: AsyncSession, now: datetime, conversation_id: str | None = None, team_id: str | None = None
) -> int:
    """The bot was uninstalled from a conversation (or from a whole team): its rows are kept, marked removed."""
    clauses = []
    if conversation_id:
        clauses.append(TeamsConversationRow.conversation_id == conversation_id)
    if team_id:
        clauses.append(TeamsConversationRow.team_id == team_id)
    if not clauses:
        return 0
    result = await session.execute(
        update(TeamsConversationRow).where(or_(*clauses)).values(installed=False, updated_at=now)
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def list_conversations(*, session: AsyncSession, include_removed: bool = True) -> list[TeamsConversation]:
    """Every stored conversation, by name."""
    query = select(TeamsConversationRow).order_by(TeamsConversationRow.name, TeamsConversationRow.conversation_id)
    if not include_removed:
        query = query.where(TeamsConversationRow.installed.is_(True))
    return [_model(row) for row in (await session.execute(query)).scalars()]


async def get(*, session: AsyncSession, conversation_id: str) -> TeamsConversation | None:
    row = await session.get(TeamsConversationRow, conversation_id)
    return _model(row) if row is not None else None


async def find(*, session: AsyncSession, key: str) -> TeamsConversation | None:
    """The conversation a setting names: a conversation id, a Teams channel id, or a name (case-insensitive).

    Installed conversations win over removed ones; a name shared by several raises AmbiguousConversationError.
    """
    key = key.strip()
    if not key:
        return None
    exact = await session.get(TeamsConversationRow, key)
    if exact is not None:
        return _model(exact)
    for condition in (TeamsConversationRow.channel_id == key, func.lower(TeamsConversationRow.name) == key.lower()):
        rows = [
            _model(row)
            for row in (
                await session.execute(
                    select(TeamsConversationRow)
                    .where(condition)
                    .order_by(TeamsConversationRow.installed.desc(), TeamsConversationRow.updated_at.desc())
                )
            ).scalars()
        ]
        if not rows:
            continue
        installed = [row for row in rows if row.installed]
        candidates = installed or rows
        if len(candidates) > 1:
            raise AmbiguousConversationError(key, candidates)
        return candidates[0]
    return None


async def find_personal(*, session: AsyncSession, user_aad_id: str) -> TeamsConversation | None:
    """The bot's 1:1 chat with a person (by Entra ID object id), if one is known."""
    row = (
        await session.execute(
            select(TeamsConversationRow)
            .where(TeamsConversationRow.kind == "personal", TeamsConversationRow.user_aad_id == user_aad_id)
            .order_by(TeamsConversationRow.installed.desc(), TeamsConversationRow.updated_at.desc())
            .limit(1)
        )
    ).scalar_one_or_none()
    return _model(row) if row is not None else None


async def latest_for_tenant(*, session: AsyncSession, tenant_id: str | None) -> TeamsConversation | None:
    """The conversation heard from most recently, in the given tenant if any: it gives Teams' regional service URL
    and the bot's account for creating a new (1:1) conversation there."""
    query = select(TeamsConversationRow).order_by(TeamsConversationRow.updated_at.desc()).limit(1)
    if tenant_id:
        row = (await session.execute(query.where(TeamsConversationRow.tenant_id == tenant_id))).scalar_one_or_none()
        if row is not None:
            return _model(row)
    row = (await session.execute(query)).scalar_one_or_none()
    return _model(row) if row is not None else None

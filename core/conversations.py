"""The Teams conversations the bot knows (where it is installed, and the 1:1 chats it opened), for the Teams
bot and channel: each call opens its own session around the store (core.store.conversations)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from core.store import conversations as conversation_store
from core.store.conversations import TeamsConversation
from core.store.db import Database


async def get_conversation(*, db: Database, conversation_id: str) -> TeamsConversation | None:
    """One conversation by id."""
    async with db.read() as session:
        return await conversation_store.get(session=session, conversation_id=conversation_id)


async def find_conversation(*, db: Database, key: str) -> TeamsConversation | None:
    """The conversation a channel setting names (id, channel id or name); AmbiguousConversationError if several."""
    async with db.read() as session:
        return await conversation_store.find(session=session, key=key)


async def personal_chat(
    *, db: Database, user_aad_id: str, tenant_id: str | None
) -> tuple[TeamsConversation | None, TeamsConversation | None]:
    """(the bot's installed 1:1 chat with the person, None) when there is one; else (None, the latest conversation
    of the tenant, or of any tenant), whose service URL and bot account a new chat is opened with."""
    async with db.read() as session:
        found = await conversation_store.find_personal(session=session, user_aad_id=user_aad_id)
        if found is not None and found.installed:
            return found, None
        return None, await conversation_store.latest_for_tenant(session=session, tenant_id=tenant_id)


async def remember(*, db: Database, now: datetime, **fields: Any) -> None:
    """Store or refresh a conversation (the fields of core.store.conversations.upsert), installed again."""
    async with db.transaction() as session:
        await conversation_store.upsert(session=session, now=now, **fields)


async def remember_and_get(*, db: Database, now: datetime, conversation_id: str, **fields: Any) -> TeamsConversation:
    """remember, then the conversation as stored, in the same transaction."""
    async with db.transaction() as session:
        await conversation_store.upsert(session=session, now=now, conversation_id=conversation_id, **fields)
        stored = await conversation_store.get(session=session, conversation_id=conversation_id)
    assert stored is not None
    return stored


async def mark_removed(
    *, db: Database, now: datetime, conversation_id: str | None = None, team_id: str | None = None
) -> int:
    """The bot was removed: the conversation, and with a team id every conversation of that team; how many."""
    async with db.transaction() as session:
        return await conversation_store.mark_removed(
            session=session, now=now, conversation_id=conversation_id, team_id=team_id
        )


async def rename_team(*, db: Database, team_id: str, team_name: str, now: datetime) -> None:
    """A team was renamed: every conversation of it takes the new name."""
    async with db.transaction() as session:
        await conversation_store.rename_team(session=session, team_id=team_id, team_name=team_name, now=now)

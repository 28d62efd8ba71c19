"""Generated secrets kept in the database so that restarts and replicas share them.

Purposes: "hmac" and "dsse" (ack-token keys: an HMAC secret or a PEM Ed25519 private key), "callback" (the
secret that signs approval callbacks) and "csrf" (the web ack page's form secret). The material is stored as
is: protect the database (and its backups) like the secrets file it replaces.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.store.db import Database
from core.store.tables import SigningKeyRow

# An arbitrary constant: the advisory lock that serializes "create the first key" across replicas.
_ADVISORY_LOCK = 0x61636B626F74


@dataclass(frozen=True)
class StoredKey:
    """One stored key; the material never appears in repr."""

    kid: str
    purpose: str
    material: str = field(repr=False)
    created_at: datetime
    retired_at: datetime | None

    @property
    def retired(self) -> bool:
        """Whether the key was retired (its tokens are refused)."""
        return self.retired_at is not None


def _stored(row: SigningKeyRow) -> StoredKey:
    return StoredKey(row.kid, row.purpose, row.material, row.created_at, row.retired_at)


async def list_keys(*, session: AsyncSession, purpose: str | None = None) -> list[StoredKey]:
    """Keys oldest first (the order a key ring wants: the newest active key signs)."""
    query = select(SigningKeyRow).order_by(SigningKeyRow.created_at, SigningKeyRow.kid)
    if purpose is not None:
        query = query.where(SigningKeyRow.purpose == purpose)
    return [_stored(r) for r in (await session.execute(query)).scalars()]


async def add(*, session: AsyncSession, kid: str, purpose: str, material: str, now: datetime) -> StoredKey:
    """Store a new key inside the caller's transaction."""
    row = SigningKeyRow(kid=kid, purpose=purpose, material=material, created_at=now, retired_at=None)
    session.add(row)
    await session.flush()
    return _stored(row)


async def retire(*, session: AsyncSession, kid: str, now: datetime) -> bool:
    """Mark a key retired; False if there is no such key or it was retired already."""
    result = await session.execute(
        update(SigningKeyRow).where(SigningKeyRow.kid == kid, SigningKeyRow.retired_at.is_(None)).values(retired_at=now)
    )
    return bool(getattr(result, "rowcount", 0))


async def lock_keys(*, session: AsyncSession, db: Database) -> None:
    """Serialize key creation across replicas for the rest of the transaction.

    SQLite's BEGIN IMMEDIATE has already done so; PostgreSQL takes a transaction-scoped advisory lock.
    """
    if db.is_postgres:
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_LOCK})


async def ensure(
    *, db: Database, purpose: str, new_kid: Callable[[], str], generate: Callable[[], str], now: datetime
) -> list[StoredKey]:
    """The keys of a purpose, creating the first one if there is no active key yet (exactly once across replicas)."""
    async with db.transaction() as session:
        await lock_keys(session=session, db=db)
        keys = await list_keys(session=session, purpose=purpose)
        if not any(not k.retired for k in keys):
            keys.append(await add(session=session, kid=new_kid(), purpose=purpose, material=generate(), now=now))
        return keys

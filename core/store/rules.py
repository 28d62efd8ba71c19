"""Rules created through the API, stored as documents."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.models.rules import Rule
from core.store.tables import RuleRow


async def list_rules(*, session: AsyncSession) -> list[Rule]:
    """Every API rule, in creation order."""
    rows = await session.execute(select(RuleRow).order_by(RuleRow.created_at, RuleRow.name))
    return [Rule.model_validate(row.body) for row in rows.scalars()]


async def version(*, session: AsyncSession) -> tuple[int, str]:
    """A cheap stamp that changes whenever a rule is added, changed or deleted."""
    count, newest = (await session.execute(select(func.count(), func.max(RuleRow.updated_at)))).one()
    return int(count), str(newest)


async def get(*, session: AsyncSession, name: str) -> Rule | None:
    """One API rule by name."""
    row = await session.get(RuleRow, name)
    return Rule.model_validate(row.body) if row is not None else None


async def put(*, session: AsyncSession, rule: Rule, now: datetime) -> bool:
    """Create or replace a rule; True if it was created."""
    row = await session.get(RuleRow, rule.name)
    body = rule.model_dump(mode="json")
    if row is None:
        session.add(RuleRow(name=rule.name, tenant=rule.tenant, body=body, created_at=now, updated_at=now))
        return True
    row.body = body
    row.tenant = rule.tenant
    row.updated_at = now
    return False


async def remove(*, session: AsyncSession, name: str) -> bool:
    """Delete an API rule; False if there was none."""
    result = await session.execute(delete(RuleRow).where(RuleRow.name == name))
    return bool(getattr(result, "rowcount", 0))

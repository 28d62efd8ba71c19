"""The audit log: concurrent appends keep one chain, edits and deletions are found, the API filters by tenant."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, func, select, update

from bot import cli
from core import audit
from core.clock import ManualClock
from core.store import audit as audit_store
from core.store import migrate
from core.store.db import Database
from core.store.tables import AuditHeadRow, AuditPendingRow, AuditRow
from tests import test_approvals
from tests.conftest import READ_KEY, TENANT_KEY, auth
from tests.test_approvals import ALICE, BOB, HarnessFactory

harness = test_approvals.harness
NOW = ManualClock().now()


async def _append(db: Database, n: int, *, tenant: str = "acme") -> None:
    await audit.record_now(
        db=db, type="test.event", at=NOW, tenant=tenant, actor=f"p{n % 3}", data={"n": n, "token": "secret-value"}
    )


async def test_concurrent_appends_form_one_unbroken_chain(migrated_db: Database) -> None:
    await asyncio.gather(*(_append(migrated_db, n) for n in range(40)))
    report = await audit.verify_chain(db=migrated_db)
    assert report.ok and report.rows == 40 and report.head_seq == 40, report
    async with migrated_db.read() as session:
        rows = list((await session.execute(select(AuditRow).order_by(AuditRow.seq))).scalars())
    assert [r.seq for r in rows] == list(range(1, 41))
    assert sorted(r.data["n"] for r in rows) == list(range(40))
    assert all(rows[i].prev_hash == rows[i - 1].hash for i in range(1, 40))
    # Whatever a caller passes, values under secret-sounding keys are not kept.
    assert all("token" not in r.data for r in rows)


async def test_the_database_hashes_what_python_verifies(migrated_db: Database) -> None:
    # The appender has the database hash the row's canonical JSON around the seq it takes from the head: nested
    # "seq" and "tenant" keys, quotes, non-ASCII text and every column must come out as Python's hash of the row.
    tricky = {"seq": -1, "tenant": 'x","seq":-1,', "nested": {"seq": -1, "tenant": "ü"}, "list": [1, "é", None]}
    await audit.record_now(
        db=migrated_db, type="a.b", at=NOW, tenant="ünï", approval_id="apr_1", alert_id="alr_1", data=tricky
    )
    await audit.record_now(db=migrated_db, type="a.c", at=NOW, actor="p", actor_platform="slack")
    async with migrated_db.read() as session:
        rows = list((await session.execute(select(AuditRow).order_by(AuditRow.seq))).scalars())
    assert [(r.seq, r.type, r.data) for r in rows] == [(1, "a.b", tricky), (2, "a.c", {})]
    assert rows[0].prev_hash == audit_store.GENESIS_HASH and rows[1].prev_hash == rows[0].hash
    assert rows[0].hash == audit_store.row_hash(audit_store.GENESIS_HASH, rows[0])
    assert rows[1].hash == audit_store.row_hash(rows[0].hash, rows[1])
    report = await audit.verify_chain(db=migrated_db)
    assert report.ok and report.head_seq == 2 and report.head_hash == rows[1].hash, report


async def _chain(db: Database) -> list[tuple[int, str, str]]:
    async with db.read() as session:
        rows = (await session.execute(select(AuditRow).order_by(AuditRow.seq))).scalars()
        return [(r.seq, r.type, r.prev_hash) for r in rows]


async def test_rows_of_one_transaction_are_chained_in_order_and_a_rollback_leaves_no_trace(
    migrated_db: Database,
) -> None:
    db = migrated_db
    async with db.transaction() as session:
        for name in ("t.first", "t.second", "t.third"):
            await audit.record(session=session, db=db, type=name, at=NOW)
    with pytest.raises(RuntimeError):
        async with db.transaction() as session:
            await audit.record(session=session, db=db, type="t.rolled-back", at=NOW)
            raise RuntimeError("the caller fails after appending")
    await audit.record_now(db=db, type="t.fourth", at=NOW)
    assert [(seq, type_) for seq, type_, _ in await _chain(db)] == [
        (1, "t.first"),
        (2, "t.second"),
        (3, "t.third"),
        (4, "t.fourth"),
    ]
    assert (await audit.verify_chain(db=db)).ok
    async with db.read() as session:
        assert (await session.execute(select(func.count()).select_from(AuditPendingRow))).scalar_one() == 0


@pytest.mark.postgres
async def test_an_open_transaction_with_an_appended_row_holds_up_no_other_append(pg_url: str) -> None:
    # The head is locked only while a commit runs: a transaction that appended and then waits (for ackbot's event
    # loop, a slow statement, a client) must not stall every other decision behind it.
    db = Database(pg_url)
    try:
        await migrate.upgrade(db)
        async with db.transaction() as slow:
            await audit.record(session=slow, db=db, type="t.slow", at=NOW)
            async with asyncio.timeout(5):
                await audit.record_now(db=db, type="t.quick", at=NOW)
            assert [type_ for _, type_, _ in await _chain(db)] == ["t.quick"]
        chain = await _chain(db)
        assert [(seq, type_) for seq, type_, _ in chain] == [(1, "t.quick"), (2, "t.slow")]
        assert chain[1][2] != audit_store.GENESIS_HASH
        assert (await audit.verify_chain(db=db)).ok
    finally:
        await db.close()


async def _tamper(db: Database, statement: Any) -> None:
    async with db.transaction() as session:
        await session.execute(statement)


async def test_edits_and_deletions_are_found(migrated_db: Database) -> None:
    db = migrated_db
    for n in range(6):
        await _append(db, n)
    assert (await audit.verify_chain(db=db)).ok

    await _tamper(db, update(AuditRow).where(AuditRow.seq == 3).values(actor="mallory"))
    report = await audit.verify_chain(db=db)
    assert not report.ok and report.seq == 3 and "edited" in (report.problem or "")
    await _tamper(db, update(AuditRow).where(AuditRow.seq == 3).values(actor="p2"))  # as it was
    assert (await audit.verify_chain(db=db)).ok

    await _tamper(db, delete(AuditRow).where(AuditRow.seq == 4))
    report = await audit.verify_chain(db=db)
    assert not report.ok and report.seq == 4 and "deleted" in (report.problem or "")


async def test_a_truncated_tail_is_found(migrated_db: Database) -> None:
    db = migrated_db
    for n in range(5):
        await _append(db, n)
    await _tamper(db, delete(AuditRow).where(AuditRow.seq >= 4))
    report = await audit.verify_chain(db=db)
    assert not report.ok and report.seq == 4 and "from the end" in (report.problem or "")
    # Rewriting the head to hide it shows up as an edit of the last row instead.
    await _tamper(db, update(AuditHeadRow).values(seq=3))
    report = await audit.verify_chain(db=db)
    assert not report.ok and report.seq == 3


def test_audit_verify_command(database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "ackbot.yml"
    config.write_text(f"database:\n  url: {database_url}\n", encoding="utf-8")

    async def prepare() -> None:
        db = Database(database_url)
        try:
            await migrate.upgrade(db)
            for n in range(3):
                await _append(db, n)
        finally:
            await db.close()

    async def edit() -> None:
        db = Database(database_url)
        try:
            await _tamper(db, update(AuditRow).where(AuditRow.seq == 2).values(data={"n": 99}))
        finally:
            await db.close()

    asyncio.run(prepare())
    assert cli.main(["audit", "verify", "--config", str(config)]) == 0
    assert "audit log OK: 3 rows" in capsys.readouterr().out
    asyncio.run(edit())
    assert cli.main(["audit", "verify", "--config", str(config)]) == 1
    assert "BROKEN at row 2: row 2 was edited" in capsys.readouterr().err


def test_keys_commands(database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "ackbot.yml"
    config.write_text(f"database:\n  url: {database_url}\n", encoding="utf-8")

    async def prepare() -> None:
        db = Database(database_url)
        try:
            await migrate.upgrade(db)
        finally:
            await db.close()

    asyncio.run(prepare())
    assert cli.main(["keys", "rotate", "--config", str(config)]) == 0
    first = capsys.readouterr().out.split(":")[0]
    assert cli.main(["keys", "retire", first, "--config", str(config)]) == 1
    assert "only active" in capsys.readouterr().err
    assert cli.main(["keys", "rotate", "--config", str(config)]) == 0
    second = capsys.readouterr().out.split(":")[0]
    assert cli.main(["keys", "retire", first, "--config", str(config)]) == 0
    capsys.readouterr()
    assert cli.main(["keys", "list", "--config", str(config)]) == 0
    listing = capsys.readouterr().out
    assert f"{second}" in listing and "signs" in listing and "retired" in listing
    assert "BEGIN" not in listing and len(listing.splitlines()) == 3
    assert cli.main(["keys", "retire", "nope", "--config", str(config)]) == 1


async def test_the_api_filters_and_scopes_by_tenant(harness: HarnessFactory) -> None:
    h = await harness()
    mine = await h.create(targets=["chat"])
    theirs = await h.create(tenant="globex", targets=["chat"])
    await h.runtime.approvals.decide_by_id(approval_id=mine["id"], choice="acknowledge", actor=ALICE)
    await h.runtime.approvals.decide_by_id(approval_id=theirs["id"], choice="deny", actor=BOB)
    await h.runtime.approvals.decide_by_id(approval_id=mine["id"], choice="deny", actor=BOB)  # refused: decided

    items = (await (await h.client.get(f"/api/v1/audit?approval={mine['id']}", headers=auth())).json())["items"]
    assert [i["type"] for i in items] == ["decision.refused", "approval.acknowledged", "approval.created"]
    assert items[1]["actor"] == "alice" and items[1]["actor_platform"] == "slack"
    assert items[0]["data"]["reason"] == "already_decided" and items[0]["hash"] and items[0]["prev_hash"]

    by_actor = (await (await h.client.get("/api/v1/audit?actor=bob", headers=auth())).json())["items"]
    assert {i["approval_id"] for i in by_actor} == {mine["id"], theirs["id"]}
    of_type = (await (await h.client.get("/api/v1/audit?type=approval.denied", headers=auth())).json())["items"]
    assert [i["approval_id"] for i in of_type] == [theirs["id"]]

    # A tenant's keys see only that tenant's rows; reading needs notify.read.
    scoped = (await (await h.client.get("/api/v1/audit?limit=500", headers=auth(READ_KEY))).json())["items"]
    assert scoped and all(i["tenant"] == "acme" for i in scoped)
    assert (await h.client.get("/api/v1/audit?tenant=globex", headers=auth(TENANT_KEY))).status == 403
    assert (await h.client.get("/api/v1/audit")).status == 401

    # Pages of two cover everything once, newest first.
    seen: list[int] = []
    url = "/api/v1/audit?limit=2"
    while url:
        page = await (await h.client.get(url, headers=auth())).json()
        seen += [i["seq"] for i in page["items"]]
        url = f"/api/v1/audit?limit=2&cursor={page['next_cursor']}" if page["next_cursor"] else ""
    assert seen == [5, 4, 3, 2, 1]  # two created, two decided, one refused
    assert (await h.client.get("/api/v1/audit?cursor=!!", headers=auth())).status == 400
    resp = await h.client.get("/api/v1/audit?limit=0&colour=red", headers=auth())
    assert resp.status == 422 and {f["field"] for f in (await resp.json())["error"]["fields"]} == {"limit", "colour"}
    assert (await audit.verify_chain(db=h.runtime.db)).ok

"""A person decides only approvals of the tenants they see: refused as wrong_tenant, and audited, on every surface
(Slack, Teams, the web page, the API) and in both token modes, even where the approvers are "every person"."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from core.approvals import DecisionReason
from core.models.approvals import ApprovalState
from core.models.people import Actor
from core.store.tables import AuditRow
from tests import test_approvals
from tests.conftest import TENANT_KEY, AppFactory, auth, make_config
from tests.peers.fake_connector import FakeConnector
from tests.peers.fake_slack import FakeSlack
from tests.test_approvals import PEOPLE, Harness, HarnessFactory
from tests.test_slack_app import click, reply_text, slack, slack_settings
from tests.test_slack_e2e import button_values
from tests.test_teams import install_ops, teams_config, texts
from tests.test_teams_e2e import click as teams_click
from tests.test_teams_e2e import connector, person

harness = test_approvals.harness
__all__ = ["connector", "slack"]  # the fixtures, shared with the end-to-end tests

GINA_TEAMS = "99999999-9999-4999-8999-999999999999"
# gina sees globex only; every approval below is acme's.
GINA = {
    "name": "gina",
    "identities": {"slack": "U0GINA", "teams": GINA_TEAMS, "email": "gina@globex.example"},
    "tenants": ["globex"],
}
ACTORS = {
    "slack": Actor(platform="slack", id="U0GINA"),
    "teams": Actor(platform="teams", id=GINA_TEAMS),
    "api": Actor(platform="api", id="gina"),
}


async def refusals(runtime: Any) -> list[dict[str, Any]]:
    async with runtime.db.read() as session:
        rows = await session.execute(select(AuditRow.data).where(AuditRow.type == "decision.refused"))
        return [dict(data) for data in rows.scalars()]


async def opened_for_everyone(h: Harness) -> tuple[str, dict[str, str]]:
    """An acme approval whose approvers are every configured person, sent to gina; its id and gina's tokens."""
    created = await h.create(approvers=[], targets=["person:gina"])
    await h.dispatch()
    return created["id"], h.buttons(created["id"], target="U0GINA")


@pytest.mark.parametrize("mode", ["hmac", "dsse"])
async def test_a_person_of_another_tenant_is_refused_on_every_platform(harness: HarnessFactory, mode: str) -> None:
    h = await harness(people=[*PEOPLE, GINA], tokens={"mode": mode})
    approvals = h.runtime.approvals
    approval_id, tokens = await opened_for_everyone(h)
    results = [await approvals.decide_by_id(approval_id=approval_id, choice="deny", actor=a) for a in ACTORS.values()]
    # The Slack message's button, clicked in Slack and relayed by an integration (a Teams click of it is another
    # platform's button: wrong_channel, checked first).
    for actor in (ACTORS["slack"], ACTORS["api"]):
        results.append(await approvals.decide(token=tokens["acknowledge"], actor=actor))
    for result in results:
        assert not result.ok and result.reason is DecisionReason.wrong_tenant, result
        assert "does not see tenant 'acme'" in result.message
    assert await h.state(approval_id) is ApprovalState.pending
    refused = [r for r in await refusals(h.runtime) if r.get("reason") == "wrong_tenant"]
    assert len(refused) == len(results)
    # Someone who sees every tenant still decides it.
    result = await approvals.decide_by_id(approval_id=approval_id, choice="acknowledge", actor=test_approvals.BOB)
    assert result.ok and result.reason is DecisionReason.decided


async def test_a_person_who_sees_the_tenant_decides(harness: HarnessFactory) -> None:
    h = await harness(people=[*PEOPLE, {**GINA, "tenants": ["globex", "acme"]}])
    _approval_id, tokens = await opened_for_everyone(h)
    result = await h.runtime.approvals.decide(token=tokens["acknowledge"], actor=ACTORS["slack"])
    assert result.ok and result.approval is not None and result.approval.decided_by == "gina"


async def test_the_web_page_refuses_and_records_nothing(harness: HarnessFactory) -> None:
    h = await harness(people=[*PEOPLE, GINA])
    created = await h.create(approvers=[], targets=["person:gina/mail"])
    await h.dispatch()
    (note,) = [n for n in h.recorder.sent if n.target == "gina@globex.example"]
    link = note.buttons[0].url.removeprefix("http://ackbot.test")
    resp = await h.client.get(link)
    assert resp.status == 400 and "does not see tenant" in await resp.text()
    csrf = h.runtime.approvals.keys.csrf_for(link.removeprefix("/ack/"))
    resp = await h.client.post(link, data={"csrf": csrf})
    assert resp.status == 400 and "does not see tenant" in await resp.text()
    assert await h.state(created["id"]) is ApprovalState.pending
    assert "wrong_tenant" in {r.get("reason") for r in await refusals(h.runtime)}


async def test_the_api_relays_the_refusal(harness: HarnessFactory) -> None:
    h = await harness(people=[*PEOPLE, GINA])
    approval_id, tokens = await opened_for_everyone(h)
    url = f"/api/v1/approvals/{approval_id}/decisions"
    for body in (
        {"actor": {"platform": "slack", "id": "U0GINA"}, "token": tokens["acknowledge"]},
        {"actor": {"platform": "api", "id": "gina"}, "choice": "acknowledge"},
    ):
        resp = await h.client.post(url, json=body, headers=auth())
        assert resp.status == 400 and (await resp.json())["reason"] == "wrong_tenant", body
    assert await h.state(approval_id) is ApprovalState.pending


@pytest.mark.parametrize("mode", ["hmac", "dsse"])
async def test_a_slack_click_of_another_tenants_person_is_refused(
    app_factory: AppFactory, database_url: str, slack: FakeSlack, mode: str
) -> None:
    config = make_config(
        database_url,
        slack=slack_settings(slack),
        tokens={"mode": mode},
        people=[{"name": "gina", "identities": {"slack": "U0GINA"}, "tenants": ["globex"]}],
        channels=[{"name": "ops", "type": "slack", "settings": {"channel": "#ops"}}],
        rules=[{"name": "deploys", "tenant": "acme", "actions": [{"channel": "ops", "approval": {}}]}],
    )
    client, runtime = await app_factory(config)
    event = {"kind": "deploy.requested", "tenant": "acme", "title": "Deploy payments", "severity": "high"}
    assert (await client.post("/api/v1/events", json=event, headers=auth())).status == 202
    [post] = await slack.wait_for("chat.postMessage")
    await click(client, slack, button_values(post)["ackbot.acknowledge"], user="U0GINA", response="gina")
    [refusal] = await slack.wait_for("response_url")
    assert "does not see tenant" in reply_text(refusal)
    [approval] = (await runtime.approvals.list_approvals(tenants=None))[0]
    assert approval.state is ApprovalState.pending
    assert "wrong_tenant" in {r.get("reason") for r in await refusals(runtime)}


async def test_a_teams_click_of_another_tenants_person_is_refused(
    app_factory: AppFactory, database_url: str, connector: FakeConnector
) -> None:
    people = [{"name": "gina", "display_name": "Gina", "identities": {"teams": GINA_TEAMS}, "tenants": ["globex"]}]
    client, runtime = await app_factory(teams_config(database_url, people=people))
    await install_ops(client, connector)
    body = {"title": "Deploy payments 1.2.3 to prod?", "approvers": [], "targets": ["ops"]}
    resp = await client.post("/api/v1/approvals", json=body, headers=auth(TENANT_KEY))
    assert resp.status == 201, await resp.text()
    created = await resp.json()
    [posted] = await connector.wait_for("sent")
    answer, _ = await teams_click(client, connector, posted, who=person(GINA_TEAMS, "Gina"))
    assert "does not see tenant" in texts(answer["value"])
    approval = await runtime.approvals.get(approval_id=created["id"])
    assert approval is not None and approval.state is ApprovalState.pending
    assert "wrong_tenant" in {r.get("reason") for r in await refusals(runtime)}

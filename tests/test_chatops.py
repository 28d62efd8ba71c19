"""The chat command language's tenant scoping: `list` and `pending` show the tenants the caller may see.

A configured person sees their `tenants` ("*" by default); a chat user ackbot does not know sees what their
platform's `unknown_user_tenants` says (none by default). These run core.chatops on a real runtime and database;
tests/test_slack_app.py and tests/test_teams.py run the same through Slack and Teams.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from core import chatops, commands
from core.config import AckbotConfig, SlackConfig, TeamsConfig
from core.models.people import Actor, Person
from core.runtime import Runtime
from tests.conftest import AppFactory, auth, make_config

ALICE = Actor(platform="slack", id="U0ALICE", display_name="Alice")  # every tenant (the default)
CAROL = Actor(platform="teams", id="c0000000-0000-4000-8000-00000000ca01")  # tenant acme only
DAVE = Actor(platform="slack", id="U0DAVE")  # a person who sees no tenant
STRANGER_SLACK = Actor(platform="slack", id="U0STRANGER")
STRANGER_TEAMS = Actor(platform="teams", id="5e000000-0000-4000-8000-000000000000")

PEOPLE = [
    {"name": "alice", "identities": {"slack": ALICE.id}},
    {"name": "carol", "identities": {"teams": CAROL.id.upper()}, "tenants": ["acme"]},
    {"name": "dave", "identities": {"slack": DAVE.id}, "tenants": []},
]
CAROL_SCOPE = "person carol's tenants in the config"
DAVE_SCOPE = "person dave's tenants in the config"
ALERTS = [("critical", "acme"), ("high", "globex"), ("low", "initech")]


def scoped_config(database_url: str, **overrides: Any) -> AckbotConfig:
    return make_config(database_url, people=PEOPLE, **overrides)


async def fire_alerts(client: Any) -> None:
    for i, (severity, tenant) in enumerate(ALERTS):
        event = {"kind": "k", "tenant": tenant, "severity": severity, "title": f"alert of {tenant}", "id": str(i)}
        assert (await client.post("/api/v1/events", json=event, headers=auth())).status == 202


async def open_approvals(client: Any) -> None:
    for tenant in ("acme", "globex"):
        request = {"tenant": tenant, "title": f"approve for {tenant}?", "approvers": ["alice", "carol"]}
        resp = await client.post("/api/v1/approvals", json={**request, "targets": ["console"]}, headers=auth())
        assert resp.status in (200, 201, 202), await resp.text()


async def say(runtime: Runtime, actor: Actor, text: str) -> chatops.Answer:
    return await chatops.run(runtime=runtime, actor=actor, text=text)


def tenants_listed(answer: chatops.Answer) -> list[str]:
    assert answer.alerts is not None, answer.text
    return sorted(alert.tenant for alert in answer.alerts)


# ---------------------------------------------------------------- the scope


def test_a_scope_reads_star_as_every_tenant() -> None:
    every = commands.TenantScope.of(["*"], source="s")
    assert every.everything and every.allows("anything") and every.tenants is None and not every.empty
    assert every.describe() == "every tenant"
    some = commands.TenantScope.of(["globex", "acme"], source="s")
    assert some.allows("acme") and not some.allows("initech") and some.tenants == ["acme", "globex"]
    assert some.describe() == "acme, globex"
    assert commands.TenantScope.of(["acme", "*"], source="s").everything
    none = commands.TenantScope.of([], source="s")
    assert none.empty and not none.allows("acme") and none.tenants == [] and none.describe() == "no tenant"


def test_people_see_every_tenant_and_strangers_none_unless_configured() -> None:
    assert Person(name="alice").tenants == ["*"]
    assert SlackConfig().unknown_user_tenants == [] and TeamsConfig().unknown_user_tenants == []
    with pytest.raises(ValidationError, match="tenants"):
        Person(name="alice", tenants=[""])
    with pytest.raises(ValidationError, match="unknown_user_tenants"):
        SlackConfig(unknown_user_tenants="acme")
    with pytest.raises(ValidationError, match="unknown_user_tenants"):
        TeamsConfig(unknown_user_tenants=["x" * 101])


# ---------------------------------------------------------------- list


async def test_list_shows_only_the_tenants_the_caller_sees(app_factory: AppFactory, database_url: str) -> None:
    client, runtime = await app_factory(scoped_config(database_url), run_dispatcher=False)
    await fire_alerts(client)

    assert tenants_listed(await say(runtime, ALICE, "list")) == ["acme", "globex", "initech"]
    assert tenants_listed(await say(runtime, ALICE, "list globex")) == ["globex"]

    mine = await say(runtime, CAROL, "list")
    assert tenants_listed(mine) == ["acme"] and mine.title == "Open alerts, tenants acme"
    assert tenants_listed(await say(runtime, CAROL, "list high acme")) == ["acme"]
    assert tenants_listed(await say(runtime, CAROL, "list critical")) == ["acme"]
    refused = await say(runtime, CAROL, "list high globex")
    assert refused.alerts is None
    assert refused.text == f"Not allowed: you do not see tenant 'globex', only acme ({CAROL_SCOPE})."

    nothing = await say(runtime, DAVE, "list")
    assert nothing.alerts is None and nothing.text == f"Not allowed: you see no tenant ({DAVE_SCOPE})."
    for stranger, key in ((STRANGER_SLACK, "slack"), (STRANGER_TEAMS, "teams")):
        answer = await say(runtime, stranger, "list")
        assert answer.alerts is None and f"{key}.unknown_user_tenants" in answer.text
        assert "not among ackbot's people" in answer.text


async def test_strangers_see_what_their_platform_config_says(app_factory: AppFactory, database_url: str) -> None:
    config = scoped_config(
        database_url, slack={"unknown_user_tenants": ["globex"]}, teams={"unknown_user_tenants": ["*"]}
    )
    client, runtime = await app_factory(config, run_dispatcher=False)
    await fire_alerts(client)
    assert tenants_listed(await say(runtime, STRANGER_SLACK, "list")) == ["globex"]
    assert "only globex (slack.unknown_user_tenants" in (await say(runtime, STRANGER_SLACK, "list acme")).text
    assert tenants_listed(await say(runtime, STRANGER_TEAMS, "list")) == ["acme", "globex", "initech"]
    # A configured person's own tenants win over the platform's setting for strangers.
    assert "Not allowed" in (await say(runtime, DAVE, "list globex")).text


# ---------------------------------------------------------------- pending and silence


async def test_pending_lists_the_callers_tenants_only(app_factory: AppFactory, database_url: str) -> None:
    client, runtime = await app_factory(scoped_config(database_url), run_dispatcher=False)
    await open_approvals(client)

    def tenants_of(answer: chatops.Answer) -> list[str]:
        assert answer.approvals is not None, answer.text
        return sorted(approval.tenant for approval in answer.approvals)

    assert tenants_of(await say(runtime, ALICE, "pending")) == ["acme", "globex"]
    assert tenants_of(await say(runtime, CAROL, "pending")) == ["acme"]
    assert (await say(runtime, DAVE, "pending")).text == f"Not allowed: you see no tenant ({DAVE_SCOPE})."
    assert "slack.unknown_user_tenants" in (await say(runtime, STRANGER_SLACK, "pending")).text


async def test_a_person_may_not_silence_a_tenant_they_do_not_see(app_factory: AppFactory, database_url: str) -> None:
    client, runtime = await app_factory(scoped_config(database_url), run_dispatcher=False)
    await fire_alerts(client)
    everything = await say(runtime, ALICE, "list")
    assert everything.alerts is not None
    by_tenant = {alert.tenant: alert.id for alert in everything.alerts}
    refused = await say(runtime, CAROL, f"silence {by_tenant['globex']} 1h")
    assert refused.text == "Not allowed: carol does not see tenant 'globex'."
    assert "is silenced until" in (await say(runtime, CAROL, f"silence {by_tenant['acme']} 1h")).text


async def test_a_person_may_not_acknowledge_in_a_tenant_they_do_not_see(
    app_factory: AppFactory, database_url: str
) -> None:
    client, runtime = await app_factory(scoped_config(database_url), run_dispatcher=False)
    await open_approvals(client)  # carol is an approver of both, but sees only acme
    mine = await say(runtime, ALICE, "pending")
    assert mine.approvals is not None
    by_tenant = {approval.tenant: approval.id for approval in mine.approvals}
    refused = await say(runtime, CAROL, f"ack {by_tenant['globex']}")
    assert refused.text == f"No approval {by_tenant['globex']}." and refused.decided is None
    assert (await say(runtime, DAVE, f"ack {by_tenant['acme']}")).text == (
        f"Not allowed: you see no tenant ({DAVE_SCOPE})."
    )
    still_open = await runtime.approvals.get(approval_id=by_tenant["globex"])
    assert still_open is not None and not still_open.state.final
    accepted = await say(runtime, CAROL, f"ack {by_tenant['acme']}")
    assert accepted.decided is not None and accepted.decided.state.value == "acknowledged"


async def test_test_and_status_show_only_the_channels_of_tenants_one_sees(
    app_factory: AppFactory, database_url: str
) -> None:
    channels = [
        {"name": "console", "type": "console"},
        {"name": "acme-log", "type": "console", "tenant": "acme"},
        {"name": "globex-log", "type": "console", "tenant": "globex"},
    ]
    _client, runtime = await app_factory(scoped_config(database_url, channels=channels), run_dispatcher=False)
    refused = await say(runtime, CAROL, "test globex-log")  # carol sees acme only
    assert refused.text == "No channel named globex-log. Channels: acme-log, console"
    assert (await say(runtime, CAROL, "test acme-log")).text.startswith("✅")
    assert (await say(runtime, CAROL, "test console")).text.startswith("✅")  # shared
    status = (await say(runtime, CAROL, "status")).text
    assert "acme-log" in status and "globex-log" not in status
    assert "globex-log" in (await say(runtime, ALICE, "status")).text

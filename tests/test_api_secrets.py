"""Secret references given over the API resolve only what the operator allowed in the config file's `secrets:`
(env names and prefixes, files, directories): 422 naming the field when the channel is made, refused again when
it is used; the config file's own channels keep the power to name any reference."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from bot.cli import main
from core.commands import put_channel
from core.config import ChannelConfig, ConfigError, parse_config
from core.secrets import SecretPolicy
from tests.conftest import API_KEY, AppFactory, auth, make_config
from tests.peers.http_sink import HttpSink, Reply

LEAKED = "the-server-side-secret-0123456789"


@pytest.fixture
def secret_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A secrets directory holding one allowed file, a file beside it that is not allowed, and an escape by symlink."""
    monkeypatch.setenv("ACKBOT_SECRET_HOOK", "allowed-hook-secret-0123456789")
    monkeypatch.setenv("SERVER_ONLY", LEAKED)
    allowed = tmp_path / "api-secrets"
    allowed.mkdir()
    for path, text in ((allowed / "token", "token-from-the-directory"), (tmp_path / "private", LEAKED)):
        path.write_text(text)
        path.chmod(0o600)
    (allowed / "escape").symlink_to(tmp_path / "private")
    return allowed


def hook(url: str, /, **settings: Any) -> dict[str, Any]:
    return {
        "name": "hook",
        "type": "webhook",
        "settings": {"url": url, "secret": "env:ACKBOT_SECRET_HOOK", "allow_private": True, **settings},
    }


def allowlist(secret_dir: Path) -> dict[str, Any]:
    return {"allow": ["env:ACKBOT_SECRET_*", "env:ACKBOT_TEST_WEBHOOK_SECRET"], "directories": [str(secret_dir)]}


async def test_references_outside_the_allowlist_are_refused_naming_the_field(
    app_factory: AppFactory, database_url: str, secret_dir: Path
) -> None:
    client, _runtime = await app_factory(make_config(database_url, secrets=allowlist(secret_dir)))
    refused: list[tuple[dict[str, Any], str]] = [
        ({"secret_headers": {"X-Leak": "env:ACKBOT_TEST_ADMIN_KEY"}}, "settings.secret_headers.X-Leak"),
        ({"secret_headers": {"X-Leak-File": "file:/etc/hostname"}}, "settings.secret_headers.X-Leak-File"),
        ({"secret": "env:SERVER_ONLY"}, "settings.secret"),
        ({"secret": f"file:{secret_dir}/../private"}, "settings.secret"),  # .. leaves the directory
        ({"secret": f"file:{secret_dir}/escape"}, "settings.secret"),  # so does a symlink
        ({"url": "env:ACKBOT_TEST_READ_KEY"}, "settings.url"),
    ]
    for settings, field in refused:
        resp = await client.post(
            "/api/v1/channels", json=hook("https://hooks.example.org/x", **settings), headers=auth()
        )
        assert resp.status == 422, (settings, await resp.text())
        fields = (await resp.json())["error"]["fields"]
        assert [f["field"] for f in fields] == [field], fields
        assert "secrets.allow" in fields[0]["message"]
    assert (await client.get("/api/v1/channels/hook", headers=auth())).status == 404
    # A PATCH is checked the same way.
    resp = await client.post("/api/v1/channels", json=hook("https://hooks.example.org/x"), headers=auth())
    assert resp.status == 201, await resp.text()
    patch = {"settings": {"secret_headers": {"Authorization": "env:ACKBOT_TEST_ADMIN_KEY"}}}
    resp = await client.patch("/api/v1/channels/hook", json=patch, headers=auth())
    assert (
        resp.status == 422
        and (await resp.json())["error"]["fields"][0]["field"] == "settings.secret_headers.Authorization"
    )


async def test_allowed_references_resolve(app_factory: AppFactory, database_url: str, secret_dir: Path) -> None:
    client, _runtime = await app_factory(make_config(database_url, secrets=allowlist(secret_dir)))
    async with HttpSink(Reply(200)) as sink:
        channel = hook(sink.url("/hook"), secret_headers={"Authorization": f"file:{secret_dir}/token"})
        resp = await client.post("/api/v1/channels", json=channel, headers=auth())
        assert resp.status == 201, await resp.text()
        resp = await client.post("/api/v1/channels/hook/test", headers=auth())
        assert (await resp.json())["ok"] is True, await resp.text()
        [request] = sink.requests
    assert request.headers["Authorization"] == "token-from-the-directory"


async def test_references_are_checked_again_when_used(
    app_factory: AppFactory, database_url: str, secret_dir: Path
) -> None:
    # A channel stored before the allowlist shrank (or by an older version) still cannot read what is not allowed.
    client, runtime = await app_factory(make_config(database_url, secrets=allowlist(secret_dir)))
    async with HttpSink(Reply(200)) as sink:
        channel = ChannelConfig.model_validate(hook(sink.url("/hook"), secret_headers={"X-Leak": "env:SERVER_ONLY"}))
        await put_channel(db=runtime.db, channel=channel, now=runtime.clock.now())
        resp = await client.post("/api/v1/channels/hook/test", headers=auth())
        outcome = await resp.json()
        assert outcome["ok"] is False and "env:SERVER_ONLY is not among" in outcome["error"], outcome
        assert sink.requests == []
    assert LEAKED not in str(outcome)


async def test_the_config_files_channels_name_any_reference(
    app_factory: AppFactory, database_url: str, secret_dir: Path
) -> None:
    async with HttpSink(Reply(200)) as sink:
        channel = hook(sink.url("/hook"), secret_headers={"X-Server": "env:SERVER_ONLY"})
        client, _runtime = await app_factory(make_config(database_url, channels=[channel], rules=[], secrets={}))
        resp = await client.post("/api/v1/channels/hook/test", headers=auth())
        assert (await resp.json())["ok"] is True, await resp.text()
        [request] = sink.requests
    assert request.headers["X-Server"] == LEAKED


@pytest.mark.parametrize(
    ("secrets", "where"),
    [
        ({"allow": ["env:*"]}, "secrets.allow"),
        ({"allow": ["env:ACKBOT_*_KEY"]}, "secrets.allow"),
        ({"allow": ["file:relative/path"]}, "secrets.allow"),
        ({"allow": ["ACKBOT_SECRET_*"]}, "secrets.allow"),
        ({"directories": ["/"]}, "secrets.directories"),
        ({"directories": ["relative"]}, "secrets.directories"),
        ({"allowed": []}, "secrets.allowed"),
    ],
)
def test_check_config_validates_the_allowlist(
    secrets: dict[str, Any], where: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = f"secrets: {secrets!r}\n".replace("'", '"')
    with pytest.raises(ConfigError) as caught:
        parse_config(text, environ=False)
    assert caught.value.problems[0].path.startswith(where)
    path = tmp_path / "ackbot.yml"
    path.write_text(text)
    assert main(["check-config", str(path)]) == 1
    captured = capsys.readouterr()
    assert where in captured.out + captured.err


def test_the_policy_matches_names_prefixes_files_and_directories(secret_dir: Path) -> None:
    policy = SecretPolicy(allow=("env:EXACT", "env:ACKBOT_SECRET_*", f"file:{secret_dir.parent}/private"))
    assert policy.refusal("env:EXACT") is None and policy.refusal("env:EXACTLY") is not None
    assert policy.refusal("env:ACKBOT_SECRET_X") is None and policy.refusal("env:ACKBOT_API_KEY") is not None
    assert policy.refusal(f"file:{secret_dir.parent}/private") is None
    assert policy.refusal(f"file:{secret_dir}/token") is not None
    with_dir = SecretPolicy(directories=(str(secret_dir),))
    assert with_dir.refusal(f"file:{secret_dir}/token") is None
    assert with_dir.refusal(f"file:{secret_dir}/escape") is not None
    assert with_dir.refusal(f"file:{secret_dir}/../private") is not None
    assert os.path.exists(secret_dir / "escape")
    assert API_KEY  # the admin key the API tests use is never allowed by the test allowlist
    assert SecretPolicy(allow=("env:ACKBOT_TEST_WEBHOOK_SECRET",)).refusal("env:ACKBOT_TEST_ADMIN_KEY") is not None

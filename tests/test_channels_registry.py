"""The channel registry: core's types, settings validation with located errors, building, and bot-side types."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import pytest
from pydantic import ValidationError

from core.channels.base import BaseChannel, Channel, ChannelContext, ChannelSettings, Notification, SendResult
from core.channels.console import ConsoleChannel
from core.channels.registry import ChannelRegistry, UnknownChannelTypeError, default_registry
from core.channels.webhook import WebhookChannel, WebhookSettings
from core.config import problems_from_validation

CORE_TYPES = ["console", "email", "jira", "pagerduty", "slack_webhook", "teams_workflows", "webhook"]


def test_default_registry_holds_core_types() -> None:
    registry = default_registry()
    assert registry.types() == CORE_TYPES
    assert list(registry) == CORE_TYPES
    assert "webhook" in registry and "slack" not in registry
    assert registry.get("webhook") is WebhookChannel
    assert registry.settings_model("webhook") is WebhookSettings


def test_validate_settings_errors_locate_inside_settings() -> None:
    registry = default_registry()
    with pytest.raises(ValidationError) as caught:
        registry.validate_settings("webhook", {"url": "ftp://x", "secret": "env:S", "colour": "red"})
    problems = problems_from_validation(caught.value, prefix=("channels", 3, "settings"))
    assert sorted((p.path, p.message) for p in problems) == [
        ("channels[3].settings.colour", "unknown key"),
        ("channels[3].settings.url", "an http:// or https:// URL, or a secret reference env:NAME / file:PATH"),
    ]


def test_validate_settings_returns_the_typed_model_and_accepts_none() -> None:
    registry = default_registry()
    settings = registry.validate_settings("webhook", {"url": "https://x.example/", "secret": "env:S"})
    assert isinstance(settings, WebhookSettings) and settings.url == "https://x.example/"
    assert registry.validate_settings("console", None) == registry.validate_settings("console", {})
    assert registry.validate_settings("webhook", settings) is settings


def test_problems_lists_every_one() -> None:
    registry = default_registry()
    assert registry.problems("console", {}) == []
    assert registry.problems("jira", {"project": "OPS"}) == [
        (("base_url",), "Field required"),
        (("email",), "Field required"),
        (("api_token",), "Field required"),
    ]
    [(loc, message)] = registry.problems("carrier-pigeon", {})
    assert loc == () and "unknown channel type 'carrier-pigeon'" in message


def test_unknown_types_name_the_known_ones() -> None:
    registry = default_registry()
    with pytest.raises(UnknownChannelTypeError, match="known types: console, email"):
        registry.validate_settings("carrier-pigeon", {})
    with pytest.raises(UnknownChannelTypeError):
        registry.build("x", "carrier-pigeon", {}, ChannelContext())


def test_build_makes_a_channel_with_retry_and_pacing_overrides() -> None:
    channel = default_registry().build(
        "ops-hook",
        "webhook",
        {"url": "https://hooks.example/", "secret": "env:S", "max_attempts": 2, "rate_per_second": 0.5},
        ChannelContext(public_url="https://ackbot.example"),
    )
    assert isinstance(channel, WebhookChannel) and isinstance(channel, Channel)
    assert channel.name == "ops-hook" and channel.type == "webhook"
    assert (channel.max_attempts, channel.rate_per_second) == (2, 0.5)
    assert channel.describe()["settings"]["secret"] == "env:S"


class FakeChatSettings(ChannelSettings):
    channel_id: str


class FakeChat(BaseChannel):
    """Stands in for the bot layer's Slack or Teams channel."""

    type: ClassVar[str] = "fakechat"
    Settings = FakeChatSettings
    supports_update: ClassVar[bool] = True

    async def send(self, note: Notification) -> SendResult:
        return SendResult(message_ref={"ts": "1"})

    async def update(self, message_ref: Mapping[str, Any], note: Notification) -> SendResult:
        return SendResult(message_ref=dict(message_ref))


def test_the_bot_layer_registers_its_own_types() -> None:
    registry = default_registry()
    assert registry.register(FakeChat) is FakeChat
    assert "fakechat" in registry.types()
    channel = registry.build("chat", "fakechat", {"channel_id": "C1"}, ChannelContext())
    assert isinstance(channel, FakeChat)
    with pytest.raises(ValidationError):
        registry.validate_settings("fakechat", {})


def test_registering_a_taken_name_needs_replace() -> None:
    class OtherConsole(ConsoleChannel):
        pass

    registry = default_registry()
    with pytest.raises(ValueError, match="already registered"):
        registry.register(OtherConsole)
    registry.register(OtherConsole, replace=True)
    assert registry.get("console") is OtherConsole
    registry.register(OtherConsole)  # the same class again is fine


def test_registries_are_independent() -> None:
    one, two = default_registry(), default_registry()
    one.register(FakeChat)
    assert "fakechat" not in two
    assert ChannelRegistry().types() == []


def test_a_class_without_a_type_name_is_refused() -> None:
    class Nameless(BaseChannel):
        pass

    with pytest.raises(ValueError, match="no type name"):
        ChannelRegistry().register(Nameless)


def test_json_schema_uses_the_names_people_write() -> None:
    schema = default_registry().json_schema("email")
    assert "from" in schema["properties"] and "from_" not in schema["properties"]
    assert schema["additionalProperties"] is False

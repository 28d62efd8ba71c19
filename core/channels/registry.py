"""Channel types by name: which class a config's ``type:`` builds, and how its ``settings:`` are checked.

Core registers its own types in ``default_registry()``; the bot layer registers the chat platforms (slack,
teams) on the same registry when it assembles the process, so core never imports them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from core.channels.base import BaseChannel, Channel, ChannelContext, ChannelSettings
from core.channels.console import ConsoleChannel
from core.channels.email import EmailChannel
from core.channels.jira import JiraChannel
from core.channels.pagerduty import PagerDutyChannel
from core.channels.slack_webhook import SlackWebhookChannel
from core.channels.teams_workflows import TeamsWorkflowsChannel
from core.channels.webhook import WebhookChannel

ChannelClass = TypeVar("ChannelClass", bound=type[BaseChannel])


class UnknownChannelTypeError(ValueError):
    """A channel type nobody registered; the message lists the known ones."""

    def __init__(self, type_name: str, known: Iterable[str]) -> None:
        self.type_name = type_name
        self.known = sorted(known)
        super().__init__(f"unknown channel type {type_name!r}; known types: {', '.join(self.known) or 'none'}")


class ChannelRegistry:
    """Maps channel type names to channel classes."""

    def __init__(self, classes: Iterable[type[BaseChannel]] = ()) -> None:
        self._classes: dict[str, type[BaseChannel]] = {}
        for cls in classes:
            self.register(cls)

    def register(self, cls: ChannelClass, *, replace: bool = False) -> ChannelClass:
        """Add a channel class under its ``type`` name (also a decorator); a clash is refused unless replace."""
        name = getattr(cls, "type", "")
        if not isinstance(name, str) or not name:
            raise ValueError(f"{cls.__name__} has no type name")
        if not (isinstance(cls.Settings, type) and issubclass(cls.Settings, ChannelSettings)):
            raise TypeError(f"{cls.__name__}.Settings must be a ChannelSettings subclass")
        if name in self._classes and self._classes[name] is not cls and not replace:
            raise ValueError(f"channel type {name!r} is already registered by {self._classes[name].__name__}")
        self._classes[name] = cls
        return cls

    def get(self, type_name: str) -> type[BaseChannel]:
        """The class registered for a type name; UnknownChannelTypeError if none."""
        try:
            return self._classes[type_name]
        except KeyError:
            raise UnknownChannelTypeError(type_name, self._classes) from None

    def __contains__(self, type_name: object) -> bool:
        return type_name in self._classes

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._classes))

    def types(self) -> list[str]:
        """The registered type names, sorted."""
        return sorted(self._classes)

    def settings_model(self, type_name: str) -> type[ChannelSettings]:
        """The pydantic model a type's settings must satisfy."""
        return self.get(type_name).Settings

    def validate_settings(
        self, type_name: str, settings: Mapping[str, Any] | ChannelSettings | None
    ) -> ChannelSettings:
        """Check a channel's settings: pydantic ValidationError (located inside settings) for any problem.

        Unknown types raise UnknownChannelTypeError, which config checking reports against ``type``.
        """
        model = self.settings_model(type_name)
        if isinstance(settings, model):
            return settings
        if isinstance(settings, BaseModel):
            settings = settings.model_dump(by_alias=True, exclude_unset=True)
        return model.model_validate(dict(settings or {}))

    def problems(self, type_name: str, settings: Mapping[str, Any] | None) -> list[tuple[tuple[int | str, ...], str]]:
        """Every problem with a channel's settings as (location within settings, message); none is an empty list."""
        if type_name not in self._classes:
            return [((), str(UnknownChannelTypeError(type_name, self._classes)))]
        try:
            self.validate_settings(type_name, settings)
        except ValidationError as exc:
            return [(tuple(error["loc"]), error["msg"]) for error in exc.errors()]
        return []

    def build(
        self,
        name: str,
        type_name: str,
        settings: Mapping[str, Any] | ChannelSettings | None,
        context: ChannelContext,
    ) -> Channel:
        """Construct a channel from its config entry: validated settings, the process's context."""
        cls = self.get(type_name)
        return cls(name, self.validate_settings(type_name, settings), context)

    def json_schema(self, type_name: str) -> dict[str, Any]:
        """The JSON schema of a type's settings (for documentation and editors)."""
        return self.settings_model(type_name).model_json_schema(by_alias=True)


def core_channel_classes() -> list[type[BaseChannel]]:
    """The channel classes core ships."""
    return [
        ConsoleChannel,
        WebhookChannel,
        EmailChannel,
        PagerDutyChannel,
        JiraChannel,
        SlackWebhookChannel,
        TeamsWorkflowsChannel,
    ]


def default_registry() -> ChannelRegistry:
    """A new registry holding core's types: console, webhook, email, pagerduty, jira, slack_webhook, teams_workflows."""
    return ChannelRegistry(core_channel_classes())

"""Settings: one YAML file, validated by pydantic models, with ACKBOT_* environment overrides."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.models.common import Duration, Strict, check_timezone
from core.models.people import Group, Person, TenantList, channel_serves
from core.models.rules import QuietHoursList, Rule, cron_expression
from core.secrets import SecretPolicy, SecretRef, check_allowed_entry, check_directory

DEFAULT_CONFIG_RESOURCE = "ackbot.yml"


class ApiScope(StrEnum):
    events_write = "events.write"
    notify_read = "notify.read"
    notify_admin = "notify.admin"


class ServerConfig(Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    public_url: str = Field(default="", description="the URL people and platforms reach ackbot at")
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    max_batch: int = Field(default=1000, ge=1, le=10000)

    @field_validator("public_url")
    @classmethod
    def _no_trailing_slash(cls, url: str) -> str:
        if url and not url.startswith(("http://", "https://")):
            raise ValueError("public_url must start with http:// or https://")
        return url.rstrip("/")


class DatabaseConfig(Strict):
    url: str = "sqlite+aiosqlite:///./ackbot.db"
    pool_size: int = Field(default=10, ge=1, le=200)
    echo: bool = False

    @field_validator("url")
    @classmethod
    def _supported_driver(cls, url: str) -> str:
        if not url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("database url must use sqlite+aiosqlite:// or postgresql+asyncpg://")
        return url


class ApiKeyConfig(Strict):
    name: str = Field(min_length=1, max_length=100)
    key: SecretRef
    tenant: str = Field(default="default", min_length=1, max_length=100, description='"*" for every tenant')
    scopes: list[ApiScope] = Field(default_factory=lambda: [ApiScope.events_write, ApiScope.notify_read])


class ChannelConfig(Strict):
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")
    type: str = Field(min_length=1, max_length=50)
    tenant: str = Field(
        default="*",
        min_length=1,
        max_length=100,
        description='the tenant whose rules may send through it and whose keys see it; "*": shared by every tenant',
    )
    enabled: bool = True
    settings: dict[str, Any] = Field(default_factory=dict)


class DispatchConfig(Strict):
    workers: int = Field(default=4, ge=1, le=256)
    lease: Duration = timedelta(seconds=60)
    poll_interval: Duration = timedelta(milliseconds=500)
    batch: int = Field(default=50, ge=1, le=1000)


class NoiseConfig(Strict):
    dedup_window: Duration = timedelta(minutes=5)
    scheduler_interval: Duration = Field(
        default=timedelta(seconds=5), description="how often each replica flushes due digests and fires due reports"
    )
    silence_approvers: list[str] = Field(
        default_factory=list,
        description="people or groups who may silence from chat; empty: every configured person",
    )


class ReportsConfig(Strict):
    """The scheduled report: open alerts, pending approvals and what expires soon, sent to the channels listed."""

    schedule: str = Field(default="0 7 * * 1", description="cron (or hourly, daily, weekly); default Monday 07:00")
    timezone: str = Field(default="UTC", description="the IANA timezone the schedule is read in")
    expiring_within_days: int = Field(default=14, ge=0, le=365, description="list what expires within this many days")
    channels: list[str] = Field(default_factory=list, description="the channels that receive the report")
    tenant: str = Field(default="*", min_length=1, max_length=100, description='one tenant, or "*" for every tenant')
    max_items: int = Field(default=50, ge=1, le=500, description="rows listed per section")
    catch_up: Duration = Field(
        default=timedelta(hours=12), description="a scheduled time missed (every replica down) still fires this late"
    )

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        cron_expression(value)
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return check_timezone(value)


class TokenKeyConfig(Strict):
    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    secret: SecretRef = Field(description="HMAC: the key; DSSE: a PEM Ed25519 private key")
    retired: bool = False


class TokensConfig(Strict):
    mode: Literal["hmac", "dsse"] = "hmac"
    ttl: Duration = timedelta(hours=24)
    keys: list[TokenKeyConfig] = Field(default_factory=list, description="newest last; the newest signs")


class ApprovalsConfig(Strict):
    """Approvals: the callback signature, the scheduler's pace."""

    callback_secret: SecretRef | None = Field(
        default=None, description="signs approval callbacks (X-Ackbot-Signature); generated and stored if unset"
    )
    callback_allow_private: bool = Field(
        default=False, description="allow callback URLs on loopback and private networks (internal services)"
    )
    callback_timeout: float = Field(default=10.0, gt=0, le=120, description="seconds for one callback request")
    scheduler_interval: Duration = Field(
        default=timedelta(seconds=1), description="how often each replica looks for due escalations and expiries"
    )


class SlackConfig(Strict):
    """The Slack app: its credentials (secret references) and how Slack reaches ackbot."""

    bot_token: SecretRef | None = Field(default=None, description="the xoxb- bot token: posts and updates messages")
    signing_secret: SecretRef | None = Field(
        default=None, description="verifies the requests Slack sends to /slack/events (HTTP mode)"
    )
    app_token: SecretRef | None = Field(
        default=None, description="the xapp- app-level token (connections:write), for Socket Mode"
    )
    command: str = Field(default="/ackbot", pattern=r"^/[a-z0-9_.-]{1,31}$", description="the slash command's name")
    socket_mode: bool = Field(default=False, description="connect out to Slack over a WebSocket instead of HTTP")
    api_base_url: str = Field(
        default="https://slack.com/api/", description="the Slack Web API; tests point it at a local fake"
    )
    unknown_user_tenants: TenantList = Field(
        default_factory=list,
        description='the tenants a Slack user who is not among people sees with list and pending; "*" for every one',
    )

    @field_validator("api_base_url")
    @classmethod
    def _http_base(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError("api_base_url must start with http:// or https://")
        # slack_sdk joins "chat.postMessage" onto the base, so it must end with a slash.
        return url if url.endswith("/") else url + "/"

    @model_validator(mode="after")
    def _complete(self) -> SlackConfig:
        if self.socket_mode and self.app_token is None:
            raise ValueError("socket_mode needs app_token (an xapp- app-level token)")
        if self.bot_token is not None and not self.socket_mode and self.signing_secret is None:
            raise ValueError("HTTP mode needs signing_secret to verify Slack's requests (or use socket_mode)")
        return self

    @property
    def enabled(self) -> bool:
        """Whether the Slack app runs: a bot token is configured."""
        return self.bot_token is not None


class TeamsConfig(Strict):
    """The Microsoft Teams bot: its Azure Bot registration (Entra ID app) and how ackbot reaches Teams."""

    app_id: str = Field(
        default="",
        max_length=100,
        description="the bot's Microsoft App ID; empty turns authentication OFF (local development only)",
    )
    app_password: SecretRef | None = Field(default=None, description="the app's client secret")
    app_tenant_id: str = Field(default="", max_length=100, description="the Entra ID tenant (SingleTenant apps)")
    app_type: Literal["SingleTenant", "MultiTenant"] = "MultiTenant"
    certificate_thumbprint: str = Field(
        default="", max_length=100, description="authenticate with a certificate instead of app_password"
    )
    certificate_private_key: SecretRef | None = Field(default=None, description="the certificate's PEM private key")
    service_url: str = Field(
        default="https://smba.trafficmanager.net/teams/",
        description="where 1:1 chats are created when no stored conversation of the tenant gives a regional URL",
    )
    unknown_user_tenants: TenantList = Field(
        default_factory=list,
        description='the tenants a Teams user who is not among people sees with list and pending; "*" for every one',
    )

    @field_validator("service_url")
    @classmethod
    def _http_service_url(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError("service_url must start with http:// or https://")
        return url if url.endswith("/") else url + "/"

    @model_validator(mode="after")
    def _complete(self) -> TeamsConfig:
        if not self.app_id:
            return self
        if self.app_password is None and not self.certificate_thumbprint:
            raise ValueError("app_id needs app_password, or certificate_thumbprint with certificate_private_key")
        if self.certificate_thumbprint and self.certificate_private_key is None:
            raise ValueError("certificate_thumbprint needs certificate_private_key")
        if self.app_type == "SingleTenant" and not self.app_tenant_id:
            raise ValueError("a SingleTenant app needs app_tenant_id")
        return self

    @property
    def auth_enabled(self) -> bool:
        """Whether inbound requests must carry a valid Bot Framework token (an app id is configured)."""
        return bool(self.app_id)


class SecretsConfig(Strict):
    """The secret references that channels made through the API may name; the config file itself may name any."""

    allow: list[str] = Field(
        default_factory=list,
        description="env:NAME, env:PREFIX* (every variable starting so) or file:/absolute/path",
    )
    directories: list[str] = Field(
        default_factory=list, description="absolute directories: any file inside (symlinks resolved) may be named"
    )

    @field_validator("allow")
    @classmethod
    def _entries(cls, entries: list[str]) -> list[str]:
        return [check_allowed_entry(entry) for entry in entries]

    @field_validator("directories")
    @classmethod
    def _directories(cls, directories: list[str]) -> list[str]:
        return [check_directory(directory) for directory in directories]

    def policy(self) -> SecretPolicy:
        return SecretPolicy(allow=tuple(self.allow), directories=tuple(self.directories))


class AckbotConfig(Strict):
    """The whole configuration file."""

    server: ServerConfig = Field(default_factory=ServerConfig)
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    dispatch: DispatchConfig = Field(default_factory=DispatchConfig)
    noise: NoiseConfig = Field(default_factory=NoiseConfig)
    tokens: TokensConfig = Field(default_factory=TokensConfig)
    approvals: ApprovalsConfig = Field(default_factory=ApprovalsConfig)
    api_keys: list[ApiKeyConfig] = Field(default_factory=list)
    people: list[Person] = Field(default_factory=list)
    groups: list[Group] = Field(default_factory=list)
    channels: list[ChannelConfig] = Field(default_factory=list)
    rules: list[Rule] = Field(default_factory=list)
    slack: SlackConfig = Field(default_factory=SlackConfig, description="the Slack app's settings")
    teams: TeamsConfig = Field(default_factory=TeamsConfig, description="the Teams bot's settings")
    quiet_hours: QuietHoursList = Field(default_factory=list, description="global quiet hours")
    reports: ReportsConfig = Field(default_factory=ReportsConfig, description="the scheduled report")
    secrets: SecretsConfig = Field(
        default_factory=SecretsConfig, description="the secret references objects made through the API may name"
    )

    @model_validator(mode="after")
    def _noise_names_known(self) -> AckbotConfig:
        channel_names = {c.name for c in self.channels}
        principals = {p.name for p in self.people} | {g.name for g in self.groups}
        problems = [
            f"reports.channels: no channel named {name!r}"
            for name in self.reports.channels
            if name not in channel_names
        ]
        problems += [
            f"noise.silence_approvers: no person or group named {name!r}"
            for name in self.noise.silence_approvers
            if name not in principals
        ]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _names_unique_and_known(self) -> AckbotConfig:
        problems: list[str] = []
        for label, items in (
            ("api_keys", self.api_keys),
            ("people", self.people),
            ("groups", self.groups),
            ("channels", self.channels),
            ("rules", self.rules),
        ):
            seen: set[str] = set()
            for item in items:
                if item.name in seen:
                    problems.append(f"{label}: the name {item.name!r} is used twice")
                seen.add(item.name)
        channel_tenants = {c.name: c.tenant for c in self.channels}
        for rule in self.rules:
            for hook in ("actions", "on_acknowledge", "on_deny", "on_escalate", "on_expire"):
                for action in getattr(rule, hook):
                    if action.channel not in channel_tenants:
                        problems.append(f"rule {rule.name!r} {hook}: no channel named {action.channel!r}")
                    elif not channel_serves(channel_tenants[action.channel], rule.tenant):
                        problems.append(
                            f"rule {rule.name!r} {hook}: channel {action.channel!r} belongs to tenant "
                            f"{channel_tenants[action.channel]!r}, not to the rule's tenant {rule.tenant!r}"
                        )
        principals = {p.name for p in self.people} | {g.name for g in self.groups}
        for group in self.groups:
            for member in group.members:
                if member not in principals:
                    problems.append(f"group {group.name!r}: no person or group named {member!r}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def channel(self, name: str) -> ChannelConfig | None:
        return next((c for c in self.channels if c.name == name), None)


@dataclass(frozen=True)
class ConfigProblem:
    """One problem in a config file, located as a user would look for it."""

    path: str
    message: str
    line: int | None = None
    file: str | None = None

    def __str__(self) -> str:
        where = self.file or "config"
        if self.line is not None:
            where = f"{where}:{self.line}"
        return f"{where}: {self.path or '(top level)'}: {self.message}"


class ConfigError(Exception):
    """The configuration cannot be used; carries every problem found, not only the first."""

    def __init__(self, problems: Sequence[ConfigProblem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def default_config_text() -> str:
    """The example configuration that ships inside the package (the embedded default)."""
    return resources.files("core").joinpath(DEFAULT_CONFIG_RESOURCE).read_text(encoding="utf-8")


def _line_index(text: str) -> yaml.Node | None:
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None


def _line_of(root: yaml.Node | None, loc: Iterable[int | str]) -> int | None:
    node = root
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            child = next((v for k, v in node.value if getattr(k, "value", None) == part), None)
            if child is None:
                key = next((k for k, _ in node.value if getattr(k, "value", None) == part), None)
                return key.start_mark.line + 1 if key is not None else line
            node = child
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            break
        line = node.start_mark.line + 1
    return line


def format_loc(loc: Iterable[int | str]) -> str:
    """Render a pydantic error location as a key path: channels[2].settings.url."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def problems_from_validation(
    exc: ValidationError, *, root: yaml.Node | None = None, file: str | None = None, prefix: Sequence[int | str] = ()
) -> list[ConfigProblem]:
    """Turn a pydantic ValidationError into located problems."""
    problems = []
    for error in exc.errors():
        loc = [*prefix, *(p for p in error["loc"] if not (isinstance(p, str) and p.startswith("function-")))]
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        problems.append(ConfigProblem(format_loc(loc), message, _line_of(root, loc), file))
    return problems


class EnvSettings(BaseSettings):
    """Process settings from ACKBOT_* environment variables; they override the file."""

    model_config = SettingsConfigDict(env_prefix="ACKBOT_", extra="ignore")

    config: str | None = None
    database_url: str | None = None
    public_url: str | None = None
    host: str | None = None
    port: int | None = None
    log_level: str = "INFO"
    log_json: bool = False


def _apply_env(data: dict[str, Any], env: EnvSettings) -> dict[str, Any]:
    overrides = {
        ("database", "url"): env.database_url,
        ("server", "public_url"): env.public_url,
        ("server", "host"): env.host,
        ("server", "port"): env.port,
    }
    for (section, key), value in overrides.items():
        if value is None:
            continue
        if not isinstance(data.get(section), dict):
            data[section] = {}
        data[section][key] = value
    return data


def parse_config(text: str, *, file: str | None = None, environ: bool = True) -> AckbotConfig:
    """Parse and validate YAML text; raise ConfigError listing every problem with its key path and line."""
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        raise ConfigError([ConfigProblem("", f"invalid YAML: {exc.problem}", line, file)]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigProblem("", f"invalid YAML: {exc}", None, file)]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([ConfigProblem("", "the file must hold a mapping of settings", 1, file)])
    if environ:
        data = _apply_env(data, EnvSettings())
    root = _line_index(text)
    try:
        return AckbotConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(problems_from_validation(exc, root=root, file=file)) from None


def config_path_from_env(explicit: str | None = None) -> str | None:
    """The config file to use: --config, then ACKBOT_CONFIG, else None for the embedded default."""
    return explicit or EnvSettings().config or None


def load_config(path: str | None = None, *, environ: bool = True) -> tuple[AckbotConfig, str]:
    """Load the config file (or the embedded default); return it with the name of where it came from."""
    resolved = config_path_from_env(path)
    if resolved is None:
        return parse_config(default_config_text(), file="<embedded default>", environ=environ), "<embedded default>"
    try:
        text = Path(resolved).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([ConfigProblem("", f"cannot read: {exc.strerror}", None, resolved)]) from None
    return parse_config(text, file=resolved, environ=environ), resolved

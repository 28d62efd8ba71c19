"""The Teams bot: Bot Framework's CloudAdapter on our aiohttp app, its authentication, and proactive messaging.

Inbound, ``POST /api/messages`` is authenticated here (not in ``CloudAdapter.process``) so that every way a
request can fail authentication is a 401: botbuilder 4.17 lets a malformed bearer token escape as a PyJWT
``DecodeError``, which ``process`` would turn into a 500. The authenticated activity then runs through
``CloudAdapter.process_activity`` and our ``TeamsActivityHandler`` (bot/teams/handler.py).

Outbound, every post and update goes through ``adapter.continue_conversation`` with a stored conversation
reference and the bot's app id, so the SDK obtains the token for the connector as it does for replies; the
connector client of that turn then posts a new top-level activity (``send_to_conversation``) or edits one
(``update_activity``). Connector failures come back as :class:`ConnectorError` with the HTTP status.

botbuilder is untyped: its objects are ``Any`` here and never leave this package.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import requests
from aiohttp import web
from botbuilder.core import TurnContext, serializer_helper
from botbuilder.integration.aiohttp import (
    CloudAdapter,
    ConfigurationBotFrameworkAuthentication,
    ConfigurationServiceClientCredentialFactory,
)
from botbuilder.schema import (
    Activity,
    ChannelAccount,
    ConversationAccount,
    ConversationParameters,
    ConversationReference,
)
from botframework.connector.auth import CertificateServiceClientCredentialsFactory, ServiceClientCredentialsFactory
from msrest.exceptions import ClientRequestError
from msrest.serialization import Model

from bot.handlers.http import BodyTooLarge, read_limited
from bot.teams.handler import AckbotTeamsHandler
from core import conversations, json_input
from core.channels.base import parse_retry_after
from core.config import TeamsConfig
from core.json_input import JsonRefused
from core.runtime import Runtime
from core.secrets import SecretError, resolve_secret
from core.store.conversations import TeamsConversation

log = logging.getLogger("ackbot.teams")

T = TypeVar("T")

MSTEAMS = "msteams"
# Seconds a token check may take (it may fetch Microsoft's signing keys) before the request gets 503.
AUTH_TIMEOUT = 10.0
# Teams prefixes a bot's id with "28:" inside conversations.
BOT_ID_PREFIX = "28:"


# What the SDK's HTTP stack raises when no answer came back (msrest wraps requests' errors in ClientRequestError).
_NETWORK_ERRORS = (ClientRequestError, requests.RequestException, aiohttp.ClientError, TimeoutError, OSError)


class ConnectorError(Exception):
    """The Bot Connector refused or failed a request; status is None when no HTTP answer came back."""

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None, network: bool = False
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        # No answer at all: refused or reset connections, time-outs, DNS (worth another attempt).
        self.network = network


class TeamsAuthError(Exception):
    """Bot Framework credentials in the config cannot be used (an unresolvable secret)."""


@dataclass(frozen=True)
class Posted:
    """Where a proactive post landed: the new activity's id within its conversation."""

    conversation_id: str
    activity_id: str
    service_url: str
    tenant_id: str | None


class _Settings:
    """The attribute bag ConfigurationBotFrameworkAuthentication reads (APP_ID, APP_PASSWORD, APP_TYPE ...)."""

    def __init__(self, config: TeamsConfig, password: str) -> None:
        self.APP_ID = config.app_id
        self.APP_PASSWORD = password
        self.APP_TYPE = config.app_type
        self.APP_TENANTID = config.app_tenant_id


class CachingCredentialsFactory(ServiceClientCredentialsFactory):  # type: ignore[misc]
    """Keeps one credentials object per (app, audience) and fetches its token off the event loop.

    botbuilder 4.17 builds new credentials, with a new MSAL application and so an empty token cache, for every
    connector client, and MSAL's HTTP is synchronous: each proactive post would fetch a token from Entra ID inside
    the event loop. Reusing the object makes MSAL's cache work (a token lasts about an hour), and asking for the
    token on a worker thread first means the SDK's own call in the loop is a cache hit.
    """

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._credentials: dict[tuple[Any, ...], Any] = {}

    async def is_valid_app_id(self, app_id: str) -> bool:
        return bool(await self._inner.is_valid_app_id(app_id))

    async def is_authentication_disabled(self) -> bool:
        return bool(await self._inner.is_authentication_disabled())

    async def create_credentials(
        self, app_id: str, oauth_scope: str, login_endpoint: str, validate_authority: bool
    ) -> Any:
        key = (app_id, oauth_scope, login_endpoint, validate_authority)
        credentials = self._credentials.get(key)
        if credentials is None:
            credentials = await self._inner.create_credentials(app_id, oauth_scope, login_endpoint, validate_authority)
            self._credentials[key] = credentials
        if app_id and callable(getattr(credentials, "get_access_token", None)):
            await asyncio.to_thread(credentials.get_access_token)
        return credentials


def build_authentication(config: TeamsConfig) -> Any:
    """The SDK's BotFrameworkAuthentication for our config; secrets are resolved here, once, at start-up."""
    try:
        password = resolve_secret(config.app_password) if config.app_password else ""
        private_key = resolve_secret(config.certificate_private_key) if config.certificate_private_key else ""
    except SecretError as exc:
        raise TeamsAuthError(f"teams: {exc}") from None
    settings = _Settings(config, password)
    inner: Any
    if config.app_id and config.certificate_thumbprint:
        inner = CertificateServiceClientCredentialsFactory(
            config.certificate_thumbprint,
            private_key,
            config.app_id,
            config.app_tenant_id or None,
        )
    else:
        inner = ConfigurationServiceClientCredentialFactory(settings)
    return ConfigurationBotFrameworkAuthentication(settings, credentials_factory=CachingCredentialsFactory(inner))


def _is_loopback(remote: str | None) -> bool:
    if not remote:
        return False
    try:
        return ipaddress.ip_address(remote.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _json_error(status: int, message: str, *, field: str | None = None) -> web.Response:
    error: dict[str, Any] = {"status": status, "message": message}
    if field is not None:
        error["fields"] = [{"field": field, "message": message}]
    response = web.json_response({"error": error}, status=status)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="ackbot-teams"'
    return response


class TeamsBot:
    """One per process: the adapter, the activity handler, and the proactive side the Teams channel uses."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.config: TeamsConfig = runtime.config.teams
        # Built on first use: a secret that cannot be resolved fails Teams alone, not the whole process.
        self._authentication: Any = None
        self._adapter: Any = None
        self.handler = AckbotTeamsHandler(runtime)

    @property
    def authentication(self) -> Any:
        """The SDK's BotFrameworkAuthentication; TeamsAuthError if the configured secrets cannot be read."""
        if self._authentication is None:
            self._authentication = build_authentication(self.config)
        return self._authentication

    @property
    def adapter(self) -> Any:
        """The CloudAdapter that runs inbound turns and proactive ones."""
        if self._adapter is None:
            adapter = CloudAdapter(self.authentication)
            adapter.on_turn_error = self._on_turn_error
            self._adapter = adapter
        return self._adapter

    @property
    def app_id(self) -> str:
        return self.config.app_id

    @property
    def auth_enabled(self) -> bool:
        return self.config.auth_enabled

    def log_startup(self) -> None:
        """Say at start-up how the bot authenticates; loudly when it does not."""
        try:
            _ = self.adapter
        except TeamsAuthError as exc:
            log.error("Teams bot cannot start: %s; /api/messages answers 503 and Teams deliveries fail", exc)
            return
        if self.auth_enabled:
            how = "certificate" if self.config.certificate_thumbprint else "client secret"
            log.info(
                "Teams bot: app id %s (%s, %s); POST /api/messages requires Bot Framework tokens",
                self.app_id,
                self.config.app_type,
                how,
            )
            return
        log.warning(
            "Teams bot: NO app id is configured (teams.app_id), so Bot Framework AUTHENTICATION IS OFF: "
            "POST /api/messages accepts unsigned activities, and only from loopback addresses. "
            "This is for local development only; set teams.app_id and teams.app_password in production."
        )

    # ---------------------------------------------------------------- inbound

    async def process(self, request: web.Request) -> web.Response:
        """Authenticate and run one activity posted to /api/messages; 401 for any authentication failure."""
        auth_header = request.headers.get("Authorization", "")
        if self.auth_enabled and not auth_header.strip():
            return _json_error(401, "Bot Framework authentication required: no Authorization header")
        if not self.auth_enabled and not _is_loopback(request.remote):
            # With no app id nothing proves who sent the activity; a forged click could decide an approval.
            return _json_error(403, "Teams authentication is off (no teams.app_id): only loopback requests are served")
        if "application/json" not in request.headers.get("Content-Type", ""):
            return _json_error(415, "Bot Framework activities are JSON (Content-Type: application/json)")
        limit = self.runtime.config.server.max_body_bytes
        try:
            raw = await read_limited(request, limit)
        except BodyTooLarge:
            return _json_error(413, f"activity larger than {limit} bytes")
        try:
            body = json_input.loads(raw)
        except JsonRefused as exc:
            return _json_error(400, f"not a Bot Framework activity: {exc.message}", field=exc.field)
        try:
            if not isinstance(body, dict):
                raise ValueError("an activity is a JSON object")
            activity: Any = Activity().deserialize(body)
        except Exception as exc:
            return _json_error(400, f"not a Bot Framework activity: {exc}")
        if not activity.type:
            return _json_error(400, "not a Bot Framework activity: no type")

        try:
            authentication = self.authentication
            adapter = self.adapter
        except TeamsAuthError as exc:
            log.error("Teams: %s", exc)
            return _json_error(503, "the Teams bot is not configured correctly; see ackbot's log")
        try:
            authenticated = await self._authenticate(authentication, activity, auth_header)
        except PermissionError as exc:
            return _json_error(401, f"unauthorized: {exc}")
        except (requests.RequestException, aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
            # Fetching Microsoft's signing keys failed: we cannot tell a good token from a bad one right now.
            log.error("Teams: cannot verify a Bot Framework token: %s: %s", type(exc).__name__, exc)
            return _json_error(503, "cannot verify the Bot Framework token right now; try again")
        except Exception as exc:
            # Malformed tokens surface as PyJWT DecodeError, ValueError, IndexError ...: all mean unauthorized.
            return _json_error(401, f"unauthorized: malformed Bot Framework token ({type(exc).__name__})")

        invoke_response: Any = await adapter.process_activity(authenticated, activity, self.handler.on_turn)
        if invoke_response is None:
            return web.Response(status=201)
        body_out = invoke_response.body
        if isinstance(body_out, Model):
            body_out = serializer_helper(body_out)
        status = int(invoke_response.status or 200)
        if body_out is None:
            return web.Response(status=status)
        return web.json_response(body_out, status=status)

    async def _authenticate(self, authentication: Any, activity: Any, auth_header: str) -> Any:
        """The SDK's token check; with a token, on a worker thread with its own event loop.

        Validating a token can fetch Microsoft's signing keys (daily, and when a token names an unknown key) with
        blocking `requests` calls that have no time-out: on this loop they would stall every request, delivery
        and Slack socket of the process. The thread is given AUTH_TIMEOUT seconds.
        """
        if not auth_header:
            return await authentication.authenticate_request(activity, auth_header)
        check = authentication.authenticate_request(activity, auth_header)
        return await asyncio.wait_for(asyncio.to_thread(asyncio.run, check), AUTH_TIMEOUT)

    async def _on_turn_error(self, turn_context: Any, error: Exception) -> None:
        """A handler failed: log it, and tell the person if we can (the request itself still succeeds)."""
        activity = turn_context.activity
        log.error(
            "Teams: handling a %s activity failed: %s: %s",
            getattr(activity, "type", "?"),
            type(error).__name__,
            error,
            exc_info=error,
        )
        if getattr(activity, "type", None) == "message":
            try:
                await turn_context.send_activity("Sorry, ackbot could not handle that. The error is in its log.")
            except Exception:
                log.debug("Teams: could not report the error to the conversation", exc_info=True)

    # ---------------------------------------------------------------- outbound

    def bot_account(self, reference: dict[str, Any] | None = None) -> dict[str, Any]:
        """The bot as a conversation member: from a stored reference, else 28:<app id>."""
        bot = (reference or {}).get("bot")
        if isinstance(bot, dict) and bot.get("id"):
            return bot
        return {"id": f"{BOT_ID_PREFIX}{self.app_id}" if self.app_id else f"{BOT_ID_PREFIX}ackbot", "name": "ackbot"}

    def conversation_reference(
        self,
        *,
        conversation_id: str,
        service_url: str,
        tenant_id: str | None = None,
        stored: dict[str, Any] | None = None,
    ) -> Any:
        """A ConversationReference for a proactive turn (never replying to an earlier activity)."""
        base = dict(stored or {})
        base.pop("activityId", None)
        reference: Any = ConversationReference().deserialize(base) if base else ConversationReference()
        conversation = dict((stored or {}).get("conversation") or {})
        conversation["id"] = conversation_id
        reference.conversation = ConversationAccount().deserialize(conversation)
        # The SDK's JSON key is "tenantID" while Teams writes "tenantId": set the attribute, not the key.
        if tenant_id and not reference.conversation.tenant_id:
            reference.conversation.tenant_id = tenant_id
        reference.service_url = service_url
        reference.channel_id = reference.channel_id or MSTEAMS
        reference.bot = ChannelAccount().deserialize(self.bot_account(stored))
        reference.activity_id = None
        return reference

    async def _with_connector(self, reference: Any, work: Callable[[Any, Any], Awaitable[T]]) -> T:
        """Run work(connector, turn_context) in a proactive turn for a conversation; errors become ConnectorError."""
        outcome: list[T] = []
        failure: list[Exception] = []

        async def logic(turn_context: Any) -> None:
            # Caught here: the adapter's pipeline would hand an exception to on_turn_error and swallow it.
            try:
                connector = turn_context.turn_state[self.adapter.BOT_CONNECTOR_CLIENT_KEY]
                outcome.append(await work(connector, turn_context))
            except asyncio.CancelledError:
                # A stopping worker must stop: swallowing its cancellation leaves shutdown waiting forever.
                raise
            except Exception as exc:
                failure.append(exc)

        try:
            await self.adapter.continue_conversation(reference, logic, self.app_id)
        except Exception as exc:
            failure.append(exc)
        if failure:
            raise connector_error(failure[0]) from None
        return outcome[0]

    async def post(self, reference: Any, activity: dict[str, Any]) -> Posted:
        """Post a new top-level activity to the reference's conversation."""
        conversation_id = reference.conversation.id

        async def send(connector: Any, _turn: Any) -> Any:
            outgoing: Any = Activity().deserialize(activity)
            outgoing.conversation = reference.conversation
            outgoing.from_property = reference.bot
            outgoing.channel_id = reference.channel_id
            outgoing.service_url = reference.service_url
            return await connector.conversations.send_to_conversation(conversation_id, outgoing)

        response = await self._with_connector(reference, send)
        activity_id = getattr(response, "id", None)
        if not activity_id:
            raise ConnectorError("the connector accepted the message but returned no activity id", status=None)
        return Posted(conversation_id, str(activity_id), reference.service_url, reference.conversation.tenant_id)

    async def update(self, reference: Any, activity_id: str, activity: dict[str, Any]) -> None:
        """Replace an activity the bot posted earlier (update_activity)."""
        conversation_id = reference.conversation.id

        async def edit(connector: Any, _turn: Any) -> Any:
            outgoing: Any = Activity().deserialize(activity)
            outgoing.id = activity_id
            outgoing.conversation = reference.conversation
            outgoing.from_property = reference.bot
            outgoing.channel_id = reference.channel_id
            outgoing.service_url = reference.service_url
            return await connector.conversations.update_activity(conversation_id, activity_id, outgoing)

        await self._with_connector(reference, edit)

    async def personal_conversation(self, user_aad_id: str, *, name: str | None = None) -> TeamsConversation:
        """The bot's 1:1 chat with a person: the stored one, else created through the connector and stored."""
        # Teams' connector is regional: without a chat, the service URL the tenant's own activities came from, and
        # the bot account they addressed, are those of the tenant's latest conversation (seen).
        found, seen = await conversations.personal_chat(
            db=self.runtime.db, user_aad_id=user_aad_id, tenant_id=self.config.app_tenant_id or None
        )
        if found is not None:
            return found
        service_url = seen.service_url if seen is not None else self.config.service_url
        tenant_id = self.config.app_tenant_id or (seen.tenant_id if seen is not None else None)
        reference = await self.create_personal_chat(
            user_aad_id=user_aad_id,
            tenant_id=tenant_id,
            service_url=service_url,
            bot=self.bot_account(seen.reference if seen is not None else None),
        )
        conversation_id = str((reference.get("conversation") or {}).get("id") or "")
        if not conversation_id:
            raise ConnectorError("creating the 1:1 chat returned no conversation id")
        if name is None:
            person = next((p for p in self.runtime.config.people if p.identities.teams == user_aad_id), None)
            name = f"user:{person.name if person is not None else user_aad_id}"
        return await conversations.remember_and_get(
            db=self.runtime.db,
            conversation_id=conversation_id,
            name=name,
            kind="personal",
            service_url=str(reference.get("serviceUrl") or service_url),
            reference=reference,
            now=self.runtime.clock.now(),
            tenant_id=tenant_id,
            user_aad_id=user_aad_id,
        )

    async def create_personal_chat(
        self, *, user_aad_id: str, tenant_id: str | None, service_url: str, bot: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Open (or reopen) the bot's 1:1 chat with a person; returns its conversation reference as JSON.

        Teams only allows this when the app is installed for the person (personal scope, or for the organisation).
        """
        created: list[Any] = []

        async def capture(turn_context: Any) -> None:
            created.append(TurnContext.get_conversation_reference(turn_context.activity))

        parameters = ConversationParameters(
            is_group=False,
            bot=ChannelAccount().deserialize(bot or self.bot_account()),
            members=[ChannelAccount(id=user_aad_id)],
            tenant_id=tenant_id,
            channel_data={"tenant": {"id": tenant_id}} if tenant_id else None,
        )
        try:
            await self.adapter.create_conversation(
                self.app_id, capture, parameters, channel_id=MSTEAMS, service_url=service_url
            )
        except Exception as exc:
            raise connector_error(exc) from None
        if not created:
            raise ConnectorError("creating the 1:1 chat returned no conversation")
        reference: dict[str, Any] = created[0].serialize()
        reference.pop("activityId", None)
        reference.pop("user", None)
        return reference


def connector_error(exc: BaseException) -> ConnectorError:
    """A ConnectorError from whatever the SDK raised: msrest's HttpOperationError carries the HTTP response."""
    if isinstance(exc, ConnectorError):
        return exc
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    if isinstance(status, int):
        headers = getattr(response, "headers", None) or {}
        retry_after = parse_retry_after(headers.get("Retry-After")) if hasattr(headers, "get") else None
        detail = _error_detail(exc, response)
        return ConnectorError(
            f"the Bot Connector answered HTTP {status}{detail}", status=status, retry_after=retry_after
        )
    network = isinstance(exc, _NETWORK_ERRORS) and not isinstance(exc, PermissionError)
    return ConnectorError(f"{type(exc).__name__}: {exc}"[:500], status=None, network=network)


def _error_detail(exc: BaseException, response: Any) -> str:
    error = getattr(exc, "error", None)
    inner = getattr(error, "error", None)
    code, message = getattr(inner, "code", None), getattr(inner, "message", None)
    if code or message:
        return f": {code or ''} {message or ''}".rstrip()[:300]
    text = getattr(response, "text", "")
    text = text() if callable(text) else text
    return f": {' '.join(str(text).split())[:300]}" if text else ""

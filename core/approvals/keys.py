"""The secrets approvals need, from the config file or generated once and kept in the database.

* Ack-token keys: `tokens.keys` in the config when given; otherwise keys of the configured mode stored in the
  `signing_keys` table (the first generated on first start, more by `ackbot keys rotate`), so tokens survive
  restarts and every replica verifies what another issued.
* The callback secret (signs approval callbacks): `approvals.callback_secret`, else generated and stored.
* The CSRF secret of the web ack page: generated and stored.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from datetime import datetime, timedelta

from core.config import AckbotConfig
from core.secrets import resolve_secret
from core.store import signing_keys as key_store
from core.store.db import Database
from core.store.signing_keys import StoredKey
from core.tokens import (
    KeyEntry,
    TokenClaims,
    TokenCodec,
    TokenError,
    TokenErrorReason,
    build_codec,
    codec_from_config,
    generate_ed25519_pem,
    generate_hmac_secret,
)

log = logging.getLogger("ackbot.keys")

CALLBACK_PURPOSE = "callback"
CSRF_PURPOSE = "csrf"
TOKEN_PURPOSES = ("hmac", "dsse")
# A forged token naming an unknown kid must not make every request read the database.
_RELOAD_INTERVAL = 5.0


class KeyOperationError(Exception):
    """A key operation that cannot be done (retiring the last key, rotating keys the config file owns)."""


def new_kid(purpose: str, now: datetime) -> str:
    """A readable, unique key id: purpose, date, random suffix."""
    return f"{purpose}-{now:%Y%m%d}-{secrets.token_hex(4)}"


def _generate(purpose: str) -> str:
    return generate_ed25519_pem() if purpose == "dsse" else generate_hmac_secret()


class KeyManager:
    """Holds the token codec and the approval secrets; reloads stored keys that another replica added."""

    def __init__(self, *, db: Database, config: AckbotConfig) -> None:
        self.db = db
        self.config = config
        self._codec: TokenCodec | None = None
        self._callback_secret: str | None = None
        self._csrf_secret: bytes | None = None
        self._last_reload = 0.0

    @property
    def from_config(self) -> bool:
        """Whether the token keys come from the config file (then the database's are not used)."""
        return bool(self.config.tokens.keys)

    @property
    def mode(self) -> str:
        """The token mode, hmac or dsse."""
        return self.config.tokens.mode

    async def load(self, *, now: datetime) -> None:
        """Build the codec and load the secrets, generating what is missing (exactly once across replicas)."""
        if self.from_config:
            self._codec = codec_from_config(self.config.tokens)
        else:
            await self._load_stored(now=now)
        if self.config.approvals.callback_secret is not None:
            self._callback_secret = resolve_secret(self.config.approvals.callback_secret)
        else:
            self._callback_secret = await self._singleton(CALLBACK_PURPOSE, now)
        self._csrf_secret = (await self._singleton(CSRF_PURPOSE, now)).encode("utf-8")

    async def _singleton(self, purpose: str, now: datetime) -> str:
        keys = await key_store.ensure(
            db=self.db, purpose=purpose, new_kid=lambda: new_kid(purpose, now), generate=generate_hmac_secret, now=now
        )
        return [k for k in keys if not k.retired][-1].material

    async def _load_stored(self, *, now: datetime) -> None:
        keys = await key_store.ensure(
            db=self.db,
            purpose=self.mode,
            new_kid=lambda: new_kid(self.mode, now),
            generate=lambda: _generate(self.mode),
            now=now,
        )
        self._codec = build_codec(
            self.mode, [KeyEntry(k.kid, k.material, k.retired) for k in keys], self.config.tokens.ttl
        )
        self._last_reload = time.monotonic()

    async def refresh(self) -> None:
        """Pick up keys rotated or retired by `ackbot keys` or another replica."""
        if self.from_config:
            return
        async with self.db.read() as session:
            keys = await key_store.list_keys(session=session, purpose=self.mode)
        if any(not k.retired for k in keys):
            entries = [KeyEntry(k.kid, k.material, k.retired) for k in keys]
            self._codec = build_codec(self.mode, entries, self.config.tokens.ttl)
        self._last_reload = time.monotonic()

    @property
    def codec(self) -> TokenCodec:
        """The codec that issues and verifies tokens with the current keys."""
        if self._codec is None:
            raise RuntimeError("keys are not loaded: call load() first (Runtime.start does)")
        return self._codec

    async def verify(
        self,
        token: str,
        *,
        now: int,
        expected_tenant: str | None = None,
        expected_choice: str | None = None,
    ) -> TokenClaims:
        """Verify a token; a kid we do not know yet makes us reload the stored keys once (rate-limited)."""
        try:
            return self.codec.verify(token, expected_tenant=expected_tenant, expected_choice=expected_choice, now=now)
        except TokenError as exc:
            if exc.reason is not TokenErrorReason.unknown_key or self.from_config:
                raise
            if time.monotonic() - self._last_reload < _RELOAD_INTERVAL:
                raise
        await self.refresh()
        return self.codec.verify(token, expected_tenant=expected_tenant, expected_choice=expected_choice, now=now)

    def authenticated_claims(self, token: str) -> TokenClaims | None:
        """The claims of a token whose signature is good, ignoring time, tenant and choice; None otherwise.

        Only for the audit log of a refused click: it says which approval a stale or misdirected token was for.
        """
        try:
            return self.codec._verify_signature(token)
        except TokenError:
            return None

    @property
    def callback_secret(self) -> str:
        """The secret approval callbacks are signed with."""
        if self._callback_secret is None:
            raise RuntimeError("keys are not loaded")
        return self._callback_secret

    def csrf_for(self, token: str) -> str:
        """The web ack page's CSRF value for one ack token: an HMAC of the token under the server's secret."""
        if self._csrf_secret is None:
            raise RuntimeError("keys are not loaded")
        return hmac.new(self._csrf_secret, b"ackbot.csrf.v1|" + token.encode("utf-8"), hashlib.sha256).hexdigest()

    def check_csrf(self, token: str, value: str | None) -> bool:
        """Whether a submitted CSRF value belongs to this token (constant-time comparison)."""
        if not value:
            return False
        return hmac.compare_digest(self.csrf_for(token).encode("ascii"), value.encode("utf-8", "replace"))


# ---------------------------------------------------------------- operator commands (ackbot keys ...)


async def list_stored(*, db: Database) -> list[StoredKey]:
    """Every stored key of every purpose, oldest first (material is never printed by callers)."""
    async with db.read() as session:
        return await key_store.list_keys(session=session)


async def rotate(*, db: Database, config: AckbotConfig, now: datetime) -> StoredKey:
    """Add a new token key of the configured mode: it signs from now on, the older ones still verify."""
    if config.tokens.keys:
        raise KeyOperationError("the token keys come from the config file (tokens.keys): add the new key there")
    mode = config.tokens.mode
    async with db.transaction() as session:
        await key_store.lock_keys(session=session, db=db)
        existing = await key_store.list_keys(session=session, purpose=mode)
        # The ring orders keys by creation time and the newest signs: the new key must sort last.
        if existing and existing[-1].created_at >= now:
            now = existing[-1].created_at + timedelta(milliseconds=1)
        return await key_store.add(
            session=session, kid=new_kid(mode, now), purpose=mode, material=_generate(mode), now=now
        )


async def retire(*, db: Database, config: AckbotConfig, kid: str, now: datetime) -> StoredKey:
    """Retire a stored token key: tokens it signed are refused from then on; the last active key cannot go."""
    if config.tokens.keys:
        raise KeyOperationError("the token keys come from the config file (tokens.keys): set retired: true there")
    async with db.transaction() as session:
        await key_store.lock_keys(session=session, db=db)
        keys = {k.kid: k for k in await key_store.list_keys(session=session)}
        key = keys.get(kid)
        if key is None or key.purpose not in TOKEN_PURPOSES:
            raise KeyOperationError(f"no token key {kid!r} (see `ackbot keys list`)")
        if key.retired:
            raise KeyOperationError(f"the key {kid!r} is retired already")
        active = [k for k in keys.values() if k.purpose == key.purpose and not k.retired]
        if len(active) <= 1:
            raise KeyOperationError(f"{kid!r} is the only active {key.purpose} key: `ackbot keys rotate` first")
        await key_store.retire(session=session, kid=kid, now=now)
    return StoredKey(key.kid, key.purpose, key.material, key.created_at, now)


async def callback_secret(*, db: Database, config: AckbotConfig, now: datetime) -> str:
    """The secret approval callbacks are signed with: the config's, else the stored one (made now if missing)."""
    keys = KeyManager(db=db, config=config)
    await keys.load(now=now)
    return keys.callback_secret

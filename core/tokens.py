"""Ack tokens: the signed, expiring values behind Acknowledge / Deny / Escalate buttons and ack links.

Two interchangeable codecs sit behind `TokenCodec`:

* `HmacCodec` (mode "hmac"): itsdangerous `URLSafeSerializer`, HMAC-SHA256, our own salt. Only ackbot can
  verify. Small and fast; the default.
* `DsseCodec` (mode "dsse"): a DSSE envelope signed with Ed25519, compact-JSON encoded and base64url'd.
  Anyone holding the published public keys can verify, and securesystemslib's `dsse.Envelope` accepts it.

Both embed the signing key's id (`kid`) in the claims so that rotation is explicit: the newest non-retired key
signs, every non-retired key verifies, and a token signed by a retired key is refused as `retired_key` rather
than as a generic bad signature (so the page can say "this link was revoked" instead of "forged").

This module is pure: no database, no HTTP, no clock except `time.time()` when the caller passes no `now`.
Single use of a nonce is enforced by the store; `verify` returns the claims so the caller can record
`nonce` and `exp`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import secrets
import time
import zlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from itsdangerous import BadData, BadSignature, URLSafeSerializer
from itsdangerous.encoding import base64_decode
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, model_validator

from core.secrets import resolve_secret

if TYPE_CHECKING:
    # Type-only: building a codec from bare entries must not pull in the settings machinery.
    from core.config import TokensConfig

__all__ = [
    "CLOCK_SKEW_SECONDS",
    "DSSE_PAYLOAD_TYPE",
    "HMAC_SALT",
    "MAX_TOKEN_CHARS",
    "DsseCodec",
    "HmacCodec",
    "KeyEntry",
    "KeyRing",
    "TokenClaims",
    "TokenCodec",
    "TokenError",
    "TokenErrorReason",
    "TokenTooLarge",
    "build_codec",
    "codec_from_config",
    "ed25519_keyid",
    "generate_ed25519_pem",
    "generate_hmac_secret",
    "new_nonce",
    "pae",
]

# A Slack button value holds at most 2000 characters; tokens also travel in URLs, where that is comfortable.
MAX_TOKEN_CHARS = 2000
HMAC_SALT = "ackbot.ack-token.v1"
DSSE_PAYLOAD_TYPE = "application/vnd.ackbot.ack-token+json"
# Replicas' clocks drift a little; a token "issued" slightly in the future is still ours.
CLOCK_SKEW_SECONDS = 60
# Below this an HMAC key is guessable offline from a single token.
MIN_HMAC_SECRET_BYTES = 16
# Bounds the work a hostile envelope can ask of us (each signature is an Ed25519 verification).
_MAX_DSSE_SIGNATURES = 4

_HMAC_TOKEN_RE = re.compile(r"[A-Za-z0-9_.-]+")
_B64URL_RE = re.compile(r"[A-Za-z0-9_-]+")
_B64_ANY_RE = re.compile(r"[A-Za-z0-9+/_-]*={0,2}")
_NONCE_RE = r"^[A-Za-z0-9_-]{22,64}$"


# ---------------------------------------------------------------- errors


class TokenErrorReason(StrEnum):
    """Why a token was refused; stable strings, safe to show, log and count in metrics."""

    bad_signature = "bad_signature"
    malformed = "malformed"
    unknown_key = "unknown_key"
    retired_key = "retired_key"
    expired = "expired"
    wrong_tenant = "wrong_tenant"
    wrong_choice = "wrong_choice"
    not_yet_valid = "not_yet_valid"


_REASON_TEXT = {
    TokenErrorReason.bad_signature: "the signature does not match",
    TokenErrorReason.malformed: "not a well-formed ack token",
    TokenErrorReason.unknown_key: "signed with a key ackbot does not know",
    TokenErrorReason.retired_key: "signed with a key that has been retired",
    TokenErrorReason.expired: "the token has expired",
    TokenErrorReason.wrong_tenant: "the token belongs to another tenant",
    TokenErrorReason.wrong_choice: "the token was issued for another choice",
    TokenErrorReason.not_yet_valid: "the token is not valid yet",
}


class TokenError(Exception):
    """A token was refused. The message never contains key material nor the token itself."""

    def __init__(self, reason: TokenErrorReason) -> None:
        self.reason = reason
        super().__init__(f"ack token refused ({reason.value}): {_REASON_TEXT[reason]}")


class TokenTooLarge(ValueError):
    """Raised at issue time when the claims would not fit in MAX_TOKEN_CHARS."""


# ---------------------------------------------------------------- claims


def new_nonce() -> str:
    """128 random bits, url-safe base64 without padding (22 characters)."""
    return secrets.token_urlsafe(16)


def nonce_digest(nonce: str) -> str:
    """What the audit log keeps of a nonce: enough to correlate two rows, useless to replay a token."""
    return hashlib.sha256(nonce.encode("utf-8")).hexdigest()[:16]


class TokenClaims(BaseModel):
    """What a token says. Serialized with one- or two-letter keys so a token fits in a Slack button value."""

    # extra="ignore": during a rolling upgrade an older replica must still accept tokens carrying newer claims.
    model_config = ConfigDict(frozen=True, populate_by_name=True, serialize_by_alias=True, extra="ignore")

    tenant: str = Field(alias="t", min_length=1, max_length=100)
    approval_id: str = Field(alias="a", min_length=1, max_length=128)
    delivery_id: str | None = Field(default=None, alias="d", min_length=1, max_length=128)
    channel: str = Field(alias="ch", min_length=1, max_length=100)
    choice: str = Field(alias="c", min_length=1, max_length=32)
    subject: str | None = Field(default=None, alias="s", min_length=1, max_length=254)
    nonce: str = Field(alias="n", pattern=_NONCE_RE)
    iat: StrictInt = Field(ge=0)
    exp: StrictInt = Field(ge=0)
    kid: str = Field(alias="k", min_length=1, max_length=64)

    @model_validator(mode="after")
    def _exp_after_iat(self) -> TokenClaims:
        if self.exp <= self.iat:
            raise ValueError("exp must be after iat")
        return self

    @property
    def issued_at(self) -> datetime:
        """iat as an aware UTC datetime."""
        return datetime.fromtimestamp(self.iat, UTC)

    @property
    def expires_at(self) -> datetime:
        """exp as an aware UTC datetime (record it beside the spent nonce so the row can be purged later)."""
        return datetime.fromtimestamp(self.exp, UTC)

    def wire(self) -> dict[str, Any]:
        """The compact dict that is signed: short keys, absent optionals left out."""
        return self.model_dump(by_alias=True, exclude_none=True)


# ---------------------------------------------------------------- keys


@dataclass(frozen=True)
class KeyEntry:
    """One configured key: HMAC secret or PEM Ed25519 private key, by id. The secret never appears in repr."""

    kid: str
    secret: str | bytes = field(repr=False)
    retired: bool = False


class KeyRing:
    """The configured keys in order, newest last: the newest non-retired key signs, all non-retired verify."""

    def __init__(self, entries: Iterable[KeyEntry | tuple[str, str | bytes, bool]]) -> None:
        self.entries: tuple[KeyEntry, ...] = tuple(e if isinstance(e, KeyEntry) else KeyEntry(*e) for e in entries)
        seen: set[str] = set()
        for entry in self.entries:
            if not entry.kid or len(entry.kid) > 64:
                raise ValueError("every token key needs an id of 1 to 64 characters")
            if entry.kid in seen:
                raise ValueError(f"token key id {entry.kid!r} is used twice")
            if not entry.secret:
                raise ValueError(f"token key {entry.kid!r} has an empty secret")
            seen.add(entry.kid)
        active = [e for e in self.entries if not e.retired]
        if not active:
            raise ValueError("no usable token key: configure at least one key that is not retired")
        self.signing: KeyEntry = active[-1]

    def __repr__(self) -> str:
        kids = ", ".join(f"{e.kid}{' (retired)' if e.retired else ''}" for e in self.entries)
        return f"KeyRing([{kids}], signing={self.signing.kid})"


def generate_hmac_secret() -> str:
    """A fresh 256-bit HMAC key, url-safe text, suitable for an env var or a secret file."""
    return secrets.token_urlsafe(32)


def generate_ed25519_pem() -> str:
    """A fresh Ed25519 private key as unencrypted PKCS8 PEM text."""
    key = Ed25519PrivateKey.generate()
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")


def ed25519_keyid(public_key: Ed25519PublicKey) -> str:
    """The stable id of a public key: the first 16 hex characters of SHA-256 over its 32 raw bytes."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def pae(payload_type: str, body: bytes) -> bytes:
    """DSSE pre-authentication encoding: "DSSEv1" SP len(type) SP type SP len(body) SP body."""
    type_bytes = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(type_bytes), type_bytes, len(body), body)


def _as_bytes(secret: str | bytes) -> bytes:
    return secret.encode("utf-8") if isinstance(secret, str) else secret


def _load_ed25519_private(kid: str, secret: str | bytes) -> Ed25519PrivateKey:
    data = _as_bytes(secret).strip()
    # PEMs pasted into one-line env vars often arrive with literal "\n" sequences instead of newlines.
    if b"\n" not in data and b"\\n" in data:
        data = data.replace(b"\\n", b"\n")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # "from None": never chain a parser error that might quote the key material.
        raise ValueError(f"token key {kid!r} is not an unencrypted PEM Ed25519 private key (PKCS8)") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"token key {kid!r} is not an Ed25519 key (dsse mode signs with Ed25519)")
    return key


def _b64decode_any(text: str) -> bytes:
    """Decode standard or url-safe base64, padded or not (DSSE allows either alphabet)."""
    if not _B64_ANY_RE.fullmatch(text):
        raise ValueError("not base64")
    text = text.rstrip("=").replace("-", "+").replace("_", "/")
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _b64url_nopad(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _as_seconds(ttl: timedelta | int) -> int:
    seconds = int(ttl.total_seconds()) if isinstance(ttl, timedelta) else int(ttl)
    if seconds <= 0:
        raise ValueError("a token ttl must be positive")
    return seconds


# ---------------------------------------------------------------- codecs


class TokenCodec(ABC):
    """Issues and verifies ack tokens; one implementation per mode, chosen by configuration."""

    mode: ClassVar[Literal["hmac", "dsse"]]

    def __init__(self, ring: KeyRing, ttl: timedelta | int = timedelta(hours=24)) -> None:
        self.ring = ring
        self.ttl = _as_seconds(ttl)

    @property
    @abstractmethod
    def signing_kid(self) -> str:
        """The kid that new tokens carry."""

    def issue(
        self,
        *,
        tenant: str,
        approval_id: str,
        channel: str,
        choice: str,
        delivery_id: str | None = None,
        subject: str | None = None,
        ttl: timedelta | int | None = None,
        now: int | None = None,
    ) -> str:
        """Issue a token with a fresh nonce, iat=now and exp=now+ttl, signed by the newest active key."""
        iat = int(time.time()) if now is None else now
        claims = TokenClaims(
            tenant=tenant,
            approval_id=approval_id,
            delivery_id=delivery_id,
            channel=channel,
            choice=str(choice),
            subject=subject,
            nonce=new_nonce(),
            iat=iat,
            exp=iat + (self.ttl if ttl is None else _as_seconds(ttl)),
            kid=self.signing_kid,
        )
        return self.sign(claims)

    def sign(self, claims: TokenClaims) -> str:
        """Sign prepared claims (their kid is replaced by the signing key's); raise TokenTooLarge if over 2000."""
        if claims.kid != self.signing_kid:
            claims = claims.model_copy(update={"kid": self.signing_kid})
        token = self._sign(claims)
        if len(token) > MAX_TOKEN_CHARS:
            raise TokenTooLarge(f"the ack token would be {len(token)} characters; at most {MAX_TOKEN_CHARS} fit")
        return token

    def verify(
        self,
        token: str,
        *,
        expected_tenant: str | None = None,
        expected_choice: str | None = None,
        now: int | None = None,
    ) -> TokenClaims:
        """Check signature, key, time window, tenant and choice; return the claims or raise TokenError."""
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
            raise TokenError(TokenErrorReason.malformed)
        claims = self._verify_signature(token)
        now = int(time.time()) if now is None else now
        if claims.iat > now + CLOCK_SKEW_SECONDS:
            raise TokenError(TokenErrorReason.not_yet_valid)
        if now >= claims.exp:
            raise TokenError(TokenErrorReason.expired)
        if expected_tenant is not None and claims.tenant != expected_tenant:
            raise TokenError(TokenErrorReason.wrong_tenant)
        if expected_choice is not None and claims.choice != str(expected_choice):
            raise TokenError(TokenErrorReason.wrong_choice)
        return claims

    def public_keys(self) -> list[dict[str, str]]:
        """Keys to publish at GET /api/v1/ack-tokens/keys; none for a symmetric mode."""
        return []

    @abstractmethod
    def _sign(self, claims: TokenClaims) -> str: ...

    @abstractmethod
    def _verify_signature(self, token: str) -> TokenClaims:
        """Authenticate the token and parse its claims; no time, tenant or choice checks."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.ring!r}, ttl={self.ttl}s)"


def _parse_claims(data: object) -> TokenClaims:
    try:
        if isinstance(data, bytes | str):
            return TokenClaims.model_validate_json(data)
        return TokenClaims.model_validate(data)
    except ValidationError:
        raise TokenError(TokenErrorReason.malformed) from None


class HmacCodec(TokenCodec):
    """HMAC-SHA256 tokens via itsdangerous: `[.]base64url(json).base64url(mac)`."""

    mode = "hmac"

    def __init__(self, ring: KeyRing, ttl: timedelta | int = timedelta(hours=24)) -> None:
        super().__init__(ring, ttl)
        # One serializer per key rather than itsdangerous' key list: the kid in the claims must name the key that
        # signed, and a retired key must be told apart from a forgery.
        self._serializers: dict[str, URLSafeSerializer] = {}
        for entry in ring.entries:
            secret = _as_bytes(entry.secret)
            if len(secret) < MIN_HMAC_SECRET_BYTES:
                raise ValueError(
                    f"token key {entry.kid!r}: an HMAC secret needs at least {MIN_HMAC_SECRET_BYTES} bytes"
                )
            self._serializers[entry.kid] = URLSafeSerializer(
                secret, salt=HMAC_SALT, signer_kwargs={"digest_method": hashlib.sha256}
            )
        self._retired = {e.kid for e in ring.entries if e.retired}
        self._signers = {kid: serializer.make_signer() for kid, serializer in self._serializers.items()}

    @property
    def signing_kid(self) -> str:
        """The newest non-retired key's configured id."""
        return self.ring.signing.kid

    def _sign(self, claims: TokenClaims) -> str:
        return self._serializers[claims.kid].dumps(claims.wire())

    def _peek(self, token: str) -> tuple[str, dict[str, Any]]:
        # The payload is decoded before the signature is checked only to read the kid, which chooses the key;
        # nothing in it is trusted until the signature over it is verified.
        payload, sep, mac = token.rpartition(".")
        # An HMAC-SHA256 is 32 bytes: 43 base64url characters. Anything else was never a token of ours.
        if not sep or not payload or len(mac) != 43:
            raise TokenError(TokenErrorReason.malformed)
        compressed = payload.startswith(".")
        try:
            raw = base64_decode(payload[1:] if compressed else payload)
            if compressed:
                # Bounded: an unauthenticated zlib bomb must not cost more than a token's worth of memory.
                inflater = zlib.decompressobj()
                raw = inflater.decompress(raw, 8 * MAX_TOKEN_CHARS)
                if inflater.unconsumed_tail:
                    raise ValueError("payload too large")
            data = json.loads(raw)
        except (BadData, ValueError, zlib.error, RecursionError):
            raise TokenError(TokenErrorReason.malformed) from None
        kid = data.get("k") if isinstance(data, dict) else None
        if not isinstance(kid, str) or not kid:
            raise TokenError(TokenErrorReason.malformed)
        return kid, data

    def _verify_signature(self, token: str) -> TokenClaims:
        if not _HMAC_TOKEN_RE.fullmatch(token):
            raise TokenError(TokenErrorReason.malformed)
        kid, data = self._peek(token)
        serializer = self._serializers.get(kid)
        if serializer is None:
            raise TokenError(TokenErrorReason.unknown_key)
        try:
            # The signature only: the payload it covers was decoded above the way serializer.loads() decodes it
            # (base64url, zlib when it starts with a dot, JSON), so it is not decoded a second time.
            self._signers[kid].unsign(token)
        except BadSignature:
            raise TokenError(TokenErrorReason.bad_signature) from None
        except (BadData, ValueError, RecursionError):
            raise TokenError(TokenErrorReason.malformed) from None
        if kid in self._retired:
            raise TokenError(TokenErrorReason.retired_key)
        return _parse_claims(data)


@dataclass(frozen=True)
class _DsseKey:
    name: str
    keyid: str
    private: Ed25519PrivateKey = field(repr=False)
    public: Ed25519PublicKey = field(repr=False)
    retired: bool


class DsseCodec(TokenCodec):
    """Ed25519 DSSE envelopes, compact JSON then base64url without padding."""

    mode = "dsse"

    def __init__(self, ring: KeyRing, ttl: timedelta | int = timedelta(hours=24)) -> None:
        super().__init__(ring, ttl)
        self._keys: dict[str, _DsseKey] = {}
        for entry in ring.entries:
            private = _load_ed25519_private(entry.kid, entry.secret)
            public = private.public_key()
            keyid = ed25519_keyid(public)
            if keyid in self._keys:
                raise ValueError(f"token keys {self._keys[keyid].name!r} and {entry.kid!r} are the same key")
            self._keys[keyid] = _DsseKey(entry.kid, keyid, private, public, entry.retired)
        self._signer = next(k for k in self._keys.values() if k.name == ring.signing.kid)

    @property
    def signing_kid(self) -> str:
        """The newest non-retired key's public-key id (what verifiers see in the envelope and the claims)."""
        return self._signer.keyid

    def public_keys(self) -> list[dict[str, str]]:
        """Every non-retired public key: kid, alg, name (the configured id), PEM and base64url raw bytes."""
        published = []
        for key in self._keys.values():
            if key.retired:
                continue
            raw = key.public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            pem = key.public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            published.append(
                {
                    "kid": key.keyid,
                    "alg": "ed25519",
                    "name": key.name,
                    "public_key_pem": pem.decode("ascii"),
                    "public_key": _b64url_nopad(raw),
                }
            )
        return published

    def _sign(self, claims: TokenClaims) -> str:
        body = claims.model_dump_json(by_alias=True, exclude_none=True).encode("utf-8")
        sig = self._signer.private.sign(pae(DSSE_PAYLOAD_TYPE, body))
        envelope = {
            "payload": base64.b64encode(body).decode("ascii"),
            "payloadType": DSSE_PAYLOAD_TYPE,
            "signatures": [{"keyid": self._signer.keyid, "sig": base64.b64encode(sig).decode("ascii")}],
        }
        return _b64url_nopad(json.dumps(envelope, separators=(",", ":")).encode("ascii"))

    @staticmethod
    def _parse_envelope(token: str) -> tuple[str, bytes, list[tuple[str, bytes]]]:
        if not _B64URL_RE.fullmatch(token):
            raise TokenError(TokenErrorReason.malformed)
        try:
            envelope = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
            if not isinstance(envelope, dict):
                raise ValueError("not an object")
            payload_type, payload_b64, signatures = envelope["payloadType"], envelope["payload"], envelope["signatures"]
            if not isinstance(payload_type, str) or not isinstance(payload_b64, str):
                raise ValueError("payloadType and payload must be strings")
            if not isinstance(signatures, list) or not 1 <= len(signatures) <= _MAX_DSSE_SIGNATURES:
                raise ValueError("signatures must be a short non-empty list")
            sigs = []
            for item in signatures:
                keyid = item.get("keyid", "") if isinstance(item, dict) else None
                sig = item.get("sig") if isinstance(item, dict) else None
                if not isinstance(keyid, str) or not isinstance(sig, str):
                    raise ValueError("each signature needs a string sig and keyid")
                sigs.append((keyid, _b64decode_any(sig)))
            return payload_type, _b64decode_any(payload_b64), sigs
        except (ValueError, KeyError, TypeError, binascii.Error, RecursionError):
            raise TokenError(TokenErrorReason.malformed) from None

    def _verify_signature(self, token: str) -> TokenClaims:
        payload_type, body, sigs = self._parse_envelope(token)
        message = pae(payload_type, body)
        verified: _DsseKey | None = None
        known = retired_valid = False
        for keyid, sig in sigs:
            # DSSE makes keyid an optional hint; without one, try every active key (the ring is small).
            candidates = [self._keys[keyid]] if keyid in self._keys else []
            if not keyid:
                candidates = [k for k in self._keys.values() if not k.retired]
            for key in candidates:
                known = True
                try:
                    key.public.verify(sig, message)
                except InvalidSignature:
                    continue
                if key.retired:
                    retired_valid = True
                    continue
                verified = key
                break
            if verified is not None:
                break
        if verified is None:
            if retired_valid:
                raise TokenError(TokenErrorReason.retired_key)
            raise TokenError(TokenErrorReason.bad_signature if known else TokenErrorReason.unknown_key)
        # Checked after the signature so tampering reads as bad_signature; a genuine envelope of another type
        # signed by the same key must still never pass as an ack token.
        if payload_type != DSSE_PAYLOAD_TYPE:
            raise TokenError(TokenErrorReason.malformed)
        claims = _parse_claims(body)
        if claims.kid != verified.keyid:
            raise TokenError(TokenErrorReason.malformed)
        return claims


_CODECS: dict[str, type[TokenCodec]] = {"hmac": HmacCodec, "dsse": DsseCodec}


def build_codec(
    mode: str,
    keys: Sequence[KeyEntry | tuple[str, str | bytes, bool]],
    ttl: timedelta | int = timedelta(hours=24),
) -> TokenCodec:
    """Build the codec for a mode from (kid, secret, retired) entries listed oldest first."""
    codec = _CODECS.get(mode)
    if codec is None:
        raise ValueError(f"unknown token mode {mode!r}: use hmac or dsse")
    return codec(KeyRing(keys), ttl)


def codec_from_config(config: TokensConfig) -> TokenCodec:
    """Build the codec from the `tokens:` section, resolving each key's secret reference now."""
    entries = [KeyEntry(k.id, resolve_secret(k.secret), k.retired) for k in config.keys]
    if not entries:
        raise ValueError("tokens.keys is empty: add a signing key (see `ackbot keys`)")
    return build_codec(config.mode, entries, config.ttl)

"""Ack tokens: round trips, every refusal reason, rotation, size, and securesystemslib interoperability."""

from __future__ import annotations

import base64
import json
import random
import re
import uuid
import zlib
from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError
from securesystemslib.dsse import Envelope
from securesystemslib.exceptions import VerificationError
from securesystemslib.signer import CryptoSigner, SSlibKey

from core.config import TokenKeyConfig, TokensConfig
from core.models.approvals import Choice
from core.tokens import (
    CLOCK_SKEW_SECONDS,
    DSSE_PAYLOAD_TYPE,
    MAX_TOKEN_CHARS,
    DsseCodec,
    HmacCodec,
    KeyEntry,
    KeyRing,
    TokenClaims,
    TokenCodec,
    TokenError,
    TokenErrorReason,
    TokenTooLarge,
    build_codec,
    codec_from_config,
    ed25519_keyid,
    generate_ed25519_pem,
    generate_hmac_secret,
    pae,
)

R = TokenErrorReason
NOW = 1_750_000_000
MODES = ["hmac", "dsse"]

HMAC_A = "hmac-secret-a-0123456789abcdefghijklmnop"
HMAC_B = "hmac-secret-b-0123456789abcdefghijklmnop"
PEM_A = generate_ed25519_pem()
PEM_B = generate_ed25519_pem()
PEM_C = generate_ed25519_pem()


def secret(mode: str, which: str) -> str:
    return {"hmac": {"a": HMAC_A, "b": HMAC_B, "c": HMAC_A[::-1]}, "dsse": {"a": PEM_A, "b": PEM_B, "c": PEM_C}}[mode][
        which
    ]


def codec(mode: str, *keys: tuple[str, str, bool], ttl: int = 3600) -> TokenCodec:
    return build_codec(mode, list(keys), ttl)


def realistic(**overrides: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "tenant": "acme-payments-prod-eu-west-1",
        "approval_id": str(uuid.uuid4()),
        "delivery_id": str(uuid.uuid4()),
        "channel": "slack-platform-oncall-escalations",
        "choice": "acknowledge",
        "subject": "jane.doe-smith@payments.example-corp.com",
    }
    claims.update(overrides)
    return claims


def refused(c: TokenCodec, token: Any, **kwargs: Any) -> TokenErrorReason:
    with pytest.raises(TokenError) as info:
        c.verify(token, **kwargs)
    return info.value.reason


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def open_envelope(token: str) -> dict[str, Any]:
    envelope: dict[str, Any] = json.loads(b64url_decode(token))
    return envelope


def seal_envelope(envelope: dict[str, Any]) -> str:
    return b64url_encode(json.dumps(envelope, separators=(",", ":")).encode())


def hmac_split(token: str) -> tuple[bytes, bool, str]:
    """Decode an itsdangerous URL-safe token into (json bytes, compressed?, signature part)."""
    payload, _, sig = token.rpartition(".")
    compressed = payload.startswith(".")
    raw = b64url_decode(payload[1:] if compressed else payload)
    return (zlib.decompress(raw) if compressed else raw), compressed, sig


def hmac_join(body: bytes, compressed: bool, sig: str) -> str:
    payload = "." + b64url_encode(zlib.compress(body)) if compressed else b64url_encode(body)
    return f"{payload}.{sig}"


def flip_char(text: str, index: int) -> str:
    """Replace one base64 character by another so the result still decodes."""
    replacement = "B" if text[index] != "B" else "C"
    return text[:index] + replacement + text[index + 1 :]


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("mode", MODES)
def test_round_trip_returns_every_claim(mode: str) -> None:
    c = codec(mode, ("k1", secret(mode, "a"), False))
    fields = realistic()
    token = c.issue(**fields, now=NOW)
    claims = c.verify(token, expected_tenant=fields["tenant"], expected_choice="acknowledge", now=NOW + 10)
    for name, value in fields.items():
        assert getattr(claims, name) == value
    assert claims.iat == NOW
    assert claims.exp == NOW + 3600
    assert claims.kid == c.signing_kid
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", claims.nonce)
    assert claims.expires_at.timestamp() == NOW + 3600
    assert claims.issued_at.timestamp() == NOW


@pytest.mark.parametrize("mode", MODES)
def test_optional_claims_are_left_out_and_tokens_are_url_safe(mode: str) -> None:
    c = codec(mode, ("k1", secret(mode, "a"), False))
    token = c.issue(tenant="t", approval_id="a1", channel="slack", choice=Choice.deny, now=NOW)
    assert re.fullmatch(r"[A-Za-z0-9_.-]+", token)
    claims = c.verify(token, expected_choice=Choice.deny, now=NOW)
    assert claims.delivery_id is None and claims.subject is None
    assert claims.choice == "deny"
    assert set(claims.wire()) == {"t", "a", "ch", "c", "n", "iat", "exp", "k"}


@pytest.mark.parametrize("mode", MODES)
def test_each_issue_has_a_fresh_nonce(mode: str) -> None:
    c = codec(mode, ("k1", secret(mode, "a"), False))
    nonces = {c.verify(c.issue(**realistic(), now=NOW), now=NOW).nonce for _ in range(50)}
    assert len(nonces) == 50


@pytest.mark.parametrize("mode", MODES)
def test_verify_without_now_uses_the_clock(mode: str) -> None:
    c = codec(mode, ("k1", secret(mode, "a"), False))
    assert c.verify(c.issue(**realistic())).tenant == "acme-payments-prod-eu-west-1"


@pytest.mark.parametrize("mode", MODES)
def test_issue_ttl_override(mode: str) -> None:
    c = codec(mode, ("k1", secret(mode, "a"), False))
    claims = c.verify(c.issue(**realistic(), ttl=timedelta(minutes=5), now=NOW), now=NOW)
    assert claims.exp == NOW + 300
    with pytest.raises(ValueError):
        c.issue(**realistic(), ttl=0, now=NOW)


@pytest.mark.parametrize("mode", MODES)
def test_sign_prepared_claims_replaces_kid(mode: str) -> None:
    c = codec(mode, ("k1", secret(mode, "a"), False))
    claims = TokenClaims(
        tenant="t", approval_id="a", channel="c", choice="x", nonce="n" * 22, iat=NOW, exp=NOW + 5, kid="whatever"
    )
    assert c.verify(c.sign(claims), now=NOW).kid == c.signing_kid


def test_claims_reject_nonsense() -> None:
    base: dict[str, Any] = {
        "t": "t",
        "a": "a",
        "ch": "c",
        "c": "x",
        "n": "n" * 22,
        "iat": NOW,
        "exp": NOW + 1,
        "k": "k",
    }
    TokenClaims.model_validate(base)
    for bad in ({"exp": NOW}, {"n": "short"}, {"n": "n" * 21 + "!"}, {"iat": "1750000000"}, {"iat": True}, {"t": ""}):
        with pytest.raises(ValidationError):
            TokenClaims.model_validate({**base, **bad})


# ---------------------------------------------------------------- size


@pytest.mark.parametrize("mode", MODES)
def test_realistic_long_ids_fit_in_a_slack_button_value(mode: str) -> None:
    c = codec(mode, ("production-2025-rotation-key-01", secret(mode, "a"), False))
    fields = realistic(
        tenant="acme-corporation-payments-platform-production-eu-west-1",
        approval_id=f"appr_{uuid.uuid4().hex}{uuid.uuid4().hex}",
        delivery_id=f"dlv_{uuid.uuid4().hex}{uuid.uuid4().hex}",
        channel="teams-platform-engineering-oncall-escalations-primary",
        choice="escalate",
        subject="firstname.middlename.lastname-hyphenated@subsidiary.example-corporation.com",
    )
    token = c.issue(**fields, now=NOW)
    assert len(token) < MAX_TOKEN_CHARS == 2000
    assert c.verify(token, now=NOW).approval_id == fields["approval_id"]


@pytest.mark.parametrize("mode", MODES)
def test_maximum_length_ascii_claims_still_fit(mode: str) -> None:
    c = codec(mode, ("k" * 64, secret(mode, "a"), False))
    rnd = random.Random(7)

    def noise(n: int) -> str:
        # Random text defeats itsdangerous' compression: the honest worst case.
        return "".join(rnd.choice("abcdefghijklmnopqrstuvwxyz0123456789-_") for _ in range(n))

    token = c.issue(
        tenant=noise(100),
        approval_id=noise(128),
        delivery_id=noise(128),
        channel=noise(100),
        choice=noise(32),
        subject=noise(254),
        now=NOW,
    )
    assert len(token) <= MAX_TOKEN_CHARS
    c.verify(token, now=NOW)


def test_oversized_token_is_refused_at_issue_time() -> None:
    c = codec("dsse", ("k1", PEM_A, False))
    with pytest.raises(TokenTooLarge):
        c.issue(**realistic(tenant="t" * 100, approval_id="a" * 128, delivery_id="d" * 128, subject="é" * 254))


# ---------------------------------------------------------------- time, tenant, choice


@pytest.mark.parametrize("mode", MODES)
def test_expiry_is_exclusive(mode: str) -> None:
    c = codec(mode, ("k1", secret(mode, "a"), False), ttl=600)
    token = c.issue(**realistic(), now=NOW)
    c.verify(token, now=NOW + 599)
    assert refused(c, token, now=NOW + 600) is R.expired
    assert refused(c, token, now=NOW + 10**6) is R.expired


@pytest.mark.parametrize("mode", MODES)
def test_issued_in_the_future_beyond_skew_is_not_yet_valid(mode: str) -> None:
    c = codec(mode, ("k1", secret(mode, "a"), False))
    c.verify(c.issue(**realistic(), now=NOW + CLOCK_SKEW_SECONDS), now=NOW)
    token = c.issue(**realistic(), now=NOW + CLOCK_SKEW_SECONDS + 1)
    assert refused(c, token, now=NOW) is R.not_yet_valid


@pytest.mark.parametrize("mode", MODES)
def test_wrong_tenant_and_wrong_choice(mode: str) -> None:
    c = codec(mode, ("k1", secret(mode, "a"), False))
    token = c.issue(**realistic(tenant="acme", choice="acknowledge"), now=NOW)
    assert refused(c, token, expected_tenant="globex", now=NOW) is R.wrong_tenant
    assert refused(c, token, expected_choice="deny", now=NOW) is R.wrong_choice
    assert refused(c, token, expected_choice=Choice.escalate, now=NOW) is R.wrong_choice
    c.verify(token, expected_tenant="acme", expected_choice=Choice.acknowledge, now=NOW)


# ---------------------------------------------------------------- forgery and tampering


@pytest.mark.parametrize("mode", MODES)
def test_forged_with_another_key_under_our_kid(mode: str) -> None:
    ours = codec(mode, ("k1", secret(mode, "a"), False))
    theirs = codec(mode, ("k1", secret(mode, "b"), False))
    token = theirs.issue(**realistic(), now=NOW)
    if mode == "dsse":
        # Claim our key's id in the envelope and the claims; only the signature can tell.
        envelope = open_envelope(token)
        body = json.loads(base64.b64decode(envelope["payload"]))
        body["k"] = ours.signing_kid
        body_bytes = json.dumps(body, separators=(",", ":")).encode()
        forger, _ = _sslib_key(PEM_B)
        sig = forger.sign(pae(DSSE_PAYLOAD_TYPE, body_bytes))
        envelope["payload"] = base64.b64encode(body_bytes).decode()
        envelope["signatures"] = [{"keyid": ours.signing_kid, "sig": base64.b64encode(sig).decode()}]
        token = seal_envelope(envelope)
    assert refused(ours, token, now=NOW) is R.bad_signature


@pytest.mark.parametrize("mode", MODES)
def test_signed_by_a_key_we_do_not_know(mode: str) -> None:
    ours = codec(mode, ("k1", secret(mode, "a"), False))
    theirs = codec(mode, ("k9", secret(mode, "b"), False))
    assert refused(ours, theirs.issue(**realistic(), now=NOW), now=NOW) is R.unknown_key


def test_hmac_tampered_payload() -> None:
    c = codec("hmac", ("k1", HMAC_A, False))
    body, compressed, sig = hmac_split(c.issue(**realistic(tenant="acme"), now=NOW))
    forged = body.replace(b'"t":"acme"', b'"t":"acmf"')
    assert forged != body
    assert refused(c, hmac_join(forged, compressed, sig), now=NOW) is R.bad_signature
    # Re-encoding the untouched body keeps verifying: the test harness itself is sound.
    c.verify(hmac_join(body, compressed, sig), now=NOW)


def test_hmac_tampered_signature() -> None:
    c = codec("hmac", ("k1", HMAC_A, False))
    token = c.issue(**realistic(), now=NOW)
    cut = token.rindex(".") + 1
    assert refused(c, flip_char(token, cut + 3), now=NOW) is R.bad_signature
    assert refused(c, token[:cut] + "A" * 43, now=NOW) is R.bad_signature
    assert refused(c, token[: cut + 10], now=NOW) is R.malformed


def test_hmac_kid_swapped_to_another_of_our_keys() -> None:
    c = codec("hmac", ("k1", HMAC_A, False), ("k2", HMAC_B, False))
    body, compressed, sig = hmac_split(c.issue(**realistic(), now=NOW))
    assert b'"k":"k2"' in body
    assert refused(c, hmac_join(body.replace(b'"k":"k2"', b'"k":"k1"'), compressed, sig), now=NOW) is R.bad_signature


def test_dsse_tampered_payload_signature_and_type() -> None:
    c = codec("dsse", ("k1", PEM_A, False))
    token = c.issue(**realistic(tenant="acme"), now=NOW)
    envelope = open_envelope(token)

    body = bytearray(base64.b64decode(envelope["payload"]))
    body[body.index(b"acme") + 3] ^= 0x01
    tampered = {**envelope, "payload": base64.b64encode(bytes(body)).decode()}
    assert refused(c, seal_envelope(tampered), now=NOW) is R.bad_signature

    sig = bytearray(base64.b64decode(envelope["signatures"][0]["sig"]))
    sig[10] ^= 0x80
    bad_sig = {**envelope, "signatures": [{**envelope["signatures"][0], "sig": base64.b64encode(bytes(sig)).decode()}]}
    assert refused(c, seal_envelope(bad_sig), now=NOW) is R.bad_signature

    short_sig = {**envelope, "signatures": [{**envelope["signatures"][0], "sig": "AAAA"}]}
    assert refused(c, seal_envelope(short_sig), now=NOW) is R.bad_signature

    retyped = {**envelope, "payloadType": "application/vnd.in-toto+json"}
    assert refused(c, seal_envelope(retyped), now=NOW) is R.bad_signature

    c.verify(seal_envelope(envelope), now=NOW)


def test_dsse_genuine_envelope_of_another_type_is_not_an_ack_token() -> None:
    c = codec("dsse", ("k1", PEM_A, False))
    claims = c.verify(c.issue(**realistic(), now=NOW), now=NOW)
    body = claims.model_dump_json(by_alias=True, exclude_none=True).encode()
    private = serialization.load_pem_private_key(PEM_A.encode(), None)
    assert isinstance(private, Ed25519PrivateKey)
    other_type = "application/vnd.in-toto+json"
    envelope = {
        "payload": base64.b64encode(body).decode(),
        "payloadType": other_type,
        "signatures": [{"keyid": c.signing_kid, "sig": base64.b64encode(private.sign(pae(other_type, body))).decode()}],
    }
    assert refused(c, seal_envelope(envelope), now=NOW) is R.malformed


def test_dsse_keyid_hint_is_optional_and_extra_signatures_are_tolerated() -> None:
    c = codec("dsse", ("k1", PEM_A, False))
    envelope = open_envelope(c.issue(**realistic(), now=NOW))
    good = envelope["signatures"][0]
    c.verify(seal_envelope({**envelope, "signatures": [{"sig": good["sig"]}]}), now=NOW)
    c.verify(seal_envelope({**envelope, "signatures": [{"keyid": "feedfacefeedface", "sig": "AAAA"}, good]}), now=NOW)
    too_many = {**envelope, "signatures": [good] * 5}
    assert refused(c, seal_envelope(too_many), now=NOW) is R.malformed
    assert refused(c, seal_envelope({**envelope, "signatures": []}), now=NOW) is R.malformed


def test_dsse_claims_kid_must_name_the_signing_key() -> None:
    c = codec("dsse", ("k1", PEM_A, False))
    claims = c.verify(c.issue(**realistic(), now=NOW), now=NOW)
    private = serialization.load_pem_private_key(PEM_A.encode(), None)
    assert isinstance(private, Ed25519PrivateKey)
    body = claims.model_copy(update={"kid": "0000000000000000"}).model_dump_json(by_alias=True).encode()
    sig = private.sign(pae(DSSE_PAYLOAD_TYPE, body))
    envelope = {
        "payload": base64.b64encode(body).decode(),
        "payloadType": DSSE_PAYLOAD_TYPE,
        "signatures": [{"keyid": c.signing_kid, "sig": base64.b64encode(sig).decode()}],
    }
    assert refused(c, seal_envelope(envelope), now=NOW) is R.malformed


def test_tokens_of_one_mode_are_refused_by_the_other() -> None:
    h = codec("hmac", ("k1", HMAC_A, False))
    d = codec("dsse", ("k1", PEM_A, False))
    assert refused(d, h.issue(**realistic(), now=NOW), now=NOW) is R.malformed
    assert refused(h, d.issue(**realistic(), now=NOW), now=NOW) is R.malformed


# ---------------------------------------------------------------- rotation


@pytest.mark.parametrize("mode", MODES)
def test_rotation_old_key_verifies_until_retired_and_newest_signs(mode: str) -> None:
    a, b = secret(mode, "a"), secret(mode, "b")
    before = codec(mode, ("k1", a, False))
    old_token = before.issue(**realistic(), now=NOW)

    during = codec(mode, ("k1", a, False), ("k2", b, False))
    assert during.signing_kid != before.signing_kid
    new_token = during.issue(**realistic(), now=NOW)
    assert during.verify(new_token, now=NOW).kid == during.signing_kid
    assert during.verify(old_token, now=NOW).kid == before.signing_kid
    # A replica still on the old ring cannot know the new key: rotate by adding keys everywhere first.
    assert refused(before, new_token, now=NOW) is R.unknown_key

    after = codec(mode, ("k1", a, True), ("k2", b, False))
    assert after.signing_kid == during.signing_kid
    assert refused(after, old_token, now=NOW) is R.retired_key
    after.verify(new_token, now=NOW)

    dropped = codec(mode, ("k2", b, False))
    assert refused(dropped, old_token, now=NOW) is R.unknown_key


@pytest.mark.parametrize("mode", MODES)
def test_newest_non_retired_key_signs(mode: str) -> None:
    c = codec(mode, ("k1", secret(mode, "a"), False), ("k2", secret(mode, "b"), False), ("k3", secret(mode, "c"), True))
    expected = codec(mode, ("k2", secret(mode, "b"), False)).signing_kid
    assert c.signing_kid == expected
    assert c.verify(c.issue(**realistic(), now=NOW), now=NOW).kid == expected


@pytest.mark.parametrize("mode", MODES)
def test_forgery_claiming_a_retired_key_is_a_bad_signature_not_retired(mode: str) -> None:
    ours = codec(mode, ("k1", secret(mode, "a"), True), ("k2", secret(mode, "b"), False))
    forger = codec(mode, ("k1", secret(mode, "c"), False))
    token = forger.issue(**realistic(), now=NOW)
    if mode == "dsse":
        retired_kid = codec(mode, ("k1", secret(mode, "a"), False)).signing_kid
        envelope = open_envelope(token)
        envelope["signatures"][0]["keyid"] = retired_kid
        token = seal_envelope(envelope)
    assert refused(ours, token, now=NOW) is R.bad_signature


# ---------------------------------------------------------------- garbage


# Right length for an HMAC-SHA256, so these reach the payload parser.
FAKE_MAC = "." + "A" * 43

GARBAGE = [
    "",
    " ",
    ".",
    "..",
    "a.b",
    "a.b.c",
    ".a.b",
    "not base64 at all!",
    "ä" * 20,
    "\x00" * 20,
    "eyJ9",
    "A" * 1999,
    "A" * (MAX_TOKEN_CHARS + 1),
    "x" * 100_000,
    b64url_encode(b"null"),
    b64url_encode(b"[]"),
    b64url_encode(b'"string"'),
    b64url_encode(b"{}"),
    b64url_encode(b'{"payload":1,"payloadType":2,"signatures":3}'),
    b64url_encode(b'{"payload":"","payloadType":"","signatures":[{}]}'),
    b64url_encode(b'{"payload":"%%%","payloadType":"x","signatures":[{"keyid":"a","sig":"AAAA"}]}'),
    b64url_encode(b"[" * 1400),
    b64url_encode(b'{"k":"k1"}') + ".AAAA",
    b64url_encode(b'{"k":1}') + ".AAAA",
    b64url_encode(b"[" * 1400) + FAKE_MAC,
    "." + b64url_encode(zlib.compress(b" " * 1_000_000)) + FAKE_MAC,
    "." + b64url_encode(b"not zlib") + FAKE_MAC,
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("token", GARBAGE, ids=range(len(GARBAGE)))
def test_garbage_is_refused_as_malformed(mode: str, token: str) -> None:
    c = codec(mode, ("k1", secret(mode, "a"), False))
    assert refused(c, token, now=NOW) is R.malformed


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("value", [None, b"bytes", 42, ["list"]])
def test_non_strings_are_malformed(mode: str, value: Any) -> None:
    c = codec(mode, ("k1", secret(mode, "a"), False))
    assert refused(c, value, now=NOW) is R.malformed


@pytest.mark.parametrize("mode", MODES)
def test_random_mutations_never_escape_as_unexpected_exceptions(mode: str) -> None:
    c = codec(mode, ("k1", secret(mode, "a"), False))
    original = c.issue(**realistic(), now=NOW)
    expected = c.verify(original, now=NOW)
    rnd = random.Random(20250101)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.+/=!"
    for _ in range(1500):
        token = list(original)
        for _ in range(rnd.randint(1, 3)):
            kind = rnd.random()
            i = rnd.randrange(len(token))
            if kind < 0.6:
                token[i] = rnd.choice(alphabet)
            elif kind < 0.8:
                del token[i]
            else:
                token.insert(i, rnd.choice(alphabet))
        mutated = "".join(token)
        try:
            claims = c.verify(mutated, now=NOW)
        except TokenError:
            continue
        # Base64 tails carry spare bits, so a few spellings decode to the very same signed bytes; the nonce
        # (spent once, by the store) is what stops replay, so such a token must carry the original claims.
        assert claims == expected


@pytest.mark.parametrize("mode", MODES)
def test_errors_never_carry_key_material(mode: str) -> None:
    key = secret(mode, "a")
    c = codec(mode, ("k1", key, True), ("k2", secret(mode, "b"), False))
    old = codec(mode, ("k1", key, False)).issue(**realistic(), now=NOW)
    with pytest.raises(TokenError) as info:
        c.verify(old, now=NOW)
    assert info.value.reason is R.retired_key
    text = f"{info.value} {info.value!r} {c!r} {c.ring!r} {c.ring.entries!r}"
    for fragment in (key, key.strip().splitlines()[1] if mode == "dsse" else key[:20], old):
        assert fragment not in text


# ---------------------------------------------------------------- keys and construction


def test_public_keys() -> None:
    assert codec("hmac", ("k1", HMAC_A, False)).public_keys() == []
    c = codec("dsse", ("old", PEM_A, True), ("new", PEM_B, False), ("newest", PEM_C, False))
    published = c.public_keys()
    assert [k["name"] for k in published] == ["new", "newest"]
    for entry, pem in zip(published, (PEM_B, PEM_C), strict=True):
        private = serialization.load_pem_private_key(pem.encode(), None)
        assert isinstance(private, Ed25519PrivateKey)
        public = private.public_key()
        assert entry["alg"] == "ed25519"
        assert entry["kid"] == ed25519_keyid(public)
        assert re.fullmatch(r"[0-9a-f]{16}", entry["kid"])
        assert b64url_decode(entry["public_key"]) == public.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        assert serialization.load_pem_public_key(entry["public_key_pem"].encode()) == public
        assert "PRIVATE" not in json.dumps(entry)
    assert published[-1]["kid"] == c.signing_kid


def test_pae_matches_the_spec_and_securesystemslib() -> None:
    expected = b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    assert pae("http://example.com/HelloWorld", b"hello world") == expected
    assert Envelope(b"hello world", "http://example.com/HelloWorld", {}).pae() == expected
    assert pae("t", b"") == b"DSSEv1 1 t 0 "


def test_key_ring_validation() -> None:
    with pytest.raises(ValueError, match="not retired"):
        KeyRing([("k1", HMAC_A, True)])
    with pytest.raises(ValueError, match="not retired"):
        KeyRing([])
    with pytest.raises(ValueError, match="twice"):
        KeyRing([("k1", HMAC_A, False), ("k1", HMAC_B, False)])
    with pytest.raises(ValueError, match="empty"):
        KeyRing([("k1", "", False)])
    ring = KeyRing([KeyEntry("k1", HMAC_A, retired=True), ("k2", HMAC_B, False)])
    assert ring.signing.kid == "k2"
    assert HMAC_A not in repr(ring) and HMAC_B not in repr(ring.entries)


def test_build_codec_validation_never_quotes_secrets() -> None:
    with pytest.raises(ValueError, match="unknown token mode"):
        build_codec("jwt", [("k1", HMAC_A, False)])
    with pytest.raises(ValueError, match="at least 16 bytes") as short:
        build_codec("hmac", [("k1", "tooshort", False)])
    assert "tooshort" not in str(short.value)
    with pytest.raises(ValueError, match="PEM Ed25519") as not_pem:
        build_codec("dsse", [("k1", HMAC_A, False)])
    assert HMAC_A not in str(not_pem.value)
    ec_pem = (
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        .decode()
    )
    with pytest.raises(ValueError, match="not an Ed25519 key"):
        build_codec("dsse", [("k1", ec_pem, False)])
    with pytest.raises(ValueError, match="same key"):
        build_codec("dsse", [("k1", PEM_A, False), ("k2", PEM_A, False)])
    assert isinstance(build_codec("hmac", [("k1", generate_hmac_secret(), False)]), HmacCodec)
    assert isinstance(build_codec("dsse", [("k1", generate_ed25519_pem(), False)], timedelta(hours=1)), DsseCodec)


def test_dsse_accepts_pem_with_escaped_newlines_and_bytes() -> None:
    one_line = PEM_A.strip().replace("\n", "\\n")
    a = codec("dsse", ("k1", one_line, False))
    b = build_codec("dsse", [("k1", PEM_A.encode(), False)])
    assert a.signing_kid == b.signing_kid == codec("dsse", ("k1", PEM_A, False)).signing_kid


def test_codec_from_config_resolves_secret_references(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setenv("ACKBOT_TEST_TOKEN_KEY_OLD", HMAC_A)
    new_file = tmp_path / "new.key"
    new_file.write_text(HMAC_B + "\n")
    new_file.chmod(0o600)
    config = TokensConfig(
        mode="hmac",
        ttl=timedelta(minutes=10),
        keys=[
            TokenKeyConfig(id="old", secret="env:ACKBOT_TEST_TOKEN_KEY_OLD", retired=True),
            TokenKeyConfig(id="new", secret=f"file:{new_file}"),
        ],
    )
    c = codec_from_config(config)
    assert c.mode == "hmac" and c.ttl == 600 and c.signing_kid == "new"
    assert refused(c, codec("hmac", ("old", HMAC_A, False)).issue(**realistic(), now=NOW), now=NOW) is R.retired_key
    c.verify(codec("hmac", ("new", HMAC_B, False)).issue(**realistic(), now=NOW), now=NOW)
    with pytest.raises(ValueError, match="empty"):
        codec_from_config(TokensConfig())


# ---------------------------------------------------------------- securesystemslib interoperability


def _sslib_key(pem: str, keyid: str | None = None) -> tuple[Ed25519PrivateKey, SSlibKey]:
    private = serialization.load_pem_private_key(pem.encode(), None)
    assert isinstance(private, Ed25519PrivateKey)
    return private, SSlibKey.from_crypto(private.public_key(), keyid=keyid)


def test_our_envelopes_verify_with_securesystemslib() -> None:
    c = codec("dsse", ("k1", PEM_A, False))
    token = c.issue(**realistic(), now=NOW)
    envelope = Envelope.from_dict(open_envelope(token))
    _, key = _sslib_key(PEM_A, keyid=c.signing_kid)
    accepted = envelope.verify([key], 1)
    assert list(accepted) == [c.signing_kid]
    assert envelope.payload_type == DSSE_PAYLOAD_TYPE
    assert TokenClaims.model_validate_json(envelope.payload) == c.verify(token, now=NOW)
    # And securesystemslib refuses what we refuse: a different key under the same id.
    _, other = _sslib_key(PEM_B, keyid=c.signing_kid)
    with pytest.raises(VerificationError):
        Envelope.from_dict(open_envelope(token)).verify([other], 1)


def test_published_keys_are_enough_for_securesystemslib() -> None:
    c = codec("dsse", ("k1", PEM_A, False))
    token = c.issue(**realistic(), now=NOW)
    published = c.public_keys()[0]
    public = serialization.load_pem_public_key(published["public_key_pem"].encode())
    key = SSlibKey.from_crypto(public, keyid=published["kid"])
    Envelope.from_dict(open_envelope(token)).verify([key], 1)


@pytest.mark.parametrize("padded", [True, False])
def test_securesystemslib_envelopes_verify_with_our_code(padded: bool) -> None:
    c = codec("dsse", ("k1", PEM_A, False))
    private, key = _sslib_key(PEM_A, keyid=c.signing_kid)
    signer = CryptoSigner(private, key)
    claims = TokenClaims(
        tenant="acme",
        approval_id=str(uuid.uuid4()),
        channel="email",
        choice="acknowledge",
        subject="ops@example.com",
        nonce=base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode(),
        iat=NOW,
        exp=NOW + 600,
        kid=c.signing_kid,
    )
    envelope = Envelope(claims.model_dump_json(by_alias=True, exclude_none=True).encode(), DSSE_PAYLOAD_TYPE, {})
    envelope.sign(signer)
    data = json.dumps(envelope.to_dict()).encode()  # securesystemslib's own (not compact) JSON and base64
    token = base64.urlsafe_b64encode(data).decode()
    if not padded:
        token = token.rstrip("=")
    assert c.verify(token, expected_tenant="acme", expected_choice="acknowledge", now=NOW) == claims

    # A securesystemslib signer with another key is refused like any forgery.
    forger_private, _ = _sslib_key(PEM_B)
    forged = Envelope(envelope.payload, DSSE_PAYLOAD_TYPE, {})
    forged.sign(CryptoSigner(forger_private, SSlibKey.from_crypto(forger_private.public_key(), keyid=c.signing_kid)))
    assert refused(c, b64url_encode(json.dumps(forged.to_dict()).encode()), now=NOW) is R.bad_signature


def test_securesystemslib_default_keyid_is_an_unknown_key() -> None:
    # securesystemslib's default keyid is a hash of its key metadata, not our fingerprint; keyids must match.
    c = codec("dsse", ("k1", PEM_A, False))
    private, key = _sslib_key(PEM_A)
    assert key.keyid != c.signing_kid
    body = c.verify(c.issue(**realistic(), now=NOW), now=NOW).model_dump_json(by_alias=True).encode()
    envelope = Envelope(body, DSSE_PAYLOAD_TYPE, {})
    envelope.sign(CryptoSigner(private, key))
    assert refused(c, b64url_encode(json.dumps(envelope.to_dict()).encode()), now=NOW) is R.unknown_key

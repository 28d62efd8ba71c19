"""API keys: who is calling, for which tenant, allowed to do what."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from core.config import ApiKeyConfig, ApiScope
from core.secrets import SecretError, resolve_secret

log = logging.getLogger("ackbot.auth")
ALL_TENANTS = "*"


class AuthError(Exception):
    """No key, or a key we do not know (401)."""


class ForbiddenError(Exception):
    """A known key without the scope or tenant it needs (403)."""


@dataclass(frozen=True)
class Principal:
    """An authenticated API caller."""

    name: str
    tenant: str
    scopes: frozenset[ApiScope]

    def require(self, scope: ApiScope) -> None:
        """Raise ForbiddenError unless the key carries scope (notify.admin implies the others)."""
        if scope not in self.scopes and ApiScope.notify_admin not in self.scopes:
            raise ForbiddenError(f"this API key lacks the scope {scope.value}")

    def can_see(self, tenant: str) -> bool:
        """Whether the key may read or write this tenant's data."""
        return self.tenant in (ALL_TENANTS, tenant)

    def sees(self, tenant: str) -> bool:
        """Whether the key may read an item of this tenant: its own, or one shared with every tenant ("*")."""
        return tenant == ALL_TENANTS or self.can_see(tenant)

    def manages(self, tenant: str) -> bool:
        """Whether the key may change an item of this tenant: its own; shared ones only with a key for every tenant."""
        return self.tenant == ALL_TENANTS or self.tenant == tenant

    def check_tenant(self, tenant: str) -> None:
        """Raise ForbiddenError for another tenant's data."""
        if not self.can_see(tenant):
            raise ForbiddenError(f"this API key is for tenant {self.tenant!r}, not {tenant!r}")

    @property
    def tenants(self) -> list[str] | None:
        """The tenants this key sees, or None for all."""
        return None if self.tenant == ALL_TENANTS else [self.tenant]


def hash_key(raw: str) -> str:
    """How a key is kept at rest: SHA-256 of the key (keys are long random strings, not passwords)."""
    return hashlib.sha256(raw.encode()).hexdigest()


class ApiKeyring:
    """The configured keys, held only as hashes."""

    def __init__(self, keys: Sequence[ApiKeyConfig]) -> None:
        self._by_hash: dict[str, Principal] = {}
        self.unresolved: list[str] = []
        for key in keys:
            try:
                raw = resolve_secret(key.key)
            except SecretError as exc:
                self.unresolved.append(key.name)
                log.warning("API key %r is disabled: %s", key.name, exc)
                continue
            if len(raw) < 16:
                self.unresolved.append(key.name)
                log.warning("API key %r is disabled: keys must be at least 16 characters", key.name)
                continue
            self._by_hash[hash_key(raw)] = Principal(key.name, key.tenant, frozenset(key.scopes))

    def __len__(self) -> int:
        return len(self._by_hash)

    def authenticate(self, authorization: str | None) -> Principal:
        """The principal for an Authorization header, or AuthError."""
        if not authorization:
            raise AuthError("missing Authorization header: send Authorization: Bearer <api key>")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError("the Authorization header must be: Bearer <api key>")
        principal = self._by_hash.get(hash_key(token.strip()))
        if principal is None:
            raise AuthError("unknown API key")
        return principal

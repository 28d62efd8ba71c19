"""People and groups from the config, and the actor a platform vouches for."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from core.models.common import Strict
from core.models.rules import QuietHoursList


class Identities(Strict):
    slack: str | None = Field(default=None, description="Slack user id, e.g. U012AB3CD")
    teams: str | None = Field(default=None, description="Azure AD object id")
    email: str | None = None


ALL_TENANTS = "*"


def channel_serves(channel_tenant: str, tenant: str) -> bool:
    """Whether a rule or approval of this tenant may send through a channel of channel_tenant: a shared channel
    ("*") serves every tenant; a tenant's channel only that tenant (a rule for every tenant would send it others')."""
    return channel_tenant in (ALL_TENANTS, tenant)


# Tenant names as events carry them, or "*" for every tenant.
TenantList = list[Annotated[str, Field(min_length=1, max_length=100)]]


class Person(Strict):
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.@-]+$")
    display_name: str = ""
    identities: Identities = Field(default_factory=Identities)
    quiet_hours: QuietHoursList = Field(default_factory=list, description="when deliveries to this person wait")
    tenants: TenantList = Field(
        default_factory=lambda: [ALL_TENANTS],
        description='the tenants whose alerts and approvals this person sees in chat; "*" for every tenant',
    )


class Group(Strict):
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.@-]+$")
    members: list[str] = Field(default_factory=list, description="person names or other group names")


class Actor(BaseModel):
    """Whoever clicked: the platform and the identity the platform vouched for."""

    platform: Literal["slack", "teams", "web", "api"]
    id: str
    display_name: str = ""

"""Where an approval's messages go: targets (channel names, person:NAME) resolved to conversations."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from core.approvals.callback import CALLBACK_CHANNEL
from core.approvals.directory import IDENTITY_OF_CHANNEL_TYPE, PERSON_PREFIX, Directory
from core.approvals.models import ApprovalInputError


@dataclass(frozen=True)
class TargetPlan:
    """Where one message of an approval goes: a channel, and within it a person's address (or the default)."""

    channel: str
    target: str | None = None
    person: str | None = None


def delivery_key(*parts: object) -> str:
    """The idempotency key of a delivery an approval causes, from what makes it unique."""
    return hashlib.sha256("|".join(str(p) for p in parts).encode("utf-8")).hexdigest()[:48]


def check_names(directory: Directory, names: Sequence[str], field: str) -> None:
    """ApprovalInputError naming the first of `names` that is neither a person nor a group."""
    for index, name in enumerate(names):
        if not directory.knows(name):
            raise ApprovalInputError(f"{field}[{index}]", f"no person or group named {name!r}")


def plan_targets(
    directory: Directory, channel_types: Mapping[str, str], targets: Sequence[str], *, field: str = "targets"
) -> list[TargetPlan]:
    """Resolve targets to messages: a channel name, or person:NAME (one message per platform they are on).

    "person:NAME/CHANNEL" restricts a person target to one channel. On a chat channel the target is the
    person's platform identity (Slack user id, AAD object id); on an e-mail channel their address.
    """
    types = {name: kind for name, kind in channel_types.items() if name != CALLBACK_CHANNEL}
    plans: list[TargetPlan] = []
    for index, raw in enumerate(targets):
        where = f"{field}[{index}]"
        text = raw.strip()
        if not text.startswith(PERSON_PREFIX):
            if text not in types:
                raise ApprovalInputError(where, f"no channel named {text!r}")
            plans.append(TargetPlan(text))
            continue
        name, _, only = text.removeprefix(PERSON_PREFIX).partition("/")
        person = directory.person(name)
        if person is None:
            raise ApprovalInputError(where, f"no person named {name!r}")
        if only and only not in types:
            raise ApprovalInputError(where, f"no channel named {only!r}")
        platforms: set[str] = set()
        found = False
        for channel, kind in types.items():
            if only and channel != only:
                continue
            identity = directory.identity_for(person, kind)
            platform = IDENTITY_OF_CHANNEL_TYPE.get(kind)
            if identity is None or platform is None or platform in platforms:
                continue
            platforms.add(platform)
            plans.append(TargetPlan(channel, identity, person.name))
            found = True
        if not found:
            where_to = f"the channel {only!r}" if only else "any configured channel"
            raise ApprovalInputError(
                where, f"{name!r} has no identity (slack, teams or email) that {where_to} can reach"
            )
    unique: dict[tuple[str, str | None], TargetPlan] = {}
    for plan in plans:
        unique.setdefault((plan.channel, plan.target), plan)
    return list(unique.values())


def plan_quietly(
    directory: Directory, channel_types: Mapping[str, str], targets: Sequence[str]
) -> tuple[list[TargetPlan], list[str]]:
    """plan_targets for targets stored earlier: the ones that still resolve, and a warning for each that does not."""
    plans: list[TargetPlan] = []
    warnings: list[str] = []
    for target in targets:
        try:
            plans += plan_targets(directory, channel_types, [target])
        except ApprovalInputError as exc:
            warnings.append(f"target {target!r} skipped: {exc.message}")
    return plans, warnings

"""Who is who: people and (nested) groups from the config, matched against the identity a platform vouched for."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from core.models.people import Actor, Group, Person

# Which identity of a person a channel type addresses them by.
IDENTITY_OF_CHANNEL_TYPE = {"slack": "slack", "teams": "teams", "email": "email"}
PERSON_PREFIX = "person:"


class Directory:
    """People and groups by name; resolves a click's identity to a person and expands groups to people."""

    def __init__(self, people: Sequence[Person], groups: Sequence[Group]) -> None:
        self.people = {p.name: p for p in people}
        self.groups = {g.name: g for g in groups}
        self._by_identity: dict[tuple[str, str], Person] = {}
        for person in people:
            ids = person.identities
            if ids.slack:
                self._by_identity[("slack", ids.slack)] = person
            if ids.teams:
                # AAD object ids are GUIDs; platforms differ in their case.
                self._by_identity[("teams", ids.teams.lower())] = person
            if ids.email:
                self._by_identity[("email", ids.email.lower())] = person

    def knows(self, name: str) -> bool:
        """Whether name is a person or a group."""
        return name in self.people or name in self.groups

    def person(self, name: str) -> Person | None:
        """A person by name."""
        return self.people.get(name)

    def resolve(self, actor: Actor) -> Person | None:
        """The person behind a click: Slack user id, AAD object id, or (web, api) a person name or e-mail address."""
        if actor.platform == "slack":
            return self._by_identity.get(("slack", actor.id))
        if actor.platform == "teams":
            return self._by_identity.get(("teams", actor.id.lower()))
        return self.people.get(actor.id) or self._by_identity.get(("email", actor.id.lower()))

    def expand(self, names: Iterable[str]) -> set[str]:
        """The people that names denote: people as themselves, groups by their members, nested, cycles ignored."""
        found: set[str] = set()
        seen_groups: set[str] = set()
        stack = list(names)
        while stack:
            name = stack.pop()
            if name in self.people:
                found.add(name)
            elif name in self.groups and name not in seen_groups:
                seen_groups.add(name)
                stack.extend(self.groups[name].members)
        return found

    def may_decide(self, person: Person, approvers: Sequence[str]) -> bool:
        """Whether a person is among the approvers; with no approvers named, every configured person is."""
        if not approvers:
            return person.name in self.people
        return person.name in self.expand(approvers)

    def eligible_count(self, approvers: Sequence[str]) -> int:
        """How many distinct people could vote."""
        return len(self.expand(approvers)) if approvers else len(self.people)

    @staticmethod
    def is_requester(person: Person, requester: str | None) -> bool:
        """Whether the requester string names this person (by name or by one of their identities)."""
        if not requester:
            return False
        ids = person.identities
        candidates = {person.name.lower(), *(v.lower() for v in (ids.slack, ids.teams, ids.email) if v)}
        return requester.strip().lower() in candidates

    def identity_for(self, person: Person, channel_type: str) -> str | None:
        """The address of a person on a channel of this type (Slack user id, AAD object id, e-mail), if any."""
        field = IDENTITY_OF_CHANNEL_TYPE.get(channel_type)
        return getattr(person.identities, field) if field else None

    def display(self, name: str | None) -> str:
        """A person's display name, else their name."""
        if name is None:
            return ""
        person = self.people.get(name)
        return (person.display_name or person.name) if person else name

"""The rules in force: those of the config file plus those created through the API, compiled into one RuleSet."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import datetime

from core.models.rules import Rule
from core.rules import RuleSet
from core.store import rules as rule_store
from core.store.db import Database

log = logging.getLogger("ackbot.rules")


class RuleConflict(Exception):
    """A rule name that the config file already uses, or a change to a config rule."""


class RuleBook:
    """Holds the compiled rule set; rebuilt when API rules change on any replica."""

    def __init__(self, *, db: Database, config_rules: Sequence[Rule]) -> None:
        self.db = db
        self.config_rules = list(config_rules)
        self.config_names = {rule.name for rule in self.config_rules}
        self.api_rules: list[Rule] = []
        self._version: tuple[int, str] | None = None
        self._ruleset = RuleSet(self.config_rules)

    def current(self) -> RuleSet:
        """The compiled rules in force now."""
        return self._ruleset

    def all_rules(self) -> list[Rule]:
        """Config rules first, then API rules: the order rules match in."""
        return [*self.config_rules, *self.api_rules]

    def origin(self, name: str) -> str:
        """Where a rule comes from: "config" or "api"."""
        return "config" if name in self.config_names else "api"

    async def refresh(self, *, force: bool = False) -> bool:
        """Reload API rules if they changed since the last look; True if the rule set was rebuilt."""
        async with self.db.read() as session:
            stamp = await rule_store.version(session=session)
            if not force and stamp == self._version:
                return False
            api_rules = [r for r in await rule_store.list_rules(session=session) if r.name not in self.config_names]
        self.api_rules = api_rules
        # Compiling thousands of rules takes a few hundred milliseconds: keep the event loop free meanwhile.
        self._ruleset = await asyncio.to_thread(RuleSet, self.all_rules())
        self._version = stamp
        log.info("rules loaded: %d from config, %d from the API", len(self.config_rules), len(api_rules))
        return True


# ---------------------------------------------------------------- rules made through the API


async def api_rule(*, db: Database, name: str) -> Rule | None:
    """The stored API rule of this name."""
    async with db.read() as session:
        return await rule_store.get(session=session, name=name)


async def put_rule(*, db: Database, rule: Rule, now: datetime) -> bool:
    """Store an API rule, new or changed, in a transaction of its own; True if it is new."""
    async with db.transaction() as session:
        return await rule_store.put(session=session, rule=rule, now=now)


async def remove_rule(*, db: Database, name: str) -> bool:
    """Delete a stored API rule; False if there was none."""
    async with db.transaction() as session:
        return await rule_store.remove(session=session, name=name)

"""What messages were just made to show, so that the outbox can skip an edit that would change nothing.

A click is answered on the spot (Slack's response_url replaces the clicked message), and the approvals service
also queues an edit of every message of the approval, that one included. When the outbox comes to that message
with exactly the content the click's answer put there, the edit would only spend a call against the platform's
rate limit (Slack's chat.update is Tier 3: about 50 a minute per workspace) and the process's time.

The click's answer is noted before it is sent, because the decision's commit wakes the outbox at once: an edit
that finds the same content on its way waits for the answer's outcome and is skipped only if the platform took
it. The record is this process's alone and short-lived: it stands for the edit that follows a click, while no
other edit can have come between (another replica's outbox edits with the content of the moment, and an
approval's decided view does not change back). Anything not recorded is edited as before.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any


class Placement:
    """One answer on its way to a message: its content, and whether the platform took it (once known)."""

    def __init__(self, content: Any) -> None:
        self.content = content
        self.outcome: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    def settle(self, placed: bool) -> None:
        """Say whether the platform took the answer (a second call changes nothing)."""
        if not self.outcome.done():
            self.outcome.set_result(placed)


class ShownMessages:
    """Recently placed message contents, by message; each record spares at most one edit."""

    # Seconds a record stays good: the outbox's edit follows the click within a second or two when it is healthy.
    TTL = 30.0
    # Records kept at most (100 clicks a second for the whole TTL, with room to spare).
    SIZE = 10_000
    # Seconds an edit waits for an answer still on its way before it goes ahead anyway.
    WAIT = 10.0

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._shown: OrderedDict[Hashable, tuple[float, Placement]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._shown)

    def placing(self, message: Hashable, content: Any) -> Placement:
        """Note that `content` (not to be changed afterwards) is being put into `message`; settle the result."""
        now = self._clock()
        self._expire(now)
        placement = Placement(content)
        self._shown.pop(message, None)
        self._shown[message] = (now + self.TTL, placement)
        while len(self._shown) > self.SIZE:
            _, (_, dropped) = self._shown.popitem(last=False)
            dropped.settle(False)
        return placement

    async def shows(self, message: Hashable, content: Any) -> bool:
        """Whether `message` was just made to show exactly `content`; the record is spent either way."""
        self._expire(self._clock())
        record = self._shown.pop(message, None)
        if record is None or record[1].content != content:
            return False
        outcome = record[1].outcome
        if outcome.done():
            return outcome.result()
        try:
            return await asyncio.wait_for(asyncio.shield(outcome), self.WAIT)
        except TimeoutError:
            return False

    def _expire(self, now: float) -> None:
        shown = self._shown
        while shown:
            expires, _ = next(iter(shown.values()))
            if expires > now:
                return
            _, (_, dropped) = shown.popitem(last=False)
            dropped.settle(False)

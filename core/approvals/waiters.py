"""Long polls on approvals: a request waits until its approval is final, answered at once by a decision in this
process and, for one taken on another replica, by one shared watcher that looks every WAIT_POLL_SECONDS."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from core.approvals.models import ApprovalView
from core.store import approvals as approval_store
from core.store.db import Database

log = logging.getLogger("ackbot.approvals")

MAX_WAIT_SECONDS = 60.0
# How often the shared watcher looks for decisions taken on another replica: one query per tick for every
# approval this process has a long poll waiting on, so a decision elsewhere is seen within this.
WAIT_POLL_SECONDS = 0.5
# The most approval ids one watcher query names (a long IN list stays well inside every backend's limits).
WAIT_POLL_BATCH = 500


class Waiters:
    """The long polls of one process, by approval id."""

    def __init__(self, *, db: Database) -> None:
        self._db = db
        # Each future is answered with the final view when a decision in this process knows it, or with None
        # ("read it again") when the approval was changed without one at hand.
        self._waiting: dict[str, set[asyncio.Future[ApprovalView | None]]] = {}
        self._watcher: asyncio.Task[None] | None = None
        self._releasing = False

    def changed(self, approval_id: str, view: ApprovalView | None = None) -> None:
        """An approval changed (view: its final view, when known): answer its long polls."""
        futures = self._waiting.get(approval_id)
        if futures:
            answer = view if view is not None and view.approval.state.final else None
            for future in futures:
                if not future.done():
                    future.set_result(answer)

    def release(self) -> None:
        """Answer every long poll now with the approval as it stands (the process is shutting down).

        Without this a stop waits for the longest poll (up to MAX_WAIT_SECONDS); the clients simply ask again,
        of another replica or of this one once it is back.
        """
        self._releasing = True
        for futures in self._waiting.values():
            for future in futures:
                if not future.done():
                    future.set_result(None)
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None

    async def wait(
        self,
        *,
        approval_id: str,
        seconds: float,
        read: Callable[[], Awaitable[ApprovalView | None]],
        check: Callable[[ApprovalView], object] | None = None,
    ) -> ApprovalView | None:
        """The approval once it is final, or as it is after `seconds` (at most MAX_WAIT_SECONDS).

        `check` sees the first read (the caller's permission check: it may raise to refuse).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, min(seconds, MAX_WAIT_SECONDS))
        checked = False
        while True:
            # Registered before reading, so a decision committed between the read and the wait still wakes us.
            future = self._watch(approval_id) if seconds > 0 and not self._releasing else None
            try:
                current = await read()
                if current is not None and check is not None and not checked:
                    check(current)
                    checked = True
                remaining = deadline - loop.time()
                if future is None or current is None or current.approval.state.final or remaining <= 0:
                    return current
                try:
                    answer = await asyncio.wait_for(future, timeout=remaining)
                except TimeoutError:
                    answer = None  # time is up: read once more, and answer with that
                if answer is not None:
                    return answer
                if self._releasing:
                    return current
            finally:
                if future is not None:
                    self._unwatch(approval_id, future)

    def _watch(self, approval_id: str) -> asyncio.Future[ApprovalView | None]:
        future: asyncio.Future[ApprovalView | None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(approval_id, set()).add(future)
        if self._watcher is None and not self._releasing:
            self._watcher = asyncio.create_task(self._watch_loop(), name="ackbot-approvals-watcher")
        return future

    def _unwatch(self, approval_id: str, future: asyncio.Future[ApprovalView | None]) -> None:
        futures = self._waiting.get(approval_id)
        if futures is not None:
            futures.discard(future)
            if not futures:
                del self._waiting[approval_id]

    async def _watch_loop(self) -> None:
        # One loop per process for every waiting long poll: which of their approvals were decided elsewhere (on
        # another replica, or by a command line run), with one query per tick whatever the number of waiters.
        try:
            while self._waiting:
                await asyncio.sleep(WAIT_POLL_SECONDS)
                waited = list(self._waiting)
                try:
                    for start in range(0, len(waited), WAIT_POLL_BATCH):
                        async with self._db.read() as session:
                            final = await approval_store.final_ids(
                                session=session, approval_ids=waited[start : start + WAIT_POLL_BATCH]
                            )
                        for approval_id in final:
                            for future in self._waiting.get(approval_id, ()):
                                if not future.done():
                                    future.set_result(None)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("looking for decisions taken elsewhere failed; the long polls wait on")
        finally:
            if self._watcher is asyncio.current_task():
                self._watcher = None

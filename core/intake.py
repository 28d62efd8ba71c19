"""Group commit for intake: the events of requests that arrive together are stored in one transaction.

A request's answer still waits for the commit that holds its events (durable before acknowledged). While one
transaction commits, the requests that arrive queue up, and the next transaction takes them all: under load a
transaction holds many requests and its fixed costs (BEGIN, the reads, one INSERT per table, COMMIT) are paid
once for all of them; when idle, a lone request goes straight through. If a group fails for a reason other than
a conflict, each request in it is stored alone, so that one request's failure is never another's.

With two writers (PostgreSQL), one writer's statements overlap the other's commit, never the other's
statements: a writer takes its group when the other one has sent its statements, so the queue fills meanwhile
and groups are larger (fewer transactions for the same requests), while the commit's wait still overlaps work.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from core.ingest import IngestDeps, IngestResult, Submission, conflicted, store_committed
from core.models.events import EventIn

log = logging.getLogger("ackbot.intake")


@dataclass
class _Waiting:
    submission: Submission
    answer: asyncio.Future[list[IngestResult]]


class IngestQueue:
    """Where the intake handlers hand their events: submit() returns once they are committed."""

    # Events per transaction: a larger group makes its transaction hold the write lock (SQLite) or its row locks
    # (PostgreSQL) longer, which delays everything else that writes.
    MAX_GROUP_EVENTS = 1000
    # Turns of the event loop a writer lets pass before it takes a group. A request read from its socket reaches
    # submit() a couple of turns later (aiohttp's protocol wakes the request's task, which then runs the handler),
    # so the requests that arrived while the previous group was written join this one instead of the next (bigger
    # groups, less CPU per event: docs/performance-history.md). Idle, a lone request waits only three turns.
    GATHER_TURNS = 3
    # Turns of the event loop a writer whose queue is empty waits for a request before it leaves. Under load the
    # next requests arrive within a few turns (the answers of the group just committed go out, and their clients
    # send again), so a writer stays for the next group instead of a new one being started; idle, it leaves
    # almost at once.
    LINGER_TURNS = 20

    def __init__(self, deps: Callable[[], IngestDeps], *, writers: int = 1) -> None:
        self._deps = deps
        self._writers = max(1, writers)
        self._waiting: deque[_Waiting] = deque()
        self._tasks: set[asyncio.Task[None]] = set()
        # Writers still in their loop. A finished writer's task leaves _tasks only in a done callback, a loop turn
        # later; counting it there could leave a request just submitted with no writer.
        self._running = 0
        # Held by the writer that takes a group, until that group's statements are sent (its commit is not).
        self._statements = asyncio.Lock()

    async def submit(self, *, events: Sequence[EventIn], tenants: Sequence[str], source: str) -> list[IngestResult]:
        """Store the events (each accepted for its tenant) and the deliveries they cause; return after the commit."""
        answer: asyncio.Future[list[IngestResult]] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiting(Submission(events, tenants, source), answer))
        if self._running < self._writers:
            self._running += 1
            task = asyncio.create_task(self._write(), name="ackbot-intake")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await answer

    async def drain(self) -> None:
        """Wait until every submitted request is stored or has failed (at shutdown)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _take_group(self) -> list[_Waiting]:
        group = [self._waiting.popleft()]
        size = len(group[0].submission.events)
        while self._waiting and size + len(self._waiting[0].submission.events) <= self.MAX_GROUP_EVENTS:
            waiting = self._waiting.popleft()
            group.append(waiting)
            size += len(waiting.submission.events)
        return group

    async def _write(self) -> None:
        group: list[_Waiting] = []
        try:
            while await self._work_arrives():
                for _ in range(self.GATHER_TURNS):
                    await asyncio.sleep(0)
                await self._statements.acquire()
                written = _once(self._statements.release)
                try:
                    if not self._waiting:
                        continue  # another writer took them meanwhile
                    group = [w for w in self._take_group() if not w.answer.done()]  # a cancelled one stays unstored
                    if group:
                        await self._store(self._deps(), group, written)
                    group = []
                finally:
                    written()
        except asyncio.CancelledError:
            # Stopped mid-group (the process is going down): whoever waits gets an error, not a hang; a request
            # whose transaction had not committed was not stored, and its client was not told it was.
            stopped = RuntimeError("ackbot is stopping; the events were not stored")
            for waiting in [*group, *self._waiting]:
                _settle(waiting, error=stopped)
            self._waiting.clear()
            raise
        finally:
            # In the same step as the last look at the queue: a submit after this starts a writer.
            self._running -= 1

    async def _work_arrives(self) -> bool:
        # Whether there is a group to take: at once if requests are queued, else after letting up to LINGER_TURNS
        # turns of the event loop pass for one to arrive.
        for _ in range(self.LINGER_TURNS):
            if self._waiting:
                return True
            await asyncio.sleep(0)
        return bool(self._waiting)

    async def _store(self, deps: IngestDeps, group: list[_Waiting], written: Callable[[], None]) -> None:
        try:
            submissions = [w.submission for w in group]
            results = await store_committed(deps=deps, submissions=submissions, written=written, again=True)
        except Exception as exc:
            if len(group) == 1 or _shared_failure(exc):
                for waiting in group:
                    _settle(waiting, error=exc)
                return
            log.warning("ingest: a group of %d requests failed (%s); storing each alone", len(group), exc)
            for waiting in group:
                try:
                    (alone,) = await store_committed(deps=deps, submissions=[waiting.submission])
                except Exception as alone_exc:
                    _settle(waiting, error=alone_exc)
                else:
                    _settle(waiting, results=alone)
            return
        for waiting, answered in zip(group, results, strict=True):
            _settle(waiting, results=answered)


def _once(call: Callable[[], None]) -> Callable[[], None]:
    # Releases the statements lock when the group's statements are sent, or when the writer leaves the group
    # (failed, stopped, nothing to store), whichever comes first.
    done = False

    def release() -> None:
        nonlocal done
        if not done:
            done = True
            call()

    return release


def _shared_failure(exc: BaseException) -> bool:
    # A database that cannot be reached fails every request alike: storing each alone would only wait longer.
    if isinstance(exc, OSError | TimeoutError | OperationalError | InterfaceError):
        return not conflicted(exc)
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def _settle(
    waiting: _Waiting, *, results: list[IngestResult] | None = None, error: BaseException | None = None
) -> None:
    if waiting.answer.done():
        return
    if error is not None:
        waiting.answer.set_exception(error)
    else:
        assert results is not None
        waiting.answer.set_result(results)

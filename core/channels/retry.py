"""When a failed delivery is tried again, and when it is given up: a time budget per channel, not a count of tries.

A receiver that is down for an hour must still get its alerts when it is back. So a delivery is retried, with
capped exponential backoff and full jitter, until it has been failing for its channel's `retry_for`; the last
try falls at the end of that budget. A channel may also cap the tries (`max_attempts`), but a try the receiver
answered with 429 or with Retry-After is not counted: the receiver said when to come back, and we do.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from core.channels.errors import TransientChannelError

# A receiver asking us to wait longer than this is answered sooner: an alert an hour late is worth little.
MAX_RETRY_AFTER = 3600.0
# Past this many doublings every delay is the cap anyway; the bound keeps 2**n a float a budget of days can reach.
MAX_DOUBLINGS = 32


@dataclass(frozen=True)
class RetryPolicy:
    """A channel's retry rules: the time budget, an optional cap on counted tries, the backoff's base and cap."""

    retry_for: timedelta
    max_attempts: int | None
    backoff_base: float
    backoff_max: float


@dataclass(frozen=True)
class Verdict:
    """What a failed try leads to: the next try's time (None: the delivery is dead) and the state to record."""

    next_attempt_at: datetime | None
    failing_since: datetime
    counted_failures: int
    # Why it is dead, for the log and the attempts metric ("exhausted"), when it is.
    reason: str = ""


def backoff(*, attempt: int, base: float, cap: float, retry_after: float | None) -> float:
    """Exponential backoff with full jitter; never sooner than the receiver asked."""
    ceiling = min(cap, base * 2.0 ** min(MAX_DOUBLINGS, max(0, attempt - 1)))
    delay = random.uniform(0, ceiling)
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
    return delay


def asked_to_wait(error: TransientChannelError) -> bool:
    """The receiver said it is busy (429) or when to come back (Retry-After): such a try is not held against us."""
    return error.status_code == 429 or error.retry_after is not None


def after_failure(
    policy: RetryPolicy,
    error: TransientChannelError,
    *,
    attempt: int,
    started: datetime,
    now: datetime,
    failing_since: datetime | None,
    counted_failures: int,
) -> Verdict:
    """The verdict on try number `attempt` of a delivery, failed with a transient error, which had failed
    `counted_failures` counted tries before, since `failing_since` (None: this is its first failure)."""
    since = failing_since or started
    waited = asked_to_wait(error)
    counted = counted_failures + (0 if waited else 1)
    deadline = since + policy.retry_for
    if now >= deadline:
        return Verdict(None, since, counted, reason=f"failing for {_seconds(now - since)}, its retry_for")
    if policy.max_attempts is not None and counted >= policy.max_attempts:
        return Verdict(None, since, counted, reason=f"{counted} counted attempts, its max_attempts")
    # Every try, counted or not, doubles the delay: a receiver answering 429 without a time is backed off too.
    delay = backoff(attempt=attempt, base=policy.backoff_base, cap=policy.backoff_max, retry_after=error.retry_after)
    next_at = now + timedelta(seconds=delay)
    if error.retry_after is None:
        # The last try falls at the end of the budget rather than after it; only a receiver's own Retry-After
        # may put a try later, and that one is made: the receiver said it would be back then.
        next_at = min(next_at, deadline)
    return Verdict(next_at, since, counted)


def _seconds(span: timedelta) -> str:
    return f"{span.total_seconds():.0f}s"

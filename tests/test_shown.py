"""The record of what messages were just made to show (core/channels/shown.py): when an edit may be skipped."""

from __future__ import annotations

import asyncio

from core.channels.shown import ShownMessages

CARD = {"text": "Acknowledged by alice", "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "ok"}}]}
MESSAGE = ("slack", "C0OPS", "1700000000.000001")


class Ticks:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_an_edit_of_what_a_taken_answer_put_there_is_skipped_once() -> None:
    shown = ShownMessages()
    shown.placing(MESSAGE, CARD).settle(True)
    assert await shown.shows(MESSAGE, {**CARD}) is True
    # The record is spent: a second edit of the same content goes ahead.
    assert await shown.shows(MESSAGE, CARD) is False
    assert len(shown) == 0


async def test_other_content_another_message_or_a_refused_answer_is_edited() -> None:
    shown = ShownMessages()
    shown.placing(MESSAGE, CARD).settle(True)
    assert await shown.shows(("slack", "C0OPS", "1700000000.000002"), CARD) is False
    assert await shown.shows(MESSAGE, {**CARD, "text": "Denied by alice"}) is False
    shown.placing(MESSAGE, CARD).settle(False)
    assert await shown.shows(MESSAGE, CARD) is False


async def test_an_edit_waits_for_an_answer_on_its_way() -> None:
    shown = ShownMessages()
    taken = shown.placing(MESSAGE, CARD)
    edit = asyncio.create_task(shown.shows(MESSAGE, CARD))
    await asyncio.sleep(0.01)
    assert not edit.done()
    taken.settle(True)
    assert await edit is True

    refused = shown.placing(MESSAGE, CARD)
    edit = asyncio.create_task(shown.shows(MESSAGE, CARD))
    await asyncio.sleep(0.01)
    refused.settle(False)
    assert await edit is False


async def test_an_answer_that_never_settles_does_not_hold_the_edit() -> None:
    shown = ShownMessages()
    shown.WAIT = 0.05
    shown.placing(MESSAGE, CARD)
    assert await shown.shows(MESSAGE, CARD) is False


async def test_records_expire_and_are_bounded() -> None:
    clock = Ticks()
    shown = ShownMessages(clock=clock)
    shown.placing(MESSAGE, CARD).settle(True)
    clock.now += shown.TTL + 1
    assert await shown.shows(MESSAGE, CARD) is False

    shown.SIZE = 3
    placements = [shown.placing(("slack", "C0OPS", str(i)), CARD) for i in range(5)]
    assert len(shown) == 3
    # The oldest were dropped, and an edit that was waiting on them would go ahead.
    assert placements[0].outcome.result() is False and placements[1].outcome.result() is False
    for placement in placements[2:]:
        placement.settle(True)
    assert await shown.shows(("slack", "C0OPS", "4"), CARD) is True
    assert await shown.shows(("slack", "C0OPS", "0"), CARD) is False

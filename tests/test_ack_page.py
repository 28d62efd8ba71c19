"""The web ack page: GET shows and changes nothing, POST with the page's CSRF value decides, errors are pages."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from core.approvals import DecisionReason
from core.models.approvals import ApprovalState
from core.store.tables import AuditRow, SpentNonceRow
from tests import test_approvals
from tests.test_approvals import ALICE, Harness, HarnessFactory

harness = test_approvals.harness

CSP = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"


def csrf_of(page: str) -> str:
    match = re.search(r'name=csrf value="([0-9a-f]{64})"', page)
    assert match, page
    return match.group(1)


def assert_safe_headers(resp: Any) -> None:
    assert resp.headers["Content-Security-Policy"] == CSP
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert resp.headers["Referrer-Policy"] == "no-referrer"
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.headers["Content-Type"].startswith("text/html")


async def _emailed_link(h: Harness, **fields: Any) -> tuple[str, str]:
    """An approval sent to carol by e-mail; returns (approval id, path of her Acknowledge link)."""
    created = await h.create(targets=["person:carol"], approvers=["leads"], **fields)
    await h.dispatch()
    (note,) = [n for n in h.recorder.sent if n.approval and n.approval.id == created["id"]]
    button = next(b for b in note.buttons if b.choice == "acknowledge")
    assert button.url.startswith("http://ackbot.test/ack/")
    return created["id"], button.url.removeprefix("http://ackbot.test")


async def test_get_shows_a_confirmation_and_changes_nothing(harness: HarnessFactory) -> None:
    h = await harness()
    approval_id, link = await _emailed_link(h, title="Rotate <prod> keys & certs", summary="why:\n<b>now</b>")
    for _ in range(3):  # a mail scanner, a link preview, then the person
        resp = await h.client.get(link)
        assert resp.status == 200
        assert_safe_headers(resp)
        page = await resp.text()
        assert "Rotate &lt;prod&gt; keys &amp; certs" in page and "<b>now</b>" not in page
        assert "&lt;b&gt;now&lt;/b&gt;" in page and "carol" in page and "Acknowledge" in page
        assert "Link valid until" in page and "2026-01-05 13:00 UTC" in page
        assert '<form method=post action="/ack/' in page and "<script" not in page
    assert await h.state(approval_id) is ApprovalState.pending
    assert await h.count(SpentNonceRow) == 0
    assert await h.count(AuditRow, AuditRow.type.like("approval.%"), AuditRow.type != "approval.created") == 0
    assert (await h.client.head(link)).status == 200


async def test_post_needs_the_pages_csrf_value(harness: HarnessFactory) -> None:
    h = await harness()
    approval_id, link = await _emailed_link(h)
    csrf = csrf_of(await (await h.client.get(link)).text())
    refused = [
        {},
        {"csrf": ""},
        {"csrf": "0" * 64},
        {"csrf": csrf[:-1] + ("0" if csrf[-1] != "0" else "1")},
    ]
    for form in refused:
        resp = await h.client.post(link, data=form)
        assert resp.status == 403, form
        assert_safe_headers(resp)
        assert "Nothing was recorded" in await resp.text()
    # The CSRF value of another link does not fit this one.
    other_id, other_link = await _emailed_link(h)
    other_csrf = csrf_of(await (await h.client.get(other_link)).text())
    assert (await h.client.post(link, data={"csrf": other_csrf})).status == 403
    # A form posted from another site is refused even with the right value.
    resp = await h.client.post(link, data={"csrf": csrf}, headers={"Origin": "https://evil.example"})
    assert resp.status == 403
    resp = await h.client.post(link, data={"csrf": csrf}, headers={"Referer": "https://evil.example/page"})
    assert resp.status == 403
    assert await h.state(approval_id) is ApprovalState.pending and await h.count(SpentNonceRow) == 0

    # Our own page's form: Origin "null" under Referrer-Policy no-referrer, or our own host.
    resp = await h.client.post(link, data={"csrf": csrf}, headers={"Origin": "null"})
    assert resp.status == 200, await resp.text()
    assert_safe_headers(resp)
    assert "Acknowledged by carol" in await resp.text()
    approval = await h.runtime.approvals.get(approval_id=approval_id)
    assert approval is not None and approval.state is ApprovalState.acknowledged and approval.decided_by == "carol"
    assert approval.decision_channel == "mail"
    # The same link again: already decided, by whom and when, as a page with a 409.
    resp = await h.client.post(link, data={"csrf": csrf})
    assert resp.status == 409 and "Already acknowledged by carol at 2026-01-05 12:00 UTC" in await resp.text()
    resp = await h.client.get(link)
    assert resp.status == 409 and "Already acknowledged by carol" in await resp.text()
    assert await h.state(other_id) is ApprovalState.pending


async def test_error_pages(harness: HarnessFactory) -> None:
    h = await harness(tokens={"ttl": "30m"})
    for bad in ("nonsense", "x" * 2100, "a.b"):
        resp = await h.client.get(f"/ack/{bad}")
        assert resp.status in (400, 404), bad
        if resp.status == 400:
            assert_safe_headers(resp)
            assert "not valid" in await resp.text()
    # A link to a channel (no person) cannot say who decides.
    created = await h.create(targets=["chat"])
    await h.dispatch()
    token = h.buttons(created["id"])["acknowledge"]
    resp = await h.client.get(f"/ack/{token}")
    assert resp.status == 403 and "not sent to a particular person" in await resp.text()
    # Expired link: a 410 page; once the approval itself expired, the page says so.
    approval_id, link = await _emailed_link(h)
    h.clock.advance(timedelta(minutes=31))
    resp = await h.client.get(link)
    assert resp.status == 410 and "expired" in await resp.text()
    h.clock.advance(timedelta(minutes=30))
    await h.runtime.approvals.run_once()
    resp = await h.client.get(link)
    assert resp.status == 410 and "This approval expired at 2026-01-05 13:01 UTC" in await resp.text()
    resp = await h.client.post(link, data={"csrf": h.runtime.approvals.keys.csrf_for(link.removeprefix("/ack/"))})
    assert resp.status == 410
    assert await h.state(approval_id) is ApprovalState.expired


async def test_the_page_decides_through_the_same_checks(harness: HarnessFactory) -> None:
    h = await harness()
    # carol is not among the approvers of this one: the page says so and records nothing.
    created = await h.create(targets=["person:carol"], approvers=["oncall"])
    await h.dispatch()
    (note,) = h.recorder.sent
    link = note.buttons[0].url.removeprefix("http://ackbot.test")
    resp = await h.client.get(link)
    assert resp.status == 403 and "carol is not an approver" in await resp.text()
    resp = await h.client.post(link, data={"csrf": h.runtime.approvals.keys.csrf_for(link.removeprefix("/ack/"))})
    assert resp.status == 403
    assert await h.state(created["id"]) is ApprovalState.pending
    # Decided in chat meanwhile: the page shows who decided.
    other_id, other_link = await _emailed_link(h)
    result = await h.runtime.approvals.decide_by_id(approval_id=other_id, choice="deny", actor=ALICE)
    assert result.reason is DecisionReason.not_approver  # alice is not in leads
    await h.runtime.approvals.decide_by_id(approval_id=other_id, choice="deny", actor=test_approvals.ERIN)
    resp = await h.client.get(other_link)
    assert resp.status == 409 and "Already denied by erin" in await resp.text()

"""The web ack page: the link in an e-mail (or any message without buttons) leads here.

GET /ack/{token} shows what the link will record and changes nothing: mail scanners and link previews fetch
every link they see. POST /ack/{token}, from the page's own form, decides through the same
`approvals.decide` every other surface calls. The form carries a CSRF value (an HMAC of the ack token under a
server secret); a cross-site Origin or Referer is refused as well. Every page is plain, escaped HTML with a
strict Content-Security-Policy; errors are friendly pages with a 4xx status, never a traceback.
"""

from __future__ import annotations

import html
import logging
import uuid
from datetime import datetime
from urllib.parse import urlsplit

from aiohttp import web

from bot.handlers.http import runtime_of
from core.approvals import CHOICE_LABELS, DecisionReason, DecisionResult, Preview
from core.models.approvals import Approval, Choice
from core.models.people import Actor

log = logging.getLogger("ackbot.ack_page")

CSRF_FIELD = "csrf"
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}
# The most of a form body read: one CSRF value, with room to spare.
MAX_FORM_BYTES = 4096

_CSS = """
body{font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f4f5f7;color:#172b4d}
main{max-width:34rem;margin:0 auto;padding:1.5rem 1rem}
.card{background:#fff;border-radius:8px;padding:1.25rem 1.5rem;box-shadow:0 1px 3px rgba(0,0,0,.12)}
h1{font-size:1.3rem;margin:0 0 .75rem;overflow-wrap:anywhere}
p.summary{white-space:pre-wrap;overflow-wrap:anywhere;color:#42526e}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.3rem 1rem;margin:1rem 0}
dt{color:#6b778c}dd{margin:0;overflow-wrap:anywhere}
button{font:inherit;font-weight:600;width:100%;padding:.8rem;border:0;border-radius:6px;color:#fff;
background:#0052cc;cursor:pointer}
button.deny{background:#de350b}button.escalate{background:#ff8b00}
.note{color:#6b778c;font-size:.9rem}.ok{color:#006644}.bad{color:#bf2600}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else "—"


def page(title: str, body: str, *, status: int = 200) -> web.Response:
    """A whole HTML page around body (already escaped), with the security headers."""
    document = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        '<meta name=robots content="noindex,nofollow">'
        f"<title>{_e(title)} · ackbot</title><style>{_CSS}</style></head>"
        f"<body><main><div class=card>{body}</div><p class=note>ackbot</p></main></body></html>"
    )
    response = web.Response(text=document, status=status, content_type="text/html", charset="utf-8")
    response.headers.update(SECURITY_HEADERS)
    return response


def _facts(approval: Approval | None, rows: list[tuple[str, str]]) -> str:
    items = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in rows)
    return f"<dl>{items}</dl>" if items else ""


def _heading(approval: Approval | None) -> str:
    if approval is None:
        return ""
    summary = f"<p class=summary>{_e(approval.summary)}</p>" if approval.summary else ""
    return f"<h1>{_e(approval.title)}</h1>{summary}"


def refusal_page(result: DecisionResult, *, heading: str = "This link cannot be used") -> web.Response:
    """A refusal, said plainly, with the status that fits its reason."""
    approval = result.approval
    rows: list[tuple[str, str]] = []
    if approval is not None:
        rows.append(("State", approval.state.value))
        if approval.decided_by:
            rows.append(("Decided by", approval.decided_by))
        if approval.decided_at:
            rows.append(("At", _when(approval.decided_at)))
    body = (
        f"{_heading(approval)}<h2 class=bad>{_e(heading)}</h2><p>{_e(result.message)}</p>"
        f"{_facts(approval, rows)}<p class=note>Nothing was recorded.</p>"
    )
    return page(heading, body, status=result.http_status)


def confirm_page(preview: Preview, *, token: str, csrf: str, action: str) -> web.Response:
    """The confirmation form: the question, the answer this link gives, who it is recorded as, until when."""
    approval, claims, person, choice = preview.approval, preview.claims, preview.person, preview.choice
    assert approval is not None and claims is not None and person is not None and choice is not None
    label = CHOICE_LABELS.get(choice, choice.value)
    rows = [
        ("Your answer", label),
        ("Recorded as", f"{person.display_name} ({person.name})" if person.display_name else person.name),
        ("Link valid until", _when(claims.expires_at)),
        ("Approval expires", _when(approval.expires_at)),
    ]
    if approval.requester:
        rows.insert(0, ("Requested by", approval.requester))
    if approval.quorum > 1:
        rows.append(("Needs", f"{approval.quorum} acknowledgements"))
    css = {Choice.deny: "deny", Choice.escalate: "escalate"}.get(choice, "acknowledge")
    body = (
        f"{_heading(approval)}{_facts(approval, rows)}"
        f'<form method=post action="{_e(action)}">'
        f'<input type=hidden name={CSRF_FIELD} value="{_e(csrf)}">'
        f"<button type=submit class={css}>{_e(label)}</button></form>"
        "<p class=note>Nothing is recorded until you press the button.</p>"
    )
    return page(f"{label}: {approval.title}", body)


def done_page(result: DecisionResult) -> web.Response:
    """What the click did."""
    approval = result.approval
    rows: list[tuple[str, str]] = []
    if approval is not None:
        rows.append(("State", approval.state.value))
        if result.quorum > 1:
            rows.append(("Acknowledgements", f"{result.votes} of {result.quorum}"))
    body = f"{_heading(approval)}<h2 class=ok>{_e(result.message)}</h2>{_facts(approval, rows)}"
    return page("Recorded", body)


def _same_origin(request: web.Request, public_url: str) -> bool:
    allowed = {request.host.lower()}
    if public_url:
        allowed.add(urlsplit(public_url).netloc.lower())
    origin = request.headers.get("Origin")
    # Our pages say Referrer-Policy: no-referrer, under which browsers send "Origin: null" for our own form.
    if origin and origin != "null":
        try:
            if urlsplit(origin).netloc.lower() not in allowed:
                return False
        except ValueError:
            return False
    referer = request.headers.get("Referer")
    if referer:
        try:
            return urlsplit(referer).netloc.lower() in allowed
        except ValueError:
            return False
    return True


def _error(request: web.Request) -> web.Response:
    request_id = uuid.uuid4().hex[:16]
    log.exception("ack page %s failed (request id %s)", request.method, request_id)
    body = (
        "<h2 class=bad>Something went wrong</h2><p>Nothing was recorded. Please try the link again in a minute.</p>"
        f"<p class=note>Request id {_e(request_id)}</p>"
    )
    return page("Something went wrong", body, status=500)


async def show(request: web.Request) -> web.Response:
    """GET /ack/{token}: the confirmation page. Reads only."""
    try:
        token = request.match_info["token"]
        approvals = runtime_of(request).approvals
        preview = await approvals.preview(token=token)
        if preview.refusal is not None:
            return refusal_page(preview.refusal)
        return confirm_page(preview, token=token, csrf=approvals.keys.csrf_for(token), action=request.path)
    except Exception:
        return _error(request)


async def submit(request: web.Request) -> web.Response:
    """POST /ack/{token}: the form's button. Checks the CSRF value and the origin, then decides."""
    try:
        token = request.match_info["token"]
        runtime = runtime_of(request)
        approvals = runtime.approvals
        forbidden = DecisionResult(
            ok=False,
            reason=DecisionReason.not_approver,
            message="This form did not come from ackbot's page, or it is stale. Open the link again.",
        )
        if request.content_length is not None and request.content_length > MAX_FORM_BYTES:
            return refusal_page(forbidden.model_copy(update={"message": "The form is too large."}))
        if not _same_origin(request, runtime.public_url):
            return refusal_page(forbidden, heading="Refused")
        form = await request.post()
        value = form.get(CSRF_FIELD)
        if not isinstance(value, str) or not approvals.keys.check_csrf(token, value):
            return refusal_page(forbidden, heading="Refused")
        claims = approvals.keys.authenticated_claims(token)
        # On the web the person is the one the link was sent to; the token is bound to them.
        actor = Actor(platform="web", id=(claims.subject if claims and claims.subject else ""))
        result = await approvals.decide(token=token, actor=actor)
        if not result.ok:
            return refusal_page(result)
        return done_page(result)
    except Exception:
        return _error(request)


def routes() -> list[web.RouteDef]:
    """The web ack page."""
    return [web.get("/ack/{token}", show), web.post("/ack/{token}", submit)]

"""The HTML e-mail views of what is not one notification: a digest's and a report's tables.

They read only the JSON the domain put in Delivery.extra (core.digests builds extra["digest"], core.reports
extra["report"]), so the e-mail channel renders them without importing the domain. Every piece of content is
escaped.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from typing import Any


def page_start(title: str) -> list[str]:
    """The first lines of every ackbot HTML e-mail, down to its heading."""
    return [
        "<!DOCTYPE html>",
        '<html><head><meta charset="utf-8"></head>',
        '<body style="font-family: sans-serif; font-size: 14px; color: #1d1c1d;">',
        f"<h2>{html.escape(title)}</h2>",
    ]


def _table(opening: str, headers: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """The lines of a table: its opening tag, a header row, then a row per item with every cell escaped."""
    return [
        opening,
        "<tr>" + "".join(f"<th>{header}</th>" for header in headers) + "</tr>",
        *("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in rows),
        "</table>",
    ]


def digest_html(extra: dict[str, Any]) -> str:
    """The digest as an HTML e-mail: a table of groups and a table of the top alerts (all content escaped)."""
    e = html.escape
    digest = extra["digest"]
    parts = [
        *page_start(str(extra.get("title", "Digest"))),
        f"<p>{digest['total']} alerts, {digest['events']} events, until {e(digest['window_end'])}</p>",
        '<table cellpadding="4" border="1" style="border-collapse: collapse;">',
        "<tr><th align='left'>Group</th><th align='right'>Alerts</th></tr>",
    ]
    for name, count in sorted(digest["groups"].items(), key=lambda kv: (-kv[1], kv[0])):
        parts.append(f"<tr><td>{e(name)}</td><td align='right'>{count}</td></tr>")
    parts.append("</table>")
    if digest["items"]:
        parts.append('<table cellpadding="4" border="1" style="border-collapse: collapse; margin-top: 12px;">')
        parts.append("<tr><th>Severity</th><th>Alert</th><th>Scope</th><th>Events</th><th>Status</th></tr>")
        for item in digest["items"]:
            where = " ".join(p for p in (item["scope"].get("namespace"), item["scope"].get("repo")) if p)
            parts.append(
                f"<tr><td>{e(item['severity'])}</td><td>{e(item['title'])}</td><td>{e(where)}</td>"
                f"<td align='right'>{item['digest_events']}</td><td>{e(item['status'])}</td></tr>"
            )
        parts.append("</table>")
    if digest["more"]:
        link = digest.get("link")
        more = f"and {digest['more']} more"
        parts.append(f'<p><a href="{e(link)}">{more}</a></p>' if link else f"<p>{more}</p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def report_html(extra: dict[str, Any]) -> str:
    """The report as an HTML e-mail: one table per section, every piece of content escaped."""
    e = html.escape
    report = extra["report"]
    table = '<table cellpadding="4" border="1" style="border-collapse: collapse; margin-bottom: 16px;">'
    parts = [
        *page_start(str(extra.get("title", "ackbot report"))),
        f"<p>Generated {e(report['generated_at'])}</p>",
    ]
    open_alerts = report["open_alerts"]
    parts.append(f"<h3>Open alerts: {open_alerts['total']}</h3>")
    if open_alerts["items"]:
        parts += _table(
            table,
            ("Severity", "Alert", "Namespace", "Since", "Id"),
            [
                (a["severity"], a["title"], a["scope"].get("namespace", ""), a["first_seen"], a["id"])
                for a in open_alerts["items"]
            ],
        )
    approvals = report["pending_approvals"]
    if approvals["available"]:
        parts.append(f"<h3>Pending approvals: {approvals['total']}</h3>")
        if approvals["items"]:
            parts += _table(
                table,
                ("Approval", "State", "Requested by", "Expires"),
                [(a["title"], a["state"], a.get("requester") or "", a["expires_at"]) for a in approvals["items"]],
            )
    else:
        parts.append(f"<p>Pending approvals are not included: {e(str(approvals['note']))}.</p>")
    expiring = report["expiring"]
    parts.append(f"<h3>Expiring within {expiring['within_days']} days: {expiring['total']}</h3>")
    if expiring["items"]:
        parts += _table(
            table,
            ("What", "Expires", "Days left", "Alert"),
            [
                (
                    item["alert"]["title"],
                    item["expires_at"],
                    "expired" if item["expired"] else str(item["days_left"]),
                    item["alert"]["id"],
                )
                for item in expiring["items"]
            ],
        )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"

"""The Teams app package admins upload: manifest.json and two PNG icons in a zip (`ackbot teams package`).

The manifest follows Microsoft's app manifest schema v1.22 (the current version when this was written; v1.18
was never published). The bot is offered in teams, group chats and 1:1 (personal) chats, with the text commands
it understands as its command list. Icons are drawn here and written as PNGs with zlib and struct (no imaging
library): the 192x192 color icon is a check mark on the accent color, the 32x32 outline icon the same check mark
in white on transparent, as Teams requires.
"""

from __future__ import annotations

import json
import re
import struct
import zipfile
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bot.handlers.teams_commands import COMMANDS

MANIFEST_VERSION = "1.22"
MANIFEST_SCHEMA = f"https://developer.microsoft.com/json-schemas/teams/v{MANIFEST_VERSION}/MicrosoftTeams.schema.json"
SCOPES = ("team", "personal", "groupChat")
COLOR_ICON = "color.png"
OUTLINE_ICON = "outline.png"
COLOR_SIZE = 192
OUTLINE_SIZE = 32
DEFAULT_ACCENT = "#4F46E5"

# The manifest schema's limits.
SHORT_NAME_MAX = 30
FULL_NAME_MAX = 100
SHORT_DESCRIPTION_MAX = 80
FULL_DESCRIPTION_MAX = 4000
COMMAND_TITLE_MAX = 32
COMMAND_DESCRIPTION_MAX = 128
COMMANDS_MAX = 10

_GUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_SEMVER_RE = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")
_COLOR_RE = re.compile(r"^#[0-9a-fA-F]{6}$")

SHORT_DESCRIPTION = "Alerts and approvals with Acknowledge, Deny and Escalate buttons."
FULL_DESCRIPTION = (
    "ackbot posts alerts and approval requests from your systems as cards with Acknowledge, Deny and Escalate "
    "buttons. A click is recorded once, every copy of the message is updated, and whatever waited on the "
    "decision carries on. In a chat with ackbot, or by @mentioning it in a channel: list (open alerts), "
    "pending (approvals waiting for you), ack <id>, test <channel>, status and help."
)


class PackageError(ValueError):
    """The package cannot be built from these arguments; the message says which one is wrong."""


# ---------------------------------------------------------------- PNG


def png(width: int, height: int, pixel: Callable[[int, int], tuple[int, int, int, int]]) -> bytes:
    """An 8-bit RGBA PNG whose pixel (x, y) is pixel(x, y)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = bytearray()
    for y in range(height):
        rows.append(0)  # filter type: None
        for x in range(width):
            rows.extend(pixel(x, y))
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)  # 8 bits, RGBA, deflate, no filter, no interlace
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(rows), 9))
        + chunk(b"IEND", b"")
    )


# The check mark, in a unit square: two strokes meeting at the bottom.
_CHECK: tuple[tuple[tuple[float, float], tuple[float, float]], ...] = (
    ((0.24, 0.52), (0.42, 0.70)),
    ((0.42, 0.70), (0.76, 0.32)),
)


def _distance(px: float, py: float, a: tuple[float, float], b: tuple[float, float]) -> float:
    """Distance from a point to a segment."""
    ax, ay = a
    bx, by = b
    dx, dy = bx - ax, by - ay
    t = max(0.0, min(1.0, ((px - ax) * dx + (py - ay) * dy) / (dx * dx + dy * dy)))
    cx, cy = ax + t * dx, ay + t * dy
    return float(((px - cx) ** 2 + (py - cy) ** 2) ** 0.5)


def _on_check(x: int, y: int, size: int, stroke: float) -> bool:
    px, py = (x + 0.5) / size, (y + 0.5) / size
    return any(_distance(px, py, a, b) <= stroke / 2 for a, b in _CHECK)


def _rgb(color: str) -> tuple[int, int, int]:
    return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)


def color_icon(accent: str = DEFAULT_ACCENT, size: int = COLOR_SIZE) -> bytes:
    """The full-color icon: a white check mark on the accent color, edge to edge."""
    background = (*_rgb(accent), 255)
    white = (255, 255, 255, 255)
    return png(size, size, lambda x, y: white if _on_check(x, y, size, 0.11) else background)


def outline_icon(size: int = OUTLINE_SIZE) -> bytes:
    """The outline icon: the check mark in white on a transparent background (no other colors, as Teams asks)."""
    white = (255, 255, 255, 255)
    clear = (0, 0, 0, 0)
    return png(size, size, lambda x, y: white if _on_check(x, y, size, 0.14) else clear)


# ---------------------------------------------------------------- manifest


def _https_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise PackageError(f"--url must be the https:// address Teams reaches ackbot at, not {url!r}")
    return url.rstrip("/")


def build_manifest(
    *,
    app_id: str,
    url: str,
    name: str = "ackbot",
    version: str = "1.0.0",
    developer: str = "ackbot",
    accent: str = DEFAULT_ACCENT,
    privacy_url: str | None = None,
    terms_url: str | None = None,
    commands: Sequence[tuple[str, str]] = COMMANDS,
) -> dict[str, Any]:
    """The app manifest for the bot registered under app_id and served at url."""
    if not _GUID_RE.match(app_id):
        raise PackageError(f"--app-id must be the bot's Microsoft App ID (a GUID), not {app_id!r}")
    if not _SEMVER_RE.match(version):
        raise PackageError(f"--version must be MAJOR.MINOR.PATCH, not {version!r}")
    if not _COLOR_RE.match(accent):
        raise PackageError(f"the accent color must be #RRGGBB, not {accent!r}")
    if not name.strip() or len(name) > SHORT_NAME_MAX:
        raise PackageError(f"--name must be 1 to {SHORT_NAME_MAX} characters")
    website = _https_url(url)
    host = urlsplit(website).hostname or ""
    listed = [
        {"title": title[:COMMAND_TITLE_MAX], "description": description[:COMMAND_DESCRIPTION_MAX]}
        for title, description in commands[:COMMANDS_MAX]
    ]
    return {
        "$schema": MANIFEST_SCHEMA,
        "manifestVersion": MANIFEST_VERSION,
        "version": version,
        "id": app_id.lower(),
        "developer": {
            "name": developer[:32],
            "websiteUrl": website,
            "privacyUrl": _https_url(privacy_url) if privacy_url else website,
            "termsOfUseUrl": _https_url(terms_url) if terms_url else website,
        },
        "name": {"short": name, "full": f"{name}: alerts and approvals"[:FULL_NAME_MAX]},
        "description": {
            "short": SHORT_DESCRIPTION[:SHORT_DESCRIPTION_MAX],
            "full": FULL_DESCRIPTION[:FULL_DESCRIPTION_MAX],
        },
        "icons": {"color": COLOR_ICON, "outline": OUTLINE_ICON},
        "accentColor": accent.upper(),
        "bots": [
            {
                "botId": app_id.lower(),
                "scopes": list(SCOPES),
                "isNotificationOnly": False,
                "supportsFiles": False,
                "supportsCalling": False,
                "supportsVideo": False,
                "commandLists": [{"scopes": list(SCOPES), "commands": listed}],
            }
        ],
        "permissions": ["identity", "messageTeamMembers"],
        "validDomains": [host],
    }


def write_package(out: Path, manifest: dict[str, Any], *, accent: str = DEFAULT_ACCENT) -> Path:
    """Write the zip Teams admins upload: manifest.json and the two icons, at the root of the archive."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("manifest.json", json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
        archive.writestr(COLOR_ICON, color_icon(accent))
        archive.writestr(OUTLINE_ICON, outline_icon())
    return out

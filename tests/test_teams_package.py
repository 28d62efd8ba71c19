"""`ackbot teams package`: the zip Teams admins upload, opened and checked as Teams would."""

from __future__ import annotations

import json
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any

import pytest

from bot.cli import main
from bot.teams.package import MANIFEST_SCHEMA, build_manifest, color_icon, outline_icon

APP_ID = "0e2f6c1a-52b4-4c6e-9f1d-2a7b3c4d5e6f"


def read_png(data: bytes) -> tuple[int, int, list[list[tuple[int, ...]]]]:
    """Width, height and RGBA rows of an 8-bit RGBA PNG, checking its signature, chunk CRCs and filters."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, chunks = 8, []
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        (crc,) = struct.unpack(">I", data[position + 8 + length : position + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF, f"bad CRC in {kind!r}"
        chunks.append((kind, body))
        position += 12 + length
    assert chunks[0][0] == b"IHDR" and chunks[-1][0] == b"IEND"
    width, height, depth, color_type, compression, filtering, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (depth, color_type, compression, filtering, interlace) == (8, 6, 0, 0, 0)
    raw = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    stride = 1 + 4 * width
    assert len(raw) == stride * height
    rows = []
    for y in range(height):
        line = raw[y * stride : (y + 1) * stride]
        assert line[0] == 0  # no filter
        rows.append([tuple(line[1 + 4 * x : 5 + 4 * x]) for x in range(width)])
    return width, height, rows


def test_package_holds_the_manifest_and_valid_icons(tmp_path: Path, capsys: Any) -> None:
    out = tmp_path / "pkg" / "ackbot-teams.zip"
    code = main(
        ["teams", "package", "--app-id", APP_ID, "--url", "https://ackbot.example.com:8443/", "--out", str(out)]
    )
    assert code == 0
    assert str(out) in capsys.readouterr().out
    with zipfile.ZipFile(out) as archive:
        assert sorted(archive.namelist()) == ["color.png", "manifest.json", "outline.png"]
        manifest = json.loads(archive.read("manifest.json"))
        color = archive.read("color.png")
        outline = archive.read("outline.png")

    assert manifest["$schema"] == MANIFEST_SCHEMA
    assert manifest["$schema"].startswith("https://developer.microsoft.com/json-schemas/teams/v1.")
    assert manifest["manifestVersion"] == "1.22" and f"/v{manifest['manifestVersion']}/" in manifest["$schema"]
    assert manifest["id"] == APP_ID and manifest["version"] == "1.0.0"
    assert manifest["icons"] == {"color": "color.png", "outline": "outline.png"}
    assert manifest["validDomains"] == ["ackbot.example.com"]
    assert manifest["developer"]["websiteUrl"] == "https://ackbot.example.com:8443"
    assert len(manifest["name"]["short"]) <= 30 and len(manifest["description"]["short"]) <= 80
    (bot,) = manifest["bots"]
    assert bot["botId"] == APP_ID
    assert set(bot["scopes"]) == {"team", "personal", "groupChat"}
    (commands,) = bot["commandLists"]
    assert set(commands["scopes"]) == {"team", "personal", "groupChat"}
    assert [c["title"] for c in commands["commands"]] == ["list", "pending", "ack", "silence", "test", "status", "help"]
    assert all(len(c["title"]) <= 32 and 0 < len(c["description"]) <= 128 for c in commands["commands"])

    width, height, rows = read_png(color)
    assert (width, height) == (192, 192)
    pixels = {p for row in rows for p in row}
    assert all(p[3] == 255 for p in pixels), "the color icon is opaque"
    assert (255, 255, 255, 255) in pixels and (0x4F, 0x46, 0xE5, 255) in pixels

    width, height, rows = read_png(outline)
    assert (width, height) == (32, 32)
    pixels = {p for row in rows for p in row}
    # Teams: the outline icon is white on transparent, nothing else.
    assert pixels == {(255, 255, 255, 255), (0, 0, 0, 0)}


@pytest.mark.parametrize(
    ("app_id", "url", "message"),
    [
        ("not-a-guid", "https://ackbot.example.com", "--app-id"),
        (APP_ID, "http://ackbot.example.com", "https://"),
        (APP_ID, "ackbot.example.com", "https://"),
    ],
)
def test_bad_arguments_are_refused(tmp_path: Path, capsys: Any, app_id: str, url: str, message: str) -> None:
    out = tmp_path / "x.zip"
    assert main(["teams", "package", "--app-id", app_id, "--url", url, "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_icons_are_deterministic() -> None:
    assert color_icon() == color_icon() and outline_icon() == outline_icon()
    manifest = build_manifest(app_id=APP_ID.upper(), url="https://a.example", version="2.3.4", name="ops-bot")
    assert manifest["id"] == APP_ID and manifest["version"] == "2.3.4" and manifest["name"]["short"] == "ops-bot"

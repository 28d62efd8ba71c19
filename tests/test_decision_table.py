"""The approvals decision table against its golden files, on SQLite and PostgreSQL.

Each scenario of tests/decision_table.py runs on a fresh database and must answer and write exactly what its file
in tests/golden/decisions says. A file may hold a "postgres" key: what PostgreSQL answers and writes where it
really differs from SQLite (the base).

Regenerate with ACKBOT_REGEN_GOLDEN=1: the SQLite run rewrites each file's base, then the PostgreSQL run adds its
own key only where it differs (run SQLite first: `-k sqlite`, then `-k postgres`, or both at once, which runs each
scenario on SQLite before PostgreSQL).
"""

from __future__ import annotations

import difflib
import json
import os
from typing import Any

import pytest

from tests.decision_table import GOLDEN_DIR, SCENARIOS, dumps, golden_path, run_scenario

REGEN = os.environ.get("ACKBOT_REGEN_GOLDEN") == "1"
STORE_KEYS = ("result", "writes")


def _store(database_url: str) -> str:
    return "postgres" if database_url.startswith("postgresql") else "sqlite"


def _expected(document: dict[str, Any], store: str) -> dict[str, Any]:
    """The file as this store must produce it: the base, with this store's own key where it has one."""
    expected = {key: value for key, value in document.items() if key != "postgres"}
    expected.update(document.get(store, {}) if store == "postgres" else {})
    return expected


def _regenerate(name: str, store: str, got: dict[str, Any]) -> None:
    path = golden_path(name)
    current: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    if store == "sqlite":
        document = dict(got)
        postgres = current.get("postgres")
        if postgres and any(postgres.get(key) != got[key] for key in STORE_KEYS):
            document["postgres"] = postgres
    else:
        if not current:
            pytest.fail(f"regenerate {name} on SQLite first (ACKBOT_REGEN_GOLDEN=1 pytest -k sqlite)")
        document = {key: value for key, value in current.items() if key != "postgres"}
        if any(current.get(key) != got[key] for key in STORE_KEYS):
            document["postgres"] = {key: got[key] for key in STORE_KEYS}
    GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
    path.write_text(dumps(document))


def test_the_table_has_a_golden_file_per_scenario() -> None:
    if REGEN:
        for path in GOLDEN_DIR.glob("*.json"):
            if path.stem not in SCENARIOS:
                path.unlink()
        return  # the files are being written by the tests below
    files = {path.stem for path in GOLDEN_DIR.glob("*.json")}
    assert files == set(SCENARIOS), {"missing": sorted(set(SCENARIOS) - files), "extra": sorted(files - set(SCENARIOS))}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
async def test_decision(database_url: str, name: str) -> None:
    store = _store(database_url)
    got = await run_scenario(database_url, SCENARIOS[name])
    if REGEN:
        _regenerate(name, store, got)
    path = golden_path(name)
    assert path.exists(), f"no golden file for {name}: run with ACKBOT_REGEN_GOLDEN=1"
    expected = _expected(json.loads(path.read_text()), store)
    if got != expected:
        diff = difflib.unified_diff(
            dumps(expected).splitlines(), dumps(got).splitlines(), f"golden ({store})", "today", lineterm=""
        )
        pytest.fail(f"{name} on {store} differs from {path.name}:\n" + "\n".join(diff), pytrace=False)

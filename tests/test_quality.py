"""The checks CI holds the code to: ruff (lint and format) and mypy strict, run as part of the suite."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = BIN / name
    found = str(path) if path.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: pip install -e '.[test]'")
    return found


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)


def test_ruff_lint() -> None:
    result = _run(_tool("ruff"), "check", "core", "bot", "tests", "bench", "tools")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format() -> None:
    result = _run(_tool("ruff"), "format", "--check", "core", "bot", "tests", "bench", "tools")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict() -> None:
    result = _run(_tool("mypy"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_core_imports_no_chat_platform() -> None:
    offenders = []
    for path in (ROOT / "core").rglob("*.py"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            stripped = line.strip()
            if stripped.startswith(("import ", "from ")) and any(
                stripped.split()[1].startswith(m) for m in ("bot", "slack_bolt", "slack_sdk", "botbuilder")
            ):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {stripped}")
    assert offenders == []


# ---------------------------------------------------------------- structure

MAX_CORE_LINES = 600
# Modules allowed over MAX_CORE_LINES: none.
OVERSIZED_CORE: set[str] = set()
# Alembic migrations are generated once and never edited again: their length costs nothing.
MIGRATIONS = "core/store/migrations/versions/"
SESSION_CALLS = (".sessions(", ".transaction(", ".single_statements(", ".direct_reads(")


def _modules() -> dict[str, Path]:
    """Every module of core/ and bot/ by dotted name (a package by its own name)."""
    found: dict[str, Path] = {}
    for package in ("core", "bot"):
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules of core/ and bot/ a module imports anywhere: at the top, in functions, under TYPE_CHECKING."""

    def known(dotted: str) -> str | None:
        while dotted and dotted not in modules:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets.update(t for alias in node.names if (t := known(alias.name)) is not None)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            # `from a import b` imports a.b when b is a module, else a.
            targets.update(t for alias in node.names if (t := known(f"{source}.{alias.name}")) is not None)
    targets.discard(name)
    return targets


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_core_modules_stay_small() -> None:
    oversized = []
    for path in sorted((ROOT / "core").rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        lines = len(path.read_text().splitlines())
        if lines > MAX_CORE_LINES and relative not in OVERSIZED_CORE and not relative.startswith(MIGRATIONS):
            oversized.append(f"{relative}: {lines} lines")
    assert not oversized, f"split by job (at most {MAX_CORE_LINES} lines a module):\n" + "\n".join(oversized)


def test_no_import_cycles() -> None:
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    described = [
        "; ".join(f"{m} -> {', '.join(sorted(graph[m] & set(cycle)))}" for m in cycle) for cycle in _cycles(graph)
    ]
    assert not described, "import cycles (move what both need where both import it one way):\n" + "\n".join(described)


def test_adapters_open_no_database_sessions() -> None:
    offenders = []
    for folder in ("bot/handlers", "bot/teams"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if any(call in line for call in SESSION_CALLS):
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "call a keyword-only core function that opens the session instead:\n" + "\n".join(offenders)


# What a channel module may import of core: other channels, the models and secrets. The domain (digests, reports,
# approvals, ingest, dispatch ...) imports channels, never the reverse.
CHANNEL_IMPORTS = ("core.channels", "core.models", "core.secrets")


def test_channels_import_no_domain_module() -> None:
    modules = _modules()
    offenders = [
        f"{name} -> {target}"
        for name, path in modules.items()
        if name.startswith("core.channels.")
        for target in sorted(_imports(name, path, modules))
        if target.startswith("core.")
        and not target.startswith(tuple(f"{m}." for m in CHANNEL_IMPORTS))
        and target not in CHANNEL_IMPORTS
    ]
    assert not offenders, "channel modules import a domain module:\n" + "\n".join(offenders)

"""The checks CI holds the code to: ruff (lint and format) and mypy strict, run as part of the suite."""

from __future__ import annotations

import ast
import re
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
# Database's two ways in (a read, a write transaction), and the engine's, however the handle is named.
SESSION_CALLS = re.compile(r"\b(db|database|engine)\.(read|transaction|connect|begin)\(|\.transaction\(")


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
                if SESSION_CALLS.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "call a keyword-only core function that opens the session instead:\n" + "\n".join(offenders)


# What a channel module may import of core: other channels, the models, secrets and URL redaction (leaves that
# import nothing of the domain). The domain (digests, reports, approvals, ingest, dispatch ...) imports channels,
# never the reverse.
CHANNEL_IMPORTS = ("core.channels", "core.models", "core.secrets", "core.url_redaction")


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


# The database libraries whose private names core/ and bot/ must not use: a release may rename or remove any of them
# (SQLAlchemy moves such names between minor versions, and now and then in a patch release), and the store's
# decisions depend on them.
_DB_LIBRARIES = ("sqlalchemy", "aiosqlite", "asyncpg")
# Their modules that are internal as a whole: SQLAlchemy's utilities (its greenlet bridge among them) and its
# adapters of asyncio drivers, which it documents only through the dialects built on them.
_INTERNAL_MODULES = ("sqlalchemy.util", "sqlalchemy.connectors", "sqlalchemy.testing")
# Private names of those libraries, flagged wherever they appear as an attribute or are defined as a method (the
# check cannot tell a library's object from ours, so ours must not take these names): those the store once reached
# for, and the hooks SQLAlchemy calls on an asyncio driver's objects.
_KNOWN_PRIVATE = frozenset(
    {
        "_connection",  # aiosqlite.Connection's sqlite3 connection; SQLAlchemy's adapters' driver connection
        "_execute",  # aiosqlite.Connection's trip to its thread
        "_adapt_connection",
        "_handle_exception",
        "_handle_exception_no_connection",
        "_handle_dbapi_exception",
        "_bind_processors",
        "_result_columns",
        "_cached_result_processor",
        "_cached_bind_processor",
        "_soft_closed_memoized",
        "_async_soft_close",
        "_dbapi_connection",
        "_connection_record",
        "_invalidate",
        "_proxied",
        "_is_server_side",
    }
)
# Documented public API that happens to begin with an underscore: SQLAlchemy's Row (_asdict, _mapping, _fields,
# _t, _tuple) and the named tuple's (_asdict, _fields, _replace, _make), which pg_direct's rows are.
_PUBLIC_UNDERSCORE = frozenset({"_asdict", "_mapping", "_fields", "_replace", "_make", "_t", "_tuple"})
# None is allowed: SQLite is reached through SQLAlchemy's own aiosqlite dialect and aiosqlite's public API.
_SANCTIONED: dict[tuple[str, str], int] = {}


def _is_db_module(module: str) -> bool:
    return module.split(".")[0] in _DB_LIBRARIES


def _private_db_uses(tree: ast.AST) -> list[tuple[int, str]]:
    """Where a module uses a private name of the database libraries: (line, what)."""
    found: list[tuple[int, str]] = []
    # Names bound to one of the libraries' modules in this file (import sqlalchemy as sa, import asyncpg...), and
    # to names imported from them.
    module_names: set[str] = set()
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _is_db_module(alias.name):
                    module_names.add((alias.asname or alias.name).split(".")[0])
                    found.extend(_module_problems(node.lineno, alias.name))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and _is_db_module(node.module):
            found.extend(_module_problems(node.lineno, node.module))
            for alias in node.names:
                imported.add(alias.asname or alias.name)
                if alias.name.startswith(("_", "AsyncAdapt_")):
                    found.append((node.lineno, f"imports {alias.name} from {node.module}"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            name = node.attr
            if name in _PUBLIC_UNDERSCORE or name.startswith("__") or not name.startswith("_"):
                continue
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if name in _KNOWN_PRIVATE:
                found.append((node.lineno, f"uses .{name}"))
            elif isinstance(root, ast.Name) and root.id in module_names:
                found.append((node.lineno, f"uses {ast.unparse(node)}"))
        elif isinstance(node, ast.Call):
            for keyword in node.keywords:
                # Underscored keywords are SQLAlchemy's internal switches (construct_params(_check=False), ...).
                if keyword.arg is not None and keyword.arg.startswith("_"):
                    found.append((node.lineno, f"passes {keyword.arg}="))
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name in _KNOWN_PRIVATE:
            found.append((node.lineno, f"defines {node.name}"))
        elif isinstance(node, ast.ClassDef) and any(
            _names_library(base, imported, module_names) for base in node.bases
        ):
            # A subclass of one of their classes that defines a private name overrides (or may one day collide
            # with) one of theirs.
            for item in node.body:
                for name in _defined_names(item):
                    if name.startswith("_") and not name.startswith("__") and name not in _KNOWN_PRIVATE:
                        found.append((item.lineno, f"defines {name} in a subclass of a library class"))
    return sorted(found, key=lambda item: item[0])


def _names_library(base: ast.expr, imported: set[str], module_names: set[str]) -> bool:
    root = base
    while isinstance(root, ast.Attribute):
        root = root.value
    return isinstance(root, ast.Name) and (root.id in imported or root.id in module_names)


def _defined_names(item: ast.stmt) -> list[str]:
    if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return [item.name]
    targets = item.targets if isinstance(item, ast.Assign) else [item.target] if isinstance(item, ast.AnnAssign) else []
    return [target.id for target in targets if isinstance(target, ast.Name)]


def _module_problems(line: int, module: str) -> list[tuple[int, str]]:
    parts = module.split(".")
    if any(module == internal or module.startswith(internal + ".") for internal in _INTERNAL_MODULES):
        return [(line, f"imports internal module {module}")]
    if any(part.startswith("_") for part in parts):
        return [(line, f"imports private module {module}")]
    return []


def test_no_private_names_of_the_database_libraries() -> None:
    offenders = []
    sanctioned = dict(_SANCTIONED)
    for top in ("core", "bot"):
        for path in sorted((ROOT / top).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            for line, what in _private_db_uses(ast.parse(path.read_text(), filename=str(path))):
                if sanctioned.get((relative, what), 0) > 0:
                    sanctioned[relative, what] -= 1
                    continue
                offenders.append(f"{relative}:{line}: {what}")
    assert offenders == []
    # An allowance no longer used is taken back: the list says what is left, no more.
    assert {key: left for key, left in sanctioned.items() if left} == {}


def test_the_private_name_check_finds_what_it_is_for() -> None:
    sample = """
import aiosqlite
import sqlalchemy as sa
from sqlalchemy.util.concurrency import await_
from sqlalchemy.connectors.asyncio import AsyncAdapt_dbapi_connection
from sqlalchemy.dialects.sqlite.aiosqlite import AsyncAdapt_aiosqlite_cursor
from sqlalchemy.engine import _py_row
from sqlalchemy.engine import AdaptedConnection
from asyncpg.exceptions._base import InterfaceError
raw = aiosqlite_connection._connection
compiled._bind_processors
compiled.construct_params(_check=False)
sa.engine._private
row._asdict(), row._mapping, row._fields, record._replace(a=1), Shape._make([]), row._t, row._tuple()
self._own = 1
class Adapted(AdaptedConnection):
    _cursor_cls = None
    def __init__(self): ...
    def _end(self): ...
class Cursor:
    async def _async_soft_close(self): ...
    def _own(self): ...
"""
    found = [what for _, what in _private_db_uses(ast.parse(sample))]
    assert found == [
        "imports internal module sqlalchemy.util.concurrency",
        "imports internal module sqlalchemy.connectors.asyncio",
        "imports AsyncAdapt_dbapi_connection from sqlalchemy.connectors.asyncio",
        "imports AsyncAdapt_aiosqlite_cursor from sqlalchemy.dialects.sqlite.aiosqlite",
        "imports _py_row from sqlalchemy.engine",
        "imports private module asyncpg.exceptions._base",
        "uses ._connection",
        "uses ._bind_processors",
        "passes _check=",
        "uses sa.engine._private",
        "defines _cursor_cls in a subclass of a library class",
        "defines _end in a subclass of a library class",
        "defines _async_soft_close",
    ]

"""The arrows between packages are what docs/architecture.md draws, and no module reaches back
to one that imports it (issue 14). Every import counts, the ones inside functions too: a lazy
import is still an arrow, only a later one."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("keys", "dropbox", "onion", "workstation", "review")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue  # Alembic loads these itself
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node but those under `if TYPE_CHECKING:` (annotations only, never run)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from (n for child in node.orelse for n in ast.walk(child))
            continue
        yield node
        yield from _runtime_nodes(node)


def _imports(path: Path, known: set[str]) -> Iterator[str]:
    for node in _runtime_nodes(ast.parse(path.read_text("utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                yield name


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: set(_imports(path, set(modules))) - {name} for name, path in modules.items()}


def _package_arrows() -> dict[str, set[str]]:
    arrows: dict[str, set[str]] = {p: set() for p in PACKAGES}
    for module, targets in _graph().items():
        source = module.partition(".")[0]
        arrows[source] |= {t.partition(".")[0] for t in targets} - {source}
    return arrows


def _drawn_arrows() -> dict[str, set[str]]:
    text = (ROOT / "docs" / "architecture.md").read_text("utf-8")
    block = re.search(r"<!-- package-arrows -->\n```\n(.*?)```", text, re.S)
    assert block, "docs/architecture.md lost its package-arrows block"
    drawn: dict[str, set[str]] = {}
    for line in block.group(1).splitlines():
        source, _, targets = line.partition("->")
        names = re.sub(r"\(.*?\)", "", targets).replace(",", " ").split()
        drawn[source.strip()] = {n for n in names if n != "nothing"}
    return drawn


def test_the_drawn_arrows_are_the_real_ones() -> None:
    assert _drawn_arrows() == _package_arrows()


def test_no_module_imports_one_that_imports_it() -> None:
    graph = _graph()
    cycles = []
    for start in graph:
        stack, seen = [(start, [start])], set()
        while stack:
            module, path = stack.pop()
            for target in graph.get(module, ()):
                if target == start:
                    cycles.append(" -> ".join([*path, start]))
                elif target not in seen:
                    seen.add(target)
                    stack.append((target, [*path, target]))
    assert not cycles, "\n".join(sorted(set(cycles))[:10])


def test_onion_knows_nothing_of_the_server() -> None:
    assert "dropbox" not in _package_arrows()["onion"]


# Type names for the sessions that domain functions take; everything else of SQLAlchemy (tables,
# queries, the engine) stays in dropbox/db.py and the migrations.
SQL_TYPES_ONLY = {"sqlalchemy.ext.asyncio"}


def test_sql_lives_in_db_py() -> None:
    strays = []
    for name, path in _modules().items():
        if name in ("dropbox.db",):
            continue
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            strays += [f"{name}: {m}" for m in modules
                       if m.partition(".")[0] == "sqlalchemy" and m not in SQL_TYPES_ONLY]
    assert not strays, "\n".join(strays)

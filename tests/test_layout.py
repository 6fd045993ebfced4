"""The house rules of the code's layout (issue #27): the API imports only api/ and
shared/, shared/ imports neither side, no module imports itself round a circle, the
API process loads neither migrations, factoring nor the CLI's servers, and no file
grows past what one person reads at once."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGES = ("api", "worker", "shared", "cli")
MAX_LINES = 450


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


MODULES = _modules()


def _imports(name: str) -> set[str]:
    """The project's modules that module `name` imports, anywhere in it."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    imported = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            # `from shared.work import queue` imports the module shared.work.queue (its
            # package's __init__ runs first, as for any module: not counted)
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name:
                imported.add(target)
    return imported


GRAPH = {name: _imports(name) for name in MODULES}


@pytest.mark.parametrize(
    "side, allowed",
    [("api", {"api", "shared"}), ("worker", {"worker", "shared"}), ("shared", {"shared"})],
)
def test_each_side_imports_only_itself_and_shared(side: str, allowed: set[str]) -> None:
    wrong = {
        (name, target)
        for name, targets in GRAPH.items()
        if name.split(".")[0] == side
        for target in targets
        if target.split(".")[0] not in allowed
    }
    assert not wrong


def test_no_import_circles() -> None:
    circles = []
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = "open"
        for target in sorted(GRAPH[name]):
            if state.get(target) == "open":
                circles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[name] = "done"

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [name])
    assert not circles


def test_the_api_process_loads_no_migrations_factoring_or_servers() -> None:
    script = (
        "import sys, api; api.create_app(); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('alembic', 'sympy', 'cli')"
        " or m.startswith(('shared.factors', 'shared.admin', 'worker'))))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True
    ).stdout
    assert loaded.strip() == "[]"


def test_no_file_is_longer_than_one_reads_at_once() -> None:
    long = {
        str(path.relative_to(ROOT)): lines
        for path in MODULES.values()
        if (lines := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long

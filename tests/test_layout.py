"""The library's shape: no import cycles, never the application, modules of a readable size.

Read from the source (``ast``), so a lazy import inside a function counts as much as one at
the top of a module: a cycle that only closes at run time is still a cycle to a reader.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LIBRARY = ROOT / "bridge"
APPLICATION = ("routes", "workflows", "services")
MAX_LINES = 450


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(LIBRARY.rglob("*.py"))}


def imported(path: Path) -> Iterator[str]:
    """Every module that ``path`` imports (``from a import b`` is ``a.b`` when b is a module)."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], base]).strip(".")
            yield base
            for alias in node.names:
                yield f"{base}.{alias.name}"


def library_edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        targets = {m for m in imported(path) if m in MODULES and m != name}
        # A module importing its own package's __init__ is how Python loads submodules, not a
        # dependency of the author's: the package face only hands names on.
        edges[name] = {t for t in targets if not name.startswith(t + ".")}
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the list of modules around it, or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle() -> None:
    # The check below would pass vacuously if the finder never found anything.
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_library_reads_its_own_imports() -> None:
    edges = library_edges()
    assert "bridge.events" in edges["bridge.routing"]
    assert "bridge.sidecar.dispatch" in edges["bridge.sidecar.loop"]


def test_no_import_cycle_inside_the_library() -> None:
    assert find_cycle(library_edges()) is None


@pytest.mark.parametrize("name", sorted(MODULES))
def test_the_library_never_imports_the_application(name: str) -> None:
    wrong = sorted({m for m in imported(MODULES[name]) if m.split(".")[0] in APPLICATION})
    assert wrong == [], f"{name} imports the reference application: {wrong}"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_stay_readable(name: str) -> None:
    lines = len(MODULES[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines (over {MAX_LINES}): split it by concern"


def test_no_assert_as_a_runtime_check_in_the_library() -> None:
    # ``python -O`` strips them: a check the library relies on must raise.
    found = []
    for name, path in MODULES.items():
        if name == "bridge.testing":  # the pytest plugin: assertions are its job
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Assert):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not found, found

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


# --- tests run workflows the way users do ----------------------------------------------------

TESTS = ROOT / "tests"
#: The comment that says why a test runs workflows under another runner than the sandbox
#: ``loom worker`` builds (on the line, or on one of the two lines above).
RUNNER_REASON = "# runner:"


def runner_choices(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, what) of every worker built directly and every runner other than the default
    sandbox: ``Worker(...)``, ``workflow_runner=``, ``UnsandboxedWorkflowRunner``,
    ``with_passthrough_modules``, ``@workflow.defn(sandboxed=False)``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if name == "Worker":
                yield node.lineno, "Worker("
            for kw in node.keywords:
                if kw.arg == "workflow_runner":
                    yield kw.value.lineno, "workflow_runner="
                if kw.arg == "sandboxed" and not (isinstance(kw.value, ast.Constant) and kw.value.value):
                    yield kw.value.lineno, "sandboxed=False"
        if isinstance(node, ast.Name | ast.Attribute):
            name = node.id if isinstance(node, ast.Name) else node.attr
            if name in ("UnsandboxedWorkflowRunner", "with_passthrough_modules"):
                yield node.lineno, name


def unexplained_runners(path: Path) -> list[str]:
    text = path.read_text()
    lines = text.splitlines()
    tree = ast.parse(text, str(path))
    functions = [
        (node.lineno, node.end_lineno or node.lineno, node.name)
        for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    ]
    found = []
    for line, what in sorted(set(runner_choices(tree))):
        where = f"{path.relative_to(ROOT)}:{line}: {what}"
        if what == "Worker(":
            found.append(f"{where} (build it with bridge.testing.loom_worker)")
            continue
        enclosing = [name for start, end, name in functions if start <= line <= end]
        if any("unsandboxed" in name for name in enclosing):
            continue  # the test's name says so
        if not any(RUNNER_REASON in lines[i] for i in range(max(0, line - 3), line)):
            found.append(f"{where} (say why: a '{RUNNER_REASON} ...' comment, or the test's name)")
    return found


def test_the_runner_finder_finds_each_way_round_the_kit() -> None:
    source = (
        "w = Worker(client, workflows=[A])\n"
        "k = loom_worker(client, workflow_runner=UnsandboxedWorkflowRunner())\n"
        "# runner: the replayer needs no sandbox here\n"
        "r = loom_worker(client, workflow_runner=x)\n"
        "@workflow.defn(sandboxed=False)\n"
        "class B: ...\n"
        "s = SandboxRestrictions.default.with_passthrough_modules('m')\n"
        "def test_unsandboxed_speed():\n"
        "    loom_worker(client, workflow_runner=UnsandboxedWorkflowRunner())\n"
    )
    found = sorted(set(runner_choices(ast.parse(source))))
    assert found == [
        (1, "Worker("), (2, "UnsandboxedWorkflowRunner"), (2, "workflow_runner="),
        (4, "workflow_runner="), (5, "sandboxed=False"), (7, "with_passthrough_modules"),
        (9, "UnsandboxedWorkflowRunner"), (9, "workflow_runner="),
    ]


def test_tests_build_workers_through_the_kit_and_say_why_they_leave_the_sandbox() -> None:
    found = [
        problem
        for path in sorted(TESTS.rglob("*.py")) if path.name != "test_layout.py"
        for problem in unexplained_runners(path)
    ]
    assert not found, "\n".join(found)


def rewritten_by_pytest(path: Path) -> bool:
    """Whether pytest's assertion rewriting imports ``path`` (test modules and conftest)."""
    return path.name == "conftest.py" or (path.name.startswith("test_") and path.suffix == ".py")


def workflow_classes(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, name) of every class decorated ``@workflow.defn`` or ``@workflow.defn(...)``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for decorator in node.decorator_list:
                target = decorator.func if isinstance(decorator, ast.Call) else decorator
                if isinstance(target, ast.Attribute) and target.attr == "defn" and (
                    isinstance(target.value, ast.Name) and target.value.id == "workflow"
                ):
                    yield node.lineno, node.name


def test_the_workflow_finder_finds_both_decorator_forms() -> None:
    source = (
        "@workflow.defn\nclass A: ...\n"
        "@workflow.defn(name='b', sandboxed=True)\nclass B: ...\n"
        "@activity.defn\ndef c(): ...\n"
        "class D: ...\n"
    )
    assert sorted(workflow_classes(ast.parse(source))) == [(2, "A"), (4, "B")]
    assert rewritten_by_pytest(Path("tests/test_x.py")) and rewritten_by_pytest(Path("conftest.py"))
    assert not rewritten_by_pytest(Path("tests/flows/x_flows.py"))


def test_no_workflow_lives_in_a_module_that_pytest_rewrites() -> None:
    """The sandbox re-imports a workflow's module on every run, from the worker's threads.

    A test module is imported through pytest's assertion rewriting, which (with no bytecode
    written) parses the module again each time: CPython 3.11's AST conversion is not safe
    across threads, and under load a run failed with "AST constructor recursion depth mismatch".
    Workflows the tests use live in ``tests/flows/`` (or ``tests/sandbox/``), plain modules.
    """
    found = [
        f"{path.relative_to(ROOT)}:{line}: workflow {name} (move it to a module in tests/flows/)"
        for path in sorted(TESTS.rglob("*.py")) if rewritten_by_pytest(path)
        for line, name in workflow_classes(ast.parse(path.read_text(), str(path)))
    ]
    assert not found, "\n".join(found)


def test_workflow_modules_never_import_a_module_that_pytest_rewrites() -> None:
    """A plain module that imported a test module would bring the rewritten import back."""
    found = [
        f"{path.relative_to(ROOT)}: imports {name}"
        for path in sorted(TESTS.rglob("*.py")) if not rewritten_by_pytest(path)
        for name in imported(path)
        if any(part.startswith("test_") or part == "conftest" for part in name.split("."))
    ]
    assert not found, "\n".join(found)

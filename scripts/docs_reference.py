"""Generate the reference pages that the code already knows: settings, the CLI and the metrics.

Each page under ``docs/reference/`` keeps its prose by hand; the part between
``<!-- generated: NAME -->`` and ``<!-- end generated -->`` is written here from the code:

- ``settings``: every field of ``bridge.settings.LoomSettings``, walked into its nested models,
  as its environment variable (``LOOM_``, nested with ``__``), type and default;
- ``cli``: every command and option of the Typer app (``bridge.cli.app``);
- ``metrics``: every metric the sidecar registers (``bridge.sidecar.metrics.Metrics``) with
  its type and labels.

Run ``python scripts/docs_reference.py`` after changing one of them;
``python scripts/docs_reference.py --check`` exits 1 when a page is stale
(``tests/test_docs_site.py`` runs the same check, so a setting added without docs fails).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# The checkout's library, also when it is not the one installed (run as a script, sys.path[0]
# is scripts/).
sys.path.insert(0, str(ROOT))
REFERENCE = ROOT / "docs" / "reference"
_BLOCK = re.compile(r"(<!-- generated: (\w+) -->\n)(.*?)(<!-- end generated -->)", re.DOTALL)


def _cell(text: str) -> str:
    """Text for a Markdown table cell (pipes escaped, one line)."""
    return " ".join(text.split()).replace("|", "\\|")


def settings_section() -> str:
    """One table per settings model: variable, type, default."""
    from pydantic import BaseModel

    from bridge.settings import LoomSettings, settings_reference

    groups: dict[str, list[tuple[str, str, str]]] = {}
    for env, kind, default in settings_reference():
        head = env.removeprefix("LOOM_").split("__")
        groups.setdefault(head[0] if len(head) > 1 else "", []).append((env, kind, default))
    lines: list[str] = []
    for group, rows in groups.items():
        if group:
            info = LoomSettings.model_fields[group.lower()]
            model = info.annotation
            assert isinstance(model, type) and issubclass(model, BaseModel)
            summary = (model.__doc__ or "").strip().splitlines()[0]
            lines += [f"### `LOOM_{group}__*`", "", f"{summary}", ""]
        else:
            lines += ["### The sidecar itself", ""]
        lines += ["| variable | type | default |", "| --- | --- | --- |"]
        lines += [f"| `{env}` | {_cell(kind)} | {default} |" for env, kind, default in rows]
        lines.append("")
    return "\n".join(lines)


def _commands(group: Any, ctx: Any, prefix: str) -> Iterator[tuple[str, Any, Any]]:
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is None or command.hidden:
            continue
        sub = command.make_context(name, [], parent=ctx, resilient_parsing=True)
        path = f"{prefix} {name}"
        if hasattr(command, "list_commands"):
            yield path, command, sub
            yield from _commands(command, sub, path)
        else:
            yield path, command, sub


def _options_table(command: Any, ctx: Any) -> list[str]:
    rows = []
    for param in command.params:
        if getattr(param, "hidden", False):
            continue
        record = param.get_help_record(ctx)
        if record is None:  # an argument: typer gives it no help record without rich
            record = (param.human_readable_name, getattr(param, "help", None) or "")
        names, text = record
        rows.append(f"| `{_cell(names)}` | {_cell(text)} |")
    if not rows:
        return []
    return ["| option | what it does |", "| --- | --- |", *rows, ""]


def cli_section() -> str:
    """Every command: its usage, its help and its options, from the Typer app."""
    import typer.main

    from bridge.cli.app import app

    root = typer.main.get_command(app)
    ctx = root.make_context("loom", [], resilient_parsing=True)
    lines = ["### `loom`", "", _cell(root.help or ""), "", *_options_table(root, ctx)]
    for path, command, sub in _commands(root, ctx, "loom"):
        usage = " ".join(command.collect_usage_pieces(sub))
        lines += [f"### `{path}`", "", "```text", f"{path} {usage}".rstrip(), "```", ""]
        # The help's paragraphs as they are; typer's \b (no rewrap) markers dropped.
        help_text = (command.help or "").replace("\b\n", "").strip()
        lines += [help_text, ""] if help_text else []
        lines += _options_table(command, sub)
    return "\n".join(lines)


def metrics_section() -> str:
    """Every metric of the sidecar's registry: name as scraped, type, labels, help."""
    from prometheus_client.metrics import MetricWrapperBase

    from bridge.sidecar.metrics import Metrics

    metrics = Metrics()
    lines = ["| metric | type | labels | what it counts |", "| --- | --- | --- | --- |"]
    for value in vars(metrics).values():
        if not isinstance(value, MetricWrapperBase):
            continue
        kind = value._type
        name = value._name + ("_total" if kind == "counter" else "")
        labels = ", ".join(f"`{label}`" for label in value._labelnames) or ""
        lines.append(f"| `{name}` | {kind} | {labels} | {_cell(value._documentation)} |")
    return "\n".join(lines) + "\n"


SECTIONS: dict[str, tuple[str, Callable[[], str]]] = {
    "settings": ("settings.md", settings_section),
    "cli": ("cli.md", cli_section),
    "metrics": ("metrics.md", metrics_section),
}


def render(text: str) -> str:
    """``text`` with every generated block written anew from the code."""

    def replace(match: re.Match[str]) -> str:
        _, generate = SECTIONS[match.group(2)]
        return f"{match.group(1)}\n{generate()}\n{match.group(4)}"

    return _BLOCK.sub(replace, text)


def stale_pages() -> list[Path]:
    """The reference pages whose generated blocks differ from the code (or that lack one)."""
    stale = []
    for name, (page, _) in SECTIONS.items():
        path = REFERENCE / page
        text = path.read_text()
        if f"<!-- generated: {name} -->" not in text or render(text) != text:
            stale.append(path)
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a page is stale")
    args = parser.parse_args(argv)
    stale = stale_pages()
    if args.check:
        for path in stale:
            print(f"stale: {path.relative_to(ROOT)} (run python scripts/docs_reference.py)")
        return 1 if stale else 0
    for path in stale:
        path.write_text(render(path.read_text()))
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

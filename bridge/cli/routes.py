"""``loom routes``: the route table, or the AsyncAPI document of consumed and emitted events."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from bridge._loading import load_object, load_router
from bridge.cli._options import (
    RoutesOpt,
    Topics,
    err,
    guarded,
    import_path,
    out,
    overrides,
    settings_from,
)
from bridge.cli.asyncapi import asyncapi_document, dump_document

__all__ = ["routes"]


def routes(
    routes: RoutesOpt = None,
    asyncapi: Annotated[Path | None, typer.Option("--asyncapi", help="Write an AsyncAPI 3.0 document (JSON, or YAML for .yaml/.yml) to FILE ('-' for stdout).")] = None,
    topic: Topics = None,
) -> None:
    """Print the route table, or write the AsyncAPI document of consumed and emitted events."""
    settings = settings_from(overrides(routes=routes, topics=topic))
    import_path()
    spec = guarded(settings.route_spec)
    router = guarded(lambda: load_router(spec))
    if asyncapi is not None:
        emits, emit_topics = guarded(lambda: _emitted(spec))
        # The application's own emit topics under the configured map, as on the worker.
        settings = settings.model_copy(update={"emit": settings.emit.with_defaults(emit_topics)})
        text = dump_document(
            asyncapi_document(router, settings, emits=emits), yaml=asyncapi.suffix in (".yaml", ".yml")
        )
        if str(asyncapi) == "-":
            sys.stdout.write(text)
        else:
            asyncapi.write_text(text)
            err.print(f"wrote {asyncapi}")
        return
    table = Table(title=f"routes ({spec}, unmatched: {router.unmatched.value})")
    columns = (
        "name", "match", "data", "action", "workflow_type", "workflow_id", "task_queue", "handler",
        "coalesce",
    )
    for column in columns:
        table.add_column(column.replace("_", " "), overflow="fold")
    for row in router.describe():
        table.add_row(*("-" if row.get(c) is None else str(row.get(c)) for c in columns))
    out.print(table)


def _emitted(spec: str) -> tuple[Any, dict[str, str]]:
    """The optional ``emits`` (event type -> pydantic model) and ``emit_topics`` (type glob ->
    topic) attributes beside the router."""
    module = load_object(spec.partition(":")[0], default_attr=None, setting="LOOM_ROUTES")
    return getattr(module, "emits", None), dict(getattr(module, "emit_topics", None) or {})

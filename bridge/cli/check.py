"""``loom check``: validate the settings and the routes, then connect to Kafka and Temporal.

A route whose meaning 0.2.0's one pattern rule changed (a ``type`` with ``*``, ``?`` or
``[``, exact in 0.1, a glob now) is reported as a warning with the way to keep the old one.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Annotated

import typer
from rich.table import Table

from bridge._loading import load_codec, load_router
from bridge.cli._options import (
    Bootstrap,
    Namespace,
    RoutesOpt,
    TemporalAddress,
    Topics,
    err,
    import_path,
    out,
    overrides,
    settings_from,
)
from bridge.exceptions import SettingsError
from bridge.kafka.clients import consumer_for, start_client, stop_client
from bridge.routing import Router
from bridge.settings import LoomSettings
from bridge.sidecar.process import settings_summary, unconsumed_topic_warnings
from bridge.temporal.client import check_namespace, connect_options, connect_temporal

__all__ = ["CheckResult", "check", "check_kafka", "check_temporal", "pattern_rule_warnings"]


@dataclass(frozen=True)
class CheckResult:
    """One line of ``loom check``."""

    name: str
    ok: bool
    detail: str
    warning: bool = False


def pattern_rule_warnings(router: Router) -> list[CheckResult]:
    """The routes whose meaning 0.2.0's one pattern rule changed (``type`` globs now)."""
    return [
        CheckResult(f"route {route.name}", True, note, warning=True)
        for route in router.routes
        if (note := route.match.changed_meaning()) is not None
    ]


async def check_kafka(settings: LoomSettings, timeout: float = 10) -> list[CheckResult]:
    """Connect to Kafka, read metadata, and check that the configured topics exist."""
    k = settings.kafka
    consumer = consumer_for(k, group_id=None, request_timeout_ms=int(timeout * 1000))
    try:
        await start_client(consumer, timeout)
    except Exception as exc:  # report any failure to connect, never raise from a check
        return [
            CheckResult(
                "kafka", False, f"cannot connect to {k.bootstrap} (LOOM_KAFKA__BOOTSTRAP): "
                f"{type(exc).__name__}: {exc}"
            )
        ]
    try:
        topics = await asyncio.wait_for(consumer.topics(), timeout)
    finally:
        await stop_client(consumer)
    results = [CheckResult("kafka", True, f"connected to {k.bootstrap}, {len(topics)} topics")]
    results.extend(
        CheckResult(f"topic {topic}", topic in topics,
                    "exists" if topic in topics else "missing (LOOM_KAFKA__TOPICS)")
        for topic in k.topics
    )
    dlq_ok = k.deadletter_topic in topics
    results.append(
        CheckResult(
            f"dead-letter topic {k.deadletter_topic}",
            True,
            "exists" if dlq_ok else "missing: created on first write only if the broker "
            "auto-creates topics (LOOM_KAFKA__DEADLETTER_TOPIC)",
            warning=not dlq_ok,
        )
    )
    return results


async def check_temporal(settings: LoomSettings, timeout: float = 10) -> list[CheckResult]:
    """Connect to Temporal and describe the configured namespace."""
    t = settings.temporal
    try:
        options = connect_options(t)
        client = await connect_temporal(settings, timeout=min(timeout, t.connect_timeout_s))
    except Exception as exc:  # report any failure to connect, never raise from a check
        return [CheckResult("temporal", False, str(exc))]
    address, namespace = options["target_host"], options["namespace"]
    results = [CheckResult("temporal", True, f"connected to {address}")]
    try:
        await check_namespace(client, timeout=timeout)
    except SettingsError as exc:  # missing or not registered: the message names the setting
        results.append(CheckResult(f"namespace {namespace}", False, str(exc)))
    except Exception as exc:  # e.g. PERMISSION_DENIED
        results.append(
            CheckResult(f"namespace {namespace}", False,
                        f"{exc} (LOOM_TEMPORAL__NAMESPACE or TEMPORAL_NAMESPACE)")
        )
    else:
        results.append(CheckResult(f"namespace {namespace}", True, "exists"))
    return results


def check(
    routes: RoutesOpt = None,
    bootstrap: Bootstrap = None,
    temporal_address: TemporalAddress = None,
    namespace: Namespace = None,
    topic: Topics = None,
    timeout: Annotated[float, typer.Option(help="Seconds per connection check.")] = 10.0,
) -> None:
    """Validate settings and routes, connect to Kafka and Temporal; exit 1 on any failure."""
    settings = settings_from(
        overrides(routes=routes, bootstrap=bootstrap, temporal_address=temporal_address,
                   namespace=namespace, topics=topic)
    )
    import_path()
    results: list[CheckResult] = [CheckResult("settings", True, "valid")]
    router: Router | None = None
    try:
        spec = settings.route_spec()
        router = load_router(spec)
        results.append(CheckResult("routes", True, f"{spec}: {len(router)} routes"))
        results.extend(pattern_rule_warnings(router))
    except SettingsError as exc:
        results.append(CheckResult("routes", False, str(exc)))
    try:
        settings.require("kafka.topics")
    except SettingsError as exc:
        results.append(CheckResult("topics", False, str(exc)))
    else:
        if router is not None:
            results.extend(
                CheckResult("topic binding", True, line, warning=True)
                for line in unconsumed_topic_warnings(router, settings)
            )
    if settings.temporal.codec:
        try:
            load_codec(settings.temporal.codec)
            results.append(CheckResult("codec", True, settings.temporal.codec))
        except SettingsError as exc:
            results.append(CheckResult("codec", False, str(exc)))

    async def connect() -> list[CheckResult]:
        kafka, temporal = await asyncio.gather(
            check_kafka(settings, timeout), check_temporal(settings, timeout)
        )
        return [*kafka, *temporal]

    results.extend(asyncio.run(connect()))
    summary = Table(title="settings", show_header=False)
    summary.add_column("setting")
    summary.add_column("value", overflow="fold")
    for name, value in settings_summary(settings).items():
        summary.add_row(name, "-" if value is None else str(value))
    out.print(summary)
    report = Table(title="checks")
    for column in ("check", "result", "detail"):
        report.add_column(column, overflow="fold")
    for r in results:
        mark = "[green]ok[/]" if r.ok and not r.warning else ("[yellow]warn[/]" if r.ok else "[red]FAIL[/]")
        report.add_row(r.name, mark, r.detail)
    out.print(report)
    failed = [r for r in results if not r.ok]
    if failed:
        err.print(f"[bold red]{len(failed)} check(s) failed[/]")
        raise typer.Exit(1)
    out.print("[green]all checks passed[/]")

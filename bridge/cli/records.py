"""``loom publish`` and ``loom dlq``: the commands that write or read Kafka records.

The functions are registered as commands by :mod:`bridge.cli.app`.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from bridge.cli._options import (
    EXIT_SETTINGS,
    Bootstrap,
    fail,
    out,
    overrides,
    settings_from,
)
from bridge.cli._times import TIME_HELP, TimeFormatError, parse_time
from bridge.events import Event
from bridge.kafka.clients import publish_event
from bridge.kafka.deadletters import DeadLetter, read_deadletters, redrive
from bridge.settings import LoomSettings

__all__ = ["dlq_list", "dlq_redrive", "publish"]


# --- loom publish --------------------------------------------------------------------------------


def _parse_ext(pairs: list[str]) -> dict[str, str]:
    ext: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            fail(f"--ext: expected NAME=VALUE, got {pair!r}", EXIT_SETTINGS)
        ext[name] = value
    return ext


def _event_from_flags(
    file: Path | None,
    type_: str | None,
    source: str | None,
    id_: str | None,
    subject: str | None,
    data: str | None,
    content_type: str | None,
    ext: list[str],
) -> Event:
    payload: dict[str, Any] = {}
    if file is not None:
        try:
            loaded = json.loads(file.read_text())
        except (OSError, ValueError) as exc:
            fail(f"--file: cannot read a JSON event from {file}: {exc}", EXIT_SETTINGS)
        if not isinstance(loaded, dict):
            fail(f"--file: {file} holds no JSON object", EXIT_SETTINGS)
        payload.update(loaded)
    flags = {"type": type_, "source": source, "id": id_, "subject": subject,
             "datacontenttype": content_type}
    payload.update({k: v for k, v in flags.items() if v is not None})
    if data is not None:
        try:
            payload["data"] = json.loads(data)
        except ValueError as exc:
            fail(f"--data: not JSON: {exc}", EXIT_SETTINGS)
    payload.update(_parse_ext(ext))
    payload.setdefault("id", str(uuid.uuid4()))
    missing = [name for name in ("type", "source") if not payload.get(name)]
    if missing:
        fail("missing " + ", ".join(f"--{m}" for m in missing) + " (or --file)", EXIT_SETTINGS)
    try:
        return Event.from_payload(payload)
    except (KeyError, TypeError, ValueError) as exc:
        fail(f"invalid event: {exc}", EXIT_SETTINGS)


def publish(
    type_: Annotated[str | None, typer.Option("--type", help="CloudEvent type.")] = None,
    source: Annotated[str | None, typer.Option(help="CloudEvent source.")] = None,
    id_: Annotated[str | None, typer.Option("--id", help="CloudEvent id (a UUID when omitted).")] = None,
    subject: Annotated[str | None, typer.Option(help="CloudEvent subject.")] = None,
    data: Annotated[str | None, typer.Option(help="Event data as JSON.")] = None,
    content_type: Annotated[str | None, typer.Option("--content-type", help="datacontenttype.")] = None,
    ext: Annotated[list[str] | None, typer.Option("--ext", help="Extension NAME=VALUE; repeatable.")] = None,
    file: Annotated[Path | None, typer.Option("--file", help="Event in CloudEvents JSON format; flags override its attributes.")] = None,
    key: Annotated[str | None, typer.Option(help="Kafka key (default: the partitionkey extension).")] = None,
    mode: Annotated[str, typer.Option(help="binary or structured.")] = "binary",
    topic: Annotated[str | None, typer.Option(help="Target topic (default: the first consumed topic).")] = None,
    bootstrap: Bootstrap = None,
) -> None:
    """Publish one CloudEvent to Kafka, to drive workflows from the shell."""
    if mode not in ("binary", "structured"):
        fail(f"--mode: expected binary or structured, got {mode!r}", EXIT_SETTINGS)
    settings = settings_from(overrides(bootstrap=bootstrap))
    event = _event_from_flags(file, type_, source, id_, subject, data, content_type, ext or [])
    target = topic or (settings.kafka.topics[0] if settings.kafka.topics else None)
    if not target:
        fail("--topic is required (LOOM_KAFKA__TOPICS is empty)", EXIT_SETTINGS)
    try:
        where = asyncio.run(
            publish_event(settings.kafka, event, target, mode=mode, key=key)  # type: ignore[arg-type]
        )
    except ValueError as exc:
        fail(f"cannot encode the event: {exc}", EXIT_SETTINGS)
    except Exception as exc:  # connection problems: one line, not a traceback
        fail(f"publish to {settings.kafka.bootstrap} failed: {type(exc).__name__}: {exc}")
    out.print(f"published {event.type} id={event.id} to {where.topic}[{where.partition}]@{where.offset}")


# --- loom dlq ------------------------------------------------------------------------------------

DlqTopic = Annotated[
    str | None,
    typer.Option("--dlq-topic", help="Dead-letter topic (LOOM_KAFKA__DEADLETTER_TOPIC)."),
]


Since = Annotated[
    str | None,
    typer.Option("--since", help=f"Only records dead-lettered at or after this time: {TIME_HELP}."),
]
Until = Annotated[
    str | None, typer.Option("--until", help="Only records dead-lettered before this time.")
]


def _failed_at(letter: DeadLetter) -> int | None:
    """When the record was dead-lettered (ms): its ``failed-at`` header, else its timestamp."""
    text = letter.info.get("failed-at", "")
    return int(text) if text.isdigit() else letter.record.timestamp


def _in_time(since: str | None, until: str | None) -> Callable[[DeadLetter], bool]:
    """Whether a dead letter was written in [``since``, ``until``) (each bound optional)."""
    if since is None and until is None:
        return lambda _letter: True
    now = datetime.now(UTC)
    try:
        start = parse_time(since, now) if since is not None else None
        end = parse_time(until, now) if until is not None else None
    except TimeFormatError as exc:
        fail(f"--since/--until: {exc}", EXIT_SETTINGS)
    if start is not None and end is not None and end <= start:
        fail(f"--until ({until}) must be after --since ({since})", EXIT_SETTINGS)

    def keep(letter: DeadLetter) -> bool:
        at = _failed_at(letter)
        return at is not None and (start is None or at >= start) and (end is None or at < end)

    return keep


def _letter_id(letter: DeadLetter) -> str:
    return f"{letter.record.partition}:{letter.record.offset}"


def _load_letters(settings: LoomSettings, topic: str | None) -> list[DeadLetter]:
    try:
        return asyncio.run(read_deadletters(settings, topic=topic))
    except Exception as exc:  # connection problems: one line, not a traceback
        fail(f"cannot read the dead-letter topic: {type(exc).__name__}: {exc}")


def dlq_list(
    reason: Annotated[str | None, typer.Option(help="Only this reason (e.g. unmatched).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per record.")] = False,
    since: Since = None,
    until: Until = None,
    dlq_topic: DlqTopic = None,
    bootstrap: Bootstrap = None,
) -> None:
    """List dead-lettered records with their error headers."""
    in_time = _in_time(since, until)
    settings = settings_from(overrides(bootstrap=bootstrap, deadletter_topic=dlq_topic))
    letters = [
        d for d in _load_letters(settings, None)
        if (reason is None or d.info.get("reason") == reason) and in_time(d)
    ]
    if as_json:
        for d in letters:
            out.print_json(json.dumps({"dlq_offset": _letter_id(d), **d.info}), indent=None)
        return
    table = Table(title=f"{settings.kafka.deadletter_topic}: {len(letters)} records")
    for column in ("offset", "reason", "route", "original", "message"):
        table.add_column(column, overflow="fold")
    for d in letters:
        i = d.info
        table.add_row(
            _letter_id(d), i.get("reason", ""), i.get("route", ""),
            f"{i.get('topic', '')}[{i.get('partition', '')}]@{i.get('offset', '')}",
            i.get("message", "")[:200],
        )
    out.print(table)


def dlq_redrive(
    offset: Annotated[
        list[str] | None,
        typer.Option("--offset", help="Dead-letter offset to re-drive, N (partition 0) or P:N; repeatable."),
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Re-drive every record (after filters).")] = False,
    reason: Annotated[str | None, typer.Option(help="Only records with this reason.")] = None,
    to_topic: Annotated[str | None, typer.Option("--to-topic", help="Send here instead of the original topic.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be sent.")] = False,
    since: Since = None,
    until: Until = None,
    dlq_topic: DlqTopic = None,
    bootstrap: Bootstrap = None,
) -> None:
    """Re-drive dead-lettered records, byte for byte, to their original topic."""
    filtered = reason is not None or since is not None or until is not None
    if not offset and not all_ and not filtered:
        fail("choose records: --offset N (repeatable), --reason R, --since/--until TIME or --all",
             EXIT_SETTINGS)
    in_time = _in_time(since, until)
    wanted = {o if ":" in o else f"0:{o}" for o in offset or []}
    settings = settings_from(overrides(bootstrap=bootstrap, deadletter_topic=dlq_topic))
    letters = [
        d for d in _load_letters(settings, None)
        if (not wanted or _letter_id(d) in wanted)
        and (reason is None or d.info.get("reason") == reason)
        and in_time(d)
    ]
    unknown = wanted - {_letter_id(d) for d in letters}
    if unknown and not filtered:
        fail(f"no dead-lettered record at offset(s) {', '.join(sorted(unknown))}")
    for d in [d for d in letters if d.body_omitted]:
        i = d.info
        out.print(
            f"skipped {_letter_id(d)}: only its headers were kept (the dead-letter topic refused "
            f"it: {i.get('write-error', '')}); the original is {i.get('topic', '')}"
            f"[{i.get('partition', '')}]@{i.get('offset', '')}"
        )
    letters = [d for d in letters if not d.body_omitted]
    if dry_run:
        for d in letters:
            out.print(f"would re-drive {_letter_id(d)} to {to_topic or d.original_topic}")
        return

    def sent(letter: DeadLetter, topic: str) -> None:
        out.print(f"re-drove {_letter_id(letter)} ({letter.info.get('reason', '')}) to {topic}")

    try:
        count = asyncio.run(redrive(settings, letters, topic=to_topic, on_sent=sent))
    except ValueError as exc:
        fail(str(exc))
    except Exception as exc:  # connection problems: one line, not a traceback
        fail(f"re-drive failed: {type(exc).__name__}: {exc}")
    out.print(f"{count} record(s) re-driven")

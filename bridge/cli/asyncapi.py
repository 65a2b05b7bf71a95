"""AsyncAPI 3.0 document of the events the loom consumes and the events workflows emit.

Other teams read it as the contract: one channel per consumed event type (per ``Match``) and
topic, one message per route with the JSON Schema of the route's pydantic data model, the
CloudEvents attributes as Kafka headers (binary mode, ``ce_*``), and the Kafka key (the
``partitionkey`` extension) as a message binding. A route bound to topics
(``Match(topic=...)``) gets a channel per topic, addressed to it (a topic glob expands to the
consumed topics it names); an unbound route's channel is addressed to the consumed topic
when there is one, and has no address (null) when the sidecar consumes several. Emitted events come from an optional
``emits`` mapping (event type -> pydantic model or None) beside the router; their channels
use the ``emit`` settings' topic map. A route to an entity workflow (``EntityWorkflow``) lists
the event types the entity handles, from its ``@handles`` methods: one message per type the
route can deliver to a handler, with the JSON Schema of the handler's model.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from fnmatch import fnmatchcase
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from temporalio.workflow import _Definition

from bridge.matching import Match, compile_glob, is_glob
from bridge.routing import Route, Router
from bridge.settings import LoomSettings
from bridge.workflow.entity import EntityWorkflow
from bridge.workflow.handlers import EntityHandler

__all__ = [
    "ASYNCAPI_VERSION",
    "asyncapi_document",
    "channel_id",
    "dump_document",
    "entity_of",
    "glob_pattern",
    "handled_types",
]

ASYNCAPI_VERSION = "3.0.0"
_KAFKA_BINDING = "0.5.0"
_SCHEMA_REF = "#/components/schemas/{model}"
_REGEX_SYNTAX = frozenset("\\^$.|?*+()[]{}/")


def _slug(text: str) -> str:
    # AsyncAPI component and channel keys must match ^[A-Za-z0-9_\-]+$.
    text = text.replace("*", "star")
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_") or "all"


def channel_id(match: Match) -> str:
    """The channel key of the events a match selects (by type)."""
    if match.type is not None:
        return _slug(match.type)
    if match.type_prefix is not None:
        return _slug(match.type_prefix + "*")
    if match.type_glob is not None:
        return _slug(match.type_glob)
    return "all"


def _channels(match: Match, consumed: list[str]) -> list[tuple[str, str | None, str]]:
    """``(channel key, address, description)`` of each channel the match's events come in."""
    base = channel_id(match)
    if not match.topics:
        address = consumed[0] if len(consumed) == 1 else None
        return [(base, address, "Consumed by the loom from " + ", ".join(consumed or ["(no topic)"]))]
    found: dict[str, tuple[str, str | None, str]] = {}
    for bound in match.topics:
        topics = [bound]
        if is_glob(bound):
            regex = compile_glob(bound)
            topics = [topic for topic in consumed if regex.match(topic)]
            if not topics:
                key = f"{base}__{_slug(bound)}"
                found[key] = (key, None, f"Consumed by the loom from topics matching {bound!r} "
                              "(none of them consumed)")
        for topic in topics:
            key = f"{base}__{_slug(topic)}"
            found[key] = (key, topic, f"Consumed by the loom from {topic}")
    return list(found.values())


def _type_schema(match: Match) -> dict[str, Any]:
    if match.type is not None:
        return {"type": "string", "const": match.type}
    if match.type_prefix is not None:
        return {"type": "string", "pattern": "^" + _literal(match.type_prefix)}
    if match.type_glob is not None:
        return {"type": "string", "pattern": glob_pattern(match.type_glob)}
    return {"type": "string"}


def glob_pattern(glob: str) -> str:
    """An ECMA-262 regex (JSON Schema ``pattern``) for an fnmatch glob (``*`` spans dots)."""
    out = []
    i = 0
    while i < len(glob):
        ch = glob[i]
        if ch == "*":
            out.append(".*")
        elif ch == "?":
            out.append(".")
        elif ch == "[" and (end := _class_end(glob, i)) > 0:
            # Same class rules as fnmatch: "!" negates, a leading "]" is literal.
            body = glob[i + 1 : end].replace("\\", "\\\\").replace("[", "\\[")
            negate = body.startswith("!")
            body = body[1:] if negate else body
            if body.startswith("^"):
                body = "\\" + body
            if body.startswith("]"):
                body = "\\" + body
            out.append(("[^" if negate else "[") + body + "]")
            i = end
        else:
            # Only regex syntax is escaped: ECMA-262 in unicode mode refuses "\-" and the like.
            out.append("\\" + ch if ch in _REGEX_SYNTAX else ch)
        i += 1
    return "^" + "".join(out) + "$"


def _literal(text: str) -> str:
    # Only regex syntax is escaped: ECMA-262 in unicode mode refuses "\\-" and the like.
    return "".join("\\" + ch if ch in _REGEX_SYNTAX else ch for ch in text)


def _class_end(glob: str, start: int) -> int:
    """Index of the "]" closing the class opened at ``start``, or -1 (then "[" is literal)."""
    j = start + 1
    if j < len(glob) and glob[j] == "!":
        j += 1
    if j < len(glob) and glob[j] == "]":
        j += 1
    end = glob.find("]", j)
    return end


def entity_of(route: Route) -> type[EntityWorkflow[Any]] | None:
    """The entity workflow class a route names (by class or run method), if it is one."""
    ref = getattr(route.action, "workflow", None)
    cls = ref if isinstance(ref, type) else None
    if cls is None and callable(ref):
        defn = _Definition.from_run_fn(ref)
        cls = defn.cls if defn is not None else None
    if cls is not None and issubclass(cls, EntityWorkflow) and hasattr(cls, "state_model"):
        return cls
    return None


def handled_types(route: Route, entity: type[EntityWorkflow[Any]]) -> list[tuple[str, EntityHandler]]:
    """The event types (or globs) of ``entity``'s handlers that ``route`` can deliver.

    A route matching one exact type gets the handler the entity picks for that type (exact,
    else the first glob); a broader route gets every handler type that overlaps its match.
    """
    match = route.match
    if match.type is not None:
        found = entity._loom_table.find(match.type)
        return [] if found is None else [(match.type, found)]
    return [
        (pattern, handler)
        for handler in entity.handlers()
        for pattern in handler.types
        if _overlaps(match, pattern)
    ]


def _overlaps(match: Match, pattern: str) -> bool:
    literal = re.split(r"[*?\[]", pattern, maxsplit=1)[0]
    if match.type_prefix is not None:
        prefix = match.type_prefix
        return literal.startswith(prefix) or (is_glob(pattern) and prefix.startswith(literal))
    if match.type_glob is not None:
        if not is_glob(pattern):
            return fnmatchcase(pattern, match.type_glob)
        # Two globs: overlapping unless their literal beginnings already disagree.
        other = re.split(r"[*?\[]", match.type_glob, maxsplit=1)[0]
        return literal.startswith(other) or other.startswith(literal)
    return True


def _type_name(match: Match) -> str:
    if match.type is not None:
        return match.type
    if match.type_prefix is not None:
        return match.type_prefix + "*"
    return match.type_glob or "*"


def _value_schema(value: str, description: str) -> dict[str, Any]:
    if any(ch in value for ch in "*?["):
        return {"type": "string", "description": f"{description} matching the glob {value!r}"}
    return {"type": "string", "const": value, "description": description}


def _ce_headers(
    type_schema: Mapping[str, Any],
    source: str | None = None,
    subject: str | None = None,
    extensions: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """JSON Schema of the binary-mode CloudEvents headers (Kafka protocol binding)."""
    props: dict[str, Any] = {
        "ce_specversion": {"type": "string", "const": "1.0"},
        "ce_id": {"type": "string", "description": "Unique per source; (source, id) deduplicates"},
        "ce_source": {"type": "string", "description": "Context in which the event happened"},
        "ce_type": dict(type_schema),
        "ce_subject": {"type": "string"},
        "ce_time": {"type": "string", "format": "date-time"},
        "ce_partitionkey": {"type": "string", "description": "Kafka key; orders per workflow"},
        "ce_traceparent": {"type": "string", "description": "W3C trace context"},
        "content-type": {"type": "string", "description": "datacontenttype of the value"},
    }
    required = ["ce_specversion", "ce_id", "ce_source", "ce_type"]
    if source is not None:
        props["ce_source"] = _value_schema(source, "Source")
    if subject is not None:
        props["ce_subject"] = _value_schema(subject, "Subject")
        required.append("ce_subject")
    for name, value in (extensions or {}).items():
        props[f"ce_{name}"] = _value_schema(value, f"Extension {name}")
        required.append(f"ce_{name}")
    return {"type": "object", "properties": props, "required": required}


def _schemas(models: list[type[BaseModel]]) -> tuple[dict[type[BaseModel], Any], dict[str, Any]]:
    unique = list(dict.fromkeys(models))
    if not unique:
        return {}, {}
    key_map, top = models_json_schema(
        [(m, "validation") for m in unique], ref_template=_SCHEMA_REF
    )
    refs = {model: key_map[(model, "validation")] for model in unique}
    return refs, dict(top.get("$defs", {}))


def _message(
    name: str,
    title: str,
    summary: str,
    headers: dict[str, Any],
    payload: Any,
) -> dict[str, Any]:
    return {
        "name": name,
        "title": title,
        "summary": summary,
        "contentType": "application/json",
        "headers": headers,
        "payload": payload,
        "bindings": {
            "kafka": {
                "key": {"type": "string", "description": "The partitionkey extension"},
                "bindingVersion": _KAFKA_BINDING,
            }
        },
    }


def _route_summary(route: Route) -> str:
    target = route.workflow_type or "existing workflow"
    wf_id = route.describe()["workflow_id"]
    queue = f" on task queue {route.task_queue}" if route.task_queue else ""
    return f"Route {route.name}: {route.kind.value} {target} id {wf_id}{queue}"


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def asyncapi_document(
    router: Router,
    settings: LoomSettings,
    *,
    emits: Mapping[str, type[BaseModel] | None] | None = None,
    title: str = "temporal-loom",
    version: str = "0.1.0",
) -> dict[str, Any]:
    """Build the AsyncAPI 3.0 document (a JSON-able dict).

    Args:
        router: The consumed routes.
        settings: Topics consumed (``kafka.topics``) and emitted (``emit.*``).
        emits: Event types workflows emit, with their data model (None: any JSON).
        title: ``info.title``.
        version: ``info.version`` (the contract's version).
    """
    emits = dict(emits or {})
    entities = {route.name: entity_of(route) for route in router.routes}
    handled = {
        route.name: handled_types(route, entity)
        for route in router.routes
        if (entity := entities[route.name]) is not None
    }
    models = [r.data for r in router.routes if r.data is not None]
    models += [m for m in emits.values() if m is not None]
    models += [
        h.annotation for pairs in handled.values() for _, h in pairs if _is_model(h.annotation)
    ]
    refs, schemas = _schemas(models)
    topics = list(settings.kafka.topics)
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for route in router.routes:
        slug = _slug(route.name)
        m = route.match
        route_payload = refs[route.data] if route.data is not None else {}
        # A route to an entity: one message per handled type it can deliver.
        route_messages: dict[str, dict[str, Any]] = {}
        entity = entities[route.name]
        entity_name = entity.__name__ if entity is not None else ""
        for pattern, handler in handled.get(route.name, []):
            type_schema = (
                {"type": "string", "pattern": glob_pattern(pattern)}
                if is_glob(pattern)
                else {"type": "string", "const": pattern}
            )
            route_messages[f"{slug}__{_slug(pattern)}"] = _message(
                pattern,
                f"{route.name}: {pattern}",
                f"{_route_summary(route)}; handled by {entity_name}.{handler.method}",
                _ce_headers(type_schema, m.source, m.subject, m.extensions),
                refs[handler.annotation] if _is_model(handler.annotation) else route_payload,
            )
        if not route_messages:
            route_messages[slug] = _message(
                _type_name(m),
                route.name,
                _route_summary(route),
                _ce_headers(_type_schema(m), m.source, m.subject, m.extensions),
                route_payload,
            )
        messages.update(route_messages)
        route_channels = _channels(m, topics)
        for chan, address, description in route_channels:
            channel = channels.setdefault(
                chan, {"address": address, "description": description, "messages": {}}
            )
            for msg in route_messages:
                channel["messages"][msg] = {"$ref": f"#/components/messages/{msg}"}
            # One operation per channel: a route bound to two topics receives on both.
            op = f"consume_{slug}" if len(route_channels) == 1 else f"consume_{slug}__{chan}"
            operations[op] = {
                "action": "receive",
                "channel": {"$ref": f"#/channels/{chan}"},
                "summary": _route_summary(route),
                "messages": [
                    {"$ref": f"#/channels/{chan}/messages/{msg}"} for msg in route_messages
                ],
            }
    for event_type, model in emits.items():
        chan = "emit_" + _slug(event_type)
        msg = chan
        topic = settings.emit.topic_for(event_type)
        messages[msg] = _message(
            event_type,
            event_type,
            f"Emitted by workflows with emit() to {topic or 'the topic emit() names'}",
            _ce_headers({"type": "string", "const": event_type}),
            refs[model] if model is not None else {},
        )
        channels[chan] = {
            "address": topic,
            "description": f"{event_type} events emitted by workflows",
            "messages": {msg: {"$ref": f"#/components/messages/{msg}"}},
        }
        operations[f"send_{msg}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{chan}"},
            "summary": f"Workflows emit {event_type}",
            "messages": [{"$ref": f"#/channels/{chan}/messages/{msg}"}],
        }
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": title,
            "version": version,
            "description": "CloudEvents on Kafka that drive Temporal workflows through the "
            "loom, and the events those workflows emit (CloudEvents Kafka protocol binding, "
            "binary mode shown as headers; structured mode carries the same attributes in a "
            "JSON envelope).",
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


def dump_document(document: Mapping[str, Any], *, yaml: bool = False) -> str:
    """Serialise the document as JSON, or YAML when asked and PyYAML is installed."""
    if yaml:
        try:
            import yaml as pyyaml
        except ImportError:  # JSON is valid YAML: still a usable file
            pass
        else:
            return str(pyyaml.safe_dump(dict(document), sort_keys=False, allow_unicode=True))
    return json.dumps(document, indent=2) + "\n"

"""temporal-loom: CloudEvents on Kafka drive Temporal workflows; workflows emit events back.

The public names below are imported lazily (PEP 562) so that ``import bridge.workflow``
inside Temporal's workflow sandbox does not pull in aiokafka, the consumer or the CLI.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bridge.actions import (
        MissingWorkflowPolicy,
        Signal,
        SignalWithStart,
        StartWorkflow,
        UpdateWithStart,
    )
    from bridge.consumer import Loom
    from bridge.dev import EmbeddedKafka, EmbeddedTemporal
    from bridge.events import EVENT_SIGNAL, EVENT_UPDATE, Event
    from bridge.exceptions import (
        BadInputError,
        DataValidationError,
        DecodeError,
        LoomError,
        PermanentTemporalError,
        RouteDefinitionError,
        SettingsError,
        SetupError,
        TransientTemporalError,
    )
    from bridge.kafka_binding import Record, decode, encode
    from bridge.matching import Match
    from bridge.routing import Route, Router, UnmatchedPolicy
    from bridge.settings import LoomSettings, load_settings
    from bridge.temporal_calls import TemporalExecutor


_EXPORTS: dict[str, str] = {
    # vocabulary
    "Event": "bridge.events",
    "EVENT_SIGNAL": "bridge.events",
    "EVENT_UPDATE": "bridge.events",
    # routes
    "Match": "bridge.matching",
    "Route": "bridge.routing",
    "Router": "bridge.routing",
    "UnmatchedPolicy": "bridge.routing",
    "SignalWithStart": "bridge.actions",
    "StartWorkflow": "bridge.actions",
    "Signal": "bridge.actions",
    "UpdateWithStart": "bridge.actions",
    "MissingWorkflowPolicy": "bridge.actions",
    # the sidecar
    "Loom": "bridge.consumer",
    "LoomSettings": "bridge.settings",
    "load_settings": "bridge.settings",
    "TemporalExecutor": "bridge.temporal_calls",
    "Record": "bridge.kafka_binding",
    "decode": "bridge.kafka_binding",
    "encode": "bridge.kafka_binding",
    # embedded servers
    "EmbeddedKafka": "bridge.dev",
    "EmbeddedTemporal": "bridge.dev",
    # errors
    "LoomError": "bridge.exceptions",
    "SetupError": "bridge.exceptions",
    "RouteDefinitionError": "bridge.exceptions",
    "SettingsError": "bridge.exceptions",
    "BadInputError": "bridge.exceptions",
    "DecodeError": "bridge.exceptions",
    "DataValidationError": "bridge.exceptions",
    "TransientTemporalError": "bridge.exceptions",
    "PermanentTemporalError": "bridge.exceptions",
}

__all__ = [
    "EVENT_SIGNAL",
    "EVENT_UPDATE",
    "BadInputError",
    "DataValidationError",
    "DecodeError",
    "EmbeddedKafka",
    "EmbeddedTemporal",
    "Event",
    "Loom",
    "LoomError",
    "LoomSettings",
    "Match",
    "MissingWorkflowPolicy",
    "PermanentTemporalError",
    "Record",
    "Route",
    "RouteDefinitionError",
    "Router",
    "SettingsError",
    "SetupError",
    "Signal",
    "SignalWithStart",
    "StartWorkflow",
    "TemporalExecutor",
    "TransientTemporalError",
    "UnmatchedPolicy",
    "UpdateWithStart",
    "decode",
    "encode",
    "load_settings",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'bridge' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])

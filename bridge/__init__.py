"""temporal-loom: CloudEvents on Kafka drive Temporal workflows; workflows emit events back.

The public names load lazily (PEP 562): ``import bridge.workflow`` inside Temporal's workflow
sandbox must not pull in aiokafka, the sidecar or the CLI. ``_EXPORTS`` is the list of public
names and where each lives; the ``TYPE_CHECKING`` block says the same to type checkers, and
``tests/test_exports.py`` keeps the two equal.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bridge.actions import Cancel as Cancel
    from bridge.actions import MissingWorkflowPolicy as MissingWorkflowPolicy
    from bridge.actions import Signal as Signal
    from bridge.actions import SignalWithStart as SignalWithStart
    from bridge.actions import StartWorkflow as StartWorkflow
    from bridge.actions import UnmatchedPolicy as UnmatchedPolicy
    from bridge.actions import UpdateWithStart as UpdateWithStart
    from bridge.dev import DevApp as DevApp
    from bridge.dev import EmbeddedKafka as EmbeddedKafka
    from bridge.dev import EmbeddedTemporal as EmbeddedTemporal
    from bridge.events import EVENT_SIGNAL as EVENT_SIGNAL
    from bridge.events import EVENT_UPDATE as EVENT_UPDATE
    from bridge.events import Event as Event
    from bridge.exceptions import BadInputError as BadInputError
    from bridge.exceptions import DataValidationError as DataValidationError
    from bridge.exceptions import DecodeError as DecodeError
    from bridge.exceptions import LoomError as LoomError
    from bridge.exceptions import PermanentTemporalError as PermanentTemporalError
    from bridge.exceptions import RouteDefinitionError as RouteDefinitionError
    from bridge.exceptions import SettingsError as SettingsError
    from bridge.exceptions import SetupError as SetupError
    from bridge.exceptions import TransientTemporalError as TransientTemporalError
    from bridge.kafka.binding import decode as decode
    from bridge.kafka.binding import encode as encode
    from bridge.kafka.record import Record as Record
    from bridge.matching import Match as Match
    from bridge.routing import Route as Route
    from bridge.routing import Router as Router
    from bridge.settings import LoomSettings as LoomSettings
    from bridge.settings import load_settings as load_settings
    from bridge.sidecar.loop import Loom as Loom
    from bridge.sidecar.process import Sidecar as Sidecar
    from bridge.temporal.calls import TemporalExecutor as TemporalExecutor

_EXPORTS: dict[str, str] = {
    # vocabulary
    "Event": "bridge.events",
    "EVENT_SIGNAL": "bridge.events",
    "EVENT_UPDATE": "bridge.events",
    # routes
    "Match": "bridge.matching",
    "Route": "bridge.routing",
    "Router": "bridge.routing",
    "SignalWithStart": "bridge.actions",
    "StartWorkflow": "bridge.actions",
    "Signal": "bridge.actions",
    "UpdateWithStart": "bridge.actions",
    "Cancel": "bridge.actions",
    "MissingWorkflowPolicy": "bridge.actions",
    "UnmatchedPolicy": "bridge.actions",
    # the sidecar
    "Sidecar": "bridge.sidecar.process",
    "Loom": "bridge.sidecar.loop",
    "LoomSettings": "bridge.settings",
    "load_settings": "bridge.settings",
    "TemporalExecutor": "bridge.temporal.calls",
    "Record": "bridge.kafka.record",
    "decode": "bridge.kafka.binding",
    "encode": "bridge.kafka.binding",
    # embedded servers and loom dev
    "EmbeddedKafka": "bridge.dev",
    "EmbeddedTemporal": "bridge.dev",
    "DevApp": "bridge.dev",
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

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'bridge' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])

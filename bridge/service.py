"""Deprecated alias of :mod:`bridge.sidecar.process`, :mod:`bridge.temporal.client` and the
loaders (moved in 0.2.0, removed in 0.3.0)."""

from __future__ import annotations

from bridge._deprecated import gone, warn_moved
from bridge._loading import load_codec, load_object, load_router
from bridge.sidecar.process import Sidecar, run_sidecar, settings_summary
from bridge.temporal.client import connect_temporal, make_data_converter, temporal_tls

__all__ = [
    "Sidecar",
    "connect_temporal",
    "load_codec",
    "load_object",
    "load_router",
    "make_data_converter",
    "run_sidecar",
    "settings_summary",
    "temporal_tls",
]

warn_moved("bridge.service", "bridge.sidecar.process and bridge.temporal.client")
__getattr__ = gone(
    "bridge.service",
    {"tracing_plugins": "connect_temporal sets up tracing from LOOM_TRACING__* itself"},
)

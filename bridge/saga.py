"""Deprecated alias of :mod:`bridge.workflow.saga` (moved in 0.2.0, removed in 0.3.0)."""

from __future__ import annotations

from bridge._deprecated import warn_moved
from bridge.workflow.saga import Compensation, Compensations

__all__ = ["Compensation", "Compensations"]

warn_moved("bridge.saga", "bridge.workflow.saga")

"""The reference application's Temporal side: the order saga, its activities and its worker.

Laid out like temporalio/samples-python (``message_passing/introduction``): workflows in
``workflows.py``, activities in ``activities.py``, the worker entry point in ``worker.py``,
typed inputs and event payloads in ``models.py``.
"""

from __future__ import annotations

#: Task queue of the reference application (``LoomSettings.temporal.task_queue``'s default).
TASK_QUEUE = "loom-orders"

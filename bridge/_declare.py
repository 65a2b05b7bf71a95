"""Checks of a route's declaration: workflow and handler references, values and arguments.

Everything here runs once, when a ``Route`` is built, and raises ``RouteDefinitionError``
(without the route's name: ``Route`` adds it) so that a bad route stops the sidecar at
start-up, never at the first event.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel
from temporalio.workflow import _Definition, _SignalDefinition, _UpdateDefinition

from bridge._templates import compile_template
from bridge.actions import (
    ActionKind,
    ArgsFn,
    Cancel,
    ClosedWorkflowPolicy,
    HandlerRef,
    MissingWorkflowPolicy,
    Signal,
    SignalWithStart,
    StartWorkflow,
    Template,
    UpdateWithStart,
    WorkflowRef,
)
from bridge.events import EVENT_SIGNAL, EVENTS_SIGNAL, Event
from bridge.exceptions import RouteDefinitionError, TemplateError
from bridge.matching import qualname
from bridge.workflow.entity import EntityInput
from bridge.workflow.loom import takes_batches

#: A value computed from an event and its validated data.
Value = Callable[[Event, Any], Any]


def workflow_name(ref: WorkflowRef) -> tuple[str, _Definition | None]:
    if isinstance(ref, str):
        if not ref:
            raise RouteDefinitionError("workflow type name is empty")
        return ref, None
    if isinstance(ref, type):
        defn = _Definition.from_class(ref)
    elif callable(ref):
        defn = _Definition.from_run_fn(ref)
    else:
        defn = None
    if defn is None:
        raise RouteDefinitionError(
            f"workflow {qualname(ref)} is neither a type name, a @workflow.defn class, "
            "nor its @workflow.run method"
        )
    if not defn.name:
        raise RouteDefinitionError(
            f"workflow {qualname(ref)} is dynamic; name the workflow type as a str"
        )
    return defn.name, defn


def handler_name(ref: HandlerRef, kind: str, workflow: _Definition | None) -> str:
    if isinstance(ref, str):
        if not ref:
            raise RouteDefinitionError(f"{kind} name is empty")
        return ref
    signal = _SignalDefinition.from_fn(ref) if callable(ref) else None
    update = getattr(ref, "_defn", None)
    defn = signal if kind == "signal" else update
    if not isinstance(defn, _SignalDefinition | _UpdateDefinition):
        other = "update" if kind == "signal" else "signal"
        hint = f" (it is an @workflow.{other} handler)" if (signal or update) else ""
        raise RouteDefinitionError(
            f"{kind} {qualname(ref)} is neither a name nor a @workflow.{kind} method{hint}"
        )
    if not defn.name:
        raise RouteDefinitionError(f"{kind} {qualname(ref)} is dynamic; give its name as a str")
    if workflow is not None:
        handlers: Mapping[str | None, Any] = (
            workflow.signals if kind == "signal" else workflow.updates
        )
        # A dynamic handler (key None) on the workflow receives any name.
        if defn.name not in handlers and None not in handlers:
            raise RouteDefinitionError(
                f"workflow {workflow.name!r} has no {kind} {defn.name!r} ({qualname(ref)})"
            )
    return defn.name


def value_fn(spec: Template, what: str, model: type[BaseModel] | None, *, raw: bool) -> Value:
    if isinstance(spec, str):
        try:
            template = compile_template(spec, model=model)
        except RouteDefinitionError as exc:
            raise RouteDefinitionError(f"{what}: {exc}") from None
        return template.value if raw else template.render
    if callable(spec):
        return spec
    raise RouteDefinitionError(
        f"{what} must be a template str or a callable (event, data) -> value, got {spec!r}"
    )


def text_fn(spec: Template, what: str, model: type[BaseModel] | None) -> Value:
    """A text from the event: a template, a constant (a str without fields) or a callable."""
    if isinstance(spec, str):
        try:
            parsed = list(string.Formatter().parse(spec))
        except ValueError as exc:
            raise RouteDefinitionError(f"{what}: template {spec!r}: {exc}") from None
        if all(field is None for _, field, _, _ in parsed):
            text = "".join(literal for literal, _, _, _ in parsed)
            return lambda event, data: text
    return value_fn(spec, what, model, raw=False)


def describe_action(action: Any) -> tuple[ActionKind, str | None, str | None, str | None]:
    """Kind, workflow type, task queue and handler name of an action declaration."""
    if isinstance(action, Signal | Cancel):
        policy = action.if_missing
        if not isinstance(policy, MissingWorkflowPolicy):
            raise RouteDefinitionError(f"if_missing must be a MissingWorkflowPolicy, got {policy!r}")
        if isinstance(action, Cancel):
            return ActionKind.CANCEL, None, None, None
        return ActionKind.SIGNAL, None, None, handler_name(action.signal, "signal", None)
    if not isinstance(action, SignalWithStart | StartWorkflow | UpdateWithStart):
        raise RouteDefinitionError(
            "action must be SignalWithStart, StartWorkflow, Signal, UpdateWithStart or Cancel, "
            f"got {action!r}"
        )
    workflow_type, defn = workflow_name(action.workflow)
    if not isinstance(action.task_queue, str) or not action.task_queue:
        raise RouteDefinitionError(f"task_queue must be a non-empty str, got {action.task_queue!r}")
    if isinstance(action, StartWorkflow):
        return ActionKind.START, workflow_type, action.task_queue, None
    if isinstance(action, UpdateWithStart):
        if action.reply_type is not None and action.reply_topic is None:
            raise RouteDefinitionError("reply_type is set but reply_topic is not")
        handler = handler_name(action.update, "update", defn)
        return ActionKind.UPDATE_WITH_START, workflow_type, action.task_queue, handler
    handler = handler_name(action.signal, "signal", defn)
    return ActionKind.SIGNAL_WITH_START, workflow_type, action.task_queue, handler


def args_fn(fn: ArgsFn | None, what: str) -> ArgsFn | None:
    if fn is not None and not callable(fn):
        raise RouteDefinitionError(
            f"{what} must be a callable (event, data) -> sequence, got {fn!r}"
        )
    return fn


def coalescing(action: Any, kind: ActionKind, handler: str | None, requested: bool | None) -> str:
    """Whether a route coalesces (its events queued behind one workflow id share a call), as
    the ``coalesce`` row of ``loom routes``: ``"on: ..."`` or ``"off: ..."`` with the reason.

    On by default only where it is safe by construction: signal-with-start of a workflow
    given as a class whose inbox takes batches (:func:`bridge.workflow.loom.takes_batches`),
    with the default signal and arguments. ``requested`` (the route's ``coalesce``) overrides,
    within what a coalesced call can carry.
    """
    if kind not in (ActionKind.SIGNAL_WITH_START, ActionKind.SIGNAL):
        if requested:
            raise RouteDefinitionError(
                f"coalesce=True: {kind} routes never coalesce (each start is its own workflow, "
                "each update returns its own result)"
            )
        return f"off: {kind}"
    defaults = action.args is None and handler == EVENT_SIGNAL
    if requested is False:
        return "off: declared"
    if requested:
        if not defaults:
            raise RouteDefinitionError(
                f"coalesce=True: a coalesced call is the {EVENTS_SIGNAL!r} signal carrying the "
                f"events' payloads, which the inbox takes as {EVENT_SIGNAL!r}: the route needs "
                "the default signal and args"
            )
        workflow = getattr(action, "workflow", None)
        if isinstance(workflow, type):
            defn = workflow_name(workflow)[1]
            if defn is not None and EVENTS_SIGNAL not in defn.signals:
                raise RouteDefinitionError(
                    f"coalesce=True: workflow {defn.name!r} has no {EVENTS_SIGNAL!r} signal "
                    "handler (Temporal would buffer the batches and nobody would see them)"
                )
            return "on: declared"
        what = "workflow named by string" if isinstance(workflow, str) else "signal route"
        return f"on: declared ({what}, not checked: it must handle {EVENTS_SIGNAL!r})"
    if kind is not ActionKind.SIGNAL_WITH_START:
        return "off: signal route (coalesce=True turns it on)"
    if not isinstance(action.workflow, type):
        return "off: workflow not given as a class (coalesce=True turns it on)"
    if not takes_batches(action.workflow):
        return "off: not a LoomWorkflow with its own inbox handlers"
    if not defaults:
        return "off: signal or args not the default"
    return "on: LoomWorkflow"


def start_state_checked(route: str, workflow: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """``args`` (a route's start arguments), refused when one is an ``EntityInput`` whose state
    is not of the state model of ``workflow`` (an entity class): that entity would fail its
    first workflow task on every try, since its state cannot be read.

    Raises:
        TemplateError: The state is of another model (the event is dead-lettered).
    """
    model = getattr(workflow, "state_model", None)
    for arg in args:
        state = arg.state if isinstance(arg, EntityInput) else None
        if model is not None and state is not None and not isinstance(state, model):
            raise TemplateError(
                f"route {route!r}: start_args gives EntityInput(state={type(state).__name__}"
                f"(...)), but {qualname(workflow)} keeps a {model.__name__}"
            )
    return args


def invocation_constants(route: Any) -> dict[str, Any]:
    """The fields of a route's invocations that no event changes, found once (a
    ``bridge.routing.Route``): the per-event work is then the event's own (measured: a sixth
    of ``resolve``)."""
    action = route.action
    update = action if isinstance(action, UpdateWithStart) else None
    return {
        "kind": route.kind,
        "route": route.name,
        "workflow_type": route.workflow_type,
        "task_queue": route.task_queue,
        "name": route.handler,
        "id_reuse_policy": getattr(action, "id_reuse_policy", None),
        "id_conflict_policy": getattr(action, "id_conflict_policy", None),
        "coalesce": route.coalesce,
        "reply_topic": update.reply_topic if update is not None else None,
        "reply_type": update.reply_type if update is not None else None,
        "if_closed": getattr(action, "if_closed", ClosedWorkflowPolicy.DEAD_LETTER),
    }

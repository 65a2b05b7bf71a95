"""Routes: which events drive which Temporal workflows, declared in Python, checked when built.

A ``Route`` pairs a ``Match`` (CloudEvents attributes, optional predicate on the validated data)
with an action declaration from ``bridge.actions`` and an optional pydantic model for ``data``.
Everything that can be checked without an event is checked in the constructor (templates,
workflow and handler references, option conflicts) and raises ``RouteDefinitionError`` naming
the route, so a bad route stops the sidecar at start-up, never at the first event.

The ``Router`` holds the routes, finds all of them that match an event (fan-out, declaration
order) through a type index whose cost does not grow with the number of exact-type routes, and
resolves each into an ``Invocation``:

    router = Router([
        Route("order-placed", Match(type="order.placed"),
              SignalWithStart(workflow=OrderSaga, task_queue="orders",
                              workflow_id="order-{data.order_id}"),
              data=OrderPlaced),
    ])
    invocations = router.resolve(event)   # [] means unmatched: apply router.unmatched

Matching happens in two steps. ``Router.match`` looks only at attributes (cheap, no parsing of
``data``). ``Router.resolve`` then validates ``data`` with each route's model and evaluates its
``where`` predicate: a route whose predicate is false does not apply and yields no invocation.
If no route applies, an event carrying the ``loomcorrelation`` extension is a reply to a
workflow that emitted a command: it is signalled (``EVENT_SIGNAL``) into that workflow id under
the pseudo-route ``loom.reply``. Otherwise the result is empty and the caller applies
``Router.unmatched``.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError
from temporalio.workflow import _Definition, _SignalDefinition, _UpdateDefinition

from bridge.actions import (
    Action,
    ActionKind,
    ArgsFn,
    HandlerRef,
    Invocation,
    MissingWorkflowPolicy,
    Signal,
    SignalWithStart,
    StartWorkflow,
    Template,
    UpdateWithStart,
    WorkflowRef,
)
from bridge.events import CORRELATION, EVENT_SIGNAL, Event
from bridge.exceptions import DataValidationError, LoomError, RouteDefinitionError, TemplateError
from bridge.matching import Match, TypeIndex, as_text, qualname
from bridge.templates import compile_template

__all__ = [
    "NAMESPACE",
    "REPLY_ROUTE",
    "Match",
    "Route",
    "Router",
    "UnmatchedPolicy",
    "reply_invocation",
    "request_id",
    "update_id",
]

#: UUIDv5 namespace of the deterministic request ids and update ids.
NAMESPACE = uuid.UUID("6f1d3c1e-55a8-5c3e-9a0e-6c6f6f6d0001")
#: Route name of reply events signalled through the ``loomcorrelation`` extension.
REPLY_ROUTE = "loom.reply"

_Value = Callable[[Event, Any], Any]


class UnmatchedPolicy(enum.StrEnum):
    """What the sidecar does with an event that no route applies to.

    Attributes:
        DEAD_LETTER: Write the original record to the dead-letter topic with reason
            ``unmatched`` (the default: nothing is silently dropped).
        SKIP: Commit the record without doing anything and count it in a metric (for topics
            shared with events the loom is not meant to handle).
        FAIL: Stop the sidecar (strict deployments where an unmatched event means the route
            table and the producers disagree).
    """

    DEAD_LETTER = "dead-letter"
    SKIP = "skip"
    FAIL = "fail"


def request_id(route: str, event: Event) -> str:
    """Deterministic Temporal request id of ``event`` through ``route`` (UUIDv5)."""
    return str(uuid.uuid5(NAMESPACE, f"{route}\x1f{event.source}\x1f{event.id}"))


def update_id(route: str, event: Event) -> str:
    """Deterministic update id of ``event`` through an update-with-start ``route`` (UUIDv5)."""
    return str(uuid.uuid5(NAMESPACE, f"update\x1f{route}\x1f{event.source}\x1f{event.id}"))


def _workflow_name(ref: WorkflowRef) -> tuple[str, _Definition | None]:
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


def _handler_name(ref: HandlerRef, kind: str, workflow: _Definition | None) -> str:
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


def _value_fn(spec: Template, what: str, model: type[BaseModel] | None, *, raw: bool) -> _Value:
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


class Route:
    """One route: a match, an action in Temporal, and an optional data model.

    Args:
        name: Unique name; part of the deterministic request ids, so renaming a route changes
            the ids of its calls.
        match: A ``Match``, or a str as a shortcut for ``Match(type=...)``.
        action: ``SignalWithStart``, ``StartWorkflow``, ``Signal`` or ``UpdateWithStart``.
        data: Pydantic model validating the event's ``data``; ``None`` passes it through raw.

    Raises:
        RouteDefinitionError: The declaration is wrong; the message names the route.
    """

    __slots__ = (
        "_args",
        "_memo",
        "_search_attributes",
        "_start_args",
        "_workflow_id",
        "action",
        "data",
        "handler",
        "kind",
        "match",
        "name",
        "task_queue",
        "workflow_type",
    )

    def __init__(
        self,
        name: str,
        match: Match | str,
        action: Action,
        data: type[BaseModel] | None = None,
    ) -> None:
        if not isinstance(name, str) or not name.strip() or "\x1f" in name:
            raise RouteDefinitionError(f"route name must be a non-empty str, got {name!r}")
        if name == REPLY_ROUTE:
            raise RouteDefinitionError(f"route name {REPLY_ROUTE!r} is reserved for replies")
        try:
            self._build(name, match, action, data)
        except RouteDefinitionError as exc:
            raise RouteDefinitionError(f"route {name!r}: {exc}") from None

    def _build(self, name: str, match: Match | str, action: Action, data: Any) -> None:
        self.name = name
        self.match = Match(type=match) if isinstance(match, str) else match
        if not isinstance(self.match, Match):
            raise RouteDefinitionError(f"match must be a Match or a type str, got {match!r}")
        if data is not None and not (isinstance(data, type) and issubclass(data, BaseModel)):
            raise RouteDefinitionError(f"data must be a pydantic model class or None, got {data!r}")
        self.data: type[BaseModel] | None = data
        self.action = action
        self.kind, self.workflow_type, self.task_queue, self.handler = _describe_action(action)
        self._workflow_id = _value_fn(action.workflow_id, "workflow_id", data, raw=False)
        self._args = _args_fn(action.args, "args")
        self._start_args: ArgsFn | None = None
        self._memo: dict[str, _Value] = {}
        self._search_attributes: dict[str, _Value] = {}
        if isinstance(action, Signal):
            return
        if not isinstance(action, StartWorkflow):
            self._start_args = _args_fn(action.start_args, "start_args")
        for label, specs, target in (
            ("memo", action.memo, self._memo),
            ("search_attributes", action.search_attributes, self._search_attributes),
        ):
            for key, spec in specs.items():
                if not isinstance(key, str) or not key:
                    raise RouteDefinitionError(f"{label} keys must be non-empty str, got {key!r}")
                target[key] = _value_fn(spec, f"{label}[{key!r}]", data, raw=True)

    def __repr__(self) -> str:
        return f"Route({self.name!r}, {self.match.describe()!r}, {self.kind.value})"

    # --- per event --------------------------------------------------------------------------

    def validate(self, event: Event) -> Any:
        """The event's data validated by the route's model (raw data without a model).

        Raises:
            DataValidationError: The data does not validate; the message summarises pydantic's
                errors.
        """
        if self.data is None:
            return event.data
        try:
            if isinstance(event.data, bytes | bytearray):
                return self.data.model_validate_json(event.data)
            return self.data.model_validate(event.data)
        except ValidationError as exc:
            errors = exc.errors(include_url=False)
            summary = "; ".join(
                f"{'.'.join(str(loc) for loc in err['loc']) or '<data>'}: {err['msg']}"
                for err in errors[:5]
            )
            more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
            raise DataValidationError(
                f"route {self.name!r}: data does not match {self.data.__name__}: {summary}{more}"
            ) from None

    def applies(self, data: Any) -> bool:
        """Evaluate the ``where`` predicate on validated data (True without a predicate).

        Raises:
            DataValidationError: The predicate raised; the event is treated as bad input.
        """
        where = self.match.where
        if where is None:
            return True
        try:
            return bool(where(data))
        except LoomError:
            raise
        except Exception as exc:
            raise DataValidationError(
                f"route {self.name!r}: predicate {qualname(where)} raised "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    def resolve(self, event: Event) -> Invocation | None:
        """Resolve the event into the Temporal call of this route.

        Returns:
            The invocation, or ``None`` when the route does not apply (attributes or predicate).

        Raises:
            DataValidationError: ``data`` fails the route's model, or the predicate raised.
            TemplateError: A template names a missing field, or a callable failed.
        """
        if not self.match.matches(event):
            return None
        data = self.validate(event)
        return self.invocation(event, data) if self.applies(data) else None

    def invocation(self, event: Event, data: Any) -> Invocation:
        """Build the invocation from the event and its already validated data."""
        action = self.action
        workflow_id = self._call("workflow_id", self._workflow_id, event, data)
        if not isinstance(workflow_id, str) or not workflow_id:
            raise TemplateError(
                f"route {self.name!r}: workflow_id must be a non-empty str, got {workflow_id!r}"
            )
        args = self._sequence("args", self._args, event, data, (event.to_payload(),))
        rid = request_id(self.name, event)
        if isinstance(action, Signal):
            return Invocation(
                kind=self.kind,
                route=self.name,
                event=event,
                workflow_id=workflow_id,
                name=self.handler,
                args=args,
                request_id=rid,
                if_missing=action.if_missing,
            )
        is_update = isinstance(action, UpdateWithStart)
        reply_topic = action.reply_topic if isinstance(action, UpdateWithStart) else None
        reply_type = action.reply_type if isinstance(action, UpdateWithStart) else None
        if reply_topic is not None and reply_type is None:
            reply_type = f"{event.type}.reply"
        return Invocation(
            kind=self.kind,
            route=self.name,
            event=event,
            workflow_id=workflow_id,
            workflow_type=self.workflow_type,
            task_queue=self.task_queue,
            name=self.handler,
            args=args,
            start_args=self._sequence("start_args", self._start_args, event, data, ()),
            request_id=rid,
            update_id=update_id(self.name, event) if is_update else None,
            id_reuse_policy=action.id_reuse_policy,
            id_conflict_policy=action.id_conflict_policy,
            memo={k: self._call(f"memo[{k!r}]", fn, event, data) for k, fn in self._memo.items()},
            search_attributes={
                k: self._call(f"search_attributes[{k!r}]", fn, event, data)
                for k, fn in self._search_attributes.items()
            },
            reply_topic=reply_topic,
            reply_type=reply_type,
        )

    def _call(self, what: str, fn: _Value, event: Event, data: Any) -> Any:
        # Values come from user templates and callables: any failure is about this event's
        # content, so it becomes a TemplateError (dead-lettered), never a crash of the line.
        try:
            return fn(event, data)
        except TemplateError as exc:
            raise TemplateError(f"route {self.name!r}: {what}: {exc}") from None
        except LoomError:
            raise
        except Exception as exc:
            raise TemplateError(
                f"route {self.name!r}: {what} {qualname(fn)} raised {type(exc).__name__}: {exc}"
            ) from exc

    def _sequence(
        self, what: str, fn: ArgsFn | None, event: Event, data: Any, default: tuple[Any, ...]
    ) -> tuple[Any, ...]:
        if fn is None:
            return default
        value = self._call(what, fn, event, data)
        if not isinstance(value, Sequence) or isinstance(value, str | bytes):
            raise TemplateError(
                f"route {self.name!r}: {what} must return a sequence of arguments, got {value!r}"
            )
        return tuple(value)

    def describe(self) -> dict[str, str | None]:
        """One row of ``loom routes``."""
        spec = self.action.workflow_id
        return {
            "name": self.name,
            "match": self.match.describe(),
            "data": self.data.__name__ if self.data is not None else None,
            "action": self.kind.value,
            "workflow_type": self.workflow_type,
            "workflow_id": spec if isinstance(spec, str) else qualname(spec),
            "task_queue": self.task_queue,
            "handler": self.handler,
        }


def _describe_action(action: Any) -> tuple[ActionKind, str | None, str | None, str | None]:
    """Kind, workflow type, task queue and handler name of an action declaration."""
    if isinstance(action, Signal):
        return ActionKind.SIGNAL, None, None, _handler_name(action.signal, "signal", None)
    if not isinstance(action, SignalWithStart | StartWorkflow | UpdateWithStart):
        raise RouteDefinitionError(
            "action must be SignalWithStart, StartWorkflow, Signal or UpdateWithStart, "
            f"got {action!r}"
        )
    workflow_type, defn = _workflow_name(action.workflow)
    if not isinstance(action.task_queue, str) or not action.task_queue:
        raise RouteDefinitionError(f"task_queue must be a non-empty str, got {action.task_queue!r}")
    if isinstance(action, StartWorkflow):
        return ActionKind.START, workflow_type, action.task_queue, None
    if isinstance(action, UpdateWithStart):
        if action.reply_type is not None and action.reply_topic is None:
            raise RouteDefinitionError("reply_type is set but reply_topic is not")
        handler = _handler_name(action.update, "update", defn)
        return ActionKind.UPDATE_WITH_START, workflow_type, action.task_queue, handler
    handler = _handler_name(action.signal, "signal", defn)
    return ActionKind.SIGNAL_WITH_START, workflow_type, action.task_queue, handler


def _args_fn(fn: ArgsFn | None, what: str) -> ArgsFn | None:
    if fn is not None and not callable(fn):
        raise RouteDefinitionError(
            f"{what} must be a callable (event, data) -> sequence, got {fn!r}"
        )
    return fn


class Router:
    """The route table: type-indexed matching, fan-out, resolution into invocations.

    Args:
        routes: Routes in declaration order (the order of fan-out invocations).
        unmatched: What the sidecar does with an event that no route applies to.
        replies: Signal unmatched events carrying ``loomcorrelation`` into that workflow.

    Raises:
        RouteDefinitionError: Two routes share a name.
    """

    def __init__(
        self,
        routes: Iterable[Route] = (),
        *,
        unmatched: UnmatchedPolicy = UnmatchedPolicy.DEAD_LETTER,
        replies: bool = True,
    ) -> None:
        self.unmatched = UnmatchedPolicy(unmatched)
        self.replies = replies
        self._routes: list[Route] = []
        self._names: set[str] = set()
        self._index: TypeIndex[Route] = TypeIndex()
        for route in routes:
            self.add(route)

    def add(self, route: Route) -> Route:
        """Add a route after the existing ones and return it.

        Raises:
            RouteDefinitionError: Not a ``Route``, or its name is taken.
        """
        if not isinstance(route, Route):
            raise RouteDefinitionError(f"router: expected a Route, got {route!r}")
        if route.name in self._names:
            raise RouteDefinitionError(f"route {route.name!r}: a route with this name exists")
        self._index.add(route.match, route)
        self._routes.append(route)
        self._names.add(route.name)
        return route

    @property
    def routes(self) -> tuple[Route, ...]:
        """The routes in declaration order."""
        return tuple(self._routes)

    def __len__(self) -> int:
        return len(self._routes)

    def __iter__(self) -> Iterator[Route]:
        return iter(tuple(self._routes))

    def match(self, event: Event) -> list[Route]:
        """All routes whose attribute conditions match, in declaration order.

        The ``where`` predicates are not evaluated here (they need validated data): see
        ``resolve``.
        """
        return self._index.lookup(event)

    def resolve(self, event: Event) -> list[Invocation]:
        """The invocations for an event: one per applying route, or a reply, or none.

        Returns:
            Invocations in declaration order; an empty list means unmatched (apply
            ``self.unmatched``).

        Raises:
            DataValidationError: A matching route's model refuses the data (or its predicate
                raised); the whole event is then bad input, even if other routes would apply.
            TemplateError: A template names a missing field, or a callable failed.
        """
        invocations: list[Invocation] = []
        validated: dict[int, Any] = {}  # routes sharing a model validate the data once
        for route in self.match(event):
            key = id(route.data)
            if key in validated:
                data = validated[key]
            else:
                data = validated[key] = route.validate(event)
            if route.applies(data):
                invocations.append(route.invocation(event, data))
        if not invocations and self.replies:
            reply = reply_invocation(event)
            if reply is not None:
                invocations.append(reply)
        return invocations

    def describe(self) -> list[dict[str, str | None]]:
        """The route table as plain rows for ``loom routes`` (declaration order)."""
        return [route.describe() for route in self._routes]


def reply_invocation(event: Event) -> Invocation | None:
    """The signal of a reply event into the workflow named by its ``loomcorrelation``.

    A reply whose workflow is missing or closed is dead-lettered, never skipped: the workflow
    awaited it, so losing it silently would hide a bug or a timeout on the workflow side.

    Returns:
        ``None`` when the event carries no (or an empty) ``loomcorrelation``.
    """
    target = event.extensions.get(CORRELATION)
    if target is None or target == "":
        return None
    return Invocation(
        kind=ActionKind.SIGNAL,
        route=REPLY_ROUTE,
        event=event,
        workflow_id=as_text(target),
        name=EVENT_SIGNAL,
        args=(event.to_payload(),),
        request_id=request_id(REPLY_ROUTE, event),
        if_missing=MissingWorkflowPolicy.DEAD_LETTER,
    )

"""Routes: which events drive which Temporal workflows, declared in Python, checked when built.

A ``Route`` pairs a ``Match`` (CloudEvents attributes, optional predicate on the validated data)
with an action declaration from ``bridge.actions`` and an optional pydantic model for ``data``.
Everything that can be checked without an event is checked in the constructor (templates,
workflow and handler references, option conflicts) and raises ``RouteDefinitionError`` naming
the route, so a bad route stops the sidecar at start-up, never at the first event.

The ``Router`` holds the routes, finds all of them that match an event read from a topic
(fan-out, declaration order) through an index by topic and type whose cost does not grow with
the number of routes, and resolves each into an ``Invocation``:

    router = Router([
        Route("order-placed", Match(type="order.placed"),
              SignalWithStart(workflow=OrderSaga, task_queue="orders",
                              workflow_id="order-{data.order_id}"),
              data=OrderPlaced),
    ])
    invocations = router.resolve(event, topic="orders")   # []: unmatched, see router.unmatched

Matching happens in two steps. ``Router.match`` looks only at the topic and the attributes
(cheap, no parsing of ``data``): a route bound to topics (``Match(topic=...)``) applies only to
records read from them, an unbound one to any topic (bindings are not checked without a
topic). ``Router.resolve`` then validates ``data`` with each route's model and evaluates its
``where`` predicate: a route whose predicate is false yields no invocation. If no route
applies, an event with the ``loomcorrelation`` extension is a reply to a workflow that emitted
a command: it is signalled (``EVENT_SIGNAL``) into that workflow id under the pseudo-route
``loom.reply``. Otherwise the result is empty and the caller applies ``Router.unmatched``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from bridge._declare import (
    Value,
    args_fn,
    coalescing,
    describe_action,
    invocation_constants,
    start_state_checked,
    text_fn,
    value_fn,
)
from bridge._ids import request_id, update_id
from bridge._reply import REPLY_ROUTE, reply_invocation
from bridge.actions import (
    Action,
    ArgsFn,
    Cancel,
    Invocation,
    Signal,
    StartWorkflow,
    UnmatchedPolicy,
    UpdateWithStart,
)
from bridge.events import Event
from bridge.exceptions import DataValidationError, LoomError, RouteDefinitionError, TemplateError
from bridge.matching import Match, MatchIndex, qualname

__all__ = ["REPLY_ROUTE", "Match", "Route", "Router", "UnmatchedPolicy", "reply_invocation"]


class Route:
    """One route: a match, an action in Temporal, and an optional data model.

    Args:
        name: Unique name; part of the deterministic request ids, so renaming a route changes
            the ids of its calls.
        match: A ``Match``, or a str as a shortcut for ``Match(type=...)``.
        action: ``SignalWithStart``, ``StartWorkflow``, ``Signal``, ``UpdateWithStart`` or
            ``Cancel``.
        data: Pydantic model validating the event's ``data``; ``None`` passes it through raw.
        coalesce: Whether the events of this route queued behind one workflow id may ride in
            one Temporal call (the ``loom_events`` signal, in partition order). ``None``
            decides from the declaration: on for signal-with-start of a ``LoomWorkflow``
            class with the default signal and args, off otherwise. ``True`` turns it on for
            a workflow named by string or a signal route (it must handle ``loom_events``:
            ``loom routes`` says so); update-with-start and start routes never coalesce.

    Raises:
        RouteDefinitionError: The declaration is wrong; the message names the route.
    """

    __slots__ = (
        "_args",
        "_memo",
        "_reason",
        "_search_attributes",
        "_start_args",
        "_static",
        "_workflow_id",
        "action",
        "coalesce",
        "coalescing",
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
        *,
        coalesce: bool | None = None,
    ) -> None:
        if not isinstance(name, str) or not name.strip() or "\x1f" in name:
            raise RouteDefinitionError(f"route name must be a non-empty str, got {name!r}")
        if name == REPLY_ROUTE:
            raise RouteDefinitionError(f"route name {REPLY_ROUTE!r} is reserved for replies")
        try:
            self._build(name, match, action, data, coalesce)
        except RouteDefinitionError as exc:
            raise RouteDefinitionError(f"route {name!r}: {exc}") from None

    def _build(
        self, name: str, match: Match | str, action: Action, data: Any, coalesce: bool | None
    ) -> None:
        self.name = name
        self.match = Match(type=match) if isinstance(match, str) else match
        if not isinstance(self.match, Match):
            raise RouteDefinitionError(f"match must be a Match or a type str, got {match!r}")
        if data is not None and not (isinstance(data, type) and issubclass(data, BaseModel)):
            raise RouteDefinitionError(f"data must be a pydantic model class or None, got {data!r}")
        self.data: type[BaseModel] | None = data
        self.action = action
        self.kind, self.workflow_type, self.task_queue, self.handler = describe_action(action)
        if coalesce is not None and not isinstance(coalesce, bool):
            raise RouteDefinitionError(f"coalesce must be True, False or None, got {coalesce!r}")
        #: Why the route coalesces or not, as ``loom routes`` shows it.
        self.coalescing = coalescing(action, self.kind, self.handler, coalesce)
        self.coalesce = self.coalescing.startswith("on")
        self._workflow_id = value_fn(action.workflow_id, "workflow_id", data, raw=False)
        self._args: ArgsFn | None = None
        self._start_args: ArgsFn | None = None
        self._reason: Value | None = None
        self._memo: dict[str, Value] = {}
        self._search_attributes: dict[str, Value] = {}
        self._static: dict[str, Any] | None = None  # see invocation_constants
        if isinstance(action, Cancel):
            if action.reason is not None:
                self._reason = text_fn(action.reason, "reason", data)
            return
        self._args = args_fn(action.args, "args")
        if isinstance(action, Signal):
            return
        if not isinstance(action, StartWorkflow):
            self._start_args = args_fn(action.start_args, "start_args")
        for label, specs, target in (
            ("memo", action.memo, self._memo),
            ("search_attributes", action.search_attributes, self._search_attributes),
        ):
            for key, spec in specs.items():
                if not isinstance(key, str) or not key:
                    raise RouteDefinitionError(f"{label} keys must be non-empty str, got {key!r}")
                target[key] = value_fn(spec, f"{label}[{key!r}]", data, raw=True)

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

    def resolve(self, event: Event, topic: str | None = None) -> Invocation | None:
        """Resolve the event, read from ``topic`` (None: unknown), into this route's call.

        Returns:
            The invocation, or ``None`` when the route does not apply (attributes or predicate).

        Raises:
            DataValidationError: ``data`` fails the route's model, or the predicate raised.
            TemplateError: A template names a missing field, or a callable failed.
        """
        if not self.match.matches(event, topic):
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
        rid = request_id(self.name, event)
        if isinstance(action, Cancel):
            reason = (
                self._call("reason", self._reason, event, data)
                if self._reason is not None
                else f"{event.type} from {event.source} (id {event.id})"
            )
            if not isinstance(reason, str):
                raise TemplateError(f"route {self.name!r}: reason must be a str, got {reason!r}")
            return Invocation(
                kind=self.kind,
                route=self.name,
                event=event,
                workflow_id=workflow_id,
                request_id=rid,
                if_missing=action.if_missing,
                reason=reason,
            )
        args = self._sequence("args", self._args, event, data, (event.to_payload(),))
        if isinstance(action, Signal):
            return Invocation(
                kind=self.kind,
                route=self.name,
                event=event,
                workflow_id=workflow_id,
                name=self.handler,
                args=args,
                request_id=rid,
                coalesce=self.coalesce,
                if_missing=action.if_missing,
            )
        static = self._static
        if static is None:
            static = self._static = invocation_constants(self)
        reply_type = static["reply_type"]
        if static["reply_topic"] is not None and reply_type is None:
            reply_type = f"{event.type}.reply"
        return Invocation(
            event=event,
            workflow_id=workflow_id,
            args=args,
            start_args=start_state_checked(
                self.name, getattr(action, "workflow", None),
                () if self._start_args is None
                else self._sequence("start_args", self._start_args, event, data, ()),
            ),
            request_id=rid,
            update_id=update_id(self.name, event) if isinstance(action, UpdateWithStart) else None,
            memo={k: self._call(f"memo[{k!r}]", fn, event, data) for k, fn in self._memo.items()}
            if self._memo else {},
            search_attributes={
                k: self._call(f"search_attributes[{k!r}]", fn, event, data)
                for k, fn in self._search_attributes.items()
            } if self._search_attributes else {},
            **{**static, "reply_type": reply_type},
        )

    def _call(self, what: str, fn: Value, event: Event, data: Any) -> Any:
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
            "coalesce": self.coalescing,
        }


class Router:
    """The route table: matching indexed by topic and type, fan-out, resolution into invocations.

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
        self._index: MatchIndex[Route] = MatchIndex()
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

    def match(self, event: Event, topic: str | None = None) -> list[Route]:
        """All routes whose topic and attribute conditions match, in declaration order.

        ``topic`` is the topic the event was read from; None (unknown) leaves the topic
        bindings unchecked. The ``where`` predicates are not evaluated here (they need
        validated data): see ``resolve``.
        """
        index = self._index
        if not index.bound:  # no route bound to a topic: one type index, one call
            return index.unbound.lookup(event)
        return index.for_topic(topic).lookup(event)

    def unconsumed(self, topics: Iterable[str]) -> list[tuple[str, str]]:
        """``(route, topic)`` for each bound topic (or glob) that names none of ``topics``.

        Such a binding never matches in a sidecar consuming ``topics``: a typo, or a topic
        missing from ``LOOM_KAFKA__TOPICS``.
        """
        consumed = list(topics)
        return [(r.name, t) for r in self._routes for t in r.match.unconsumed(consumed)]

    def resolve(self, event: Event, topic: str | None = None) -> list[Invocation]:
        """The invocations for an event read from ``topic``: one per applying route, a reply,
        or none (``topic=None``: unknown, bindings unchecked).

        Returns:
            Invocations in declaration order; an empty list means unmatched (apply
            ``self.unmatched``).

        Raises:
            DataValidationError, TemplateError: A matching route refused the event (its model, predicate or
                templates), even if others would apply; ``route`` names it.
        """
        invocations: list[Invocation] = []
        validated: dict[int, Any] = {}  # routes sharing a model validate the data once
        for route in self.match(event, topic):
            key = id(route.data)
            try:
                if key not in validated:
                    validated[key] = route.validate(event)
                if route.applies(validated[key]):
                    invocations.append(route.invocation(event, validated[key]))
            except LoomError as exc:
                exc.route = exc.route or route.name  # the dead letter names the route
                raise
        if not invocations and self.replies:
            reply = reply_invocation(event)
            if reply is not None:
                invocations.append(reply)
        return invocations

    def describe(self) -> list[dict[str, str | None]]:
        """The route table as plain rows for ``loom routes`` (declaration order)."""
        return [route.describe() for route in self._routes]

"""Entity workflows: one handler per event type, the state carried for you.

An entity is a long-lived workflow that events move: a device, a customer's credit, a
cart. Subclass :class:`EntityWorkflow` with a pydantic state model, mark one method per event
type with ``@handles``, decorate the class with ``@workflow.defn``, and the base class does
the rest::

    @workflow.defn
    class Device(EntityWorkflow[DeviceState]):
        @handles("device.reading")
        def reading(self, data: Reading) -> None:
            self.state.readings += 1
            self.state.last = data.value

It restores the state and the inbox on start and after continue-as-new, takes events one at
a time in order, validates each event's ``data`` into its handler's model, continues-as-new
by itself carrying the state, the inbox and its counters (the state counts in the inbox's
byte budget, :mod:`bridge.workflow.memory`), and answers queries for the state
(``loom_state``) and the counters (``loom_stats``). A handler may be ``async`` (run
activities, ``emit()``, ``request()``, wait for other events) and may end the workflow with
:meth:`EntityWorkflow.finish`.

Errors follow Temporal's rules: a handler raising ``ApplicationError`` fails the workflow; any
other exception fails the *workflow task*, which Temporal retries from the same history
(nothing is lost, and the state the failed attempt touched is rebuilt, so nothing is applied
twice) until the code is fixed. Events without a handler follow :attr:`EntityWorkflow.unhandled`
and data that does not fit its handler's model :attr:`EntityWorkflow.invalid`: ``ignore``
(counted, visible in ``loom_stats``) or ``fail`` (the workflow task fails, visible in the
Temporal UI, and goes on once a fixed worker takes it).

Imported inside Temporal's workflow sandbox: deterministic, no I/O, no module state.
"""

# No ``from __future__ import annotations`` here: the types below cross Temporal's data
# converter inside the sandbox, where pydantic cannot look this module up in sys.modules
# when a workflow module imported it through imports_passed_through(). Real annotations
# need no lookup (issue 22).

import enum
import typing
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, Field, SerializeAsAny, ValidationError
from temporalio import workflow

from bridge.events import Event
from bridge.workflow.handlers import EntityHandler, HandlerTable
from bridge.workflow.inbox import InboxState
from bridge.workflow.loom import LoomWorkflow
from bridge.workflow.memory import json_size

__all__ = [
    "EntityInput",
    "EntityStats",
    "EntityWorkflow",
    "EventPolicy",
    "EventRef",
    "InvalidEventDataError",
    "InvalidStateError",
    "UnhandledEventError",
]

StateT = TypeVar("StateT", bound=BaseModel)

#: Query names of every entity workflow.
STATE_QUERY = "loom_state"
STATS_QUERY = "loom_stats"


class EventPolicy(enum.StrEnum):
    """What an entity does with an event it cannot hand to a handler.

    Attributes:
        IGNORE: Skip it, count it (``loom_stats``) and log a warning.
        FAIL: Fail the workflow task: Temporal retries it and shows the failure in its UI;
            the entity goes on from that event once a worker with a fix takes the task.
    """

    IGNORE = "ignore"
    FAIL = "fail"


class UnhandledEventError(RuntimeError):
    """An event has no handler and the entity's ``unhandled`` policy is ``fail``.

    Not an ``ApplicationError``: it fails the workflow task (retried), not the workflow.
    """


class InvalidEventDataError(RuntimeError):
    """An event's data does not fit its handler's model and the ``invalid`` policy is ``fail``.

    Not an ``ApplicationError``: it fails the workflow task (retried), not the workflow.
    """


class InvalidStateError(RuntimeError):
    """The input of a run (the state carried from the previous run, or a start input) does
    not fit the entity's state model, e.g. after the model changed.

    Not an ``ApplicationError``: it fails the workflow task, which Temporal retries until a
    worker whose model accepts the state (a default, a validator) takes it; nothing is lost.
    """


class EventRef(BaseModel):
    """The identity of an event: ``source`` and ``id`` (unique together), and its ``type``."""

    source: str
    id: str
    type: str

    @classmethod
    def of(cls, event: Event) -> "EventRef":
        """The identity of ``event``."""
        return cls(source=event.source, id=event.id, type=event.type)


class EntityStats(BaseModel):
    """What an entity did, over all its runs (the ``loom_stats`` query).

    Attributes:
        handled: Events a handler took.
        ignored: Events without a handler, skipped under ``unhandled = "ignore"``.
        invalid: Events whose data did not fit their handler's model, skipped under
            ``invalid = "ignore"``.
        last: The last event the entity took, whatever happened to it.
        last_ignored: The last event ignored (no handler, or invalid data).
        runs: Runs of the workflow so far, this one included (filled in by the query).
        queued: Events received and not taken yet (filled in by the query).
        left_at_finish: Events still queued when a handler finished the workflow (logged).
    """

    handled: int = 0
    ignored: int = 0
    invalid: int = 0
    last: EventRef | None = None
    last_ignored: EventRef | None = None
    runs: int = 0
    queued: int = 0
    left_at_finish: int = 0


class EntityInput(BaseModel, Generic[StateT]):
    """The input of an entity workflow, on start and across continue-as-new.

    A route that starts the entity may give the initial state as its start argument,
    ``start_args=lambda event, data: (EntityInput(state=Credit(customer=data.customer)),)``;
    without one the state comes from :meth:`EntityWorkflow.initial_state`.

    Attributes:
        state: The entity's state; None starts from ``initial_state()``.
        inbox: The inbox carried from the previous run.
        stats: The counters carried from the previous run.
    """

    # SerializeAsAny: an EntityInput built without its type parameter still serialises the
    # whole state (pydantic would otherwise dump only the fields of the bound, BaseModel).
    state: SerializeAsAny[StateT] | None = None
    inbox: InboxState = Field(default_factory=InboxState)
    stats: EntityStats = Field(default_factory=EntityStats)


class EntityWorkflow(LoomWorkflow, Generic[StateT]):
    """Base class of entity workflows: a typed state moved by one handler per event type.

    Subclass it as ``EntityWorkflow[MyState]`` (``MyState`` a pydantic model), mark handlers
    with :func:`~bridge.workflow.handlers.handles` and decorate the class with
    ``@workflow.defn``. The ``@workflow.run`` method is provided: it takes an optional
    :class:`EntityInput` and returns what a handler passes to :meth:`finish`. Change the
    inbox's limits by overriding :meth:`make_inbox`, the policies with the class attributes.

    Attributes:
        state: The entity's state (a ``StateT``); handlers change it in place or replace it.
        state_model: The state's pydantic model (from the type parameter).
        unhandled: Policy for events without a handler (default: ignore, counted).
        invalid: Policy for data that does not fit its handler's model (default: fail the
            workflow task, so the mismatch is seen and fixed rather than silently skipped).
    """

    state_model: ClassVar[type[BaseModel]]
    unhandled: ClassVar[EventPolicy] = EventPolicy.IGNORE
    invalid: ClassVar[EventPolicy] = EventPolicy.FAIL
    _loom_table: ClassVar[HandlerTable]

    state: StateT
    _loom_stats: EntityStats
    _loom_finished: bool
    _loom_result: Any

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        model = _state_model(cls)
        if model is None:
            return  # still generic (a base for other entities): nothing to build yet
        cls.state_model = model
        cls.unhandled = EventPolicy(cls.unhandled)
        cls.invalid = EventPolicy(cls.invalid)
        cls._loom_table = HandlerTable(cls)
        if "run" not in vars(cls) and "<locals>" not in cls.__qualname__:
            _define_typed_methods(cls, model)

    @classmethod
    def handlers(cls) -> tuple[EntityHandler, ...]:
        """The handlers of this entity, in declaration order (for docs and contracts)."""
        return cls._loom_table.handlers

    # --- what subclasses may override -------------------------------------------------------

    def initial_state(self) -> StateT:
        """The state of a new entity when its input carries none (default: the model's
        defaults; override to derive it, e.g. from ``workflow.info().workflow_id``)."""
        try:
            return typing.cast(StateT, self.state_model())
        except ValidationError as exc:
            raise TypeError(
                f"{type(self).__name__}: started without a state, and "
                f"{self.state_model.__name__} has no default for {_summary(exc)}; give the "
                "start input a state (EntityInput(state=...)) or override initial_state()"
            ) from None

    def finish(self, result: Any = None) -> None:
        """End the workflow with ``result`` once the current handler returns.

        Events still queued then are not handled: they are logged and counted
        (``left_at_finish``).
        """
        self._loom_result = result
        self._loom_finished = True

    def carried_bytes(self) -> int:
        """Bytes the entity carries into its next run besides the inbox: its state and
        counters, as JSON measured like the inbox's own (``extra_bytes`` of its budget)."""
        return json_size(self.state.model_dump(mode="json")) + json_size(
            self._loom_stats.model_dump(mode="json")
        )

    # --- the run ------------------------------------------------------------------------------

    async def run(self, input: EntityInput[StateT] | None = None) -> Any:
        """The entity's run (each concrete subclass gets it as its ``@workflow.run``)."""
        return await self.run_entity(input)

    async def run_entity(self, input: EntityInput[StateT] | None = None) -> Any:
        """Restore the state and the inbox, then take events until a handler finishes."""
        self._loom_finished = False
        self._loom_result = None
        self._loom_stats = EntityStats()
        input = self._validated_input(input)
        if input is not None:
            self.inbox.restore(input.inbox)
            self._loom_stats = input.stats.model_copy()
        self.state = (
            input.state if input is not None and input.state is not None else self.initial_state()
        )
        while True:
            event = await self.inbox.next()
            if event is None:  # only after a timeout, and this loop gives none
                continue
            await self.dispatch(event)
            if self._loom_finished:
                return self._finished()
            if self.should_continue_as_new():
                # Events already queued cost no more history: take them first, so that every
                # run makes progress however fast signals come, and the next run carries
                # only what arrived meanwhile.
                for _ in range(len(self.inbox)):
                    queued = self.inbox.take()
                    if queued is None:  # an async handler took the rest itself
                        break
                    await self.dispatch(queued)
                    if self._loom_finished:
                        return self._finished()
                # Asks again (taking the queue may have brought the carried bytes back under
                # the budget) and returns without continuing while the input would be over
                # Temporal's limit: the next event decides again.
                await self.inbox.continue_as_new_if_needed(
                    self.next_input, extra_bytes=self.carried_bytes()
                )

    def _validated_input(self, raw: Any) -> EntityInput[StateT] | None:
        # The typed run method takes its input as plain JSON (see _define_typed_methods), so
        # that a state the model no longer accepts fails here, naming the model and the
        # field, instead of deep in the data converter as "Failed decoding arguments".
        if raw is None:
            return None
        model = EntityInput[self.state_model]  # type: ignore[name-defined]
        if isinstance(raw, EntityInput):
            raw = raw.model_dump(mode="json")
        try:
            return typing.cast(EntityInput[StateT], model.model_validate(raw))
        except ValidationError as exc:
            raise InvalidStateError(
                f"{type(self).__name__}: the run's input does not fit "
                f"EntityInput[{self.state_model.__name__}] (did {self.state_model.__name__} "
                f"change?): {_summary(exc)}; make the model accept the carried state (a default "
                "or a validator), and this workflow task is retried with it"
            ) from None

    def should_continue_as_new(self) -> bool:
        """True when this run should continue-as-new (checked after each event): Temporal
        suggests it, the inbox's signal count says so, or the carried bytes, the state's
        included, grew past the inbox's budget."""
        return self.inbox.should_continue_as_new(extra_bytes=self.carried_bytes())

    async def dispatch(self, event: Event) -> None:
        """Hand one event to its handler (or apply the policies), and count it."""
        stats = self._loom_stats
        stats.last = EventRef.of(event)
        handler = self._loom_table.find(event.type)
        if handler is None:
            if self.unhandled is EventPolicy.FAIL:
                raise UnhandledEventError(
                    f"{type(self).__name__} has no handler for event type {event.type!r} "
                    f"(source {event.source!r}, id {event.id!r}); add one, or set "
                    "unhandled = EventPolicy.IGNORE"
                )
            stats.ignored += 1
            stats.last_ignored = stats.last
            workflow.logger.warning(
                "%s: no handler for %r (source %r, id %r): ignored",
                type(self).__name__, event.type, event.source, event.id,
            )
            return
        try:
            argument = handler.argument(event)
        except ValidationError as exc:
            message = (
                f"{type(self).__name__}.{handler.method}: data of {event.type!r} (source "
                f"{event.source!r}, id {event.id!r}) does not fit {_name(handler.annotation)}: "
                f"{_summary(exc)}"
            )
            if self.invalid is EventPolicy.FAIL:
                raise InvalidEventDataError(message) from None
            stats.invalid += 1
            stats.last_ignored = stats.last
            workflow.logger.warning("%s: ignored", message)
            return
        method = getattr(self, handler.method)
        args = (argument, event) if handler.with_event else (argument,)
        if handler.is_async:
            await method(*args)
        else:
            method(*args)
        stats.handled += 1

    def next_input(self, inbox: InboxState) -> EntityInput[StateT]:
        """The next run's input: the state, the inbox and the counters (called right before
        continue-as-new; override to trim the state or to record something first)."""
        return EntityInput(state=self.state, inbox=inbox, stats=self._loom_stats)

    def _finished(self) -> Any:
        left = len(self.inbox)
        if left:
            self._loom_stats.left_at_finish = left
            workflow.logger.warning(
                "%s finished with %d event(s) still queued, not handled", type(self).__name__, left
            )
        return self._loom_result

    # --- queries ------------------------------------------------------------------------------

    @workflow.query(name=STATE_QUERY)
    def current_state(self) -> Any:
        """The entity's state (each concrete subclass gets it typed by its state model)."""
        return getattr(self, "state", None)

    @workflow.query(name=STATS_QUERY)
    def entity_stats(self) -> EntityStats:
        """What the entity did: handled and ignored counts, the last event, runs, queue."""
        stats: EntityStats = getattr(self, "_loom_stats", None) or EntityStats()
        return stats.model_copy(update={"runs": self.inbox.runs + 1, "queued": len(self.inbox)})


def _state_model(cls: type) -> type[BaseModel] | None:
    for base in vars(cls).get("__orig_bases__", ()):
        origin = typing.get_origin(base)
        if isinstance(origin, type) and issubclass(origin, EntityWorkflow):
            (arg,) = typing.get_args(base)
            if isinstance(arg, TypeVar):
                return None
            if not (isinstance(arg, type) and issubclass(arg, BaseModel)):
                raise TypeError(
                    f"{cls.__qualname__}: the state of an entity must be a pydantic model, "
                    f"got {arg!r}"
                )
            return arg
    inherited: type[BaseModel] | None = getattr(cls, "state_model", None)
    if inherited is None:
        raise TypeError(
            f"{cls.__qualname__}: name the state model, "
            f"class {cls.__name__}(EntityWorkflow[MyState])"
        )
    return inherited


def _define_typed_methods(cls: type[EntityWorkflow[Any]], model: type[BaseModel]) -> None:
    # Temporal wants the @workflow.run method defined on the workflow class itself, and the
    # data converter decodes inputs and query results by the annotations of the methods:
    # give each concrete entity its own run and state query. The run takes its input as
    # plain JSON and validates it itself (_validated_input: a clear message when the state
    # no longer fits its model); the state query is typed by the state model.
    async def run(self: EntityWorkflow[Any], input: Any = None) -> Any:
        return await self.run_entity(input)

    def current_state(self: EntityWorkflow[Any]) -> Any:
        return getattr(self, "state", None)

    run.__annotations__ = {"input": dict[str, Any] | None, "return": Any}
    current_state.__annotations__ = {"return": model | None}
    for fn, base in ((run, EntityWorkflow.run), (current_state, EntityWorkflow.current_state)):
        fn.__module__ = cls.__module__
        fn.__qualname__ = f"{cls.__qualname__}.{fn.__name__}"
        fn.__doc__ = base.__doc__
    cls.run = workflow.run(run)  # type: ignore[method-assign]
    cls.current_state = workflow.query(name=STATE_QUERY)(current_state)  # type: ignore[method-assign]


def _name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or repr(annotation)


def _summary(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False)
    text = "; ".join(
        f"{'.'.join(str(loc) for loc in err['loc']) or '<data>'}: {err['msg']}" for err in errors[:5]
    )
    return text + (f" (+{len(errors) - 5} more)" if len(errors) > 5 else "")

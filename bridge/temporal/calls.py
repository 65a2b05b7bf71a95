"""Perform one resolved ``Invocation`` against Temporal and classify what the server answers.

Signal-with-start, start-only and signal-only requests are built by hand on
``client.workflow_service`` because the high-level client sets a random ``request_id``: the
loom sends the invocation's deterministic one, so the server drops a redelivered event's
second signal (guarantee 2b in docs/architecture.md). Payloads are still encoded with the client's data
converter (payload codecs apply). Raw calls skip client interceptors, so headers (trace
context) come from a hook given to the executor.

Update-with-start goes through the high-level client: its deduplication key is the
deterministic update id, and the client handles the multi-operation protocol.

Cancel requests (:mod:`bridge.temporal.cancel`) go raw as well, with the same request id.

A coalesced invocation (``inv.batch``: several events of one workflow id) is one call of the
``loom_events`` signal with the events' payloads, made here like any other.

Errors are classified by :mod:`bridge.temporal.errors`; "already started" answers to start
requests are duplicates, not failures. An event refused because its workflow's run closed is
a duplicate if that run saw it, else late (:mod:`bridge.temporal.closed`).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any, cast

import temporalio.api.common.v1 as common_pb
import temporalio.api.enums.v1 as enums_pb
import temporalio.api.workflowservice.v1 as wsv1
from temporalio.client import (
    Client,
    HeaderCodecBehavior,
    WithStartWorkflowOperation,
)
from temporalio.converter import (
    DataConverter,
    WorkflowSerializationContext,
    encode_search_attributes,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from bridge.actions import ActionKind, Invocation, MissingWorkflowPolicy, Outcome
from bridge.events import EVENT_SIGNAL, EVENT_UPDATE
from bridge.exceptions import (
    BatchRefusedError,
    PayloadTooLargeError,
    PermanentTemporalError,
    SignalLimitError,
    TemporalCallError,
    WorkflowNotFoundError,
)
from bridge.temporal.attributes import typed_search_attributes
from bridge.temporal.cancel import cancel_workflow
from bridge.temporal.closed import (
    DEFAULT_CLOSED_QUERY_TIMEOUT,
    ClosedRuns,
    closed_workflow_outcome,
)
from bridge.temporal.errors import (
    CodecGuard,
    already_started_run_id,
    classify_error,
    is_workflow_not_found,
)

__all__ = [
    "DEFAULT_PAYLOAD_LIMIT",
    "DEFAULT_SIGNAL_LIMIT_RETRY_S",
    "HeaderHook",
    "TemporalExecutor",
    "typed_search_attributes",
]

#: Temporal's default blob size limit (``limit.blobSize.error``): 2 MB.
DEFAULT_PAYLOAD_LIMIT = 2 * 1024 * 1024
#: How long a refusal by the per-run signal cap is retried before it is dead-lettered.
DEFAULT_SIGNAL_LIMIT_RETRY_S = 120.0

#: Computes headers (e.g. ``traceparent``) for one invocation; may be sync or async.
HeaderHook = Callable[
    [Invocation], Mapping[str, common_pb.Payload] | Awaitable[Mapping[str, common_pb.Payload]]
]

_RUNNING_OR_UNKNOWN = frozenset(
    {
        enums_pb.WorkflowExecutionStatus.WORKFLOW_EXECUTION_STATUS_UNSPECIFIED,
        enums_pb.WorkflowExecutionStatus.WORKFLOW_EXECUTION_STATUS_RUNNING,
    }
)


class TemporalExecutor:
    """Performs resolved invocations against one Temporal namespace.

    Args:
        client: A connected temporalio client; its data converter encodes payloads.
        payload_limit: Largest total encoded size (bytes) of arguments, start arguments and
            memo; larger invocations raise ``PayloadTooLargeError`` before any call.
        namespace: Namespace to call; defaults to the client's.
        header_hook: Headers (e.g. trace context) added to signal-with-start, start and
            signal requests. Update-with-start uses the high-level client, whose
            interceptors add headers instead.
        rpc_timeout: Deadline of each gRPC call.
        rpc_retry: Let the SDK retry transient gRPC failures inside one call. Off by
            default: the dispatcher retries with its own backoff and keeps order.
        signal_limit_retry_s: How long a refusal by the per-run signal cap is retried
            (``SignalLimitError.retry_for``) before it is dead-lettered.
        closed_query_timeout: How long a closed workflow may take to say whether it saw an
            event (the ``loom_seen`` query, answered by replay on a worker).
    """

    def __init__(
        self,
        client: Client,
        *,
        payload_limit: int = DEFAULT_PAYLOAD_LIMIT,
        namespace: str | None = None,
        header_hook: HeaderHook | None = None,
        rpc_timeout: timedelta | None = timedelta(seconds=10),
        rpc_retry: bool = False,
        signal_limit_retry_s: float = DEFAULT_SIGNAL_LIMIT_RETRY_S,
        closed_query_timeout: timedelta = DEFAULT_CLOSED_QUERY_TIMEOUT,
    ) -> None:
        config = client.config()
        codec = client.data_converter.payload_codec
        if codec is not None and not isinstance(codec, CodecGuard):
            config["data_converter"] = dataclasses.replace(
                client.data_converter, payload_codec=CodecGuard(codec)
            )
        if namespace is not None:
            config["namespace"] = namespace
        if config["namespace"] != client.namespace or config["data_converter"] is not (
            client.data_converter
        ):
            client = Client(**config)
        self._client = client
        self._signal_limit_retry_s = signal_limit_retry_s
        self._closed_query_timeout = closed_query_timeout
        self._closed_runs = ClosedRuns()
        self._payload_limit = payload_limit
        self._header_hook = header_hook
        self._rpc_timeout = rpc_timeout
        self._rpc_retry = rpc_retry
        self._encode_headers = (
            client.config(active_config=True)["header_codec_behavior"] == HeaderCodecBehavior.CODEC
        )

    @property
    def client(self) -> Client:
        """The client used for calls (bound to the executor's namespace)."""
        return self._client

    @property
    def namespace(self) -> str:
        """The namespace invocations run in."""
        return self._client.namespace

    async def execute(
        self,
        inv: Invocation,
        *,
        headers: Mapping[str, common_pb.Payload] | None = None,
    ) -> tuple[Outcome, Any]:
        """Perform one invocation.

        Args:
            inv: The resolved invocation.
            headers: Extra headers for this call, on top of the header hook's.

        Returns:
            The outcome and a value: the run id for signal-with-start, start and cancel (the
            existing run's id for a duplicate or a skipped late event), the update's result
            for update-with-start, None otherwise.

        Raises:
            PayloadTooLargeError: The encoded payloads exceed ``payload_limit``.
            WorkflowNotFoundError: Signal-only or cancel to a missing (signal: or closed)
                workflow under the dead-letter policy.
            WorkflowClosedError: A late event for a closed workflow under ``if_closed``
                dead-letter, or a cancel of a closed one under ``if_missing`` dead-letter.
            TransientTemporalError: Retry later: server unavailable, deadline, overload,
                ``NamespaceUnavailableError``, ``PayloadCodecError``, ``SignalLimitError``
                (the per-run signal cap; retried for ``signal_limit_retry_s``).
            BatchRefusedError: A coalesced call to a workflow whose run closed (the caller
                sends its events one by one: each is a redelivery or late on its own).
            PermanentTemporalError: Anything else the server refused.
        """
        try:
            if inv.kind is ActionKind.CANCEL:
                return await cancel_workflow(
                    self._client, inv, rpc_timeout=self._rpc_timeout, rpc_retry=self._rpc_retry
                )
            if inv.kind is ActionKind.UPDATE_WITH_START:
                try:
                    return await self._update_with_start(inv)
                except WorkflowAlreadyStartedError as err:
                    if err.run_id is None:
                        return Outcome.DUPLICATE, None
                    return await self._closed(inv, err.run_id)
            return await self._raw_call(inv, headers)
        except TemporalCallError:
            raise
        except Exception as err:
            loom_err = classify_error(err)
            if loom_err is None:
                raise
            if isinstance(loom_err, SignalLimitError):
                loom_err.retry_for = self._signal_limit_retry_s
            raise loom_err from err

    # --- raw requests (deterministic request id) ----------------------------------------------

    async def _raw_call(
        self, inv: Invocation, extra_headers: Mapping[str, common_pb.Payload] | None
    ) -> tuple[Outcome, Any]:
        converter = self._converter(inv)
        args = await _encode(converter, inv.args)
        start_args = await _encode(converter, inv.start_args)
        memo = {k: (await converter.encode([v]))[0] for k, v in inv.memo.items()}
        self._check_size(inv, [*args, *start_args, *memo.values()])
        header = await self._headers(inv, extra_headers)
        if inv.kind is ActionKind.SIGNAL:
            return await self._signal(inv, args, header)
        try:
            if inv.kind is ActionKind.SIGNAL_WITH_START:
                sws = wsv1.SignalWithStartWorkflowExecutionRequest(
                    signal_name=inv.name or EVENT_SIGNAL
                )
                sws.signal_input.payloads.extend(args)
                self._fill_start(sws, inv, start_args, memo, header)
                sws_resp = await self._client.workflow_service.signal_with_start_workflow_execution(
                    sws, retry=self._rpc_retry, timeout=self._rpc_timeout
                )
                return Outcome.DELIVERED, sws_resp.run_id
            start = wsv1.StartWorkflowExecutionRequest()
            # Start-only: the invocation's args are the workflow input.
            self._fill_start(start, inv, args, memo, header)
            resp = await self._client.workflow_service.start_workflow_execution(
                start, retry=self._rpc_retry, timeout=self._rpc_timeout
            )
        except RPCError as err:
            run_id = already_started_run_id(err)
            if run_id is None:
                raise
            if inv.batch:  # each event of a closed run is a redelivery or late on its own
                raise BatchRefusedError(
                    f"workflow {inv.workflow_id!r}: run {run_id} is closed"
                ) from err
            if inv.kind is ActionKind.SIGNAL_WITH_START:
                return await self._closed(inv, run_id)
            # Start-only: the workflow exists already; its id is the event's by design.
            return Outcome.DUPLICATE, run_id
        # The server answers a repeated request id as a retry of the first start
        # (started=true, same run), running or closed: only a closed status tells it apart.
        fresh = resp.started and resp.status in _RUNNING_OR_UNKNOWN
        return (Outcome.DELIVERED if fresh else Outcome.DUPLICATE), resp.run_id

    async def _signal(
        self, inv: Invocation, args: list[common_pb.Payload], header: common_pb.Header | None
    ) -> tuple[Outcome, Any]:
        req = wsv1.SignalWorkflowExecutionRequest(
            namespace=self.namespace,
            workflow_execution=common_pb.WorkflowExecution(workflow_id=inv.workflow_id),
            signal_name=inv.name or EVENT_SIGNAL,
            identity=self._client.identity,
            request_id=inv.request_id,
        )
        req.input.payloads.extend(args)
        if header is not None:
            req.header.CopyFrom(header)
        try:
            await self._client.workflow_service.signal_workflow_execution(
                req, retry=self._rpc_retry, timeout=self._rpc_timeout
            )
        except RPCError as err:
            if not is_workflow_not_found(err):
                raise
            if inv.if_missing is MissingWorkflowPolicy.SKIP:
                return Outcome.SKIPPED, None
            raise WorkflowNotFoundError(
                f"{err.status.name}: signal {req.signal_name!r} to workflow "
                f"{inv.workflow_id!r} (route {inv.route!r}): {err.message}"
            ) from err
        return Outcome.DELIVERED, None

    def _fill_start(
        self,
        req: wsv1.StartWorkflowExecutionRequest | wsv1.SignalWithStartWorkflowExecutionRequest,
        inv: Invocation,
        input_payloads: list[common_pb.Payload],
        memo: Mapping[str, common_pb.Payload],
        header: common_pb.Header | None,
    ) -> None:
        # Mirrors temporalio's _populate_start_workflow_execution_request, minus the random id.
        if not inv.workflow_type or not inv.task_queue:
            raise PermanentTemporalError(
                f"route {inv.route!r}: {inv.kind} invocation lacks workflow type or task queue"
            )
        req.namespace = self.namespace
        req.workflow_id = inv.workflow_id
        req.workflow_type.name = inv.workflow_type
        req.task_queue.name = inv.task_queue
        req.input.payloads.extend(input_payloads)
        req.identity = self._client.identity
        req.request_id = inv.request_id
        req.workflow_id_reuse_policy = cast(
            "enums_pb.WorkflowIdReusePolicy.ValueType", int(inv.id_reuse_policy)
        )
        req.workflow_id_conflict_policy = cast(
            "enums_pb.WorkflowIdConflictPolicy.ValueType", int(inv.id_conflict_policy)
        )
        for key, payload in memo.items():
            req.memo.fields[key].CopyFrom(payload)
        if inv.search_attributes:
            encode_search_attributes(
                typed_search_attributes(inv.search_attributes), req.search_attributes
            )
        if header is not None:
            req.header.CopyFrom(header)

    async def _headers(
        self, inv: Invocation, extra: Mapping[str, common_pb.Payload] | None
    ) -> common_pb.Header | None:
        fields: dict[str, common_pb.Payload] = {}
        if self._header_hook is not None:
            produced = self._header_hook(inv)
            if inspect.isawaitable(produced):
                produced = await produced
            fields.update(produced)
        if extra:
            fields.update(extra)
        if not fields:
            return None
        codec = self._client.data_converter.payload_codec
        if self._encode_headers and codec is not None:
            # Same rule as the client's header_codec_behavior=CODEC: each header on its own.
            fields = {k: (await codec.encode([p]))[0] for k, p in fields.items()}
        header = common_pb.Header()
        for key, payload in fields.items():
            header.fields[key].CopyFrom(payload)
        return header

    # --- update-with-start (high-level client, deterministic update id) -----------------------

    async def _update_with_start(self, inv: Invocation) -> tuple[Outcome, Any]:
        if not inv.workflow_type or not inv.task_queue:
            raise PermanentTemporalError(
                f"route {inv.route!r}: {inv.kind} invocation lacks workflow type or task queue"
            )
        # Encoded only to measure: the client encodes again for the call.
        converter = self._converter(inv)
        sizes = [
            *(await _encode(converter, inv.args)),
            *(await _encode(converter, inv.start_args)),
            *(await _encode(converter, list(inv.memo.values()))),
        ]
        self._check_size(inv, sizes)
        operation: WithStartWorkflowOperation[Any, Any] = WithStartWorkflowOperation(
            inv.workflow_type,
            args=list(inv.start_args),
            id=inv.workflow_id,
            task_queue=inv.task_queue,
            id_conflict_policy=inv.id_conflict_policy,
            id_reuse_policy=inv.id_reuse_policy,
            memo=dict(inv.memo) or None,
            search_attributes=(
                typed_search_attributes(inv.search_attributes) if inv.search_attributes else None
            ),
        )
        try:
            result = await self._client.execute_update_with_start_workflow(
                inv.name or EVENT_UPDATE,
                args=list(inv.args),
                start_workflow_operation=operation,
                id=inv.update_id or inv.request_id,
                rpc_timeout=self._rpc_timeout,
            )
        finally:
            # The SDK fails the operation's handle future with an RPC error and leaves it
            # unread: read it, or asyncio logs "Future exception was never retrieved".
            started = operation._workflow_handle
            if started.done() and not started.cancelled():
                started.exception()
        return Outcome.DELIVERED, result

    # --- refused because the run closed --------------------------------------------------------

    async def _closed(self, inv: Invocation, run_id: str) -> tuple[Outcome, Any]:
        return await closed_workflow_outcome(
            self._client,
            inv,
            run_id,
            runs=self._closed_runs,
            query_timeout=self._closed_query_timeout,
            rpc_timeout=self._rpc_timeout,
        )

    # --- helpers ------------------------------------------------------------------------------

    def _converter(self, inv: Invocation) -> DataConverter:
        return self._client.data_converter.with_context(
            WorkflowSerializationContext(namespace=self.namespace, workflow_id=inv.workflow_id)
        )

    def _check_size(self, inv: Invocation, payloads: Sequence[common_pb.Payload]) -> None:
        size = sum(p.ByteSize() for p in payloads)
        if size > self._payload_limit:
            raise PayloadTooLargeError(
                f"route {inv.route!r}, workflow {inv.workflow_id!r}: encoded payloads are "
                f"{size} bytes, over the limit of {self._payload_limit} bytes"
            )


async def _encode(converter: DataConverter, values: Sequence[Any]) -> list[common_pb.Payload]:
    return await converter.encode(values) if values else []



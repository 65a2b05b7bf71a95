"""The sidecar's life cycle: settings -> Temporal client -> Loom + HTTP port -> signals.

:class:`Sidecar` is what ``loom run`` runs::

    settings = load_settings()
    sidecar = Sidecar(settings, load_router(settings.routes))
    exit_code = asyncio.run(sidecar.serve())   # until SIGTERM/SIGINT

It connects to Temporal (address, namespace, TLS client certificate, API key, the pydantic
data converter with an optional payload codec), starts the :class:`~bridge.sidecar.loop.Loom`,
serves ``/livez``, ``/readyz`` and ``/metrics``, checks every second that Temporal's namespace
and the Kafka cluster answer (readiness), and on SIGTERM/SIGINT stops fetching, drains within
``dispatch.drain_timeout_s``, commits and closes. The client comes from
:func:`bridge.temporal.client.connect_temporal`, shared with the worker, so a codec configured
with ``LOOM_TEMPORAL__CODEC`` is used on both sides; its SDK runtime records the Temporal
client's own metrics, served beside the loom's (:mod:`bridge.temporal.metrics`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client, Interceptor

from bridge.exceptions import SettingsError
from bridge.map.graph import declared_beside
from bridge.map.pages import MapPages
from bridge.map.recording import RecordedExecutor
from bridge.routing import Router
from bridge.settings import LoomSettings
from bridge.sidecar.http import HealthServer, Site
from bridge.sidecar.liveness import LoopWatch
from bridge.sidecar.loop import Loom
from bridge.sidecar.metrics import Health, Metrics
from bridge.telemetry import tracing
from bridge.telemetry.logs import FIELDS
from bridge.temporal.calls import HeaderHook
from bridge.temporal.client import check_namespace, connect_options, connect_temporal
from bridge.temporal.metrics import TemporalMetrics

__all__ = ["Sidecar", "run_sidecar", "settings_summary", "unconsumed_topic_warnings"]

log = logging.getLogger("loom.sidecar")

#: How often the sidecar asks Temporal whether it is healthy (readiness).
HEALTH_INTERVAL_S = 1.0


# --- settings summary -------------------------------------------------------------------------------


def settings_summary(settings: LoomSettings) -> dict[str, Any]:
    """What the sidecar runs with, for the start-up log and ``loom check``: never secrets.

    Secrets (SASL password, API key) and key material appear only as ``"set"``.
    """
    k, t, d = settings.kafka, settings.temporal, settings.dispatch
    try:
        options = connect_options(t)  # LOOM_TEMPORAL__* over TEMPORAL_*
        address, namespace = options["target_host"], options["namespace"]
        tls: Any = options.get("tls") not in (None, False)
    except SettingsError as exc:
        address = namespace = tls = f"unreadable: {exc}"
    try:
        exporter = tracing.resolve(settings.tracing).exporter
    except SettingsError as exc:
        exporter = f"unreadable: {exc}"
    return {
        "routes": settings.routes,
        "kafka.bootstrap": k.bootstrap,
        "kafka.group_id": k.group_id,
        "kafka.topics": list(k.topics),
        "kafka.deadletter_topic": k.deadletter_topic,
        "kafka.security_protocol": k.security_protocol,
        "kafka.sasl_mechanism": k.sasl_mechanism,
        "kafka.sasl_password": "set" if k.sasl_password is not None else None,
        "temporal.address": address,
        "temporal.namespace": namespace,
        "temporal.tls": tls,
        "temporal.api_key": "set" if t.api_key is not None else None,
        "temporal.codec": t.codec,
        "dispatch.max_in_flight": d.max_in_flight,
        "dispatch.max_buffered": d.buffered_bound,
        "dispatch.max_buffered_bytes": d.max_buffered_bytes,
        "dispatch.drain_timeout_s": d.drain_timeout_s,
        "unmatched": settings.unmatched.value,
        "tracing.exporter": exporter,
        "http": f"{settings.http_host}:{settings.http_port}" if settings.http_port else None,
    }


def unconsumed_topic_warnings(router: Router, settings: LoomSettings) -> list[str]:
    """One line per topic a route is bound to that the sidecar does not consume.

    Such a binding never matches: a typo, or a topic missing from ``LOOM_KAFKA__TOPICS``.
    """
    consumed = list(settings.kafka.topics)
    return [
        f"route {route!r} is bound to topic {topic!r}, which is not consumed "
        f"(LOOM_KAFKA__TOPICS={','.join(consumed)}): it never matches there"
        for route, topic in router.unconsumed(consumed)
    ]


# --- the sidecar ------------------------------------------------------------------------------------


class Sidecar:
    """One sidecar process: Temporal client, Loom, HTTP port, health checks, signals.

    Args:
        settings: Validated settings.
        router: The route table. ``settings.unmatched`` overrides its unmatched policy when
            the setting was given explicitly (environment, ``.env`` or flag).
        client: A connected Temporal client (tests); built from ``settings`` when omitted.
        interceptors: Client interceptors; OpenTelemetry tracing's when None.
        header_hook: Headers for raw Temporal calls; OpenTelemetry tracing's when None.
    """

    def __init__(
        self,
        settings: LoomSettings,
        router: Router,
        *,
        client: Client | None = None,
        interceptors: Sequence[Interceptor] | None = None,
        header_hook: HeaderHook | None = None,
    ) -> None:
        self.settings = settings
        self.router = router
        if "unmatched" in settings.model_fields_set:
            router.unmatched = settings.unmatched
        self.metrics = Metrics()
        m = settings.map
        self.metrics.recording.configure(
            enabled=m.enabled, max_entries=m.max_entries, max_bytes=m.max_bytes,
            keep_data=m.show_data,
        )
        self.watch = LoopWatch(self.metrics.loop_lag.observe)
        # The Temporal client's own metrics, when the sidecar connects its client itself.
        self.temporal_metrics: TemporalMetrics | None = None
        self.loom: Loom | None = None
        self.http: HealthServer | None = None
        self._client = client
        self._interceptors = list(
            tracing.client_interceptors() if interceptors is None else interceptors
        )
        self._header_hook = tracing.header_hook() if header_hook is None else header_hook
        self._stop = asyncio.Event()
        self._signals = 0

    @property
    def health(self) -> Health | None:
        """The loom's health once it exists."""
        return self.loom.health if self.loom is not None else None

    def stop(self) -> None:
        """Ask the sidecar to stop: stop fetching, drain, commit, close."""
        self._stop.set()
        if self.loom is not None:
            self.loom.stop()

    async def serve(self) -> int:
        """:meth:`run` with SIGTERM/SIGINT handlers installed; returns the exit code.

        The first signal stops gracefully; a second one abandons the drain (exit code 130):
        the calls in flight are cancelled, uncommitted, and the consumer still leaves its
        group, so the next member gets the partitions at once rather than after the session
        timeout. A third signal (or a second one before the loom started) cancels outright.
        """
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()

        def on_signal(signum: int) -> None:
            self._signals += 1
            if self._signals == 1:
                log.info("%s: stopping (drain up to %.0fs)", signal.Signals(signum).name,
                         self.settings.dispatch.drain_timeout_s)
                self.stop()
            elif self._signals == 2 and self.loom is not None:
                log.warning("second signal: abandoning the drain (leaving the group)")
                self.loom.abandon()
            elif task is not None:
                log.warning("signal %d: not waiting any more", self._signals)
                task.cancel()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig)
        try:
            code = await self.run()
        except asyncio.CancelledError:
            return 130
        else:
            return 130 if self._signals > 1 else code
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    def _map_site(self) -> Site | None:
        if not self.settings.map.enabled:
            return None
        pages = MapPages(
            self.router, self.settings, self.metrics.recording,
            lambda: self.loom.client if self.loom is not None else self._client,
            lag=self.metrics.lag, declared=declared_beside(self.settings.routes),
            replica=self._replica,
        )
        return pages.handle

    def _replica(self) -> str:
        owned = sorted(self.health.assigned) if self.health is not None else []
        parts = ", ".join(f"{t}[{p}]" for t, p in owned) or "none yet"
        return (f"live numbers of this replica ({self.settings.kafka.group_id}): its own "
                f"partitions only: {parts}")

    async def run(self) -> int:
        """Run until :meth:`stop`; returns 0 after a clean stop, 1 if the loom failed.

        Raises:
            SettingsError: No topics to consume (``LOOM_KAFKA__TOPICS``), or Temporal's own
                configuration cannot be read.
        """
        self.settings.require("kafka.topics")
        log.info(
            "temporal-loom starting", extra={FIELDS: settings_summary(self.settings)}
        )
        for warning in unconsumed_topic_warnings(self.router, self.settings):
            log.warning("%s", warning)
        self.watch.start()
        if self.settings.http_port:
            self.http = HealthServer(
                lambda: self.health,
                self.metrics.registry,
                host=self.settings.http_host,
                port=self.settings.http_port,
                watch=self.watch,
                stall_after_s=self.settings.liveness_stall_s,
            )
            site = self._map_site()
            if site is not None:
                self.http.add_site("/map", site)
            await self.http.start()
            log.info("health and metrics on http://%s:%d", self.settings.http_host, self.http.port)
        try:
            return await self._run_loom()
        finally:
            self.watch.stop()
            if self.http is not None:
                await self.http.stop()

    async def _run_loom(self) -> int:
        try:
            client = self._client or await self._connect()
        except SettingsError:
            raise
        except Exception as exc:
            # Unreachable or refusing: one clear line (no traceback: the cause is the address).
            log.error("cannot start: %s", exc)  # noqa: TRY400
            return 1
        if client is None:  # stopped while connecting
            return 0
        try:
            # Before a record is taken: a namespace typo would dead-letter every event.
            await check_namespace(client)
        except SettingsError:
            raise
        except Exception as exc:
            log.error("cannot start: describing the Temporal namespace failed: %s", exc)  # noqa: TRY400
            return 1
        executor = RecordedExecutor(
            client,
            payload_limit=self.settings.temporal.payload_limit_bytes,
            header_hook=self._header_hook,
            signal_limit_retry_s=self.settings.dispatch.signal_limit_retry_s,
            closed_query_timeout=timedelta(
                seconds=self.settings.temporal.closed_query_timeout_s
            ),
        )
        executor.recording = self.metrics.recording
        loom = Loom(self.router, client, self.settings, metrics=self.metrics, executor=executor)
        self.loom = loom
        try:
            await loom.start()
        except Exception as exc:  # e.g. KafkaConnectionError: name the setting to look at
            log.error(  # noqa: TRY400
                "cannot start: Kafka at %s (LOOM_KAFKA__BOOTSTRAP): %s: %s",
                self.settings.kafka.bootstrap,
                type(exc).__name__,
                exc,
            )
            return 1
        if self._stop.is_set():
            loom.stop()
        log.info(
            "consuming %s as group %s",
            ",".join(self.settings.kafka.topics),
            self.settings.kafka.group_id,
        )
        checker = asyncio.create_task(self._check_health(client, loom), name="loom-health")
        try:
            await loom.run()
        except Exception:
            log.exception("the loom stopped on an error")
            return 1
        finally:
            checker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await checker
        log.info("stopped cleanly")
        return 0

    async def _connect(self) -> Client | None:
        sdk = TemporalMetrics.for_process()
        if self.temporal_metrics is None:
            self.metrics.registry.register(sdk)
            self.temporal_metrics = sdk
        connect = asyncio.ensure_future(
            connect_temporal(self.settings, interceptors=self._interceptors, runtime=sdk.runtime)
        )
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({connect, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if not connect.done():
            connect.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await connect
            return None
        return connect.result()

    async def _check_health(self, client: Client, loom: Loom) -> None:
        # The loom only learns about Temporal when it calls it; an idle sidecar would stay
        # "ready" through an outage without this probe. Ready means the namespace answers
        # (DescribeNamespace), not only the frontend.
        timeout = timedelta(seconds=max(HEALTH_INTERVAL_S * 2, 2.0))
        request = DescribeNamespaceRequest(namespace=client.namespace)
        while True:
            try:
                await client.workflow_service.describe_namespace(request, timeout=timeout)
                ok = True
            except Exception as exc:  # any failure means "not connected" for readiness
                ok = False
                if loom.health.temporal_connected:
                    log.warning("Temporal namespace %s not reachable: %s", client.namespace, exc)
            loom.health.temporal_connected = ok
            await loom.probe_kafka(timeout=max(HEALTH_INTERVAL_S * 2, 2.0))
            _update_lag(loom)
            if self.temporal_metrics is not None:
                self.temporal_metrics.drain()  # the buffer drops updates when full
            await asyncio.sleep(HEALTH_INTERVAL_S)


def _update_lag(loom: Loom) -> None:
    """Set ``loom_consumer_lag`` per assigned partition: high watermark - committed offset.

    The high watermark comes with every fetch response (no extra request); partitions not
    fetched yet or never committed are left out rather than reported wrong.
    """
    consumer = loom.consumer
    if consumer is None:
        return
    committed: dict[tuple[str, str], float] = {}
    for family in loom.metrics.committed.collect():
        for sample in family.samples:
            committed[(sample.labels["topic"], sample.labels["partition"])] = sample.value
    owned = {(topic, str(partition)) for topic, partition in loom.health.assigned}
    for topic, partition in set(committed) - owned:
        # A commit that raced the revocation may have set it again: not ours any more.
        loom.metrics.forget_partition(topic, int(partition))
        del committed[(topic, partition)]
    for tp in list(consumer.assignment()):
        highwater = consumer.highwater(tp)
        key = (tp.topic, str(tp.partition))
        if highwater is not None and key in committed:
            loom.metrics.lag.labels(*key).set(max(0.0, highwater - committed[key]))


def run_sidecar(settings: LoomSettings, router: Router) -> int:
    """Run a sidecar in a fresh event loop until SIGTERM/SIGINT; returns the exit code.

    Installs the process's OpenTelemetry SDK first when ``LOOM_TRACING__EXPORTER`` asks for
    one, and flushes it at exit.
    """
    runtime = tracing.setup(settings.tracing)
    try:
        return asyncio.run(Sidecar(settings, router).serve())
    finally:
        if runtime is not None:
            runtime.shutdown()


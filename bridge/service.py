"""The sidecar's life cycle: settings -> Temporal client -> Loom + HTTP port -> signals.

:class:`Sidecar` is what ``loom run`` runs::

    settings = load_settings()
    sidecar = Sidecar(settings, load_router(settings.routes))
    exit_code = asyncio.run(sidecar.serve())   # until SIGTERM/SIGINT

It connects to Temporal (address, namespace, TLS client certificate, API key, the pydantic
data converter with an optional payload codec), starts the :class:`~bridge.consumer.Loom`,
serves ``/livez``, ``/readyz`` and ``/metrics``, checks Temporal's health every second, and
on SIGTERM/SIGINT stops fetching, drains within ``dispatch.drain_timeout_s``, commits and
closes. :func:`make_data_converter` is shared with the worker, so a codec configured with
``LOOM_TEMPORAL__CODEC`` is used on both sides.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import logging
import signal
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from temporalio.client import Client, Interceptor
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, PayloadCodec
from temporalio.service import TLSConfig

from bridge.consumer import Loom
from bridge.exceptions import SettingsError, SetupError
from bridge.http import HealthServer
from bridge.logs import FIELDS
from bridge.observability import Health, Metrics
from bridge.routing import Route, Router
from bridge.settings import LoomSettings, TemporalSettings
from bridge.temporal_calls import HeaderHook, TemporalExecutor

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
    "tracing_plugins",
]

log = logging.getLogger("loom.service")

#: How often the sidecar asks Temporal whether it is healthy (readiness).
HEALTH_INTERVAL_S = 1.0


# --- loading user code --------------------------------------------------------------------------


def load_object(spec: str, *, default_attr: str | None, setting: str) -> Any:
    """Import ``module[:attr]`` and return the attribute (or the module).

    Raises:
        SettingsError: The module or attribute does not exist; names ``setting``.
    """
    module_name, _, attr = spec.partition(":")
    attr = attr or (default_attr or "")
    if not module_name:
        raise SettingsError(f"{setting}: expected 'module[:attr]', got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SettingsError(f"{setting}: cannot import module {module_name!r}: {exc}") from None
    if not attr:
        return module
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise SettingsError(
                f"{setting}: module {module_name!r} has no attribute {attr!r}"
            ) from None
    return obj


def load_router(spec: str, *, setting: str = "LOOM_ROUTES") -> Router:
    """Load the route table named by ``module[:attr]`` (attribute ``router`` by default).

    The attribute may be a :class:`Router`, a sequence of :class:`Route`, or a callable
    returning either.

    Raises:
        SettingsError: The module or attribute is missing, or is no route table; a route that
            is wrong in itself fails its own check, reported under ``setting``.
    """
    try:
        obj = load_object(spec, default_attr="router", setting=setting)
        if callable(obj) and not isinstance(obj, Router):
            obj = obj()
    except SettingsError:
        raise
    except SetupError as exc:  # RouteDefinitionError raised while the module builds its routes
        raise SettingsError(f"{setting}: {spec!r}: {exc}") from None
    if isinstance(obj, Router):
        return obj
    if isinstance(obj, Sequence) and all(isinstance(r, Route) for r in obj):
        try:
            return Router(obj)
        except SetupError as exc:
            raise SettingsError(f"{setting}: {spec!r}: {exc}") from None
    raise SettingsError(
        f"{setting}: {spec!r} is {type(obj).__name__}, expected a Router, a list of Route, "
        "or a callable returning one"
    )


def load_codec(spec: str, *, setting: str = "LOOM_TEMPORAL__CODEC") -> PayloadCodec:
    """Load a payload codec from ``module:attr``: a codec instance, or a factory of one.

    Raises:
        SettingsError: Not importable, or not a ``temporalio.converter.PayloadCodec``.
    """
    obj = load_object(spec, default_attr=None, setting=setting)
    if not isinstance(obj, PayloadCodec) and callable(obj):
        obj = obj()
    if not isinstance(obj, PayloadCodec):
        raise SettingsError(
            f"{setting}: {spec!r} gave {type(obj).__name__}, expected a "
            "temporalio.converter.PayloadCodec (or a factory returning one)"
        )
    return obj


# --- Temporal client ------------------------------------------------------------------------------


def make_data_converter(settings: LoomSettings) -> DataConverter:
    """The pydantic data converter, with the configured payload codec if any.

    The sidecar's client and the worker must both use this: a codec on one side only makes
    payloads unreadable on the other.
    """
    codec_spec = settings.temporal.codec
    if codec_spec is None:
        return pydantic_data_converter
    return dataclasses.replace(pydantic_data_converter, payload_codec=load_codec(codec_spec))


def temporal_tls(settings: TemporalSettings) -> TLSConfig | bool | None:
    """TLS configuration from the settings; None lets the SDK decide (TLS with an API key)."""
    if settings.tls_cert is None and settings.tls_ca is None:
        if settings.tls:
            return True
        # An explicit LOOM_TEMPORAL__TLS=false keeps plaintext even with an API key (a local
        # proxy terminating TLS); left unset, the SDK turns TLS on when an API key is given.
        return False if "tls" in settings.model_fields_set else None
    return TLSConfig(
        server_root_ca_cert=settings.tls_ca.read_bytes() if settings.tls_ca else None,
        client_cert=settings.tls_cert.read_bytes() if settings.tls_cert else None,
        client_private_key=settings.tls_key.read_bytes() if settings.tls_key else None,
    )


async def connect_temporal(
    settings: LoomSettings,
    *,
    interceptors: Sequence[Interceptor] = (),
    timeout: float | None = None,
) -> Client:
    """Connect a client to the configured Temporal namespace, retrying until ``timeout``.

    Args:
        settings: The loom's settings (``temporal.*``).
        interceptors: Client interceptors (tracing).
        timeout: Seconds to keep trying; ``temporal.connect_timeout_s`` when None.

    Raises:
        RuntimeError: Temporal did not answer in time (the message names the address setting).
    """
    t = settings.temporal
    data_converter = make_data_converter(settings)
    tls = temporal_tls(t)
    deadline = asyncio.get_running_loop().time() + (
        t.connect_timeout_s if timeout is None else timeout
    )
    delay = 0.2
    while True:
        try:
            return await Client.connect(
                t.address,
                namespace=t.namespace,
                api_key=t.api_key.get_secret_value() if t.api_key else None,
                tls=tls,
                data_converter=data_converter,
                interceptors=list(interceptors),
            )
        except RuntimeError as exc:  # the SDK's core raises RuntimeError on connect failure
            if asyncio.get_running_loop().time() + delay > deadline:
                raise RuntimeError(
                    f"cannot connect to Temporal at {t.address} (LOOM_TEMPORAL__ADDRESS): {exc}"
                ) from None
            log.warning("Temporal at %s not reachable yet: %s", t.address, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


def tracing_plugins() -> tuple[list[Interceptor], HeaderHook | None]:
    """Client interceptors and the raw-call header hook of OpenTelemetry tracing.

    This is the one place where tracing plugs into the sidecar: ``bridge.tracing`` (owned by
    the tracing work) provides ``client_interceptors()`` for the high-level client (update-
    with-start, the worker) and ``header_hook()`` for the executor's raw calls, which skip
    client interceptors. Until that module exists the sidecar runs without tracing.
    """
    try:
        tracing = importlib.import_module("bridge.tracing")
    except ImportError:
        return [], None
    interceptors_fn = getattr(tracing, "client_interceptors", None)
    hook_fn = getattr(tracing, "header_hook", None)
    interceptors = list(interceptors_fn()) if callable(interceptors_fn) else []
    hook = hook_fn() if callable(hook_fn) else None
    return interceptors, hook


# --- settings summary -------------------------------------------------------------------------------


def settings_summary(settings: LoomSettings) -> dict[str, Any]:
    """What the sidecar runs with, for the start-up log and ``loom check``: never secrets.

    Secrets (SASL password, API key) and key material appear only as ``"set"``.
    """
    k, t, d = settings.kafka, settings.temporal, settings.dispatch
    return {
        "routes": settings.routes,
        "kafka.bootstrap": k.bootstrap,
        "kafka.group_id": k.group_id,
        "kafka.topics": list(k.topics),
        "kafka.deadletter_topic": k.deadletter_topic,
        "kafka.security_protocol": k.security_protocol,
        "kafka.sasl_mechanism": k.sasl_mechanism,
        "kafka.sasl_password": "set" if k.sasl_password is not None else None,
        "temporal.address": t.address,
        "temporal.namespace": t.namespace,
        "temporal.tls": bool(t.tls or t.tls_cert or t.tls_ca),
        "temporal.api_key": "set" if t.api_key is not None else None,
        "temporal.codec": t.codec,
        "dispatch.max_in_flight": d.max_in_flight,
        "dispatch.max_buffered": d.buffered_bound,
        "dispatch.drain_timeout_s": d.drain_timeout_s,
        "unmatched": settings.unmatched.value,
        "tracing.exporter": settings.tracing.exporter,
        "http": f"{settings.http_host}:{settings.http_port}" if settings.http_port else None,
    }


# --- the sidecar ------------------------------------------------------------------------------------


class Sidecar:
    """One sidecar process: Temporal client, Loom, HTTP port, health checks, signals.

    Args:
        settings: Validated settings.
        router: The route table. ``settings.unmatched`` overrides its unmatched policy when
            the setting was given explicitly (environment, ``.env`` or flag).
        client: A connected Temporal client (tests); built from ``settings`` when omitted.
        interceptors: Client interceptors; tracing's (:func:`tracing_plugins`) when None.
        header_hook: Headers for raw Temporal calls; tracing's when None.
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
        self.loom: Loom | None = None
        self.http: HealthServer | None = None
        self._client = client
        if interceptors is None or header_hook is None:
            traced_interceptors, traced_hook = tracing_plugins()
            interceptors = traced_interceptors if interceptors is None else interceptors
            header_hook = traced_hook if header_hook is None else header_hook
        self._interceptors = list(interceptors)
        self._header_hook = header_hook
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

        The first signal stops gracefully; a second one cancels the drain (exit code 130).
        """
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()

        def on_signal(signum: int) -> None:
            self._signals += 1
            if self._signals == 1:
                log.info("%s: stopping (drain up to %.0fs)", signal.Signals(signum).name,
                         self.settings.dispatch.drain_timeout_s)
                self.stop()
            elif task is not None:
                log.warning("second signal: abandoning the drain")
                task.cancel()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig)
        try:
            return await self.run()
        except asyncio.CancelledError:
            return 130
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    async def run(self) -> int:
        """Run until :meth:`stop`; returns 0 after a clean stop, 1 if the loom failed."""
        log.info(
            "temporal-loom starting", extra={FIELDS: settings_summary(self.settings)}
        )
        if self.settings.http_port:
            self.http = HealthServer(
                lambda: self.health,
                self.metrics.registry,
                host=self.settings.http_host,
                port=self.settings.http_port,
            )
            await self.http.start()
            log.info("health and metrics on http://%s:%d", self.settings.http_host, self.http.port)
        try:
            return await self._run_loom()
        finally:
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
        executor = TemporalExecutor(
            client,
            payload_limit=self.settings.temporal.payload_limit_bytes,
            header_hook=self._header_hook,
        )
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
        connect = asyncio.ensure_future(
            connect_temporal(self.settings, interceptors=self._interceptors)
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
        # "ready" through an outage without this probe.
        timeout = timedelta(seconds=max(HEALTH_INTERVAL_S * 2, 2.0))
        while True:
            try:
                ok = await client.service_client.check_health(timeout=timeout)
            except Exception as exc:  # any failure means "not connected" for readiness
                ok = False
                if loom.health.temporal_connected:
                    log.warning("Temporal health check failed: %s", exc)
            loom.health.temporal_connected = ok
            await loom.probe_kafka(timeout=max(HEALTH_INTERVAL_S * 2, 2.0))
            _update_lag(loom)
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
    from bridge import tracing

    runtime = tracing.setup(settings.tracing)
    try:
        return asyncio.run(Sidecar(settings, router).serve())
    finally:
        if runtime is not None:
            runtime.shutdown()


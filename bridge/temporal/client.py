"""The Temporal client of the sidecar and the worker, built from the settings.

Both sides must encode payloads the same way: :func:`make_data_converter` (the pydantic data
converter plus the configured payload codec) is the one place that decides it, and
:func:`connect_temporal` the one place that connects. Where it connects is
:func:`connect_options`: Temporal's own configuration (``TEMPORAL_*`` variables and config
profiles, read by ``temporalio.envconfig``) under the loom's ``LOOM_TEMPORAL__*`` settings.
:func:`check_namespace` is the start-up check of ``loom run`` and ``loom check``:
connecting does not look at the namespace, so a typo would otherwise surface at the first
event.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

import temporalio.api.enums.v1 as enums_pb
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client, Interceptor
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter
from temporalio.envconfig import ClientConfigProfile
from temporalio.runtime import Runtime
from temporalio.service import RPCError, RPCStatusCode, TLSConfig

from bridge._loading import load_codec
from bridge.exceptions import SettingsError
from bridge.settings import LoomSettings, TemporalSettings
from bridge.telemetry import tracing

__all__ = [
    "DEFAULT_ADDRESS",
    "DEFAULT_NAMESPACE",
    "check_namespace",
    "connect_options",
    "connect_temporal",
    "make_data_converter",
    "temporal_tls",
]

#: Where the loom connects when neither LOOM_TEMPORAL__* nor TEMPORAL_* say.
DEFAULT_ADDRESS = "127.0.0.1:7233"
DEFAULT_NAMESPACE = "default"

log = logging.getLogger("loom.temporal")


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
    """TLS configuration from the loom's settings; None when they say nothing about TLS."""
    if settings.tls_cert is None and settings.tls_ca is None:
        # An explicit LOOM_TEMPORAL__TLS=false keeps plaintext even with an API key (a local
        # proxy terminating TLS); left unset, Temporal's configuration or the SDK decide.
        return settings.tls
    return TLSConfig(
        server_root_ca_cert=settings.tls_ca.read_bytes() if settings.tls_ca else None,
        client_cert=settings.tls_cert.read_bytes() if settings.tls_cert else None,
        client_private_key=settings.tls_key.read_bytes() if settings.tls_key else None,
    )


def connect_options(
    settings: TemporalSettings, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """``Client.connect`` arguments: Temporal's own configuration under the loom's settings.

    ``temporalio.envconfig`` reads Temporal's variables and config profiles
    (``TEMPORAL_ADDRESS``, ``TEMPORAL_NAMESPACE``, ``TEMPORAL_API_KEY``, ``TEMPORAL_TLS*``,
    ``TEMPORAL_GRPC_META_*``, ``TEMPORAL_PROFILE``, ``TEMPORAL_CONFIG_FILE``); every
    ``LOOM_TEMPORAL__*`` setting that is given wins over them; what neither gives is
    ``127.0.0.1:7233`` and the namespace ``default``. Any of the loom's TLS settings
    (``TLS``, ``TLS_CERT``, ``TLS_CA``) decides TLS as a whole.

    Args:
        settings: The loom's Temporal settings.
        environ: The environment to read instead of the process's (tests).

    Returns:
        ``target_host``, ``namespace``, and ``api_key``, ``tls``, ``rpc_metadata`` when set.

    Raises:
        SettingsError: Temporal's configuration cannot be read (a missing profile, a broken
            config file, a TLS file that does not exist): the message names the variable.
    """
    env = os.environ if environ is None else environ
    try:
        profile = ClientConfigProfile.load(override_env_vars=dict(env))
        options: dict[str, Any] = dict(profile.to_client_connect_config())
    except Exception as exc:  # ConfigError of the SDK's core, or a TLS file that is missing
        raise SettingsError(_envconfig_problem(exc, env)) from None
    if settings.address is not None:
        options["target_host"] = settings.address
    if settings.namespace is not None:
        options["namespace"] = settings.namespace
    if settings.api_key is not None:
        options["api_key"] = settings.api_key.get_secret_value()
    tls = temporal_tls(settings)
    if tls is not None:
        options["tls"] = tls
    options.setdefault("target_host", DEFAULT_ADDRESS)
    options.setdefault("namespace", DEFAULT_NAMESPACE)
    return options


def _envconfig_problem(exc: Exception, env: Mapping[str, str]) -> str:
    text = " ".join(str(exc).split())
    if isinstance(exc, OSError) and exc.filename:
        names = [k for k, v in env.items() if k.startswith("TEMPORAL_") and v == str(exc.filename)]
        where = names[0] if names else "a TLS file of the Temporal config profile"
        return f"{where}: {exc.strerror}: {exc.filename}"
    if "Profile" in text and "not found" in text:
        return f"TEMPORAL_PROFILE: {text}"
    where = "TEMPORAL_CONFIG_FILE" if env.get("TEMPORAL_CONFIG_FILE") else "the Temporal config file"
    return f"{where}: {text}"


async def connect_temporal(
    settings: LoomSettings,
    *,
    interceptors: Sequence[Interceptor] | None = None,
    timeout: float | None = None,
    runtime: Runtime | None = None,
) -> Client:
    """Connect a client to the configured Temporal namespace, retrying until ``timeout``.

    Args:
        settings: The loom's settings (``temporal.*``; see :func:`connect_options`).
        interceptors: Client interceptors; OpenTelemetry tracing's when None.
        timeout: Seconds to keep trying; ``temporal.connect_timeout_s`` when None.
        runtime: The SDK runtime (its telemetry: ``bridge.temporal.metrics``); the SDK's
            default when None.

    Raises:
        RuntimeError: Temporal did not answer in time (the message names the address setting).
        SettingsError: Temporal's own configuration cannot be read.
    """
    t = settings.temporal
    data_converter = make_data_converter(settings)
    options = connect_options(t)
    address = options["target_host"]
    deadline = asyncio.get_running_loop().time() + (
        t.connect_timeout_s if timeout is None else timeout
    )
    delay = 0.2
    while True:
        try:
            return await Client.connect(
                **options,
                data_converter=data_converter,
                interceptors=list(
                    tracing.client_interceptors() if interceptors is None else interceptors
                ),
                runtime=runtime,
            )
        except RuntimeError as exc:  # the SDK's core raises RuntimeError on connect failure
            if asyncio.get_running_loop().time() + delay > deadline:
                raise RuntimeError(
                    f"cannot connect to Temporal at {address} "
                    f"(LOOM_TEMPORAL__ADDRESS or TEMPORAL_ADDRESS): {exc}"
                ) from None
            log.warning("Temporal at %s not reachable yet: %s", address, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


async def check_namespace(client: Client, *, timeout: float = 10.0) -> None:
    """Refuse to go on when the client's namespace does not exist or cannot take calls.

    Args:
        client: A connected client; its namespace is checked.
        timeout: Deadline of the describe call, in seconds.

    Raises:
        SettingsError: The namespace does not exist, or is not registered (deprecated,
            being deleted); the message names ``LOOM_TEMPORAL__NAMESPACE``.
        RPCError: Any other failure of the describe call (unreachable, permission).
    """
    namespace = client.namespace
    where = client.service_client.config.target_host
    try:
        described = await client.workflow_service.describe_namespace(
            DescribeNamespaceRequest(namespace=namespace), timeout=timedelta(seconds=timeout)
        )
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise SettingsError(
                f"Temporal namespace {namespace!r} does not exist at {where} "
                f"(LOOM_TEMPORAL__NAMESPACE or TEMPORAL_NAMESPACE): {err.message}"
            ) from None
        raise
    state = described.namespace_info.state
    if state != enums_pb.NamespaceState.NAMESPACE_STATE_REGISTERED:
        raise SettingsError(
            f"Temporal namespace {namespace!r} at {where} is "
            f"{enums_pb.NamespaceState.Name(state)}, not registered "
            "(LOOM_TEMPORAL__NAMESPACE or TEMPORAL_NAMESPACE)"
        )

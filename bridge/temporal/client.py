"""The Temporal client of the sidecar and the worker, built from the settings.

Both sides must encode payloads the same way: :func:`make_data_converter` (the pydantic data
converter plus the configured payload codec) is the one place that decides it, and
:func:`connect_temporal` the one place that connects.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence

from temporalio.client import Client, Interceptor
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter
from temporalio.service import TLSConfig

from bridge._loading import load_codec
from bridge.settings import LoomSettings, TemporalSettings
from bridge.telemetry import tracing

__all__ = ["connect_temporal", "make_data_converter", "temporal_tls"]

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
    interceptors: Sequence[Interceptor] | None = None,
    timeout: float | None = None,
) -> Client:
    """Connect a client to the configured Temporal namespace, retrying until ``timeout``.

    Args:
        settings: The loom's settings (``temporal.*``).
        interceptors: Client interceptors; OpenTelemetry tracing's when None.
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
                interceptors=list(
                    tracing.client_interceptors() if interceptors is None else interceptors
                ),
            )
        except RuntimeError as exc:  # the SDK's core raises RuntimeError on connect failure
            if asyncio.get_running_loop().time() + delay > deadline:
                raise RuntimeError(
                    f"cannot connect to Temporal at {t.address} (LOOM_TEMPORAL__ADDRESS): {exc}"
                ) from None
            log.warning("Temporal at %s not reachable yet: %s", t.address, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

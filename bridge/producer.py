"""The loom's Kafka producer: one aiokafka producer per process, started lazily.

``LoomProducer`` is shared by every publish activity of a worker process (aiokafka batches
per producer, so one producer is both cheaper and faster than one per call). It starts on
first use and is closed by :meth:`LoomProducer.close` or by leaving ``async with``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Literal

from aiokafka import AIOKafkaProducer
from pydantic import BaseModel, ConfigDict, Field, SecretStr

__all__ = ["LoomProducer", "ProducerSettings", "RecordMetadata"]

#: What aiokafka's ``send_and_wait`` returns (``aiokafka.structs.RecordMetadata``).
RecordMetadata = Any


class ProducerSettings(BaseModel):
    """Settings of the Kafka producer behind the publish activity.

    ``enable_idempotence`` defaults to False only because the test broker (Tansu) refuses
    idempotent producers; on real Kafka turn it on: with ``acks="all"`` it keeps a retried
    batch from being written twice and keeps order per partition across retries.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    bootstrap_servers: str | list[str] = "localhost:9092"
    client_id: str = "temporal-loom"
    acks: Literal[0, 1, "all"] = "all"
    enable_idempotence: bool = False
    compression_type: Literal["gzip", "snappy", "lz4", "zstd"] | None = None
    linger_ms: int = Field(default=5, ge=0)
    #: Temporal refuses payloads over 2 MB, so any event a workflow can hold fits.
    max_request_size: int = Field(default=2 * 1024 * 1024 + 64 * 1024, gt=0)
    request_timeout_ms: int = Field(default=30_000, gt=0)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_plain_username: str | None = None
    sasl_plain_password: SecretStr | None = None

    def producer_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``AIOKafkaProducer``."""
        kwargs: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "client_id": self.client_id,
            "acks": self.acks,
            "enable_idempotence": self.enable_idempotence,
            "compression_type": self.compression_type,
            "linger_ms": self.linger_ms,
            "max_request_size": self.max_request_size,
            "request_timeout_ms": self.request_timeout_ms,
            "security_protocol": self.security_protocol,
        }
        if self.sasl_mechanism is not None:
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.sasl_plain_username
            if self.sasl_plain_password is not None:
                kwargs["sasl_plain_password"] = self.sasl_plain_password.get_secret_value()
        return kwargs


class LoomProducer:
    """A lazily started, shared ``AIOKafkaProducer``.

    Args:
        settings: Producer settings (ignored when ``factory`` is given).
        factory: Builds the (not yet started) aiokafka producer, e.g. to pass an SSL context.
    """

    def __init__(
        self,
        settings: ProducerSettings | None = None,
        *,
        factory: Callable[[], AIOKafkaProducer] | None = None,
    ) -> None:
        self.settings = settings or ProducerSettings()
        self._factory = factory or (lambda: AIOKafkaProducer(**self.settings.producer_kwargs()))
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()
        self._closed = False

    @property
    def started(self) -> bool:
        """Whether the underlying producer is running."""
        return self._producer is not None

    async def start(self) -> AIOKafkaProducer:
        """Start the producer if it is not running yet (safe to call concurrently)."""
        if self._producer is not None:
            return self._producer
        async with self._lock:
            if self._closed:
                raise RuntimeError("LoomProducer is closed")
            if self._producer is None:
                producer = self._factory()
                try:
                    await producer.start()
                except BaseException:
                    await producer.stop()  # a half-started producer still holds its client
                    raise
                self._producer = producer
            return self._producer

    async def send(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> RecordMetadata:
        """Send one record and wait for the broker's acknowledgement."""
        producer = await self.start()
        return await producer.send_and_wait(topic, value=value, key=key, headers=list(headers))

    async def close(self) -> None:
        """Flush and stop the producer; later sends raise."""
        async with self._lock:
            self._closed = True
            producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def __aenter__(self) -> LoomProducer:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

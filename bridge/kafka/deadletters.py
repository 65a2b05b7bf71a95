"""The dead-letter topic: the original record byte for byte, plus headers naming the error.

A dead-lettered record keeps its key, value and headers unchanged; the loom appends
``loom-dlq-*`` headers (error class, reason, message, route, original topic, partition,
offset, timestamp, time of failure). :func:`redrive_record` strips them again so a re-driven
record is the original one.

Two exceptions to "byte for byte", both marked by a header:

- a header whose *name* is not UTF-8 (aiokafka's producer writes names as UTF-8 text): the
  record's headers are then also carried, exactly, in ``loom-dlq-raw-headers`` (JSON, base64);
- a record the dead-letter topic refuses for good (too large for it, not authorised...): a
  headers-only record is written instead, ``loom-dlq-body: omitted``, with the refusal in
  ``loom-dlq-write-error``; the original stays in its topic at the offset the headers name.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import TopicPartition
from aiokafka import errors as kafka_errors
from aiokafka.errors import KafkaError

from bridge.exceptions import LoomError, error_reason
from bridge.kafka.clients import consumer_for, log_ends, producer_for, started
from bridge.kafka.record import Record
from bridge.settings import LoomSettings

log = logging.getLogger("loom.deadletters")

PREFIX = "loom-dlq-"
ERROR_CLASS = PREFIX + "error-class"
REASON = PREFIX + "reason"
MESSAGE = PREFIX + "message"
ROUTE = PREFIX + "route"
TOPIC = PREFIX + "topic"
PARTITION = PREFIX + "partition"
OFFSET = PREFIX + "offset"
TIMESTAMP = PREFIX + "timestamp"
FAILED_AT = PREFIX + "failed-at"
RAW_HEADERS = PREFIX + "raw-headers"
BODY = PREFIX + "body"
WRITE_ERROR = PREFIX + "write-error"
#: The consumer group that wrote the letter: a new owner of a partition skips the records its
#: own group already dead-lettered (``bridge.sidecar.redo``), never another group's (a replay).
GROUP = PREFIX + "group"

#: Bound on each ``loom-dlq-*`` header value (bytes), but the raw headers, which are data.
MAX_HEADER_BYTES = 4096

#: Refusals that no retry can cure: the record as it is will never be accepted. Anything else
#: from Kafka is treated as transient (aiokafka's ``retriable`` flag is not enough: its
#: ``KafkaTimeoutError`` and ``BrokerNotAvailableError`` say False, and both pass).
PERMANENT_REFUSALS: tuple[type[BaseException], ...] = (
    kafka_errors.MessageSizeTooLargeError,
    kafka_errors.RecordListTooLargeError,
    kafka_errors.RecordTooLargeError,
    kafka_errors.InvalidTopicError,
    kafka_errors.TopicAuthorizationFailedError,
    kafka_errors.ClusterAuthorizationFailedError,
    kafka_errors.PolicyViolationError,
    kafka_errors.InvalidTimestampError,
    kafka_errors.CorruptRecordException,
    kafka_errors.UnsupportedVersionError,
    kafka_errors.UnsupportedForMessageFormatError,
    kafka_errors.InvalidRequiredAcksError,
)


class DeadLetterRefusedError(LoomError):
    """The dead-letter topic refused the record and its headers-only summary alike."""

    reason = "deadletter-refused"


def is_permanent_refusal(err: BaseException) -> bool:
    """Whether a failed dead-letter write is final for this record (write less, do not retry).

    A Kafka error is final only if listed in :data:`PERMANENT_REFUSALS`; any other exception
    (the producer refusing the record's shape: ``TypeError``, ``UnicodeEncodeError``...) is
    final too, since the same record would fail the same way.
    """
    if isinstance(err, KafkaError):
        return isinstance(err, PERMANENT_REFUSALS)
    return True


def _text(value: str, limit: int = MAX_HEADER_BYTES) -> bytes:
    """``value`` as UTF-8, always encodable (``backslashreplace``) and at most ``limit`` bytes."""
    raw = value.encode("utf-8", "backslashreplace")
    if len(raw) <= limit:
        return raw
    # Cut on a character boundary: the result stays valid UTF-8.
    return raw[: limit - 3].decode("utf-8", "ignore").encode("utf-8") + b"..."


def _name_bytes(name: str) -> bytes:
    # Names read from the wire keep undecodable bytes as surrogate escapes (``Record.from_raw``).
    try:
        return name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return name.encode("utf-8", "surrogatepass")


def _encodes(name: str) -> bool:
    if name.isascii():
        return True
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _error_text(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _info_headers(record: Record, exc: BaseException, route: str | None) -> list[tuple[str, bytes]]:
    extra = {
        ERROR_CLASS: f"{type(exc).__module__}.{type(exc).__qualname__}",
        REASON: error_reason(exc),
        MESSAGE: _error_text(exc),
        ROUTE: route or "",
        TOPIC: record.topic,
        PARTITION: str(record.partition),
        OFFSET: str(record.offset),
        TIMESTAMP: "" if record.timestamp is None else str(record.timestamp),
        FAILED_AT: str(int(time.time() * 1000)),
        # What the error knows besides (e.g. a closed workflow's status).
        **{PREFIX + name: value for name, value in getattr(exc, "details", {}).items()},
    }
    return [(name, _text(value)) for name, value in extra.items()]


def deadletter_headers(
    record: Record, exc: BaseException, route: str | None
) -> list[tuple[str, bytes]]:
    """The record's own headers followed by the ``loom-dlq-*`` headers; every name and value
    can be written by aiokafka's producer, whatever the record and the error hold."""
    own = [(name, value) for name, value in record.headers if _encodes(name)]
    headers = [*own, *_info_headers(record, exc, route)]
    if len(own) != len(record.headers):
        raw = [
            [base64.b64encode(_name_bytes(name)).decode("ascii"), base64.b64encode(value).decode("ascii")]
            for name, value in record.headers
        ]
        headers.append((RAW_HEADERS, json.dumps(raw, separators=(",", ":")).encode("ascii")))
    return headers


def summary_headers(
    record: Record, exc: BaseException, route: str | None, refusal: BaseException
) -> list[tuple[str, bytes]]:
    """The headers of the headers-only record written when the full one was refused."""
    return [
        *_info_headers(record, exc, route),
        (BODY, b"omitted"),
        (WRITE_ERROR, _text(f"{type(refusal).__name__}: {_error_text(refusal)}")),
    ]


@dataclass(frozen=True)
class DeadLetter:
    """A record read back from the dead-letter topic."""

    record: Record  # as stored in the dead-letter topic
    info: Mapping[str, str]  # the loom-dlq-* headers, without the prefix

    @property
    def original_headers(self) -> list[tuple[str, bytes]]:
        """The headers the record had before it was dead-lettered."""
        return [(k, v) for k, v in self.record.headers if not k.startswith(PREFIX)]

    @property
    def original_topic(self) -> str:
        """The topic the record was consumed from."""
        return self.info.get("topic", "")

    @property
    def body_omitted(self) -> bool:
        """True for a headers-only record: the dead-letter topic refused the original."""
        return self.info.get("body") == "omitted"

    @property
    def raw_headers(self) -> list[tuple[bytes, bytes]] | None:
        """The original headers byte for byte, names included, when some name was not UTF-8
        (those headers are missing from :attr:`original_headers`); None otherwise."""
        for key, value in self.record.headers:
            if key == RAW_HEADERS:
                pairs = json.loads(value)
                return [(base64.b64decode(n), base64.b64decode(v)) for n, v in pairs]
        return None


def parse_deadletter(record: Record) -> DeadLetter:
    """Split a dead-letter record into the original record and the error information."""
    info: dict[str, str] = {}
    for key, value in record.headers:
        if key.startswith(PREFIX) and key != RAW_HEADERS:
            info[key[len(PREFIX) :]] = value.decode("utf-8", "replace")
    return DeadLetter(record=record, info=info)


class DeadLetterWriter:
    """Writes failed records to the dead-letter topic and waits for the broker's ack.

    The record's offset must not commit before its dead-letter write is acknowledged, and the
    line must not stop for a broker hiccup, nor for a record the topic will never take:

    - a transient failure (any Kafka error not in :data:`PERMANENT_REFUSALS`) is tried again
      after ``backoff(attempt)`` seconds, until acknowledged. This is the one retry loop of
      the dead-letter path; it ends only by cancellation (the loom's stop deadline), which
      leaves the record uncommitted;
    - a permanent refusal writes a headers-only record instead (:func:`summary_headers`);
    - if that is refused for good as well, :meth:`write` raises
      :class:`DeadLetterRefusedError`: the caller leaves the record uncommitted and goes on.

    Args:
        producer: A started aiokafka producer.
        topic: The dead-letter topic.
        backoff: Seconds to wait after failed attempt number ``attempt`` (1-based).
        on_retry: Called as ``on_retry(attempt, error, delay)`` before each wait (metrics, logs).
        group: The consumer group writing, carried in ``loom-dlq-group`` (None: no header).
    """

    def __init__(
        self,
        producer: Any,
        topic: str,
        *,
        backoff: Callable[[int], float] = lambda attempt: min(10.0, 0.2 * 2 ** (attempt - 1)),
        on_retry: Callable[[int, BaseException, float], None] | None = None,
        group: str | None = None,
    ) -> None:
        self.producer = producer
        self.topic = topic
        self._own = [] if group is None else [(GROUP, _text(group))]
        self._backoff = backoff
        self._on_retry = on_retry

    async def write(self, record: Record, exc: BaseException, route: str | None = None) -> None:
        """Send the original record with error headers; returns once the broker acknowledged.

        Raises:
            DeadLetterRefusedError: Neither the record nor its headers-only summary can ever be
                written (the cause is the last refusal).
        """
        refusal: BaseException | None
        try:
            headers = [*deadletter_headers(record, exc, route), *self._own]
        except Exception as err:  # headers are built to always encode: never stop on a bug
            refusal = err
        else:
            refusal = await self._send(record.key, record.value, headers)
        if refusal is None:
            return
        log.error(
            "the dead-letter topic %r refuses %s[%d]@%d (%s: %s): writing its headers only",
            self.topic, record.topic, record.partition, record.offset,
            type(refusal).__name__, refusal,
        )
        # An empty value, not None: aiokafka refuses a record with neither key nor value.
        final = await self._send(
            None, b"", [*summary_headers(record, exc, route, refusal), *self._own]
        )
        if final is not None:
            raise DeadLetterRefusedError(
                f"the dead-letter topic {self.topic!r} refuses even a headers-only record: "
                f"{type(final).__name__}: {_error_text(final)}"
            ) from final

    async def _send(
        self, key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]]
    ) -> BaseException | None:
        """Send until acknowledged (None) or refused for good (the refusal)."""
        attempt = 0
        while True:
            try:
                await self.producer.send_and_wait(
                    self.topic, value=value, key=key, headers=list(headers)
                )
            except Exception as err:
                if is_permanent_refusal(err):
                    return err
                attempt += 1
                delay = self._backoff(attempt)
                if self._on_retry is not None:
                    self._on_retry(attempt, err, delay)
                await asyncio.sleep(delay)
            else:
                return None


async def redrive_record(producer: Any, letter: DeadLetter, topic: str | None = None) -> None:
    """Send a dead-lettered record back, byte for byte, to its original (or another) topic."""
    target = topic or letter.original_topic
    if not target:
        raise ValueError("the dead-lettered record names no original topic")
    if letter.body_omitted:
        raise ValueError(
            "the dead-letter topic refused this record, so only its headers were kept: "
            f"read it from {letter.original_topic}[{letter.info.get('partition')}]"
            f"@{letter.info.get('offset')} instead"
        )
    await producer.send_and_wait(
        target, value=letter.record.value, key=letter.record.key, headers=letter.original_headers
    )


async def read_deadletters(
    settings: LoomSettings,
    *,
    topic: str | None = None,
    timeout: float = 15,
) -> list[DeadLetter]:
    """Every record of the dead-letter topic, from the beginning to the current end.

    Reads without a consumer group (nothing is committed) and stops at the end offsets seen
    when it started, so it returns even while the sidecar keeps writing.
    """
    target = topic or settings.kafka.deadletter_topic
    consumer = consumer_for(settings.kafka, group_id=None, enable_auto_commit=False)
    async with started(consumer, timeout):
        if target not in await consumer.topics():  # also refreshes the cluster metadata
            return []
        partitions = consumer.partitions_for_topic(target)
        if not partitions:
            return []
        tps = [TopicPartition(target, p) for p in sorted(partitions)]
        ends = await log_ends(consumer, tps)
        await consumer.seek_to_beginning(*tps)
        letters: list[DeadLetter] = []
        remaining = {tp for tp in tps if ends[tp] > 0}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while remaining and loop.time() < deadline:
            batch = await consumer.getmany(*remaining, timeout_ms=500)
            for tp, records in batch.items():
                letters.extend(
                    parse_deadletter(Record.from_aiokafka(rec))
                    for rec in records
                    if rec.offset < ends[tp]
                )
                if records and records[-1].offset >= ends[tp] - 1:
                    remaining.discard(tp)
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
        if remaining:
            raise TimeoutError(f"reading {target!r} did not reach its end within {timeout}s")
        return sorted(letters, key=lambda d: (d.record.partition, d.record.offset))



async def redrive(
    settings: LoomSettings,
    letters: Iterable[DeadLetter],
    *,
    topic: str | None = None,
    on_sent: Callable[[DeadLetter, str], None] | None = None,
) -> int:
    """Send dead-lettered records back, byte for byte, to their original (or ``topic``).

    Re-driving the same record twice is harmless: the loom deduplicates by event identity.

    Returns:
        How many records were sent.
    """
    sent = 0
    async with started(producer_for(settings.kafka)) as producer:
        for letter in letters:
            await redrive_record(producer, letter, topic)
            sent += 1
            if on_sent is not None:
                on_sent(letter, topic or letter.original_topic)
    return sent

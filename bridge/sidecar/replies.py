"""Replies of update-with-start routes: the update's result, published back to Kafka.

The reply is a CloudEvent correlated to the request by the CloudEvents correlation extension
(``causationid`` = the request's id, ``correlationid`` = the request's, else the workflow id;
the deprecated ``loomcausation`` too, for one minor release; same ``partitionkey``) whose id is deterministic (:func:`bridge._ids.reply_id`): a request
redelivered after its update completed publishes the same reply id again, so consumers can
deduplicate. A reply that cannot be published yet fails the call with a retriable error: the
retried call finds the update applied (same update id) and publishes its stored result.
"""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, KafkaTimeoutError

from bridge._ids import reply_id
from bridge.actions import Invocation
from bridge.events import CAUSATION, CAUSATION_ID, CORRELATION_ID, PARTITION_KEY, Event
from bridge.exceptions import ReplyPublishError, ReplyRefusedError
from bridge.kafka.binding import encode

__all__ = ["publish_reply", "reply_event"]


def reply_event(inv: Invocation, result: Any, group_id: str) -> Event:
    """The reply CloudEvent to the update that ``inv`` made, carrying ``result``."""
    request = inv.event
    if hasattr(result, "model_dump"):
        result = result.model_dump(mode="json")
    extensions: dict[str, Any] = {
        CORRELATION_ID: request.correlation or inv.workflow_id,
        CAUSATION_ID: request.id,
        CAUSATION: request.id,  # deprecated, written for one minor release
    }
    if request.partitionkey is not None:
        extensions[PARTITION_KEY] = request.partitionkey
    return Event(
        id=reply_id(inv.route, request),
        source=f"loom://{group_id}/{inv.route}",
        type=inv.reply_type or f"{request.type}.reply",
        subject=inv.workflow_id,
        data=result,
        datacontenttype="application/json",
        extensions=extensions,
    )


async def publish_reply(
    producer: AIOKafkaProducer, inv: Invocation, result: Any, group_id: str
) -> None:
    """Publish the reply to ``inv.reply_topic`` and wait for the broker's ack.

    Raises:
        ReplyPublishError: Not acknowledged yet (timeout, broker unreachable): retriable.
        ReplyRefusedError: The broker refused the record for good.
    """
    if inv.reply_topic is None:
        raise ValueError(f"route {inv.route!r} has no reply topic")
    key, value, headers = encode(reply_event(inv, result, group_id))
    try:
        await producer.send_and_wait(inv.reply_topic, value=value, key=key, headers=headers)
    except KafkaError as err:
        what = f"reply of route {inv.route!r} to {inv.reply_topic!r}: {err!r}"
        # aiokafka marks KafkaTimeoutError (a batch not drained in time) not retriable,
        # though it is the broker's hiccup, not the record's fault.
        if err.retriable or isinstance(err, KafkaTimeoutError):
            raise ReplyPublishError(f"{what} (the update was applied; retrying)") from err
        raise ReplyRefusedError(what) from err

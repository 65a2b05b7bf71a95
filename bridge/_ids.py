"""Deterministic identifiers: the same event (or emitted event) always gets the same id.

One UUIDv5 namespace per kind of id, all here, so that the ids stay reproducible across
processes and versions of the loom (changing a namespace changes every id of its kind):

- the Temporal ``request_id`` of a routed call (one event, or a coalesced call of several)
  and the update id of an update-with-start (guarantee 2b: the server drops a redelivered
  call);
- the CloudEvent id of an update's reply published back to Kafka;
- the CloudEvent id of an event emitted by a workflow (guarantee 7);
- the digest of an event's identity that a workflow's inbox remembers (and the sidecar
  compares with what a closed workflow saw).

Pure functions of strings: imported inside Temporal's workflow sandbox.
"""

from __future__ import annotations

import binascii
import hashlib
import uuid

from bridge.events import Event

__all__ = [
    "batch_request_id",
    "emitted_event_id",
    "identity_digest",
    "reply_id",
    "request_id",
    "update_id",
]

_CALLS = uuid.UUID("6f1d3c1e-55a8-5c3e-9a0e-6c6f6f6d0001")
_REPLIES = uuid.UUID("6f1d3c1e-55a8-5c3e-9a0e-6c6f6f6d0002")
_EMITTED = uuid.UUID("6f0a3b52-8a53-5c0e-9c4e-3f1d6e0c7a11")
_BATCHES = uuid.UUID("6f1d3c1e-55a8-5c3e-9a0e-6c6f6f6d0003")


def request_id(route: str, event: Event) -> str:
    """Deterministic Temporal request id of ``event`` through ``route``."""
    return str(uuid.uuid5(_CALLS, f"{route}\x1f{event.source}\x1f{event.id}"))


def batch_request_id(first: str, last: str, count: int) -> str:
    """Deterministic request id of one call carrying ``count`` events (a coalesced call).

    Built from the request ids of its first and last events and the count: a batch sent
    again as it was is dropped by the server; one cut differently after a redelivery gets
    another id, and the workflow's inbox drops its repeated events one by one.
    """
    return str(uuid.uuid5(_BATCHES, f"{first}\x1f{last}\x1f{count}"))


def update_id(route: str, event: Event) -> str:
    """Deterministic update id of ``event`` through an update-with-start ``route``."""
    return str(uuid.uuid5(_CALLS, f"update\x1f{route}\x1f{event.source}\x1f{event.id}"))


def reply_id(route: str, event: Event) -> str:
    """CloudEvent id of the reply to the update that ``event`` made through ``route``."""
    return str(uuid.uuid5(_REPLIES, f"{route}\x1f{event.source}\x1f{event.id}"))


def emitted_event_id(workflow_id: str, run_id: str, sequence: int) -> str:
    """CloudEvent id of the ``sequence``-th (from 0) event emitted by a workflow run."""
    return str(uuid.uuid5(_EMITTED, f"{workflow_id}\x1f{run_id}\x1f{sequence}"))


# Older versions carried full ``source\x1fid`` keys; a digest never contains the separator.
_KEY_SEPARATOR = "\x1f"


def identity_digest(key: str) -> str:
    """16-byte BLAKE2b digest of an identity (``Event.key``) in 22 base64 characters.

    A digest given again is returned as is: full keys always contain ``\x1f`` (between
    source and id) and digests never do, so state carried by an older version of the inbox
    (full keys) restores through the same function.
    """
    if len(key) == 22 and _KEY_SEPARATOR not in key:
        return key
    raw = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16).digest()
    return binascii.b2a_base64(raw, newline=False)[:22].decode("ascii")

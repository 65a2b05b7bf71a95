"""What an inbox remembers across continue-as-new, in a bounded number of bytes.

Event identities (``source`` + ``id``) are remembered as 16-byte BLAKE2b digests in unpadded
base64: 22 characters (25 bytes in the JSON input of the next run) whatever the
length of the source and the id. Ten thousand identities with 200-character sources and ids
are 250 KB instead of 4 MB of full keys, which were over Temporal's 2 MB blob limit.

Sizes are measured as the JSON the pydantic data converter writes (ASCII-escaped, so an
estimate from above), so that a workflow can keep its continue-as-new input under the limit.

Imported inside Temporal's workflow sandbox: deterministic, no I/O, no module state.
"""

# No ``from __future__ import annotations`` here: the types below cross Temporal's data
# converter inside the sandbox, where pydantic cannot look this module up in sys.modules
# when a workflow module imported it through imports_passed_through(). Real annotations
# need no lookup (issue 22).

import json
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from bridge._ids import identity_digest

__all__ = [
    "DEFAULT_CARRY_LIMIT",
    "DEFAULT_MAX_CARRIED_BYTES",
    "DEFAULT_UPDATE_RESULTS_LIMIT",
    "DIGEST_JSON_BYTES",
    "STATE_OVERHEAD",
    "Digests",
    "InboxState",
    "UpdateResults",
    "identity_digest",
    "json_size",
]

#: Carried bytes past which a run asks for continue-as-new (its input stays well under 2 MB).
DEFAULT_MAX_CARRIED_BYTES = 1024 * 1024
#: Carried bytes over which the inbox never continues as new: Temporal refuses an input over
#: its 2 MB blob limit (2,097,152 bytes; the SDK then fails the workflow task on every try).
DEFAULT_CARRY_LIMIT = 1_800_000
#: How many update results the inbox remembers (FIFO) to answer a repeated update.
DEFAULT_UPDATE_RESULTS_LIMIT = 1_000

# {"pending":[],"seen":[],"runs":N,"updates":{},"arrivals":[]} around the parts the inbox
# measures (each pending event counts its arrival time with it).
STATE_OVERHEAD = 80


@dataclass
class InboxState:
    """What an inbox carries across continue-as-new (part of the workflow input).

    Attributes:
        pending: Events received but not yet taken, oldest first, in payload form.
        seen: Digests of the identities of recent events, oldest first (earlier versions
            carried full ``source\x1fid`` keys: a state of theirs restores as well).
        runs: Number of runs before this one (0 in the first run).
        updates: Results of recently applied updates, by digest of the update id.
        arrivals: When each pending event arrived (ms since the epoch, workflow time), in the
            order of ``pending``: ``collect`` and ``debounce`` decide from them (empty in
            states of earlier versions: those events count as arrived when restored).
    """

    pending: list[dict[str, Any]] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)
    runs: int = 0
    updates: dict[str, Any] = field(default_factory=dict)
    arrivals: list[int] = field(default_factory=list)


#: Bytes one digest takes in a JSON list: 22 characters, two quotes, a comma.
DIGEST_JSON_BYTES = 25


# A constant, not state: building an encoder per call costs more than the encoding.
_COMPACT = json.JSONEncoder(separators=(",", ":"), default=str)


def json_size(value: Any) -> int:
    """Bytes of ``value`` as compact JSON (non-ASCII escaped: never an underestimate)."""
    return len(_COMPACT.encode(value))


class Digests:
    """A bounded FIFO set of identity digests (the oldest is forgotten first).

    Args:
        limit: How many identities to remember.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._order: OrderedDict[str, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, key: str) -> bool:
        return identity_digest(key) in self._order

    def add(self, key: str) -> bool:
        """Remember ``key`` (an identity or a digest); False when it was known already."""
        digest = identity_digest(key)
        if digest in self._order:
            return False
        self._order[digest] = None
        while len(self._order) > self.limit:
            self._order.popitem(last=False)
        return True

    def replace(self, keys: Iterable[str]) -> None:
        """Forget everything, then remember ``keys`` in order (identities or digests)."""
        self._order.clear()
        for key in keys:
            self.add(key)

    def snapshot(self) -> list[str]:
        """The digests, oldest first."""
        return list(self._order)

    @property
    def json_bytes(self) -> int:
        """Bytes of :meth:`snapshot` as JSON."""
        return 2 + DIGEST_JSON_BYTES * len(self._order)


class UpdateResults:
    """Results of applied updates by update id, bounded (the oldest is forgotten first).

    Temporal returns an update's stored result when the same update id comes again in the
    same run, but not in the next run of a continue-as-new chain: there the handler would
    run again. Carried across continue-as-new, these results answer it instead.

    Args:
        limit: How many results to remember.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._results: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._results)

    def get(self, update_id: str) -> tuple[bool, Any]:
        """``(True, result)`` when the update was applied, else ``(False, None)``."""
        found = self._results.get(identity_digest(update_id))
        return (False, None) if found is None else (True, found[0])

    def add(self, update_id: str, result: Any) -> None:
        """Remember the result of an applied update."""
        digest = identity_digest(update_id)
        if digest in self._results:
            return
        size = DIGEST_JSON_BYTES + 1 + json_size(result)
        self._results[digest] = (result, size)
        self._bytes += size
        while len(self._results) > self.limit:
            self._bytes -= self._results.popitem(last=False)[1][1]

    def replace(self, results: dict[str, Any]) -> None:
        """Forget everything, then remember ``results`` (carried state) in order."""
        self._results.clear()
        self._bytes = 0
        for update_id, result in results.items():
            self.add(update_id, result)

    def snapshot(self) -> dict[str, Any]:
        """Digest of the update id to result, oldest first."""
        return {digest: result for digest, (result, _) in self._results.items()}

    @property
    def json_bytes(self) -> int:
        """Bytes of :meth:`snapshot` as JSON."""
        return 2 + self._bytes

"""State models in a module of their own: nested (a list of sub-models, a datetime, an enum),
and the user types that carry an ``InboxState`` across continue-as-new."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime

from pydantic import BaseModel

from bridge.workflow import InboxState


class Kind(enum.StrEnum):
    """What an item is."""

    SMALL = "small"
    LARGE = "large"


class Item(BaseModel):
    """One routed event's data, kept in the state."""

    room: str
    seq: int
    at: datetime
    kind: Kind


class Ledger(BaseModel):
    """A nested state: every item taken, the last time and kind, a count per kind."""

    name: str = ""
    items: list[Item] = []
    last_at: datetime | None = None
    last_kind: Kind | None = None
    large: int = 0


def apply(state: Ledger, item: Item) -> None:
    """What one event does to a :class:`Ledger` (the workflows' handlers and the test's
    expectation both apply it)."""
    state.items.append(item)
    state.last_at = item.at
    state.last_kind = item.kind
    state.large += item.kind is Kind.LARGE


@dataclass
class CarriedIds:
    """A user dataclass carrying the inbox across continue-as-new, with its own data."""

    inbox: InboxState = field(default_factory=InboxState)
    taken: list[str] = field(default_factory=list)


class CarriedModel(BaseModel):
    """A user pydantic model carrying the inbox across continue-as-new."""

    inbox: InboxState = InboxState()
    taken: list[str] = []
    last: Item | None = None

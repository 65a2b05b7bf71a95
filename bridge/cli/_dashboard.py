"""What ``loom dev`` shows: the state of each item of the sample workload, and the tables."""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.markup import escape
from rich.table import Table
from rich.text import Text

from bridge.dev import DevApp, DevItem

__all__ = ["PENDING", "RUNNING", "DevSummary", "ItemState", "dashboard", "items_table"]

PENDING, RUNNING = "pending", "running"


@dataclass
class ItemState:
    """What the dashboard knows about one item of the sample workload."""

    item: DevItem
    status: str = PENDING
    reason: str | None = None

    @property
    def finished(self) -> bool:
        """The item's workflow closed."""
        return self.status not in (PENDING, RUNNING)


@dataclass
class DevSummary:
    """Counts shown on the dashboard and in the summary."""

    items: list[ItemState] = field(default_factory=list)
    placed: int = 0
    consumed: int = 0
    routed: int = 0
    deadlettered: int = 0
    commands: int = 0
    elapsed: float = 0.0

    def count(self, status: str) -> int:
        """Items whose workflow is in ``status``."""
        return sum(1 for item in self.items if item.status == status)

    @property
    def statuses(self) -> list[str]:
        """The final statuses reached so far, sorted."""
        return sorted({item.status for item in self.items if item.finished})

    @property
    def finished(self) -> bool:
        """Every item was placed and its workflow closed."""
        return self.placed == len(self.items) and all(i.finished for i in self.items)

    @property
    def as_designed(self) -> bool:
        """Every item ended the way the sample data says it should."""
        return all(i.status == i.item.expected for i in self.items)


def dashboard(app: DevApp, summary: DevSummary) -> Table:
    table = Table(title=app.title, show_header=False, title_justify="left", min_width=44)
    table.add_column("what", style="bold")
    table.add_column("count", justify="right")
    table.add_row(f"{app.noun}s placed", f"{summary.placed}/{len(summary.items)}")
    table.add_row("workflows running", str(summary.count(RUNNING)))
    for status in summary.statuses:
        table.add_row(escape(status), str(summary.count(status)))
    table.add_row("events consumed by the sidecar", str(summary.consumed))
    table.add_row("Temporal calls (routed)", str(summary.routed))
    table.add_row("dead-lettered", str(summary.deadlettered))
    table.add_row("commands answered by services", str(summary.commands))
    table.add_row("elapsed", f"{summary.elapsed:.1f}s")
    return table


def items_table(app: DevApp, summary: DevSummary) -> Table:
    table = Table(title=f"{app.noun}s", title_justify="left")
    for column in ("workflow id", "expected", "outcome", "reason"):
        table.add_column(column)
    for state in summary.items:
        style = "green" if state.status == state.item.expected else "red"
        table.add_row(
            escape(state.item.workflow_id),
            escape(state.item.expected),
            Text(state.status, style=style),
            escape(state.reason or ""),
        )
    return table

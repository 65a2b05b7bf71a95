"""``loom worker --entry``: SIGTERM stops a custom worker cleanly (exit 0), as with --workflows.

The entry point is a process of its own here (SIGTERM is the point), started by the
``start_loom`` fixture; it needs no server.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from kit import StartLoom, eventually

ENTRY = '''
import asyncio, pathlib, time

MARKS = pathlib.Path("marks.txt")


def note(text):
    with MARKS.open("a") as out:
        out.write(text + "\\n")


async def with_stop(settings, stop):
    note("ready")
    await stop.wait()  # the documented stop event: set on the first SIGTERM/SIGINT
    note("stopped")


async def without_stop():
    note("ready")
    try:
        await asyncio.Event().wait()  # never set: the loom cancels the entry point
    finally:
        note("stopped")


def blocking_with_stop(settings, stop):
    note("ready")
    stop.wait()  # a threading.Event for a plain function
    note("stopped")


async def deaf(stop):
    note("ready")
    try:
        await asyncio.Event().wait()  # ignores its stop event: the second signal ends it
    finally:
        note("stopped")


def blocking(settings):
    note("ready")
    try:
        while True:
            time.sleep(0.05)
    finally:
        note("stopped")
'''


@pytest.mark.parametrize("attr", ["with_stop", "without_stop", "blocking", "blocking_with_stop"])
async def test_sigterm_stops_the_entry_point_cleanly(
    attr: str, tmp_path: Path, start_loom: StartLoom
) -> None:
    (tmp_path / "entrymod.py").write_text(ENTRY)
    marks = tmp_path / "marks.txt"
    proc = await start_loom("worker", "--entry", f"entrymod:{attr}", python_path=[tmp_path])

    def ready() -> list[str]:
        proc.check_running()
        return marks.read_text().split() if marks.exists() else []

    await eventually(ready, timeout=30, what="the entry point started")
    proc.send(signal.SIGTERM)
    code = await proc.wait(30)
    assert code == 0, proc.tail()
    assert marks.read_text().split() == ["ready", "stopped"]


async def test_a_second_sigterm_abandons_an_entry_point_that_does_not_stop(
    tmp_path: Path, start_loom: StartLoom
) -> None:
    (tmp_path / "entrymod.py").write_text(ENTRY)
    marks = tmp_path / "marks.txt"
    proc = await start_loom("worker", "--entry", "entrymod:deaf", python_path=[tmp_path])

    def ready() -> list[str]:
        proc.check_running()
        return marks.read_text().split() if marks.exists() else []

    await eventually(ready, timeout=30, what="the entry point started")
    proc.send(signal.SIGTERM)
    await eventually(lambda: "stopping the worker" in proc.output, timeout=30,
                     what="the first SIGTERM was taken")
    proc.check_running()  # it ignores its stop event
    proc.send(signal.SIGTERM)
    assert await proc.wait(30) == 130, proc.tail()
    assert marks.read_text().split() == ["ready", "stopped"]  # cancelled: its finally ran

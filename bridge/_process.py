"""A server subprocess that only its starter stops: own process group, log file, parent-death signal.

The embedded servers of :mod:`bridge.dev` run on this.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

from bridge.exceptions import EmbeddedServerError

__all__ = ["ServerProcess", "poll_until_ready", "wait_tcp"]


def _parent_death_signal() -> Callable[[], None] | None:
    """A pre-exec hook making the server get SIGTERM when the process that started it dies.

    Without it, a test runner killed with SIGKILL leaves its servers running (they have
    their own session). Linux only; elsewhere the servers are stopped by ``stop`` alone.
    Linux sends the signal when the *thread* that started the server ends: start servers
    from the event loop's thread (as ``async with`` does), not from a short-lived thread.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()
    pr_set_pdeathsig = 1

    def hook() -> None:
        # Runs in the child between fork and exec: only the already-resolved call.
        prctl(pr_set_pdeathsig, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the call took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return hook


_PDEATHSIG = _parent_death_signal()


class ServerProcess:
    """A server subprocess in its own process group, its output in a log file."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env) if env is not None else None
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.log_path: Path | None = None

    def start(self) -> None:
        fd, path = tempfile.mkstemp(prefix=f"loom-{self.name}-", suffix=".log")
        self.log_path = Path(path)
        self._log = os.fdopen(fd, "wb")
        env = {**os.environ, **(self.env or {})}
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own group: we stop exactly what we started
            preexec_fn=_PDEATHSIG,
        )

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def exited(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def log_tail(self, lines: int = 30) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        text = self.log_path.read_bytes().decode("utf-8", "replace").splitlines()
        return "\n".join(text[-lines:])

    def fail(self, why: str) -> EmbeddedServerError:
        return EmbeddedServerError(
            f"{self.name} did not start ({why}); command: {' '.join(self.argv)}\n"
            f"--- last lines of its log ({self.log_path}) ---\n{self.log_tail()}"
        )

    async def stop(self, timeout: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await asyncio.to_thread(proc.wait)
        if self._log is not None:
            self._log.close()
            self._log = None

    def remove_log(self) -> None:
        if self.log_path is not None:
            with contextlib.suppress(OSError):
                self.log_path.unlink()


async def wait_tcp(proc: ServerProcess, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.exited() is not None:
            raise proc.fail(f"exited with code {proc.exited()}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.monotonic() > deadline:
                raise proc.fail(f"port {port} not open after {timeout:.0f}s") from None
            await asyncio.sleep(0.05)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return


async def poll_until_ready(
    proc: ServerProcess, probe: Callable[[], Awaitable[None]], timeout: float
) -> None:
    """Call ``probe`` until it succeeds; fail with the log tail if the server exits or times out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            await probe()
            return
        except Exception as exc:
            if proc.exited() is not None:
                raise proc.fail(f"exited with code {proc.exited()}") from exc
            if time.monotonic() > deadline:
                raise proc.fail(f"not answering: {exc}") from exc
            await asyncio.sleep(0.1)

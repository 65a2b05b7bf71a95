"""A custom worker's entry point, run until it returns or SIGTERM/SIGINT stops it cleanly.

``loom worker --entry MODULE:ATTR`` runs :func:`serve_entry`. The entry point may declare:

- a first parameter: it gets the :class:`~bridge.settings.LoomSettings` (without one, the
  command line's flags reach it as ``LOOM_*`` environment variables);
- a parameter named ``stop``: an event set on the first SIGTERM/SIGINT, after which the entry
  point should stop its worker and return (``asyncio.Event`` for a coroutine function, which
  hands it to ``run_worker(..., stop=stop)``; ``threading.Event`` for a plain function).

Without ``stop``, the first signal stops the entry point itself: a coroutine is cancelled, a
plain function gets ``KeyboardInterrupt`` (its ``finally`` blocks run, and an
``asyncio.run`` inside it cancels its tasks). Either way the exit code is 0, or the int the
entry point returned; a second signal abandons the wait (exit code 130), as ``--workflows``
does.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import signal
import threading
from collections.abc import Callable, Coroutine
from types import FrameType
from typing import Any

from bridge.settings import LoomSettings

__all__ = ["serve_entry"]

log = logging.getLogger("loom.worker")

#: The exit code of a stop abandoned by a second signal (as for ``--workflows``).
EXIT_ABANDONED = 130
_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def serve_entry(target: Callable[..., Any], settings: LoomSettings | None) -> int:
    """Run the entry point until it returns or a signal stops it; the process's exit code.

    Args:
        target: The entry point (a function or coroutine function).
        settings: Handed to the entry point when it declares a parameter besides ``stop``;
            None when it reads ``LOOM_*`` itself.
    """
    params = inspect.signature(target).parameters
    wants_stop = "stop" in params
    args = (settings,) if any(name != "stop" for name in params) else ()
    if inspect.iscoroutinefunction(target):
        if wants_stop:
            return asyncio.run(_serve_coroutine(lambda stop: target(*args, stop=stop), True))
        return asyncio.run(_serve_coroutine(lambda stop: target(*args), False))
    return _serve_function(target, args, wants_stop)


def _code(result: Any) -> int:
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


async def _serve_coroutine(
    start: Callable[[asyncio.Event], Coroutine[Any, Any, Any]], wants_stop: bool
) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    task: asyncio.Task[Any] = asyncio.ensure_future(start(stop))
    signals = 0

    def on_signal(signum: int) -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            log.info("%s: stopping the worker", signal.Signals(signum).name)
            stop.set()
            if not wants_stop:
                task.cancel()
        else:
            log.warning("second signal: not waiting for the entry point")
            task.cancel()

    for sig in _SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        result = await task
    except asyncio.CancelledError:
        if signals == 1 and not wants_stop:
            log.info("worker stopped cleanly")
            return 0
        if signals > 1:
            return EXIT_ABANDONED
        raise
    finally:
        for sig in _SIGNALS:
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
    log.info("worker stopped cleanly" if signals else "the entry point returned")
    return _code(result)


def _serve_function(target: Callable[..., Any], args: tuple[Any, ...], wants_stop: bool) -> int:
    stop = threading.Event()
    signals = 0

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            log.info("%s: stopping the worker", signal.Signals(signum).name)
            stop.set()
            if wants_stop:
                return
        else:
            log.warning("second signal: not waiting for the entry point")
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, on_signal) for sig in _SIGNALS}
    try:
        result = target(*args, stop=stop) if wants_stop else target(*args)
        if inspect.iscoroutine(result):  # a plain function that hands back a coroutine
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            previous = {}
            return asyncio.run(_serve_coroutine(lambda _: result, False))
    except KeyboardInterrupt:
        if signals == 1 and not wants_stop:
            log.info("worker stopped cleanly")
            return 0
        if signals == 0:
            raise
        return EXIT_ABANDONED
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("worker stopped cleanly" if signals else "the entry point returned")
    return _code(result)

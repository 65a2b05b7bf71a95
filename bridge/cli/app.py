"""The ``loom`` command: run the sidecar or a worker, publish events, inspect routes and the
dead-letter topic, run an application on embedded servers.

Settings come from ``LOOM_*`` environment variables and ``.env``; flags override them. A bad
setting exits with code 2 and a message naming the setting (its environment variable);
secrets never appear in any output.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, NoReturn

import typer

from bridge.cli import check, dev, records, replay, routes, run

__all__ = ["app", "main", "package_version"]

app = typer.Typer(
    name="loom",
    help="temporal-loom: CloudEvents on Kafka drive Temporal workflows, and back.",
    no_args_is_help=True,
    # --install-completion / --show-completion for bash, zsh, fish and PowerShell.
    add_completion=True,
    pretty_exceptions_enable=False,
)


def package_version() -> str:
    """The installed distribution's version (``temporal-loom``)."""
    try:
        return version("temporal-loom")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"temporal-loom {package_version()}")
        raise typer.Exit


@app.callback()
def _loom(
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", is_eager=True,
            callback=_print_version,
        ),
    ] = False,
) -> None:
    """temporal-loom: CloudEvents on Kafka drive Temporal workflows, and back."""
dlq_app = typer.Typer(help="Inspect and re-drive the dead-letter topic.", no_args_is_help=True)

app.command()(run.run)
app.command()(run.worker)
app.command()(dev.dev)
app.command()(check.check)
app.command("routes")(routes.routes)
app.command()(records.publish)
app.command()(replay.replay)
dlq_app.command("list")(records.dlq_list)
dlq_app.command("redrive")(records.dlq_redrive)
app.add_typer(dlq_app, name="dlq")


def main() -> NoReturn:
    """Console script entry point (``loom``, ``python -m bridge.cli``).

    Once the command has finished, flushed its output and closed its clients, the process
    leaves with ``os._exit`` rather than through Python's finalization: calls to Temporal that
    the sidecar abandoned at its drain timeout still run in the SDK's Rust runtime, whose
    threads block forever trying to hand their results back to an interpreter being torn down
    (seen as a sidecar still running long after SIGTERM with hundreds of calls in flight).
    """
    code = 0
    try:
        app()
    except SystemExit as done:
        code = _exit_code(done.code)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)  # SystemExit("message"): Python prints it and exits 1
    return 1

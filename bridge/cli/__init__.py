"""The ``loom`` command line: one module per command, assembled in :mod:`bridge.cli.app`."""

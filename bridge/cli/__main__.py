"""``python -m bridge.cli``: the ``loom`` command."""

from bridge.cli.app import main

main()

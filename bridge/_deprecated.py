"""Modules that moved keep an alias for one minor release: importing one warns.

The alias modules (``bridge.activities``, ``bridge.producer``, ``bridge.service``,
``bridge.saga``: the paths the README documented before 0.2.0's layout) re-export the names
that still exist from their new place; a name that is gone raises an ``AttributeError`` that
says what replaced it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

#: The release that removes the alias modules.
REMOVED_IN = "0.3.0"


def warn_moved(old: str, new: str) -> None:
    """Warn (``DeprecationWarning``) that module ``old`` moved to ``new``.

    Called at the top level of the alias module, with stack level 2 from there: the
    warning names the line that imported it (``warnings`` skips the import system's frames).
    """
    warnings.warn(
        f"{old} is deprecated since 0.2.0 and goes in {REMOVED_IN}: import from {new}",
        DeprecationWarning,
        stacklevel=3,  # 2 from the alias module, which calls this function
    )


def gone(module: str, replaced: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for the names of ``module`` that no longer exist."""

    def __getattr__(name: str) -> Any:
        if name in replaced:
            raise AttributeError(f"{module}.{name} is gone: {replaced[name]}")
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__

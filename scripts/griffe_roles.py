"""A griffe extension for the docs site: Sphinx roles in docstrings read as code.

The library's docstrings name other objects the Sphinx way (``:func:`load_settings```,
``:class:`~bridge.events.Event```); mkdocstrings' Google parser shows such roles as they are
written. This rewrites each one to plain inline code before the docstring is parsed, so
``:mod:`bridge.workflow.inbox``` reads ``bridge.workflow.inbox``. Loaded by mkdocs.yml
(``extensions:`` of the Python handler).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:mod|func|class|meth|attr|data|exc|obj):`~?([^`]+)`")


def plain_roles(text: str) -> str:
    """``text`` with every Sphinx cross-reference role turned into inline code."""
    return _ROLE.sub(r"`\1`", text)


class PlainRoles(griffe.Extension):
    """Rewrites the roles of every docstring of a loaded package."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        self._walk(pkg)

    def _walk(self, obj: griffe.Object) -> None:
        if obj.docstring is not None:
            obj.docstring.value = plain_roles(obj.docstring.value)
        for member in obj.members.values():
            if not member.is_alias and isinstance(member, griffe.Object):
                self._walk(member)

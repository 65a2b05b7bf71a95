"""The public API is pinned with its signatures; a change needs a CHANGELOG entry.

``tests/api_snapshot.json`` holds every name that ``bridge`` and its public modules export
(``__all__``, or for a module without one the names it defines), with its signature
(``inspect.signature`` as text) or, for a constant, its value. When the API differs from the
snapshot, each changed, added or removed name must appear in CHANGELOG.md's
``## [Unreleased]`` section, in backticks (`` `Match` ``, `` `Match.type` ``,
`` `bridge.matching.Match` ``). Then rewrite the snapshot::

    LOOM_UPDATE_API_SNAPSHOT=1 .venv/bin/python -m pytest -p no:xdist tests/test_api_snapshot.py
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import pkgutil
import re
import types
import warnings
from pathlib import Path
from typing import Any, TypeVar

import bridge

SNAPSHOT = Path(__file__).parent / "api_snapshot.json"
CHANGELOG = Path(__file__).parent.parent / "CHANGELOG.md"
UPDATE = "LOOM_UPDATE_API_SNAPSHOT"


def public_modules() -> list[str]:
    """``bridge`` and its modules with no private part (the CLI's interface is its --help)."""
    names = ["bridge"]
    for info in pkgutil.walk_packages(bridge.__path__, "bridge."):
        parts = info.name.split(".")[1:]
        if not any(p.startswith("_") for p in parts) and parts[0] != "cli":
            names.append(info.name)
    return sorted(names)


def exported(module: types.ModuleType) -> list[str]:
    declared = getattr(module, "__all__", None)
    if declared is not None:
        return list(declared)
    return sorted(
        name for name, obj in vars(module).items()
        if not name.startswith("_") and not isinstance(obj, types.ModuleType | TypeVar)
        and (getattr(obj, "__module__", None) == module.__name__ or name.isupper())
    )


def describe(obj: Any) -> str:
    if inspect.isclass(obj) or callable(obj):
        kind = "class" if inspect.isclass(obj) else "def"
        try:
            try:  # annotations as objects, whether or not a module postpones them
                signature = inspect.signature(obj, eval_str=True)
            except Exception:  # a name only a type checker sees
                signature = inspect.signature(obj)
            # Private parameters are not the API, and a library's own (pydantic-settings'
            # ``_env_file`` and friends on a settings class) change with its releases.
            signature = signature.replace(parameters=[
                p for p in signature.parameters.values() if not p.name.startswith("_")
            ])
            text = f"{kind}{signature}"
        except (TypeError, ValueError):  # builtins and some C types have none
            text = f"{kind}(...)"
    elif isinstance(obj, str | int | float | bool | type(None)):
        text = f"{type(obj).__name__} = {obj!r}"
    else:
        text = type(obj).__name__
    return re.sub(r" at 0x[0-9a-f]+", "", text)  # no addresses in default values


def current_api() -> dict[str, dict[str, str]]:
    api: dict[str, dict[str, str]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the deprecated aliases count too
        for name in public_modules():
            module = importlib.import_module(name)
            api[name] = {attr: describe(getattr(module, attr)) for attr in exported(module)}
    return api


def unreleased() -> str:
    text = CHANGELOG.read_text()
    section = re.search(r"^## \[Unreleased\]\n(.*?)(?=^## \[)", text, flags=re.M | re.S)
    assert section is not None, "CHANGELOG.md has no ## [Unreleased] section"
    return section.group(1)


def changes(old: dict[str, dict[str, str]], new: dict[str, dict[str, str]]) -> list[str]:
    """``module.name: what changed`` for every name added, removed or changed; a module
    added or removed as a whole is one change (``module: added``)."""
    out = []
    for module in sorted(old.keys() | new.keys()):
        if module not in old or module not in new:
            out.append(f"{module}: module {'added' if module in new else 'removed'}")
            continue
        before, after = old[module], new[module]
        for name in sorted(before.keys() | after.keys()):
            if before.get(name) != after.get(name):
                out.append(f"{module}.{name}: {before.get(name, '(absent)')} -> "
                           f"{after.get(name, '(removed)')}")
    return out


def named_in(text: str, qualified: str) -> bool:
    """Whether a backticked span of ``text`` names ``qualified``'s last part as a word."""
    name = qualified.rsplit(".", 1)[1]
    return any(re.search(rf"(?<![\w]){re.escape(name)}(?![\w])", span)
               for span in re.findall(r"`([^`]+)`", text))


def test_the_public_api_matches_its_snapshot_or_the_changelog_says_why() -> None:
    api = current_api()
    if os.environ.get(UPDATE):
        SNAPSHOT.write_text(json.dumps(api, indent=1, sort_keys=True) + "\n")
        return
    pinned = json.loads(SNAPSHOT.read_text())
    notes = unreleased()
    unnamed = [c for c in changes(pinned, api) if not named_in(notes, c.split(":", 1)[0])]
    assert not unnamed, (
        "the public API changed, and CHANGELOG.md's [Unreleased] section names none of these "
        "(in backticks):\n  " + "\n  ".join(unnamed)
        + f"\nAdd an entry for each, then rewrite the snapshot: {UPDATE}=1 .venv/bin/python -m "
        "pytest -p no:xdist tests/test_api_snapshot.py"
    )


def test_the_check_sees_a_change_and_its_entry() -> None:
    old = {"bridge.m": {"f": "def(a)", "gone": "def()"}}
    new = {"bridge.m": {"f": "def(a, b)", "new": "class()"}}
    found = [c.split(":", 1)[0] for c in changes(old, new)]
    assert found == ["bridge.m.f", "bridge.m.gone", "bridge.m.new"]
    notes = "- `f` takes `b`; `bridge.m.gone` is gone\n- new things (not named)\n"
    assert [named_in(notes, q) for q in found] == [True, True, False]
    assert [c.split(":", 1)[0] for c in changes(old, {**new, "bridge.n": {}})][-1] == "bridge.n"
    assert named_in("- `bridge.n` is new", "bridge.n")
    assert not named_in("- `fx` changed", "bridge.m.f")

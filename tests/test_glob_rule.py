"""One pattern rule for every matcher (0.2.0): ``Match`` fields, ``@handles``, topic bindings,
``loom replay --route``: fnmatch globs, ``[*]`` for a literal ``*``; exact types stay a dict
lookup in the router's index; a pattern character where nothing globs is refused; ``loom
check`` reports the routes whose meaning the rule changed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bridge.actions import Signal
from bridge.cli.check import pattern_rule_warnings
from bridge.cli.replay import _router
from bridge.events import Event
from bridge.exceptions import RouteDefinitionError, SettingsError
from bridge.matching import TypeIndex
from bridge.routing import Match, Route, Router
from bridge.settings import LoomSettings
from bridge.workflow.handlers import HandlerTable, handles


def ev(type: str, **extensions: str) -> Event:
    return Event(id="1", source="shop/eu", type=type, subject="s-1", extensions=extensions)


def test_a_type_with_a_star_globs_as_every_other_field_does() -> None:
    # In 0.1 this was silently the exact type "io.x.*", while source="shop/*" globbed.
    match = Match(type="io.x.*", source="shop/*")
    assert match.matches(ev("io.x.created"))
    assert match.matches(ev("io.x.*"))
    assert not match.matches(ev("io.y.created"))


@pytest.mark.parametrize("field", ["type", "source", "subject", "ext"])
def test_brackets_match_a_literal_star_in_every_field(field: str) -> None:
    pattern = "a.[*]"
    fields: dict[str, Any] = {"extensions": {"tenant": pattern}} if field == "ext" else {field: pattern}
    match = Match(**fields)

    def with_value(value: str) -> Event:
        if field == "ext":
            return ev("t", tenant=value)
        return Event(id="1", source=value if field == "source" else "s",
                     type=value if field == "type" else "t",
                     subject=value if field == "subject" else None)

    assert match.matches(with_value("a.*"))
    assert not match.matches(with_value("a.b"))


def test_type_is_held_normalized() -> None:
    assert (Match(type="io.x.[*]").type, Match(type="io.x.[*]").type_glob) == ("io.x.*", None)
    assert (Match(type="io.x.*").type, Match(type="io.x.*").type_glob) == (None, "io.x.*")
    assert Match(type_glob="order.placed").type == "order.placed"  # a glob without wildcards
    assert Match(type="io.x.[*]").describe() == "type=io.x.[*]"  # written back as a pattern


@pytest.mark.parametrize("prefix", ["order.*", "order.?", "order.[ab]"])
def test_a_pattern_character_in_type_prefix_is_refused_naming_the_field_to_use(
    prefix: str,
) -> None:
    with pytest.raises(RouteDefinitionError, match=r"type_prefix does not glob: write type="):
        Match(type_prefix=prefix)


def test_a_pattern_character_in_an_extension_name_is_refused() -> None:
    with pytest.raises(RouteDefinitionError, match="extension names do not glob"):
        Match(extensions={"ten*": "acme"})


def test_exact_types_are_a_dict_lookup_not_a_scan() -> None:
    index: TypeIndex[int] = TypeIndex()
    for n in range(1000):
        index.add(Match(type=f"t.{n}"), n)
    index.add(Match(type="io.x.[*]"), 1000)  # an escaped literal is exact too
    index.add(Match(type="order.*"), 1001)  # "<literal>*" is a prefix
    index.add(Match(type="order.*.failed"), 1002)  # a real glob: the short list
    assert len(index._exact) == 1001 and "io.x.*" in index._exact
    assert list(index._prefix) == ["order."]
    assert [entry[2] for _, entry in index._globs] == [1002]
    assert index._any == []
    assert index.lookup(ev("t.500")) == [500]
    assert index.lookup(ev("io.x.*")) == [1000]
    assert index.lookup(ev("io.x.y")) == []
    assert index.lookup(ev("order.pay.failed")) == [1001, 1002]


class Alarm:  # the handler table of an entity class, without the workflow around it
    @handles("alarm.[*]")
    async def literal_star(self, data: Any) -> None:
        return None

    @handles("alarm.*")
    async def any_alarm(self, data: Any) -> None:
        return None


def test_handles_follows_the_same_rule() -> None:
    table = HandlerTable(Alarm)
    assert table._exact.keys() == {"alarm.*"}  # the escaped literal: a dict entry
    found = table.find("alarm.*")
    assert found is not None and found.method == "literal_star"
    other = table.find("alarm.raised")
    assert other is not None and other.method == "any_alarm"


def test_topic_bindings_follow_the_same_rule() -> None:
    match = Match(type="t", topic=["orders.*", "audit.[*]"])
    assert match.binds("orders.eu") and match.binds("audit.*")
    assert not match.binds("audit.x")


def routes_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "globroutes.py").write_text(
        "from bridge.actions import Signal\n"
        "from bridge.routing import Match, Route, Router\n"
        "router = Router([\n"
        "    Route('orders-eu', Match(type='io.x.*'), Signal(workflow_id='{subject}')),\n"
        "    Route('orders-us', Match(type='io.x.[*]'), Signal(workflow_id='{subject}')),\n"
        "    Route('billing', Match(type='bill.paid'), Signal(workflow_id='{subject}')),\n"
        "])\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return "globroutes:router"


def test_loom_check_reports_the_routes_whose_meaning_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bridge._loading import load_router

    router = load_router(routes_module(tmp_path, monkeypatch))
    warnings = {w.name: w.detail for w in pattern_rule_warnings(router)}
    assert set(warnings) == {"route orders-eu", "route orders-us"}
    assert "is a glob since 0.2.0" in warnings["route orders-eu"]
    assert "write type='io.x.[*]'" in warnings["route orders-eu"]
    assert "the exact type 'io.x.*'" in warnings["route orders-us"]


def test_replay_route_selects_by_the_same_rule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = LoomSettings(routes=routes_module(tmp_path, monkeypatch))
    assert [r.name for r in _router(settings, "orders-*").routes] == ["orders-eu", "orders-us"]
    assert [r.name for r in _router(settings, "billing").routes] == ["billing"]
    with pytest.raises(SettingsError, match="no route is named"):
        _router(settings, "nope-*")


def test_a_route_by_string_type_globs_too() -> None:
    router = Router([Route("r", "io.x.*", Signal(workflow_id="{subject}"))])
    assert [r.name for r in router.match(ev("io.x.a"))] == ["r"]

"""Router matching throughput with 1, 100 and 10,000 exact-type routes.

Matching must not slow down as exact-type routes are added (a dict lookup, not a scan). Each
router also holds a few prefix, glob and catch-all routes, as a real table would. Three
series run side by side (``SERIES``): the routes unbound and matched without a topic (the
router before topic bindings), the same matched with each record's topic (what the sidecar
does), and the exact-type routes bound to ten topics (``Match(topic=...)``, plus one topic
glob) matched with the topic: the index by topic must keep the cost flat too. Run with
``python -m bench.router_bench`` or ``python -m bench --router``; ``main()`` returns the
figures.
"""

from __future__ import annotations

import random
import time
from typing import Any

from bridge.actions import SignalWithStart
from bridge.events import Event
from bridge.routing import Match, Route, Router

SIZES = (1, 100, 10_000)
TARGET = 200_000  # matches per second at 10,000 exact-type routes
TOPICS = 10  # topics the exact-type routes are bound to in the second series


def _topic(i: int) -> str:
    return f"topic-{i % TOPICS}"


def _router(exact: int, bound: bool = False) -> Router:
    action = SignalWithStart(workflow="Saga", task_queue="q", workflow_id="{source}/{id}")
    routes = [
        Route(
            f"exact-{i}",
            Match(type=f"svc{i % 97}.thing{i}.happened", topic=_topic(i) if bound else None),
            action,
        )
        for i in range(exact)
    ]
    routes += [
        Route("prefix-a", Match(type_prefix="svc1."), action),
        Route("prefix-b", Match(type_prefix="svc2.thing"), action),
        Route("glob", Match(type_glob="svc*.thing?.failed"), action),
        Route("audit", Match(source="audit/*"), action),
    ]
    if bound:
        routes.append(Route("topic-glob", Match(type_prefix="svc3.", topic="topic-[13]"), action))
    return Router(routes)


def _events(exact: int, count: int) -> list[tuple[Event, str]]:
    rng = random.Random(7)
    events = []
    for n in range(count):
        i = rng.randrange(exact)
        # One event in ten matches no exact route: misses cost as much as hits.
        event_type = f"svc{i % 97}.thing{i}.happened" if n % 10 else f"other.type{i}"
        events.append((Event(id=str(n), source="shop/eu", type=event_type), _topic(i)))
    return events


def _loop(router: Router, events: list[tuple[Event, str]], rounds: int, series: str) -> float:
    """CPU seconds for ``rounds`` matches of one series.

    CPU time, not wall time: on a shared machine the wall clock counts other processes' turns,
    while a single-threaded loop's CPU time is its own cost.
    """
    match = router.match
    started = time.process_time()
    if series == "plain":
        for n in range(rounds):
            match(events[n % 1_000][0])
    else:
        for n in range(rounds):
            event, topic = events[n % 1_000]
            match(event, topic)
    return time.process_time() - started


#: ``plain``: unbound routes, matched without a topic (the router before topic bindings);
#: ``topic``: the same routes, matched with the record's topic (what the sidecar does);
#: ``bound``: the exact-type routes bound to ten topics (plus a topic glob), with the topic.
SERIES = ("plain", "topic", "bound")


def measure_side_by_side(exact: int, rounds: int = 200_000) -> dict[str, float]:
    """Matches per second of each series at ``exact`` exact-type routes (best of 3 each).

    The series run in turns, in a rotating order, so a slower or busier moment of the machine
    weighs on all of them alike: their ratios are the figures to compare.
    """
    unbound = _router(exact)
    routers = {"plain": unbound, "topic": unbound, "bound": _router(exact, True)}
    events = _events(exact, 1_000)
    best = dict.fromkeys(SERIES, 0.0)
    for turn in range(3):
        order = SERIES[turn:] + SERIES[:turn]
        for series in order:
            best[series] = max(best[series], rounds / _loop(routers[series], events, rounds, series))
    return best


def measure(exact: int, rounds: int = 200_000, *, bound: bool = False) -> float:
    """Matches per second of a router with ``exact`` exact-type routes (best of 3).

    With ``bound``, those routes are bound to ten topics and each event is matched with the
    topic of its record (``router.match(event, topic)``); otherwise without a topic.
    """
    router = _router(exact, bound)
    events = _events(exact, 1_000)
    series = "bound" if bound else "plain"
    return max(rounds / _loop(router, events, rounds, series) for _ in range(3))


def main(rounds: int = 200_000, sizes: tuple[int, ...] = SIZES) -> dict[str, Any]:
    """Print and return matches per second of each series for each router size."""
    results: dict[str, Any] = {}
    print(f"{'exact-type routes':>17} {'plain':>12} {'with topic':>12} {'bound':>12}"
          f" {'topic/plain':>12} {'bound/plain':>12}   (matches per CPU second)")
    for size in sizes:
        rates = measure_side_by_side(size, rounds)
        results[f"exact_routes_{size}"] = round(rates["plain"])
        results[f"topic_routes_{size}"] = round(rates["topic"])
        results[f"bound_routes_{size}"] = round(rates["bound"])
        results[f"ratio_topic_{size}"] = round(rates["topic"] / rates["plain"], 3)
        results[f"ratio_bound_{size}"] = round(rates["bound"] / rates["plain"], 3)
        print(f"{size:>17,} {rates['plain']:>12,.0f} {rates['topic']:>12,.0f}"
              f" {rates['bound']:>12,.0f} {rates['topic'] / rates['plain']:>12.2f}"
              f" {rates['bound'] / rates['plain']:>12.2f}")
    last = SIZES[-1]
    if last in sizes:
        results["target_matches_per_s"] = TARGET
        results["meets_target"] = min(
            results[f"exact_routes_{last}"], results[f"bound_routes_{last}"]
        ) >= TARGET
        print(
            f"target at {last:,} routes: {TARGET:,} matches/s, plain and bound: "
            f"{'met' if results['meets_target'] else 'MISSED'}"
        )
    return results


if __name__ == "__main__":
    main()

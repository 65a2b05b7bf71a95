"""Router matching throughput with 1, 100 and 10,000 exact-type routes.

Matching must not slow down as exact-type routes are added (a dict lookup, not a scan). Each
router also holds a few prefix, glob and catch-all routes, as a real table would. A second
series binds the exact-type routes to ten topics (``Match(topic=...)``, plus one topic glob)
and matches each event with its record's topic: the index by topic must keep the cost flat
too. Run with ``python -m bench.router_bench``; ``main()`` returns the figures for
``python -m bench``.
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


def measure(exact: int, rounds: int = 200_000, *, bound: bool = False) -> float:
    """Matches per second of a router with ``exact`` exact-type routes (best of 3).

    With ``bound``, those routes are bound to ten topics and each event is matched with the
    topic of its record (``router.match(event, topic)``); otherwise without a topic.
    """
    router = _router(exact, bound)
    events = _events(exact, 1_000)
    match = router.match
    best = 0.0
    for _ in range(3):
        started = time.perf_counter()
        if bound:
            for n in range(rounds):
                event, topic = events[n % 1_000]
                match(event, topic)
        else:
            for n in range(rounds):
                match(events[n % 1_000][0])
        best = max(best, rounds / (time.perf_counter() - started))
    return best


def main() -> dict[str, Any]:
    """Print and return matches per second for each router size."""
    results: dict[str, Any] = {}
    for size in SIZES:
        rate = measure(size)
        results[f"exact_routes_{size}"] = round(rate)
        print(f"router.match, {size:>6} exact-type routes: {rate:>12,.0f} matches/s")
    for size in SIZES:
        rate = measure(size, bound=True)
        results[f"bound_routes_{size}"] = round(rate)
        print(f"router.match, {size:>6} routes on {TOPICS} topics: {rate:>9,.0f} matches/s")
    results["target_matches_per_s"] = TARGET
    results["meets_target"] = results[f"exact_routes_{SIZES[-1]}"] >= TARGET
    print(
        f"target at {SIZES[-1]:,} routes: {TARGET:,} matches/s: {'met' if results['meets_target'] else 'MISSED'}"
    )
    return results


if __name__ == "__main__":
    main()

"""``python -m bench``: the loom against the Temporal ceiling and a hand-written loop.

Examples::

    .venv/bin/python -m bench                 # the comparison (about ten minutes)
    .venv/bin/python -m bench --rounds 1      # one round of every path
    .venv/bin/python -m bench --coalesce off  # the loom without coalescing
    .venv/bin/python -m bench --soak          # 200,000 events through the loom, RSS over time
    .venv/bin/python -m bench --smoke         # a tiny run: checks the harness, not the speed
    .venv/bin/python -m bench --router        # router.match alone: plain, with topic, bound
    .venv/bin/python -m bench --map           # the loom with the map's recording off and on
    .venv/bin/python -m bench --growth        # throughput and CPU vs routes, ids, payload
    .venv/bin/python -m bench.profile         # py-spy on the loom's backlog path
"""

from __future__ import annotations

import argparse

from bench.run import Options, main


def parse(argv: list[str] | None = None) -> Options:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=20_000, help="events per ceiling/loom run")
    p.add_argument("--naive-events", type=int, default=None,
                   help="events for the naive loop (default: min(events, 5000): it is slow)")
    p.add_argument("--workflows", type=int, default=500, help="distinct workflow ids")
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--concurrency", type=int, default=256,
                   help="the loom's max_in_flight, and the ceiling's concurrent calls")
    p.add_argument("--max-buffered", type=int, default=0,
                   help="the loom's max_buffered (0: its default, no bound on the count: "
                        "max_buffered_bytes bounds the records held)")
    p.add_argument("--max-uncommitted", type=int, default=None,
                   help="the loom's kafka.max_uncommitted, records read past a partition's "
                        "commit point (default: the setting's; 0: no bound, as before it)")
    p.add_argument("--faststream-events", type=int, default=None,
                   help="events for the FastStream subscriber (default: as --naive-events)")
    p.add_argument("--hot-workflows", type=int, default=10,
                   help="workflow ids of the hot-key workload (the same number of events)")
    p.add_argument("--no-hot", dest="hot", action="store_false",
                   help="skip the hot-key workload (direct and with --rtt-ms)")
    p.add_argument("--rtt-ms", type=float, default=20.0,
                   help="added per round trip to Temporal on the second hot-key run")
    p.add_argument("--coalesce", choices=("default", "on", "off"), default="default",
                   help="the loom route's coalesce (default: on, its workflow is a LoomWorkflow)")
    p.add_argument("--latency-events", type=int, default=None,
                   help="paced events for the loom's latency (default: events / 10)")
    p.add_argument("--rounds", type=int, default=2,
                   help="rounds of ceiling/naive/loom, in alternating order (figures: means)")
    p.add_argument("--backlog-events", type=int, default=30_000,
                   help="events of each backlog path without coalescing (by name, update-with-start)")
    p.add_argument("--no-backlog", dest="backlog", action="store_false",
                   help="skip the backlog paths without coalescing")
    p.add_argument("--no-probe", dest="probe", action="store_false",
                   help="skip the batched-call limit (ratio_limit)")
    p.add_argument("--probe-batch", type=int, default=64, help="events per call of the probe")
    p.add_argument("--growth", action="store_true",
                   help="only the growth table: routes 1/100/10k, ids 10/500/50k, payload "
                        "200 B/4 KiB/64 KiB (a few minutes)")
    p.add_argument("--growth-events", type=int, default=3_000, help="events per growth cell")
    p.add_argument("--soak", action="store_true", help="200,000 events through the loom")
    p.add_argument("--soak-events", type=int, default=200_000)
    p.add_argument("--smoke", action="store_true", help="a tiny run of everything")
    p.add_argument("--map", dest="map_only", action="store_true",
                   help="only the loom, with the map's recording off and on, side by side")
    p.add_argument("--router", action="store_true",
                   help="only router.match: unbound vs bound to topics, side by side (seconds)")
    a = p.parse_args(argv)
    if a.router:
        if a.smoke:  # the harness, not the speed: no 10,000-route table to build
            return Options(router_only=True, router_rounds=5_000, router_sizes=(1, 100))
        return Options(router_only=True)
    coalesce = {"default": None, "on": True, "off": False}[a.coalesce]
    if a.smoke:
        return Options(
            events=100, naive_events=20, faststream_events=20, hot_workflows=a.hot_workflows,
            hot=a.hot, rtt_ms=a.rtt_ms, coalesce=coalesce, workflows=20, partitions=a.partitions,
            concurrency=a.concurrency, max_buffered=a.max_buffered, latency_events=20,
            soak=a.soak, soak_events=300, map_only=a.map_only,
            router_rounds=5_000, warmup_events=0, rounds=1,
            backlog=a.backlog, backlog_events=100, probe=a.probe, probe_batch=a.probe_batch,
            growth=a.growth, growth_events=50,
        )
    naive = a.naive_events if a.naive_events is not None else min(a.events, 5_000)
    return Options(
        events=a.events,
        naive_events=naive,
        faststream_events=a.faststream_events if a.faststream_events is not None else naive,
        hot_workflows=a.hot_workflows,
        hot=a.hot,
        rtt_ms=a.rtt_ms,
        coalesce=coalesce,
        workflows=a.workflows,
        partitions=a.partitions,
        concurrency=a.concurrency,
        max_buffered=a.max_buffered,
        max_uncommitted=a.max_uncommitted,
        latency_events=a.latency_events if a.latency_events is not None else max(1, a.events // 10),
        soak=a.soak,
        soak_events=a.soak_events,
        rounds=a.rounds,
        map_only=a.map_only,
        backlog=a.backlog,
        backlog_events=a.backlog_events,
        probe=a.probe,
        probe_batch=a.probe_batch,
        growth=a.growth,
        growth_events=a.growth_events,
    )


if __name__ == "__main__":
    main(parse())

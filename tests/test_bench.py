"""Smoke of ``python -m bench --smoke``: the harness runs end to end. Never about speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
KEYS = {
    "loom_eps", "ceiling_eps", "naive_eps", "ratio_ceiling", "ratio_naive", "p99_ms",
    "cpu_us_per_event", "rss_mb", "router_mps_10k", "router_bound_mps_10k",
    "ratio_router_bound_10k", "faststream_eps", "ratio_faststream",
    "hot_loom_eps", "hot_ceiling_eps", "hot_ratio_ceiling", "hot_rtt20_ratio_ceiling",
    "batch_events", "probe_eps", "ratio_limit", "lag_p99_ms",
    "byname_loom_eps", "byname_ratio_ceiling", "byname_lag_p99_ms", "byname_rss_mb",
    "byname_rss_bound_mb", "uws_loom_eps", "uws_ratio_ceiling", "uws_lag_p99_ms", "uws_rss_mb",
    "uws_rss_bound_mb",
}


HOT = {"hot_loom_eps", "hot_ceiling_eps", "hot_ratio_ceiling", "hot_rtt20_ratio_ceiling"}


def _smoke(*flags: str) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", *flags],
        cwd=ROOT, capture_output=True, text=True, timeout=240, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "router.match" in proc.stdout  # the tables were printed too
    summary: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return summary


def _check(summary: dict[str, object], paths: dict[str, int]) -> None:
    batches: dict[str, dict[str, float]] = summary["batch_events"]  # type: ignore[assignment]
    # Every event of the loom's paths rode in some call, whatever the batches.
    assert {mode: dist["events"] for mode, dist in batches.items()} == paths
    # Neither backlog path without LoomWorkflow coalesces: one call per event.
    assert batches["byname"]["calls"] == 100
    assert batches["uws"]["calls"] == 100
    assert_rounded_ratio(
        float(summary["ratio_limit"]),  # type: ignore[arg-type]
        float(summary["loom_eps"]), float(summary["probe_eps"]), step=0.1,  # type: ignore[arg-type]
    )


def assert_rounded_ratio(ratio: float, num: float, den: float, *, step: float) -> None:
    """``ratio`` is the bench's ``round(n / d, 3)``, where the JSON holds n and d rounded to ``step``.

    Both roundings move the figures: n and d by up to half a step each, the ratio by up to half of
    its last place. So ``ratio`` lies within half a thousandth of some n / d with n and d in their
    half-step intervals around ``num`` and ``den``.
    """
    half = step / 2
    low = (num - half) / (den + half) - 0.0005
    high = (num + half) / (den - half) + 0.0005
    assert low - 1e-12 <= ratio <= high + 1e-12, (ratio, num, den, low, high)


def test_the_ratio_check_allows_for_both_roundings_and_nothing_more() -> None:
    # CI's figures, stop 28: 98.4 / 2623.5 is 0.0375071, yet the bench's unrounded ratio rounded
    # to 0.037 (the unrounded loom figure was a little under 98.4).
    assert_rounded_ratio(0.037, 98.4, 2623.5, step=0.1)
    assert_rounded_ratio(0.038, 98.4, 2623.5, step=0.1)
    for wrong in (0.036, 0.039, 0.37):
        with pytest.raises(AssertionError):
            assert_rounded_ratio(wrong, 98.4, 2623.5, step=0.1)
    # The router's rates are whole numbers.
    assert_rounded_ratio(0.667, 200_000, 300_000, step=1)
    with pytest.raises(AssertionError):
        assert_rounded_ratio(0.6, 200_000, 300_000, step=1)


@pytest.mark.kafka
@pytest.mark.temporal
def test_smoke_run_prints_the_summary_as_the_last_json_line() -> None:
    """Every path but the hot-key ones (a minute or more: they run under -m slow)."""
    summary = _smoke("--no-hot")
    assert summary.keys() >= KEYS - HOT
    _check(summary, {"loom": 120, "byname": 100, "uws": 100})


@pytest.mark.kafka
@pytest.mark.temporal
@pytest.mark.slow
def test_smoke_run_with_the_hot_key_paths() -> None:
    summary = _smoke()
    assert summary.keys() >= KEYS
    _check(summary, {"loom": 120, "hot": 100, "hot_rtt20": 100, "byname": 100, "uws": 100})


def test_router_only_run_measures_the_series_side_by_side() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--router", "--smoke"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    for size in (1, 100):
        for series in ("exact", "topic", "bound"):
            assert summary[f"{series}_routes_{size}"] > 0
        assert_rounded_ratio(
            summary[f"ratio_bound_{size}"], summary[f"bound_routes_{size}"],
            summary[f"exact_routes_{size}"], step=1,
        )


def test_growth_cells_move_one_dimension_at_a_time() -> None:
    from bench.__main__ import parse
    from bench.growth import CELLS, MAX_CELL_BYTES, cell_events

    base = CELLS[0][1:]
    for _, *dims in CELLS[1:]:
        assert sum(a != b for a, b in zip(dims, base, strict=True)) == 1
    assert {c[1] for c in CELLS} == {1, 100, 10_000}
    assert {c[2] for c in CELLS} == {10, 500, 50_000}
    assert {c[3] for c in CELLS} == {200, 4096, 65536}
    assert cell_events(3_000, 200) == 3_000
    assert cell_events(3_000, 65536) * 65536 <= MAX_CELL_BYTES
    opts = parse(["--growth", "--growth-events", "2000"])
    assert opts.growth and opts.growth_events == 2_000

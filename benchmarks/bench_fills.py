"""Benchmark the fill kernels on synthetic ticks made here with numpy.

Prints the compile time, the labels throughput (label evaluations per second through
``labels.build_labels``) and the speed of the one-minute bar walk against the plain tick
scan on the same trades. Not part of the test suite.

Run from the repository root:
``PYTHONPATH=. python benchmarks/bench_fills.py [--ticks 15000000] [--trades 20000]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from numba import njit

from fxresearch import _fill_kernels as kernels
from fxresearch import fills, labels
from fxresearch.config import Config
from fxresearch.instruments import get_instrument
from fxresearch.timeutil import NS_PER_MINUTE, datetime_to_ns

EURUSD = get_instrument("EURUSD")


def synthetic_ticks(n_ticks: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return EURUSD-like ticks, about 20 per minute with a standard deviation of 8 pips per hour."""
    rng = np.random.default_rng(seed)
    gaps_ns = rng.exponential(3e9, size=n_ticks).astype(np.int64)
    elapsed_ns = np.cumsum(gaps_ns)

    # Fold elapsed trading time onto weeks open from Sunday 22:00 to Friday 21:00 UTC, so
    # there are weekend closes but no data holes.
    week_open_ns = (4 * 24 + 23) * 60 * NS_PER_MINUTE
    week_ns = 7 * 24 * 60 * NS_PER_MINUTE
    start_ns = int(datetime_to_ns(["2023-12-31 22:00:00"])[0])
    timestamp_ns = start_ns + (elapsed_ns // week_open_ns) * week_ns + elapsed_ns % week_open_ns

    bid_pts = 110_000 + np.cumsum(np.rint(rng.normal(0, 2.2, size=n_ticks))).astype(np.int64)
    spread_pts = rng.integers(1, 15, size=n_ticks)
    return timestamp_ns, bid_pts * 1e-5, (bid_pts + spread_pts) * 1e-5


@njit(cache=True)
def _run_ticks_nb(timestamp_ns, bid_pts, ask_pts, hole_after, entries, side, stop_points,
                  target_points, horizon_ns):
    total = 0
    for entry in entries:
        entry_pts = ask_pts[entry] if side > 0 else bid_pts[entry]
        exit_idx, _, _ = kernels.find_exit_ticks_nb(
            timestamp_ns, bid_pts, ask_pts, hole_after, entry, side, entry_pts - side * stop_points,
            entry_pts + side * target_points, timestamp_ns[entry] + horizon_ns, len(timestamp_ns),
        )
        total += exit_idx
    return total


@njit(cache=True)
def _run_bars_nb(timestamp_ns, bid_pts, ask_pts, hole_after, bar_first, bar_last,
                 bar_bid_low_pts, bar_bid_high_pts, bar_ask_low_pts, bar_ask_high_pts,
                 bar_has_hole, bar_end_ns, entries, side, stop_points, target_points, horizon_ns):
    total = 0
    for entry in entries:
        entry_pts = ask_pts[entry] if side > 0 else bid_pts[entry]
        exit_idx, _, _ = kernels.find_exit_bars_nb(
            timestamp_ns, bid_pts, ask_pts, hole_after, entry, side, entry_pts - side * stop_points,
            entry_pts + side * target_points, timestamp_ns[entry] + horizon_ns, len(timestamp_ns),
            bar_first, bar_last, bar_bid_low_pts, bar_bid_high_pts, bar_ask_low_pts,
            bar_ask_high_pts, bar_has_hole, bar_end_ns,
        )
        total += exit_idx
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=15_000_000, help="number of synthetic ticks")
    parser.add_argument("--trades", type=int, default=20_000, help="trades for the scan comparison")
    args = parser.parse_args()

    started = time.perf_counter()
    timestamp_ns, bid, ask = synthetic_ticks(args.ticks)
    print(f"ticks: {len(timestamp_ns):,} over {(timestamp_ns[-1] - timestamp_ns[0]) / 86400e9:.1f} days, "
          f"made in {time.perf_counter() - started:.1f} s")

    # Compile (or load from cache) on a tiny input so the timings below exclude it.
    started = time.perf_counter()
    small = fills.prepare_tick_arrays(timestamp_ns[:5000], bid[:5000], ask[:5000], EURUSD, 30.0)
    small_entries = np.arange(0, 4000, 100, dtype=np.int64)
    kernels.label_many_nb(*small.tick_args(), *small.bar_args(), small_entries, 1, 100, 100, NS_PER_MINUTE)
    _run_ticks_nb(*small.tick_args(), small_entries, 1, 100, 100, NS_PER_MINUTE)
    _run_bars_nb(*small.tick_args(), *small.bar_args(), small_entries, 1, 100, 100, NS_PER_MINUTE)
    print(f"compile or cache load: {time.perf_counter() - started:.2f} s")

    started = time.perf_counter()
    arrays = fills.prepare_tick_arrays(timestamp_ns, bid, ask, EURUSD, 30.0)
    print(f"prepare_tick_arrays: {time.perf_counter() - started:.2f} s, {len(arrays.bar_first):,} minute bars, "
          f"{int(arrays.hole_after.sum())} data holes")

    config = Config()
    timeframe_ns = 5 * NS_PER_MINUTE
    bars = pd.DataFrame({"timestamp": np.unique(timestamp_ns // timeframe_ns) * timeframe_ns})
    started = time.perf_counter()
    table = labels.build_labels(timestamp_ns, bid, ask, bars, 5, config, EURUSD, arrays=arrays)
    elapsed = time.perf_counter() - started
    print(f"labels M5: {len(table):,} label evaluations in {elapsed:.2f} s = {len(table) / elapsed:,.0f} per s "
          f"(grid {config.labels.grid}, both sides)")

    rng = np.random.default_rng(2)
    entries = np.sort(rng.integers(0, len(timestamp_ns) - 1, size=args.trades)).astype(np.int64)
    for stop_points, target_points, horizon_min in ((100, 100, 60), (200, 400, 1440)):
        horizon_ns = horizon_min * NS_PER_MINUTE
        started = time.perf_counter()
        ticks_total = _run_ticks_nb(*arrays.tick_args(), entries, 1, stop_points, target_points, horizon_ns)
        ticks_s = time.perf_counter() - started
        started = time.perf_counter()
        bars_total = _run_bars_nb(*arrays.tick_args(), *arrays.bar_args(), entries, 1, stop_points,
                                  target_points, horizon_ns)
        bars_s = time.perf_counter() - started
        if ticks_total != bars_total:
            raise RuntimeError("bar walk and tick scan disagree; run tests/test_fills.py")
        print(f"{args.trades:,} longs, stop {stop_points / 10:g} / target {target_points / 10:g} pips, "
              f"horizon {horizon_min} min: tick scan {ticks_s:.3f} s, bar walk {bars_s:.3f} s, "
              f"ratio {ticks_s / bars_s:.1f}x")


if __name__ == "__main__":
    main()

"""Measure bar building throughput against pandas ``resample(...).ohlc()``.

Synthetic ticks: a bid random walk in steps of one point (0.00001) with a spread of 0 to 3
pips, arriving at irregular times (exponential gaps whose mean rises and falls in a cycle of
about a day, a two-day close after every five days). Run from the repository root::

    python benchmarks/bench_bars.py                  # 15 million ticks, M1 and M5
    python benchmarks/bench_bars.py --fresh-compile  # time a full compile, not a cache load

For each timeframe the script prints ticks per second for ``build_bars`` (validation,
kernel and DataFrame) and for the kernel alone, the best of ``--repeat`` runs, and the same
for pandas resampling bid and ask. The ratio is pandas time over ``build_bars`` time. Pandas
also emits a row for every empty bin, which build_bars skips. Both produce bid and ask OHLC.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

NS_PER_SECOND = 1_000_000_000
NS_PER_DAY = 86_400 * NS_PER_SECOND


def make_ticks(n_ticks: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return sorted int64 ns timestamps and bid/ask random-walk prices."""
    rng = np.random.default_rng(seed)

    # The mean gap between ticks swings between 0.1 s and 1 s in a cycle of 200,000 ticks
    # (about 1.3 days), as activity rises and falls across sessions.
    phase = np.linspace(0.0, 2 * np.pi * n_ticks / 200_000, n_ticks)
    mean_gap_ns = (0.55 + 0.45 * np.sin(phase)) * NS_PER_SECOND
    gap_ns = rng.exponential(1.0, n_ticks) * mean_gap_ns
    timestamp_ns = np.datetime64("2024-01-01T22:00", "ns").astype(np.int64) + np.cumsum(gap_ns.astype(np.int64))

    # Every fifth day closes for two days, as a weekend would.
    start_ns = timestamp_ns[0]
    weekend_count = (timestamp_ns - start_ns) // (5 * NS_PER_DAY)
    timestamp_ns += weekend_count * 2 * NS_PER_DAY

    bid = 1.1 + np.cumsum(rng.integers(-1, 2, n_ticks)) * 0.00001
    ask = bid + rng.integers(0, 31, n_ticks) * 0.00001
    return timestamp_ns, bid, ask


def best_time(function, repeat: int) -> float:
    """Return the shortest wall-clock time of ``repeat`` calls, in seconds."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=15_000_000, help="number of synthetic ticks")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement, of which the fastest counts")
    parser.add_argument("--seed", type=int, default=7, help="random seed for the ticks")
    parser.add_argument("--fresh-compile", action="store_true",
                        help="compile into an empty numba cache folder instead of loading the cache")
    args = parser.parse_args()

    # NUMBA_CACHE_DIR is read when numba is first imported, so it is set before the imports.
    if args.fresh_compile:
        cache_dir = tempfile.mkdtemp(prefix="bench_bars_numba_")
        atexit.register(shutil.rmtree, cache_dir, ignore_errors=True)
        os.environ["NUMBA_CACHE_DIR"] = cache_dir
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import pandas as pd

    from fxresearch._bar_kernels import build_bars_nb, first_invalid_tick_nb
    from fxresearch.bars import build_bars, timeframe_name
    from fxresearch.timeutil import NS_PER_MINUTE

    started = time.perf_counter()
    timestamp_ns, bid, ask = make_ticks(args.ticks, args.seed)
    span_days = (timestamp_ns[-1] - timestamp_ns[0]) / NS_PER_DAY
    print(f"ticks: {len(timestamp_ns):,} over {span_days:.1f} days, made in {time.perf_counter() - started:.2f} s")

    # The first call compiles the kernels or loads them from numba's cache; later calls only run.
    started = time.perf_counter()
    build_bars(timestamp_ns[:10], bid[:10], ask[:10], 1)
    compile_s = time.perf_counter() - started
    kernels = (build_bars_nb, first_invalid_tick_nb)
    loaded = all(sum(kernel.stats.cache_hits.values()) > 0 for kernel in kernels)
    print(f"kernels {'loaded from cache' if loaded else 'compiled'} in {compile_s:.2f} s")

    index = pd.DatetimeIndex(pd.to_datetime(timestamp_ns, utc=True)).as_unit("ns")
    bid_series = pd.Series(bid, index=index)
    ask_series = pd.Series(ask, index=index)

    print(f"{'timeframe':>9} {'bars':>9} {'build_bars':>16} {'kernel only':>16} {'pandas':>16} {'ratio':>7}")
    for timeframe_min in (1, 5):
        timeframe_ns = np.int64(timeframe_min * NS_PER_MINUTE)
        n_bars = len(build_bars(timestamp_ns, bid, ask, timeframe_min))

        # Default arguments bind this iteration's timeframe into each timed call.
        build_s = best_time(lambda tf=timeframe_min: build_bars(timestamp_ns, bid, ask, tf), args.repeat)
        kernel_s = best_time(lambda tf_ns=timeframe_ns: build_bars_nb(timestamp_ns, bid, ask, tf_ns), args.repeat)
        rule = f"{timeframe_min}min"
        pandas_s = best_time(lambda r=rule: (bid_series.resample(r).ohlc(), ask_series.resample(r).ohlc()),
                             args.repeat)

        print(f"{timeframe_name(timeframe_min):>9} {n_bars:>9,} "
              f"{len(timestamp_ns) / build_s / 1e6:>9.1f} Mtick/s "
              f"{len(timestamp_ns) / kernel_s / 1e6:>9.1f} Mtick/s "
              f"{len(timestamp_ns) / pandas_s / 1e6:>9.1f} Mtick/s "
              f"{pandas_s / build_s:>6.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

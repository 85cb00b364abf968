"""Benchmark the light strategy search: tick-exact backtests over a year of ticks.

Run from the repository root (see ``benchmarks/README.md`` for the virtual environment that
has vectorbt)::

    benchmarks/.venv/bin/python benchmarks/bench_search.py
    python benchmarks/bench_search.py --skip-vectorbt --strategies 2000

Steps and what each timing covers:

1. Load the tick file with ``ticks.load_ticks`` (written by ``sample.write_benchmark_year``
   when missing), prepare the tick arrays and build five-minute bars.
2. Strategies: every parameter set of the families that need bars only (``ma_cross``,
   ``rsi_reversion``, ``zscore_reversion``, ``donchian_breakout``, ``session_breakout``)
   times stop-loss/take-profit pairs. The default pairs come first, then a fixed grid is
   appended until there are enough, and the list is cut at ``--strategies``.
3. Compile: the first call of every kernel on a small slice of the ticks, a cache load
   when numba's cache is warm.
4. Signals: ``strategies.compute_signals`` for every distinct parameter set.
5. Backtest: ``backtest.run_backtests`` with the search's horizon on ``--workers`` threads,
   then ``metrics.strategy_metrics`` timed on its own.
6. vectorbt: ``Portfolio.from_signals`` on the same five-minute mid bars and signals for
   a subset of strategies, in column chunks. It works on bars, not ticks, and has no time stop.
7. Reference: the same backtest on a subset with ``run_backtests(..., tick_scan=True)``, whose
   exits come from the plain tick scan ``find_exit_ticks_nb``, checked trade for trade
   against the engine's bar walk.

The goal checked at the end: signals, backtest and metrics for 10,000 strategies over the
year in under 120 s, and less time per strategy than vectorbt.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import resource
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil

REPO_ROOT = Path(__file__).resolve().parents[1]
# Run from a checkout without installing the package.
sys.path.insert(0, str(REPO_ROOT))

from fxresearch import _backtest_kernels, _bar_kernels  # noqa: E402
from fxresearch.backtest import TRADE_COLUMNS, run_backtests  # noqa: E402
from fxresearch.bars import build_bars  # noqa: E402
from fxresearch.base import compute_split_ns  # noqa: E402
from fxresearch.config import Config, SearchConfig  # noqa: E402
from fxresearch.fills import prepare_tick_arrays  # noqa: E402
from fxresearch.metrics import strategy_metrics  # noqa: E402
from fxresearch.sample import write_benchmark_year  # noqa: E402
from fxresearch.strategies import (  # noqa: E402
    INPUT_BARS, TEMPLATES, SignalContext, Strategy, compute_signals, generate_strategies,
)
from fxresearch.ticks import load_ticks  # noqa: E402

TIMEFRAME_MIN = 5
GOAL_STRATEGIES = 10_000
GOAL_SECONDS = 120.0
BARS_ONLY_FAMILIES = tuple(name for name, template in TEMPLATES.items() if template.requires == {INPUT_BARS})

# Appended after the search's default stop-loss/take-profit pairs when more strategies are
# requested than the defaults give: stop-loss pips times take-profit/stop-loss ratios.
EXTRA_STOP_LOSS_PIPS = (5.0, 7.5, 10.0, 12.5, 15.0, 20.0, 25.0, 30.0, 40.0, 50.0, 60.0, 75.0, 100.0)
EXTRA_TARGET_RATIOS = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks-file", type=Path, default=REPO_ROOT / "benchmarks/data/EURUSD_2025.parquet",
                        help="PAIR_YEAR.parquet tick file; a synthetic year is written there when missing")
    parser.add_argument("--strategies", type=int, default=GOAL_STRATEGIES, help="number of strategies to backtest")
    parser.add_argument("--workers", type=int, default=2, help="numba threads for the backtest and the reference")
    parser.add_argument("--vectorbt-strategies", type=int, default=1000,
                        help="strategies run through vectorbt, evenly spaced over the list")
    parser.add_argument("--vectorbt-chunk", type=int, default=500, help="strategy columns per from_signals call")
    parser.add_argument("--reference-strategies", type=int, default=200,
                        help="strategies run with the plain tick scan, evenly spaced over the list")
    parser.add_argument("--skip-vectorbt", action="store_true", help="do not run vectorbt")
    parser.add_argument("--skip-reference", action="store_true", help="do not run the plain tick scan")
    args = parser.parse_args(argv)
    for name in ("strategies", "workers", "vectorbt_strategies", "vectorbt_chunk", "reference_strategies"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    return args


# ---------------------------------------------------------------------------------------------
# Machine and memory.


def machine_summary() -> str:
    """Return cores, CPU model and RAM of this machine, read from /proc where it exists."""
    cpu_model = platform.processor() or "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    ram_gib = psutil.virtual_memory().total / 2**30
    return f"{os.cpu_count()} cores, {cpu_model}, {ram_gib:.1f} GiB RAM, Python {platform.python_version()}"


def load_summary() -> str:
    """Return the 1, 5 and 15 minute load averages as text."""
    return ", ".join(f"{load:.2f}" for load in os.getloadavg())


def max_rss_mib() -> float:
    """Return the process's peak resident memory so far (``ru_maxrss`` is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class PeakRss:
    """Sample the resident memory every 20 ms in a thread and keep the peak of one phase."""

    def __init__(self) -> None:
        self.peak_mib = 0.0
        self._process = psutil.Process()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while True:
            self.peak_mib = max(self.peak_mib, self._process.memory_info().rss / 2**20)
            if self._stop.wait(0.02):
                return

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mib = max(self.peak_mib, self._process.memory_info().rss / 2**20)


# ---------------------------------------------------------------------------------------------
# Strategies.


def sl_tp_sets_for(n_strategies: int, n_param_sets: int) -> tuple[tuple[float, float], ...]:
    """Return the default stop-loss/take-profit pairs, extended until the strategies reach ``n_strategies``."""
    sets = list(SearchConfig().sl_tp_sets)
    needed = -(-n_strategies // n_param_sets)
    extra = [(stop, stop * ratio) for stop in EXTRA_STOP_LOSS_PIPS for ratio in EXTRA_TARGET_RATIOS]
    for pair in extra:
        if len(sets) >= needed:
            break
        if pair not in sets:
            sets.append(pair)
    if len(sets) < needed:
        raise ValueError(
            f"--strategies {n_strategies} needs {needed} stop-loss/take-profit pairs per parameter set, but only "
            f"{len(sets)} are defined; lower --strategies or add values to EXTRA_STOP_LOSS_PIPS."
        )
    return tuple(sets)


def make_strategies(n_strategies: int) -> list[Strategy]:
    """Return the first ``n_strategies`` of the bars-only families' grids times the SL/TP pairs."""
    n_param_sets = sum(len(TEMPLATES[family].grid) for family in BARS_ONLY_FAMILIES)
    search = dataclasses.replace(SearchConfig(), families=BARS_ONLY_FAMILIES,
                                 sl_tp_sets=sl_tp_sets_for(n_strategies, n_param_sets))
    return generate_strategies(search, {INPUT_BARS})[:n_strategies]


def evenly_spaced(n_total: int, n_subset: int) -> np.ndarray:
    """Return ``n_subset`` strategy indices spread evenly over ``0 .. n_total - 1``."""
    return np.unique(np.linspace(0, n_total - 1, min(n_subset, n_total)).round().astype(np.int64))


# ---------------------------------------------------------------------------------------------
# vectorbt on five-minute bars.


def run_vectorbt(vbt, bars, strategies, signals_by_key, instrument, chunk_columns: int) -> tuple[float, int]:
    """Run ``Portfolio.from_signals`` on mid bars in column chunks; return (seconds, order count).

    Long entries are the +1 bars and short entries the -1 bars of the same int8 signals, and
    an opposite entry reverses the position as the engine does. Stops are fractions of each
    bar's mid close, so that they are the strategy's pip distances at the signal bar. vectorbt
    checks them against the mid open, high and low of later bars and fills at the close of
    the signal bar, with no spread and no horizon.
    """
    # Prices are (n_bars, 1) columns, because vectorbt broadcasts a 1-D array as a row.
    mid = {name: ((bars[f"bid_{name}"] + bars[f"ask_{name}"]) / 2).to_numpy(np.float64)[:, None]
           for name in ("open", "high", "low", "close")}
    pips_per_price = instrument.pip_size / mid["close"]
    started = time.perf_counter()
    n_orders = 0
    for start in range(0, len(strategies), chunk_columns):
        chunk = strategies[start:start + chunk_columns]
        signal = np.column_stack([signals_by_key[s.signal_key] for s in chunk])
        stop_pips = np.array([s.stop_loss_pips for s in chunk])
        target_pips = np.array([s.take_profit_pips for s in chunk])
        portfolio = vbt.Portfolio.from_signals(
            mid["close"], entries=signal == 1, short_entries=signal == -1,
            open=mid["open"], high=mid["high"], low=mid["low"],
            sl_stop=pips_per_price * stop_pips, tp_stop=pips_per_price * target_pips,
            upon_opposite_entry="reverse", freq=f"{TIMEFRAME_MIN}min",
        )
        n_orders += len(portfolio.order_records)
        del portfolio, signal
    return time.perf_counter() - started, n_orders


def warm_up_vectorbt(vbt) -> float:
    """Compile vectorbt's from_signals kernels on 100 bars and two columns; return seconds."""
    started = time.perf_counter()
    close = 1.1 + np.cumsum(np.random.default_rng(0).normal(0, 1e-4, 100))[:, None]
    entries = np.zeros((100, 2), dtype=bool)
    entries[10, :] = True
    short_entries = np.zeros((100, 2), dtype=bool)
    short_entries[50, :] = True
    vbt.Portfolio.from_signals(close, entries=entries, short_entries=short_entries, open=close, high=close + 1e-4,
                               low=close - 1e-4, sl_stop=np.full((100, 2), 1e-3), tp_stop=np.full((100, 2), 1e-3),
                               upon_opposite_entry="reverse", freq=f"{TIMEFRAME_MIN}min")
    return time.perf_counter() - started


# ---------------------------------------------------------------------------------------------
# Main.


def warm_up_engine(
    ticks, instrument, max_gap_minutes: float, horizon_minutes: float, workers: int,
) -> tuple[float, bool]:
    """Run every timed kernel once on the first 50,000 ticks; return (seconds, all loaded from cache)."""
    started = time.perf_counter()
    n = min(50_000, len(ticks.timestamp_ns))
    arrays = prepare_tick_arrays(ticks.timestamp_ns[:n], ticks.bid[:n], ticks.ask[:n], instrument, max_gap_minutes)
    bars = build_bars(arrays.timestamp_ns, ticks.bid[:n], ticks.ask[:n], TIMEFRAME_MIN)
    strategies = make_strategies(len(BARS_ONLY_FAMILIES))[:1]
    context = SignalContext(bars=bars, timeframe_min=TIMEFRAME_MIN, instrument=instrument)
    signals = {s.signal_key: compute_signals(s.family, s.params, context) for s in strategies}
    run_backtests(arrays, bars, TIMEFRAME_MIN, strategies, signals, instrument, horizon_minutes, workers=workers)
    run_backtests(arrays, bars, TIMEFRAME_MIN, strategies, signals, instrument, horizon_minutes, workers=workers,
                  tick_scan=True)
    kernels = (_backtest_kernels.run_strategies_nb, _bar_kernels.build_bars_nb)
    from_cache = all(sum(kernel.stats.cache_hits.values()) > 0 for kernel in kernels)
    return time.perf_counter() - started, from_cache


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = Config()
    horizon_minutes = config.search.horizon_minutes
    print(f"machine: {machine_summary()}")
    load_at_start = load_summary()

    if not args.ticks_file.is_file():
        print(f"{args.ticks_file} not found; writing a synthetic year there")
        write_benchmark_year(args.ticks_file)

    # 1. Ticks, tick arrays and bars. They are outside the goal, because the search reads them from generate-base.
    started = time.perf_counter()
    ticks = load_ticks(args.ticks_file, config)
    instrument = ticks.instrument
    arrays = prepare_tick_arrays(ticks.timestamp_ns, ticks.bid, ticks.ask, instrument, config.fills.max_gap_minutes)
    bars = build_bars(ticks.timestamp_ns, ticks.bid, ticks.ask, TIMEFRAME_MIN)
    split_ns, _ = compute_split_ns(ticks.timestamp_ns, config.split.train_fraction)
    load_s = time.perf_counter() - started
    n_ticks = len(ticks.timestamp_ns)
    print(f"ticks: {n_ticks:,} {ticks.symbol} ({'synthetic' if ticks.synthetic else 'market'}), "
          f"{len(bars):,} bars of {TIMEFRAME_MIN} min; load, tick arrays and bars {load_s:.1f} s")

    # 2. Strategies.
    strategies = make_strategies(args.strategies)
    n_strategies = len(strategies)
    families = sorted({s.family for s in strategies})
    print(f"strategies: {n_strategies:,} of families {', '.join(families)}; "
          f"{len({s.signal_key for s in strategies})} signal sets, horizon {horizon_minutes:g} min")

    # 3. Compile, or load the compiled kernels from numba's cache.
    compile_s, from_cache = warm_up_engine(ticks, instrument, config.fills.max_gap_minutes, horizon_minutes,
                                           args.workers)
    print(f"compile: {compile_s:.2f} s ({'loaded from cache' if from_cache else 'compiled, at least in part'})")

    # 4. Signals, 5. backtest and metrics.
    context = SignalContext(bars=bars, timeframe_min=TIMEFRAME_MIN, instrument=instrument)
    started = time.perf_counter()
    signals_by_key = {s.signal_key: compute_signals(s.family, s.params, context) for s in strategies}
    signals_s = time.perf_counter() - started
    n_signals = sum(int(np.count_nonzero(signal)) for signal in signals_by_key.values())
    print(f"signals: {signals_s:.2f} s for {len(signals_by_key)} sets, {n_signals:,} signal bars")

    with PeakRss() as backtest_rss:
        started = time.perf_counter()
        trades = run_backtests(arrays, bars, TIMEFRAME_MIN, strategies, signals_by_key, instrument,
                               horizon_minutes, workers=args.workers)
        backtest_s = time.perf_counter() - started
    backtests_per_s = n_strategies / backtest_s
    ticks_per_s = n_strategies * n_ticks / backtest_s
    print(f"backtest: {backtest_s:.2f} s with {args.workers} workers, {len(trades):,} trades, "
          f"{backtests_per_s:,.0f} backtests/s, {ticks_per_s:.3g} ticks covered/s, "
          f"peak RSS in the phase {backtest_rss.peak_mib:,.0f} MiB")

    started = time.perf_counter()
    strategy_metrics(trades, n_strategies, split_ns, ticks.timestamp_ns)
    metrics_s = time.perf_counter() - started
    print(f"metrics: {metrics_s:.2f} s")
    search_s = signals_s + backtest_s + metrics_s
    engine_peak_mib = max_rss_mib()

    def time_engine(subset: np.ndarray, workers: int) -> float:
        """Return the seconds per strategy of ``run_backtests`` on the strategies ``subset``."""
        started = time.perf_counter()
        run_backtests(arrays, bars, TIMEFRAME_MIN, [strategies[i] for i in subset], signals_by_key, instrument,
                      horizon_minutes, workers=workers)
        return (time.perf_counter() - started) / len(subset)

    # 6. vectorbt on a subset; ours is timed again on the same subset, since families differ in
    # signal counts. vectorbt runs on one thread, so ours is also timed on one.
    vectorbt_line = "not run (--skip-vectorbt)"
    vectorbt_ratio = None
    if not args.skip_vectorbt:
        try:
            import vectorbt as vbt
        except ImportError as error:
            vectorbt_line = f"not run: cannot import vectorbt ({error}); see benchmarks/README.md"
        else:
            vbt_compile_s = warm_up_vectorbt(vbt)
            subset = evenly_spaced(n_strategies, args.vectorbt_strategies)
            with PeakRss() as vectorbt_rss:
                vectorbt_s, n_orders = run_vectorbt(vbt, bars, [strategies[i] for i in subset], signals_by_key,
                                                    instrument, args.vectorbt_chunk)
            vectorbt_per_strategy = vectorbt_s / len(subset)
            ours_per_strategy = time_engine(subset, args.workers)
            ours_one_thread = time_engine(subset, 1)
            vectorbt_ratio = ours_per_strategy / vectorbt_per_strategy
            print(f"vectorbt {vbt.__version__}: compile {vbt_compile_s:.1f} s; {len(subset):,} of {n_strategies:,} "
                  f"strategies in chunks of {args.vectorbt_chunk} columns: {vectorbt_s:.2f} s, {n_orders:,} orders, "
                  f"peak RSS in the phase {vectorbt_rss.peak_mib:,.0f} MiB; scaled to all {n_strategies:,}: "
                  f"{vectorbt_per_strategy * n_strategies:.0f} s")
            print(f"per strategy on that subset: vectorbt {vectorbt_per_strategy * 1e3:.2f} ms (1 thread), "
                  f"ours {ours_per_strategy * 1e3:.2f} ms ({args.workers} workers), "
                  f"{ours_one_thread * 1e3:.2f} ms (1 worker)")
            vectorbt_line = (f"{vectorbt_per_strategy * 1e3:.2f} ms/strategy on {len(subset):,} strategies; "
                             f"ours/vectorbt = {vectorbt_ratio:.2f} with {args.workers} workers, "
                             f"{ours_one_thread / vectorbt_per_strategy:.2f} with 1")

    # 7. Plain tick scan on a subset, checked against the engine's trades.
    reference_line = "not run (--skip-reference)"
    if not args.skip_reference:
        subset = evenly_spaced(n_strategies, args.reference_strategies)
        chosen = [strategies[i] for i in subset]
        started = time.perf_counter()
        reference = run_backtests(arrays, bars, TIMEFRAME_MIN, chosen, signals_by_key, instrument, horizon_minutes,
                                  workers=args.workers, tick_scan=True)
        reference_per_strategy = (time.perf_counter() - started) / len(subset)
        ours_per_strategy = time_engine(subset, args.workers)
        engine = run_backtests(arrays, bars, TIMEFRAME_MIN, chosen, signals_by_key, instrument, horizon_minutes,
                               workers=args.workers)
        agree = all(np.array_equal(getattr(engine, name), getattr(reference, name)) for name in TRADE_COLUMNS)
        print(f"reference tick scan: {len(subset):,} strategies, {reference_per_strategy * 1e3:.2f} ms per strategy, "
              f"ours {ours_per_strategy * 1e3:.2f} ms, both on {args.workers} workers; trades "
              f"{'match' if agree else 'DIFFER FROM'} the engine's, trade for trade")
        reference_line = (f"{reference_per_strategy * 1e3:.2f} ms/strategy on {len(subset):,} strategies; "
                          f"ours/reference = {ours_per_strategy / reference_per_strategy:.3f}; "
                          f"trades {'match' if agree else 'DIFFER'}")

    goal_time_met = n_strategies >= GOAL_STRATEGIES and search_s < GOAL_SECONDS
    goal_vectorbt_met = vectorbt_ratio is not None and vectorbt_ratio < 1.0
    print()
    print("summary")
    print(f"  machine            {machine_summary()}")
    # Other processes on the machine slow every timing; the load average shows how busy it was.
    print(f"  load average       {load_at_start} at the start, {load_summary()} at the end (1, 5, 15 min)")
    print(f"  ticks in file      {n_ticks:,} ({args.ticks_file.name})")
    print(f"  strategies         {n_strategies:,}, {args.workers} workers")
    print(f"  compile s          {compile_s:.2f} ({'cache load' if from_cache else 'compiled, at least in part'})")
    print(f"  signals s          {signals_s:.2f}")
    print(f"  backtest s         {backtest_s:.2f}")
    print(f"  metrics s          {metrics_s:.2f}")
    print(f"  backtests/s        {backtests_per_s:,.0f}")
    print(f"  ticks/s            {ticks_per_s:.3g} (strategies x ticks / backtest s)")
    print(f"  peak RSS MiB       {engine_peak_mib:,.0f} after the backtest, {max_rss_mib():,.0f} at the end")
    print(f"  vectorbt           {vectorbt_line}")
    print(f"  reference          {reference_line}")
    print(f"  goal: {GOAL_STRATEGIES:,} in < {GOAL_SECONDS:.0f} s  "
          f"{'met' if goal_time_met else 'NOT met'} (signals + backtest + metrics = {search_s:.1f} s)")
    print(f"  goal: faster than vectorbt  "
          f"{'met' if goal_vectorbt_met else ('not measured' if vectorbt_ratio is None else 'NOT met')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

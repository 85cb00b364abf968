"""The search-light job: many rule-based strategies backtested on one pair's ticks.

Flow: research base (built first when not current) -> strategies (templates x parameter
grids x SL/TP sets) -> per-bar signals -> the fill kernel over ticks -> trades -> metrics
in-sample and out-of-sample -> ``PAIR_YEAR_backtest_results.parquet`` and the trades of the
top strategies in ``PAIR_YEAR_top_trades.parquet``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fxresearch import artifacts
from fxresearch.base import PairContext, base_is_current, open_pair, run_base_stages
from fxresearch.config import Config, section_hash

logger = logging.getLogger(__name__)

RESULTS_STAGE = "backtest_results"
RESULTS_DEPENDS = ("bars", "features", "labels", "patterns", "regimes", "split")


def _results_spec(config: Config) -> str:
    return section_hash(config.search, config.fills, config.costs, config.account)


def search_light(parquet_path: str | Path, output_dir: str | Path, config: Config,
                 force_rerun: bool = False, workers: int = 1) -> dict[str, Any]:
    """Run the strategy search for one pair and return a summary.

    The research base is built first when it is missing or out of date (``force_rerun``
    rebuilds only the search results, not the base). A current result is reused unless
    ``force_rerun`` is given.
    """
    started = time.perf_counter()
    built_base = False
    if not base_is_current(parquet_path, output_dir, config):
        logger.warning("%s: no current research base; building it first", Path(parquet_path).name)
        ctx = open_pair(parquet_path, output_dir, config)
        run_base_stages(ctx)
        built_base = True
    ctx = open_pair(parquet_path, output_dir, config)

    config_hash = _results_spec(config)
    depends = {name: ctx.manifest.build_id(name) for name in RESULTS_DEPENDS}
    if not force_rerun and ctx.manifest.is_current(RESULTS_STAGE, ctx.fingerprint, config_hash, depends):
        entry = ctx.manifest.entry(RESULTS_STAGE)
        message = f"results reused ({entry.get('n_strategies', 0)} strategies)"
    else:
        extra = _build_results(ctx, workers)
        ctx.manifest.record(RESULTS_STAGE, extra.pop("files"), ctx.fingerprint, config_hash, depends, **extra)
        ctx.manifest.save()
        message = (f"{extra['n_strategies']} strategies, {extra['n_trades']} trades "
                   f"in {extra['seconds']:.1f}s")
    if built_base:
        message = "built base first; " + message
    seconds = time.perf_counter() - started
    logger.info("%s: search-light done in %.1fs (%s)", ctx.pair_year, seconds, message)
    return {"pair_year": ctx.pair_year, "synthetic": ctx.is_synthetic, "seconds": seconds, "message": message}


def _empty_results(metric_columns: list[str]) -> pd.DataFrame:
    columns = {name: pd.Series(dtype=dtype) for name, dtype in RESULT_ID_COLUMNS.items()}
    columns.update({name: pd.Series(dtype="float64") for name in metric_columns})
    return pd.DataFrame(columns)


RESULT_ID_COLUMNS = {
    "strategy_id": "object",
    "family": "object",
    "params": "object",
    "stop_loss_pips": "float64",
    "take_profit_pips": "float64",
    "timeframe_min": "int64",
}


def _build_results(ctx: PairContext, workers: int) -> dict[str, Any]:
    from fxresearch.backtest import run_backtests
    from fxresearch.conversion import RateSources
    from fxresearch.costs import apply_spread_markup, spread_markup_for, trade_costs_and_pnl
    from fxresearch.fills import prepare_tick_arrays
    from fxresearch.metrics import strategy_metrics
    from fxresearch.strategies import SignalContext, compute_signals, generate_strategies

    started = time.perf_counter()
    config = ctx.config
    search = config.search
    timeframe_min = search.timeframe_min
    ticks = ctx.ticks
    split_ns = ctx.split_ns()
    bars = ctx.bars(timeframe_min)
    results_path = ctx.out_dir / f"{ctx.pair_year}_backtest_results.parquet"
    trades_path = ctx.out_dir / f"{ctx.pair_year}_top_trades.parquet"
    metadata = ctx.metadata | {"timeframe_min": str(timeframe_min), "split_ns": str(split_ns)}

    # Below the minimum the results file still exists, with the right columns and no rows.
    if len(bars) < search.min_bars:
        reason = f"{len(bars)} bars of {timeframe_min} minutes is fewer than search.min_bars = {search.min_bars}"
        logger.warning("%s: no strategy search: %s", ctx.pair_year, reason)
        empty_metrics = strategy_metrics_columns()
        artifacts.write_frame(results_path, _empty_results(empty_metrics), metadata)
        artifacts.write_frame(trades_path, _empty_trades(), metadata)
        return {"files": [results_path.name, trades_path.name], "n_strategies": 0, "n_trades": 0,
                "seconds": time.perf_counter() - started, "insufficient_data": reason}

    regimes = artifacts.read_frame(ctx.out_dir / f"{ctx.pair_year}_regimes.parquet")
    patterns_doc = json.loads((ctx.out_dir / f"{ctx.pair_year}_patterns.json").read_text())
    context = SignalContext(
        bars=bars,
        timeframe_min=timeframe_min,
        instrument=ctx.instrument,
        features=ctx.features(timeframe_min),
        regimes=regimes,
        regimes_timeframe_min=config.regimes.timeframe_min,
        patterns_doc=patterns_doc,
    )
    strategies = generate_strategies(search, context.available())
    signals = {s.signal_key: compute_signals(s.family, s.params, context) for s in strategies}
    logger.info("%s: %d strategies from %d signal sets on %d bars of %d minutes",
                ctx.pair_year, len(strategies), len(signals), len(bars), timeframe_min)

    # A vendor spread tighter than a retail account's is widened before any fill is decided.
    bid, ask = ticks.bid, ticks.ask
    markup_pips = spread_markup_for(ctx.instrument.symbol, config.costs)
    if markup_pips > 0:
        bid, ask = apply_spread_markup(bid, ask, markup_pips, ctx.instrument.pip_size, ctx.instrument.point_size)
    arrays = prepare_tick_arrays(ticks.timestamp_ns, bid, ask, ctx.instrument, config.fills.max_gap_minutes)
    trades = run_backtests(arrays, bars, timeframe_min, strategies, signals, ctx.instrument,
                           search.horizon_minutes, workers=workers)

    # Slippage and swap come off the pips every metric is computed from; commission is in USD.
    trade_frame = trades.to_frame()
    costs = trade_costs_and_pnl(trade_frame, ctx.instrument, config.costs, config.account,
                                RateSources.from_folder(ctx.parquet_path.parent, config))
    net_trades = dataclasses.replace(trades, pips=costs["pips_net"].to_numpy(np.float64))
    metrics = strategy_metrics(net_trades, len(strategies), split_ns, ticks.timestamp_ns)
    usd = _usd_totals(trades, costs, len(strategies), split_ns)

    results = pd.DataFrame({
        "strategy_id": [s.strategy_id for s in strategies],
        "family": [s.family for s in strategies],
        "params": [s.params_json for s in strategies],
        "stop_loss_pips": [s.stop_loss_pips for s in strategies],
        "take_profit_pips": [s.take_profit_pips for s in strategies],
        "timeframe_min": np.full(len(strategies), timeframe_min, dtype=np.int64),
    })
    results = pd.concat([results, metrics.drop(columns=["strategy_index"]).reset_index(drop=True), usd], axis=1)
    results["pip_size"] = ctx.instrument.pip_size
    results["usd_rate_source"] = _pair_rate_source(costs)
    artifacts.write_frame(results_path, results, metadata)

    # The trades of the top strategies by in-sample total pips (out-of-sample figures are
    # shown beside them, never used to choose).
    ranked = results["total_pips_is"].fillna(-np.inf).to_numpy()
    top = np.argsort(-ranked, kind="stable")[: search.top_n_trades]
    in_top = np.isin(trades.strategy_index, top)
    top_trades = pd.concat([trade_frame[in_top].reset_index(drop=True), costs[in_top].reset_index(drop=True)], axis=1)
    top_trades.insert(0, "strategy_id", results["strategy_id"].to_numpy()[top_trades["strategy_index"].to_numpy()])
    top_trades["in_sample"] = top_trades["entry_time"].to_numpy() < split_ns
    artifacts.write_frame(trades_path, top_trades, metadata)

    seconds = time.perf_counter() - started
    return {"files": [results_path.name, trades_path.name], "n_strategies": len(strategies),
            "n_trades": int(len(trades)), "seconds": seconds, "insufficient_data": None}


def _usd_totals(trades, costs: pd.DataFrame, n_strategies: int, split_ns: int) -> pd.DataFrame:
    """Return net USD P&L per strategy and period; NaN where any trade has no USD rate."""
    columns = {}
    in_sample = trades.entry_time_ns < split_ns
    pnl = costs["pnl_usd"].to_numpy(np.float64)
    for suffix, mask in (("is", in_sample), ("oos", ~in_sample)):
        index = trades.strategy_index[mask]
        total = np.bincount(index, weights=np.nan_to_num(pnl[mask]), minlength=n_strategies)
        missing = np.bincount(index, weights=np.isnan(pnl[mask]).astype(np.float64), minlength=n_strategies)
        total[missing > 0] = np.nan
        columns[f"pnl_usd_{suffix}"] = total
    return pd.DataFrame(columns)


def _pair_rate_source(costs: pd.DataFrame) -> str:
    """Return where the pair's USD rates came from, e.g. ``quote_usd`` or ``ticks:USDJPY+fixed``."""
    sources = sorted(set(costs["usd_rate_source"].astype(str))) if len(costs) else []
    return "+".join(sources) if sources else ""


def strategy_metrics_columns() -> list[str]:
    """Return the metric column names of the results table, ``_is`` then ``_oos``."""
    from fxresearch.metrics import METRIC_NAMES

    return [f"{name}_{part}" for part in ("is", "oos") for name in METRIC_NAMES]


def _empty_trades() -> pd.DataFrame:
    from fxresearch.backtest import Trades

    empty = Trades(**{name: np.zeros(0, dtype=np.int64) for name in Trades.__dataclass_fields__})
    frame = empty.to_frame()
    frame.insert(0, "strategy_id", pd.Series(dtype="object"))
    frame["in_sample"] = pd.Series(dtype="bool")
    return frame

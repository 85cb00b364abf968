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
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fxresearch import artifacts
from fxresearch.base import PairContext, base_is_current, open_pair, run_base_stages
from fxresearch.codeversion import code_version
from fxresearch.config import Config, section_hash

if TYPE_CHECKING:
    from fxresearch.backtest import Trades

logger = logging.getLogger(__name__)

RESULTS_STAGE = "backtest_results"
RESULTS_DEPENDS = ("bars", "features", "labels", "patterns", "regimes", "split")


def _results_spec(config: Config) -> str:
    from fxresearch.user_templates import templates_fingerprint

    templates = templates_fingerprint(config.search.user_templates_dir) if config.search.user_templates_dir else ""
    return section_hash(config.search, config.fills, config.costs, config.account, config.validation, templates)


def search_light(parquet_path: str | Path, output_dir: str | Path, config: Config,
                 force_rerun: bool = False, workers: int = 1) -> dict[str, Any]:
    """Run the strategy search for one pair and return a summary.

    The research base is built first when it is missing or out of date (``force_rerun``
    rebuilds only the search results, not the base). A current result is reused unless
    ``force_rerun`` is given.
    """
    started = time.perf_counter()
    # One context for base and search, so the file is fingerprinted and its ticks loaded once.
    ctx = open_pair(parquet_path, output_dir, config)
    built_base = not base_is_current(ctx)
    if built_base:
        logger.warning("%s: no current research base; building it first", ctx.pair_year)
        run_base_stages(ctx)

    config_hash = _results_spec(config)
    depends = {name: ctx.manifest.build_id(name) for name in RESULTS_DEPENDS}
    code = code_version(RESULTS_STAGE)
    reason = "forced" if force_rerun else ctx.manifest.stale_reason(RESULTS_STAGE, ctx.fingerprint, config_hash,
                                                                    depends, code)
    if reason is None:
        entry = ctx.manifest.entry(RESULTS_STAGE) or {}
        message = f"results reused ({entry.get('n_strategies', 0)} strategies)"
    else:
        logger.info("%s: building %s (%s)", ctx.pair_year, RESULTS_STAGE, reason)
        # Saved before the rebuild, so a run killed while writing leaves the results not current.
        if ctx.manifest.forget(RESULTS_STAGE):
            ctx.manifest.save()
        extra = _build_results(ctx, workers)
        ctx.manifest.record(RESULTS_STAGE, extra.pop("files"), ctx.fingerprint, config_hash, depends, code,
                            **extra)
        ctx.manifest.save()
        message = f"{extra['n_strategies']} strategies, {extra['n_trades']} trades in {extra['seconds']:.1f}s"
        if extra.get("pbo") is not None:
            message += f", probability of backtest overfitting {extra['pbo']:.2f}"
    if built_base:
        message = "built base first; " + message
    seconds = time.perf_counter() - started
    logger.info("%s: search-light done in %.1fs (%s)", ctx.pair_year, seconds, message)
    return {"pair_year": ctx.pair_year, "synthetic": ctx.is_synthetic, "seconds": seconds, "message": message}


RESULT_ID_COLUMNS = {
    "strategy_id": "object",
    "family": "object",
    "params": "object",
    "stop_loss_pips": "float64",
    "take_profit_pips": "float64",
    "timeframe_min": "int64",
}
# Columns after the per-trade metrics: daily ratios per period, ranking, USD, pair facts.
RESULT_TAIL_COLUMNS = {
    "sortino_is": "float64", "calmar_is": "float64", "n_days_is": "int64",
    "sortino_oos": "float64", "calmar_oos": "float64", "n_days_oos": "int64",
    "score": "float64", "rank": "int64", "trial_cluster": "int64",
    "pnl_usd_is": "float64", "pnl_usd_oos": "float64",
    "label_win_rate_is": "float64", "label_coverage_is": "float64",
    "pip_size": "float64", "usd_rate_source": "object",
}
# Results are ranked by the first of these that is finite for some strategy. All are
# in-sample figures, so the holdout never decides the order.
RANKING_KEYS = ("score", "sharpe_is", "total_pips_is")


def result_columns() -> dict[str, str]:
    """Return every column of the results table, in order, with its dtype."""
    from fxresearch.metrics import METRIC_NAMES, PERIOD_SUFFIXES

    columns = dict(RESULT_ID_COLUMNS)
    for suffix in PERIOD_SUFFIXES:
        for name in METRIC_NAMES:
            columns[f"{name}{suffix}"] = "int64" if name.startswith("n_") else "float64"
    columns.update(RESULT_TAIL_COLUMNS)
    return columns


def _empty_results() -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in result_columns().items()})


def rank_results(results: pd.DataFrame, fallback_min_trades: int = 0) -> tuple[np.ndarray, dict[str, str]]:
    """Return each strategy's rank (1 is best) and how the ranking was made.

    The ranking uses the deflated Sharpe score. Where no strategy has one (fewer than 20
    in-sample days or 30 trades in a period), it falls back to the in-sample daily Sharpe
    ratio, then to in-sample total pips, and records that in the returned description. In
    the fallback, strategies with fewer than ``fallback_min_trades`` in-sample trades rank
    after all the others, so a lucky single trade does not top the table.
    """
    by = next((key for key in RANKING_KEYS if np.isfinite(results[key].to_numpy(np.float64)).any()),
              RANKING_KEYS[-1])
    keys = list(RANKING_KEYS[RANKING_KEYS.index(by):])
    frame = results[keys].copy()
    sort_keys = keys
    few_trades = ""
    if by != "score" and fallback_min_trades > 0 and "n_trades_is" in results:
        frame["_enough_trades"] = results["n_trades_is"].to_numpy() >= fallback_min_trades
        sort_keys = ["_enough_trades", *keys]
        few_trades = f"; strategies with fewer than {fallback_min_trades} in-sample trades rank after the rest"
    order = frame.sort_values(sort_keys, ascending=False, na_position="last", kind="stable").index.to_numpy()
    rank = np.empty(len(results), dtype=np.int64)
    rank[order] = np.arange(1, len(results) + 1)
    reason = "" if by == "score" else (
        "no strategy has a score: it needs 20+ in-sample days and 30+ in-sample trades" + few_trades)
    return rank, {"by": by, "then": ", ".join(keys[1:]), "reason": reason}


def _build_results(ctx: PairContext, workers: int) -> dict[str, Any]:
    from fxresearch.backtest import EntryFilter, run_backtests
    from fxresearch.conversion import RateSources
    from fxresearch.costs import apply_spread_markup, spread_markup_for, trade_costs_and_pnl
    from fxresearch.fills import DATA_GAP, END_OF_DATA, close_positions_at, prepare_tick_arrays
    from fxresearch.metrics import strategy_metrics
    from fxresearch.strategies import SignalContext, generate_strategies
    from fxresearch.user_templates import load_user_templates

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
        artifacts.write_frame(results_path, _empty_results(), metadata)
        artifacts.write_frame(trades_path, _empty_trades(), metadata)
        report_path = ctx.out_dir / f"{ctx.pair_year}_search_report.json"
        artifacts.write_json_atomic(report_path, {
            "pair_year": ctx.pair_year, "synthetic": ctx.is_synthetic, "n_strategies": 0, "n_trades": 0,
            "split_ns": split_ns, "timeframe_min": timeframe_min, "pip_size": ctx.instrument.pip_size,
            "insufficient_data": reason,
            "refit": {"enabled": bool(search.refit_per_fold), "reason": f"no strategy search: {reason}", "blocks": []},
        })
        return {"files": [results_path.name, trades_path.name, report_path.name], "n_strategies": 0,
                "n_trades": 0, "seconds": time.perf_counter() - started, "insufficient_data": reason}

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
    # User templates are loaded here, in the pair's process: their functions cannot be pickled.
    user_templates = load_user_templates(search.user_templates_dir) if search.user_templates_dir else {}
    strategies = generate_strategies(search, context.available(), user_templates)
    segments, refit_report = _refit_segments(ctx, context, strategies, user_templates)
    if segments is not None:
        context = dataclasses.replace(context, segments=segments)
    signals = _compute_signal_grid(ctx.pair_year, strategies, context, user_templates)
    logger.info("%s: %d strategies from %d signal sets on %d bars of %d minutes",
                ctx.pair_year, len(strategies), len(signals), len(bars), timeframe_min)

    # A vendor spread tighter than a retail account's is widened before any fill is decided.
    bid, ask = ticks.bid, ticks.ask
    markup_pips = spread_markup_for(ctx.instrument.symbol, config.costs)
    if markup_pips > 0:
        bid, ask = apply_spread_markup(bid, ask, markup_pips, ctx.instrument.pip_size, ctx.instrument.point_size)
    arrays = prepare_tick_arrays(ticks.timestamp_ns, bid, ask, ctx.instrument, config.fills.max_gap_minutes)

    # In-sample trades still open at the split close at the last tick before it, as at the
    # end of a file, so no in-sample figure depends on a holdout price.
    last_is_tick = int(np.searchsorted(ticks.timestamp_ns, split_ns, side="left")) - 1
    split_arrays = close_positions_at(arrays, last_is_tick) if last_is_tick >= 0 else arrays
    # NOTE: the backtest of the whole grid is one numba call, so it logs no progress while it runs.
    logger.info("%s: backtesting %d strategies on %d ticks", ctx.pair_year, len(strategies), len(ticks.timestamp_ns))
    backtest_started = time.perf_counter()
    trades = run_backtests(split_arrays, bars, timeframe_min, strategies, signals, ctx.instrument,
                           search.horizon_minutes, workers=workers, entry_filter=EntryFilter.from_search(search))
    backtest_seconds = time.perf_counter() - backtest_started
    logger.info("%s: backtested %d strategies in %.1fs (%.0f strategies/s)", ctx.pair_year, len(strategies),
                backtest_seconds, len(strategies) / max(backtest_seconds, 1e-9))
    if last_is_tick >= 0 and not arrays.hole_after[last_is_tick]:
        closed_at_split = (trades.exit_idx == last_is_tick) & (trades.reason == DATA_GAP)
        trades.reason[closed_at_split] = END_OF_DATA
    skips = trades.entry_skips.totals() if trades.entry_skips is not None else {}
    logger.info("%s: %d trades; signals skipped at entry: %s", ctx.pair_year, len(trades), skips)

    # Slippage and swap come off the pips every metric is computed from; commission is in USD.
    trade_frame = trades.to_frame()
    costs = trade_costs_and_pnl(trade_frame, ctx.instrument, config.costs, config.account,
                                RateSources.from_folder(ctx.parquet_path.parent, config))
    net_trades = dataclasses.replace(trades, pips=costs["pips_net"].to_numpy(np.float64))
    metrics = strategy_metrics(net_trades, len(strategies), split_ns, ticks.timestamp_ns,
                               stop_loss_pips=np.array([s.stop_loss_pips for s in strategies], dtype=np.float64))
    usd = _usd_totals(trades, costs, len(strategies), split_ns)
    daily, report = _validate(ctx, trades, costs, bid, ask, metrics, len(strategies))

    results = pd.DataFrame({
        "strategy_id": [s.strategy_id for s in strategies],
        "family": [s.family for s in strategies],
        "params": [s.params_json for s in strategies],
        "stop_loss_pips": [s.stop_loss_pips for s in strategies],
        "take_profit_pips": [s.take_profit_pips for s in strategies],
        "timeframe_min": np.full(len(strategies), timeframe_min, dtype=np.int64),
    })
    metrics = metrics.drop(columns=["strategy_index"]).reset_index(drop=True)
    # Sharpe from marked-to-market daily P&L replaces the trade-based figure (see _validate).
    for column in daily.columns:
        metrics[column] = daily[column].to_numpy()
    results = pd.concat([results, metrics, usd], axis=1)
    results["label_win_rate_is"], results["label_coverage_is"] = _label_meta(ctx, trades, strategies, bars)
    results["pip_size"] = ctx.instrument.pip_size
    results["usd_rate_source"] = _pair_rate_source(costs)
    results["rank"], ranking = rank_results(results, config.validation.fallback_min_trades)
    if ranking["reason"]:
        logger.warning("%s: ranked by %s: %s", ctx.pair_year, ranking["by"], ranking["reason"])
    report["ranking"] = ranking
    report["refit"] = refit_report
    results = results[list(result_columns())]
    artifacts.write_frame(results_path, results, metadata)

    # The trades of the top-ranked strategies; out-of-sample figures are shown beside the
    # rank, never used to choose. Gross pips are ``pips_gross``; ``pips_net`` is what the
    # metrics use (after slippage and swap).
    top = np.flatnonzero(results["rank"].to_numpy() <= search.top_n_trades)
    in_top = np.isin(trades.strategy_index, top)
    top_trades = pd.concat([trade_frame[in_top].drop(columns=["pips"]).reset_index(drop=True),
                            costs[in_top].reset_index(drop=True)], axis=1)
    strategy_index = top_trades["strategy_index"].to_numpy()
    top_trades.insert(0, "strategy_id", results["strategy_id"].to_numpy()[strategy_index])
    top_trades.insert(1, "rank", results["rank"].to_numpy()[strategy_index])
    top_trades["in_sample"] = top_trades["entry_time"].to_numpy() < split_ns
    artifacts.write_frame(trades_path, top_trades, metadata)

    report_path = ctx.out_dir / f"{ctx.pair_year}_search_report.json"
    report.update({"pair_year": ctx.pair_year, "synthetic": ctx.is_synthetic, "n_strategies": len(strategies),
                   "n_trades": int(len(trades)), "split_ns": split_ns, "timeframe_min": timeframe_min,
                   "pip_size": ctx.instrument.pip_size, "usd_rate_source": _pair_rate_source(costs),
                   "entry_skips": skips})
    artifacts.write_json_atomic(report_path, report)

    seconds = time.perf_counter() - started
    return {"files": [results_path.name, trades_path.name, report_path.name], "n_strategies": len(strategies),
            "n_trades": int(len(trades)), "seconds": seconds, "insufficient_data": None,
            "pbo": report["pbo"]["value"], "effective_trials": report["effective_trials"], "entry_skips": skips}


def _refit_segments(ctx: PairContext, context: Any, strategies: list[Any],
                    user_templates: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Return the signal segments with per-block patterns and regimes, and the ``refit`` report section.

    With ``search.refit_per_fold`` (the default), the families that read patterns or regimes
    take them, for each in-sample bar, from a fit on data before the bar's walk-forward test
    block (``fxresearch.refit``). Bars before the first block, and every in-sample bar when no
    block fits, get no signal from those families. Holdout bars use the research base's
    patterns and regimes. With the switch off (segments None), every bar uses the research
    base's, chosen on the whole training part, so those families' in-sample figures are
    measured on the data that chose their patterns and regimes.
    """
    from fxresearch.bars import timeframe_name
    from fxresearch.base import feature_timeframes, label_timeframes
    from fxresearch.refit import disabled_report, in_sample_day_numbers, refit_per_block
    from fxresearch.strategies import INPUT_PATTERNS, INPUT_REGIMES, TEMPLATES

    config = ctx.config
    templates = {**TEMPLATES, **user_templates}
    families = sorted({s.family for s in strategies
                       if templates[s.family].requires & {INPUT_PATTERNS, INPUT_REGIMES}})
    if not config.search.refit_per_fold:
        logger.warning("%s: search.refit_per_fold is false: in-sample signals of %s use patterns and regimes "
                       "chosen on the whole training part", ctx.pair_year, ", ".join(families) or "no family")
        report = disabled_report("search.refit_per_fold is false, so in-sample signals of pattern and regime "
                                 "families use patterns and regimes chosen on the whole training part, the "
                                 "same data their in-sample figures are measured on (look-ahead)")
        report["families"] = families
        return None, report
    if not families:
        report = disabled_report("no strategy family of this search reads patterns or regimes")
        report["families"] = []
        return None, report

    # Every labelled timeframe with features is mined, as in the patterns stage, so the
    # false-discovery correction of each block covers the same conditions.
    with_features = set(feature_timeframes(config))
    labels: dict[int, Any] = {}
    for timeframe_min in label_timeframes(config):
        path = ctx.out_dir / "labels" / f"{timeframe_name(timeframe_min)}.parquet"
        if timeframe_min in with_features and path.exists():
            labels[timeframe_min] = path
    features = {timeframe_min: ctx.features(timeframe_min) for timeframe_min in labels}
    regime_features = ctx.features(config.regimes.timeframe_min)
    split_ns = ctx.split_ns()
    result = refit_per_block(features, labels, regime_features, in_sample_day_numbers(ctx.ticks.timestamp_ns, split_ns),
                             split_ns, config, ctx.instrument.pip_size, context.patterns_doc, context.regimes,
                             pair_year=ctx.pair_year)
    report = dict(result.report)
    report["families"] = families
    return result.segments, report


# A grid stage logs its progress at most this often, and at least at every tenth of its work.
PROGRESS_SECONDS = 30.0


def _compute_signal_grid(pair_year: str, strategies: list, context: Any,
                         user_templates: dict) -> dict[tuple[str, str], np.ndarray]:
    """Compute each distinct signal array of the grid once, logging percent done and rate.

    SL/TP variants of one family and parameter set share a signal key, so the work is one
    ``compute_signals`` call per key. A progress line goes to the log at each tenth of the
    keys, or after ``PROGRESS_SECONDS`` without one, whichever comes first.
    """
    from fxresearch.strategies import compute_signals

    keys: dict[tuple[str, str], Any] = {}
    for strategy in strategies:
        keys.setdefault(strategy.signal_key, strategy)
    total = len(keys)
    started = last_logged = time.perf_counter()
    next_tenth = 1
    signals: dict[tuple[str, str], np.ndarray] = {}
    for done, (key, strategy) in enumerate(keys.items(), start=1):
        signals[key] = compute_signals(strategy.family, strategy.params, context, user_templates)

        now = time.perf_counter()
        if done * 10 >= next_tenth * total or now - last_logged >= PROGRESS_SECONDS:
            elapsed = now - started
            logger.info("%s: signals %d of %d (%.0f%%) in %.1fs, %.1f signal sets/s", pair_year, done, total,
                        100.0 * done / total, elapsed, done / max(elapsed, 1e-9))
            last_logged = now
            next_tenth = done * 10 // total + 1
    return signals


def _validate(ctx: PairContext, trades: Trades, costs: pd.DataFrame, bid: np.ndarray, ask: np.ndarray,
              metrics: pd.DataFrame, n_strategies: int) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Compute daily ratios, the ranking score, walk-forward folds and PBO for one pair.

    Daily P&L in pips is marked to market at each trading day's last tick (longs at the bid,
    shorts at the ask) from fills after slippage, so open positions count on the day they
    move. Swap and commission are left out of the daily series. The pair's holdout (from its
    split on) is the lockbox: the score, the walk-forward folds and PBO use in-sample days
    only, and the holdout appears only in the ``_oos`` columns.

    The periods follow the same rule as the trade metrics: a trade belongs to the period of
    its entry. The in-sample series contains the trades entered before the split, over the
    days up to the one with the last tick before the split (those trades are closed by then).
    The holdout series contains the trades entered at or after the split, from the day of the
    split on. When the split falls inside a trading day, that day is a column of both series,
    each with its own trades.
    """
    from fxresearch.daily import calmar, daily_pnl_matrix, day_end_marks, sharpe_daily, sortino_daily
    from fxresearch.timeutil import trading_day_ns
    from fxresearch.validation import (
        cluster_sharpe_variance, effective_number_of_trials, horizon_days, probability_of_backtest_overfitting,
        score_column, walk_forward_folds, walk_forward_select,
    )

    validation = ctx.config.validation
    ticks = ctx.ticks
    day_numbers, close_ns, close_bid, close_ask = day_end_marks(ticks.timestamp_ns, bid, ask)
    entry_net = costs["entry_price_net"].to_numpy(np.float64)
    exit_net = costs["exit_price_net"].to_numpy(np.float64)

    def matrix_of(mask: np.ndarray) -> np.ndarray:
        return daily_pnl_matrix(
            trades.strategy_index[mask], trades.entry_time_ns[mask], trades.exit_time_ns[mask],
            entry_net[mask], exit_net[mask], trades.side[mask], ctx.instrument.pip_size,
            close_ns, (close_bid + close_ask) / 2.0, day_close_bid=close_bid, day_close_ask=close_ask,
            n_strategies=n_strategies,
        )

    split_ns = ctx.split_ns()
    split_index = int(np.searchsorted(ticks.timestamp_ns, split_ns, side="left"))
    boundary_days = trading_day_ns(ticks.timestamp_ns[[max(split_index - 1, 0), split_index]])
    last_is_column = int(np.searchsorted(day_numbers, boundary_days[0]))
    first_oos_column = int(np.searchsorted(day_numbers, boundary_days[1]))
    entered_is = trades.entry_time_ns < split_ns

    # In-sample trades were closed at the last tick before the split, so their P&L ends on
    # the last in-sample day.
    daily_is = matrix_of(entered_is)[:, : last_is_column + 1]
    daily_oos = matrix_of(~entered_is)[:, first_oos_column:]

    columns: dict[str, np.ndarray] = {}
    for suffix, rows in (("is", daily_is), ("oos", daily_oos)):
        columns[f"sharpe_{suffix}"] = np.asarray(sharpe_daily(rows, validation.min_days), dtype=np.float64)
        columns[f"sortino_{suffix}"] = np.asarray(sortino_daily(rows, validation.min_days), dtype=np.float64)
        columns[f"calmar_{suffix}"] = np.asarray(calmar(rows, validation.min_days), dtype=np.float64)
        columns[f"n_days_{suffix}"] = np.full(n_strategies, rows.shape[1], dtype=np.int64)

    # The score ranks on in-sample figures only; every variant tried counts as a trial
    # before correlated variants are clustered.
    trials = effective_number_of_trials(daily_is, validation.cluster_threshold,
                                        max_exact=validation.max_exact_cluster,
                                        random_state=validation.random_state)
    columns["score"] = score_column(daily_is, metrics["n_trades_is"].to_numpy(), trials=trials,
                                    min_trades=validation.min_trades, min_days=validation.min_days)
    columns["trial_cluster"] = np.asarray(trials.labels, dtype=np.int64)

    report: dict[str, Any] = {
        "in_sample_days": int(daily_is.shape[1]),
        "holdout_days": int(daily_oos.shape[1]),
        "lockbox": ("the holdout after the split: the score, the walk-forward folds and PBO use "
                    "in-sample days only. A trade belongs to the period of its entry, and an "
                    "in-sample trade still open at the split closes at the last tick before it"),
        "trials_tried": n_strategies,
        "effective_trials": int(trials.n_effective),
        "flat_strategies": int(trials.n_flat),
        # V of the deflated Sharpe ratio (per-day Sharpe, squared), so a cross-pair leaderboard
        # can deflate the score again with the trial count of a whole run.
        "sharpe_variance_is": cluster_sharpe_variance(daily_is, trials.labels, validation.min_days),
    }

    purge_days = horizon_days(ctx.config.search.horizon_minutes)
    plan = walk_forward_folds(day_numbers[: last_is_column + 1], validation.n_folds, purge_days,
                              validation.embargo_days, 0.0, scheme=validation.scheme,
                              min_train_days=validation.min_train_days, min_test_days=validation.min_test_days)
    folds_report: dict[str, Any] = {"requested": validation.n_folds, "made": len(plan), "reason": plan.reason,
                                    "scheme": plan.scheme, "purge_days": purge_days,
                                    "embargo_days": validation.embargo_days, "folds": []}
    if len(plan):
        table, series = walk_forward_select(daily_is, plan, min_days=validation.min_days)
        folds_report["folds"] = table.to_dict(orient="records")
        folds_report["oos_total_pips"] = float(series.sum())
    report["walk_forward"] = folds_report

    pbo: dict[str, Any] = {"value": None, "reason": ""}
    if daily_is.shape[1] >= 2 * validation.pbo_partitions and n_strategies >= 2:
        result = probability_of_backtest_overfitting(daily_is, validation.pbo_partitions,
                                                     max_combinations=validation.max_pbo_combinations,
                                                     random_state=validation.random_state)
        pbo.update({"value": result.pbo, "n_combinations": result.n_combinations,
                    "logit_median": result.logit_median, "prob_oos_loss": result.prob_oos_loss})
    else:
        pbo["reason"] = (f"{daily_is.shape[1]} in-sample days; PBO needs at least "
                         f"{2 * validation.pbo_partitions} ({validation.pbo_partitions} blocks of 2 days)")
    report["pbo"] = pbo
    return pd.DataFrame(columns), report


def _label_meta(ctx: PairContext, trades: Any, strategies: list[Any], bars: pd.DataFrame
                ) -> tuple[np.ndarray, np.ndarray]:
    """Return each strategy's label win rate and label coverage over its in-sample entries.

    Each in-sample entry takes the label of its signal bar and side with the closest SL/TP
    (``labels.meta_label_stats``), from the labels of the search timeframe. Labels that exit
    at or after the split are left out of the win rate, so it reads no holdout price.
    Without that labels file the win rate is NaN and the coverage 0.
    """
    from fxresearch.bars import timeframe_name
    from fxresearch.labels import meta_label_stats, read_labels

    n_strategies = len(strategies)
    timeframe_min = ctx.config.search.timeframe_min
    path = ctx.out_dir / "labels" / f"{timeframe_name(timeframe_min)}.parquet"
    if not path.exists():
        logger.warning("%s: no labels at %s; label_win_rate_is is NaN and label_coverage_is 0. Add %d to "
                       "labels.timeframes_min to get them", ctx.pair_year, path, timeframe_min)
        return np.full(n_strategies, np.nan), np.zeros(n_strategies)
    columns = ["timestamp", "side", "grid_id", "take_profit_pips", "stop_loss_pips", "horizon_minutes",
               "outcome", "uniqueness", "exit_time"]
    labels_table = read_labels(path, columns)
    in_sample = trades.entry_time_ns < ctx.split_ns()
    signal_ns = bars["timestamp"].to_numpy(dtype=np.int64)[trades.signal_bar[in_sample]]
    win_rate, coverage = meta_label_stats(
        labels_table, trades.strategy_index[in_sample], signal_ns, trades.side[in_sample],
        np.array([s.stop_loss_pips for s in strategies], dtype=np.float64),
        np.array([s.take_profit_pips for s in strategies], dtype=np.float64),
        ctx.config.search.horizon_minutes, known_before_ns=ctx.split_ns(),
    )
    logger.info("%s: in-sample entries joined to labels: median coverage %.2f", ctx.pair_year,
                float(np.nanmedian(coverage)) if np.isfinite(coverage).any() else 0.0)
    return win_rate, coverage


def _usd_totals(trades: Trades, costs: pd.DataFrame, n_strategies: int, split_ns: int) -> pd.DataFrame:
    """Return net USD P&L per strategy and period; NaN where any trade has no USD rate."""
    columns = {}
    in_sample = trades.entry_time_ns < split_ns
    pnl = costs["pnl_usd"].to_numpy(np.float64)
    for suffix, mask in (("is", in_sample), ("oos", ~in_sample)):
        index = trades.strategy_index[mask]
        # bincount of no values returns int64, so both sums are cast to float.
        total = np.bincount(index, weights=np.nan_to_num(pnl[mask]), minlength=n_strategies).astype(np.float64)
        missing = np.bincount(index, weights=np.isnan(pnl[mask]), minlength=n_strategies).astype(np.float64)
        total[missing > 0] = np.nan
        columns[f"pnl_usd_{suffix}"] = total
    return pd.DataFrame(columns)


def _pair_rate_source(costs: pd.DataFrame) -> str:
    """Return where the pair's USD rates came from, e.g. ``quote_usd`` or ``ticks:USDJPY+fixed``."""
    sources = sorted(set(costs["usd_rate_source"].astype(str))) if len(costs) else []
    return "+".join(sources) if sources else ""


def _empty_trades() -> pd.DataFrame:
    from fxresearch.backtest import TRADE_COLUMNS, Trades
    from fxresearch.costs import RESULT_COLUMNS

    # Zero-length arrays of the dtypes the engine writes, so the empty file's schema matches.
    dtypes = {"side": np.int8, "entry_price": np.float64, "exit_price": np.float64, "pips": np.float64,
              "reason": np.int8}
    columns: dict[str, Any] = {name: np.zeros(0, dtype=dtypes.get(name, np.int64)) for name in TRADE_COLUMNS}
    empty = Trades(**columns)
    frame = empty.to_frame().drop(columns=["pips"])
    for name in RESULT_COLUMNS:
        frame[name] = pd.Series(dtype="object" if name == "usd_rate_source" else "float64")
    frame.insert(0, "strategy_id", pd.Series(dtype="object"))
    frame.insert(1, "rank", pd.Series(dtype="int64"))
    frame["in_sample"] = pd.Series(dtype="bool")
    return frame

"""Per-strategy performance metrics in pips, in-sample and out-of-sample.

A trade belongs to the in-sample period (suffix ``_is``) when it enters before ``split_ns``
and to the out-of-sample period (``_oos``) otherwise, wherever it exits. For each strategy
and period:

- ``n_trades``, ``total_pips`` (0 without trades), ``expectancy_pips`` (mean pips per trade)
  and ``win_rate`` (share of trades with pips > 0). The last two are NaN without trades.
- ``profit_factor``: gross profit / gross loss in pips. +inf with profit and no loss, 0 with
  loss and no profit, NaN without trades or when every trade has 0 pips. Never capped.
- ``sharpe``: mean / std of daily P&L in pips times sqrt(260), std with ddof=1. A trading
  day runs 17:00 to 17:00 New York time (``timeutil.trading_day_ns``) and a trade's P&L is
  booked on its exit's trading day. Every trading day of the period with at least one tick
  counts, a day without an exit counting 0, plus any exit day outside that set (an
  in-sample trade closing after the split). NaN with fewer than 20 days or a zero std (below 1e-9 pips).
- ``max_drawdown_pips``: the largest fall of cumulative trade P&L from its running peak,
  starting from 0 and taking trades in exit order. It is a positive number, 0 when P&L
  never falls and NaN without trades.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd

from fxresearch.backtest import Trades
from fxresearch.timeutil import NS_PER_MINUTE, trading_day_ns

logger = logging.getLogger(__name__)

TRADING_DAYS_PER_YEAR = 260
MIN_SHARPE_DAYS = 20
METRIC_NAMES: tuple[str, ...] = (
    "n_trades", "win_rate", "profit_factor", "total_pips", "expectancy_pips", "sharpe", "max_drawdown_pips",
)
PERIOD_SUFFIXES: tuple[str, ...] = ("_is", "_oos")

_NS_PER_HOUR = 60 * NS_PER_MINUTE


def trading_days(timestamp_ns: np.ndarray) -> np.ndarray:
    """Return the trading day of each timestamp, like ``timeutil.trading_day_ns`` but faster.

    New York is a whole number of hours from UTC, so the 17:00 boundary falls on a UTC hour
    and every tick of one UTC hour shares a trading day. Only distinct hours are converted.
    """
    timestamp_ns = np.asarray(timestamp_ns, dtype=np.int64)
    if len(timestamp_ns) == 0:
        return np.empty(0, dtype=np.int64)
    hours, inverse = np.unique(timestamp_ns // _NS_PER_HOUR, return_inverse=True)
    return trading_day_ns(hours * _NS_PER_HOUR)[inverse]


def strategy_metrics(trades: Trades, n_strategies: int, split_ns: int,
                     tick_timestamp_ns: np.ndarray) -> pd.DataFrame:
    """Compute in-sample and out-of-sample metrics for every strategy, vectorised.

    Parameters
    ----------
    trades : Trades
        From ``backtest.run_backtests``; ``strategy_index`` must lie in ``0 .. n_strategies-1``.
    n_strategies : int
        Number of strategies; strategies without trades get a row too.
    split_ns : int
        Train/holdout split, int64 ns UTC. Trades entered before it are in-sample.
    tick_timestamp_ns : np.ndarray
        All tick times of the pair, int64 ns UTC; they give the trading days each period has.

    Returns
    -------
    pd.DataFrame
        One row per strategy in index order: ``strategy_index`` and the metrics in
        ``METRIC_NAMES``, each with suffix ``_is`` and ``_oos`` (see the module docstring).
    """
    started = time.perf_counter()
    strategy_index = np.asarray(trades.strategy_index, dtype=np.int64)
    if len(strategy_index) and (strategy_index.min() < 0 or strategy_index.max() >= n_strategies):
        raise ValueError(
            f"Trades refer to strategy indices {strategy_index.min()}..{strategy_index.max()}, "
            f"outside 0..{n_strategies - 1}; pass the number of strategies that was backtested."
        )
    pips = np.asarray(trades.pips, dtype=np.float64)
    if not np.isfinite(pips).all():
        raise ValueError("Trade pips contain NaN or infinity; every backtest trade must have an exit price.")

    # Group g = 2 * strategy + period, period 0 in-sample and 1 out-of-sample.
    period = (np.asarray(trades.entry_time_ns, dtype=np.int64) >= split_ns).astype(np.int64)
    group = 2 * strategy_index + period
    n_groups = 2 * n_strategies

    n_trades = np.bincount(group, minlength=n_groups)
    total_pips = np.bincount(group, weights=pips, minlength=n_groups)
    wins = np.bincount(group, weights=(pips > 0).astype(np.float64), minlength=n_groups)
    gross_profit = np.bincount(group, weights=np.clip(pips, 0.0, None), minlength=n_groups)
    gross_loss = np.bincount(group, weights=np.clip(-pips, 0.0, None), minlength=n_groups)

    has_trades = n_trades > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        win_rate = np.where(has_trades, wins / n_trades, np.nan)
        expectancy = np.where(has_trades, total_pips / n_trades, np.nan)
        profit_factor = np.where(
            gross_loss > 0, gross_profit / gross_loss, np.where(gross_profit > 0, np.inf, np.nan)
        )
    profit_factor = np.where(has_trades, profit_factor, np.nan)

    sharpe = _daily_sharpe(group, pips, trades.exit_time_ns, n_groups, split_ns, tick_timestamp_ns)
    drawdown = _max_drawdown(group, pips, trades.exit_idx, trades.entry_idx, n_groups)
    drawdown = np.where(has_trades, drawdown, np.nan)

    metrics = {
        "n_trades": n_trades.astype(np.int64),
        "win_rate": win_rate,
        "profit_factor": profit_factor,
        "total_pips": total_pips,
        "expectancy_pips": expectancy,
        "sharpe": sharpe,
        "max_drawdown_pips": drawdown,
    }
    columns: dict[str, np.ndarray] = {"strategy_index": np.arange(n_strategies, dtype=np.int64)}
    for offset, suffix in enumerate(PERIOD_SUFFIXES):
        for name in METRIC_NAMES:
            columns[name + suffix] = metrics[name][offset::2]
    frame = pd.DataFrame(columns)
    logger.debug("Computed metrics of %d strategies from %d trades in %.2f s",
                 n_strategies, len(pips), time.perf_counter() - started)
    return frame


def _daily_sharpe(group: np.ndarray, pips: np.ndarray, exit_time_ns: np.ndarray, n_groups: int,
                  split_ns: int, tick_timestamp_ns: np.ndarray) -> np.ndarray:
    """Annualised Sharpe ratio of daily P&L per group, zero-P&L days included."""
    tick_timestamp_ns = np.asarray(tick_timestamp_ns, dtype=np.int64)
    split_at = np.searchsorted(tick_timestamp_ns, split_ns, side="left")
    period_days = (np.unique(trading_days(tick_timestamp_ns[:split_at])),
                   np.unique(trading_days(tick_timestamp_ns[split_at:])))

    # Daily P&L per (group, exit trading day); only days with an exit appear here.
    exit_day = trading_days(exit_time_ns)
    daily = pd.DataFrame({"group": group, "day": exit_day, "pips": pips}).groupby(["group", "day"]).sum()
    day_group = daily.index.get_level_values("group").to_numpy(dtype=np.int64)
    day = daily.index.get_level_values("day").to_numpy(dtype=np.int64)
    day_pips = daily["pips"].to_numpy(dtype=np.float64)

    in_period_days = np.where(
        day_group % 2 == 0, np.isin(day, period_days[0]), np.isin(day, period_days[1])
    )
    extra_days = np.bincount(day_group, weights=(~in_period_days).astype(np.float64), minlength=n_groups)
    n_exit_days = np.bincount(day_group, minlength=n_groups)
    base_days = np.tile([len(period_days[0]), len(period_days[1])], n_groups // 2)
    n_days = base_days + extra_days

    total = np.bincount(day_group, weights=day_pips, minlength=n_groups)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(n_days > 0, total / n_days, np.nan)
        # Squared deviations of the days with exits plus those of the zero days.
        squares = np.bincount(day_group, weights=(day_pips - mean[day_group]) ** 2, minlength=n_groups)
        squares += (n_days - n_exit_days) * mean ** 2
        std = np.sqrt(squares / (n_days - 1))
        sharpe = mean / std * np.sqrt(TRADING_DAYS_PER_YEAR)
    # Rounding can leave a tiny nonzero std when every day has the same P&L, so treat it as zero.
    valid = (n_days >= MIN_SHARPE_DAYS) & (std > 1e-9)
    return np.where(valid, sharpe, np.nan)


def _max_drawdown(group: np.ndarray, pips: np.ndarray, exit_idx: np.ndarray, entry_idx: np.ndarray,
                  n_groups: int) -> np.ndarray:
    """Max drawdown in pips of each group's cumulative P&L in exit order; 0 for empty groups."""
    drawdown = np.zeros(n_groups, dtype=np.float64)
    if len(pips) == 0:
        return drawdown
    order = np.lexsort((np.asarray(entry_idx), np.asarray(exit_idx), group))
    frame = pd.DataFrame({"group": group[order], "pips": pips[order]})
    equity = frame.groupby("group", sort=False)["pips"].cumsum()
    # The equity starts at 0, so the running peak is never below 0.
    peak = equity.groupby(frame["group"], sort=False).cummax().clip(lower=0.0)
    worst = (peak - equity).groupby(frame["group"], sort=False).max()
    drawdown[worst.index.to_numpy(dtype=np.int64)] = worst.to_numpy(dtype=np.float64)
    return drawdown

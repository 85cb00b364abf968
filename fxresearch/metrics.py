"""Per-strategy trade metrics in pips, in-sample and out-of-sample.

A trade belongs to the in-sample period (suffix ``_is``) when it enters before ``split_ns``
and to the out-of-sample period (``_oos``) otherwise, wherever it exits. The pips come in
as the caller computed them (the search job passes pips net of slippage and swap). For each
strategy and period:

- ``n_trades``, ``total_pips`` (0 without trades), ``expectancy_pips`` (mean pips per trade)
  and ``win_rate`` (share of trades with pips > 0). The last two are NaN without trades.
- ``profit_factor``: gross profit / gross loss in pips. +inf with profit and no loss, 0 with
  loss and no profit, NaN without trades or when every trade has 0 pips. Never capped.
- ``sharpe``: mean / std of daily P&L in pips times sqrt(260), std with ddof=1. A trading
  day runs 17:00 to 17:00 New York time (``timeutil.trading_day_ns``) and a trade's P&L is
  booked on its exit's trading day. Every trading day of the period with at least one tick
  counts, a day without an exit counting 0, plus any exit day outside that set (an
  in-sample trade closing after the split). NaN with fewer than 20 days or a zero std (below 1e-9 pips).
  Daily Sharpe, Sortino and Calmar from P&L marked to market each day are in
  ``fxresearch.daily``.
- ``max_drawdown_pips``: the largest fall of cumulative trade P&L from its running peak,
  starting from 0 and taking trades in exit order. It is a positive number, 0 when P&L
  never falls and NaN without trades.
- ``avg_win_pips``: mean pips of the winning trades (pips > 0), NaN without a win.
  ``avg_loss_pips``: mean pips of the losing trades (pips < 0), a negative number, NaN
  without a loss. Trades with 0 pips are in neither.
- ``avg_r_multiple``: mean of pips / the strategy's stop-loss in pips, so a trade stopped
  out at its level is about -1 R. NaN without trades, and everywhere when no stop-loss
  array is passed.
- ``avg_holding_minutes``: mean of exit time - entry time in minutes, NaN without trades.
  The weekend close counts, as it does for the horizon.
- ``exposure``: the time the strategy has an open position divided by the period's span, from
  its first tick to its last (in-sample ticks are before ``split_ns``). Overlapping trades
  count once. Each trade counts its whole holding time in the period it entered, so an
  in-sample trade that stays open past the split adds its out-of-sample part to the
  in-sample time, which can push in-sample exposure above 1. 0 without trades and NaN when the
  period has fewer than two distinct tick times.
- ``n_stop_loss``, ``n_take_profit``, ``n_horizon``, ``n_data_gap``, ``n_end_of_data`` and
  ``n_signal``: trades by exit reason (``fxresearch.fills.REASONS``). They sum to
  ``n_trades``.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd

from fxresearch._metrics_kernels import held_time_nb
from fxresearch.backtest import Trades
from fxresearch.fills import NO_ENTRY, REASONS
from fxresearch.timeutil import NS_PER_MINUTE, trading_day_ns

logger = logging.getLogger(__name__)

TRADING_DAYS_PER_YEAR = 260
MIN_SHARPE_DAYS = 20
# Exit reasons a trade can have. Codes from ``no_entry`` on never make a trade.
TRADE_REASONS: tuple[str, ...] = REASONS[:NO_ENTRY]
METRIC_NAMES: tuple[str, ...] = (
    "n_trades", "win_rate", "profit_factor", "total_pips", "expectancy_pips", "sharpe", "max_drawdown_pips",
    "avg_win_pips", "avg_loss_pips", "avg_r_multiple", "avg_holding_minutes", "exposure",
    *(f"n_{reason}" for reason in TRADE_REASONS),
)
PERIOD_SUFFIXES: tuple[str, ...] = ("_is", "_oos")


def strategy_metrics(trades: Trades, n_strategies: int, split_ns: int,
                     tick_timestamp_ns: np.ndarray,
                     stop_loss_pips: np.ndarray | None = None) -> pd.DataFrame:
    """Compute in-sample and out-of-sample metrics for every strategy, vectorised.

    Parameters
    ----------
    trades : Trades
        From ``backtest.run_backtests``; ``strategy_index`` must lie in ``0 .. n_strategies-1``,
        ``reason`` in the codes of ``TRADE_REASONS`` and no exit may come before its entry.
    n_strategies : int
        Number of strategies; strategies without trades get a row too.
    split_ns : int
        Train/holdout split, int64 ns UTC. Trades entered before it are in-sample.
    tick_timestamp_ns : np.ndarray
        All tick times of the pair, int64 ns UTC, sorted; they give the trading days and the
        span of each period.
    stop_loss_pips : np.ndarray, optional
        Stop-loss distance in pips of each strategy, length ``n_strategies``, used for
        ``avg_r_multiple``. Values must be positive; NaN marks a strategy without a stop-loss
        and gives it a NaN ``avg_r_multiple``. Without the array that metric is NaN for all.

    Returns
    -------
    pd.DataFrame
        One row per strategy in index order: ``strategy_index`` and the metrics in
        ``METRIC_NAMES``, each with suffix ``_is`` and ``_oos`` (see the module docstring).
        Counts are int64 and the other metrics float64.

    Raises
    ------
    ValueError
        On a strategy index out of range, non-finite pips, an unknown exit reason, an exit
        before its entry, or a stop-loss array of the wrong length or with a value <= 0.
    """
    started = time.perf_counter()
    strategy_index = np.asarray(trades.strategy_index, dtype=np.int64)
    pips = np.asarray(trades.pips, dtype=np.float64)
    reason = np.asarray(trades.reason, dtype=np.int64)
    entry_time_ns = np.asarray(trades.entry_time_ns, dtype=np.int64)
    exit_time_ns = np.asarray(trades.exit_time_ns, dtype=np.int64)
    tick_timestamp_ns = np.asarray(tick_timestamp_ns, dtype=np.int64)
    _check_trades(strategy_index, pips, reason, entry_time_ns, exit_time_ns, n_strategies)
    if stop_loss_pips is not None:
        stop_loss_pips = _checked_stop_loss(stop_loss_pips, n_strategies)

    # Group g = 2 * strategy + period, period 0 in-sample and 1 out-of-sample.
    period = (entry_time_ns >= split_ns).astype(np.int64)
    group = 2 * strategy_index + period
    n_groups = 2 * n_strategies

    metrics = _pips_metrics(group, pips, n_groups)
    n_trades = metrics["n_trades"]
    has_trades = n_trades > 0
    metrics["sharpe"] = _daily_sharpe(group, pips, exit_time_ns, n_groups, split_ns, tick_timestamp_ns)
    drawdown = _max_drawdown(group, pips, trades.exit_idx, trades.entry_idx, n_groups)
    metrics["max_drawdown_pips"] = np.where(has_trades, drawdown, np.nan)

    if stop_loss_pips is None:
        metrics["avg_r_multiple"] = np.full(n_groups, np.nan)
    else:
        r_multiple = pips / stop_loss_pips[strategy_index]
        metrics["avg_r_multiple"] = _group_mean(group, r_multiple, n_trades)

    holding_minutes = (exit_time_ns - entry_time_ns).astype(np.float64) / NS_PER_MINUTE
    metrics["avg_holding_minutes"] = _group_mean(group, holding_minutes, n_trades)
    metrics["exposure"] = _exposure(group, entry_time_ns, exit_time_ns, n_groups, split_ns, tick_timestamp_ns)

    reason_counts = _group_count(group * len(TRADE_REASONS) + reason,
                                 n_groups * len(TRADE_REASONS)).reshape(n_groups, len(TRADE_REASONS))
    for code, name in enumerate(TRADE_REASONS):
        metrics[f"n_{name}"] = reason_counts[:, code]

    columns: dict[str, np.ndarray] = {"strategy_index": np.arange(n_strategies, dtype=np.int64)}
    for offset, suffix in enumerate(PERIOD_SUFFIXES):
        for name in METRIC_NAMES:
            columns[name + suffix] = metrics[name][offset::2]
    frame = pd.DataFrame(columns)
    logger.debug("Computed metrics of %d strategies from %d trades in %.2f s",
                 n_strategies, len(pips), time.perf_counter() - started)
    return frame


def _check_trades(strategy_index: np.ndarray, pips: np.ndarray, reason: np.ndarray,
                  entry_time_ns: np.ndarray, exit_time_ns: np.ndarray, n_strategies: int) -> None:
    """Raise ValueError when the trades cannot be grouped or measured."""
    if len(strategy_index) and (strategy_index.min() < 0 or strategy_index.max() >= n_strategies):
        raise ValueError(
            f"Trades refer to strategy indices {strategy_index.min()}..{strategy_index.max()}, "
            f"outside 0..{n_strategies - 1}; pass the number of strategies that was backtested."
        )
    if not np.isfinite(pips).all():
        raise ValueError("Trade pips contain NaN or infinity; every backtest trade must have an exit price.")
    if len(reason) and (reason.min() < 0 or reason.max() >= len(TRADE_REASONS)):
        raise ValueError(
            f"Trade exit reasons span codes {reason.min()}..{reason.max()}, outside "
            f"0..{len(TRADE_REASONS) - 1} ({', '.join(TRADE_REASONS)}); drop trades that never entered."
        )
    backwards = np.flatnonzero(exit_time_ns < entry_time_ns)
    if len(backwards):
        k = backwards[0]
        raise ValueError(
            f"{len(backwards)} trades exit before they enter, the first of strategy "
            f"{strategy_index[k]} with entry_time_ns {entry_time_ns[k]} and exit_time_ns "
            f"{exit_time_ns[k]}; check the backtest's entry and exit ticks."
        )


def _checked_stop_loss(stop_loss_pips: np.ndarray, n_strategies: int) -> np.ndarray:
    """Return the stop-loss distances as float64, raising ValueError on a bad shape or value."""
    stop_loss_pips = np.asarray(stop_loss_pips, dtype=np.float64)
    if stop_loss_pips.shape != (n_strategies,):
        raise ValueError(
            f"stop_loss_pips has shape {stop_loss_pips.shape}, expected ({n_strategies},): "
            "pass one stop-loss distance per strategy, in strategy index order."
        )
    invalid = np.flatnonzero(~np.isnan(stop_loss_pips) & ~((stop_loss_pips > 0) & np.isfinite(stop_loss_pips)))
    if len(invalid):
        raise ValueError(
            f"stop_loss_pips of strategy {invalid[0]} is {stop_loss_pips[invalid[0]]}. A stop-loss "
            "distance must be positive and finite, or NaN for a strategy without a stop-loss."
        )
    return stop_loss_pips


def _pips_metrics(group: np.ndarray, pips: np.ndarray, n_groups: int) -> dict[str, np.ndarray]:
    """Return the metrics that depend on each group's pips only, ignoring their order."""
    n_trades = _group_count(group, n_groups)
    total_pips = _group_sum(group, pips, n_groups)
    n_wins = _group_sum(group, (pips > 0).astype(np.float64), n_groups)
    n_losses = _group_sum(group, (pips < 0).astype(np.float64), n_groups)
    gross_profit = _group_sum(group, np.clip(pips, 0.0, None), n_groups)
    gross_loss = _group_sum(group, np.clip(-pips, 0.0, None), n_groups)

    has_trades = n_trades > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        win_rate = np.where(has_trades, n_wins / n_trades, np.nan)
        expectancy = np.where(has_trades, total_pips / n_trades, np.nan)
        profit_factor = np.where(
            gross_loss > 0, gross_profit / gross_loss, np.where(gross_profit > 0, np.inf, np.nan)
        )
        avg_win = np.where(n_wins > 0, gross_profit / n_wins, np.nan)
        avg_loss = np.where(n_losses > 0, -gross_loss / n_losses, np.nan)
    return {
        "n_trades": n_trades,
        "win_rate": win_rate,
        "profit_factor": np.where(has_trades, profit_factor, np.nan),
        "total_pips": total_pips,
        "expectancy_pips": expectancy,
        "avg_win_pips": avg_win,
        "avg_loss_pips": avg_loss,
    }


def _group_count(group: np.ndarray, n_groups: int) -> np.ndarray:
    """Return the int64 number of elements in each of ``n_groups`` groups."""
    return np.bincount(group, minlength=n_groups).astype(np.int64, copy=False)


def _group_sum(group: np.ndarray, values: np.ndarray, n_groups: int) -> np.ndarray:
    """Return the float64 sum of ``values`` in each of ``n_groups`` groups, 0 for an empty group.

    ``np.bincount`` with weights returns int64 when ``group`` is empty (numpy 2.3), which
    breaks in-place float arithmetic later, so the result is always cast to float64.
    """
    return np.bincount(group, weights=values, minlength=n_groups).astype(np.float64, copy=False)


def _group_mean(group: np.ndarray, values: np.ndarray, n_trades: np.ndarray) -> np.ndarray:
    """Mean of ``values`` per group, NaN for groups without trades."""
    total = _group_sum(group, values, len(n_trades))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n_trades > 0, total / n_trades, np.nan)


def _exposure(group: np.ndarray, entry_time_ns: np.ndarray, exit_time_ns: np.ndarray, n_groups: int,
              split_ns: int, tick_timestamp_ns: np.ndarray) -> np.ndarray:
    """Share of each period's tick span in which the group has an open position."""
    # The kernel merges overlaps in one pass over trades sorted by group and entry time.
    # Backtest trades already come in that order, so the sort is usually skipped.
    step_group = np.diff(group)
    in_order = bool(np.all((step_group > 0) | ((step_group == 0) & (np.diff(entry_time_ns) >= 0))))
    if not in_order:
        order = np.lexsort((entry_time_ns, group))
        group, entry_time_ns, exit_time_ns = group[order], entry_time_ns[order], exit_time_ns[order]
    held_ns = held_time_nb(group, entry_time_ns, exit_time_ns, n_groups)

    split_at = np.searchsorted(tick_timestamp_ns, split_ns, side="left")
    spans_ns = []
    for period_ticks in (tick_timestamp_ns[:split_at], tick_timestamp_ns[split_at:]):
        spans_ns.append(int(period_ticks[-1] - period_ticks[0]) if len(period_ticks) else 0)
    span_ns = np.tile(np.array(spans_ns, dtype=np.float64), n_groups // 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(span_ns > 0, held_ns / span_ns, np.nan)


def _daily_sharpe(group: np.ndarray, pips: np.ndarray, exit_time_ns: np.ndarray, n_groups: int,
                  split_ns: int, tick_timestamp_ns: np.ndarray) -> np.ndarray:
    """Annualised Sharpe ratio of daily P&L per group, zero-P&L days included."""
    tick_timestamp_ns = np.asarray(tick_timestamp_ns, dtype=np.int64)
    split_at = np.searchsorted(tick_timestamp_ns, split_ns, side="left")
    period_days = (np.unique(trading_day_ns(tick_timestamp_ns[:split_at])),
                   np.unique(trading_day_ns(tick_timestamp_ns[split_at:])))

    # Daily P&L per (group, exit trading day); only days with an exit appear here.
    exit_day = trading_day_ns(exit_time_ns)
    daily = pd.DataFrame({"group": group, "day": exit_day, "pips": pips}).groupby(["group", "day"]).sum()
    day_group = daily.index.get_level_values("group").to_numpy(dtype=np.int64)
    day = daily.index.get_level_values("day").to_numpy(dtype=np.int64)
    day_pips = daily["pips"].to_numpy(dtype=np.float64)

    in_period_days = np.where(
        day_group % 2 == 0, np.isin(day, period_days[0]), np.isin(day, period_days[1])
    )
    extra_days = _group_count(day_group[~in_period_days], n_groups)
    n_exit_days = _group_count(day_group, n_groups)
    base_days = np.tile([len(period_days[0]), len(period_days[1])], n_groups // 2)
    n_days = base_days + extra_days

    total = _group_sum(day_group, day_pips, n_groups)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(n_days > 0, total / n_days, np.nan)
        # Squared deviations of the days with exits plus those of the zero days.
        squares = _group_sum(day_group, (day_pips - mean[day_group]) ** 2, n_groups)
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

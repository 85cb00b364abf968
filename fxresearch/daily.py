"""Daily P&L of many strategies, open trades marked to market, and ratios on daily returns.

FX desks count a trading day from 17:00 to 17:00 New York time (``timeutil.trading_day_ns``
names it by the date it ends on). Flow::

    ticks ─► day_end_marks ─► (day numbers, last tick time, bid, ask of each trading day)
    trades + day-end marks ─► daily_pnl_matrix ─► strategies x days matrix in pips
    matrix rows ─► sharpe_daily, sortino_daily, max_drawdown, calmar

Market assumptions:

- A day ends at its last tick; that tick's price is the day-end mark. A trading day without
  ticks (a holiday or a data hole) has no column, so its price move falls on the next day
  with ticks.
- When the caller passes ``day_close_bid`` and ``day_close_ask``, a long is marked at the bid
  and a short at the ask, the prices each would close at. Otherwise both are marked at the
  mid. Either way the days of one trade sum to its P&L, and only the split differs.
- No swap, commission or slippage is added here: the matrix contains the price P&L of the
  trade prices given.
- Ratios are annualised with 260 trading days a year, like ``fxresearch.metrics``.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import numpy.typing as npt

from fxresearch._daily_kernels import daily_pnl_nb
from fxresearch.timeutil import trading_day_ns

logger = logging.getLogger(__name__)

TRADING_DAYS_PER_YEAR = 260
# Ratios are NaN on fewer days than this.
MIN_DAYS = 20
# A standard deviation or drawdown below this many pips counts as zero (float rounding).
_ZERO_PIPS = 1e-9


def day_end_marks(timestamp_ns: np.ndarray, bid: np.ndarray,
                  ask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return the last tick of every trading day that has ticks.

    Parameters
    ----------
    timestamp_ns : np.ndarray
        Tick times, int64 ns UTC, sorted ascending.
    bid, ask : np.ndarray
        Tick prices in quote currency, same length.

    Returns
    -------
    tuple of np.ndarray
        ``(day_numbers, close_ns, close_bid, close_ask)``, one element per trading day with
        ticks, in time order. ``day_numbers`` are ``timeutil.trading_day_ns`` numbers, and
        ``close_ns``, ``close_bid``, ``close_ask`` are the time and prices of the day's last
        tick.

    Raises
    ------
    ValueError
        When the arrays differ in length or the times go back.
    """
    timestamp_ns = np.asarray(timestamp_ns, dtype=np.int64)
    bid = np.asarray(bid, dtype=np.float64)
    ask = np.asarray(ask, dtype=np.float64)
    if not len(timestamp_ns) == len(bid) == len(ask):
        raise ValueError(
            f"Tick arrays differ in length: {len(timestamp_ns)} times, {len(bid)} bids, {len(ask)} asks; "
            f"pass the columns of one tick table."
        )
    if len(timestamp_ns) and (np.diff(timestamp_ns) < 0).any():
        raise ValueError("Tick times are not sorted ascending; sort the ticks by time (ticks.load_ticks does).")
    if len(timestamp_ns) == 0:
        empty_float = np.empty(0, dtype=np.float64)
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64), empty_float, empty_float.copy()

    days = trading_day_ns(timestamp_ns)
    last = np.append(np.flatnonzero(np.diff(days) != 0), len(days) - 1)
    return days[last], timestamp_ns[last], bid[last], ask[last]


def daily_pnl_matrix(trade_strategy: np.ndarray, entry_time_ns: np.ndarray, exit_time_ns: np.ndarray,
                     entry_price: np.ndarray, exit_price: np.ndarray, side: np.ndarray, pip_size: float,
                     day_close_ns: np.ndarray, day_close_mid: np.ndarray, *,
                     day_close_bid: np.ndarray | None = None, day_close_ask: np.ndarray | None = None,
                     n_strategies: int | None = None) -> np.ndarray:
    """Spread each trade's P&L over the trading days it is open, marking it at each day end.

    A trade belongs to the day column of the first day end at or after its entry time and
    exits in the column of the first day end at or after its exit time. Every day before its
    exit day it books the move from the previous mark (first the entry price) to that day's
    mark, and its exit day books the rest up to the exit price. Days without a position are 0.

    Parameters
    ----------
    trade_strategy : np.ndarray
        Strategy row of each trade, int, in ``0 .. n_strategies - 1``.
    entry_time_ns, exit_time_ns : np.ndarray
        Trade times, int64 ns UTC; every exit at or after its entry and at or before the
        last day end.
    entry_price, exit_price : np.ndarray
        Fill prices in quote currency (a long enters at the ask, exits at the bid).
    side : np.ndarray
        +1 long, -1 short.
    pip_size : float
        Price units per pip of the instrument.
    day_close_ns : np.ndarray
        Time of the last tick of each trading day with ticks, ascending (``day_end_marks``);
        one matrix column per element. Pass every day of the data, not a slice of it, so
        that no trade falls outside the columns.
    day_close_mid : np.ndarray
        Mid price at each day end; the mark of both sides unless bid and ask are given.
    day_close_bid, day_close_ask : np.ndarray, optional
        Bid and ask at each day end. Given together, longs are marked at the bid and shorts
        at the ask, the price each would close at.
    n_strategies : int, optional
        Number of matrix rows; defaults to the largest strategy index plus one.

    Returns
    -------
    np.ndarray
        float64 matrix, strategies x days, P&L in pips.

    Raises
    ------
    ValueError
        On arrays of different lengths, a side other than +1/-1, an exit before its entry or
        after the last day end, a strategy index out of range, or a non-positive pip size.
    """
    started = time.perf_counter()
    trade_strategy = np.asarray(trade_strategy, dtype=np.int64)
    entry_time_ns = np.asarray(entry_time_ns, dtype=np.int64)
    exit_time_ns = np.asarray(exit_time_ns, dtype=np.int64)
    entry_price = np.asarray(entry_price, dtype=np.float64)
    exit_price = np.asarray(exit_price, dtype=np.float64)
    side = np.asarray(side, dtype=np.int64)
    day_close_ns = np.asarray(day_close_ns, dtype=np.int64)
    long_mark, short_mark = _marks(day_close_ns, day_close_mid, day_close_bid, day_close_ask)
    _check_trades(trade_strategy, entry_time_ns, exit_time_ns, entry_price, exit_price, side, pip_size)
    if len(day_close_ns) and (np.diff(day_close_ns) <= 0).any():
        raise ValueError("day_close_ns must be strictly ascending; pass the close times from day_end_marks.")

    if n_strategies is None:
        n_strategies = int(trade_strategy.max()) + 1 if len(trade_strategy) else 0
    if len(trade_strategy) and (trade_strategy.min() < 0 or trade_strategy.max() >= n_strategies):
        raise ValueError(
            f"Trades refer to strategy rows {trade_strategy.min()}..{trade_strategy.max()}, outside "
            f"0..{n_strategies - 1}; pass the number of strategies that was backtested."
        )
    n_days = len(day_close_ns)
    if len(trade_strategy) and n_days == 0:
        raise ValueError("No day ends were given but there are trades; pass the marks from day_end_marks.")

    entry_column = np.searchsorted(day_close_ns, entry_time_ns, side="left")
    exit_column = np.searchsorted(day_close_ns, exit_time_ns, side="left")
    late = np.flatnonzero(exit_column >= n_days)
    if len(late):
        raise ValueError(
            f"{len(late)} trades exit after the last day end ({day_close_ns[-1]} ns), e.g. trade {late[0]} at "
            f"{exit_time_ns[late[0]]} ns; compute the day-end marks from the same ticks as the trades."
        )

    pnl = daily_pnl_nb(trade_strategy, entry_column, exit_column, entry_price, exit_price, side,
                       long_mark, short_mark, float(pip_size), n_strategies, n_days)
    logger.debug("Marked %d trades of %d strategies over %d days in %.2f s",
                 len(trade_strategy), n_strategies, n_days, time.perf_counter() - started)
    return pnl


def _marks(
    day_close_ns: np.ndarray, day_close_mid: npt.ArrayLike, day_close_bid: npt.ArrayLike | None,
    day_close_ask: npt.ArrayLike | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Return the day-end mark of longs and of shorts, one price per day column."""
    mid = np.asarray(day_close_mid, dtype=np.float64)
    if len(mid) != len(day_close_ns):
        raise ValueError(f"day_close_mid has {len(mid)} prices for {len(day_close_ns)} day ends; pass one per day.")
    if (day_close_bid is None) != (day_close_ask is None):
        raise ValueError("Pass both day_close_bid and day_close_ask, or neither to mark at the mid.")
    if day_close_bid is None:
        marks = (mid, mid)
    else:
        marks = (np.asarray(day_close_bid, dtype=np.float64), np.asarray(day_close_ask, dtype=np.float64))
        if not len(marks[0]) == len(marks[1]) == len(day_close_ns):
            raise ValueError(
                f"day_close_bid and day_close_ask have {len(marks[0])} and {len(marks[1])} prices for "
                f"{len(day_close_ns)} day ends; pass one per day."
            )
    for prices in marks:
        if not np.isfinite(prices).all():
            raise ValueError("Day-end prices contain NaN or infinity; take them from valid ticks.")
    return marks


def _check_trades(
    trade_strategy: np.ndarray, entry_time_ns: np.ndarray, exit_time_ns: np.ndarray, entry_price: np.ndarray,
    exit_price: np.ndarray, side: np.ndarray, pip_size: float,
) -> None:
    lengths = {len(a) for a in (trade_strategy, entry_time_ns, exit_time_ns, entry_price, exit_price, side)}
    if len(lengths) != 1:
        raise ValueError(
            "Trade arrays differ in length (strategy, entry and exit time, entry and exit price, side); "
            "pass the columns of one Trades object."
        )
    if not pip_size > 0:
        raise ValueError(f"pip_size = {pip_size} must be positive, e.g. 0.0001 for EURUSD.")
    if not np.isin(side, (-1, 1)).all():
        raise ValueError(f"Trade sides must be +1 or -1, got {np.unique(side)[:5]}.")
    backwards = np.flatnonzero(exit_time_ns < entry_time_ns)
    if len(backwards):
        raise ValueError(f"{len(backwards)} trades exit before they enter, e.g. trade {backwards[0]}.")
    if not (np.isfinite(entry_price).all() and np.isfinite(exit_price).all()):
        raise ValueError("Trade prices contain NaN or infinity; every trade must have entry and exit prices.")


def _as_rows(daily: np.ndarray) -> tuple[np.ndarray, bool]:
    """Return a 2-D float view (one row per series) and whether the input was one series."""
    values = np.asarray(daily, dtype=np.float64)
    if values.ndim == 1:
        return values[np.newaxis, :], True
    if values.ndim != 2:
        raise ValueError(f"Daily P&L must be 1-D (one series) or 2-D (strategies x days), got {values.ndim}-D.")
    return values, False


def _result(values: np.ndarray, single: bool) -> np.ndarray | float:
    return float(values[0]) if single else values


def sharpe_daily(daily: np.ndarray, min_days: int = MIN_DAYS) -> np.ndarray | float:
    """Return the annualised Sharpe ratio of daily P&L: mean / std (ddof=1) x sqrt(260).

    ``daily`` is one series or a strategies x days matrix (one value per row, then). NaN on
    fewer than ``min_days`` days or a zero standard deviation; a NaN day gives NaN.
    """
    rows, single = _as_rows(daily)
    n_days = rows.shape[1]
    if n_days < max(min_days, 2):
        return _result(np.full(rows.shape[0], np.nan), single)
    mean = rows.mean(axis=1)
    std = rows.std(axis=1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        sharpe = np.where(std > _ZERO_PIPS, mean / std * np.sqrt(TRADING_DAYS_PER_YEAR), np.nan)
    return _result(sharpe, single)


def sortino_daily(daily: np.ndarray, min_days: int = MIN_DAYS) -> np.ndarray | float:
    """Return the annualised Sortino ratio of daily P&L: mean / downside deviation x sqrt(260).

    The downside deviation is ``sqrt(mean(min(r, 0) ** 2))`` over all days, days with a gain
    or no position counting as 0. NaN on fewer than ``min_days`` days or without a losing day.
    """
    rows, single = _as_rows(daily)
    n_days = rows.shape[1]
    if n_days < max(min_days, 1):
        return _result(np.full(rows.shape[0], np.nan), single)
    mean = rows.mean(axis=1)
    downside = np.sqrt(np.mean(np.minimum(rows, 0.0) ** 2, axis=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        sortino = np.where(downside > _ZERO_PIPS, mean / downside * np.sqrt(TRADING_DAYS_PER_YEAR), np.nan)
    return _result(sortino, single)


def max_drawdown(daily: np.ndarray) -> np.ndarray | float:
    """Return the largest fall of cumulative daily P&L from its running peak, in pips.

    The equity starts at 0 before the first day, so a loss on day one is a drawdown. A
    positive number, 0 when the equity never falls, NaN for a series without days.
    """
    rows, single = _as_rows(daily)
    if rows.shape[1] == 0:
        return _result(np.full(rows.shape[0], np.nan), single)
    equity = np.cumsum(rows, axis=1)
    peak = np.maximum(np.maximum.accumulate(equity, axis=1), 0.0)
    return _result((peak - equity).max(axis=1), single)


def calmar(daily: np.ndarray, min_days: int = MIN_DAYS) -> np.ndarray | float:
    """Return the Calmar ratio: mean daily P&L x 260 / max drawdown, both in pips.

    NaN on fewer than ``min_days`` days or a zero drawdown.
    """
    rows, single = _as_rows(daily)
    if rows.shape[1] < max(min_days, 1):
        return _result(np.full(rows.shape[0], np.nan), single)
    annual = rows.mean(axis=1) * TRADING_DAYS_PER_YEAR
    drawdown = np.asarray(max_drawdown(rows), dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(drawdown > _ZERO_PIPS, annual / drawdown, np.nan)
    return _result(ratio, single)

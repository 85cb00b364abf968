"""Compiled label kernels: per-entry barriers and horizons, open-market time and Wilder's ATR.

These kernels take and return numpy arrays and plain numbers only. Exits come from
``fxresearch._fill_kernels.find_exit_bars_nb``, so labels and backtests share one set of fill
rules. This module only gives each entry its own levels and horizon end.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from fxresearch._fill_kernels import NO_ENTRY, find_exit_bars_nb


@njit(cache=True, parallel=True)
def label_entries_nb(
    timestamp_ns: np.ndarray, bid_pts: np.ndarray, ask_pts: np.ndarray, hole_after: np.ndarray,
    bar_first: np.ndarray, bar_last: np.ndarray, bar_bid_low_pts: np.ndarray,
    bar_bid_high_pts: np.ndarray, bar_ask_low_pts: np.ndarray, bar_ask_high_pts: np.ndarray,
    bar_has_hole: np.ndarray, bar_end_ns: np.ndarray,
    entry_idx: np.ndarray, side: int, take_profit_points: np.ndarray, stop_loss_points: np.ndarray,
    horizon_end_ns: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Find the exit of one side's trade from each entry tick, with per-entry levels and horizon.

    ``take_profit_points``, ``stop_loss_points`` and ``horizon_end_ns`` hold one value per
    entry. A long (+1) fills at the ask and a short (-1) at the bid, and the levels are that
    price plus or minus the point distances. Entries are independent, so the result does not
    depend on the number of threads.

    Returns
    -------
    (exit_idx int64, exit_price_pts int64, reason int8) arrays, one value per entry.
    """
    n_entries = len(entry_idx)
    n_ticks = len(timestamp_ns)
    out_idx = np.empty(n_entries, dtype=np.int64)
    out_price = np.empty(n_entries, dtype=np.int64)
    out_reason = np.empty(n_entries, dtype=np.int8)
    for k in prange(n_entries):
        entry = entry_idx[k]
        if entry < 0 or entry >= n_ticks:
            out_idx[k] = -1
            out_price[k] = 0
            out_reason[k] = NO_ENTRY
            continue
        if side > 0:
            entry_price = ask_pts[entry]
        else:
            entry_price = bid_pts[entry]
        stop_pts = entry_price - side * stop_loss_points[k]
        target_pts = entry_price + side * take_profit_points[k]
        exit_idx, price, reason = find_exit_bars_nb(
            timestamp_ns, bid_pts, ask_pts, hole_after,
            entry, side, stop_pts, target_pts, horizon_end_ns[k], n_ticks,
            bar_first, bar_last, bar_bid_low_pts, bar_bid_high_pts, bar_ask_low_pts,
            bar_ask_high_pts, bar_has_hole, bar_end_ns,
        )
        out_idx[k] = exit_idx
        out_price[k] = price
        out_reason[k] = reason
    return out_idx, out_price, out_reason


@njit(cache=True)
def add_open_minutes_nb(start_ns: np.ndarray, duration_ns: int, close_start_ns: np.ndarray,
                        close_end_ns: np.ndarray) -> np.ndarray:
    """Return ``start + duration`` counted in open-market time, skipping closed intervals.

    ``close_start_ns`` and ``close_end_ns`` are sorted, non-overlapping closed intervals
    ``[start, end)``. A start inside one counts from its end. Equivalent to walking the clock
    forward and pausing it while the market is closed.
    """
    n = len(start_ns)
    n_closes = len(close_start_ns)
    out = np.empty(n, dtype=np.int64)
    for i in range(n):
        position = start_ns[i]
        remaining = duration_ns
        k = np.searchsorted(close_end_ns, position, side="right")
        while True:
            if k >= n_closes:
                out[i] = position + remaining
                break
            if position >= close_start_ns[k]:
                position = close_end_ns[k]
                k += 1
                continue
            if position + remaining < close_start_ns[k]:
                out[i] = position + remaining
                break
            remaining -= close_start_ns[k] - position
            position = close_end_ns[k]
            k += 1
    return out


@njit(cache=True)
def wilder_atr_nb(high: np.ndarray, low: np.ndarray, close: np.ndarray, window: int) -> np.ndarray:
    """Wilder's average true range per bar; NaN before row ``window - 1``.

    True range is ``max(high, prev close) - min(low, prev close)``, and ``high - low`` on the
    first bar. Row ``window - 1`` is the mean of the first ``window`` true ranges, after that
    ``atr += (tr - atr) / window``. Row t reads bars up to t only.
    """
    n = len(close)
    atr = np.full(n, np.nan)
    if n < window:
        return atr
    total = 0.0
    value = 0.0
    for t in range(n):
        if t == 0:
            true_range = high[0] - low[0]
        else:
            true_range = max(high[t], close[t - 1]) - min(low[t], close[t - 1])
        if t < window:
            total += true_range
            if t == window - 1:
                value = total / window
                atr[t] = value
        else:
            value += (true_range - value) / window
            atr[t] = value
    return atr

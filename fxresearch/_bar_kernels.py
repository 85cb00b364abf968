"""Compiled kernels that aggregate bid/ask ticks into OHLC bars.

The kernels take and return numpy arrays and plain numbers only. ``fxresearch.bars`` validates
the input (sorted int64 nanosecond timestamps, equal lengths, a positive timeframe) and wraps
the result in a DataFrame.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True)
def first_invalid_tick_nb(timestamp_ns: np.ndarray, bid: np.ndarray, ask: np.ndarray) -> int:
    """Return the index of the first tick that goes back in time or has a NaN or infinite price.

    Returns -1 when every tick is valid. It makes one pass and allocates no temporary arrays, unlike the
    equivalent numpy expressions.
    """
    n_ticks = timestamp_ns.shape[0]
    for i in range(n_ticks):
        if not (math.isfinite(bid[i]) and math.isfinite(ask[i])):
            return i
        if i > 0 and timestamp_ns[i] < timestamp_ns[i - 1]:
            return i
    return -1


@njit(cache=True)
def count_bars_nb(timestamp_ns: np.ndarray, timeframe_ns: int) -> int:
    """Count the UTC bins of ``timeframe_ns`` that hold at least one tick.

    ``timestamp_ns`` must be sorted ascending. Equals ``len(np.unique(timestamp_ns // timeframe_ns))``.
    """
    n_ticks = timestamp_ns.shape[0]
    n_bars = 0
    bin_end_ns = 0
    for i in range(n_ticks):
        # A division only happens when a tick leaves the current bin, so most ticks cost one
        # comparison. build_bars_nb opens a bar under exactly the same test, which keeps its
        # writes inside the arrays sized from this count.
        if n_bars == 0 or timestamp_ns[i] >= bin_end_ns:
            n_bars += 1
            bin_end_ns = (timestamp_ns[i] // timeframe_ns) * timeframe_ns + timeframe_ns
    return n_bars


@njit(cache=True, inline="always")
def _store_bar(
    k: int, b_open: float, b_high: float, b_low: float, b_close: float, a_open: float,
    a_high: float, a_low: float, a_close: float, spread_sum: float, spread_top: float, first: int,
    last: int, bid_open: np.ndarray, bid_high: np.ndarray, bid_low: np.ndarray,
    bid_close: np.ndarray, ask_open: np.ndarray, ask_high: np.ndarray, ask_low: np.ndarray,
    ask_close: np.ndarray, spread_mean: np.ndarray, spread_max: np.ndarray, tick_count: np.ndarray,
    first_tick: np.ndarray, last_tick: np.ndarray,
):
    """Write one finished bar, ticks ``first`` to ``last`` inclusive, into row ``k``."""
    bid_open[k] = b_open
    bid_high[k] = b_high
    bid_low[k] = b_low
    bid_close[k] = b_close
    ask_open[k] = a_open
    ask_high[k] = a_high
    ask_low[k] = a_low
    ask_close[k] = a_close
    count = last - first + 1
    spread_mean[k] = spread_sum / count
    spread_max[k] = spread_top
    tick_count[k] = count
    first_tick[k] = first
    last_tick[k] = last


@njit(cache=True)
def build_bars_nb(
    timestamp_ns: np.ndarray, bid: np.ndarray, ask: np.ndarray, timeframe_ns: int,
) -> tuple[np.ndarray, ...]:
    """Aggregate sorted ticks into one bid/ask OHLC bar per non-empty UTC bin.

    The pandas equivalent is a groupby on ``timestamp_ns // timeframe_ns`` with first, max,
    min and last of bid and ask, the mean and max of ``ask - bid``, the tick count and the
    first and last row number. A bar opens at ``floor(ts / tf) * tf``, so bins are aligned to
    the Unix epoch in UTC. Intervals without ticks get no bar.

    Returns
    -------
    tuple of arrays, one entry per bar
        ``(open_ns, bid_open, bid_high, bid_low, bid_close, ask_open, ask_high, ask_low,
        ask_close, spread_mean, spread_max, tick_count, first_tick, last_tick, gap_before)``.
        ``first_tick`` and ``last_tick`` are inclusive indices into the input arrays.
        ``gap_before`` is True when the previous bar opened more than one timeframe earlier,
        which means at least one empty bin lies between them. The first bar has False.
    """
    n_ticks = timestamp_ns.shape[0]
    n_bars = count_bars_nb(timestamp_ns, timeframe_ns)

    open_ns = np.empty(n_bars, dtype=np.int64)
    bid_open = np.empty(n_bars, dtype=np.float64)
    bid_high = np.empty(n_bars, dtype=np.float64)
    bid_low = np.empty(n_bars, dtype=np.float64)
    bid_close = np.empty(n_bars, dtype=np.float64)
    ask_open = np.empty(n_bars, dtype=np.float64)
    ask_high = np.empty(n_bars, dtype=np.float64)
    ask_low = np.empty(n_bars, dtype=np.float64)
    ask_close = np.empty(n_bars, dtype=np.float64)
    spread_mean = np.empty(n_bars, dtype=np.float64)
    spread_max = np.empty(n_bars, dtype=np.float64)
    tick_count = np.empty(n_bars, dtype=np.int64)
    first_tick = np.empty(n_bars, dtype=np.int64)
    last_tick = np.empty(n_bars, dtype=np.int64)
    gap_before = np.empty(n_bars, dtype=np.bool_)

    # The bar being built lives in local variables, which the compiler can keep in registers,
    # and is written to the output arrays once, when the next bar opens or the ticks end.
    k = -1
    bin_end_ns = 0
    bar_open_ns = 0
    b_open = b_high = b_low = b_close = 0.0
    a_open = a_high = a_low = a_close = 0.0
    spread_sum = spread_top = 0.0
    first = 0
    for i in range(n_ticks):
        ts = timestamp_ns[i]
        b = bid[i]
        a = ask[i]
        spread = a - b

        if k < 0 or ts >= bin_end_ns:
            if k >= 0:
                _store_bar(k, b_open, b_high, b_low, b_close, a_open, a_high, a_low, a_close,
                           spread_sum, spread_top, first, i - 1,
                           bid_open, bid_high, bid_low, bid_close, ask_open, ask_high, ask_low,
                           ask_close, spread_mean, spread_max, tick_count, first_tick, last_tick)
            k += 1
            previous_open_ns = bar_open_ns
            bar_open_ns = (ts // timeframe_ns) * timeframe_ns
            bin_end_ns = bar_open_ns + timeframe_ns
            open_ns[k] = bar_open_ns
            gap_before[k] = k > 0 and bar_open_ns - previous_open_ns > timeframe_ns
            b_open = b_high = b_low = b
            a_open = a_high = a_low = a
            spread_sum = spread_top = spread
            first = i
        else:
            if b > b_high:
                b_high = b
            if b < b_low:
                b_low = b
            if a > a_high:
                a_high = a
            if a < a_low:
                a_low = a
            if spread > spread_top:
                spread_top = spread
            spread_sum += spread
        b_close = b
        a_close = a

    if k >= 0:
        _store_bar(k, b_open, b_high, b_low, b_close, a_open, a_high, a_low, a_close,
                   spread_sum, spread_top, first, n_ticks - 1,
                   bid_open, bid_high, bid_low, bid_close, ask_open, ask_high, ask_low,
                   ask_close, spread_mean, spread_max, tick_count, first_tick, last_tick)

    return (open_ns, bid_open, bid_high, bid_low, bid_close, ask_open, ask_high, ask_low,
            ask_close, spread_mean, spread_max, tick_count, first_tick, last_tick, gap_before)

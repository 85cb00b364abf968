"""Compiled kernels that aggregate bid/ask ticks into OHLC bars.

The kernels take and return numpy arrays and plain numbers only. ``fxresearch.bars`` validates
the input (sorted int64 nanosecond timestamps, equal lengths, a positive timeframe) and wraps
the result in a DataFrame.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def count_bars_nb(timestamp_ns, timeframe_ns):
    """Count the UTC bins of ``timeframe_ns`` that hold at least one tick.

    ``timestamp_ns`` must be sorted ascending. Equals ``len(np.unique(timestamp_ns // tf))``.
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


@njit(cache=True)
def build_bars_nb(timestamp_ns, bid, ask, timeframe_ns):
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

    k = -1
    bin_end_ns = 0
    for i in range(n_ticks):
        ts = timestamp_ns[i]
        b = bid[i]
        a = ask[i]
        spread = a - b

        if k < 0 or ts >= bin_end_ns:
            k += 1
            bar_open_ns = (ts // timeframe_ns) * timeframe_ns
            bin_end_ns = bar_open_ns + timeframe_ns
            open_ns[k] = bar_open_ns
            gap_before[k] = k > 0 and bar_open_ns - open_ns[k - 1] > timeframe_ns
            bid_open[k] = b
            bid_high[k] = b
            bid_low[k] = b
            ask_open[k] = a
            ask_high[k] = a
            ask_low[k] = a
            # spread_mean holds the running sum until the division after the loop.
            spread_mean[k] = spread
            spread_max[k] = spread
            tick_count[k] = 1
            first_tick[k] = i
        else:
            if b > bid_high[k]:
                bid_high[k] = b
            if b < bid_low[k]:
                bid_low[k] = b
            if a > ask_high[k]:
                ask_high[k] = a
            if a < ask_low[k]:
                ask_low[k] = a
            if spread > spread_max[k]:
                spread_max[k] = spread
            spread_mean[k] += spread
            tick_count[k] += 1

        bid_close[k] = b
        ask_close[k] = a
        last_tick[k] = i

    for k in range(n_bars):
        spread_mean[k] /= tick_count[k]

    return (open_ns, bid_open, bid_high, bid_low, bid_close, ask_open, ask_high, ask_low,
            ask_close, spread_mean, spread_max, tick_count, first_tick, last_tick, gap_before)

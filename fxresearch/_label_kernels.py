"""Compiled label kernels: per-entry barriers and horizons, open-market time and Wilder's ATR.

These kernels take and return numpy arrays and plain numbers only. Exits come from
``fxresearch._fill_kernels.label_entries_nb``, so labels and backtests share one set of fill
rules. This module only computes each entry's horizon end and the ATR its levels may use.
"""

from __future__ import annotations

import numpy as np
from numba import njit


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

"""Compiled kernel that spreads trade P&L over trading days by marking open trades to market.

The kernel takes and returns numpy arrays and plain numbers only. ``fxresearch.daily``
validates the trades, finds each trade's entry and exit day column and wraps the result.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def daily_pnl_nb(
    trade_strategy: np.ndarray, entry_column: np.ndarray, exit_column: np.ndarray,
    entry_price: np.ndarray, exit_price: np.ndarray, side: np.ndarray, long_mark: np.ndarray,
    short_mark: np.ndarray, pip_size: float, n_strategies: int, n_days: int,
) -> np.ndarray:
    """Return the strategies x days matrix of P&L in pips, open trades marked at each day end.

    A trade adds ``(mark[d] - previous) * side / pip_size`` to each day ``d`` from its entry
    column up to the day before its exit column, where ``previous`` starts at the entry price
    and then becomes the last mark. Its exit day gets ``(exit_price - previous) * side /
    pip_size``, so the days of one trade sum to ``(exit_price - entry_price) * side / pip_size``.
    Longs use ``long_mark`` and shorts ``short_mark``, one price per day column.
    """
    pnl = np.zeros((n_strategies, n_days), dtype=np.float64)
    for k in range(trade_strategy.shape[0]):
        strategy = trade_strategy[k]
        direction = side[k]
        previous = entry_price[k]
        for day in range(entry_column[k], exit_column[k]):
            if direction > 0:
                mark = long_mark[day]
            else:
                mark = short_mark[day]
            pnl[strategy, day] += (mark - previous) * direction / pip_size
            previous = mark
        pnl[strategy, exit_column[k]] += (exit_price[k] - previous) * direction / pip_size
    return pnl

"""Compiled backtest kernel: per-strategy signal walks whose exits come from the fill kernel.

The kernel takes and returns numpy arrays and plain numbers only. ``fxresearch.backtest``
validates the input, states the trading rules and converts points to prices and pips. Every
exit by stop-loss, take-profit, horizon, data hole or end of data comes from
``fxresearch._fill_kernels.find_exit_bars_nb``, or from the plain tick scan
``find_exit_ticks_nb`` when ``tick_scan`` is set (the reference the benchmark times). This
module only decides when a trade opens and when an opposite signal closes it.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from fxresearch._fill_kernels import NO_HORIZON_NS, OPEN_AT_LIMIT, SIGNAL, find_exit_bars_nb, find_exit_ticks_nb


@njit(cache=True)
def _horizon_end_ns(entry_time_ns: int, horizon_ns: int):
    # Saturate instead of overflowing int64 when there is no horizon.
    if horizon_ns >= NO_HORIZON_NS - entry_time_ns:
        return NO_HORIZON_NS
    return entry_time_ns + horizon_ns


@njit(cache=True)
def _walk_strategy_nb(
    timestamp_ns: np.ndarray, bid_pts: np.ndarray, ask_pts: np.ndarray, hole_after: np.ndarray,
    bar_first: np.ndarray, bar_last: np.ndarray, bar_bid_low_pts: np.ndarray,
    bar_bid_high_pts: np.ndarray, bar_ask_low_pts: np.ndarray, bar_ask_high_pts: np.ndarray,
    bar_has_hole: np.ndarray, bar_end_ns: np.ndarray, bar_entry_idx: np.ndarray,
    signal_bar: np.ndarray, signal_side: np.ndarray, first_signal: int, end_signal: int,
    stop_points: int, target_points: int, horizon_ns: int, tick_scan: bool, out_side: np.ndarray,
    out_signal_bar: np.ndarray, out_entry_idx: np.ndarray, out_entry_pts: np.ndarray,
    out_exit_idx: np.ndarray, out_exit_pts: np.ndarray, out_reason: np.ndarray, out_start: int,
):
    """Walk one strategy's signals ``first_signal .. end_signal - 1``; return its trade count.

    Trades are written from row ``out_start``. Each trade opens from a distinct signal, so
    the rows needed are at most ``end_signal - first_signal``.
    """
    n_ticks = len(timestamp_ns)
    n_trades = 0
    # An entry tick earlier than this is ignored: it would fall inside the last trade.
    min_entry_idx = 0
    k = first_signal
    while k < end_signal:
        entry_idx = bar_entry_idx[signal_bar[k]]
        # Entry ticks rise with the bar index, so no later signal has a tick either.
        if entry_idx >= n_ticks:
            break
        if entry_idx < min_entry_idx:
            k += 1
            continue

        side = np.int64(signal_side[k])
        trade_bar = signal_bar[k]
        k += 1
        while True:
            # The next opposite signal, if it has an entry tick, is where the scan must stop.
            j = k
            while j < end_signal and signal_side[j] == side:
                j += 1
            limit_idx = n_ticks
            if j < end_signal:
                limit_idx = bar_entry_idx[signal_bar[j]]

            if side > 0:
                entry_pts = ask_pts[entry_idx]
            else:
                entry_pts = bid_pts[entry_idx]
            stop_pts = entry_pts - side * stop_points
            target_pts = entry_pts + side * target_points
            horizon_end_ns = _horizon_end_ns(timestamp_ns[entry_idx], horizon_ns)
            if tick_scan:
                exit_idx, exit_pts, reason = find_exit_ticks_nb(
                    timestamp_ns, bid_pts, ask_pts, hole_after,
                    entry_idx, side, stop_pts, target_pts, horizon_end_ns, limit_idx,
                )
            else:
                exit_idx, exit_pts, reason = find_exit_bars_nb(
                    timestamp_ns, bid_pts, ask_pts, hole_after,
                    entry_idx, side, stop_pts, target_pts, horizon_end_ns, limit_idx,
                    bar_first, bar_last, bar_bid_low_pts, bar_bid_high_pts, bar_ask_low_pts,
                    bar_ask_high_pts, bar_has_hole, bar_end_ns,
                )

            row = out_start + n_trades
            out_side[row] = side
            out_signal_bar[row] = trade_bar
            out_entry_idx[row] = entry_idx
            out_entry_pts[row] = entry_pts
            out_exit_idx[row] = exit_idx
            out_exit_pts[row] = exit_pts
            n_trades += 1

            if reason != OPEN_AT_LIMIT:
                out_reason[row] = reason
                min_entry_idx = exit_idx
                # Same-direction signals after k may come after this exit, so resume at k.
                break

            # Stop and reverse: the kernel closed the trade at the opposite signal's entry tick
            # at the trigger-side price, and the new trade enters at that same tick.
            out_reason[row] = SIGNAL
            side = -side
            entry_idx = limit_idx
            trade_bar = signal_bar[j]
            k = j + 1
    return n_trades


@njit(cache=True, parallel=True)
def run_strategies_nb(
    timestamp_ns: np.ndarray, bid_pts: np.ndarray, ask_pts: np.ndarray, hole_after: np.ndarray,
    bar_first: np.ndarray, bar_last: np.ndarray, bar_bid_low_pts: np.ndarray,
    bar_bid_high_pts: np.ndarray, bar_ask_low_pts: np.ndarray, bar_ask_high_pts: np.ndarray,
    bar_has_hole: np.ndarray, bar_end_ns: np.ndarray, bar_entry_idx: np.ndarray,
    signal_offsets: np.ndarray, signal_bar: np.ndarray, signal_side: np.ndarray,
    strategy_row: np.ndarray, stop_points: np.ndarray, target_points: np.ndarray, horizon_ns: int,
    out_offsets: np.ndarray, tick_scan: bool = False,
) -> tuple[np.ndarray, ...]:
    """Backtest many strategies in parallel, one ``prange`` iteration per strategy.

    Signals are stored by row in CSR form: row r contains ``signal_bar`` and ``signal_side``
    entries ``signal_offsets[r] .. signal_offsets[r + 1] - 1``, in bar order, sides +1/-1
    only. Strategy s reads row ``strategy_row[s]`` and writes its trades from
    ``out_offsets[s]``; ``out_offsets[s + 1] - out_offsets[s]`` must be at least the number
    of signals in its row. Strategies share no state, so the result does not depend on the
    number of threads.

    Returns
    -------
    (n_trades, side, signal_bar, entry_idx, entry_pts, exit_idx, exit_pts, reason)
        ``n_trades[s]`` rows from ``out_offsets[s]`` are filled; the rest are undefined.
    """
    n_strategies = len(strategy_row)
    n_rows = out_offsets[n_strategies]
    n_trades = np.zeros(n_strategies, dtype=np.int64)
    out_side = np.empty(n_rows, dtype=np.int8)
    out_signal_bar = np.empty(n_rows, dtype=np.int64)
    out_entry_idx = np.empty(n_rows, dtype=np.int64)
    out_entry_pts = np.empty(n_rows, dtype=np.int64)
    out_exit_idx = np.empty(n_rows, dtype=np.int64)
    out_exit_pts = np.empty(n_rows, dtype=np.int64)
    out_reason = np.empty(n_rows, dtype=np.int8)
    for s in prange(n_strategies):
        row = strategy_row[s]
        n_trades[s] = _walk_strategy_nb(
            timestamp_ns, bid_pts, ask_pts, hole_after,
            bar_first, bar_last, bar_bid_low_pts, bar_bid_high_pts, bar_ask_low_pts,
            bar_ask_high_pts, bar_has_hole, bar_end_ns,
            bar_entry_idx, signal_bar, signal_side, signal_offsets[row], signal_offsets[row + 1],
            stop_points[s], target_points[s], horizon_ns, tick_scan,
            out_side, out_signal_bar, out_entry_idx, out_entry_pts, out_exit_idx, out_exit_pts,
            out_reason, out_offsets[s],
        )
    return (n_trades, out_side, out_signal_bar, out_entry_idx, out_entry_pts, out_exit_idx,
            out_exit_pts, out_reason)

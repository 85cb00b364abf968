"""Compiled fill kernels: where a trade exits and why, in integer price points.

The fill rules are stated once, in the docstring of ``fxresearch.fills``. These kernels take
and return numpy arrays and plain numbers only. ``find_exit_ticks_nb`` is the plain tick scan
and the reference. ``find_exit_bars_nb`` returns the same result while skipping one-minute
bars that cannot hold an exit. ``label_entries_nb`` runs the bar walk for many entries in
parallel, each with its own levels and horizon end; ``label_many_nb`` gives them all the same.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

# Exit reason codes. fills.REASONS lists their names in this order.
STOP_LOSS = 0
TAKE_PROFIT = 1
HORIZON = 2
DATA_GAP = 3
END_OF_DATA = 4
SIGNAL = 5
NO_ENTRY = 6
# Returned when the trade is still open at the tick ``stop_idx_limit``.
OPEN_AT_LIMIT = -1
# Internal only: the scanned ticks hold no exit.
_STILL_OPEN = -2

# A horizon end that no tick reaches, for trades without a horizon.
NO_HORIZON_NS = np.iinfo(np.int64).max


@njit(cache=True)
def _trigger_price_pts(bid_pts: np.ndarray, ask_pts: np.ndarray, i: int, side: int):
    # A long closes by selling at the bid, a short by buying at the ask.
    if side > 0:
        return bid_pts[i]
    return ask_pts[i]


@njit(cache=True)
def _check_levels_nb(
    timestamp_ns: np.ndarray, bid_pts: np.ndarray, ask_pts: np.ndarray, i: int, side: int,
    stop_pts: int, target_pts: int, horizon_end_ns: int,
):
    """Return (reason, price_pts) for tick i: stop first, then target, then horizon."""
    price = _trigger_price_pts(bid_pts, ask_pts, i, side)
    if side > 0:
        # A stop is a market order once touched, so a jump through it fills at the worse tick.
        if price <= stop_pts:
            return STOP_LOSS, price
        # A target is a limit order, so it fills at its level even when the tick jumps past it.
        if price >= target_pts:
            return TAKE_PROFIT, target_pts
    else:
        if price >= stop_pts:
            return STOP_LOSS, price
        if price <= target_pts:
            return TAKE_PROFIT, target_pts
    if timestamp_ns[i] >= horizon_end_ns:
        return HORIZON, price
    return _STILL_OPEN, 0


@njit(cache=True)
def _check_open_trade_nb(hole_after: np.ndarray, i: int, n_ticks: int, stop_idx_limit: int):
    """Return the reason an open trade stops at tick i after its level checks, or _STILL_OPEN."""
    if i >= stop_idx_limit:
        return OPEN_AT_LIMIT
    # The next tick lies across a data hole, so the last known quote is this one.
    if hole_after[i] != 0:
        return DATA_GAP
    if i == n_ticks - 1:
        return END_OF_DATA
    return _STILL_OPEN


@njit(cache=True)
def _scan_ticks_nb(
    timestamp_ns: np.ndarray, bid_pts: np.ndarray, ask_pts: np.ndarray, hole_after: np.ndarray, first: int, last: int,
    side: int, stop_pts: int, target_pts: int, horizon_end_ns: int, stop_idx_limit: int,
):
    """Scan ticks first..last inclusive; return (exit_idx, exit_price_pts, reason)."""
    n_ticks = len(timestamp_ns)
    for i in range(first, last + 1):
        reason, price = _check_levels_nb(
            timestamp_ns, bid_pts, ask_pts, i, side, stop_pts, target_pts, horizon_end_ns
        )
        if reason != _STILL_OPEN:
            return i, price, reason
        reason = _check_open_trade_nb(hole_after, i, n_ticks, stop_idx_limit)
        if reason != _STILL_OPEN:
            return i, _trigger_price_pts(bid_pts, ask_pts, i, side), reason
    return -1, 0, _STILL_OPEN


@njit(cache=True)
def _check_entry_tick_nb(
    bid_pts: np.ndarray, ask_pts: np.ndarray, hole_after: np.ndarray, entry_idx: int, side: int,
    stop_idx_limit: int,
):
    """Return the exit at the entry tick itself (no entry, limit, hole, end) or _STILL_OPEN."""
    n_ticks = len(bid_pts)
    if entry_idx < 0 or entry_idx >= n_ticks:
        return -1, 0, NO_ENTRY
    reason = _check_open_trade_nb(hole_after, entry_idx, n_ticks, stop_idx_limit)
    if reason != _STILL_OPEN:
        return entry_idx, _trigger_price_pts(bid_pts, ask_pts, entry_idx, side), reason
    return -1, 0, _STILL_OPEN


@njit(cache=True)
def find_exit_ticks_nb(
    timestamp_ns: np.ndarray, bid_pts: np.ndarray, ask_pts: np.ndarray, hole_after: np.ndarray,
    entry_idx: int, side: int, stop_pts: int, target_pts: int, horizon_end_ns: int, stop_idx_limit: int,
) -> tuple[int, int, int]:
    """Find a trade's exit by checking every tick after the entry tick.

    Parameters
    ----------
    timestamp_ns, bid_pts, ask_pts : int64 arrays
        Ticks sorted by time, prices in integer points.
    hole_after : uint8 array
        1 at tick i when the gap to tick i + 1 is a data hole.
    entry_idx : int
        Entry tick. A value outside ``0 .. n - 1`` returns ``(-1, 0, NO_ENTRY)``.
    side : int
        +1 long, -1 short.
    stop_pts, target_pts : int
        Stop-loss and take-profit levels in points, on the trigger side (bid for a long).
    horizon_end_ns : int
        Exit at the first tick at or after this time; ``NO_HORIZON_NS`` for none.
    stop_idx_limit : int
        Last tick to check. If the trade is still open after the stop, target and horizon
        checks of this tick, the scan returns it with its trigger-side price and reason
        ``OPEN_AT_LIMIT`` (-1). That reason wins over a data hole or the end of the data at
        the same tick. Pass ``len(timestamp_ns)`` for no limit.

    Returns
    -------
    (exit_idx, exit_price_pts, reason)
    """
    exit_idx, price, reason = _check_entry_tick_nb(
        bid_pts, ask_pts, hole_after, entry_idx, side, stop_idx_limit
    )
    if reason != _STILL_OPEN:
        return exit_idx, price, reason
    # The end of the data always stops the scan, so the result cannot be _STILL_OPEN.
    return _scan_ticks_nb(
        timestamp_ns, bid_pts, ask_pts, hole_after, entry_idx + 1, len(timestamp_ns) - 1,
        side, stop_pts, target_pts, horizon_end_ns, stop_idx_limit,
    )


@njit(cache=True)
def _bar_may_hold_exit_nb(
    b: int, side: int, stop_pts: int, target_pts: int, horizon_end_ns: int, stop_idx_limit: int,
    bar_first: np.ndarray, bar_last: np.ndarray, bar_bid_low_pts: np.ndarray,
    bar_bid_high_pts: np.ndarray, bar_ask_low_pts: np.ndarray, bar_ask_high_pts: np.ndarray,
    bar_has_hole: np.ndarray, bar_end_ns: np.ndarray,
):
    """Return True when bar b must be read tick by tick."""
    if bar_has_hole[b] != 0:
        return True
    if bar_end_ns[b] >= horizon_end_ns:
        return True
    if bar_first[b] <= stop_idx_limit <= bar_last[b]:
        return True
    if side > 0:
        return bar_bid_low_pts[b] <= stop_pts or bar_bid_high_pts[b] >= target_pts
    return bar_ask_high_pts[b] >= stop_pts or bar_ask_low_pts[b] <= target_pts


@njit(cache=True)
def find_exit_bars_nb(
    timestamp_ns: np.ndarray, bid_pts: np.ndarray, ask_pts: np.ndarray, hole_after: np.ndarray,
    entry_idx: int, side: int, stop_pts: int, target_pts: int, horizon_end_ns: int,
    stop_idx_limit: int, bar_first: np.ndarray, bar_last: np.ndarray, bar_bid_low_pts: np.ndarray,
    bar_bid_high_pts: np.ndarray, bar_ask_low_pts: np.ndarray, bar_ask_high_pts: np.ndarray,
    bar_has_hole: np.ndarray, bar_end_ns: np.ndarray,
) -> tuple[int, int, int]:
    """Find a trade's exit like ``find_exit_ticks_nb``, reading ticks only in bars that need it.

    The bar arrays describe one-minute bars that cover every tick in order.
    ``bar_first[b]`` and ``bar_last[b]`` are the inclusive tick indices of bar b. The
    low/high arrays are the bar's bid and ask range in points. ``bar_has_hole[b]`` is 1 when
    any tick of the bar has ``hole_after`` set, and ``bar_end_ns[b]`` is the time of the bar's
    last tick. A bar is skipped whole when it does not hold the horizon time, a hole or the
    scan limit and its trigger-side range reaches neither level, because then no tick in it
    can end the trade. The result equals ``find_exit_ticks_nb`` on every input.
    """
    exit_idx, price, reason = _check_entry_tick_nb(
        bid_pts, ask_pts, hole_after, entry_idx, side, stop_idx_limit
    )
    if reason != _STILL_OPEN:
        return exit_idx, price, reason

    # The entry's own bar is read from the tick after the entry.
    entry_bar = np.searchsorted(bar_first, entry_idx, side="right") - 1
    exit_idx, price, reason = _scan_ticks_nb(
        timestamp_ns, bid_pts, ask_pts, hole_after, entry_idx + 1, bar_last[entry_bar],
        side, stop_pts, target_pts, horizon_end_ns, stop_idx_limit,
    )
    if reason != _STILL_OPEN:
        return exit_idx, price, reason

    for b in range(entry_bar + 1, len(bar_first)):
        if not _bar_may_hold_exit_nb(
            b, side, stop_pts, target_pts, horizon_end_ns, stop_idx_limit,
            bar_first, bar_last, bar_bid_low_pts, bar_bid_high_pts, bar_ask_low_pts,
            bar_ask_high_pts, bar_has_hole, bar_end_ns,
        ):
            continue
        exit_idx, price, reason = _scan_ticks_nb(
            timestamp_ns, bid_pts, ask_pts, hole_after, bar_first[b], bar_last[b],
            side, stop_pts, target_pts, horizon_end_ns, stop_idx_limit,
        )
        if reason != _STILL_OPEN:
            return exit_idx, price, reason

    # Only a skipped last bar gets here: the tick scan would close at the last tick.
    last = len(timestamp_ns) - 1
    return last, _trigger_price_pts(bid_pts, ask_pts, last, side), END_OF_DATA


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
def label_many_nb(
    timestamp_ns: np.ndarray, bid_pts: np.ndarray, ask_pts: np.ndarray, hole_after: np.ndarray,
    bar_first: np.ndarray, bar_last: np.ndarray, bar_bid_low_pts: np.ndarray,
    bar_bid_high_pts: np.ndarray, bar_ask_low_pts: np.ndarray, bar_ask_high_pts: np.ndarray,
    bar_has_hole: np.ndarray, bar_end_ns: np.ndarray, entry_idx: np.ndarray, side: int,
    take_profit_points: int, stop_loss_points: int, horizon_ns: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Find the exit of one (take-profit, stop-loss, horizon, side) trade from each entry tick.

    The same levels for every entry, and a horizon counted in wall-clock nanoseconds from
    each entry tick; ``label_entries_nb`` does the work.

    Returns
    -------
    (exit_idx int64, exit_price_pts int64, reason int8) arrays, one value per entry.
    """
    n_entries = len(entry_idx)
    n_ticks = len(timestamp_ns)
    horizon_end_ns = np.full(n_entries, NO_HORIZON_NS, dtype=np.int64)
    for k in range(n_entries):
        entry = entry_idx[k]
        if 0 <= entry < n_ticks and horizon_ns < NO_HORIZON_NS - timestamp_ns[entry]:
            horizon_end_ns[k] = timestamp_ns[entry] + horizon_ns
    return label_entries_nb(
        timestamp_ns, bid_pts, ask_pts, hole_after, bar_first, bar_last, bar_bid_low_pts,
        bar_bid_high_pts, bar_ask_low_pts, bar_ask_high_pts, bar_has_hole, bar_end_ns, entry_idx, side,
        np.full(n_entries, take_profit_points, dtype=np.int64),
        np.full(n_entries, stop_loss_points, dtype=np.int64), horizon_end_ns,
    )

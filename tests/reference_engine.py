"""A plain tick-by-tick backtest of one strategy, written to be read, not to be fast.

It restates the rules of ``fxresearch.fills`` and ``fxresearch.backtest`` without the numba
kernels, the one-minute bar index or numpy vector code, so that a test can compare the fast
engine with it trade for trade. Prices are integer points, times int64 nanoseconds UTC.

Rules, in the order they act on each tick ``i``:

1. A trade that entered before tick ``i`` checks its levels on the trigger side, the bid for
   a long and the ask for a short. The stop comes first and fills at the tick's price, then
   the target at its own level, then the horizon at the tick's price.
2. Signals whose entry tick is ``i`` act in bar order. With no open trade, a signal opens
   one at the ask (long) or bid (short). With an open trade, an opposite signal among them
   closes it at the trigger-side price with reason ``signal`` and opens its own trade, and
   same-side signals before that opposite one are ignored.
3. A trade still open at tick ``i`` whose next tick lies across a data hole exits with reason
   ``data_gap``; at the last tick it exits with ``end_of_data``. Both fill at the
   trigger-side price. Any same-side signal left at ``i`` then opens a trade at ``i``, which
   meets the same hole or end at once.

Before the walk each signal is skipped, for the first reason that applies, when no tick
follows its bar's close (``no_tick``), when its entry tick is more than ``max_delay_ns``
after the close (``late``), when the entry tick's New York minute of the day falls in a
no-entry window (``no_entry_window``), or when its spread in points is above
``max_spread_points`` (``wide_spread``). A skipped signal neither opens nor closes a trade.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

NEW_YORK = ZoneInfo("America/New_York")
NS_PER_SECOND = 1_000_000_000
NS_PER_MINUTE = 60 * NS_PER_SECOND


@dataclass
class ReferenceTrade:
    side: int
    signal_bar: int
    entry_idx: int
    entry_pts: int
    exit_idx: int
    exit_pts: int
    reason: str


@dataclass
class _OpenTrade:
    side: int
    signal_bar: int
    entry_idx: int
    entry_pts: int
    stop_pts: int
    target_pts: int
    horizon_end_ns: int | None


def new_york_minute_of_day(timestamp_ns: int) -> int:
    """Return the minute of the day in New York, 0..1439, of a UTC nanosecond time."""
    moment = datetime.fromtimestamp(timestamp_ns // NS_PER_SECOND, tz=timezone.utc).astimezone(NEW_YORK)
    return moment.hour * 60 + moment.minute


def in_window(minute: int, window: tuple[str, str]) -> bool:
    """Return True when ``minute`` lies in [start, end) of an "HH:MM" window that may wrap midnight."""
    start = int(window[0][:2]) * 60 + int(window[0][3:])
    end = int(window[1][:2]) * 60 + int(window[1][3:])
    if start < end:
        return start <= minute < end
    return minute >= start or minute < end


def reference_backtest(
    timestamp_ns: list[int],
    bid_pts: list[int],
    ask_pts: list[int],
    hole_after: list[int],
    bar_open_ns: list[int],
    timeframe_min: int,
    signal: list[int],
    stop_points: int,
    target_points: int,
    horizon_ns: int | None,
    max_spread_points: float = 0.0,
    max_delay_ns: int = 0,
    no_entry_windows: tuple[tuple[str, str], ...] = (),
) -> tuple[list[ReferenceTrade], dict[str, int]]:
    """Backtest one strategy tick by tick; return its trades and its skipped signals by reason.

    A limit of 0 turns the spread or delay filter off, and ``horizon_ns=None`` means no horizon.
    """
    n_ticks = len(timestamp_ns)
    skips = {"no_tick": 0, "late": 0, "no_entry_window": 0, "wide_spread": 0}

    # Signals that pass the filters, grouped by entry tick in bar order.
    signals_at: dict[int, list[tuple[int, int]]] = {}
    for bar, side in enumerate(signal):
        if side == 0:
            continue
        close_ns = bar_open_ns[bar] + timeframe_min * NS_PER_MINUTE
        entry = bisect_left(timestamp_ns, close_ns)
        if entry == n_ticks:
            skips["no_tick"] += 1
        elif max_delay_ns > 0 and timestamp_ns[entry] - close_ns > max_delay_ns:
            skips["late"] += 1
        elif any(in_window(new_york_minute_of_day(timestamp_ns[entry]), w) for w in no_entry_windows):
            skips["no_entry_window"] += 1
        elif max_spread_points > 0 and ask_pts[entry] - bid_pts[entry] > max_spread_points:
            skips["wide_spread"] += 1
        else:
            signals_at.setdefault(entry, []).append((bar, side))

    trades: list[ReferenceTrade] = []
    position: _OpenTrade | None = None

    def trigger_price(i: int, side: int) -> int:
        return bid_pts[i] if side > 0 else ask_pts[i]

    def open_trade(i: int, bar: int, side: int) -> _OpenTrade:
        entry_pts = ask_pts[i] if side > 0 else bid_pts[i]
        horizon_end = None if horizon_ns is None else timestamp_ns[i] + horizon_ns
        return _OpenTrade(side, bar, i, entry_pts, entry_pts - side * stop_points,
                          entry_pts + side * target_points, horizon_end)

    def close_trade(trade: _OpenTrade, i: int, exit_pts: int, reason: str) -> None:
        trades.append(ReferenceTrade(trade.side, trade.signal_bar, trade.entry_idx, trade.entry_pts,
                                     i, exit_pts, reason))

    for i in range(n_ticks):
        # 1. Levels of a trade entered on an earlier tick.
        if position is not None and position.entry_idx < i:
            price = trigger_price(i, position.side)
            if position.side > 0:
                hit_stop, hit_target = price <= position.stop_pts, price >= position.target_pts
            else:
                hit_stop, hit_target = price >= position.stop_pts, price <= position.target_pts
            if hit_stop:
                close_trade(position, i, price, "stop_loss")
                position = None
            elif hit_target:
                close_trade(position, i, position.target_pts, "take_profit")
                position = None
            elif position.horizon_end_ns is not None and timestamp_ns[i] >= position.horizon_end_ns:
                close_trade(position, i, price, "horizon")
                position = None

        # 2 and 3. Signals of this tick, then a hole or the end of the data.
        queue = signals_at.get(i, [])
        next_signal = 0
        while True:
            if position is None:
                if next_signal == len(queue):
                    break
                bar, side = queue[next_signal]
                position = open_trade(i, bar, side)
                next_signal += 1
                continue
            opposite = next((k for k in range(next_signal, len(queue)) if queue[k][1] != position.side), None)
            if opposite is not None:
                close_trade(position, i, trigger_price(i, position.side), "signal")
                bar, side = queue[opposite]
                position = open_trade(i, bar, side)
                next_signal = opposite + 1
                continue
            if hole_after[i]:
                close_trade(position, i, trigger_price(i, position.side), "data_gap")
                position = None
                continue
            if i == n_ticks - 1:
                close_trade(position, i, trigger_price(i, position.side), "end_of_data")
                position = None
                continue
            break
    return trades, skips

"""Tick-level backtests of many strategies on one pair, with exits from the shared fill kernel.

Trading rules, for each strategy on its own:

- A signal on bar t (+1 long, -1 short) acts at the entry tick: the first tick at or after
  the bar's close, ``open + timeframe``. A long enters at the ask, a short at the bid.
- Entry filters (``EntryFilter``, from ``SearchConfig``) skip a signal, never delay it. A
  skipped signal counts as absent: it neither opens a trade nor closes one by reversal. A
  signal is skipped, for the first reason that applies, when its bar's close has no tick
  after it (``no_tick``), when its entry tick comes more than ``max_delay_minutes`` after
  the close (``late``, so a Friday signal does not fill at the Sunday open), when the entry
  tick's New York time of day falls in a no-entry window (``no_entry_window``), or when the
  entry tick's spread is above ``max_spread_pips`` (``wide_spread``).
- One position at a time. A signal in the direction of the open trade is ignored, and so is
  any signal whose entry tick comes before the open trade's exit tick. A signal whose entry
  tick is the exit tick itself opens the next trade there. When several signals share one
  entry tick, an opposite one among them reverses the open trade before a data hole or the
  end of the data can close it there.
- Stop and reverse: an opposite signal closes the open trade at its own entry tick, at the
  trigger-side price (the bid for a long, the ask for a short), with reason ``signal``. The
  opposite trade opens at that same tick. A stop-loss, take-profit or horizon reached on
  that tick comes first: the trade exits by the fill kernel and the opposite trade still opens
  there.
- Otherwise the fill kernel (``fxresearch.fills``) closes the trade: stop-loss, take-profit,
  horizon of ``horizon_minutes`` from the entry tick, a data hole, or the end of the data.
  Stop-loss and take-profit distances are whole points, ``round(pips * points_per_pip)``.
- Pips are ``(exit - entry) * side`` in points divided by the points per pip. No commission
  or swap is charged; the spread is paid through the bid/ask fills.

Strategies run in parallel in a numba ``prange`` over ``workers`` threads. They share no
state, so the trades are identical for any thread count.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields

import numba
import numpy as np
import pandas as pd

from fxresearch._backtest_kernels import run_strategies_nb
from fxresearch.bars import bar_close_ns, entry_tick_index
from fxresearch.config import SearchConfig
from fxresearch.fills import REASONS, TickArrays, horizon_to_ns, pips_to_points, points_to_pips, points_to_price
from fxresearch.instruments import Instrument
from fxresearch.strategies import Strategy
from fxresearch.timeutil import NEW_YORK, NS_PER_DAY, NS_PER_MINUTE, index_to_ns, to_local

logger = logging.getLogger(__name__)

# Signal entries per kernel call. The kernel's output arrays take 42 bytes per entry.
MAX_SIGNALS_PER_CALL = 2_000_000

# Reasons an entry filter skips a signal, in the order they are checked. A skip code k > 0
# from ``entry_checks`` is SKIP_REASONS[k - 1], and 0 allows the entry.
SKIP_REASONS: tuple[str, ...] = ("no_tick", "late", "no_entry_window", "wide_spread")


@dataclass(frozen=True)
class EntryFilter:
    """Rules that skip a signal at its entry tick. A limit of 0 and an empty window list turn a rule off.

    ``max_spread_pips`` caps the entry tick's spread, ``max_delay_minutes`` the time from the
    bar close to the entry tick, and ``no_entry_windows`` lists ("HH:MM", "HH:MM") spans of
    New York time, start included and end excluded, where no trade may enter. A window whose
    start is after its end wraps midnight.
    """

    max_spread_pips: float = 0.0
    max_delay_minutes: float = 0.0
    no_entry_windows: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        for name in ("max_spread_pips", "max_delay_minutes"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"EntryFilter {name} = {getattr(self, name)!r} must be 0 (no limit) or positive")
        for window in self.no_entry_windows:
            self._window_ns(window)

    @classmethod
    def from_search(cls, search: SearchConfig) -> EntryFilter:
        """Return the filter that ``search`` sets.

        The fields read are ``max_entry_spread_pips``, ``max_entry_delay_minutes`` and ``no_entry_windows``.
        """
        return cls(search.max_entry_spread_pips, search.max_entry_delay_minutes, tuple(search.no_entry_windows))

    @staticmethod
    def _window_ns(window: tuple[str, str]) -> tuple[int, int]:
        """Return a window's start and end as nanoseconds after New York midnight."""
        bounds = []
        for text in window:
            if not (isinstance(text, str) and re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", text)):
                raise ValueError(f"No-entry window {window!r} has time {text!r}; write it as HH:MM from 00:00 to 23:59")
            bounds.append((int(text[:2]) * 60 + int(text[3:])) * NS_PER_MINUTE)
        if len(bounds) != 2 or bounds[0] == bounds[1]:
            raise ValueError(f"No-entry window {window!r} must be two different HH:MM times")
        return bounds[0], bounds[1]

    def in_windows(self, timestamp_ns: np.ndarray) -> np.ndarray:
        """Return True where a UTC time falls in a no-entry window, read in New York time."""
        timestamp_ns = np.asarray(timestamp_ns, dtype=np.int64)
        inside = np.zeros(len(timestamp_ns), dtype=bool)
        if not self.no_entry_windows or not len(timestamp_ns):
            return inside
        local_ns = index_to_ns(to_local(timestamp_ns, NEW_YORK).tz_localize(None))
        time_of_day_ns = np.mod(local_ns, NS_PER_DAY)
        for window in self.no_entry_windows:
            start_ns, end_ns = self._window_ns(window)
            if start_ns < end_ns:
                inside |= (time_of_day_ns >= start_ns) & (time_of_day_ns < end_ns)
            else:
                inside |= (time_of_day_ns >= start_ns) | (time_of_day_ns < end_ns)
        return inside


@dataclass(frozen=True)
class EntrySkips:
    """Signals skipped by the entry filters: one int64 count per strategy for each of ``SKIP_REASONS``.

    A count is of signal bars removed before the trades are walked, so it includes skipped
    signals that would have been ignored anyway, such as a repeat of the open trade's side.
    """

    no_tick: np.ndarray
    late: np.ndarray
    no_entry_window: np.ndarray
    wide_spread: np.ndarray

    def totals(self) -> dict[str, int]:
        """Return the skipped signals summed over strategies, keyed by reason."""
        return {reason: int(getattr(self, reason).sum()) for reason in SKIP_REASONS}


@dataclass(frozen=True)
class Trades:
    """Columnar trades of many strategies, one element per trade.

    Sorted by strategy index, then by entry tick. Times are int64 nanoseconds UTC, prices
    float64 in quote currency, ``reason`` an index into ``fxresearch.fills.REASONS``.
    ``entry_skips`` is not a column: ``run_backtests`` sets it to the signals its entry
    filters skipped, and ``select`` keeps it unchanged.
    """

    strategy_index: np.ndarray
    side: np.ndarray
    signal_bar: np.ndarray
    entry_idx: np.ndarray
    entry_time_ns: np.ndarray
    entry_price: np.ndarray
    exit_idx: np.ndarray
    exit_time_ns: np.ndarray
    exit_price: np.ndarray
    reason: np.ndarray
    pips: np.ndarray
    entry_skips: EntrySkips | None = field(default=None, compare=False, repr=False)

    def __len__(self) -> int:
        return len(self.strategy_index)

    def to_frame(self) -> pd.DataFrame:
        """Return the trades as a DataFrame.

        ``entry_time`` and ``exit_time`` are int64 ns UTC (from ``entry_time_ns`` and
        ``exit_time_ns``), and ``reason`` becomes its name (``stop_loss``, ``signal``, ...).
        """
        frame = pd.DataFrame({name.removesuffix("_ns"): getattr(self, name) for name in TRADE_COLUMNS})
        frame["reason"] = np.asarray(REASONS, dtype=object)[self.reason.astype(np.int64)]
        return frame

    def select(self, mask: np.ndarray) -> Trades:
        """Return the trades where ``mask`` is True (a boolean array or index array)."""
        columns = {name: getattr(self, name)[mask] for name in TRADE_COLUMNS}
        return Trades(**columns, entry_skips=self.entry_skips)


# The per-trade array fields of Trades, in order.
TRADE_COLUMNS: tuple[str, ...] = tuple(item.name for item in fields(Trades) if item.name != "entry_skips")


def entry_checks(tick_arrays: TickArrays, bars: pd.DataFrame, timeframe_min: int,
                 entry_filter: EntryFilter) -> tuple[np.ndarray, np.ndarray]:
    """Find each bar's entry tick and whether the entry filters let a signal on it trade.

    Returns
    -------
    (entry_idx, skip_code)
        int64 entry tick per bar (``len(ticks)`` when no tick follows the close) and an int8
        code per bar: 0 allows the entry, k > 0 skips it for ``SKIP_REASONS[k - 1]``, the
        first reason in that order that applies.
    """
    timestamp_ns = tick_arrays.timestamp_ns
    n_ticks = len(timestamp_ns)
    entry_idx = entry_tick_index(timestamp_ns, bars, timeframe_min)
    has_tick = entry_idx < n_ticks
    safe_idx = np.minimum(entry_idx, n_ticks - 1)
    entry_ns = timestamp_ns[safe_idx]

    late = np.zeros(len(entry_idx), dtype=bool)
    if entry_filter.max_delay_minutes > 0:
        max_delay_ns = int(round(entry_filter.max_delay_minutes * NS_PER_MINUTE))
        late = entry_ns - bar_close_ns(bars, timeframe_min) > max_delay_ns
    in_window = entry_filter.in_windows(entry_ns)
    wide = np.zeros(len(entry_idx), dtype=bool)
    if entry_filter.max_spread_pips > 0:
        # Compared in points; the rounding drops float noise such as 0.3 * 10 = 3.0000000000000004.
        max_spread_pts = round(entry_filter.max_spread_pips * tick_arrays.instrument.points_per_pip, 6)
        wide = tick_arrays.ask_pts[safe_idx] - tick_arrays.bid_pts[safe_idx] > max_spread_pts

    # Later assignments win, so the first reason in SKIP_REASONS order is the one recorded.
    skip_code = np.zeros(len(entry_idx), dtype=np.int8)
    skip_code[wide] = 4
    skip_code[in_window] = 3
    skip_code[late] = 2
    skip_code[~has_tick] = 1
    return entry_idx, skip_code


def run_backtests(
    tick_arrays: TickArrays,
    bars: pd.DataFrame,
    timeframe_min: int,
    strategies: Sequence[Strategy],
    signals_by_key: Mapping[tuple[str, str], np.ndarray],
    instrument: Instrument,
    horizon_minutes: float | None,
    workers: int = 1,
    entry_filter: EntryFilter | None = None,
    tick_scan: bool = False,
) -> Trades:
    """Backtest strategies on ticks: entries from per-bar signals, exits from the fill kernel.

    Parameters
    ----------
    tick_arrays : TickArrays
        From ``fills.prepare_tick_arrays`` for ``instrument``, on the ticks the bars came from.
    bars : pd.DataFrame
        Bars of ``timeframe_min`` minutes with int64 ns ``timestamp`` (bar open).
    strategies : sequence of Strategy
        Strategy s in the output is ``strategies[s]``.
    signals_by_key : mapping
        ``Strategy.signal_key`` -> int8 array with one value per bar: +1, -1 or 0.
    horizon_minutes : float or None
        Wall-clock minutes after the entry tick after which a trade exits; None for none.
    workers : int
        numba threads; capped at ``numba.config.NUMBA_NUM_THREADS``.
    entry_filter : EntryFilter or None
        Rules that skip signals at their entry tick; None skips only signals without a tick.
        ``EntryFilter.from_search(config.search)`` gives the configured rules.
    tick_scan : bool
        Find exits with the plain tick-by-tick scan instead of the one-minute bar walk. The
        trades are identical and slower to get; benchmarks use it as the reference.

    Returns
    -------
    Trades
        All trades, under the rules in this module's docstring, with the skipped signals per
        strategy and reason in ``entry_skips``.

    Raises
    ------
    ValueError
        On tick arrays of another instrument, a missing or malformed signal array, a
        non-positive stop-loss or take-profit, or ``workers < 1``.
    """
    if tick_arrays.instrument != instrument:
        raise ValueError(
            f"Tick arrays were prepared for {tick_arrays.instrument.symbol}, not {instrument.symbol}; "
            f"prepare them with the same instrument."
        )
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    n_bars = len(bars)
    horizon_ns = np.int64(horizon_to_ns(horizon_minutes))
    bar_entry_idx, bar_skip_code = entry_checks(tick_arrays, bars, timeframe_min, entry_filter or EntryFilter())

    # One CSR row of allowed signal bars per distinct signal array; SL/TP variants share a row.
    row_of_key: dict[tuple[str, str], int] = {}
    row_bars: list[np.ndarray] = []
    row_sides: list[np.ndarray] = []
    row_skips: list[np.ndarray] = []
    strategy_row = np.empty(len(strategies), dtype=np.int64)
    stop_points = np.empty(len(strategies), dtype=np.int64)
    target_points = np.empty(len(strategies), dtype=np.int64)
    for s, strategy in enumerate(strategies):
        key = strategy.signal_key
        if key not in row_of_key:
            signal = _check_signal(signals_by_key, key, n_bars)
            nonzero = np.flatnonzero(signal)
            skip_code = bar_skip_code[nonzero]
            allowed = nonzero[skip_code == 0]
            row_of_key[key] = len(row_bars)
            row_bars.append(allowed.astype(np.int64))
            row_sides.append(signal[allowed].astype(np.int8))
            row_skips.append(np.bincount(skip_code, minlength=len(SKIP_REASONS) + 1)[1:].astype(np.int64))
        strategy_row[s] = row_of_key[key]
        stop_points[s] = pips_to_points(strategy.stop_loss_pips, instrument)
        target_points[s] = pips_to_points(strategy.take_profit_pips, instrument)
        if stop_points[s] <= 0 or target_points[s] <= 0:
            raise ValueError(
                f"Strategy {strategy.strategy_id} ({strategy.family} {strategy.params_json}) has stop-loss "
                f"{strategy.stop_loss_pips} and take-profit {strategy.take_profit_pips} pips; both must be "
                f"at least one point ({instrument.point_size}) for {instrument.symbol}."
            )
    signal_counts = np.array([len(b) for b in row_bars], dtype=np.int64)
    signal_offsets = np.zeros(len(row_bars) + 1, dtype=np.int64)
    np.cumsum(signal_counts, out=signal_offsets[1:])
    signal_bar = np.concatenate(row_bars) if row_bars else np.empty(0, dtype=np.int64)
    signal_side = np.concatenate(row_sides) if row_sides else np.empty(0, dtype=np.int8)
    skip_counts = (np.stack(row_skips)[strategy_row] if row_skips
                   else np.zeros((0, len(SKIP_REASONS)), dtype=np.int64))
    entry_skips = EntrySkips(**{reason: skip_counts[:, k].copy() for k, reason in enumerate(SKIP_REASONS)})

    started = time.perf_counter()
    previous_threads = numba.get_num_threads()
    threads = min(int(workers), numba.config.NUMBA_NUM_THREADS)
    if threads < workers:
        logger.warning("workers=%d is above numba's thread limit; using %d threads", workers, threads)
    numba.set_num_threads(threads)
    try:
        parts = [
            _run_chunk(tick_arrays, bar_entry_idx, signal_offsets, signal_bar, signal_side,
                       strategy_row[chunk], stop_points[chunk], target_points[chunk], horizon_ns, chunk,
                       tick_scan)
            for chunk in _chunks(signal_counts[strategy_row], MAX_SIGNALS_PER_CALL)
        ]
    finally:
        numba.set_num_threads(previous_threads)

    trades = _assemble(parts, tick_arrays, instrument, entry_skips)
    logger.info(
        "Backtested %d strategies (%d distinct signal sets) on %s: %d trades in %.2f s with %d threads; "
        "signals skipped, summed over strategies: %s",
        len(strategies), len(row_bars), instrument.symbol, len(trades), time.perf_counter() - started, threads,
        entry_skips.totals(),
    )
    return trades


def _check_signal(signals_by_key: Mapping[tuple[str, str], np.ndarray], key: tuple[str, str],
                  n_bars: int) -> np.ndarray:
    if key not in signals_by_key:
        raise ValueError(f"No signal array for {key}; compute it with strategies.compute_signals.")
    signal = np.asarray(signals_by_key[key])
    if signal.shape != (n_bars,):
        raise ValueError(f"Signal array for {key} has shape {signal.shape}, expected ({n_bars},), one per bar.")
    bad = ~np.isin(signal, (-1, 0, 1))
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"Signal array for {key} has value {signal[first].item()!r} at bar {first}; allowed: -1, 0, +1."
        )
    return signal


def _chunks(capacity: np.ndarray, max_rows: int) -> list[np.ndarray]:
    """Split strategy indices into consecutive runs whose capacity sums stay near ``max_rows``."""
    chunks: list[np.ndarray] = []
    start = 0
    total = 0
    for s, rows in enumerate(capacity):
        if s > start and total + rows > max_rows:
            chunks.append(np.arange(start, s))
            start, total = s, 0
        total += int(rows)
    if len(capacity) > start:
        chunks.append(np.arange(start, len(capacity)))
    return chunks


def _run_chunk(tick_arrays: TickArrays, bar_entry_idx: np.ndarray, signal_offsets: np.ndarray,
               signal_bar: np.ndarray, signal_side: np.ndarray, strategy_row: np.ndarray,
               stop_points: np.ndarray, target_points: np.ndarray, horizon_ns: np.int64,
               strategy_index: np.ndarray, tick_scan: bool = False) -> dict[str, np.ndarray]:
    capacity = signal_offsets[strategy_row + 1] - signal_offsets[strategy_row]
    out_offsets = np.zeros(len(strategy_row) + 1, dtype=np.int64)
    np.cumsum(capacity, out=out_offsets[1:])
    n_trades, side, signal_bar_out, entry_idx, entry_pts, exit_idx, exit_pts, reason = run_strategies_nb(
        *tick_arrays.tick_args(), *tick_arrays.bar_args(),
        bar_entry_idx, signal_offsets, signal_bar, signal_side,
        strategy_row, stop_points, target_points, horizon_ns, out_offsets, tick_scan,
    )

    # Keep the first n_trades[s] rows of each strategy's block.
    position = np.arange(out_offsets[-1]) - np.repeat(out_offsets[:-1], capacity)
    keep = position < np.repeat(n_trades, capacity)
    return {
        "strategy_index": np.repeat(strategy_index.astype(np.int64), capacity)[keep],
        "side": side[keep],
        "signal_bar": signal_bar_out[keep],
        "entry_idx": entry_idx[keep],
        "entry_pts": entry_pts[keep],
        "exit_idx": exit_idx[keep],
        "exit_pts": exit_pts[keep],
        "reason": reason[keep],
    }


def _assemble(parts: list[dict[str, np.ndarray]], tick_arrays: TickArrays, instrument: Instrument,
              entry_skips: EntrySkips) -> Trades:
    if parts:
        columns = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
    else:
        columns = {name: np.empty(0, dtype=np.int64) for name in
                   ("strategy_index", "signal_bar", "entry_idx", "entry_pts", "exit_idx", "exit_pts")}
        columns["side"] = np.empty(0, dtype=np.int8)
        columns["reason"] = np.empty(0, dtype=np.int8)
    side = columns["side"].astype(np.int8)
    pips = points_to_pips((columns["exit_pts"] - columns["entry_pts"]) * side.astype(np.int64), instrument)
    return Trades(
        strategy_index=columns["strategy_index"],
        side=side,
        signal_bar=columns["signal_bar"],
        entry_idx=columns["entry_idx"],
        entry_time_ns=tick_arrays.timestamp_ns[columns["entry_idx"]],
        entry_price=points_to_price(columns["entry_pts"], instrument),
        exit_idx=columns["exit_idx"],
        exit_time_ns=tick_arrays.timestamp_ns[columns["exit_idx"]],
        exit_price=points_to_price(columns["exit_pts"], instrument),
        reason=columns["reason"].astype(np.int8),
        pips=np.asarray(pips, dtype=np.float64),
        entry_skips=entry_skips,
    )

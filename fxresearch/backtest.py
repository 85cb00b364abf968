"""Tick-level backtests of many strategies on one pair, with exits from the shared fill kernel.

Trading rules, for each strategy on its own:

- A signal on bar t (+1 long, -1 short) acts at the entry tick: the first tick at or after
  the bar's close, ``open + timeframe``. A bar whose close has no tick after it gives no
  trade. A long enters at the ask, a short at the bid. NOTE: a signal bar that closes just
  before the weekend close or a data hole enters at the first tick after it, however late.
- One position at a time. A signal in the direction of the open trade is ignored, and so is
  any signal whose entry tick comes before the open trade's exit tick. A signal whose entry
  tick is the exit tick itself opens the next trade there.
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
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

import numba
import numpy as np
import pandas as pd

from fxresearch._backtest_kernels import run_strategies_nb
from fxresearch.bars import entry_tick_index
from fxresearch.fills import REASONS, TickArrays, horizon_to_ns, pips_to_points, points_to_pips, points_to_price
from fxresearch.instruments import Instrument
from fxresearch.strategies import Strategy

logger = logging.getLogger(__name__)

# Signal entries per kernel call. The kernel's output arrays take 42 bytes per entry.
MAX_SIGNALS_PER_CALL = 2_000_000


@dataclass(frozen=True)
class Trades:
    """Columnar trades of many strategies, one element per trade.

    Sorted by strategy index, then by entry tick. Times are int64 nanoseconds UTC, prices
    float64 in quote currency, ``reason`` an index into ``fxresearch.fills.REASONS``.
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

    def __len__(self) -> int:
        return len(self.strategy_index)

    def to_frame(self) -> pd.DataFrame:
        """Return the trades as a DataFrame.

        ``entry_time`` and ``exit_time`` are int64 ns UTC (from ``entry_time_ns`` and
        ``exit_time_ns``), and ``reason`` becomes its name (``stop_loss``, ``signal``, ...).
        """
        frame = pd.DataFrame({item.name.removesuffix("_ns"): getattr(self, item.name) for item in fields(self)})
        frame["reason"] = np.asarray(REASONS, dtype=object)[self.reason.astype(np.int64)]
        return frame

    def select(self, mask: np.ndarray) -> Trades:
        """Return the trades where ``mask`` is True (a boolean array or index array)."""
        return Trades(**{item.name: getattr(self, item.name)[mask] for item in fields(self)})


def run_backtests(
    tick_arrays: TickArrays,
    bars: pd.DataFrame,
    timeframe_min: int,
    strategies: Sequence[Strategy],
    signals_by_key: Mapping[tuple[str, str], np.ndarray],
    instrument: Instrument,
    horizon_minutes: float | None,
    workers: int = 1,
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

    Returns
    -------
    Trades
        All trades, under the rules in this module's docstring.

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

    # One CSR row of signal bars per distinct signal array; SL/TP variants share a row.
    row_of_key: dict[tuple[str, str], int] = {}
    row_bars: list[np.ndarray] = []
    row_sides: list[np.ndarray] = []
    strategy_row = np.empty(len(strategies), dtype=np.int64)
    stop_points = np.empty(len(strategies), dtype=np.int64)
    target_points = np.empty(len(strategies), dtype=np.int64)
    for s, strategy in enumerate(strategies):
        key = strategy.signal_key
        if key not in row_of_key:
            signal = _check_signal(signals_by_key, key, n_bars)
            nonzero = np.flatnonzero(signal)
            row_of_key[key] = len(row_bars)
            row_bars.append(nonzero.astype(np.int64))
            row_sides.append(signal[nonzero].astype(np.int8))
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

    bar_entry_idx = entry_tick_index(tick_arrays.timestamp_ns, bars, timeframe_min)

    started = time.perf_counter()
    previous_threads = numba.get_num_threads()
    threads = min(int(workers), numba.config.NUMBA_NUM_THREADS)
    if threads < workers:
        logger.warning("workers=%d is above numba's thread limit; using %d threads", workers, threads)
    numba.set_num_threads(threads)
    try:
        parts = [
            _run_chunk(tick_arrays, bar_entry_idx, signal_offsets, signal_bar, signal_side,
                       strategy_row[chunk], stop_points[chunk], target_points[chunk], horizon_ns, chunk)
            for chunk in _chunks(signal_counts[strategy_row], MAX_SIGNALS_PER_CALL)
        ]
    finally:
        numba.set_num_threads(previous_threads)

    trades = _assemble(parts, tick_arrays, instrument)
    logger.info(
        "Backtested %d strategies (%d distinct signal sets) on %s: %d trades in %.2f s with %d threads",
        len(strategies), len(row_bars), instrument.symbol, len(trades), time.perf_counter() - started, threads,
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
        raise ValueError(f"Signal array for {key} has value {signal[first].item()!r} at bar {first}; allowed: -1, 0, +1.")
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
               strategy_index: np.ndarray) -> dict[str, np.ndarray]:
    capacity = signal_offsets[strategy_row + 1] - signal_offsets[strategy_row]
    out_offsets = np.zeros(len(strategy_row) + 1, dtype=np.int64)
    np.cumsum(capacity, out=out_offsets[1:])
    n_trades, side, signal_bar_out, entry_idx, entry_pts, exit_idx, exit_pts, reason = run_strategies_nb(
        *tick_arrays.tick_args(), *tick_arrays.bar_args(),
        bar_entry_idx, signal_offsets, signal_bar, signal_side,
        strategy_row, stop_points, target_points, horizon_ns, out_offsets,
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


def _assemble(parts: list[dict[str, np.ndarray]], tick_arrays: TickArrays, instrument: Instrument) -> Trades:
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
    )

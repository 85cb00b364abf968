"""Tick-exact fills shared by labels and backtests: which comes first, stop, target or horizon.

Fill rules (the kernels in ``fxresearch._fill_kernels`` implement exactly these):

- Prices are compared in integer points,
  ``np.rint(price / instrument.point_size).astype(np.int64)``.
- A long enters at the ask and its stop and target trigger on the bid. A short enters at
  the bid and its stop and target trigger on the ask. Levels are set from the entry fill
  price with pip distances converted to whole points, ``round(pips * points_per_pip)``:
  a long's stop is entry − stop points and its target entry + target points, a short's the
  reverse.
- The caller gives the entry tick, the first tick at or after the signal bar's close.
  Checks start at the tick after the entry tick.
- A stop is a market order once touched. It fills at the first tick at or past it, at that
  tick's price, so a jump through the stop loses more than the stop distance: a long stops
  when bid <= stop and fills at that bid, a short when ask >= stop and fills at that ask.
- A target is a limit order and fills at its level: a long when bid >= target, a short when
  ask <= target, both at the target price, even when the tick jumps past it.
- Inside a bar, the tick order decides. On one tick the checks run in this order: stop,
  then target, then horizon, so a tick that reaches both levels counts as a stop.
- The horizon is wall-clock minutes after the entry tick's time. The trade exits at the
  first tick at or after that time, at the trigger-side price (bid for a long, ask for a
  short). The weekend close counts toward the horizon.
- A data hole is a gap between two ticks longer than ``config.fills.max_gap_minutes`` that
  is not the weekend close (``timeutil.data_hole_after``). A trade still open at a tick
  whose next tick lies across a hole, the entry tick included, exits at that tick at the
  trigger-side price with reason ``data_gap``.
- A trade still open at the last tick closes there, at the trigger-side price, with reason
  ``end_of_data``.
- ``no_entry``: there is no tick at or after the signal time, so no trade.
- ``signal``: closed by an opposite signal. Backtests set this reason; the kernels return
  ``OPEN_AT_LIMIT`` (-1) at the tick the caller passes as ``stop_idx_limit`` instead.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fxresearch import _fill_kernels as kernels
from fxresearch._fill_kernels import (
    DATA_GAP,
    END_OF_DATA,
    HORIZON,
    NO_ENTRY,
    NO_HORIZON_NS,
    OPEN_AT_LIMIT,
    SIGNAL,
    STOP_LOSS,
    TAKE_PROFIT,
)
from fxresearch.instruments import Instrument
from fxresearch.timeutil import NS_PER_MINUTE, data_hole_after

logger = logging.getLogger(__name__)

__all__ = [
    "DATA_GAP", "END_OF_DATA", "HORIZON", "NO_ENTRY", "NO_HORIZON_NS", "OPEN_AT_LIMIT",
    "REASONS", "SIGNAL", "STOP_LOSS", "TAKE_PROFIT", "Fill", "TickArrays", "horizon_to_ns",
    "pips_to_points", "prepare_tick_arrays", "price_to_points", "simulate_trade",
]

# Reason names, indexed by the reason code.
REASONS: tuple[str, ...] = (
    "stop_loss", "take_profit", "horizon", "data_gap", "end_of_data", "signal", "no_entry",
)


@dataclass(frozen=True)
class TickArrays:
    """Tick prices in integer points with the one-minute bar index the bar walk reads.

    ``bar_first`` and ``bar_last`` are the inclusive tick indices of each one-minute bar that
    has ticks. The low/high arrays are each bar's bid and ask range in points.
    ``bar_has_hole`` is 1 when any tick of the bar has ``hole_after`` set, and ``bar_end_ns``
    is the time of the bar's last tick.
    """

    instrument: Instrument
    timestamp_ns: np.ndarray
    bid_pts: np.ndarray
    ask_pts: np.ndarray
    hole_after: np.ndarray
    bar_first: np.ndarray
    bar_last: np.ndarray
    bar_bid_low_pts: np.ndarray
    bar_bid_high_pts: np.ndarray
    bar_ask_low_pts: np.ndarray
    bar_ask_high_pts: np.ndarray
    bar_has_hole: np.ndarray
    bar_end_ns: np.ndarray

    def tick_args(self) -> tuple[np.ndarray, ...]:
        """Return the tick arrays in kernel argument order."""
        return (self.timestamp_ns, self.bid_pts, self.ask_pts, self.hole_after)

    def bar_args(self) -> tuple[np.ndarray, ...]:
        """Return the bar index arrays in kernel argument order."""
        return (
            self.bar_first, self.bar_last, self.bar_bid_low_pts, self.bar_bid_high_pts,
            self.bar_ask_low_pts, self.bar_ask_high_pts, self.bar_has_hole, self.bar_end_ns,
        )


@dataclass(frozen=True)
class Fill:
    """One simulated trade. Prices are in quote currency; NaN and -1 when there is no entry."""

    entry_idx: int
    entry_price: float
    exit_idx: int
    exit_price: float
    reason: str
    pips: float


def price_to_points(price: np.ndarray, instrument: Instrument) -> np.ndarray:
    """Return prices as int64 points of ``instrument.point_size``."""
    return np.rint(np.asarray(price, dtype=np.float64) / instrument.point_size).astype(np.int64)


def pips_to_points(pips: float, instrument: Instrument) -> int:
    """Return a pip distance as a whole number of points."""
    return int(round(pips * instrument.points_per_pip))


def points_to_price(points: npt.ArrayLike, instrument: Instrument) -> np.ndarray:
    """Return points as float64 prices rounded to the instrument's decimals; a scalar gives a numpy float64."""
    prices = np.asarray(points, dtype=np.float64) * instrument.point_size
    return np.round(prices, instrument.price_precision)


def points_to_pips(points: npt.ArrayLike, instrument: Instrument) -> np.ndarray:
    """Return point distances as float64 pips, rounded to one point's fraction of a pip."""
    decimals = math.ceil(math.log10(instrument.points_per_pip)) if instrument.points_per_pip > 1 else 0
    return np.round(np.asarray(points, dtype=np.float64) / instrument.points_per_pip, decimals)


def horizon_to_ns(horizon_minutes: float | None) -> int:
    """Return a horizon in nanoseconds; None means no horizon (``NO_HORIZON_NS``)."""
    if horizon_minutes is None or math.isinf(horizon_minutes):
        return int(NO_HORIZON_NS)
    if not horizon_minutes > 0:
        raise ValueError(f"horizon_minutes must be positive, got {horizon_minutes!r}")
    return int(round(horizon_minutes * NS_PER_MINUTE))


def prepare_tick_arrays(
    ticks_timestamp_ns: np.ndarray,
    bid: np.ndarray,
    ask: np.ndarray,
    instrument: Instrument,
    max_gap_minutes: float,
) -> TickArrays:
    """Convert validated ticks to integer points and build the one-minute bar index.

    Parameters
    ----------
    ticks_timestamp_ns : int64 array
        Tick times, UTC nanoseconds, sorted (equal times allowed).
    bid, ask : float64 arrays
        Quotes in quote currency, same length as the times.
    instrument : Instrument
        Gives the point size that prices are rounded to.
    max_gap_minutes : float
        A gap longer than this outside the weekend close is a data hole.

    Raises
    ------
    ValueError
        When the arrays differ in length, are empty, hold non-finite prices or are not
        sorted by time.
    """
    timestamp_ns = np.ascontiguousarray(ticks_timestamp_ns, dtype=np.int64)
    bid = np.asarray(bid, dtype=np.float64)
    ask = np.asarray(ask, dtype=np.float64)
    _check_ticks(timestamp_ns, bid, ask)

    bid_pts = price_to_points(bid, instrument)
    ask_pts = price_to_points(ask, instrument)
    hole_after = np.ascontiguousarray(data_hole_after(timestamp_ns, max_gap_minutes), dtype=np.uint8)

    # One bar per UTC minute that has ticks; the bars cover every tick in order.
    minute = timestamp_ns // NS_PER_MINUTE
    bar_first = np.flatnonzero(np.r_[True, minute[1:] != minute[:-1]]).astype(np.int64)
    bar_last = np.r_[bar_first[1:] - 1, len(timestamp_ns) - 1].astype(np.int64)
    arrays = TickArrays(
        instrument=instrument,
        timestamp_ns=timestamp_ns,
        bid_pts=bid_pts,
        ask_pts=ask_pts,
        hole_after=hole_after,
        bar_first=bar_first,
        bar_last=bar_last,
        bar_bid_low_pts=np.minimum.reduceat(bid_pts, bar_first),
        bar_bid_high_pts=np.maximum.reduceat(bid_pts, bar_first),
        bar_ask_low_pts=np.minimum.reduceat(ask_pts, bar_first),
        bar_ask_high_pts=np.maximum.reduceat(ask_pts, bar_first),
        bar_has_hole=np.maximum.reduceat(hole_after, bar_first),
        bar_end_ns=timestamp_ns[bar_last],
    )
    logger.debug(
        "Prepared %d ticks for %s: %d one-minute bars, %d data holes",
        len(timestamp_ns), instrument.symbol, len(bar_first), int(hole_after.sum()),
    )
    return arrays


def close_positions_at(arrays: TickArrays, tick_index: int) -> TickArrays:
    """Return tick arrays on which every trade still open at tick ``tick_index`` exits there.

    The tick is marked as the last one before a data hole, so the kernel closes any open
    trade at its trigger-side price with reason ``data_gap``, and no entry before it can run
    past it. The search uses it at the train/holdout split so an in-sample trade never
    exits at a holdout price. The input arrays are not changed.
    """
    if not 0 <= tick_index < len(arrays.timestamp_ns):
        raise ValueError(f"tick_index {tick_index} is outside the {len(arrays.timestamp_ns)} ticks")
    hole_after = arrays.hole_after.copy()
    hole_after[tick_index] = 1
    bar_has_hole = arrays.bar_has_hole.copy()
    bar = int(np.searchsorted(arrays.bar_first, tick_index, side="right")) - 1
    bar_has_hole[bar] = 1
    return dataclasses.replace(arrays, hole_after=hole_after, bar_has_hole=bar_has_hole)


def _check_ticks(timestamp_ns: np.ndarray, bid: np.ndarray, ask: np.ndarray) -> None:
    if timestamp_ns.ndim != 1 or bid.shape != timestamp_ns.shape or ask.shape != timestamp_ns.shape:
        raise ValueError(
            f"Tick arrays must be 1-D and of equal length, got timestamp {timestamp_ns.shape}, "
            f"bid {bid.shape}, ask {ask.shape}"
        )
    if len(timestamp_ns) == 0:
        raise ValueError("No ticks: the fill kernel needs at least one tick")
    if not (np.isfinite(bid).all() and np.isfinite(ask).all()):
        raise ValueError("Tick prices contain NaN or infinity; validate ticks with fxresearch.ticks first")
    unsorted = np.flatnonzero(np.diff(timestamp_ns) < 0)
    if len(unsorted):
        raise ValueError(
            f"Tick times are not sorted: tick {unsorted[0] + 1} is earlier than tick {unsorted[0]}; "
            f"sort the ticks stably by time first"
        )


def simulate_trade(
    arrays: TickArrays,
    entry_idx: int,
    side: int,
    stop_loss_pips: float,
    take_profit_pips: float,
    horizon_minutes: float | None,
    instrument: Instrument,
) -> Fill:
    """Simulate one trade from an entry tick with the bar-walk kernel.

    Parameters
    ----------
    arrays : TickArrays
        From ``prepare_tick_arrays`` with the same instrument.
    entry_idx : int
        Entry tick, ``0 .. n``; ``n`` (no tick left) gives reason ``no_entry``.
    side : int
        +1 long (enters at the ask, exits on the bid), -1 short (enters at the bid, exits on
        the ask).
    stop_loss_pips, take_profit_pips : float
        Positive distances from the entry fill price.
    horizon_minutes : float or None
        Wall-clock minutes after the entry tick; None for no horizon.
    instrument : Instrument
        Must be the instrument the arrays were prepared with.
    """
    n_ticks = len(arrays.timestamp_ns)
    if arrays.instrument != instrument:
        raise ValueError(
            f"Tick arrays were prepared for {arrays.instrument.symbol}, not {instrument.symbol}"
        )
    if side not in (1, -1):
        raise ValueError(f"side must be +1 (long) or -1 (short), got {side!r}")
    if not 0 <= entry_idx <= n_ticks:
        raise ValueError(f"entry_idx must be in 0..{n_ticks}, got {entry_idx}")
    if not (stop_loss_pips > 0 and take_profit_pips > 0):
        raise ValueError(
            f"stop_loss_pips and take_profit_pips must be positive, got {stop_loss_pips!r} "
            f"and {take_profit_pips!r}"
        )
    horizon_ns = horizon_to_ns(horizon_minutes)
    if entry_idx == n_ticks:
        return Fill(-1, math.nan, -1, math.nan, REASONS[NO_ENTRY], math.nan)

    # Levels sit on the trigger side, measured from the entry fill price.
    entry_price_pts = int(arrays.ask_pts[entry_idx] if side > 0 else arrays.bid_pts[entry_idx])
    stop_pts = entry_price_pts - side * pips_to_points(stop_loss_pips, instrument)
    target_pts = entry_price_pts + side * pips_to_points(take_profit_pips, instrument)
    entry_time_ns = int(arrays.timestamp_ns[entry_idx])
    horizon_end_ns = min(entry_time_ns + horizon_ns, int(NO_HORIZON_NS))

    exit_idx, exit_price_pts, reason = kernels.find_exit_bars_nb(
        *arrays.tick_args(), entry_idx, side, stop_pts, target_pts, horizon_end_ns, n_ticks,
        *arrays.bar_args(),
    )
    pips = points_to_pips((exit_price_pts - entry_price_pts) * side, instrument)
    return Fill(
        entry_idx=int(entry_idx),
        entry_price=float(points_to_price(entry_price_pts, instrument)),
        exit_idx=int(exit_idx),
        exit_price=float(points_to_price(exit_price_pts, instrument)),
        reason=REASONS[int(reason)],
        pips=float(pips),
    )

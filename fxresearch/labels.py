"""Outcome labels: for every bar, every (take-profit, stop-loss, horizon) and both sides, what the
trade from the bar's close would have done, tick by tick.

Market assumptions (the fill rules themselves are in ``fxresearch.fills``):

- A bar's values are known at ``open + timeframe``; its trade enters at the first tick at or
  after that time, a long at the ask and a short at the bid.
- A bar gets no entry when no tick follows its close (the last bar) or when the first one
  comes more than ``labels.max_entry_delay_minutes`` after the close, the search's rule for
  late signals. With the default of 30 minutes a Friday bar does not enter at the Sunday
  open, nor a bar before a long data hole. A limit of 0 turns the rule off.
- ``outcome`` is ``stop_loss``, ``take_profit`` or ``horizon``. It is ``censored`` when the
  trade met a data hole (``data_gap``), ran into the end of the data (``end_of_data``) or
  had no entry (``no_entry``): the true outcome is unknown, so ``pips`` is NaN. A
  ``data_gap`` or ``end_of_data`` row keeps the time and price of the last quote it saw. A
  ``no_entry`` row has ``NAT_NS`` as ``entry_time`` and ``exit_time`` and NaN prices, even
  when a late tick exists. Its outcome is never known, so a filter by cut-off must drop
  ``NAT_NS`` rather than compare it (int64 min is before every time).
- A label is known at its ``exit_time``, so a fit that may only use the past keeps the rows
  whose ``exit_time`` is before its cut-off. A ``data_gap`` outcome becomes known only when
  the tick after the hole arrives.

Time columns are int64 nanoseconds UTC, as everywhere in memory; ``NAT_NS`` (int64 min,
which pandas reads as NaT) marks a missing time.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd

from fxresearch._fill_kernels import DATA_GAP, END_OF_DATA, HORIZON, NO_ENTRY, STOP_LOSS, TAKE_PROFIT, label_many_nb
from fxresearch.config import Config, LabelsConfig
from fxresearch.fills import (
    TickArrays,
    horizon_to_ns,
    pips_to_points,
    points_to_pips,
    points_to_price,
    prepare_tick_arrays,
)
from fxresearch.instruments import Instrument
from fxresearch.timeutil import NS_PER_MINUTE, datetime_to_ns

logger = logging.getLogger(__name__)

LABEL_COLUMNS: tuple[str, ...] = (
    "timestamp", "grid_id", "take_profit_pips", "stop_loss_pips", "horizon_minutes", "side",
    "entry_time", "entry_price", "outcome", "exit_time", "exit_price", "pips",
)
LABEL_DTYPES: dict[str, str] = {
    "timestamp": "int64", "grid_id": "int64", "take_profit_pips": "float64",
    "stop_loss_pips": "float64", "horizon_minutes": "float64", "side": "int64",
    "entry_time": "int64", "entry_price": "float64", "outcome": "str", "exit_time": "int64",
    "exit_price": "float64", "pips": "float64",
}
OUTCOMES: tuple[str, ...] = ("stop_loss", "take_profit", "horizon", "censored")
NAT_NS = np.iinfo(np.int64).min

# Outcome name for each fill reason code; every reason without a known result is censored.
_OUTCOME_BY_REASON = np.array(
    ["censored"] * (NO_ENTRY + 1), dtype=object
)
_OUTCOME_BY_REASON[STOP_LOSS] = "stop_loss"
_OUTCOME_BY_REASON[TAKE_PROFIT] = "take_profit"
_OUTCOME_BY_REASON[HORIZON] = "horizon"
_CENSORED_REASONS = (DATA_GAP, END_OF_DATA, NO_ENTRY)
_SIDES = (1, -1)


def insufficient_reason(n_bars: int, config: LabelsConfig) -> str | None:
    """Return why labels are written empty for this many bars, or None when they are built."""
    if n_bars < config.min_bars:
        return f"{n_bars} bars, fewer than labels.min_bars = {config.min_bars}"
    return None


def empty_labels() -> pd.DataFrame:
    """Return a labels table with no rows and the columns and dtypes of ``LABEL_COLUMNS``."""
    return pd.DataFrame({name: pd.Series([], dtype=LABEL_DTYPES[name]) for name in LABEL_COLUMNS})


def build_labels(
    ticks_timestamp_ns: np.ndarray,
    bid: np.ndarray,
    ask: np.ndarray,
    bars: pd.DataFrame,
    timeframe_min: int,
    config: Config,
    instrument: Instrument,
    arrays: TickArrays | None = None,
) -> pd.DataFrame:
    """Label every bar for every ``config.labels.grid`` entry, long and short.

    Parameters
    ----------
    ticks_timestamp_ns, bid, ask : arrays
        Validated ticks sorted by time (UTC ns; prices in quote currency).
    bars : DataFrame
        Bars of ``timeframe_min`` with a ``timestamp`` column (bar open, int64 UTC ns or
        datetimes).
    timeframe_min : int
        The bars' timeframe in minutes; a bar's trade enters at ``open + timeframe``.
    config : Config
        Reads ``labels.grid``, ``labels.min_bars``, ``labels.max_entry_delay_minutes`` and
        ``fills.max_gap_minutes``.
    instrument : Instrument
        Pip and point size.
    arrays : TickArrays, optional
        The same ticks from ``fills.prepare_tick_arrays``, to reuse across timeframes.

    Returns
    -------
    DataFrame
        Columns ``LABEL_COLUMNS``; rows ordered by bar, then grid entry, then long before
        short. Empty when there are fewer than ``labels.min_bars`` bars.

    Raises
    ------
    ValueError
        When ``bars`` has no ``timestamp`` column, the timeframe or a grid entry is not
        positive, or the ticks are invalid.
    """
    started = time.perf_counter()
    grid = _check_inputs(bars, timeframe_min, config)
    reason = insufficient_reason(len(bars), config.labels)
    if reason is not None:
        logger.info("Labels for %s at %d minutes left empty: %s", instrument.symbol, timeframe_min, reason)
        return empty_labels()

    if arrays is None:
        arrays = prepare_tick_arrays(ticks_timestamp_ns, bid, ask, instrument, config.fills.max_gap_minutes)
    elif len(arrays.timestamp_ns) != len(ticks_timestamp_ns) or arrays.instrument != instrument:
        raise ValueError(
            f"The tick arrays passed to build_labels hold {len(arrays.timestamp_ns)} ticks of "
            f"{arrays.instrument.symbol}, but the ticks given are {len(ticks_timestamp_ns)} of "
            f"{instrument.symbol}; prepare them from the same ticks"
        )

    # A bar's trade enters at the first tick at or after its close.
    bar_open_ns = _bar_open_ns(bars)
    signal_ns = bar_open_ns + timeframe_min * NS_PER_MINUTE
    entry_idx = np.searchsorted(arrays.timestamp_ns, signal_ns, side="left").astype(np.int64)
    n_late = _drop_late_entries(entry_idx, signal_ns, arrays.timestamp_ns, config.labels.max_entry_delay_minutes)
    if n_late:
        logger.info(
            "Labels for %s at %d minutes: %d bars get no entry because their first tick comes more than "
            "labels.max_entry_delay_minutes = %g after the bar close",
            instrument.symbol, timeframe_min, n_late, config.labels.max_entry_delay_minutes,
        )

    # Shape (bar, grid entry, side), flattened in that order.
    n_bars, n_grid = len(bar_open_ns), len(grid)
    exit_idx = np.empty((n_bars, n_grid, 2), dtype=np.int64)
    exit_pts = np.empty((n_bars, n_grid, 2), dtype=np.int64)
    reasons = np.empty((n_bars, n_grid, 2), dtype=np.int8)
    for g, (take_profit_pips, stop_loss_pips, horizon_minutes) in enumerate(grid):
        for s, side in enumerate(_SIDES):
            exit_idx[:, g, s], exit_pts[:, g, s], reasons[:, g, s] = label_many_nb(
                *arrays.tick_args(), *arrays.bar_args(), entry_idx, side,
                pips_to_points(take_profit_pips, instrument), pips_to_points(stop_loss_pips, instrument),
                horizon_to_ns(horizon_minutes),
            )

    table = _assemble(arrays, bar_open_ns, entry_idx, grid, exit_idx, exit_pts, reasons, instrument)
    logger.info(
        "Labelled %d bars x %d grid entries x 2 sides for %s at %d minutes in %.2f s: %s",
        n_bars, n_grid, instrument.symbol, timeframe_min, time.perf_counter() - started,
        table["outcome"].value_counts().to_dict(),
    )
    return table


def _check_inputs(bars: pd.DataFrame, timeframe_min: int, config: Config) -> np.ndarray:
    """Return the label grid as a float64 (n, 3) array after checking the inputs."""
    if "timestamp" not in bars.columns:
        raise ValueError(
            f"bars has no 'timestamp' column (columns: {list(bars.columns)}); pass a table from "
            f"fxresearch.bars.build_bars"
        )
    if not (isinstance(timeframe_min, (int, np.integer)) and timeframe_min > 0):
        raise ValueError(f"timeframe_min must be a positive whole number of minutes, got {timeframe_min!r}")
    grid = np.asarray(config.labels.grid, dtype=np.float64).reshape(-1, 3)
    if len(grid) == 0:
        raise ValueError("labels.grid is empty; add (take_profit_pips, stop_loss_pips, horizon_minutes) entries")
    bad = np.flatnonzero(~(grid > 0).all(axis=1))
    if len(bad):
        raise ValueError(
            f"labels.grid entry {bad[0]} is {tuple(grid[bad[0]])}: take_profit_pips, "
            f"stop_loss_pips and horizon_minutes must all be positive"
        )
    return grid


def _drop_late_entries(entry_idx: np.ndarray, signal_ns: np.ndarray, timestamp_ns: np.ndarray,
                       max_delay_minutes: float) -> int:
    """Set ``entry_idx`` to ``len(timestamp_ns)`` (no entry) where the entry tick comes too late.

    An entry is late when its tick comes more than ``max_delay_minutes`` after the bar close,
    the rule the search applies to its signals. A limit of 0 keeps every entry. Returns the
    number of bars changed; ``entry_idx`` is changed in place.
    """
    n_ticks = len(timestamp_ns)
    if max_delay_minutes <= 0 or n_ticks == 0:
        return 0
    max_delay_ns = int(round(max_delay_minutes * NS_PER_MINUTE))
    has_tick = entry_idx < n_ticks
    entry_ns = timestamp_ns[np.minimum(entry_idx, n_ticks - 1)]
    late = has_tick & (entry_ns - signal_ns > max_delay_ns)
    entry_idx[late] = n_ticks
    return int(late.sum())


def _bar_open_ns(bars: pd.DataFrame) -> np.ndarray:
    column = bars["timestamp"]
    if pd.api.types.is_integer_dtype(column.dtype):
        return column.to_numpy(dtype=np.int64)
    return datetime_to_ns(column)


def _assemble(
    arrays: TickArrays,
    bar_open_ns: np.ndarray,
    entry_idx: np.ndarray,
    grid: np.ndarray,
    exit_idx: np.ndarray,
    exit_pts: np.ndarray,
    reasons: np.ndarray,
    instrument: Instrument,
) -> pd.DataFrame:
    """Turn the kernel's (bar, grid, side) results into the long labels table."""
    n_bars, n_grid = len(bar_open_ns), len(grid)
    shape = (n_bars, n_grid, 2)
    sides = np.broadcast_to(np.array(_SIDES, dtype=np.int64), shape).ravel()
    grid_id = np.broadcast_to(np.arange(n_grid, dtype=np.int64)[None, :, None], shape).ravel()
    entry = np.broadcast_to(entry_idx[:, None, None], shape).ravel()
    exit_idx = exit_idx.ravel()
    reasons = reasons.ravel()

    # No tick to enter on means no entry time or price.
    entered = entry < len(arrays.timestamp_ns)
    safe_entry = np.where(entered, entry, 0)
    entry_pts = np.where(sides > 0, arrays.ask_pts[safe_entry], arrays.bid_pts[safe_entry])
    entry_time = np.where(entered, arrays.timestamp_ns[safe_entry], NAT_NS)
    entry_price = np.where(entered, points_to_price(entry_pts, instrument), np.nan)

    exited = exit_idx >= 0
    safe_exit = np.where(exited, exit_idx, 0)
    exit_time = np.where(exited, arrays.timestamp_ns[safe_exit], NAT_NS)
    exit_price = np.where(exited, points_to_price(exit_pts.ravel(), instrument), np.nan)

    censored = np.isin(reasons, _CENSORED_REASONS)
    pips = points_to_pips((exit_pts.ravel() - entry_pts) * sides, instrument)
    pips = np.where(censored, np.nan, pips)

    return pd.DataFrame({
        "timestamp": np.repeat(bar_open_ns, n_grid * 2),
        "grid_id": grid_id,
        "take_profit_pips": grid[grid_id, 0],
        "stop_loss_pips": grid[grid_id, 1],
        "horizon_minutes": grid[grid_id, 2],
        "side": sides,
        "entry_time": entry_time,
        "entry_price": entry_price,
        "outcome": pd.Series(_OUTCOME_BY_REASON[reasons], dtype="str"),
        "exit_time": exit_time,
        "exit_price": exit_price,
        "pips": pips,
    }, columns=list(LABEL_COLUMNS))

"""Triple-barrier labels: for every bar, every grid entry and both sides, what a trade entered at
the bar's close would have done, tick by tick.

Market assumptions (the fill rules themselves are in ``fxresearch.fills``):

- A bar's values are known at ``open + timeframe``; its trade enters at the first tick at or
  after that time, a long at the ask and a short at the bid.
- A bar gets no entry when no tick follows its close (the last bar) or when the first one
  comes more than ``labels.max_entry_delay_minutes`` after the close, the search's rule for
  late signals. With the default of 30 minutes a Friday bar does not enter at the Sunday
  open, nor a bar before a long data hole. A limit of 0 turns the rule off.
- Barriers: with ``labels.barrier_mode = "pips"`` each grid entry gives fixed take-profit and
  stop-loss distances. With ``"atr"`` the distances are multiples (``labels.atr_grid``) of
  the signal bar's Wilder ATR in pips, from the mid prices of bars up to and including the
  signal bar, so the barrier is known at the entry. Distances are rounded to whole points
  (at least one) and ``take_profit_pips``/``stop_loss_pips`` store the rounded values. A bar
  without an ATR yet (warm-up) gets no entry.
- Horizons: with ``labels.horizon_clock = "market"`` (default) a horizon counts open-market
  minutes: the weekend close, Friday 17:00 to Sunday 17:00 New York time, does not count. A
  60-minute label entered Friday 16:50 New York time ends 50 minutes after Sunday's 17:00
  open. With ``"wall"`` it counts clock minutes, as the search's backtests do. The trade
  exits at the first tick at or after the horizon end.
- ``outcome`` is ``stop_loss``, ``take_profit`` or ``horizon``. It is ``censored`` (and the
  ``censored`` column True) when the trade met a data hole (``data_gap``), ran into the end
  of the data (``end_of_data``) or had no entry (``no_entry``): the true outcome is unknown,
  so ``pips`` is NaN. A ``data_gap`` or ``end_of_data`` row keeps the time and price of the
  last quote it saw. A ``no_entry`` row has ``NAT_NS`` as ``entry_time`` and ``exit_time``
  and NaN prices. A filter by cut-off must drop ``NAT_NS`` rather than compare it (int64
  min is before every time).
- ``horizon_return_pips`` is the signed move from the entry fill to the trigger-side price
  (bid for a long, ask for a short) of the first tick at or after the horizon end, whatever
  barrier was hit first. It is NaN when no such tick exists or a data hole lies before it.
  It is known at the horizon end, which can come after ``exit_time``.
- ``uniqueness`` is López de Prado's average uniqueness: over the label's span
  ``[entry_time, exit_time]``, the time average of 1 / (number of labels of the same
  timeframe, grid entry and side whose spans contain that instant). Counts and averages of
  labels should weight each label by it. NaN for rows without an entry.
- A label is known at its ``exit_time``, so a fit that may only use the past keeps the rows
  whose ``exit_time`` is before its cut-off.

Codes: ``side`` is int8 (+1 long, -1 short); ``outcome`` is a categorical whose int8 codes
are ``OUTCOMES`` positions: 0 ``stop_loss``, 1 ``take_profit``, 2 ``horizon``, 3 ``censored``.
Time columns are int64 nanoseconds UTC; ``NAT_NS`` (int64 min, read by pandas as NaT) marks a
missing time.

Memory: the grid is labelled in chunks of at most ``labels.max_rows_per_chunk`` rows;
``write_labels`` appends each chunk to one parquet file, so the whole grid of a timeframe is
never held at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fxresearch import artifacts
from fxresearch._fill_kernels import (
    DATA_GAP, END_OF_DATA, HORIZON, NO_ENTRY, STOP_LOSS, TAKE_PROFIT, label_entries_nb,
)
from fxresearch._label_kernels import add_open_minutes_nb, wilder_atr_nb
from fxresearch.config import Config, LabelsConfig
from fxresearch.fills import TickArrays, horizon_to_ns, points_to_pips, points_to_price, prepare_tick_arrays
from fxresearch.instruments import Instrument
from fxresearch.resources import chunk_rows_for_budget
from fxresearch.timeutil import NEW_YORK, NS_PER_DAY, NS_PER_MINUTE, datetime_to_ns, ns_to_datetime

logger = logging.getLogger(__name__)

LABEL_COLUMNS: tuple[str, ...] = (
    "timestamp", "side", "grid_id", "take_profit_pips", "stop_loss_pips", "horizon_minutes",
    "entry_time", "entry_price", "outcome", "censored", "exit_time", "exit_price", "pips",
    "horizon_return_pips", "uniqueness", "atr_pips",
)
LABEL_DTYPES: dict[str, str] = {
    "timestamp": "int64", "side": "int8", "grid_id": "int32", "take_profit_pips": "float32",
    "stop_loss_pips": "float32", "horizon_minutes": "float32", "entry_time": "int64",
    "entry_price": "float64", "outcome": "category", "censored": "bool", "exit_time": "int64",
    "exit_price": "float64", "pips": "float32", "horizon_return_pips": "float32",
    "uniqueness": "float32", "atr_pips": "float32",
}
# Category order fixes the int8 codes: 0 stop_loss, 1 take_profit, 2 horizon, 3 censored.
OUTCOMES: tuple[str, ...] = ("stop_loss", "take_profit", "horizon", "censored")
OUTCOME_DTYPE = pd.CategoricalDtype(list(OUTCOMES), ordered=False)
CENSORED_CODE = 3
NAT_NS = np.iinfo(np.int64).min
# Estimated peak bytes per label row while a chunk is built and concatenated: about 85 bytes
# stored, plus the per-entry arrays and the copy made by the concatenation.
LABEL_ROW_BYTES = 300
SIDES: tuple[int, ...] = (1, -1)

# Outcome code for each fill reason code; every reason without a known result is censored.
_OUTCOME_BY_REASON = np.full(NO_ENTRY + 1, CENSORED_CODE, dtype=np.int8)
_OUTCOME_BY_REASON[STOP_LOSS] = 0
_OUTCOME_BY_REASON[TAKE_PROFIT] = 1
_OUTCOME_BY_REASON[HORIZON] = 2
_CENSORED_REASONS = (DATA_GAP, END_OF_DATA, NO_ENTRY)
_ATR_BAR_COLUMNS = ("bid_high", "bid_low", "bid_close", "ask_high", "ask_low", "ask_close")


def insufficient_reason(n_bars: int, config: LabelsConfig) -> str | None:
    """Return why labels are written empty for this many bars, or None when they are built."""
    if n_bars < config.min_bars:
        return f"{n_bars} bars, fewer than labels.min_bars = {config.min_bars}"
    return None


def empty_labels() -> pd.DataFrame:
    """Return a labels table with no rows and the columns and dtypes of ``LABEL_COLUMNS``."""
    columns = {}
    for name in LABEL_COLUMNS:
        dtype = OUTCOME_DTYPE if name == "outcome" else LABEL_DTYPES[name]
        columns[name] = pd.Series([], dtype=dtype)
    return pd.DataFrame(columns)


def label_grid(config: LabelsConfig) -> np.ndarray:
    """Return the active grid as a float64 (n, 3) array: take-profit, stop-loss, horizon minutes.

    In ``"pips"`` mode the barriers are pips (``labels.grid``); in ``"atr"`` mode they are ATR
    multiples (``labels.atr_grid``).

    Raises
    ------
    ValueError
        When the grid is empty or an entry is not positive.
    """
    name = "labels.grid" if config.barrier_mode == "pips" else "labels.atr_grid"
    raw = config.grid if config.barrier_mode == "pips" else config.atr_grid
    grid = np.asarray(raw, dtype=np.float64).reshape(-1, 3)
    if len(grid) == 0:
        raise ValueError(f"{name} is empty; add (take_profit, stop_loss, horizon_minutes) entries")
    bad = np.flatnonzero(~(grid > 0).all(axis=1))
    if len(bad):
        raise ValueError(
            f"{name} entry {bad[0]} is {tuple(grid[bad[0]])}: take-profit, stop-loss and "
            f"horizon_minutes must all be positive"
        )
    return grid


def weekend_closes_ns(start_ns: int, end_ns: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the weekend closes overlapping ``[start_ns, end_ns]`` as (start, end) int64 ns UTC.

    Each close runs from Friday 17:00 to Sunday 17:00 New York time (the same close as
    ``timeutil.in_weekend_close``), so daylight saving moves it in UTC.
    """
    first = ns_to_datetime(np.array([start_ns]))[0].tz_convert(NEW_YORK).tz_localize(None).normalize()
    last = ns_to_datetime(np.array([end_ns]))[0].tz_convert(NEW_YORK).tz_localize(None).normalize()
    fridays = pd.date_range(first - pd.Timedelta(days=7), last + pd.Timedelta(days=7), freq="W-FRI")
    starts = (fridays + pd.Timedelta(hours=17)).tz_localize(NEW_YORK)
    ends = (fridays + pd.Timedelta(days=2, hours=17)).tz_localize(NEW_YORK)
    return datetime_to_ns(starts), datetime_to_ns(ends)


def horizon_end_ns(entry_ns: np.ndarray, horizon_minutes: float, clock: str) -> np.ndarray:
    """Return when each horizon ends: wall-clock minutes, or open-market minutes (``"market"``).

    With ``"market"`` the weekend close (Friday 17:00 to Sunday 17:00 New York) does not
    count, so a horizon started Friday 16:50 New York time with 60 minutes ends Sunday 17:50.
    """
    entry_ns = np.ascontiguousarray(entry_ns, dtype=np.int64)
    horizon_ns = horizon_to_ns(horizon_minutes)
    if clock == "wall" or len(entry_ns) == 0:
        return entry_ns + horizon_ns
    if clock != "market":
        raise ValueError(f"horizon clock {clock!r} is invalid; use \"market\" or \"wall\"")
    # Enough weekends to cover the longest horizon: each week has 5 open days.
    span_ns = int(horizon_ns * 7 / 5) + 7 * NS_PER_DAY
    close_start, close_end = weekend_closes_ns(int(entry_ns.min()), int(entry_ns.max()) + span_ns)
    return add_open_minutes_nb(entry_ns, np.int64(horizon_ns), close_start, close_end)


def causal_atr_pips(bars: pd.DataFrame, window: int, instrument: Instrument) -> np.ndarray:
    """Return Wilder's ATR of each bar in pips, from mid prices of that bar and earlier ones.

    The same definition as the features stage's ``atr_<window>``: NaN for the first
    ``window - 1`` bars.

    Raises
    ------
    ValueError
        When a bid/ask high, low or close column is missing.
    """
    missing = [name for name in _ATR_BAR_COLUMNS if name not in bars.columns]
    if missing:
        raise ValueError(
            f"labels.barrier_mode = \"atr\" needs bar columns {missing}; pass bars from "
            f"fxresearch.bars.build_bars"
        )
    mid = {name: (bars[f"bid_{name}"].to_numpy(np.float64) + bars[f"ask_{name}"].to_numpy(np.float64)) / 2.0
           for name in ("high", "low", "close")}
    return wilder_atr_nb(mid["high"], mid["low"], mid["close"], int(window)) / instrument.pip_size


def uniqueness_weights(entry_ns: np.ndarray, exit_ns: np.ndarray) -> np.ndarray:
    """Return each label's average uniqueness over its span ``[entry, exit]``.

    Concurrency at instant t is the number of spans that contain t. A label's uniqueness is
    the time average of 1 / concurrency over its own span, in (0, 1]; a span of zero length
    takes 1 / concurrency at its single instant. Pass the labels of one timeframe, grid
    entry and side only. Inputs are int64 ns; no NaT is allowed.
    """
    entry_ns = np.asarray(entry_ns, dtype=np.int64)
    exit_ns = np.asarray(exit_ns, dtype=np.int64)
    if len(entry_ns) == 0:
        return np.empty(0, dtype=np.float64)
    if (exit_ns < entry_ns).any():
        raise ValueError("uniqueness_weights: an exit time is before its entry time")
    starts = np.sort(entry_ns)
    ends = np.sort(exit_ns)
    bounds = np.unique(np.concatenate([entry_ns, exit_ns]))

    # On [bounds[k], bounds[k+1]) the spans alive are those started at or before bounds[k] and
    # not ended at or before it; that count is at least 1 inside any span.
    alive = (np.searchsorted(starts, bounds[:-1], side="right")
             - np.searchsorted(ends, bounds[:-1], side="right"))
    lengths = np.diff(bounds).astype(np.float64)
    inverse = np.where(alive > 0, 1.0 / np.maximum(alive, 1), 0.0)
    integral = np.concatenate([[0.0], np.cumsum(inverse * lengths)])
    first = np.searchsorted(bounds, entry_ns)
    last = np.searchsorted(bounds, exit_ns)
    span = (exit_ns - entry_ns).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        weights = (integral[last] - integral[first]) / span

    # A zero-length span counts the spans containing its instant, itself included.
    point = span == 0
    if point.any():
        at = entry_ns[point]
        count = np.searchsorted(starts, at, side="right") - np.searchsorted(ends, at, side="left")
        weights[point] = 1.0 / count
    return weights


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
    """Label every bar for every grid entry, long and short, and return one table.

    Holds the whole grid in memory; ``write_labels`` streams it to parquet instead.

    Parameters
    ----------
    ticks_timestamp_ns, bid, ask : arrays
        Validated ticks sorted by time (UTC ns; prices in quote currency).
    bars : DataFrame
        Bars of ``timeframe_min`` with a ``timestamp`` column (bar open, int64 UTC ns or
        datetimes); with ``barrier_mode = "atr"`` also the bid/ask high, low and close.
    timeframe_min : int
        The bars' timeframe in minutes; a bar's trade enters at ``open + timeframe``.
    config : Config
        Reads ``labels`` and ``fills.max_gap_minutes``.
    instrument : Instrument
        Pip and point size.
    arrays : TickArrays, optional
        The same ticks from ``fills.prepare_tick_arrays``, to reuse across timeframes.

    Returns
    -------
    DataFrame
        Columns ``LABEL_COLUMNS`` with ``LABEL_DTYPES``; rows ordered by grid entry, then bar,
        then long before short. Empty when there are fewer than ``labels.min_bars`` bars.

    Raises
    ------
    ValueError
        When ``bars`` has no ``timestamp`` column, the timeframe or a grid entry is not
        positive, or the ticks are invalid.
    """
    chunks = list(iter_label_chunks(ticks_timestamp_ns, bid, ask, bars, timeframe_min, config, instrument, arrays))
    if not chunks:
        return empty_labels()
    return pd.concat(chunks, ignore_index=True)


def write_labels(
    path: str | Path,
    ticks_timestamp_ns: np.ndarray,
    bid: np.ndarray,
    ask: np.ndarray,
    bars: pd.DataFrame,
    timeframe_min: int,
    config: Config,
    instrument: Instrument,
    metadata: dict[str, str] | None = None,
    arrays: TickArrays | None = None,
) -> dict[str, Any]:
    """Label one timeframe and write it to ``path`` chunk by chunk, then return a summary.

    Takes the arguments of ``build_labels``. Chunks are appended to one zstd parquet file
    written under a temporary name and renamed into place, so a killed run leaves no partial
    file. Time columns are ``timestamp[ns, tz=UTC]``, as ``artifacts.write_frame`` writes
    them; ``metadata`` goes into the schema with the barrier mode and horizon clock.

    Returns
    -------
    dict
        ``rows`` and ``outcome_counts`` (outcome name to row count).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    labels_config = config.labels
    file_metadata = dict(metadata or {})
    file_metadata.update({"barrier_mode": labels_config.barrier_mode, "horizon_clock": labels_config.horizon_clock})
    counts = np.zeros(len(OUTCOMES), dtype=np.int64)
    rows = 0
    writer: pq.ParquetWriter | None = None
    with artifacts.atomic_path(path) as tmp:
        try:
            chunks = iter_label_chunks(ticks_timestamp_ns, bid, ask, bars, timeframe_min, config, instrument, arrays)
            for chunk in chunks:
                table = _to_arrow(chunk, file_metadata)
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema, compression="zstd")
                writer.write_table(table)
                counts += np.bincount(chunk["outcome"].cat.codes.to_numpy(), minlength=len(OUTCOMES))
                rows += len(chunk)
            if writer is None:
                writer = pq.ParquetWriter(tmp, _to_arrow(empty_labels(), file_metadata).schema, compression="zstd")
        finally:
            # Closed before the rename, and on failure before the temporary file is removed.
            if writer is not None:
                writer.close()
    return {"rows": rows, "outcome_counts": {name: int(n) for name, n in zip(OUTCOMES, counts, strict=True) if n}}


def read_labels(path: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    """Read a labels file, or only ``columns`` of it, with time columns as int64 ns UTC.

    A missing time (``NAT_NS`` when written) comes back as ``NAT_NS``.
    """
    table = pq.read_table(path, columns=columns)
    for name in ("timestamp", "entry_time", "exit_time"):
        if name in table.column_names and pa.types.is_timestamp(table.schema.field(name).type):
            index = table.column_names.index(name)
            table = table.set_column(index, name, table.column(name).cast(pa.int64()))
    return table.to_pandas()


def _to_arrow(frame: pd.DataFrame, metadata: dict[str, str]) -> pa.Table:
    """Convert a labels chunk to Arrow with UTC timestamp time columns and the schema metadata."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    for name in ("timestamp", "entry_time", "exit_time"):
        index = table.column_names.index(name)
        column = table.column(name).cast(pa.int64()).cast(pa.timestamp("ns", tz="UTC"))
        table = table.set_column(index, name, column)
    merged = dict(table.schema.metadata or {})
    merged.update({k.encode(): v.encode() for k, v in metadata.items()})
    return table.replace_schema_metadata(merged)


def iter_label_chunks(
    ticks_timestamp_ns: np.ndarray,
    bid: np.ndarray,
    ask: np.ndarray,
    bars: pd.DataFrame,
    timeframe_min: int,
    config: Config,
    instrument: Instrument,
    arrays: TickArrays | None = None,
) -> Iterator[pd.DataFrame]:
    """Yield the labels of ``build_labels`` one grid chunk at a time, logging progress.

    Each chunk contains whole grid entries (every bar, both sides), at most
    ``labels.max_rows_per_chunk`` rows unless one grid entry alone is larger. Yields nothing
    when there are fewer than ``labels.min_bars`` bars.
    """
    started = time.perf_counter()
    labels_config = config.labels
    grid = _check_inputs(bars, timeframe_min, labels_config)
    reason = insufficient_reason(len(bars), labels_config)
    if reason is not None:
        logger.info("Labels for %s at %d minutes left empty: %s", instrument.symbol, timeframe_min, reason)
        return

    if arrays is None:
        arrays = prepare_tick_arrays(ticks_timestamp_ns, bid, ask, instrument, config.fills.max_gap_minutes)
    elif len(arrays.timestamp_ns) != len(ticks_timestamp_ns) or arrays.instrument != instrument:
        raise ValueError(
            f"The tick arrays passed to the labels stage hold {len(arrays.timestamp_ns)} ticks of "
            f"{arrays.instrument.symbol}, but the ticks given are {len(ticks_timestamp_ns)} of "
            f"{instrument.symbol}; prepare them from the same ticks"
        )
    n_ticks = len(arrays.timestamp_ns)

    # A bar's trade enters at the first tick at or after its close.
    bar_open_ns = _bar_open_ns(bars)
    signal_ns = bar_open_ns + timeframe_min * NS_PER_MINUTE
    entry_idx = np.searchsorted(arrays.timestamp_ns, signal_ns, side="left").astype(np.int64)
    n_late = _drop_late_entries(entry_idx, signal_ns, arrays.timestamp_ns, labels_config.max_entry_delay_minutes)
    if n_late:
        logger.info(
            "Labels for %s at %d minutes: %d bars get no entry because their first tick comes more than "
            "labels.max_entry_delay_minutes = %g after the bar close",
            instrument.symbol, timeframe_min, n_late, labels_config.max_entry_delay_minutes,
        )

    atr_pips = np.full(len(bar_open_ns), np.nan)
    if labels_config.barrier_mode == "atr":
        atr_pips = causal_atr_pips(bars, labels_config.atr_window, instrument)
        # No barrier can be set before the ATR exists.
        entry_idx[~(atr_pips > 0)] = n_ticks

    entered = entry_idx < n_ticks
    entry_ns = np.where(entered, arrays.timestamp_ns[np.minimum(entry_idx, n_ticks - 1)], NAT_NS)
    n_bars, n_grid = len(bar_open_ns), len(grid)
    max_rows = chunk_rows_for_budget(labels_config.max_rows_per_chunk, LABEL_ROW_BYTES)
    per_chunk = max(1, max_rows // (2 * n_bars))
    if max_rows < labels_config.max_rows_per_chunk:
        logger.info("Labels for %s at %d minutes: chunks of %d grid entries (%d rows), sized to the pair's "
                    "memory budget", instrument.symbol, timeframe_min, per_chunk, per_chunk * 2 * n_bars)
    for first in range(0, n_grid, per_chunk):
        grid_ids = range(first, min(first + per_chunk, n_grid))
        parts = [
            _label_grid_entry(arrays, bar_open_ns, entry_idx, entry_ns, atr_pips, grid_id, grid[grid_id],
                              labels_config, instrument)
            for grid_id in grid_ids
        ]
        chunk = pd.concat(parts, ignore_index=True)
        done = grid_ids.stop
        logger.info(
            "Labels for %s at %d minutes: grid entries %d-%d of %d (%.0f%%), %d rows, %.1f s",
            instrument.symbol, timeframe_min, grid_ids.start, done - 1, n_grid, 100.0 * done / n_grid,
            len(chunk), time.perf_counter() - started,
        )
        yield chunk


def _label_grid_entry(
    arrays: TickArrays,
    bar_open_ns: np.ndarray,
    entry_idx: np.ndarray,
    entry_ns: np.ndarray,
    atr_pips: np.ndarray,
    grid_id: int,
    grid_entry: np.ndarray,
    config: LabelsConfig,
    instrument: Instrument,
) -> pd.DataFrame:
    """Label every bar for one grid entry, both sides; rows by bar, long before short."""
    take_profit, stop_loss, horizon_minutes = (float(v) for v in grid_entry)
    n_bars = len(bar_open_ns)
    n_ticks = len(arrays.timestamp_ns)
    entered = entry_idx < n_ticks

    # Distances in whole points: fixed pips, or ATR multiples of the signal bar.
    if config.barrier_mode == "atr":
        scale = np.where(entered, atr_pips, 0.0) * instrument.points_per_pip
        take_profit_points = np.maximum(1, np.rint(take_profit * scale)).astype(np.int64)
        stop_loss_points = np.maximum(1, np.rint(stop_loss * scale)).astype(np.int64)
    else:
        take_profit_points = np.full(n_bars, int(round(take_profit * instrument.points_per_pip)), dtype=np.int64)
        stop_loss_points = np.full(n_bars, int(round(stop_loss * instrument.points_per_pip)), dtype=np.int64)
        if take_profit_points[0] < 1 or stop_loss_points[0] < 1:
            raise ValueError(
                f"labels.grid entry {grid_id} is {tuple(grid_entry)}: take-profit and stop-loss must be "
                f"at least one point ({instrument.point_size}) for {instrument.symbol}"
            )
    horizon_end = np.where(entered, horizon_end_ns(np.where(entered, entry_ns, 0), horizon_minutes,
                                                   config.horizon_clock), 0)

    columns: dict[str, list[np.ndarray]] = {}
    for side in SIDES:
        exit_idx, exit_pts, reasons = label_entries_nb(
            *arrays.tick_args(), *arrays.bar_args(), entry_idx, side,
            take_profit_points, stop_loss_points, horizon_end,
        )
        side_columns = _side_columns(arrays, entry_idx, side, exit_idx, exit_pts, reasons, horizon_end, instrument)
        for name, values in side_columns.items():
            columns.setdefault(name, []).append(values)

    # Interleave the two sides so that each bar's long row comes before its short row.
    def interleave(name: str) -> np.ndarray:
        return np.stack(columns[name], axis=1).ravel()

    has_atr = config.barrier_mode == "atr"
    take_profit_pips = np.where(entered, take_profit_points / instrument.points_per_pip, np.nan)
    stop_loss_pips = np.where(entered, stop_loss_points / instrument.points_per_pip, np.nan)
    if not has_atr:
        take_profit_pips[:] = take_profit
        stop_loss_pips[:] = stop_loss
    outcome = interleave("outcome")
    return pd.DataFrame({
        "timestamp": np.repeat(bar_open_ns, 2),
        "side": np.tile(np.array(SIDES, dtype=np.int8), n_bars),
        "grid_id": np.full(2 * n_bars, grid_id, dtype=np.int32),
        "take_profit_pips": np.repeat(take_profit_pips, 2).astype(np.float32),
        "stop_loss_pips": np.repeat(stop_loss_pips, 2).astype(np.float32),
        "horizon_minutes": np.full(2 * n_bars, horizon_minutes, dtype=np.float32),
        "entry_time": np.repeat(entry_ns, 2),
        "entry_price": interleave("entry_price"),
        "outcome": pd.Categorical.from_codes(outcome, dtype=OUTCOME_DTYPE),
        "censored": outcome == CENSORED_CODE,
        "exit_time": interleave("exit_time"),
        "exit_price": interleave("exit_price"),
        "pips": interleave("pips").astype(np.float32),
        "horizon_return_pips": interleave("horizon_return_pips").astype(np.float32),
        "uniqueness": interleave("uniqueness").astype(np.float32),
        "atr_pips": np.repeat(atr_pips if has_atr else np.full(n_bars, np.nan), 2).astype(np.float32),
    }, columns=list(LABEL_COLUMNS))


def _side_columns(
    arrays: TickArrays,
    entry_idx: np.ndarray,
    side: int,
    exit_idx: np.ndarray,
    exit_pts: np.ndarray,
    reasons: np.ndarray,
    horizon_end: np.ndarray,
    instrument: Instrument,
) -> dict[str, np.ndarray]:
    """Turn one side's kernel results into label columns, one value per bar."""
    n_ticks = len(arrays.timestamp_ns)
    entered = entry_idx < n_ticks
    safe_entry = np.where(entered, entry_idx, 0)
    entry_pts = arrays.ask_pts[safe_entry] if side > 0 else arrays.bid_pts[safe_entry]
    entry_price = np.where(entered, points_to_price(entry_pts, instrument), np.nan)

    exited = exit_idx >= 0
    safe_exit = np.where(exited, exit_idx, 0)
    exit_time = np.where(exited, arrays.timestamp_ns[safe_exit], NAT_NS)
    exit_price = np.where(exited, points_to_price(exit_pts, instrument), np.nan)
    censored = np.isin(reasons, _CENSORED_REASONS)
    pips = np.where(censored, np.nan, points_to_pips((exit_pts - entry_pts) * side, instrument))

    # The price at the horizon: the first tick at or after its end, unless a data hole or the
    # end of the data comes first.
    horizon_idx = np.searchsorted(arrays.timestamp_ns, horizon_end, side="left")
    holes_before = np.concatenate([[0], np.cumsum(arrays.hole_after, dtype=np.int64)])
    reachable = entered & (horizon_idx < n_ticks)
    safe_horizon = np.where(reachable, horizon_idx, 0)
    reachable &= holes_before[safe_horizon] == holes_before[safe_entry]
    horizon_pts = arrays.bid_pts[safe_horizon] if side > 0 else arrays.ask_pts[safe_horizon]
    horizon_return = np.where(reachable, points_to_pips((horizon_pts - entry_pts) * side, instrument), np.nan)

    # Spans of one grid entry and side; rows without an entry have none.
    uniqueness = np.full(len(entry_idx), np.nan)
    if entered.any():
        uniqueness[entered] = uniqueness_weights(arrays.timestamp_ns[entry_idx[entered]], exit_time[entered])
    return {
        "entry_price": entry_price,
        "outcome": _OUTCOME_BY_REASON[reasons],
        "exit_time": exit_time,
        "exit_price": exit_price,
        "pips": pips,
        "horizon_return_pips": horizon_return,
        "uniqueness": uniqueness,
    }


def _check_inputs(bars: pd.DataFrame, timeframe_min: int, config: LabelsConfig) -> np.ndarray:
    """Return the active label grid after checking the inputs."""
    if "timestamp" not in bars.columns:
        raise ValueError(
            f"bars has no 'timestamp' column (columns: {list(bars.columns)}); pass a table from "
            f"fxresearch.bars.build_bars"
        )
    if not (isinstance(timeframe_min, (int, np.integer)) and timeframe_min > 0):
        raise ValueError(f"timeframe_min must be a positive whole number of minutes, got {timeframe_min!r}")
    return label_grid(config)


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


def meta_label_stats(
    labels_table: pd.DataFrame,
    strategy_index: np.ndarray,
    signal_ns: np.ndarray,
    side: np.ndarray,
    stop_loss_pips: np.ndarray,
    take_profit_pips: np.ndarray,
    horizon_minutes: float,
    known_before_ns: int | None = None,
    max_entries_per_step: int = 200_000,
) -> tuple[np.ndarray, np.ndarray]:
    """Join strategy entries to labels and return each strategy's label win rate and coverage.

    An entry (signal bar open ``signal_ns``, ``side``) of strategy s takes a label of the
    same bar and side. Among the grid entries it picks the one whose take-profit and
    stop-loss are closest to the strategy's by the sum of absolute pip differences, so an
    equal pair wins when the grid has it. Ties go to the horizon closest to
    ``horizon_minutes``, then to the lowest grid id. In ATR mode the pips compared are each
    label's own.

    Parameters
    ----------
    labels_table
        Labels of the strategies' timeframe with at least ``timestamp``, ``side``,
        ``grid_id``, ``take_profit_pips``, ``stop_loss_pips``, ``horizon_minutes``,
        ``outcome`` and ``uniqueness``.
    strategy_index, signal_ns, side
        One value per entry: the strategy's row in ``stop_loss_pips``/``take_profit_pips``,
        the signal bar's open (int64 ns UTC) and +1/-1.
    stop_loss_pips, take_profit_pips
        One value per strategy.
    horizon_minutes
        The strategies' horizon, used to break ties between grid entries.
    known_before_ns
        Labels whose ``exit_time`` is at or after this time count as found but not as known,
        so the win rate of in-sample entries never reads a holdout price (needs the
        ``exit_time`` column).
    max_entries_per_step
        Entries joined per step, which bounds the temporary arrays.

    Returns
    -------
    (win_rate, coverage)
        float64 per strategy. ``coverage`` is the share of its entries that found a label
        (NaN without entries). ``win_rate`` is the uniqueness-weighted share of take-profit
        outcomes among those labels whose outcome is known: not censored and, with
        ``known_before_ns``, exited before it (NaN when there is none).
    """
    n_strategies = len(stop_loss_pips)
    strategy_index = np.asarray(strategy_index, dtype=np.int64)
    found_count = np.zeros(n_strategies)
    weight_sum = np.zeros(n_strategies)
    win_sum = np.zeros(n_strategies)
    entries = np.bincount(strategy_index, minlength=n_strategies).astype(np.float64)
    if len(labels_table) and len(strategy_index):
        dense = _dense_labels(labels_table)
        bar_ns, take_profit, stop_loss, horizon, outcome, uniqueness, exit_ns = dense
        for start in range(0, len(strategy_index), max_entries_per_step):
            part = slice(start, start + max_entries_per_step)
            index = strategy_index[part]
            position = np.minimum(np.searchsorted(bar_ns, signal_ns[part]), len(bar_ns) - 1)
            on_bar = bar_ns[position] == signal_ns[part]
            column = np.where(np.asarray(side[part]) > 0, 0, 1)

            # Distance of every grid entry to the strategy's barriers, as one sortable key.
            distance = (np.abs(take_profit[position, :, column] - take_profit_pips[index][:, None])
                        + np.abs(stop_loss[position, :, column] - stop_loss_pips[index][:, None]))
            horizon_gap = np.abs(horizon[position, :, column] - horizon_minutes)
            key = np.rint(np.nan_to_num(distance, nan=1e9) * 1000.0) * 1e7 + np.minimum(np.rint(horizon_gap), 1e6)
            grid = np.argmin(key, axis=1)
            code = outcome[position, grid, column]
            has_label = on_bar & (code >= 0)
            known = has_label & (code != CENSORED_CODE)
            if known_before_ns is not None:
                known &= exit_ns[position, grid, column] < known_before_ns
            weight = np.where(known, uniqueness[position, grid, column], 0.0)
            found_count += np.bincount(index[has_label], minlength=n_strategies)
            weight_sum += np.bincount(index, weights=weight, minlength=n_strategies)
            win_sum += np.bincount(index, weights=weight * (code == 1), minlength=n_strategies)
    with np.errstate(invalid="ignore", divide="ignore"):
        coverage = np.where(entries > 0, found_count / entries, np.nan)
        win_rate = np.where(weight_sum > 0, win_sum / weight_sum, np.nan)
    return win_rate, coverage


def _dense_labels(labels_table: pd.DataFrame) -> tuple[np.ndarray, ...]:
    """Return labels as arrays of shape (bar, grid entry, side), with the sorted bar opens.

    Missing cells have NaN barriers and outcome code -1.
    """
    timestamp = labels_table["timestamp"].to_numpy(dtype=np.int64)
    bar_ns, bar = np.unique(timestamp, return_inverse=True)
    grid = labels_table["grid_id"].to_numpy(dtype=np.int64)
    column = np.where(labels_table["side"].to_numpy() > 0, 0, 1)
    shape = (len(bar_ns), int(grid.max()) + 1, 2)
    arrays = []
    for name in ("take_profit_pips", "stop_loss_pips", "horizon_minutes", "uniqueness"):
        values = np.full(shape, np.nan, dtype=np.float32)
        values[bar, grid, column] = labels_table[name].to_numpy(dtype=np.float32, na_value=np.nan)
        arrays.append(values)
    outcome = np.full(shape, -1, dtype=np.int8)
    codes = pd.Categorical(labels_table["outcome"].astype(str), categories=list(OUTCOMES)).codes
    outcome[bar, grid, column] = codes
    exit_ns = np.full(shape, NAT_NS, dtype=np.int64)
    if "exit_time" in labels_table.columns:
        exit_ns[bar, grid, column] = labels_table["exit_time"].to_numpy(dtype=np.int64)
    take_profit, stop_loss, horizon, uniqueness = arrays
    return bar_ns, take_profit, stop_loss, horizon, outcome, uniqueness, exit_ns

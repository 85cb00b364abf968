"""Bid/ask OHLC bars from ticks, one table per timeframe.

Market assumptions:

- Bars are UTC bins aligned to the Unix epoch: a bar opens at ``floor(ts / tf) * tf``. Five-
  minute bars open at :00, :05, …, hourly bars on the hour and daily bars at 00:00 UTC, not
  at the 17:00 New York rollover. A timeframe that does not divide a day (7 minutes, say)
  still counts its bins from the epoch, not from each midnight.
- Bid and ask get separate OHLC from the same ticks. The spread is ``ask - bid`` in price
  units (quote currency), averaged over ticks, not over time.
- An interval without ticks (a weekend, a data hole) gets no bar. The next bar carries
  ``gap_before=True`` so that features and fills can tell a gap from a quiet market.
- A bar is stamped with its open time. Its values are known only at the close,
  ``open + timeframe``, and a signal on it acts at the first tick at or after that time
  (``entry_tick_index``).

In memory ``timestamp`` is int64 nanoseconds UTC. In parquet files it is
``timestamp[ns, tz=UTC]`` (``bars_to_table`` and ``read_bars`` convert).
"""

from __future__ import annotations

import logging
import numbers
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fxresearch._bar_kernels import build_bars_nb, first_invalid_tick_nb
from fxresearch.timeutil import NS_PER_MINUTE

logger = logging.getLogger(__name__)

TIMEFRAME_NAMES: dict[int, str] = {1: "M1", 5: "M5", 15: "M15", 30: "M30", 60: "H1", 240: "H4", 1440: "D1"}

BAR_COLUMNS: tuple[str, ...] = (
    "timestamp",
    "bid_open", "bid_high", "bid_low", "bid_close",
    "ask_open", "ask_high", "ask_low", "ask_close",
    "spread_mean", "spread_max",
    "tick_count", "first_tick", "last_tick",
    "gap_before",
)

BAR_SCHEMA = pa.schema(
    [pa.field("timestamp", pa.timestamp("ns", tz="UTC"))]
    + [pa.field(name, pa.float64()) for name in BAR_COLUMNS[1:11]]
    + [pa.field(name, pa.int64()) for name in ("tick_count", "first_tick", "last_tick")]
    + [pa.field("gap_before", pa.bool_())]
)


def _check_timeframe(timeframe_min: object) -> int:
    """Return ``timeframe_min`` as an int, or raise when it is not a positive whole number."""
    if isinstance(timeframe_min, (bool, np.bool_)) or not isinstance(timeframe_min, numbers.Integral):
        raise ValueError(
            f"Invalid timeframe_min={timeframe_min!r} ({type(timeframe_min).__name__}): expected a "
            f"positive integer number of minutes, such as 1, 5 or 60."
        )
    if timeframe_min <= 0:
        raise ValueError(
            f"Invalid timeframe_min={timeframe_min}: expected a positive integer number of minutes, "
            f"such as 1, 5 or 60."
        )
    return int(timeframe_min)


def timeframe_name(minutes: int) -> str:
    """Return the short name of a timeframe: ``M5``, ``H1``, ``D1``.

    Known timeframes come from ``TIMEFRAME_NAMES``. Other values use the largest unit that
    divides them evenly, so 120 is ``H2``, 2880 is ``D2`` and 7 is ``M7``.
    """
    minutes = _check_timeframe(minutes)
    if minutes in TIMEFRAME_NAMES:
        return TIMEFRAME_NAMES[minutes]
    if minutes % 1440 == 0:
        return f"D{minutes // 1440}"
    if minutes % 60 == 0:
        return f"H{minutes // 60}"
    return f"M{minutes}"


def _check_ticks(timestamp_ns: np.ndarray, bid: np.ndarray, ask: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return contiguous int64/float64 copies or views of the tick arrays, or raise."""
    timestamp_ns = np.asarray(timestamp_ns)
    if timestamp_ns.ndim != 1 or not np.issubdtype(timestamp_ns.dtype, np.integer):
        raise ValueError(
            f"Invalid timestamp_ns: expected a 1-D integer array of UTC nanoseconds, got dtype "
            f"{timestamp_ns.dtype} with shape {timestamp_ns.shape}. Convert datetimes with "
            f"fxresearch.timeutil.datetime_to_ns."
        )
    timestamp_ns = np.ascontiguousarray(timestamp_ns, dtype=np.int64)
    bid = np.ascontiguousarray(bid, dtype=np.float64)
    ask = np.ascontiguousarray(ask, dtype=np.float64)

    if bid.ndim != 1 or ask.ndim != 1 or not len(timestamp_ns) == len(bid) == len(ask):
        raise ValueError(
            f"Tick arrays differ in shape: timestamp_ns {timestamp_ns.shape}, bid {bid.shape}, "
            f"ask {ask.shape}. Pass one bid and one ask per timestamp."
        )

    # The compiled scan is the fast path. Numpy locates and counts the problem only when there is one.
    if first_invalid_tick_nb(timestamp_ns, bid, ask) >= 0:
        backwards = np.flatnonzero(timestamp_ns[1:] < timestamp_ns[:-1])
        if len(backwards):
            first = int(backwards[0]) + 1
            raise ValueError(
                f"timestamp_ns is not sorted ascending: {len(backwards)} ticks go back in time, the "
                f"first at index {first} ({timestamp_ns[first]} after {timestamp_ns[first - 1]}). "
                f"Sort the ticks stably by time before building bars."
            )
        for name, prices in (("bid", bid), ("ask", ask)):
            bad = np.flatnonzero(~np.isfinite(prices))
            if len(bad):
                raise ValueError(
                    f"{name} has {len(bad)} NaN or infinite prices, the first at index {int(bad[0])}. "
                    f"Drop invalid ticks (fxresearch.ticks) before building bars."
                )
    return timestamp_ns, bid, ask


def build_bars(timestamp_ns: np.ndarray, bid: np.ndarray, ask: np.ndarray,
               timeframe_min: int) -> pd.DataFrame:
    """Build bid/ask OHLC bars of ``timeframe_min`` minutes from ticks.

    Parameters
    ----------
    timestamp_ns : np.ndarray
        Tick times, int64 nanoseconds UTC, sorted ascending. Repeated times are allowed.
    bid, ask : np.ndarray
        Tick prices in quote currency, finite, one per timestamp.
    timeframe_min : int
        Bar length in minutes, a positive integer.

    Returns
    -------
    pd.DataFrame
        One row per UTC bin with at least one tick, with the columns of ``BAR_COLUMNS``.
        ``timestamp`` is the bar open in int64 ns UTC. Bid and ask OHLC follow, then
        ``spread_mean`` and ``spread_max`` (``ask - bid`` in price units) and ``tick_count``.
        ``first_tick`` and ``last_tick`` are inclusive indices into the input arrays.
        ``gap_before`` is True when the previous bar opened more than one timeframe earlier.

    Raises
    ------
    ValueError
        When the arrays differ in length, the timestamps are not sorted or not integers,
        a price is NaN or infinite, or the timeframe is not a positive integer.
    """
    timeframe_min = _check_timeframe(timeframe_min)
    timestamp_ns, bid, ask = _check_ticks(timestamp_ns, bid, ask)

    started = time.perf_counter()
    arrays = build_bars_nb(timestamp_ns, bid, ask, np.int64(timeframe_min * NS_PER_MINUTE))
    bars = pd.DataFrame(dict(zip(BAR_COLUMNS, arrays, strict=True)))
    logger.debug("Built %d %s bars from %d ticks in %.3f s", len(bars),
                 timeframe_name(timeframe_min), len(timestamp_ns), time.perf_counter() - started)
    return bars


def bars_to_table(df: pd.DataFrame) -> pa.Table:
    """Convert a bar DataFrame to a pyarrow Table with ``timestamp`` as ``timestamp[ns, tz=UTC]``.

    The table has the columns of ``BAR_COLUMNS`` in that order and no pandas index.
    """
    missing = [name for name in BAR_COLUMNS if name not in df.columns]
    if missing:
        raise ValueError(f"Bar DataFrame is missing columns {missing}. Build it with build_bars.")
    timestamp = df["timestamp"].to_numpy()
    if not np.issubdtype(timestamp.dtype, np.integer):
        raise ValueError(
            f"Bar column 'timestamp' must be int64 nanoseconds UTC, got dtype {timestamp.dtype}. "
            f"Convert with fxresearch.timeutil.datetime_to_ns."
        )

    columns = [pa.array(timestamp.astype(np.int64, copy=False), type=pa.int64()).cast(BAR_SCHEMA.field(0).type)]
    for field in list(BAR_SCHEMA)[1:]:
        columns.append(pa.array(df[field.name].to_numpy(), type=field.type))
    return pa.Table.from_arrays(columns, schema=BAR_SCHEMA)


def read_bars(path: str | Path) -> pd.DataFrame:
    """Read a bar parquet file written from ``bars_to_table``, with ``timestamp`` as int64 ns UTC.

    A ``timestamp`` column in another unit, or without a time zone (read as UTC), is converted
    to nanoseconds.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Bar file not found: {path}. Run generate-base to build it.")
    table = pq.read_table(path)
    missing = [name for name in BAR_COLUMNS if name not in table.column_names]
    if missing:
        raise ValueError(f"Bar file {path} is missing columns {missing}. Rebuild it with generate-base.")

    timestamp = table.column("timestamp")
    if not pa.types.is_timestamp(timestamp.type):
        raise ValueError(
            f"Bar file {path}: column 'timestamp' has type {timestamp.type}, expected "
            f"timestamp[ns, tz=UTC]. Rebuild it with generate-base."
        )
    # Arrow stores timestamps as UTC epoch values whatever the zone, so the int64 is UTC.
    timestamp_ns = timestamp.cast(pa.timestamp("ns")).cast(pa.int64())
    table = table.select(list(BAR_COLUMNS)).set_column(0, "timestamp", timestamp_ns)
    return table.to_pandas()


def bar_close_ns(bars: pd.DataFrame, timeframe_min: int) -> np.ndarray:
    """Return each bar's close time, ``open + timeframe``, as int64 ns UTC.

    The close is the first moment at which the bar's values are known.
    """
    timeframe_min = _check_timeframe(timeframe_min)
    open_ns = bars["timestamp"].to_numpy()
    if not np.issubdtype(open_ns.dtype, np.integer):
        raise ValueError(
            f"Bar column 'timestamp' must be int64 nanoseconds UTC, got dtype {open_ns.dtype}. "
            f"Read bar files with fxresearch.bars.read_bars."
        )
    return open_ns.astype(np.int64, copy=False) + np.int64(timeframe_min * NS_PER_MINUTE)


def entry_tick_index(timestamp_ns_ticks: np.ndarray, bars: pd.DataFrame, timeframe_min: int) -> np.ndarray:
    """Return, per bar, the index of the first tick at or after the bar's close.

    A signal computed on a bar acts at this tick. The index equals ``len(timestamp_ns_ticks)``
    when no tick follows the close (the last bar of the data).

    Parameters
    ----------
    timestamp_ns_ticks : np.ndarray
        Tick times, int64 nanoseconds UTC, sorted ascending (the same ticks the bars came from).
    bars : pd.DataFrame
        Bars from ``build_bars`` or ``read_bars``.
    timeframe_min : int
        The bars' timeframe in minutes.
    """
    ticks_ns = np.asarray(timestamp_ns_ticks)
    if ticks_ns.ndim != 1 or not np.issubdtype(ticks_ns.dtype, np.integer):
        raise ValueError(
            f"Invalid timestamp_ns_ticks: expected a 1-D integer array of UTC nanoseconds, got "
            f"dtype {ticks_ns.dtype} with shape {ticks_ns.shape}."
        )
    if len(ticks_ns) > 1 and np.any(ticks_ns[1:] < ticks_ns[:-1]):
        raise ValueError("timestamp_ns_ticks is not sorted ascending. Sort the ticks stably by time.")
    close_ns = bar_close_ns(bars, timeframe_min)
    return np.searchsorted(ticks_ns.astype(np.int64, copy=False), close_ns, side="left").astype(np.int64)

"""Time helpers: UTC nanoseconds, New York trading days, sessions and the weekend close.

All timestamps in the tool are int64 nanoseconds since the epoch, UTC. Market-local times
(London, New York, Tokyo) come from the IANA zone database, so daylight saving does not
shift sessions. The FX trading day and the daily rollover are at 17:00 New York time.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

NS_PER_MINUTE = 60_000_000_000
NS_PER_DAY = 86_400_000_000_000
NEW_YORK = "America/New_York"
LONDON = "Europe/London"
TOKYO = "Asia/Tokyo"


def datetime_to_ns(values: Any) -> np.ndarray:
    """Return int64 UTC nanoseconds from datetime-like values (any unit; naive means UTC)."""
    index = pd.DatetimeIndex(pd.to_datetime(values, utc=True))
    return index_to_ns(index)


def index_to_ns(index: pd.DatetimeIndex) -> np.ndarray:
    """Return a datetime index as int64 nanoseconds: UTC for a tz-aware index, wall-clock for a naive one.

    NaT becomes the minimum int64, as in numpy's ``datetime64`` to ``int64`` view.
    """
    if index.tz is not None:
        index = index.tz_convert("UTC").tz_localize(None)
    return index.as_unit("ns").to_numpy(dtype="datetime64[ns]").view(np.int64)


def ns_to_datetime(timestamp_ns: npt.ArrayLike) -> pd.DatetimeIndex:
    """Return a UTC ``datetime64[ns]`` index from int64 nanoseconds."""
    return pd.DatetimeIndex(pd.to_datetime(np.asarray(timestamp_ns, dtype=np.int64), utc=True)).as_unit("ns")


def to_local(timestamp_ns: np.ndarray, zone: str) -> pd.DatetimeIndex:
    """Return the UTC nanosecond timestamps as a tz-aware index in ``zone``."""
    return ns_to_datetime(timestamp_ns).tz_convert(zone)


NS_PER_HOUR = 60 * NS_PER_MINUTE


def _utc_hours(timestamp_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the distinct UTC hours (as ns) of the timestamps and each timestamp's index into them.

    New York is a whole number of hours from UTC, so every tick of one UTC hour has the same
    New York date, weekday and hour; converting each distinct hour once is exact and far
    cheaper than converting every tick. Sorted input is grouped in one pass.
    """
    hours = np.asarray(timestamp_ns, dtype=np.int64) // NS_PER_HOUR
    if len(hours) and np.all(hours[1:] >= hours[:-1]):
        starts = np.flatnonzero(np.r_[True, hours[1:] != hours[:-1]])
        inverse = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(hours)]))
        return hours[starts] * NS_PER_HOUR, inverse
    unique, inverse = np.unique(hours, return_inverse=True)
    return unique * NS_PER_HOUR, inverse


def trading_day_ns(timestamp_ns: np.ndarray) -> np.ndarray:
    """Return each timestamp's FX trading day as int64 day numbers.

    A trading day runs from 17:00 to 17:00 New York time and is named by the date it ends on,
    so Sunday 17:00 to Monday 17:00 New York is Monday.
    """
    hours, inverse = _utc_hours(timestamp_ns)
    shifted = to_local(hours, NEW_YORK) + pd.Timedelta(hours=7)
    naive = shifted.tz_localize(None).normalize()
    return (index_to_ns(naive) // NS_PER_DAY)[inverse]


def in_weekend_close(timestamp_ns: np.ndarray) -> np.ndarray:
    """Return True for timestamps in the weekend close, Friday 17:00 to Sunday 17:00 New York."""
    hours, inverse = _utc_hours(timestamp_ns)
    local = to_local(hours, NEW_YORK)
    weekday, hour = local.dayofweek.to_numpy(), local.hour.to_numpy()
    closed = ((weekday == 4) & (hour >= 17)) | (weekday == 5) | ((weekday == 6) & (hour < 17))
    return closed[inverse]


def weekend_gap_mask(start_ns: np.ndarray, end_ns: np.ndarray) -> np.ndarray:
    """Return True where a gap from start to end lies in the weekend close.

    The market closes Friday 17:00 and reopens Sunday 17:00 New York time. Vendors stop a
    little early and restart a little late. So a gap counts as the weekend when it starts
    on Friday from 15:00 New York time or on Saturday. It must also end on Saturday, or on
    Sunday before 20:00 New York time, and last less than three days.
    """
    start = to_local(start_ns, NEW_YORK)
    end = to_local(end_ns, NEW_YORK)
    start_ok = ((start.dayofweek == 4) & (start.hour >= 15)) | (start.dayofweek == 5)
    end_ok = (end.dayofweek == 5) | ((end.dayofweek == 6) & (end.hour < 20))
    short_enough = (np.asarray(end_ns) - np.asarray(start_ns)) < 3 * NS_PER_DAY
    return np.asarray(start_ok & end_ok & short_enough)


def data_hole_after(timestamp_ns: np.ndarray, max_gap_minutes: float) -> np.ndarray:
    """Return a uint8 array, 1 at tick i when the gap to tick i+1 is a data hole.

    A data hole is a gap longer than ``max_gap_minutes`` that is not the weekend close. The
    last tick is always 0.
    """
    timestamp_ns = np.asarray(timestamp_ns, dtype=np.int64)
    holes = np.zeros(len(timestamp_ns), dtype=np.uint8)
    if len(timestamp_ns) < 2:
        return holes
    gaps = np.diff(timestamp_ns)
    long_gap = np.flatnonzero(gaps > max_gap_minutes * NS_PER_MINUTE)
    if len(long_gap):
        weekend = weekend_gap_mask(timestamp_ns[long_gap], timestamp_ns[long_gap + 1])
        holes[long_gap[~weekend]] = 1
    return holes

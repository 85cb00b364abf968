"""Causal features per bar, computed on mid prices, and the join of a higher timeframe.

Every value on bar t uses bars up to and including t only. It is known at t's close
(``open + timeframe``), and a signal taken from it acts at the first tick at or after that
time. Warm-up rows, where a window is not yet full, stay NaN and are never filled from later
bars.

Market assumptions:

- The mid price is ``(bid + ask) / 2`` of each OHLC field. The mid high and low are the mean of
  the bid and ask highs (lows), which can differ from the true extreme of the tick mids when
  the spread moves inside the bar.
- Windows count bars, not minutes. A bar exists only when it has a tick, so a window can
  span the weekend close or a data hole (``gap_before`` marks those bars).
- Time features use the bar's open in market-local time from the IANA zone database, so
  daylight saving does not move them.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from fxresearch.config import FeaturesConfig
from fxresearch.instruments import Instrument
from fxresearch.timeutil import LONDON, NEW_YORK, NS_PER_MINUTE, TOKYO, datetime_to_ns, to_local

logger = logging.getLogger(__name__)

PRICE_COLUMNS = ("bid_open", "bid_high", "bid_low", "bid_close",
                 "ask_open", "ask_high", "ask_low", "ask_close")
REQUIRED_BAR_COLUMNS = ("timestamp", *PRICE_COLUMNS, "spread_mean")

SPREAD_COLUMN = "spread_pips"
HOUR_OF_WEEK_COLUMN = "hour_of_week"
# Session flag column -> (zone, first local hour, end local hour). A bar is in the session when
# its open falls in [first hour, end hour) local time.
SESSIONS: dict[str, tuple[str, int, int]] = {
    "session_tokyo": (TOKYO, 9, 18),
    "session_london": (LONDON, 8, 17),
    "session_new_york": (NEW_YORK, 8, 17),
}
# The FX week starts Sunday 17:00 New York time, when the market reopens.
WEEK_START_HOUR_NEW_YORK = 17


def return_column(lookback: int) -> str:
    """Return the name of the log-return column over ``lookback`` bars, e.g. ``ret_12``."""
    return f"ret_{lookback}"


def volatility_column(window: int) -> str:
    """Return the name of the realised-volatility column over ``window`` bars, e.g. ``rv_20``."""
    return f"rv_{window}"


def efficiency_column(window: int) -> str:
    """Return the name of the efficiency-ratio column over ``window`` bars, e.g. ``er_10``."""
    return f"er_{window}"


def feature_columns(config: FeaturesConfig) -> list[str]:
    """Return the feature column names that ``build_features`` writes, in order."""
    columns = [return_column(k) for k in config.return_lookbacks]
    columns += [
        volatility_column(config.volatility_window),
        f"atr_{config.atr_window}",
        f"rsi_{config.rsi_window}",
        f"zscore_{config.zscore_window}",
        f"bb_pos_{config.bollinger_window}",
        f"roc_{config.roc_window}",
        f"ma_slope_{config.ma_slope_window}",
        efficiency_column(config.efficiency_window),
        SPREAD_COLUMN,
        HOUR_OF_WEEK_COLUMN,
        *SESSIONS,
    ]
    return columns


def empty_features(config: FeaturesConfig) -> pd.DataFrame:
    """Return a feature table with no rows and the columns and dtypes of ``build_features``."""
    data: dict[str, np.ndarray] = {"timestamp": np.array([], dtype=np.int64)}
    for column in feature_columns(config):
        data[column] = np.array([], dtype=np.float64)
    return pd.DataFrame(data)


def insufficient_reason(n_bars: int, config: FeaturesConfig) -> str | None:
    """Return why ``n_bars`` bars are too few for features, or None when they are enough."""
    if n_bars < config.min_bars:
        return (f"{n_bars} bars is fewer than features.min_bars = {config.min_bars}; "
                f"the feature table is written empty")
    return None


def timestamp_column_ns(frame: pd.DataFrame, what: str = "table") -> np.ndarray:
    """Return the ``timestamp`` column as int64 ns UTC, accepting int64 or datetime values.

    Raises
    ------
    ValueError
        When the column is missing, or when its values are not strictly increasing.
    """
    if "timestamp" not in frame.columns:
        raise ValueError(f"The {what} has no 'timestamp' column. Its columns are {list(frame.columns)}")
    column = frame["timestamp"]
    if pd.api.types.is_datetime64_any_dtype(column):
        timestamp_ns = datetime_to_ns(column)
    elif pd.api.types.is_integer_dtype(column):
        timestamp_ns = column.to_numpy(dtype=np.int64)
    else:
        raise ValueError(f"The {what}'s 'timestamp' column has dtype {column.dtype}, but "
                         f"int64 ns UTC or datetime64 is expected")
    if len(timestamp_ns) > 1:
        steps = np.diff(timestamp_ns)
        if (steps <= 0).any():
            row = int(np.flatnonzero(steps <= 0)[0]) + 1
            raise ValueError(f"The {what}'s timestamps must be strictly increasing, but row {row} "
                             f"({timestamp_ns[row]}) is not after row {row - 1} "
                             f"({timestamp_ns[row - 1]}). Sort the table and drop duplicates.")
    return timestamp_ns


def build_features(bars: pd.DataFrame, timeframe_min: int, config: FeaturesConfig,
                   instrument: Instrument) -> pd.DataFrame:
    """Build causal features for one timeframe's bars.

    Parameters
    ----------
    bars
        Bar table of ``bars.build_bars``: ``timestamp`` (bar open, int64 ns UTC or datetime),
        bid/ask OHLC and ``spread_mean`` (price units), sorted by time.
    timeframe_min
        Bar length in minutes. Windows count bars, so it is only checked and logged.
    config
        Window lengths and the minimum bar count.
    instrument
        Supplies the pip size for ATR, MA slope and spread in pips.

    Returns
    -------
    pandas.DataFrame
        ``timestamp`` (bar open, int64 ns UTC) and one float64 column per name in
        ``feature_columns(config)``, one row per bar. Definitions (``c`` is the mid close):

        - ``ret_k``: ``log(c_t / c_{t-k})``.
        - ``rv_w``: sample standard deviation (ddof 1) of the last ``w`` one-bar log returns.
        - ``atr_w``: Wilder's average true range in pips. True range uses the mid high, low and
          the previous mid close (the first bar uses high − low). The first value, on row
          ``w - 1``, is the simple mean of the first ``w`` true ranges. After that,
          ``atr += (tr - atr) / w``.
        - ``rsi_w``: Wilder's RSI, ``100 * avg_gain / (avg_gain + avg_loss)``. The averages
          start as simple means of the first ``w`` close-to-close changes and then follow
          Wilder's smoothing. A window with no change at all gives 50.
        - ``zscore_w``: ``(c - mean) / std`` over the last ``w`` closes (population std).
        - ``bb_pos_w``: ``(c - lower) / (upper - lower)`` with bands ``mean ± width * std``.
          A flat window (std 0) gives a z-score of 0 and a band position of 0.5.
        - ``roc_w``: ``100 * (c_t / c_{t-w} - 1)``, percent.
        - ``ma_slope_w``: change of the ``w``-bar simple moving average over one bar, in pips,
          which equals ``(c_t - c_{t-w}) / w``.
        - ``er_w``: ``|c_t - c_{t-w}| / sum of |c_i - c_{i-1}|`` over the last ``w`` changes,
          in [0, 1]. A window with no movement gives 0.
        - ``spread_pips``: the bar's mean spread in pips.
        - ``hour_of_week``: hours since Sunday 17:00 New York time at the bar's open, 0-167.
        - ``session_tokyo``, ``session_london``, ``session_new_york``: 1.0 when the bar opens
          in 09:00-18:00 Tokyo, 08:00-17:00 London or 08:00-17:00 New York local time, else 0.0.

        With fewer than ``config.min_bars`` bars the table is empty (see
        ``insufficient_reason``).

    Raises
    ------
    ValueError
        When a required column is missing, timestamps are not strictly increasing, a price is
        not finite and positive, or a window in ``config`` is too short.
    """
    _check_config(config)
    if timeframe_min <= 0:
        raise ValueError(f"timeframe_min must be a positive number of minutes, got {timeframe_min}")
    missing = [c for c in REQUIRED_BAR_COLUMNS if c not in bars.columns]
    if missing:
        raise ValueError(f"The bar table is missing columns {missing}. Build it with bars.build_bars.")

    reason = insufficient_reason(len(bars), config)
    if reason is not None:
        logger.info("M%d features skipped: %s", timeframe_min, reason)
        return empty_features(config)

    timestamp_ns = timestamp_column_ns(bars, "bar table")
    mid = _mid_prices(bars)
    pip = instrument.pip_size
    close = mid["close"]

    features: dict[str, pd.Series] = {}
    log_close = pd.Series(np.log(close.to_numpy()))
    for lookback in config.return_lookbacks:
        features[return_column(lookback)] = log_close.diff(lookback)
    one_bar_return = log_close.diff(1)
    features[volatility_column(config.volatility_window)] = (
        one_bar_return.rolling(config.volatility_window).std(ddof=1))
    features[f"atr_{config.atr_window}"] = _wilder_atr(mid, config.atr_window) / pip
    features[f"rsi_{config.rsi_window}"] = wilder_rsi(close, config.rsi_window)

    zscore = _rolling_zscore(close, config.zscore_window)
    features[f"zscore_{config.zscore_window}"] = zscore
    band_zscore = _rolling_zscore(close, config.bollinger_window)
    width = config.bollinger_width
    # With bands mean ± width * std, the band position is (z + width) / (2 * width).
    features[f"bb_pos_{config.bollinger_window}"] = (band_zscore + width) / (2.0 * width)

    roc_base = close.shift(config.roc_window)
    features[f"roc_{config.roc_window}"] = 100.0 * (close / roc_base - 1.0)
    slope_window = config.ma_slope_window
    features[f"ma_slope_{slope_window}"] = (close - close.shift(slope_window)) / slope_window / pip
    features[efficiency_column(config.efficiency_window)] = _efficiency_ratio(
        close, config.efficiency_window)
    features[SPREAD_COLUMN] = bars["spread_mean"].astype(np.float64).reset_index(drop=True) / pip

    features.update(time_features(timestamp_ns))

    table = pd.DataFrame({"timestamp": timestamp_ns})
    for column in feature_columns(config):
        table[column] = np.asarray(features[column], dtype=np.float64)
    logger.debug("M%d features: %d bars, %d columns", timeframe_min, len(table), table.shape[1] - 1)
    return table


def time_features(timestamp_ns: np.ndarray) -> dict[str, np.ndarray]:
    """Return ``hour_of_week`` and the session flags for bar open times, as float64 arrays."""
    timestamp_ns = np.asarray(timestamp_ns, dtype=np.int64)
    new_york = to_local(timestamp_ns, NEW_YORK)

    # pandas counts days from Monday = 0; the FX week counts hours from Sunday 17:00.
    days_since_sunday = (np.asarray(new_york.dayofweek) + 1) % 7
    hours_since_sunday = days_since_sunday * 24 + np.asarray(new_york.hour)
    hour_of_week = (hours_since_sunday - WEEK_START_HOUR_NEW_YORK) % 168
    result = {HOUR_OF_WEEK_COLUMN: hour_of_week.astype(np.float64)}

    for column, (zone, first_hour, end_hour) in SESSIONS.items():
        local_hour = np.asarray(to_local(timestamp_ns, zone).hour)
        result[column] = ((local_hour >= first_hour) & (local_hour < end_hour)).astype(np.float64)
    return result


def join_higher_timeframe(lower: pd.DataFrame, lower_tf_min: int, higher: pd.DataFrame,
                          higher_tf_min: int, prefix: str) -> pd.DataFrame:
    """Add a higher timeframe's features to each lower-timeframe bar, causally.

    Each lower bar gets the features of the last higher bar whose close
    (``open + higher_tf_min``) is at or before the lower bar's close
    (``open + lower_tf_min``). The higher bar still in progress at the lower bar's close is never
    used. With no such higher bar the joined columns are NaN.

    Parameters
    ----------
    lower, higher
        Feature tables with ``timestamp`` (bar open) strictly increasing.
    lower_tf_min, higher_tf_min
        Bar lengths in minutes.
    prefix
        Prepended to each higher feature column, e.g. ``"h1_"``.

    Returns
    -------
    pandas.DataFrame
        ``lower`` with the higher table's non-timestamp columns added as ``prefix + name``, in
        the lower table's row order and index.

    Raises
    ------
    ValueError
        When a timeframe is not positive, timestamps are not strictly increasing, or a joined
        column name already exists in ``lower``.
    """
    for name, minutes in (("lower_tf_min", lower_tf_min), ("higher_tf_min", higher_tf_min)):
        if minutes <= 0:
            raise ValueError(f"{name} must be a positive number of minutes, got {minutes}")
    lower_close_ns = timestamp_column_ns(lower, "lower-timeframe table") + lower_tf_min * NS_PER_MINUTE
    higher_close_ns = (timestamp_column_ns(higher, "higher-timeframe table")
                       + higher_tf_min * NS_PER_MINUTE)

    value_columns = [c for c in higher.columns if c != "timestamp"]
    renamed = {c: f"{prefix}{c}" for c in value_columns}
    clashes = [name for name in renamed.values() if name in lower.columns]
    if clashes:
        raise ValueError(f"Joined columns {clashes} already exist in the lower table; "
                         f"choose another prefix than {prefix!r}")

    key = "__close_ns"
    left = pd.DataFrame({key: lower_close_ns})
    right = higher[value_columns].rename(columns=renamed).reset_index(drop=True)
    right.insert(0, key, higher_close_ns)
    merged = pd.merge_asof(left, right, on=key, direction="backward", allow_exact_matches=True)

    result = lower.copy()
    for name in renamed.values():
        result[name] = merged[name].to_numpy()
    return result


def _check_config(config: FeaturesConfig) -> None:
    if not config.return_lookbacks:
        raise ValueError("features.return_lookbacks is empty. Give at least one lookback in bars.")
    if len(set(config.return_lookbacks)) != len(config.return_lookbacks):
        raise ValueError(f"features.return_lookbacks {config.return_lookbacks} repeats a value")
    for lookback in config.return_lookbacks:
        if lookback < 1:
            raise ValueError(f"features.return_lookbacks must be whole bars >= 1, got {lookback}")
    windows = {
        "atr_window": (config.atr_window, 1),
        "rsi_window": (config.rsi_window, 1),
        "roc_window": (config.roc_window, 1),
        "ma_slope_window": (config.ma_slope_window, 1),
        "efficiency_window": (config.efficiency_window, 1),
        # A standard deviation needs two values.
        "volatility_window": (config.volatility_window, 2),
        "zscore_window": (config.zscore_window, 2),
        "bollinger_window": (config.bollinger_window, 2),
    }
    for name, (value, minimum) in windows.items():
        if value < minimum:
            raise ValueError(f"features.{name} must be at least {minimum} bars, got {value}")
    if not config.bollinger_width > 0:
        raise ValueError(f"features.bollinger_width must be positive, got {config.bollinger_width}")


def _mid_prices(bars: pd.DataFrame) -> pd.DataFrame:
    """Return mid open, high, low and close with a fresh RangeIndex, or raise on a bad price."""
    for column in PRICE_COLUMNS:
        values = bars[column].to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values) | (values <= 0)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ValueError(f"Bar column {column} has {int(bad.sum())} values that are not finite "
                             f"and positive, first at row {row}: {values[row]!r}")
    mid = {}
    for field in ("open", "high", "low", "close"):
        bid = bars[f"bid_{field}"].to_numpy(dtype=np.float64)
        ask = bars[f"ask_{field}"].to_numpy(dtype=np.float64)
        mid[field] = (bid + ask) / 2.0
    return pd.DataFrame(mid)


def _wilder_mean(values: pd.Series, window: int, first_row: int) -> pd.Series:
    """Return Wilder's running mean, seeded by the simple mean of ``values[first_row:first_row+window]``.

    The seed sits on row ``first_row + window - 1``, and rows before it are NaN.
    """
    seed_row = first_row + window - 1
    seeded = pd.Series(np.nan, index=values.index, dtype=np.float64)
    if len(values) <= seed_row:
        return seeded
    seeded.iloc[seed_row] = values.iloc[first_row:seed_row + 1].mean()
    seeded.iloc[seed_row + 1:] = values.iloc[seed_row + 1:]
    # An exponential mean with alpha 1/window that starts at its first valid value is exactly
    # Wilder's recursion avg += (x - avg) / window.
    return seeded.ewm(alpha=1.0 / window, adjust=False).mean()


def _wilder_atr(mid: pd.DataFrame, window: int) -> pd.Series:
    previous_close = mid["close"].shift(1)
    high_low = mid["high"] - mid["low"]
    high_close = (mid["high"] - previous_close).abs()
    low_close = (mid["low"] - previous_close).abs()
    # On the first bar the previous-close terms are NaN and max() skips them, leaving high - low.
    true_range = pd.concat([high_low, high_close, low_close], axis=1).max(axis=1)
    return _wilder_mean(true_range, window, first_row=0)


def wilder_rsi(close: pd.Series, window: int) -> pd.Series:
    """Return Wilder's RSI (0 to 100) of a close series; 50 where the window has no change."""
    change = close.diff()
    average_gain = _wilder_mean(change.clip(lower=0.0), window, first_row=1)
    average_loss = _wilder_mean((-change).clip(lower=0.0), window, first_row=1)
    total = average_gain + average_loss
    rsi = 100.0 * average_gain / total.where(total > 0)
    return rsi.where(~((total == 0) & average_gain.notna()), 50.0)


def _rolling_zscore(close: pd.Series, window: int) -> pd.Series:
    rolling = close.rolling(window)
    mean = rolling.mean()
    std = rolling.std(ddof=0)
    zscore = (close - mean) / std.where(std > 0)
    # pandas returns an exact 0 std for a window of equal values, so this matches flat windows only.
    return zscore.where(~(std == 0), 0.0)


def _efficiency_ratio(close: pd.Series, window: int) -> pd.Series:
    net_change = (close - close.shift(window)).abs()
    path_length = close.diff().abs().rolling(window).sum()
    ratio = net_change / path_length.where(path_length > 0)
    ratio = ratio.where(~((path_length == 0) & net_change.notna()), 0.0)
    # The rolling sum can fall a rounding error below the net change on a straight run.
    return ratio.clip(upper=1.0)

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
- The usual volatility of an hour of the week is the mean over earlier weeks of the bars
  that opened in that New York hour, so the profile follows daylight saving with the market.

``docs/features.md`` lists every column with its formula, lookback, unit and config field.
The rolling windows run in the numba kernels of ``fxresearch._feature_kernels``.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd

from fxresearch._feature_kernels import (efficiency_ratio_nb, hour_of_week_profile_nb, hurst_nb,
                                         ordinal_pattern_nb, permutation_entropy_nb,
                                         rolling_std_nb, rolling_zscore_nb, wilder_mean_nb)
from fxresearch.config import FeaturesConfig
from fxresearch.instruments import Instrument
from fxresearch.timeutil import (LONDON, NEW_YORK, NS_PER_DAY, NS_PER_HOUR, NS_PER_MINUTE, TOKYO,
                                 datetime_to_ns, to_local)

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
NS_PER_WEEK = 7 * NS_PER_DAY
# Sunday 4 January 1970 17:00 as naive wall-clock nanoseconds: a start of an FX week.
_FIRST_WEEK_START_WALL_NS = 3 * NS_PER_DAY + WEEK_START_HOUR_NEW_YORK * NS_PER_HOUR
MAX_ENTROPY_ORDER = 7


def return_column(lookback: int) -> str:
    """Return the name of the log-return column over ``lookback`` bars, e.g. ``ret_12``."""
    return f"ret_{lookback}"


def volatility_column(window: int) -> str:
    """Return the name of the realised-volatility column over ``window`` bars, e.g. ``rv_20``."""
    return f"rv_{window}"


def efficiency_column(window: int) -> str:
    """Return the name of the efficiency-ratio column over ``window`` bars, e.g. ``er_10``."""
    return f"er_{window}"


def hurst_column(window: int) -> str:
    """Return the name of the rolling Hurst exponent column over ``window`` closes, e.g. ``hurst_100``."""
    return f"hurst_{window}"


def entropy_column(order: int, window: int) -> str:
    """Return the name of the permutation entropy column, e.g. ``perm_entropy_3_100``."""
    return f"perm_entropy_{order}_{window}"


def scaled_return_column(lookback: int) -> str:
    """Return the name of the volatility-scaled return column over ``lookback`` bars, e.g. ``scaled_ret_12``."""
    return f"scaled_ret_{lookback}"


def volatility_deviation_column(window: int) -> str:
    """Return the name of the hour-of-week volatility deviation column, e.g. ``rv_hour_of_week_dev_20``."""
    return f"rv_hour_of_week_dev_{window}"


def hurst_lags(window: int) -> np.ndarray:
    """Return the lags of the Hurst fit: powers of two from 1 up to ``window // 4``."""
    lags = [1]
    while lags[-1] * 2 <= window // 4:
        lags.append(lags[-1] * 2)
    return np.array(lags, dtype=np.int64)


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
        hurst_column(config.hurst_window),
        entropy_column(config.entropy_order, config.entropy_window),
        *[scaled_return_column(k) for k in config.scaled_return_lookbacks],
        volatility_deviation_column(config.volatility_window),
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
        - ``hurst_w``: Hurst exponent of the last ``w`` log closes by the variance of
          increments: half the slope of ``log mean((x_i - x_{i-q})^2)`` against ``log q``
          for ``q`` in ``hurst_lags(w)``. About 0.5 for a random walk, above it when moves
          persist and below it when they revert.
        - ``perm_entropy_m_w``: Shannon entropy of the ordinal patterns of ``m`` consecutive
          closes over the last ``w`` patterns, divided by ``log(m!)``: 0 for a monotone run,
          near 1 for independent noise. Of two equal closes the earlier ranks lower.
        - ``scaled_ret_k``: ``ret_k / (rv_w * sqrt(k))``, the k-bar return in units of its
          expected size under a random walk with the current volatility.
        - ``rv_hour_of_week_dev_w``: ``log(rv_w / profile)``, where the profile is the mean
          ``rv_w`` of the bars that opened in the same New York hour of the week in earlier
          weeks (at least ``volatility_profile_min_weeks`` of them). The current week never
          enters, so the value uses past bars only.
        - ``spread_pips``: the bar's mean spread in pips.
        - ``hour_of_week``: hours since Sunday 17:00 New York time at the bar's open, 0-167.
        - ``session_tokyo``, ``session_london``, ``session_new_york``: 1.0 when the bar opens
          in 09:00-18:00 Tokyo, 08:00-17:00 London or 08:00-17:00 New York local time, else 0.0.

        A zero volatility (a flat window) makes ``scaled_ret_k`` and ``rv_hour_of_week_dev_w``
        NaN. With fewer than ``config.min_bars`` bars the table is empty (see
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
    open_, high, low, close = _mid_prices(bars)
    pip = instrument.pip_size

    features: dict[str, np.ndarray] = {}
    log_close = np.log(close)
    for lookback in config.return_lookbacks:
        features[return_column(lookback)] = _lagged_difference(log_close, lookback)
    one_bar_return = _lagged_difference(log_close, 1)
    volatility = rolling_std_nb(one_bar_return, config.volatility_window, 1)
    features[volatility_column(config.volatility_window)] = volatility
    features[f"atr_{config.atr_window}"] = _wilder_atr(high, low, close, config.atr_window) / pip
    features[f"rsi_{config.rsi_window}"] = _wilder_rsi_values(close, config.rsi_window)

    features[f"zscore_{config.zscore_window}"] = rolling_zscore_nb(close, config.zscore_window)
    band_zscore = rolling_zscore_nb(close, config.bollinger_window)
    width = config.bollinger_width
    # With bands mean ± width * std, the band position is (z + width) / (2 * width).
    features[f"bb_pos_{config.bollinger_window}"] = (band_zscore + width) / (2.0 * width)

    roc_base = _lagged(close, config.roc_window)
    features[f"roc_{config.roc_window}"] = 100.0 * (close / roc_base - 1.0)
    slope_window = config.ma_slope_window
    features[f"ma_slope_{slope_window}"] = _lagged_difference(close, slope_window) / slope_window / pip
    features[efficiency_column(config.efficiency_window)] = efficiency_ratio_nb(
        close, config.efficiency_window)

    features[hurst_column(config.hurst_window)] = hurst_nb(
        log_close, config.hurst_window, hurst_lags(config.hurst_window))
    codes = ordinal_pattern_nb(close, config.entropy_order)
    features[entropy_column(config.entropy_order, config.entropy_window)] = permutation_entropy_nb(
        codes, math.factorial(config.entropy_order), config.entropy_window)

    # A flat window has zero volatility, and a ratio to it carries no information.
    positive_volatility = np.where(volatility > 0, volatility, np.nan)
    for lookback in config.scaled_return_lookbacks:
        features[scaled_return_column(lookback)] = (
            _lagged_difference(log_close, lookback) / (positive_volatility * math.sqrt(lookback)))

    hour_of_week, week_id = hour_and_week_of_bars(timestamp_ns)
    profile = hour_of_week_profile_nb(volatility, hour_of_week, week_id,
                                      config.volatility_profile_min_weeks)
    with np.errstate(divide="ignore", invalid="ignore"):
        deviation = np.log(positive_volatility / profile)
    features[volatility_deviation_column(config.volatility_window)] = deviation

    features[SPREAD_COLUMN] = bars["spread_mean"].to_numpy(dtype=np.float64) / pip
    features.update(time_features(timestamp_ns))

    table = pd.DataFrame({"timestamp": timestamp_ns})
    for column in feature_columns(config):
        table[column] = np.asarray(features[column], dtype=np.float64)
    logger.debug("M%d features: %d bars, %d columns", timeframe_min, len(table), table.shape[1] - 1)
    return table


def hour_and_week_of_bars(timestamp_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return each bar's hour of the FX week (0-167) and FX week number, as int64 arrays.

    Both count from Sunday 17:00 New York wall-clock time, so a daylight-saving change does
    not move them. Week numbers increase by one per week since 4 January 1970.
    """
    new_york = to_local(np.asarray(timestamp_ns, dtype=np.int64), NEW_YORK)
    # A naive New York time read as UTC gives the wall-clock time in nanoseconds.
    wall_ns = datetime_to_ns(new_york.tz_localize(None))
    since_first_week = wall_ns - _FIRST_WEEK_START_WALL_NS
    week_id = since_first_week // NS_PER_WEEK
    hour_of_week = (since_first_week - week_id * NS_PER_WEEK) // NS_PER_HOUR
    return hour_of_week.astype(np.int64), week_id.astype(np.int64)


def time_features(timestamp_ns: np.ndarray) -> dict[str, np.ndarray]:
    """Return ``hour_of_week`` and the session flags for bar open times, as float64 arrays."""
    timestamp_ns = np.asarray(timestamp_ns, dtype=np.int64)
    hour_of_week, _week_id = hour_and_week_of_bars(timestamp_ns)
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
    for field in ("return_lookbacks", "scaled_return_lookbacks"):
        lookbacks = getattr(config, field)
        if len(set(lookbacks)) != len(lookbacks):
            raise ValueError(f"features.{field} {lookbacks} repeats a value")
        for lookback in lookbacks:
            if lookback < 1:
                raise ValueError(f"features.{field} must be whole bars >= 1, got {lookback}")
    if not config.return_lookbacks:
        raise ValueError("features.return_lookbacks is empty. Give at least one lookback in bars.")
    windows = {
        "atr_window": (config.atr_window, 1),
        "rsi_window": (config.rsi_window, 1),
        "roc_window": (config.roc_window, 1),
        "ma_slope_window": (config.ma_slope_window, 1),
        "efficiency_window": (config.efficiency_window, 1),
        "volatility_profile_min_weeks": (config.volatility_profile_min_weeks, 1),
        # A standard deviation needs two values.
        "volatility_window": (config.volatility_window, 2),
        "zscore_window": (config.zscore_window, 2),
        "bollinger_window": (config.bollinger_window, 2),
        "entropy_window": (config.entropy_window, 2),
        "entropy_order": (config.entropy_order, 2),
        # The Hurst fit needs at least the lags 1 and 2, and lag 2 needs a window of 8.
        "hurst_window": (config.hurst_window, 8),
    }
    for name, (value, minimum) in windows.items():
        if value < minimum:
            raise ValueError(f"features.{name} must be at least {minimum}, got {value}")
    if config.entropy_order > MAX_ENTROPY_ORDER:
        raise ValueError(f"features.entropy_order must be at most {MAX_ENTROPY_ORDER} "
                         f"({MAX_ENTROPY_ORDER}! patterns), got {config.entropy_order}")
    if not config.bollinger_width > 0:
        raise ValueError(f"features.bollinger_width must be positive, got {config.bollinger_width}")


def _mid_prices(bars: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return mid open, high, low and close arrays, or raise on a bad price."""
    for column in PRICE_COLUMNS:
        values = bars[column].to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values) | (values <= 0)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ValueError(f"Bar column {column} has {int(bad.sum())} values that are not finite "
                             f"and positive, first at row {row}: {values[row]!r}")
    mid = []
    for field in ("open", "high", "low", "close"):
        bid = bars[f"bid_{field}"].to_numpy(dtype=np.float64)
        ask = bars[f"ask_{field}"].to_numpy(dtype=np.float64)
        mid.append((bid + ask) / 2.0)
    return mid[0], mid[1], mid[2], mid[3]


def _lagged(values: np.ndarray, lag: int) -> np.ndarray:
    """Return ``values`` shifted down by ``lag`` rows, NaN on the first ``lag`` rows."""
    shifted = np.full(len(values), np.nan)
    if lag < len(values):
        shifted[lag:] = values[:len(values) - lag]
    return shifted


def _lagged_difference(values: np.ndarray, lag: int) -> np.ndarray:
    return values - _lagged(values, lag)


def _wilder_atr(high: np.ndarray, low: np.ndarray, close: np.ndarray, window: int) -> np.ndarray:
    previous_close = _lagged(close, 1)
    true_range = high - low
    # The first bar has no previous close, so its true range is high - low.
    true_range[1:] = np.maximum(true_range[1:], np.maximum(np.abs(high[1:] - previous_close[1:]),
                                                           np.abs(low[1:] - previous_close[1:])))
    return wilder_mean_nb(true_range, window, 0)


def _wilder_rsi_values(close: np.ndarray, window: int) -> np.ndarray:
    change = _lagged_difference(close, 1)
    average_gain = wilder_mean_nb(np.maximum(change, 0.0), window, 1)
    average_loss = wilder_mean_nb(np.maximum(-change, 0.0), window, 1)
    total = average_gain + average_loss
    with np.errstate(divide="ignore", invalid="ignore"):
        rsi = 100.0 * average_gain / total
    rsi[total == 0] = 50.0
    return rsi


def wilder_rsi(close: pd.Series, window: int) -> pd.Series:
    """Return Wilder's RSI (0 to 100) of a close series; 50 where the window has no change."""
    values = _wilder_rsi_values(np.asarray(close, dtype=np.float64), window)
    return pd.Series(values, index=close.index)

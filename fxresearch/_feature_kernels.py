"""Compiled rolling-window kernels for ``fxresearch.features``.

Each kernel takes and returns numpy arrays and plain numbers. Row ``t`` of every output reads
input rows ``<= t`` only, and a row whose window is not yet full, or contains a NaN, is NaN.
The rolling windows are recomputed from their values at each row (no running float sums), so a
value does not depend on how many rows came before its window. The exceptions are
``wilder_mean_nb``, a running mean by definition in which a NaN input makes every later row
NaN, and ``hour_of_week_profile_nb``, which accumulates over all earlier weeks and skips NaN
values.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True)
def rolling_std_nb(values: np.ndarray, window: int, ddof: int) -> np.ndarray:
    """Compute the rolling standard deviation over ``window`` rows, like ``Series.rolling(window).std(ddof)``."""
    n = len(values)
    out = np.full(n, np.nan)
    for t in range(window - 1, n):
        total = 0.0
        for i in range(t - window + 1, t + 1):
            total += values[i]
        if not math.isfinite(total):
            continue
        mean = total / window
        squares = 0.0
        for i in range(t - window + 1, t + 1):
            deviation = values[i] - mean
            squares += deviation * deviation
        out[t] = math.sqrt(squares / (window - ddof))
    return out


@njit(cache=True)
def rolling_zscore_nb(close: np.ndarray, window: int) -> np.ndarray:
    """Compute ``(close - mean) / std`` over the last ``window`` closes (population std), 0 on a flat window."""
    n = len(close)
    out = np.full(n, np.nan)
    for t in range(window - 1, n):
        total = 0.0
        for i in range(t - window + 1, t + 1):
            total += close[i]
        mean = total / window
        squares = 0.0
        flat = True
        for i in range(t - window + 1, t + 1):
            deviation = close[i] - mean
            squares += deviation * deviation
            if close[i] != close[t]:
                flat = False
        if flat:
            out[t] = 0.0
        else:
            out[t] = (close[t] - mean) / math.sqrt(squares / window)
    return out


@njit(cache=True)
def wilder_mean_nb(values: np.ndarray, window: int, first_row: int) -> np.ndarray:
    """Compute Wilder's running mean ``avg += (x - avg) / window``.

    The seed is the simple mean of ``values[first_row:first_row + window]`` on row
    ``first_row + window - 1``, and earlier rows are NaN.
    """
    n = len(values)
    out = np.full(n, np.nan)
    seed_row = first_row + window - 1
    if seed_row >= n:
        return out
    average = 0.0
    for i in range(first_row, seed_row + 1):
        average += values[i]
    average /= window
    out[seed_row] = average
    for t in range(seed_row + 1, n):
        average += (values[t] - average) / window
        out[t] = average
    return out


@njit(cache=True)
def efficiency_ratio_nb(close: np.ndarray, window: int) -> np.ndarray:
    """Compute ``|c_t - c_{t-w}| / sum |c_i - c_{i-1}|`` over the last ``window`` changes, clipped to 1."""
    n = len(close)
    out = np.full(n, np.nan)
    for t in range(window, n):
        path = 0.0
        for i in range(t - window + 1, t + 1):
            path += abs(close[i] - close[i - 1])
        if path == 0.0:
            out[t] = 0.0
        else:
            out[t] = min(abs(close[t] - close[t - window]) / path, 1.0)
    return out


@njit(cache=True)
def hurst_nb(log_close: np.ndarray, window: int, lags: np.ndarray) -> np.ndarray:
    """Estimate the rolling Hurst exponent from the variance of increments.

    For each lag ``q`` the mean square of the ``q``-bar log changes inside the last ``window``
    closes is taken without removing the mean. Under a random walk it grows as ``q``, and in
    general as ``q ** (2 H)``, so ``H`` is half the least-squares slope of its log against
    ``log q``. A window with a zero mean square at any lag is NaN.
    """
    n = len(log_close)
    n_lags = len(lags)
    out = np.full(n, np.nan)
    log_lag = np.empty(n_lags)
    for j in range(n_lags):
        log_lag[j] = math.log(lags[j])
    lag_mean = log_lag.mean()
    lag_spread = 0.0
    for j in range(n_lags):
        lag_spread += (log_lag[j] - lag_mean) ** 2
    log_moment = np.empty(n_lags)
    for t in range(window - 1, n):
        first = t - window + 1
        valid = True
        for j in range(n_lags):
            q = lags[j]
            squares = 0.0
            for i in range(first + q, t + 1):
                change = log_close[i] - log_close[i - q]
                squares += change * change
            mean_square = squares / (window - q)
            if not (mean_square > 0.0 and math.isfinite(mean_square)):
                valid = False
                break
            log_moment[j] = math.log(mean_square)
        if not valid:
            continue
        moment_mean = log_moment.mean()
        covariance = 0.0
        for j in range(n_lags):
            covariance += (log_lag[j] - lag_mean) * (log_moment[j] - moment_mean)
        out[t] = 0.5 * covariance / lag_spread
    return out


@njit(cache=True)
def ordinal_pattern_nb(close: np.ndarray, order: int) -> np.ndarray:
    """Return the Lehmer code (0 to ``order! - 1``) of the ordinal pattern ending on each row, -1 before.

    Of two equal closes the earlier one ranks lower, the usual tie rule for permutation entropy.
    """
    n = len(close)
    codes = np.full(n, -1, dtype=np.int64)
    factorial = np.ones(order, dtype=np.int64)
    for j in range(1, order):
        factorial[j] = factorial[j - 1] * j
    for t in range(order - 1, n):
        first = t - order + 1
        code = 0
        for j in range(order):
            smaller_after = 0
            for k in range(j + 1, order):
                if close[first + k] < close[first + j]:
                    smaller_after += 1
            code += smaller_after * factorial[order - 1 - j]
        codes[t] = code
    return codes


@njit(cache=True)
def permutation_entropy_nb(codes: np.ndarray, n_patterns: int, window: int) -> np.ndarray:
    """Compute the Shannon entropy of the last ``window`` ordinal patterns, divided by ``log(n_patterns)``.

    ``codes`` comes from ``ordinal_pattern_nb`` (-1 where no pattern exists yet). Each row's
    entropy is summed afresh from the pattern counts, so rounding does not build up.
    """
    n = len(codes)
    out = np.full(n, np.nan)
    counts = np.zeros(n_patterns, dtype=np.int64)
    filled = 0
    norm = math.log(n_patterns)
    for t in range(n):
        if codes[t] < 0:
            continue
        counts[codes[t]] += 1
        filled += 1
        if filled > window:
            counts[codes[t - window]] -= 1
            filled = window
        if filled == window:
            entropy = 0.0
            for p in range(n_patterns):
                if counts[p] > 0:
                    share = counts[p] / window
                    entropy -= share * math.log(share)
            out[t] = entropy / norm
    return out


@njit(cache=True)
def hour_of_week_profile_nb(volatility: np.ndarray, hour_of_week: np.ndarray, week_id: np.ndarray,
                            min_weeks: int) -> np.ndarray:
    """Compute the mean volatility of each row's hour-of-week bucket over earlier weeks only.

    A bar's own week never enters its profile, because the bars of a week are added to their buckets
    when the first bar of a later week arrives. A bucket seen in fewer than ``min_weeks``
    earlier weeks gives NaN. NaN volatilities are skipped. ``hour_of_week`` is 0 to 167 and
    ``week_id`` does not decrease.
    """
    n = len(volatility)
    out = np.full(n, np.nan)
    total = np.zeros(168)
    count = np.zeros(168, dtype=np.int64)
    weeks = np.zeros(168, dtype=np.int64)
    week_total = np.zeros(168)
    week_count = np.zeros(168, dtype=np.int64)
    current_week = week_id[0] if n > 0 else 0
    for t in range(n):
        if week_id[t] != current_week:
            for bucket in range(168):
                if week_count[bucket] > 0:
                    total[bucket] += week_total[bucket]
                    count[bucket] += week_count[bucket]
                    weeks[bucket] += 1
                    week_total[bucket] = 0.0
                    week_count[bucket] = 0
            current_week = week_id[t]
        bucket = hour_of_week[t]
        if weeks[bucket] >= min_weeks and count[bucket] > 0:
            out[t] = total[bucket] / count[bucket]
        if math.isfinite(volatility[t]):
            week_total[bucket] += volatility[t]
            week_count[bucket] += 1
    return out

"""Validation statistics of the strategy search, over a strategies x trading days P&L matrix.

Input is the daily P&L matrix of ``fxresearch.daily.daily_pnl_matrix`` (pips, open trades
marked to market at each 17:00 New York day end). Flow::

    day numbers ─► walk_forward_folds ─► FoldPlan (train / test day columns, lockbox)
    matrix + folds ─► walk_forward_select ─► per-fold table + out-of-sample daily series
    matrix ─► effective_number_of_trials ─► clusters of correlated strategy variants
    in-sample matrix + clusters ─► score_column ─► deflated Sharpe ratio per strategy
    matrix ─► probability_of_backtest_overfitting ─► PBO by CSCV

Every strategy variant tried (family, parameter set, SL/TP set, timeframe) is one row and
counts as a trial before clustering. All functions are pure: no files, no global state; the
random sampling they do takes a seed.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import pdist

from fxresearch.config import ValidationConfig
from fxresearch.daily import MIN_DAYS, calmar, max_drawdown, sharpe_daily, sortino_daily

logger = logging.getLogger(__name__)

_DEFAULTS = ValidationConfig()
MINUTES_PER_DAY = 1440
# A standard deviation below this many pips counts as zero (float rounding).
_ZERO_PIPS = 1e-9


# ---------------------------------------------------------------------------------------------
# Walk-forward folds and the lockbox


@dataclass(frozen=True)
class Fold:
    """One walk-forward fold: select on the train days, measure on the test days.

    ``*_columns`` are positions into the day axis (the matrix columns) and ``*_days`` the
    trading day numbers (``timeutil.trading_day_ns``) at those positions.
    """

    index: int
    train_columns: np.ndarray
    test_columns: np.ndarray
    train_days: np.ndarray
    test_days: np.ndarray


@dataclass(frozen=True)
class FoldPlan:
    """Walk-forward folds, the lockbox kept out of all of them, and why folds are missing.

    Iterating, indexing and ``len`` act on ``folds``, so a plan can be used as a list of folds.
    """

    folds: tuple[Fold, ...]
    n_requested: int
    # Empty when every requested fold fits; otherwise why fewer (or none) were made.
    reason: str
    scheme: str
    # Trading days between the last train day and the first test day: purge plus embargo.
    gap_days: int
    lockbox_columns: np.ndarray
    lockbox_days: np.ndarray

    def __len__(self) -> int:
        return len(self.folds)

    def __iter__(self) -> Iterator[Fold]:
        return iter(self.folds)

    def __getitem__(self, index: int) -> Fold:
        return self.folds[index]


def horizon_days(horizon_minutes: float) -> int:
    """Return the purge in trading days that covers trades with this horizon.

    That is ``ceil(horizon_minutes / 1440)`` plus one day, because a trade exits at the first
    tick at or after its horizon, which can fall after the next 17:00 New York day end.
    """
    if not horizon_minutes >= 0:
        raise ValueError(f"horizon_minutes = {horizon_minutes} must be 0 or more.")
    return math.ceil(horizon_minutes / MINUTES_PER_DAY) + 1


def _lockbox_size(n_days: int, lockbox_fraction: float) -> int:
    if not 0.0 <= lockbox_fraction < 1.0:
        raise ValueError(f"lockbox_fraction = {lockbox_fraction} must be in [0, 1), e.g. 0.15.")
    # The small offset keeps 0.15 * 100 = 15.000000000000002 from rounding up to 16.
    return math.ceil(lockbox_fraction * n_days - 1e-9)


def _check_day_numbers(day_numbers: np.ndarray) -> np.ndarray:
    days = np.asarray(day_numbers)
    if days.ndim != 1:
        raise ValueError(f"day_numbers must be 1-D, got shape {days.shape}.")
    if len(days) and (np.diff(days) <= 0).any():
        raise ValueError("day_numbers must be strictly ascending, one per matrix column (from day_end_marks).")
    return days.astype(np.int64, copy=False)


def lockbox_start(day_numbers: np.ndarray, lockbox_fraction: float = _DEFAULTS.lockbox_fraction) -> int:
    """Return the first trading day number of the lockbox: the last ``lockbox_fraction`` of days.

    Days at or after it are in the lockbox. Without a lockbox (fraction 0, or no days) it is
    one past the last day, so no day is in it.
    """
    days = _check_day_numbers(day_numbers)
    n_lockbox = _lockbox_size(len(days), lockbox_fraction)
    if n_lockbox == 0:
        return int(days[-1]) + 1 if len(days) else 0
    return int(days[len(days) - n_lockbox])


def walk_forward_folds(day_numbers: np.ndarray, n_folds: int, purge_days: int,
                       embargo_days: int = _DEFAULTS.embargo_days,
                       lockbox_fraction: float = _DEFAULTS.lockbox_fraction, *,
                       scheme: str = _DEFAULTS.scheme, min_train_days: int = _DEFAULTS.min_train_days,
                       min_test_days: int = _DEFAULTS.min_test_days) -> FoldPlan:
    """Split trading days into walk-forward folds, with a gap before each test block and a lockbox.

    Layout, in day columns (trading days with ticks, in time order)::

        | fold days ........................................ | gap | lockbox |
        | block 0 (first train) | block 1 | ... | block k    |

    The last ``lockbox_fraction`` of days (rounded up) is the lockbox, and no fold contains it.
    Before it lie ``purge_days + embargo_days`` unused days, so a final selection on all fold
    days can be checked on the lockbox the same way. The fold days are cut into
    ``n_folds + 1`` equal blocks, the remainder going to block 0. Fold ``j`` tests on block
    ``j``. Its train days end ``purge_days + embargo_days`` days before the block starts:
    the purge drops the days whose trades may still be open in the test block (pass
    ``horizon_days(horizon_minutes)``), and the embargo drops more days for serial
    correlation of daily P&L. Train windows are anchored at day 0 and grow (``"anchored"``,
    the default, so every selection sees all the past), or keep the length of the first
    one (``"rolling"``).

    When the days are too few for ``n_folds`` folds of at least ``min_train_days`` train
    days and ``min_test_days`` test days, fewer folds (possibly none) are returned and
    ``FoldPlan.reason`` says why.

    Parameters
    ----------
    day_numbers : np.ndarray
        Trading day numbers, strictly ascending, one per matrix column.
    n_folds : int
        Requested number of folds.
    purge_days, embargo_days : int
        Trading days left out between each train window and its test block, 0 or more.
    lockbox_fraction : float
        Share of the last days kept out of every fold, in [0, 1).
    scheme : str
        ``"anchored"`` (expanding train windows) or ``"rolling"``.
    min_train_days, min_test_days : int
        The smallest train window and test block a fold may have.

    Returns
    -------
    FoldPlan
        The folds, the lockbox days and the reason for any missing folds.
    """
    days = _check_day_numbers(day_numbers)
    if n_folds < 1:
        raise ValueError(f"n_folds = {n_folds} must be 1 or more.")
    if purge_days < 0 or embargo_days < 0:
        raise ValueError(f"purge_days = {purge_days} and embargo_days = {embargo_days} must be 0 or more.")
    if scheme not in ("anchored", "rolling"):
        raise ValueError(f"scheme = {scheme!r} is invalid; use 'anchored' or 'rolling'.")
    if min_train_days < 1 or min_test_days < 1:
        raise ValueError(f"min_train_days = {min_train_days} and min_test_days = {min_test_days} must be 1 or more.")

    n_days = len(days)
    gap = int(purge_days) + int(embargo_days)
    n_lockbox = _lockbox_size(n_days, lockbox_fraction)
    lockbox_first = n_days - n_lockbox
    fold_end = lockbox_first - gap if n_lockbox else n_days
    lockbox_columns = np.arange(lockbox_first, n_days)

    n_fitting = _fitting_folds(max(fold_end, 0), n_folds, gap, min_train_days, min_test_days)
    reason = ""
    if n_fitting < n_folds:
        reason = (
            f"{n_folds} folds need {n_folds} test blocks of {min_test_days}+ days and a first train window "
            f"of {min_train_days}+ days plus a {gap}-day gap, but only {max(fold_end, 0)} of {n_days} trading "
            f"days lie before the lockbox and its gap; made {n_fitting} folds."
        )
        logger.info("Walk-forward: %s", reason)

    folds = _layout_folds(days, fold_end, n_fitting, gap, scheme) if n_fitting else ()
    return FoldPlan(folds=folds, n_requested=n_folds, reason=reason, scheme=scheme, gap_days=gap,
                    lockbox_columns=lockbox_columns, lockbox_days=days[lockbox_columns])


def _fitting_folds(fold_end: int, n_folds: int, gap: int, min_train_days: int, min_test_days: int) -> int:
    """Return the largest fold count up to ``n_folds`` whose blocks meet the minimum sizes."""
    for k in range(n_folds, 0, -1):
        block = fold_end // (k + 1)
        first_train = fold_end - k * block - gap
        if block >= min_test_days and first_train >= min_train_days:
            return k
    return 0


def _layout_folds(days: np.ndarray, fold_end: int, n_folds: int, gap: int, scheme: str) -> tuple[Fold, ...]:
    block = fold_end // (n_folds + 1)
    first_test = fold_end - n_folds * block
    window = first_test - gap
    folds = []
    for j in range(n_folds):
        test_start = first_test + j * block
        train_stop = test_start - gap
        train_start = 0 if scheme == "anchored" else train_stop - window
        train_columns = np.arange(train_start, train_stop)
        test_columns = np.arange(test_start, test_start + block)
        folds.append(Fold(index=j, train_columns=train_columns, test_columns=test_columns,
                          train_days=days[train_columns], test_days=days[test_columns]))
    return tuple(folds)


# ---------------------------------------------------------------------------------------------
# Walk-forward selection


def _total_pips(rows: np.ndarray, min_days: int) -> np.ndarray:
    return rows.sum(axis=1)


# Each metric maps a strategies x days matrix and the minimum day count to one score per strategy.
_SELECTION_METRICS: dict[str, Callable[[np.ndarray, int], np.ndarray | float]] = {
    "sharpe": sharpe_daily,
    "sortino": sortino_daily,
    "calmar": calmar,
    "total_pips": _total_pips,
}


def walk_forward_select(daily_matrix: np.ndarray, folds: Iterable[Fold], metric: str = "sharpe",
                        min_days: int = MIN_DAYS) -> tuple[pd.DataFrame, pd.Series]:
    """Pick the best strategy on each fold's train days and record it on the test days.

    Parameters
    ----------
    daily_matrix : np.ndarray
        Strategies x days P&L in pips, the columns the folds index.
    folds : iterable of Fold
        From ``walk_forward_folds``.
    metric : str
        ``"sharpe"``, ``"sortino"``, ``"calmar"`` (daily ratios, NaN on fewer than
        ``min_days`` days) or ``"total_pips"``. The highest train value wins; ties go to
        the lowest strategy row.
    min_days : int
        Minimum number of days for a ratio.

    Returns
    -------
    tuple of (pd.DataFrame, pd.Series)
        The per-fold table: ``fold``, ``selected_strategy`` (-1 when no strategy has a
        finite train value, and then the fold trades nothing), first and last train and
        test day, day counts, ``train_score``, ``train_sharpe``, ``test_sharpe``,
        ``test_sortino``, ``test_total_pips``, ``test_max_drawdown_pips`` and
        ``test_percentile`` (share of strategies with lower test P&L, ties counting half).
        The series is the selected strategies' test-day P&L in pips, indexed by trading day
        number: the walk-forward equity, each day traded by a strategy chosen before it.
    """
    if metric not in _SELECTION_METRICS:
        raise ValueError(f"metric = {metric!r} is unknown; use one of {sorted(_SELECTION_METRICS)}.")
    matrix = np.asarray(daily_matrix, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] == 0:
        raise ValueError(f"daily_matrix must be a non-empty strategies x days matrix, got shape {matrix.shape}.")
    score_of = _SELECTION_METRICS[metric]

    rows = []
    pieces = []
    for fold in folds:
        if len(fold.test_columns) and fold.test_columns.max() >= matrix.shape[1]:
            raise ValueError(
                f"Fold {fold.index} tests on column {fold.test_columns.max()}, but the matrix has "
                f"{matrix.shape[1]} day columns; build the folds from the matrix's day numbers."
            )
        train = matrix[:, fold.train_columns]
        test = matrix[:, fold.test_columns]
        scores = np.asarray(score_of(train, min_days), dtype=np.float64)
        finite = np.isfinite(scores)
        selected = int(np.argmax(np.where(finite, scores, -np.inf))) if finite.any() else -1

        if selected >= 0:
            series = test[selected]
            test_total = test.sum(axis=1)
            lower = np.sum(test_total < test_total[selected]) + 0.5 * (np.sum(test_total == test_total[selected]) - 1)
            percentile = lower / max(len(test_total) - 1, 1)
        else:
            series = np.zeros(len(fold.test_columns))
            percentile = np.nan
        pieces.append(pd.Series(series, index=fold.test_days))
        rows.append({
            "fold": fold.index,
            "selected_strategy": selected,
            "train_first_day": int(fold.train_days[0]),
            "train_last_day": int(fold.train_days[-1]),
            "test_first_day": int(fold.test_days[0]),
            "test_last_day": int(fold.test_days[-1]),
            "n_train_days": len(fold.train_columns),
            "n_test_days": len(fold.test_columns),
            "train_score": scores[selected] if selected >= 0 else np.nan,
            "train_sharpe": sharpe_daily(train[selected], min_days) if selected >= 0 else np.nan,
            "test_sharpe": sharpe_daily(series, min_days),
            "test_sortino": sortino_daily(series, min_days),
            "test_total_pips": float(series.sum()),
            "test_max_drawdown_pips": max_drawdown(series),
            "test_percentile": percentile,
        })

    table = pd.DataFrame(rows, columns=[
        "fold", "selected_strategy", "train_first_day", "train_last_day", "test_first_day", "test_last_day",
        "n_train_days", "n_test_days", "train_score", "train_sharpe", "test_sharpe", "test_sortino",
        "test_total_pips", "test_max_drawdown_pips", "test_percentile",
    ])
    equity = pd.concat(pieces) if pieces else pd.Series(dtype=np.float64)
    equity.index.name = "trading_day"
    equity.name = "pips"
    return table, equity


# ---------------------------------------------------------------------------------------------
# Deflated Sharpe ratio


def expected_max_sharpe(sharpe_variance: float, n_trials: float) -> float:
    """Return the expected maximum Sharpe ratio of ``n_trials`` trials without skill.

    ``E[max] = sqrt(V) * ((1 - g) * Phi^-1(1 - 1/N) + g * Phi^-1(1 - 1/(N e)))`` with ``g``
    the Euler-Mascheroni constant, V the variance of the Sharpe estimates across trials and
    N the number of independent trials (Bailey and Lopez de Prado, "The Deflated Sharpe
    Ratio", 2014). The ratio is in whatever unit V is in, here per day. One trial (N <= 1)
    needs no deflation and gives 0.
    """
    if not sharpe_variance >= 0:
        raise ValueError(f"sharpe_variance = {sharpe_variance} must be 0 or more.")
    if n_trials <= 1:
        return 0.0
    gamma = np.euler_gamma
    spread = ((1.0 - gamma) * stats.norm.ppf(1.0 - 1.0 / n_trials)
              + gamma * stats.norm.ppf(1.0 - 1.0 / (n_trials * np.e)))
    return float(np.sqrt(sharpe_variance) * spread)


def deflated_sharpe_ratio(
    sharpe_per_day: np.ndarray | float, n_days: np.ndarray | int, skew: np.ndarray | float,
    kurtosis: np.ndarray | float, sharpe_variance_across_trials: float, effective_trials: float,
) -> np.ndarray | float:
    """Return the deflated Sharpe ratio: the probability that the true Sharpe ratio beats chance.

    ``DSR = Phi((SR - SR0) * sqrt(T - 1) / sqrt(1 - skew * SR + (kurtosis - 1) / 4 * SR^2))``
    with ``SR0 = expected_max_sharpe(V, N)`` (Bailey and Lopez de Prado, 2014).

    Parameters
    ----------
    sharpe_per_day : float or np.ndarray
        Sharpe ratio of daily P&L, mean / std, NOT annualised.
    n_days : int or np.ndarray
        T, the number of daily returns the Sharpe ratio was measured on.
    skew : float or np.ndarray
        Skewness of the daily returns (third standardised moment).
    kurtosis : float or np.ndarray
        Raw (Pearson) kurtosis of the daily returns, 3 for a normal distribution, NOT excess.
    sharpe_variance_across_trials : float
        V, the variance of the per-day Sharpe estimates across the trials.
    effective_trials : float
        N, the number of independent trials (``effective_number_of_trials``).

    Returns
    -------
    float or np.ndarray
        DSR in [0, 1], broadcast over the array arguments. NaN where an input is NaN,
        ``T < 2`` or the variance term is not positive.
    """
    sr = np.asarray(sharpe_per_day, dtype=np.float64)
    t = np.asarray(n_days, dtype=np.float64)
    skewness = np.asarray(skew, dtype=np.float64)
    raw_kurtosis = np.asarray(kurtosis, dtype=np.float64)
    sr0 = expected_max_sharpe(sharpe_variance_across_trials, effective_trials)

    variance_term = 1.0 - skewness * sr + (raw_kurtosis - 1.0) / 4.0 * sr ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (sr - sr0) * np.sqrt(t - 1.0) / np.sqrt(variance_term)
    dsr = np.where((variance_term > 0) & (t >= 2), stats.norm.cdf(z), np.nan)
    return float(dsr) if dsr.ndim == 0 else dsr


def daily_moments(daily_matrix: np.ndarray, min_days: int = MIN_DAYS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return per-day Sharpe ratio, skewness and raw kurtosis of each row of daily P&L.

    Sharpe is mean / std (ddof=1), not annualised; skewness and kurtosis are the population
    moments (``scipy.stats`` with ``bias=True``), kurtosis raw so a normal gives 3. All
    three are NaN for rows with a zero std or on fewer than ``min_days`` days.
    """
    rows = np.asarray(daily_matrix, dtype=np.float64)
    if rows.ndim != 2:
        raise ValueError(f"daily_matrix must be strategies x days, got shape {rows.shape}.")
    n_rows, n_days = rows.shape
    nan = np.full(n_rows, np.nan)
    if n_days < max(min_days, 2):
        return nan, nan.copy(), nan.copy()
    std = rows.std(axis=1, ddof=1)
    valid = std > _ZERO_PIPS
    sharpe = np.where(valid, rows.mean(axis=1) / np.where(valid, std, 1.0), np.nan)
    skew = np.full(n_rows, np.nan)
    kurtosis = np.full(n_rows, np.nan)
    if valid.any():
        skew[valid] = stats.skew(rows[valid], axis=1, bias=True)
        kurtosis[valid] = stats.kurtosis(rows[valid], axis=1, fisher=False, bias=True)
    return sharpe, skew, kurtosis


# ---------------------------------------------------------------------------------------------
# Effective number of trials


@dataclass(frozen=True)
class EffectiveTrials:
    """Clusters of correlated strategies, counted as independent trials."""

    # Rows passed in: every variant tried.
    n_trials: int
    # Clusters found: the number of independent trials N for the deflated Sharpe ratio.
    n_effective: int
    # Cluster of each row, 0 .. n_effective - 1, or -1 for a row with no P&L variation.
    labels: np.ndarray
    # Rows with a zero std (no trades, or a constant P&L), left out of the clusters.
    n_flat: int
    # Distinct return series left after merging rows with correlation 1.
    n_distinct: int
    # True when there were more distinct series than max_exact and clusters came from samples.
    sampled: bool
    threshold: float


def effective_number_of_trials(daily_matrix: np.ndarray, threshold: float = _DEFAULTS.cluster_threshold, *,
                               max_exact: int = _DEFAULTS.max_exact_cluster,
                               random_state: int = _DEFAULTS.random_state) -> EffectiveTrials:
    """Count independent trials by clustering strategies on the correlation of their daily P&L.

    The distance of two strategies is ``sqrt((1 - rho) / 2)``, from 0 (rho = 1) to 1
    (rho = -1), with rho the Pearson correlation of their daily P&L. Average-linkage
    hierarchical clustering (``scipy.cluster.hierarchy``) is cut at ``threshold``: two
    clusters merge while their mean pairwise distance is below it. The default 0.5 merges
    variants correlated above about 0.5 on average. Uncorrelated strategies (distance about
    0.71) stay apart.

    Steps, so that 10,000 strategies fit in memory and time:

    1. Rows with a zero std (no trade, constant P&L) get label -1 and are not counted.
    2. Rows are centred and scaled to unit norm, so correlation is a dot product, and rows
       equal after rounding to 12 decimals (correlation 1, such as the same trades with a
       different size) are merged into one distinct series.
    3. Up to ``max_exact`` distinct series are clustered exactly. Beyond that, a random
       sample of ``max_exact`` is clustered, every other series joins the cluster whose
       centroid (the normalised mean of its unit rows) it is closest to when that distance
       is below ``threshold``, and the rest repeat step 3. This approximates average
       linkage: a series is compared with a cluster's centroid, not with all its members.

    Parameters
    ----------
    daily_matrix : np.ndarray
        Strategies x days P&L in pips; pass the in-sample columns only when the count feeds
        an in-sample score.
    threshold : float
        Correlation distance at which clusters stop merging, in (0, 1].
    max_exact : int
        Largest number of distinct series clustered in one pass (memory about 4 x max_exact^2 bytes).
    random_state : int
        Seed of the sampling in step 3.
    """
    started = time.perf_counter()
    rows = np.asarray(daily_matrix, dtype=np.float64)
    if rows.ndim != 2:
        raise ValueError(f"daily_matrix must be strategies x days, got shape {rows.shape}.")
    if not np.isfinite(rows).all():
        raise ValueError(
            "daily_matrix contains NaN or infinity; daily P&L must be finite (0 on days without a position)."
        )
    if not 0 < threshold <= 1:
        raise ValueError(
            f"threshold = {threshold} must be in (0, 1]; it is a correlation distance sqrt((1 - rho) / 2)."
        )
    if max_exact < 2:
        raise ValueError(f"max_exact = {max_exact} must be 2 or more.")

    n_trials = rows.shape[0]
    labels = np.full(n_trials, -1, dtype=np.int64)
    if rows.shape[1] < 2:
        return EffectiveTrials(n_trials, 0, labels, n_trials, 0, False, threshold)
    centred = rows - rows.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(centred, axis=1)
    varying = np.flatnonzero(rows.std(axis=1) > _ZERO_PIPS)
    if len(varying) == 0:
        return EffectiveTrials(n_trials, 0, labels, n_trials, 0, False, threshold)

    unit = centred[varying] / norms[varying, np.newaxis]
    distinct, inverse = np.unique(np.round(unit, 12), axis=0, return_inverse=True)
    distinct_labels, sampled = _cluster_distinct(distinct, threshold, max_exact, np.random.default_rng(random_state))
    labels[varying] = distinct_labels[inverse.ravel()]

    n_effective = int(labels.max()) + 1
    logger.debug("Clustered %d strategies (%d distinct) into %d effective trials in %.2f s",
                 n_trials, len(distinct), n_effective, time.perf_counter() - started)
    return EffectiveTrials(n_trials, n_effective, labels, n_trials - len(varying), len(distinct), sampled,
                           threshold)


def _cluster_exact(unit: np.ndarray, threshold: float) -> np.ndarray:
    """Return 0-based average-linkage cluster labels of unit-norm centred rows."""
    if len(unit) == 1:
        return np.zeros(1, dtype=np.int64)
    # For unit-norm centred rows, Euclidean distance = 2 * sqrt((1 - rho) / 2).
    distance = pdist(unit, metric="euclidean") / 2.0
    tree = linkage(distance, method="average")
    # fcluster merges while the cophenetic distance is <= t; nudge t so "below threshold" holds.
    return fcluster(tree, t=threshold * (1 - 1e-12), criterion="distance").astype(np.int64) - 1


def _cluster_distinct(unit: np.ndarray, threshold: float, max_exact: int,
                      rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    labels = np.full(len(unit), -1, dtype=np.int64)
    remaining = np.arange(len(unit))
    next_label = 0
    sampled = False
    while len(remaining):
        if len(remaining) <= max_exact:
            labels[remaining] = _cluster_exact(unit[remaining], threshold) + next_label
            break
        sampled = True
        chosen = np.sort(rng.choice(remaining, size=max_exact, replace=False))
        chosen_labels = _cluster_exact(unit[chosen], threshold)
        labels[chosen] = chosen_labels + next_label
        n_new = int(chosen_labels.max()) + 1

        centroids = np.zeros((n_new, unit.shape[1]))
        np.add.at(centroids, chosen_labels, unit[chosen])
        centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
        rest = np.setdiff1d(remaining, chosen, assume_unique=True)
        correlation = unit[rest] @ centroids.T
        nearest = np.argmax(correlation, axis=1)
        distance = np.sqrt(np.clip((1.0 - correlation[np.arange(len(rest)), nearest]) / 2.0, 0.0, None))
        joins = distance < threshold
        labels[rest[joins]] = nearest[joins] + next_label
        remaining = rest[~joins]
        next_label += n_new
    return labels, sampled


def cluster_sharpe_variance(daily_matrix: np.ndarray, labels: np.ndarray, min_days: int = MIN_DAYS) -> float:
    """Return the variance across clusters of each cluster's per-day Sharpe ratio.

    A cluster's daily P&L is the inverse-variance weighted mean of its members' rows, so a
    family of near-copies counts as one trial with one Sharpe ratio. With fewer than two
    clusters it falls back to the variance across all strategies with a Sharpe ratio. NaN
    when fewer than two Sharpe ratios exist. Variances use ddof=1.
    """
    rows = np.asarray(daily_matrix, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) != rows.shape[0]:
        raise ValueError(f"{len(labels)} cluster labels for {rows.shape[0]} strategies; pass one label per row.")
    n_clusters = int(labels.max()) + 1 if len(labels) else 0
    if n_clusters >= 2:
        member = labels >= 0
        weight = np.zeros(len(labels))
        weight[member] = 1.0 / rows[member].var(axis=1)
        totals = np.bincount(labels[member], weights=weight[member], minlength=n_clusters)
        weight[member] /= totals[labels[member]]
        cluster_rows = np.zeros((n_clusters, rows.shape[1]))
        np.add.at(cluster_rows, labels[member], rows[member] * weight[member, np.newaxis])
        sharpe = daily_moments(cluster_rows, min_days)[0]
    else:
        sharpe = daily_moments(rows, min_days)[0]
    sharpe = sharpe[np.isfinite(sharpe)]
    return float(np.var(sharpe, ddof=1)) if len(sharpe) >= 2 else np.nan


# ---------------------------------------------------------------------------------------------
# Ranking score


def score_column(daily_matrix_is: np.ndarray, n_trades_is: np.ndarray, *,
                 trials: EffectiveTrials | None = None, min_trades: int = _DEFAULTS.min_trades,
                 min_days: int = MIN_DAYS, threshold: float = _DEFAULTS.cluster_threshold,
                 max_exact: int = _DEFAULTS.max_exact_cluster,
                 random_state: int = _DEFAULTS.random_state) -> np.ndarray:
    """Return the ranking score of each strategy: its deflated Sharpe ratio on in-sample days.

    Every input is in-sample: the strategy's per-day Sharpe ratio, skewness, raw kurtosis,
    day count and trade count, the variance of Sharpe ratios across clusters, and the number
    of clusters as the number of trials. Nothing of the holdout is used, not even its trade
    count, because how often a strategy trades there depends on the holdout's prices.

    Parameters
    ----------
    daily_matrix_is : np.ndarray
        Strategies x in-sample days P&L in pips, one row per variant tried.
    n_trades_is : np.ndarray
        In-sample trade count per strategy; the score is NaN below ``min_trades``, since a
        Sharpe ratio on so few trades is noise.
    trials : EffectiveTrials, optional
        Clusters of the same rows; computed from ``daily_matrix_is`` with ``threshold``,
        ``max_exact`` and ``random_state`` when not given.

    Returns
    -------
    np.ndarray
        DSR in [0, 1] per strategy, NaN where the trade counts are too low, or the Sharpe
        ratio is undefined (fewer than ``min_days`` days or no P&L variation).
    """
    rows = np.asarray(daily_matrix_is, dtype=np.float64)
    n_trades_is = np.asarray(n_trades_is)
    if rows.ndim != 2 or len(n_trades_is) != rows.shape[0]:
        raise ValueError(
            f"score_column needs one trade count per strategy row: matrix shape {rows.shape}, "
            f"{len(n_trades_is)} in-sample counts."
        )
    if trials is None:
        trials = effective_number_of_trials(rows, threshold, max_exact=max_exact, random_state=random_state)
    elif len(trials.labels) != rows.shape[0]:
        raise ValueError(
            f"trials has {len(trials.labels)} labels for {rows.shape[0]} strategies; cluster the same rows."
        )

    sharpe, skew, kurtosis = daily_moments(rows, min_days)
    variance = cluster_sharpe_variance(rows, trials.labels, min_days)
    if not np.isfinite(variance):
        variance = 0.0
    n_effective = max(trials.n_effective, 1)
    dsr = np.asarray(deflated_sharpe_ratio(sharpe, rows.shape[1], skew, kurtosis, variance, n_effective))
    enough_trades = n_trades_is >= min_trades
    logger.debug("Scored %d strategies: %d effective trials, Sharpe variance %.3g per day^2, "
                 "expected max Sharpe %.4f per day", rows.shape[0], n_effective, variance,
                 expected_max_sharpe(variance, n_effective))
    return np.where(enough_trades, dsr, np.nan)


# ---------------------------------------------------------------------------------------------
# Probability of backtest overfitting


@dataclass(frozen=True)
class OverfittingResult:
    """Probability of backtest overfitting by combinatorially symmetric cross-validation."""

    # Share of combinations whose in-sample best strategy ranks at or below the out-of-sample median.
    pbo: float
    n_combinations: int
    # True when the combinations were a random sample because there were more than the cap.
    sampled: bool
    n_strategies: int
    n_partitions: int
    # Logit of the selected strategy's out-of-sample relative rank, one per combination.
    logits: np.ndarray
    logit_mean: float
    logit_median: float
    logit_q05: float
    logit_q95: float
    # Share of combinations whose selected strategy lost money out-of-sample.
    prob_oos_loss: float


def probability_of_backtest_overfitting(daily_matrix: np.ndarray,
                                        n_partitions: int = _DEFAULTS.pbo_partitions, *,
                                        max_combinations: int = _DEFAULTS.max_pbo_combinations,
                                        random_state: int = _DEFAULTS.random_state) -> OverfittingResult:
    """Estimate the probability of backtest overfitting (PBO) by CSCV.

    Combinatorially symmetric cross-validation (Bailey, Borwein, Lopez de Prado and Zhu,
    "The Probability of Backtest Overfitting"): the days are cut into ``n_partitions``
    contiguous blocks of near-equal size. For each combination of half the blocks as
    in-sample and the rest as out-of-sample, the strategy with the best in-sample Sharpe
    ratio is chosen. Its out-of-sample Sharpe rank among all
    strategies gives ``omega = rank / (N + 1)`` (rank 1 the worst, ties averaged) and the
    logit ``lambda = ln(omega / (1 - omega))``. PBO is the share of combinations with
    ``lambda <= 0``: the in-sample winner was at best median out-of-sample.

    A strategy with no P&L variation in a half has Sharpe 0 there. 16 blocks give
    C(16, 8) = 12,870 combinations, all used with the default cap. With more, a random
    sample of ``max_combinations`` distinct combinations is used, seeded by
    ``random_state``.

    Without skill the in-sample winner's out-of-sample rank is uniform, so PBO is about 0.5
    on average, though one data set can land well above or below. PBO near 0 means the
    in-sample winner keeps its edge; near 1, that in-sample performance predicts the
    opposite out-of-sample.

    Parameters
    ----------
    daily_matrix : np.ndarray
        Strategies x days P&L in pips, at least 2 strategies and 2 days per block.
    n_partitions : int
        Even number of blocks S.
    max_combinations : int
        Cap on the number of combinations evaluated.
    random_state : int
        Seed of the combination sample.
    """
    matrix = np.asarray(daily_matrix, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"daily_matrix must be strategies x days, got shape {matrix.shape}.")
    n_strategies, n_days = matrix.shape
    if n_partitions < 2 or n_partitions % 2:
        raise ValueError(f"n_partitions = {n_partitions} must be an even number of 2 or more, e.g. 16.")
    if n_strategies < 2:
        raise ValueError(f"PBO needs at least 2 strategies to rank, got {n_strategies}.")
    if n_days < 2 * n_partitions:
        raise ValueError(
            f"PBO with {n_partitions} blocks needs at least {2 * n_partitions} days, got {n_days}; "
            f"use fewer partitions."
        )
    if not np.isfinite(matrix).all():
        raise ValueError(
            "daily_matrix contains NaN or infinity; daily P&L must be finite (0 on days without a position)."
        )
    if max_combinations < 1:
        raise ValueError(f"max_combinations = {max_combinations} must be 1 or more.")

    started = time.perf_counter()
    blocks = np.array_split(np.arange(n_days), n_partitions)
    block_sum = np.stack([matrix[:, b].sum(axis=1) for b in blocks], axis=1)
    block_squares = np.stack([(matrix[:, b] ** 2).sum(axis=1) for b in blocks], axis=1)
    block_days = np.array([len(b) for b in blocks], dtype=np.float64)
    in_sample, sampled = _combinations(n_partitions, max_combinations, np.random.default_rng(random_state))

    logits = np.empty(len(in_sample))
    oos_loss = np.empty(len(in_sample), dtype=bool)
    chunk = max(1, 2_000_000 // n_strategies)
    for start in range(0, len(in_sample), chunk):
        is_mask = in_sample[start:start + chunk]
        oos_mask = 1.0 - is_mask
        is_sharpe, _ = _block_sharpe(is_mask, block_sum, block_squares, block_days)
        oos_sharpe, oos_mean = _block_sharpe(oos_mask, block_sum, block_squares, block_days)

        picked = np.argmax(is_sharpe, axis=1)
        rows = np.arange(len(is_mask))
        value = oos_sharpe[rows, picked][:, np.newaxis]
        rank = (oos_sharpe < value).sum(axis=1) + 0.5 * ((oos_sharpe == value).sum(axis=1) - 1) + 1
        omega = rank / (n_strategies + 1)
        logits[start:start + chunk] = np.log(omega / (1.0 - omega))
        oos_loss[start:start + chunk] = oos_mean[rows, picked] < 0

    result = OverfittingResult(
        pbo=float(np.mean(logits <= 0)), n_combinations=len(logits), sampled=sampled,
        n_strategies=n_strategies, n_partitions=n_partitions, logits=logits,
        logit_mean=float(np.mean(logits)), logit_median=float(np.median(logits)),
        logit_q05=float(np.quantile(logits, 0.05)), logit_q95=float(np.quantile(logits, 0.95)),
        prob_oos_loss=float(np.mean(oos_loss)),
    )
    logger.debug("PBO %.3f over %d combinations of %d strategies in %.2f s", result.pbo, len(logits),
                 n_strategies, time.perf_counter() - started)
    return result


def _combinations(n_partitions: int, max_combinations: int, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """Return a 0/1 matrix, one row per in-sample combination of half the blocks."""
    half = n_partitions // 2
    if math.comb(n_partitions, half) <= max_combinations:
        chosen = list(itertools.combinations(range(n_partitions), half))
        sampled = False
    else:
        seen: set[tuple[int, ...]] = set()
        while len(seen) < max_combinations:
            seen.add(tuple(sorted(rng.choice(n_partitions, size=half, replace=False).tolist())))
        chosen = sorted(seen)
        sampled = True
    mask = np.zeros((len(chosen), n_partitions))
    for i, blocks in enumerate(chosen):
        mask[i, list(blocks)] = 1.0
    return mask, sampled


def _block_sharpe(mask: np.ndarray, block_sum: np.ndarray, block_squares: np.ndarray,
                  block_days: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return per-day Sharpe ratio and mean (combinations x strategies) of the masked blocks."""
    n = mask @ block_days
    total = mask @ block_sum.T
    squares = mask @ block_squares.T
    mean = total / n[:, np.newaxis]
    variance = (squares - n[:, np.newaxis] * mean ** 2) / (n[:, np.newaxis] - 1)
    std = np.sqrt(np.clip(variance, 0.0, None))
    flat = std <= _ZERO_PIPS
    sharpe = np.where(flat, 0.0, mean / np.where(flat, 1.0, std))
    return sharpe, mean

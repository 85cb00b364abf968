"""Market regimes: a Gaussian mixture of causal volatility and trend features, filtered forward.

Three features of one timeframe describe each bar, each taken from its causal feature row:

- ``rv_hour_of_week_dev_<w>``: ``log(rv_<w> / profile)``, the log volatility with the usual
  level of that hour of the week (from earlier weeks) removed, so that the regimes are not
  just the trading sessions.
- ``trend_<k>``: ``ret_<k> / (rv_<w> * sqrt(k))``, the k-bar log return in units of its
  expected size under a random walk with the current volatility. Its sign is the direction.
- ``er_<m>``: the efficiency ratio, 1 for a straight run and near 0 for a choppy range.

Fitting (``fit_regime_model``) uses the training part only: bars whose close
(``open + timeframe``) is at or before ``split_ns``. The features are standardised with
training means and standard deviations. A scikit-learn ``GaussianMixture`` (full covariances,
fixed ``random_state``) is fitted for each count in ``[min_regimes, max_regimes]``, and the
count with the lowest BIC on the training part is kept. The components, ordered by their mean
volatility feature, are the regimes. A transition matrix is counted from the mixture's hard
assignments of consecutive training bars.

Applying (``apply_regime_model``) runs a hidden Markov model forward filter over all bars,
with the components as emission densities: the probability of each regime on bar t uses bars
up to t only, never later ones (no smoothing, no Viterbi path). The table gives the most
probable regime and its filtered probability.

The model is a JSON-ready dict of plain numbers, so a walk-forward fold can refit with its
own ``split_ns`` and any reader can apply it without pickle.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
from sklearn.mixture import GaussianMixture
from threadpoolctl import threadpool_limits

from fxresearch._regime_kernels import forward_filter_nb, gaussian_log_density_nb
from fxresearch.config import RegimesConfig
from fxresearch.features import (efficiency_column, return_column, timestamp_column_ns,
                                 volatility_column, volatility_deviation_column)
from fxresearch.timeutil import NS_PER_MINUTE

logger = logging.getLogger(__name__)

METHOD = "gaussian_mixture_forward_filter"
WARMUP_ID = -1
WARMUP_NAME = "warmup"
COVARIANCE_TYPE = "full"
# Added to each count of the transition matrix, so a transition never seen in training keeps
# a small probability and the filter can still enter that regime.
TRANSITION_PRIOR_COUNT = 1.0
# Added to the diagonal of each standardised covariance, as GaussianMixture.reg_covar.
COVARIANCE_FLOOR = 1e-6
# Fitting stops when the mean log-likelihood gains less than this per EM iteration.
EM_TOLERANCE = 1e-4
EM_MAX_ITERATIONS = 300
# Each restart starts from k-means++ seeds. With scikit-learn's default start (one k-means
# run), three well-separated volatility levels were fitted as two merged levels plus a split by trend.
MIXTURE_INIT = "k-means++"


def regime_feature_names(config: RegimesConfig) -> list[str]:
    """Return the names of the modelled features: volatility deviation, trend and efficiency."""
    return _feature_names(config.volatility_window, config.trend_lookback, config.efficiency_window)


def empty_regimes() -> pd.DataFrame:
    """Return a regime table with no rows and the columns and dtypes of ``build_regimes``."""
    return pd.DataFrame({
        "timestamp": np.array([], dtype=np.int64),
        "regime_id": np.array([], dtype=np.int64),
        "regime_name": pd.Series([], dtype="str"),
        "probability": np.array([], dtype=np.float64),
    })


def regime_features(features: pd.DataFrame, config: RegimesConfig) -> pd.DataFrame:
    """Return the modelled features of each bar, with a NaN row where any input is missing.

    A bar with zero volatility (a flat window) has no finite volatility deviation or trend and
    is NaN too.

    Raises
    ------
    ValueError
        When a source column is missing from the feature table.
    """
    return _regime_feature_table(features, config.volatility_window, config.trend_lookback,
                                 config.efficiency_window)


def fit_regime_model(features: pd.DataFrame, split_ns: int, config: RegimesConfig) -> dict[str, Any]:
    """Fit the regime model on the training bars of one timeframe's feature table.

    Parameters
    ----------
    features
        Feature table of ``features.build_features`` for ``config.timeframe_min``: ``timestamp``
        (bar open) and at least ``rv_<volatility_window>``, ``rv_hour_of_week_dev_<volatility_window>``,
        ``ret_<trend_lookback>`` and ``er_<efficiency_window>``.
    split_ns
        Train/holdout split time, int64 ns UTC. Bars whose close is at or before it train.
    config
        Regime count range, seed, restarts, feature windows, trend threshold and minimum
        training rows.

    Returns
    -------
    dict
        JSON-ready model: the training scaler, the BIC of each candidate count, the mixture
        (weights, means and covariances in standardised units), the transition matrix, and per
        regime its id, name and mean features in original units. When the data are too few,
        ``insufficient_data`` contains the reason instead of the fit.

    Raises
    ------
    ValueError
        When a source column is missing, timestamps are not increasing, or the regime count
        range is invalid.
    """
    _check_config(config)
    timestamp_ns = timestamp_column_ns(features, "feature table")
    names = regime_feature_names(config)
    values = regime_features(features, config).to_numpy()
    close_ns = timestamp_ns + config.timeframe_min * NS_PER_MINUTE
    is_train = close_ns <= int(split_ns)
    train_rows = np.isfinite(values).all(axis=1) & is_train

    model: dict[str, Any] = {
        "method": METHOD,
        "timeframe_min": config.timeframe_min,
        "split_ns": int(split_ns),
        "features": names,
        "windows": {"volatility_window": config.volatility_window,
                    "trend_lookback": config.trend_lookback,
                    "efficiency_window": config.efficiency_window},
        "covariance_type": COVARIANCE_TYPE,
        "init_params": MIXTURE_INIT,
        "random_state": config.random_state,
        "n_init": config.n_init,
        "trend_threshold": config.trend_threshold,
        "n_train_fitted": int(train_rows.sum()),
    }
    train_values = values[train_rows]
    reason = _insufficient_reason(train_values, config)
    if reason is not None:
        logger.info("Regimes skipped: %s", reason)
        model["insufficient_data"] = reason
        return model

    # Standardise with training statistics only, so each feature weighs alike in the mixture.
    train_mean = train_values.mean(axis=0)
    train_std = train_values.std(axis=0)
    # A constant feature carries no information, and a unit scale avoids dividing by zero.
    train_std = np.where(train_std > 0, train_std, 1.0)
    scaled = (train_values - train_mean) / train_std

    bic_table, mixture = _select_mixture(scaled, config)
    means, covariances, weights, order = _ordered_components(mixture)
    n_regimes = len(weights)

    # Hard assignments of consecutive training bars count the transitions between regimes.
    regime_of_component = np.empty(n_regimes, dtype=np.int64)
    regime_of_component[order] = np.arange(n_regimes)
    train_ids = np.full(len(values), WARMUP_ID, dtype=np.int64)
    with threadpool_limits(limits=1):
        train_ids[train_rows] = regime_of_component[mixture.predict(scaled)]
    transition = _transition_matrix(train_ids, n_regimes)

    original_means = means * train_std + train_mean
    median_volatility = float(np.median(train_values[:, 0]))
    regime_names = _name_regimes(original_means, median_volatility, config.trend_threshold)
    regimes = []
    for regime in range(n_regimes):
        regimes.append({
            "id": regime,
            "name": regime_names[regime],
            "weight": float(weights[regime]),
            "mean": dict(zip(names, original_means[regime].tolist(), strict=True)),
            "train_assigned": int((train_ids == regime).sum()),
        })
    model.update({
        "scaler": {"mean": train_mean.tolist(), "std": train_std.tolist()},
        "bic": bic_table,
        "n_regimes": n_regimes,
        "weights": weights.tolist(),
        "means": means.tolist(),
        "covariances": covariances.tolist(),
        "transition_matrix": transition.tolist(),
        "initial_probability": weights.tolist(),
        f"train_median_{names[0]}": median_volatility,
        "names": regime_names,
        "regimes": regimes,
    })
    logger.info("Regimes fitted on %d training bars, %d by BIC: %s", int(train_rows.sum()), n_regimes,
                ", ".join(regime_names))
    return model


def apply_regime_model(model: dict[str, Any], features: pd.DataFrame) -> pd.DataFrame:
    """Filter the regime probabilities of every bar forward in time with a fitted model.

    Parameters
    ----------
    model
        Output of ``fit_regime_model`` (or the same dict read back from JSON).
    features
        Feature table with ``timestamp`` and the columns named by the model's windows.

    Returns
    -------
    pandas.DataFrame
        ``timestamp`` (bar open, int64 ns UTC), ``regime_id`` (int64), ``regime_name`` (str)
        and ``probability`` (float64, the filtered probability of that regime given bars up
        to this one), one row per feature row. Rows without complete features get id -1, the
        name ``warmup`` and a NaN probability. The table is empty when the model contains
        ``insufficient_data``.

    Raises
    ------
    ValueError
        When the model is not a regime model of this version or a source column is missing.
    """
    if model.get("method") != METHOD:
        raise ValueError(f"The regime model has method {model.get('method')!r}, expected {METHOD!r}. "
                         f"Refit it with fit_regime_model.")
    if "insufficient_data" in model:
        return empty_regimes()
    timestamp_ns = timestamp_column_ns(features, "feature table")
    windows = model["windows"]
    values = _regime_feature_table(features, windows["volatility_window"], windows["trend_lookback"],
                                   windows["efficiency_window"]).to_numpy()
    scaled = (values - np.asarray(model["scaler"]["mean"])) / np.asarray(model["scaler"]["std"])

    means = np.asarray(model["means"], dtype=np.float64)
    covariances = np.asarray(model["covariances"], dtype=np.float64)
    cholesky = np.linalg.cholesky(covariances)
    inverse_cholesky = np.linalg.inv(cholesky)
    log_determinant = 2.0 * np.log(np.diagonal(cholesky, axis1=1, axis2=2)).sum(axis=1)
    log_emission = gaussian_log_density_nb(np.ascontiguousarray(scaled), means,
                                           np.ascontiguousarray(inverse_cholesky), log_determinant)
    filtered = forward_filter_nb(log_emission, np.asarray(model["transition_matrix"], dtype=np.float64),
                                 np.asarray(model["initial_probability"], dtype=np.float64))

    complete = np.isfinite(filtered).all(axis=1)
    regime_id = np.full(len(values), WARMUP_ID, dtype=np.int64)
    probability = np.full(len(values), np.nan)
    regime_id[complete] = filtered[complete].argmax(axis=1)
    probability[complete] = filtered[complete].max(axis=1)
    # NOTE: a bar after warm-up with zero volatility (a flat window) or no volatility profile
    # yet also gets the warmup id and name, because its features are not finite.
    name_of_id = np.array([WARMUP_NAME, *model["names"]], dtype=object)
    return pd.DataFrame({
        "timestamp": timestamp_ns,
        "regime_id": regime_id,
        "regime_name": pd.Series(name_of_id[regime_id + 1], dtype="str"),
        "probability": probability,
    })


def build_regimes(features: pd.DataFrame, split_ns: int,
                  config: RegimesConfig) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Fit named market regimes on the training part and filter them over every bar.

    Parameters
    ----------
    features
        Feature table of ``features.build_features`` for ``config.timeframe_min`` (see
        ``fit_regime_model`` for the columns read).
    split_ns
        Train/holdout split time, int64 ns UTC. Bars whose close is at or before it train.
    config
        Regime settings.

    Returns
    -------
    table : pandas.DataFrame
        ``apply_regime_model``'s table: ``timestamp``, ``regime_id``, ``regime_name``,
        ``probability``. It is empty when fewer than ``config.min_bars`` training rows have
        complete features.
    model : dict
        ``fit_regime_model``'s model, where each regime also gets its training and holdout
        bar counts under the filtered assignment, plus the warm-up counts.

    Notes
    -----
    Regime ids follow the mean volatility feature of their component, ascending, then the
    mean trend, so id 0 is the quietest regime on every run. A regime is ``high_vol`` when its
    mean volatility deviation is above the training median and ``low_vol`` otherwise. It is
    ``trend_up`` when its mean trend is at least ``config.trend_threshold``, ``trend_down``
    when it is at most minus that, and ``range`` in between. Names read like
    ``low_vol_range`` or ``high_vol_trend_up``; repeated names get ``_2``, ``_3`` in id order.
    """
    model = fit_regime_model(features, split_ns, config)
    table = apply_regime_model(model, features)
    if "insufficient_data" in model:
        return table, model

    close_ns = table["timestamp"].to_numpy() + config.timeframe_min * NS_PER_MINUTE
    is_train = close_ns <= int(split_ns)
    regime_id = table["regime_id"].to_numpy()
    for regime in model["regimes"]:
        in_regime = regime_id == regime["id"]
        regime["train_count"] = int((in_regime & is_train).sum())
        regime["holdout_count"] = int((in_regime & ~is_train).sum())
    warmup = regime_id == WARMUP_ID
    model["warmup"] = {"train_count": int((warmup & is_train).sum()),
                       "holdout_count": int((warmup & ~is_train).sum())}
    return table, model


def _feature_names(volatility_window: int, trend_lookback: int, efficiency_window: int) -> list[str]:
    return [volatility_deviation_column(volatility_window), f"trend_{trend_lookback}",
            efficiency_column(efficiency_window)]


def _regime_feature_table(features: pd.DataFrame, volatility_window: int, trend_lookback: int,
                          efficiency_window: int) -> pd.DataFrame:
    rv_name = volatility_column(volatility_window)
    deviation_name = volatility_deviation_column(volatility_window)
    return_name = return_column(trend_lookback)
    er_name = efficiency_column(efficiency_window)
    missing = [c for c in (rv_name, deviation_name, return_name, er_name) if c not in features.columns]
    if missing:
        raise ValueError(
            f"The feature table is missing {missing}, which the regimes stage models. Keep "
            f"volatility_window, a return lookback of {trend_lookback} and efficiency_window "
            f"in [features] equal to [regimes], or change [regimes].")

    rv = features[rv_name].to_numpy(dtype=np.float64)
    log_return = features[return_name].to_numpy(dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        trend = log_return / (rv * np.sqrt(trend_lookback))
    columns = (features[deviation_name].to_numpy(dtype=np.float64), trend,
               features[er_name].to_numpy(dtype=np.float64))
    names = _feature_names(volatility_window, trend_lookback, efficiency_window)
    table = pd.DataFrame(dict(zip(names, columns, strict=True)))
    valid = np.isfinite(table.to_numpy()).all(axis=1)
    table.loc[~valid, :] = np.nan
    return table


def _check_config(config: RegimesConfig) -> None:
    if config.min_regimes < 1:
        raise ValueError(f"regimes.min_regimes must be at least 1, got {config.min_regimes}")
    if config.max_regimes < config.min_regimes:
        raise ValueError(f"regimes.max_regimes = {config.max_regimes} is below regimes.min_regimes = "
                         f"{config.min_regimes}; set max_regimes >= min_regimes")
    if config.n_init < 1:
        raise ValueError(f"regimes.n_init must be at least 1, got {config.n_init}")


def _insufficient_reason(train_values: np.ndarray, config: RegimesConfig) -> str | None:
    n_train = len(train_values)
    if n_train < config.min_bars:
        return (f"{n_train} training bars with complete regime features is fewer than "
                f"regimes.min_bars = {config.min_bars}")
    n_distinct = len(np.unique(train_values, axis=0))
    if n_distinct < config.min_regimes:
        return (f"{n_distinct} distinct training rows cannot form "
                f"regimes.min_regimes = {config.min_regimes} regimes")
    return None


def _select_mixture(scaled: np.ndarray, config: RegimesConfig) -> tuple[list[dict[str, Any]], GaussianMixture]:
    """Fit a mixture per candidate count and return the BIC table and the lowest-BIC fit."""
    n_distinct = len(np.unique(scaled, axis=0))
    bic_table: list[dict[str, Any]] = []
    best: GaussianMixture | None = None
    best_bic = np.inf
    for n_components in range(config.min_regimes, config.max_regimes + 1):
        if n_components > n_distinct:
            bic_table.append({"n_regimes": n_components, "bic": None,
                              "skipped": f"only {n_distinct} distinct training rows"})
            continue
        mixture = GaussianMixture(n_components=n_components, covariance_type=COVARIANCE_TYPE,
                                  reg_covar=COVARIANCE_FLOOR, tol=EM_TOLERANCE, max_iter=EM_MAX_ITERATIONS,
                                  n_init=config.n_init, init_params=MIXTURE_INIT,
                                  random_state=config.random_state)
        # The matrices are 3 x 3, so extra BLAS threads only wait on each other. On a busy
        # 2-core machine one thread fitted about 14 times faster than two (measured once).
        with threadpool_limits(limits=1):
            mixture.fit(scaled)
        bic = float(mixture.bic(scaled))
        bic_table.append({"n_regimes": n_components, "bic": bic, "converged": bool(mixture.converged_)})
        if bic < best_bic:
            best, best_bic = mixture, bic
    if best is None:
        raise ValueError(f"No regime count in [{config.min_regimes}, {config.max_regimes}] can be fitted "
                         f"to {n_distinct} distinct training rows")
    return bic_table, best


def _ordered_components(mixture: GaussianMixture) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return means, covariances and weights in regime order, and that order over components.

    Regimes follow the mean volatility feature ascending, then the mean trend, so ids do not
    depend on the mixture's arbitrary component order.
    """
    means = np.asarray(mixture.means_)
    order = np.lexsort((means[:, 1], means[:, 0]))
    return means[order], np.asarray(mixture.covariances_)[order], np.asarray(mixture.weights_)[order], order


def _transition_matrix(regime_id: np.ndarray, n_regimes: int) -> np.ndarray:
    """Count transitions between consecutive bars that both have a regime, plus the prior count."""
    counts = np.full((n_regimes, n_regimes), TRANSITION_PRIOR_COUNT)
    both = (regime_id[:-1] >= 0) & (regime_id[1:] >= 0)
    np.add.at(counts, (regime_id[:-1][both], regime_id[1:][both]), 1.0)
    return counts / counts.sum(axis=1, keepdims=True)


def _name_regimes(means: np.ndarray, median_volatility: float, trend_threshold: float) -> list[str]:
    """Return a unique name per regime (rows in id order) from its mean volatility and trend."""
    names = []
    seen: dict[str, int] = {}
    for volatility, trend, _efficiency in means:
        if trend >= trend_threshold:
            direction = "trend_up"
        elif trend <= -trend_threshold:
            direction = "trend_down"
        else:
            direction = "range"
        level = "high_vol" if volatility > median_volatility else "low_vol"
        base = f"{level}_{direction}"
        seen[base] = seen.get(base, 0) + 1
        names.append(base if seen[base] == 1 else f"{base}_{seen[base]}")
    return names

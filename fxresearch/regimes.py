"""Market regimes: KMeans clusters of causal volatility and trend features of one timeframe.

Three features are clustered, each taken from one bar's causal feature row:

- ``log_rv_<w>``: the natural log of ``rv_<w>``, the standard deviation of one-bar log
  returns. The log makes the heavy right tail of volatility less dominant in the distances.
- ``trend_<k>``: ``ret_<k> / (rv_<w> * sqrt(k))``, the k-bar log return in units of its
  expected size under a random walk with the current volatility. Its sign is the direction.
- ``er_<m>``: the efficiency ratio, 1 for a straight run and near 0 for a choppy range.

The scaler (training mean and standard deviation) and the clusters are fitted on the training
part only: bars whose close (``open + timeframe``) is at or before ``split_ns``. Every bar,
training and holdout, is then assigned to its nearest centre, so a bar's regime depends on
that bar's features and the training fit alone.

KMeans is used rather than a Gaussian mixture for three reasons. The strategies consume hard
assignments to the nearest centre. KMeans has no covariance matrices that can collapse on
near-duplicate rows. With a fixed ``random_state`` and ``n_init`` it returns the same centres
on every run.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans

from fxresearch.config import RegimesConfig
from fxresearch.features import (efficiency_column, return_column, timestamp_column_ns,
                                 volatility_column)
from fxresearch.timeutil import NS_PER_MINUTE

logger = logging.getLogger(__name__)

WARMUP_ID = -1
WARMUP_NAME = "warmup"
# KMeans restarts from this many initial centres and keeps the fit with the lowest inertia.
KMEANS_N_INIT = 10


def regime_feature_names(config: RegimesConfig) -> list[str]:
    """Return the names of the clustered features: log volatility, trend and efficiency."""
    return [f"log_{volatility_column(config.volatility_window)}",
            f"trend_{config.trend_lookback}",
            efficiency_column(config.efficiency_window)]


def empty_regimes() -> pd.DataFrame:
    """Return a regime table with no rows and the columns and dtypes of ``build_regimes``."""
    return pd.DataFrame({
        "timestamp": np.array([], dtype=np.int64),
        "regime_id": np.array([], dtype=np.int64),
        "regime_name": pd.Series([], dtype="str"),
    })


def regime_features(features: pd.DataFrame, config: RegimesConfig) -> pd.DataFrame:
    """Return the clustered features of each bar, with a NaN row where any input is missing.

    A bar with zero volatility (a flat window) has no finite log volatility or trend and is
    NaN too.

    Raises
    ------
    ValueError
        When a source column is missing from the feature table.
    """
    rv_name = volatility_column(config.volatility_window)
    return_name = return_column(config.trend_lookback)
    er_name = efficiency_column(config.efficiency_window)
    missing = [c for c in (rv_name, return_name, er_name) if c not in features.columns]
    if missing:
        raise ValueError(
            f"The feature table is missing {missing}, which the regimes stage clusters. Keep "
            f"volatility_window, a return lookback of {config.trend_lookback} and "
            f"efficiency_window in [features] equal to [regimes], or change [regimes].")

    rv = features[rv_name].to_numpy(dtype=np.float64)
    log_return = features[return_name].to_numpy(dtype=np.float64)
    efficiency = features[er_name].to_numpy(dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_rv = np.log(rv)
        trend = log_return / (rv * np.sqrt(config.trend_lookback))
    table = pd.DataFrame(dict(zip(regime_feature_names(config), (log_rv, trend, efficiency))))
    valid = np.isfinite(table.to_numpy()).all(axis=1)
    table.loc[~valid, :] = np.nan
    return table


def build_regimes(features: pd.DataFrame, split_ns: int,
                  config: RegimesConfig) -> tuple[pd.DataFrame, dict]:
    """Cluster bars into named market regimes, fitted on the training part only.

    Parameters
    ----------
    features
        Feature table of ``features.build_features`` for ``config.timeframe_min``: ``timestamp``
        (bar open) and at least ``rv_<volatility_window>``, ``ret_<trend_lookback>`` and
        ``er_<efficiency_window>``.
    split_ns
        Train/holdout split time, int64 ns UTC. Bars whose close is at or before it train.
    config
        Number of regimes, KMeans seed, feature windows, trend threshold and minimum training
        rows.

    Returns
    -------
    table : pandas.DataFrame
        ``timestamp`` (bar open, int64 ns UTC), ``regime_id`` (int64) and ``regime_name``
        (str), one row per feature row. Rows without complete features get id -1 and the
        name ``warmup``. The table is empty when fewer than ``config.min_bars`` training rows
        have complete features.
    model : dict
        JSON-ready description of the fit: feature names, training mean and std, the training
        median volatility and the inertia. Each regime has its id, name, training and holdout
        counts, and centre in original units. The centre gives ``rv_<w>`` as a one-bar
        log-return std, ``trend_<k>`` in volatility units and ``er_<m>``. When the data are
        too few, ``insufficient_data`` contains the reason instead of the fit.

    Raises
    ------
    ValueError
        When a source column is missing, timestamps are not increasing, or the config asks
        for fewer than one regime.

    Notes
    -----
    Regime ids are ordered by the centre's volatility, then its trend, so id 0 is the quietest
    regime on every run. A centre is ``high_vol`` when its volatility is above the training
    median volatility and ``low_vol`` otherwise. It is ``trend_up`` when its trend is at least
    ``config.trend_threshold``, ``trend_down`` when it is at most minus that, and ``range`` in
    between. Repeated names get ``_2``, ``_3`` in id order.
    """
    if config.n_regimes < 1:
        raise ValueError(f"regimes.n_regimes must be at least 1, got {config.n_regimes}")
    timestamp_ns = timestamp_column_ns(features, "feature table")
    names = regime_feature_names(config)
    values = regime_features(features, config).to_numpy()
    valid = np.isfinite(values).all(axis=1)
    close_ns = timestamp_ns + config.timeframe_min * NS_PER_MINUTE
    is_train = close_ns <= int(split_ns)
    train_rows = valid & is_train

    model: dict = {
        "method": "kmeans",
        "timeframe_min": config.timeframe_min,
        "split_ns": int(split_ns),
        "features": names,
        "n_regimes": config.n_regimes,
        "random_state": config.random_state,
        "n_init": KMEANS_N_INIT,
        "trend_threshold": config.trend_threshold,
    }
    reason = _insufficient_reason(values[train_rows], config)
    if reason is not None:
        logger.info("Regimes skipped: %s", reason)
        model["insufficient_data"] = reason
        return empty_regimes(), model

    # Standardise with training statistics so each feature weighs the same in the distance.
    train_values = values[train_rows]
    train_mean = train_values.mean(axis=0)
    train_std = train_values.std(axis=0)
    # A constant feature carries no information, and a unit scale avoids dividing by zero.
    train_std = np.where(train_std > 0, train_std, 1.0)
    kmeans = KMeans(n_clusters=config.n_regimes, n_init=KMEANS_N_INIT,
                    random_state=config.random_state)
    kmeans.fit((train_values - train_mean) / train_std)

    centres = kmeans.cluster_centers_ * train_std + train_mean
    order = np.lexsort((centres[:, 1], centres[:, 0]))
    regime_of_cluster = np.empty(config.n_regimes, dtype=np.int64)
    regime_of_cluster[order] = np.arange(config.n_regimes)
    centres = centres[order]
    median_log_rv = float(np.median(train_values[:, 0]))
    regime_names = _name_regimes(centres, median_log_rv, config.trend_threshold)

    regime_id = np.full(len(values), WARMUP_ID, dtype=np.int64)
    if valid.any():
        clusters = kmeans.predict((values[valid] - train_mean) / train_std)
        regime_id[valid] = regime_of_cluster[clusters]
    # NOTE: a bar after warm-up with zero volatility (a flat volatility window) also gets the
    # warmup id and name, because its log volatility and trend are not finite.
    name_of_id = np.array([WARMUP_NAME, *regime_names], dtype=object)
    table = pd.DataFrame({
        "timestamp": timestamp_ns,
        "regime_id": regime_id,
        "regime_name": pd.Series(name_of_id[regime_id + 1], dtype="str"),
    })

    rv_name, trend_name, er_name = volatility_column(config.volatility_window), names[1], names[2]
    regimes = []
    for regime in range(config.n_regimes):
        in_regime = regime_id == regime
        regimes.append({
            "id": regime,
            "name": regime_names[regime],
            "centre": {rv_name: float(np.exp(centres[regime, 0])),
                       trend_name: float(centres[regime, 1]),
                       er_name: float(centres[regime, 2])},
            "train_count": int((in_regime & is_train).sum()),
            "holdout_count": int((in_regime & ~is_train).sum()),
        })
    warmup = regime_id == WARMUP_ID
    model.update({
        "train_mean": dict(zip(names, train_mean.tolist())),
        "train_std": dict(zip(names, train_std.tolist())),
        "train_median_" + rv_name: float(np.exp(median_log_rv)),
        "names": regime_names,
        "regimes": regimes,
        "warmup": {"train_count": int((warmup & is_train).sum()),
                   "holdout_count": int((warmup & ~is_train).sum())},
        "n_train_fitted": int(train_rows.sum()),
        "inertia": float(kmeans.inertia_),
    })
    logger.info("Regimes fitted on %d training bars: %s", int(train_rows.sum()),
                ", ".join(regime_names))
    return table, model


def _insufficient_reason(train_values: np.ndarray, config: RegimesConfig) -> str | None:
    n_train = len(train_values)
    if n_train < config.min_bars:
        return (f"{n_train} training bars with complete regime features is fewer than "
                f"regimes.min_bars = {config.min_bars}")
    n_distinct = len(np.unique(train_values, axis=0))
    if n_distinct < config.n_regimes:
        return (f"{n_distinct} distinct training rows cannot form "
                f"regimes.n_regimes = {config.n_regimes} clusters")
    return None


def _name_regimes(centres: np.ndarray, median_log_rv: float, trend_threshold: float) -> list[str]:
    """Return a unique name per centre (rows already in id order) from its trend and volatility."""
    names = []
    seen: dict[str, int] = {}
    for log_rv, trend, _efficiency in centres:
        if trend >= trend_threshold:
            direction = "trend_up"
        elif trend <= -trend_threshold:
            direction = "trend_down"
        else:
            direction = "range"
        volatility = "high_vol" if log_rv > median_log_rv else "low_vol"
        base = f"{direction}_{volatility}"
        seen[base] = seen.get(base, 0) + 1
        names.append(base if seen[base] == 1 else f"{base}_{seen[base]}")
    return names

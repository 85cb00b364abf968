"""Tests for market regimes: BIC choice, ordering, naming, training-only fit and the forward filter."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fxresearch._regime_kernels import forward_filter_nb, gaussian_log_density_nb
from fxresearch.config import FeaturesConfig, RegimesConfig
from fxresearch.features import build_features
from fxresearch.instruments import get_instrument
from fxresearch.regimes import (
    WARMUP_ID,
    WARMUP_NAME,
    apply_regime_model,
    build_regimes,
    empty_regimes,
    fit_regime_model,
    regime_feature_names,
)
from fxresearch.strategies import REGIME_TOKENS
from fxresearch.timeutil import NS_PER_MINUTE, datetime_to_ns

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"
EURUSD = get_instrument("EURUSD")
FEATURES = FeaturesConfig()
# Four candidate counts instead of five keep the file fast; the real-data test uses the defaults.
CONFIG = replace(RegimesConfig(), max_regimes=4)
TIMEFRAME_MIN = CONFIG.timeframe_min
TIMEFRAME_NS = TIMEFRAME_MIN * NS_PER_MINUTE
# Sunday 17:00 New York, the start of an FX week.
START_NS = int(datetime_to_ns(["2024-01-07 22:00"])[0])
BARS_PER_WEEK = 7 * 96


def _random_bars(n_bars: int, seed: int) -> pd.DataFrame:
    """Random-walk M15 bars with quiet and busy days, in the column layout of bars.build_bars."""
    rng = np.random.default_rng(seed)
    timestamp_ns = START_NS + np.arange(n_bars, dtype=np.int64) * TIMEFRAME_NS
    busy_day = (np.arange(n_bars) // 96) % 3 == 0
    step = rng.normal(0.0, 1.0, n_bars) * np.where(busy_day, 4e-4, 1.5e-4)
    close = 1.1 + np.cumsum(step)
    open_ = np.r_[1.1, close[:-1]]
    wick = np.abs(rng.normal(0.0, 1e-4, (2, n_bars)))
    bars = pd.DataFrame({"timestamp": timestamp_ns})
    for side, offset in (("bid", 0.0), ("ask", 1e-4)):
        bars[f"{side}_open"] = open_ + offset
        bars[f"{side}_high"] = np.maximum(open_, close) + wick[0] + offset
        bars[f"{side}_low"] = np.minimum(open_, close) - wick[1] + offset
        bars[f"{side}_close"] = close + offset
    bars["spread_mean"] = 1e-4
    return bars


def _features(bars: pd.DataFrame) -> pd.DataFrame:
    return build_features(bars, TIMEFRAME_MIN, FEATURES, EURUSD)


def _feature_table(deviation: np.ndarray, trend: np.ndarray, efficiency: np.ndarray) -> pd.DataFrame:
    """A feature table with the columns the regimes stage reads, from the three modelled features."""
    rv = np.full(len(deviation), 1e-4)
    return pd.DataFrame({
        "timestamp": START_NS + np.arange(len(deviation), dtype=np.int64) * TIMEFRAME_NS,
        "rv_20": rv,
        "rv_hour_of_week_dev_20": deviation,
        "ret_12": trend * rv * math.sqrt(12.0),
        "er_10": efficiency,
    })


def _switching_features(n_rows: int, seed: int, levels: tuple[float, ...]) -> tuple[pd.DataFrame, np.ndarray]:
    """Features whose volatility deviation switches between ``levels`` in runs of about 50 rows."""
    rng = np.random.default_rng(seed)
    state = np.zeros(n_rows, dtype=np.int64)
    for i in range(1, n_rows):
        state[i] = rng.integers(len(levels)) if rng.random() < 0.02 else state[i - 1]
    deviation = np.asarray(levels)[state] + rng.normal(0.0, 0.1, n_rows)
    trend = rng.normal(0.0, 1.0, n_rows)
    efficiency = 0.3 + rng.normal(0.0, 0.05, n_rows)
    return _feature_table(deviation, trend, efficiency), state


N_BARS = 4 * BARS_PER_WEEK
SPLIT_ROW = 3 * BARS_PER_WEEK
# The bar SPLIT_ROW - 1 closes exactly at the split, so rows 0..SPLIT_ROW-1 are training rows.
SPLIT_NS = START_NS + SPLIT_ROW * TIMEFRAME_NS
# The volatility profile needs one earlier week, and rv_20 needs 21 bars of that week.
FIRST_COMPLETE_ROW = BARS_PER_WEEK + 20


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return _random_bars(N_BARS, seed=3)


@pytest.fixture(scope="module")
def fitted(bars) -> tuple[pd.DataFrame, dict]:
    return build_regimes(_features(bars), SPLIT_NS, CONFIG)


def test_regimes_are_deterministic(bars, fitted):
    table, model = fitted
    table_again, model_again = build_regimes(_features(bars), SPLIT_NS, CONFIG)
    pd.testing.assert_frame_equal(table, table_again)
    assert model == model_again


def test_table_schema_and_warmup(fitted):
    table, model = fitted
    assert list(table.columns) == ["timestamp", "regime_id", "regime_name", "probability"]
    assert table["timestamp"].dtype == np.int64
    assert table["regime_id"].dtype == np.int64
    assert table["probability"].dtype == np.float64
    assert len(table) == N_BARS
    warmup = table.iloc[:FIRST_COMPLETE_ROW]
    assert (warmup["regime_id"] == WARMUP_ID).all()
    assert (warmup["regime_name"] == WARMUP_NAME).all()
    assert warmup["probability"].isna().all()
    later = table.iloc[FIRST_COMPLETE_ROW:]
    assert (later["regime_id"] >= 0).all()
    assert later["probability"].between(1.0 / model["n_regimes"], 1.0).all()
    assert set(later["regime_id"]) <= set(range(model["n_regimes"]))


def test_bic_table_covers_the_range_and_picks_the_minimum(fitted):
    _table, model = fitted
    candidates = [row["n_regimes"] for row in model["bic"]]
    assert candidates == list(range(CONFIG.min_regimes, CONFIG.max_regimes + 1))
    best = min(model["bic"], key=lambda row: row["bic"])
    assert model["n_regimes"] == best["n_regimes"]
    assert len(model["names"]) == model["n_regimes"] >= 2


def test_ids_follow_volatility(fitted):
    _table, model = fitted
    regimes = model["regimes"]
    assert [r["id"] for r in regimes] == list(range(model["n_regimes"]))
    volatility = [r["mean"]["rv_hour_of_week_dev_20"] for r in regimes]
    assert volatility == sorted(volatility)
    standardised = [mean[0] for mean in model["means"]]
    assert standardised == sorted(standardised)


def test_names_are_unique_and_follow_means(fitted):
    table, model = fitted
    names = model["names"]
    assert len(set(names)) == len(names)
    median = model["train_median_rv_hour_of_week_dev_20"]
    for regime in model["regimes"]:
        mean = regime["mean"]
        if mean["trend_12"] >= CONFIG.trend_threshold:
            direction = "trend_up"
        elif mean["trend_12"] <= -CONFIG.trend_threshold:
            direction = "trend_down"
        else:
            direction = "range"
        level = "high_vol" if mean["rv_hour_of_week_dev_20"] > median else "low_vol"
        assert regime["name"].startswith(f"{level}_{direction}")
        in_table = table.loc[table["regime_id"] == regime["id"], "regime_name"]
        assert (in_table == regime["name"]).all()
    # regime_ma_cross selects regimes by these tokens, so every name has a level and a direction.
    for name in names:
        assert any(token in name for token in ("high_vol", "low_vol"))
        assert any(token in name for token in ("trend", "range"))
    assert set(REGIME_TOKENS) >= {"trend", "range", "high_vol", "low_vol"}


def test_counts_add_up_to_train_and_holdout_rows(fitted):
    table, model = fitted
    train = sum(r["train_count"] for r in model["regimes"]) + model["warmup"]["train_count"]
    holdout = sum(r["holdout_count"] for r in model["regimes"]) + model["warmup"]["holdout_count"]
    assert train == SPLIT_ROW
    assert holdout == N_BARS - SPLIT_ROW
    assert model["n_train_fitted"] == SPLIT_ROW - FIRST_COMPLETE_ROW
    assert sum(r["train_assigned"] for r in model["regimes"]) == model["n_train_fitted"]
    ids = table["regime_id"].to_numpy()
    for regime in model["regimes"]:
        assert regime["train_count"] == int((ids[:SPLIT_ROW] == regime["id"]).sum())
        assert regime["holdout_count"] == int((ids[SPLIT_ROW:] == regime["id"]).sum())


def test_model_is_json_and_applies_after_reading_back(bars, fitted):
    table, model = fitted
    assert model["features"] == regime_feature_names(CONFIG) == ["rv_hour_of_week_dev_20", "trend_12", "er_10"]
    assert "insufficient_data" not in model
    text = json.dumps(model)
    read_back = json.loads(text)
    assert read_back == model
    pd.testing.assert_frame_equal(apply_regime_model(read_back, _features(bars)), table)
    transition = np.asarray(model["transition_matrix"])
    assert transition.shape == (model["n_regimes"], model["n_regimes"])
    np.testing.assert_allclose(transition.sum(axis=1), 1.0, rtol=1e-12)
    assert (transition > 0).all()
    np.testing.assert_allclose(sum(model["weights"]), 1.0, rtol=1e-12)


def test_training_statistics_use_training_rows_only(bars, fitted):
    _table, model = fitted
    features = _features(bars).iloc[FIRST_COMPLETE_ROW:SPLIT_ROW]
    trend = features["ret_12"].to_numpy() / (features["rv_20"].to_numpy() * np.sqrt(12))
    expected = [features["rv_hour_of_week_dev_20"].to_numpy(), trend, features["er_10"].to_numpy()]
    for column, values in enumerate(expected):
        assert model["scaler"]["mean"][column] == pytest.approx(values.mean(), rel=1e-12)
        assert model["scaler"]["std"][column] == pytest.approx(values.std(), rel=1e-12)


def test_changing_holdout_bars_keeps_the_fit(bars, fitted):
    table, model = fitted
    changed = bars.copy()
    # Triple the holdout moves so the holdout looks nothing like the training part.
    for column in [c for c in changed.columns if c.startswith(("bid_", "ask_"))]:
        base = changed[column].iloc[SPLIT_ROW - 1]
        changed.loc[SPLIT_ROW:, column] = base + 3.0 * (changed.loc[SPLIT_ROW:, column] - base)
    table_changed, model_changed = build_regimes(_features(changed), SPLIT_NS, CONFIG)
    for key in ("scaler", "bic", "means", "covariances", "weights", "transition_matrix", "names"):
        assert model_changed[key] == model[key], key
    pd.testing.assert_frame_equal(table_changed.iloc[:SPLIT_ROW], table.iloc[:SPLIT_ROW])
    assert not table_changed["regime_id"].iloc[SPLIT_ROW:].equals(table["regime_id"].iloc[SPLIT_ROW:])


def test_bic_picks_two_regimes_for_bimodal_volatility():
    features, state = _switching_features(3_000, seed=1, levels=(-0.6, 0.6))
    split_ns = START_NS + 2_000 * TIMEFRAME_NS
    config = replace(CONFIG, min_regimes=1, max_regimes=5)
    table, model = build_regimes(features, split_ns, config)
    bic = {row["n_regimes"]: row["bic"] for row in model["bic"]}
    assert model["n_regimes"] == 2
    assert bic[2] < bic[1]
    assert bic[2] < min(bic[n] for n in (3, 4, 5))
    # Id 0 is the quiet state, and the filter recovers the hidden state on nearly every row.
    assert (table["regime_id"].to_numpy() == state).mean() > 0.97
    assert model["names"][0].startswith("low_vol")
    assert model["names"][1].startswith("high_vol")


def test_bic_picks_one_regime_for_unimodal_features():
    rng = np.random.default_rng(2)
    n = 2_000
    features = _feature_table(rng.normal(0.0, 0.3, n), rng.normal(0.0, 1.0, n), 0.3 + rng.normal(0.0, 0.05, n))
    config = replace(CONFIG, min_regimes=1, max_regimes=4)
    table, model = build_regimes(features, START_NS + 1_500 * TIMEFRAME_NS, config)
    assert model["n_regimes"] == 1
    assert (table["probability"] == 1.0).all()


def test_three_levels_are_ordered_by_volatility():
    features, state = _switching_features(4_000, seed=4, levels=(1.5, -1.5, 0.0))
    config = replace(CONFIG, min_regimes=2, max_regimes=4)
    table, model = build_regimes(features, START_NS + 3_000 * TIMEFRAME_NS, config)
    assert model["n_regimes"] == 3
    # Level 1.5 is state 0, -1.5 state 1 and 0.0 state 2, so volatility order maps them to 2, 0, 1.
    expected_id = np.array([2, 0, 1])[state]
    assert (table["regime_id"].to_numpy() == expected_id).mean() > 0.95
    means = [r["mean"]["rv_hour_of_week_dev_20"] for r in model["regimes"]]
    np.testing.assert_allclose(means, [-1.5, 0.0, 1.5], atol=0.05)
    # Runs of about 50 rows make each regime likely to persist from one bar to the next.
    assert (np.diag(model["transition_matrix"]) > 0.9).all()


def test_regime_ids_do_not_depend_on_row_order():
    features, _state = _switching_features(3_000, seed=5, levels=(-0.6, 0.6))
    config = replace(CONFIG, min_regimes=2, max_regimes=2)
    split_ns = START_NS + 3_000 * TIMEFRAME_NS
    _table, model = build_regimes(features, split_ns, config)
    reversed_rows = features.iloc[::-1].reset_index(drop=True)
    reversed_rows["timestamp"] = features["timestamp"].to_numpy()
    _table, model_reversed = build_regimes(reversed_rows, split_ns, config)
    assert model_reversed["names"] == model["names"]
    np.testing.assert_allclose(model_reversed["means"], model["means"], atol=1e-3)


def test_forward_filter_matches_slow_reference():
    rng = np.random.default_rng(6)
    n, k = 200, 3
    log_emission = rng.normal(0.0, 2.0, (n, k))
    log_emission[[0, 50, 51], :] = np.nan
    transition = rng.uniform(0.1, 1.0, (k, k))
    transition /= transition.sum(axis=1, keepdims=True)
    initial = np.array([0.2, 0.5, 0.3])
    filtered = forward_filter_nb(log_emission, transition, initial)

    state = initial.copy()
    for t in range(n):
        state = state @ transition
        if np.isnan(log_emission[t, 0]):
            assert np.isnan(filtered[t]).all()
            continue
        state = state * np.exp(log_emission[t])
        state /= state.sum()
        np.testing.assert_allclose(filtered[t], state, rtol=1e-10)


def test_forward_filter_two_state_hand_example():
    # Two equally likely states that always stay put, and one row twice as likely under state 1.
    transition = np.eye(2)
    log_emission = np.log(np.array([[1.0, 2.0], [1.0, 2.0]]))
    filtered = forward_filter_nb(log_emission, transition, np.array([0.5, 0.5]))
    np.testing.assert_allclose(filtered[0], [1 / 3, 2 / 3], rtol=1e-12)
    np.testing.assert_allclose(filtered[1], [1 / 5, 4 / 5], rtol=1e-12)


def test_gaussian_log_density_matches_closed_form():
    covariance = np.array([[[2.0, 0.3], [0.3, 0.5]]])
    mean = np.array([[0.1, -0.2]])
    cholesky = np.linalg.cholesky(covariance)
    log_det = 2.0 * np.log(np.diagonal(cholesky, axis1=1, axis2=2)).sum(axis=1)
    x = np.array([[0.5, 0.4], [np.nan, 0.0]])
    density = gaussian_log_density_nb(x, mean, np.linalg.inv(cholesky), log_det)
    difference = x[0] - mean[0]
    expected = -0.5 * (2 * math.log(2 * math.pi) + math.log(np.linalg.det(covariance[0]))
                       + difference @ np.linalg.inv(covariance[0]) @ difference)
    assert density[0, 0] == pytest.approx(expected, rel=1e-12)
    assert np.isnan(density[1, 0])


def test_refit_on_another_fold_uses_its_own_split(bars):
    features = _features(bars)
    early_split = START_NS + 2 * BARS_PER_WEEK * TIMEFRAME_NS
    model = fit_regime_model(features, early_split, CONFIG)
    assert model["split_ns"] == early_split
    assert model["n_train_fitted"] == 2 * BARS_PER_WEEK - FIRST_COMPLETE_ROW
    table = apply_regime_model(model, features)
    assert len(table) == N_BARS
    assert (table["regime_id"].iloc[FIRST_COMPLETE_ROW:] >= 0).all()


def test_too_few_training_rows_gives_empty_table(bars):
    # The first complete row plus 99 more is one short of min_bars = 100.
    split_ns = START_NS + (FIRST_COMPLETE_ROW + CONFIG.min_bars - 1) * TIMEFRAME_NS
    table, model = build_regimes(_features(bars), split_ns, CONFIG)
    pd.testing.assert_frame_equal(table, empty_regimes())
    assert list(table.columns) == ["timestamp", "regime_id", "regime_name", "probability"]
    assert "99 training bars" in model["insufficient_data"]
    table_enough, model_enough = build_regimes(_features(bars), split_ns + TIMEFRAME_NS, CONFIG)
    assert len(table_enough) == N_BARS
    assert "insufficient_data" not in model_enough


def test_missing_feature_column_raises(bars):
    features = _features(bars).drop(columns="rv_hour_of_week_dev_20")
    with pytest.raises(ValueError, match="rv_hour_of_week_dev_20"):
        build_regimes(features, SPLIT_NS, CONFIG)


@pytest.mark.parametrize("changes, message", [
    ({"min_regimes": 0}, "min_regimes must be at least 1"),
    ({"min_regimes": 4, "max_regimes": 3}, "max_regimes = 3 is below"),
    ({"n_init": 0}, "n_init must be at least 1"),
])
def test_bad_regime_settings_raise(changes, message, bars):
    with pytest.raises(ValueError, match=message):
        build_regimes(_features(bars), SPLIT_NS, replace(CONFIG, **changes))


def test_model_of_another_method_is_rejected(bars):
    with pytest.raises(ValueError, match="expected 'gaussian_mixture_forward_filter'"):
        apply_regime_model({"method": "kmeans"}, _features(bars))


def test_real_eurusd_ticks_give_named_regimes():
    path = DATA_DIR / "parquet" / "EURUSD_2014.parquet"
    if not path.exists():
        pytest.skip(f"real tick data not found at {path} (the shared data folder is not beside the repo)")
    from fxresearch.bars import build_bars

    ticks = pd.read_parquet(path)
    timestamp_ns = datetime_to_ns(ticks["timestamp"])
    bars = build_bars(timestamp_ns, ticks["bid"].to_numpy(), ticks["ask"].to_numpy(), TIMEFRAME_MIN)
    features = build_features(bars, TIMEFRAME_MIN, FEATURES, EURUSD)
    split_ns = int(features["timestamp"].iloc[int(len(features) * 0.7)])
    table, model = build_regimes(features, split_ns, RegimesConfig())
    assert len(table) == len(bars)
    assert "insufficient_data" not in model, model.get("insufficient_data")
    assert model["n_regimes"] >= 2
    assert len(set(model["names"])) == model["n_regimes"]
    assert all(r["train_count"] > 0 for r in model["regimes"])
    # 1-15 May 2014: the FX week from Sunday 11 May has a profile for every hour.
    third_week = table[table["timestamp"] >= int(datetime_to_ns(["2014-05-11 21:00"])[0])]
    assert (third_week["regime_id"] >= 0).mean() > 0.95
    assert third_week["probability"].between(0.0, 1.0).all()

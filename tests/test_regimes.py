"""Tests for market regimes: determinism, naming, training-only fit and causality."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fxresearch.config import FeaturesConfig, RegimesConfig
from fxresearch.features import build_features
from fxresearch.instruments import get_instrument
from fxresearch.regimes import (
    WARMUP_ID,
    WARMUP_NAME,
    build_regimes,
    empty_regimes,
    regime_feature_names,
)
from fxresearch.timeutil import NS_PER_MINUTE, datetime_to_ns

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"
EURUSD = get_instrument("EURUSD")
FEATURES = FeaturesConfig()
CONFIG = RegimesConfig()
TIMEFRAME_MIN = CONFIG.timeframe_min
TIMEFRAME_NS = TIMEFRAME_MIN * NS_PER_MINUTE
START_NS = int(datetime_to_ns(["2024-01-08 00:00"])[0])


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
    bars["spread_max"] = 1e-4
    bars["tick_count"] = 10
    bars["first_tick"] = np.arange(n_bars) * 10
    bars["last_tick"] = np.arange(n_bars) * 10 + 9
    bars["gap_before"] = False
    return bars


def _features(bars: pd.DataFrame) -> pd.DataFrame:
    return build_features(bars, TIMEFRAME_MIN, FEATURES, EURUSD)


def _changed_after(bars: pd.DataFrame, row: int, seed: int) -> pd.DataFrame:
    """Return a copy whose bars after ``row`` have scaled prices."""
    rng = np.random.default_rng(seed)
    changed = bars.copy()
    later = changed.index > row
    scale = rng.uniform(0.95, 1.05, later.sum())
    for column in [c for c in changed.columns if c.startswith(("bid_", "ask_"))]:
        changed.loc[later, column] = changed.loc[later, column].to_numpy() * scale
    return changed


N_BARS = 2_000
SPLIT_ROW = 1_400
# The bar SPLIT_ROW - 1 closes exactly at the split, so rows 0..SPLIT_ROW-1 are training rows.
SPLIT_NS = START_NS + SPLIT_ROW * TIMEFRAME_NS


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
    table, _model = fitted
    assert list(table.columns) == ["timestamp", "regime_id", "regime_name"]
    assert table["timestamp"].dtype == np.int64
    assert table["regime_id"].dtype == np.int64
    assert len(table) == N_BARS
    # rv_20 needs 21 bars, ret_12 13 and er_10 11, so rows 0-19 have no complete features.
    assert (table["regime_id"].iloc[:20] == WARMUP_ID).all()
    assert (table["regime_name"].iloc[:20] == WARMUP_NAME).all()
    assert (table["regime_id"].iloc[20:] >= 0).all()
    assert set(table["regime_id"].iloc[20:]) == set(range(CONFIG.n_regimes))


def test_ids_follow_volatility_then_trend(fitted):
    _table, model = fitted
    regimes = model["regimes"]
    assert [r["id"] for r in regimes] == list(range(CONFIG.n_regimes))
    volatility = [r["centre"]["rv_20"] for r in regimes]
    assert volatility == sorted(volatility)


def test_names_are_unique_and_follow_centres(fitted):
    table, model = fitted
    names = model["names"]
    assert len(set(names)) == len(names)
    median = model["train_median_rv_20"]
    for regime in model["regimes"]:
        centre = regime["centre"]
        if centre["trend_12"] >= CONFIG.trend_threshold:
            direction = "trend_up"
        elif centre["trend_12"] <= -CONFIG.trend_threshold:
            direction = "trend_down"
        else:
            direction = "range"
        volatility = "high_vol" if centre["rv_20"] > median else "low_vol"
        assert regime["name"].startswith(f"{direction}_{volatility}")
        in_table = table.loc[table["regime_id"] == regime["id"], "regime_name"]
        assert (in_table == regime["name"]).all()
    # Busy and quiet days in the bars give both volatility levels.
    assert any("high_vol" in name for name in names)
    assert any("low_vol" in name for name in names)


def test_counts_add_up_to_train_and_holdout_rows(fitted):
    table, model = fitted
    train = sum(r["train_count"] for r in model["regimes"]) + model["warmup"]["train_count"]
    holdout = sum(r["holdout_count"] for r in model["regimes"]) + model["warmup"]["holdout_count"]
    assert train == SPLIT_ROW
    assert holdout == N_BARS - SPLIT_ROW
    assert model["n_train_fitted"] == SPLIT_ROW - 20
    for regime in model["regimes"]:
        ids = table["regime_id"].to_numpy()
        assert regime["train_count"] == int((ids[:SPLIT_ROW] == regime["id"]).sum())
        assert regime["holdout_count"] == int((ids[SPLIT_ROW:] == regime["id"]).sum())


def test_model_describes_the_fit_and_is_json(fitted):
    _table, model = fitted
    assert model["features"] == regime_feature_names(CONFIG) == ["log_rv_20", "trend_12", "er_10"]
    assert set(model["train_mean"]) == set(model["features"])
    assert all(value > 0 for value in model["train_std"].values())
    assert model["inertia"] > 0
    assert "insufficient_data" not in model
    assert json.loads(json.dumps(model)) == model


def test_training_statistics_use_training_rows_only(bars, fitted):
    _table, model = fitted
    names = regime_feature_names(CONFIG)
    features = _features(bars).iloc[20:SPLIT_ROW]
    log_rv = np.log(features["rv_20"].to_numpy())
    trend = features["ret_12"].to_numpy() / (features["rv_20"].to_numpy() * np.sqrt(12))
    expected = {names[0]: log_rv, names[1]: trend, names[2]: features["er_10"].to_numpy()}
    for name, values in expected.items():
        assert model["train_mean"][name] == pytest.approx(values.mean(), rel=1e-12)
        assert model["train_std"][name] == pytest.approx(values.std(), rel=1e-12)


def test_changing_holdout_bars_keeps_the_fit(bars, fitted):
    table, model = fitted
    changed = _changed_after(bars, SPLIT_ROW - 1, seed=1)
    # Triple the holdout moves so the holdout looks nothing like the training part.
    for column in [c for c in changed.columns if c.startswith(("bid_", "ask_"))]:
        base = changed[column].iloc[SPLIT_ROW - 1]
        changed.loc[SPLIT_ROW:, column] = base + 3.0 * (changed.loc[SPLIT_ROW:, column] - base)
    table_changed, model_changed = build_regimes(_features(changed), SPLIT_NS, CONFIG)
    for key in ("train_mean", "train_std", "names", "inertia", "train_median_rv_20"):
        assert model_changed[key] == model[key], key
    assert ([r["centre"] for r in model_changed["regimes"]]
            == [r["centre"] for r in model["regimes"]])
    assert ([r["train_count"] for r in model_changed["regimes"]]
            == [r["train_count"] for r in model["regimes"]])
    pd.testing.assert_frame_equal(table_changed.iloc[:SPLIT_ROW], table.iloc[:SPLIT_ROW])
    assert not table_changed["regime_id"].iloc[SPLIT_ROW:].equals(table["regime_id"].iloc[SPLIT_ROW:])


@pytest.mark.parametrize("t", [SPLIT_ROW - 1, SPLIT_ROW + 10, 1_700, N_BARS - 2])
def test_changing_bars_after_t_keeps_earlier_regimes(t, bars, fitted):
    table, _model = fitted
    table_changed, _ = build_regimes(_features(_changed_after(bars, t, seed=t)), SPLIT_NS, CONFIG)
    pd.testing.assert_frame_equal(table_changed.iloc[:t + 1], table.iloc[:t + 1])


def test_too_few_training_rows_gives_empty_table(bars):
    # 20 warm-up rows plus 99 complete ones is one short of min_bars = 100.
    split_ns = START_NS + (20 + CONFIG.min_bars - 1) * TIMEFRAME_NS
    table, model = build_regimes(_features(bars), split_ns, CONFIG)
    assert len(table) == 0
    pd.testing.assert_frame_equal(table, empty_regimes())
    assert table["timestamp"].dtype == np.int64
    assert table["regime_id"].dtype == np.int64
    assert "99 training bars" in model["insufficient_data"]
    table_enough, model_enough = build_regimes(_features(bars), split_ns + TIMEFRAME_NS, CONFIG)
    assert len(table_enough) == N_BARS
    assert "insufficient_data" not in model_enough


def test_missing_feature_column_raises(bars):
    features = _features(bars).drop(columns="ret_12")
    with pytest.raises(ValueError, match="ret_12"):
        build_regimes(features, SPLIT_NS, CONFIG)


def _blob_features(seed: int) -> pd.DataFrame:
    """Four tight clusters of (rv_20, trend, er_10) with known centres, 150 rows each."""
    rng = np.random.default_rng(seed)
    blobs = [  # rv_20, trend in volatility units, er_10
        (1.0e-4, -2.0, 0.6),
        (1.5e-4, 2.0, 0.6),
        (4.0e-4, 0.0, 0.2),
        (6.0e-4, 0.1, 0.2),
    ]
    rows = []
    for rv, trend, efficiency in blobs:
        noise = rng.normal(0.0, 0.01, (150, 3))
        rv_values = rv * (1.0 + noise[:, 0])
        trend_values = trend + noise[:, 1]
        rows.append(pd.DataFrame({
            "rv_20": rv_values,
            "ret_12": trend_values * rv_values * np.sqrt(12.0),
            "er_10": efficiency + noise[:, 2],
        }))
    table = pd.concat(rows).sample(frac=1.0, random_state=seed).reset_index(drop=True)
    table.insert(0, "timestamp", START_NS + np.arange(len(table), dtype=np.int64) * TIMEFRAME_NS)
    return table


def test_clear_clusters_get_expected_ordered_names():
    features = _blob_features(seed=0)
    split_ns = START_NS + 500 * TIMEFRAME_NS
    table, model = build_regimes(features, split_ns, CONFIG)
    # The two range clusters share a base name, so the second in id order gets "_2".
    assert model["names"] == ["trend_down_low_vol", "trend_up_low_vol",
                              "range_high_vol", "range_high_vol_2"]
    centres = [r["centre"] for r in model["regimes"]]
    assert centres[0]["rv_20"] == pytest.approx(1.0e-4, rel=0.01)
    assert centres[1]["trend_12"] == pytest.approx(2.0, abs=0.01)
    assert centres[3]["rv_20"] == pytest.approx(6.0e-4, rel=0.01)
    assert centres[2]["er_10"] == pytest.approx(0.2, abs=0.01)
    expected_id = np.select(
        [features["rv_20"] < 1.2e-4, features["rv_20"] < 3e-4, features["rv_20"] < 5e-4], [0, 1, 2], 3)
    np.testing.assert_array_equal(table["regime_id"].to_numpy(), expected_id)


def test_names_do_not_depend_on_row_order():
    first, _ = build_regimes(_blob_features(seed=0), START_NS + 600 * TIMEFRAME_NS, CONFIG)
    shuffled = _blob_features(seed=0)
    shuffled = shuffled.iloc[::-1].reset_index(drop=True)
    shuffled["timestamp"] = first["timestamp"].to_numpy()
    second, model = build_regimes(shuffled, START_NS + 600 * TIMEFRAME_NS, CONFIG)
    assert model["names"] == ["trend_down_low_vol", "trend_up_low_vol",
                              "range_high_vol", "range_high_vol_2"]
    # The same rows get the same regime wherever they sit.
    np.testing.assert_array_equal(second["regime_id"].to_numpy()[::-1], first["regime_id"].to_numpy())


def test_real_eurusd_ticks_give_named_regimes():
    path = DATA_DIR / "parquet" / "EURUSD_2014.parquet"
    if not path.exists():
        pytest.skip(f"real tick data not found at {path}")
    from fxresearch.bars import build_bars

    ticks = pd.read_parquet(path)
    timestamp_ns = datetime_to_ns(ticks["timestamp"])
    bars = build_bars(timestamp_ns, ticks["bid"].to_numpy(), ticks["ask"].to_numpy(), TIMEFRAME_MIN)
    features = build_features(bars, TIMEFRAME_MIN, FEATURES, EURUSD)
    split_ns = int(features["timestamp"].iloc[int(len(features) * 0.7)])
    table, model = build_regimes(features, split_ns, CONFIG)
    assert len(table) == len(bars)
    assert len(set(model["names"])) == CONFIG.n_regimes
    assert all(r["train_count"] > 0 for r in model["regimes"])
    assert (table["regime_id"].iloc[20:] >= 0).all()

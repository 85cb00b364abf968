"""Tests for causal features: slow references, warm-up, DST-safe time features, causality."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest

from fxresearch.config import FeaturesConfig
from fxresearch.features import (
    build_features,
    empty_features,
    feature_columns,
    hour_and_week_of_bars,
    hurst_lags,
    insufficient_reason,
    join_higher_timeframe,
)
from fxresearch.instruments import get_instrument
from fxresearch.timeutil import NS_PER_MINUTE, datetime_to_ns

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"
EURUSD = get_instrument("EURUSD")
USDJPY = get_instrument("USDJPY")
CONFIG = FeaturesConfig()
START_NS = int(datetime_to_ns(["2024-01-08 00:00"])[0])


def _utc_ns(text: str) -> int:
    return int(datetime_to_ns([text])[0])


def _bars_from_ticks(timestamp_ns: np.ndarray, bid: np.ndarray, ask: np.ndarray,
                     timeframe_min: int) -> pd.DataFrame:
    """Build bars with the columns of bars.build_bars, by a pandas groupby on the floored time."""
    timeframe_ns = timeframe_min * NS_PER_MINUTE
    ticks = pd.DataFrame({"bar": timestamp_ns // timeframe_ns * timeframe_ns, "bid": bid,
                          "ask": ask, "spread": ask - bid, "row": np.arange(len(bid))})
    grouped = ticks.groupby("bar", sort=True)
    bars = pd.DataFrame({"timestamp": grouped.size().index.to_numpy(dtype=np.int64)})
    for side in ("bid", "ask"):
        bars[f"{side}_open"] = grouped[side].first().to_numpy()
        bars[f"{side}_high"] = grouped[side].max().to_numpy()
        bars[f"{side}_low"] = grouped[side].min().to_numpy()
        bars[f"{side}_close"] = grouped[side].last().to_numpy()
    bars["spread_mean"] = grouped["spread"].mean().to_numpy()
    bars["spread_max"] = grouped["spread"].max().to_numpy()
    bars["tick_count"] = grouped.size().to_numpy(dtype=np.int64)
    bars["first_tick"] = grouped["row"].min().to_numpy(dtype=np.int64)
    bars["last_tick"] = grouped["row"].max().to_numpy(dtype=np.int64)
    bars["gap_before"] = np.r_[False, np.diff(bars["timestamp"].to_numpy()) > timeframe_ns]
    return bars


def _random_bars(n_ticks: int, seed: int, timeframe_min: int = 5, days: float = 3.0,
                 start_ns: int = START_NS) -> pd.DataFrame:
    """Random-walk EURUSD-like ticks on a 0.00001 grid, aggregated into bars."""
    rng = np.random.default_rng(seed)
    span_ns = int(days * 86_400 * 1e9)
    timestamp_ns = np.sort(rng.integers(0, span_ns, n_ticks)).astype(np.int64) + start_ns
    mid = 1.1 + np.cumsum(rng.normal(0.0, 3e-5, n_ticks))
    bid = np.round(mid - 5e-6, 5)
    ask = np.round(bid + rng.integers(1, 4, n_ticks) * 1e-5, 5)
    return _bars_from_ticks(timestamp_ns, bid, ask, timeframe_min)


def _bars_from_closes(timestamp_ns: np.ndarray, close: np.ndarray, spread: float = 0.0) -> pd.DataFrame:
    """Bars whose bid open/high/low/close all equal ``close`` and whose ask is ``close + spread``."""
    bars = pd.DataFrame({"timestamp": np.asarray(timestamp_ns, dtype=np.int64)})
    for field in ("open", "high", "low", "close"):
        bars[f"bid_{field}"] = np.asarray(close, dtype=np.float64)
        bars[f"ask_{field}"] = np.asarray(close, dtype=np.float64) + spread
    bars["spread_mean"] = spread
    bars["spread_max"] = spread
    bars["tick_count"] = 1
    bars["first_tick"] = np.arange(len(bars))
    bars["last_tick"] = np.arange(len(bars))
    bars["gap_before"] = False
    return bars


# Slow references: one explicit loop per bar, straight from each feature's definition.

def _mid(bars: pd.DataFrame, field: str) -> np.ndarray:
    return (bars[f"bid_{field}"].to_numpy() + bars[f"ask_{field}"].to_numpy()) / 2.0


def _reference_features(bars: pd.DataFrame, config: FeaturesConfig, pip: float) -> dict[str, np.ndarray]:
    close, high, low = _mid(bars, "close"), _mid(bars, "high"), _mid(bars, "low")
    n = len(close)
    ref = {name: np.full(n, np.nan) for name in feature_columns(config)}

    for k in config.return_lookbacks:
        for t in range(k, n):
            ref[f"ret_{k}"][t] = math.log(close[t] / close[t - k])

    w = config.volatility_window
    one_bar = np.full(n, np.nan)
    one_bar[1:] = [math.log(close[t] / close[t - 1]) for t in range(1, n)]
    for t in range(w, n):
        ref[f"rv_{w}"][t] = np.std(one_bar[t - w + 1:t + 1], ddof=1)

    w = config.atr_window
    true_range = [high[0] - low[0]]
    for t in range(1, n):
        true_range.append(max(high[t] - low[t], abs(high[t] - close[t - 1]), abs(low[t] - close[t - 1])))
    atr = sum(true_range[:w]) / w
    ref[f"atr_{w}"][w - 1] = atr / pip
    for t in range(w, n):
        atr += (true_range[t] - atr) / w
        ref[f"atr_{w}"][t] = atr / pip

    w = config.rsi_window
    changes = [close[t] - close[t - 1] for t in range(1, n)]
    gain = sum(max(c, 0.0) for c in changes[:w]) / w
    loss = sum(max(-c, 0.0) for c in changes[:w]) / w
    for t in range(w, n):
        if t > w:
            change = changes[t - 1]
            gain += (max(change, 0.0) - gain) / w
            loss += (max(-change, 0.0) - loss) / w
        if gain + loss == 0:
            ref[f"rsi_{w}"][t] = 50.0
        elif loss == 0:
            ref[f"rsi_{w}"][t] = 100.0
        else:
            ref[f"rsi_{w}"][t] = 100.0 - 100.0 / (1.0 + gain / loss)

    for name, w in ((f"zscore_{config.zscore_window}", config.zscore_window),
                    (f"bb_pos_{config.bollinger_window}", config.bollinger_window)):
        for t in range(w - 1, n):
            window = close[t - w + 1:t + 1]
            mean, std = window.mean(), window.std(ddof=0)
            if name.startswith("zscore"):
                ref[name][t] = (close[t] - mean) / std
            else:
                upper = mean + config.bollinger_width * std
                lower = mean - config.bollinger_width * std
                ref[name][t] = (close[t] - lower) / (upper - lower)

    w = config.roc_window
    for t in range(w, n):
        ref[f"roc_{w}"][t] = 100.0 * (close[t] / close[t - w] - 1.0)

    w = config.ma_slope_window
    for t in range(w, n):
        ref[f"ma_slope_{w}"][t] = (close[t - w + 1:t + 1].mean() - close[t - w:t].mean()) / pip

    w = config.efficiency_window
    for t in range(w, n):
        path = sum(abs(close[i] - close[i - 1]) for i in range(t - w + 1, t + 1))
        ref[f"er_{w}"][t] = abs(close[t] - close[t - w]) / path

    ref.update(_reference_new_features(bars, close, ref[f"rv_{config.volatility_window}"], config))
    ref["spread_pips"] = bars["spread_mean"].to_numpy() / pip
    ref.update(_reference_time_features(bars["timestamp"].to_numpy()))
    return ref


def _reference_new_features(bars: pd.DataFrame, close: np.ndarray, rv: np.ndarray,
                            config: FeaturesConfig) -> dict[str, np.ndarray]:
    """Hurst, permutation entropy, scaled returns and the volatility deviation, one bar at a time."""
    n = len(close)
    ref = {}

    w = config.hurst_window
    lags = [q for q in (1, 2, 4, 8, 16, 32, 64, 128, 256) if q <= w // 4]
    hurst = np.full(n, np.nan)
    for t in range(w - 1, n):
        x = np.log(close[t - w + 1:t + 1])
        moments = [np.mean((x[q:] - x[:-q]) ** 2) for q in lags]
        slope = np.polyfit(np.log(lags), np.log(moments), 1)[0]
        hurst[t] = slope / 2.0
    ref[f"hurst_{w}"] = hurst

    m, w = config.entropy_order, config.entropy_window
    patterns: list[tuple[int, ...] | None] = [None] * n
    for t in range(m - 1, n):
        patterns[t] = tuple(np.argsort(close[t - m + 1:t + 1], kind="stable"))
    entropy = np.full(n, np.nan)
    for t in range(m - 1 + w - 1, n):
        _, counts = np.unique(np.array(patterns[t - w + 1:t + 1]), axis=0, return_counts=True)
        share = counts / w
        entropy[t] = -(share * np.log(share)).sum() / math.log(math.factorial(m))
    ref[f"perm_entropy_{m}_{w}"] = entropy

    for k in config.scaled_return_lookbacks:
        scaled = np.full(n, np.nan)
        for t in range(k, n):
            if rv[t] > 0:
                scaled[t] = math.log(close[t] / close[t - k]) / (rv[t] * math.sqrt(k))
        ref[f"scaled_ret_{k}"] = scaled

    deviation = np.full(n, np.nan)
    timestamps = bars["timestamp"].to_numpy()
    hour_of_week = _reference_time_features(timestamps)["hour_of_week"]
    # Week numbers count from the Sunday 17:00 New York reopen in wall-clock time.
    week = np.array([
        (datetime.fromtimestamp(int(ns) // 1_000_000_000, tz=timezone.utc)
         .astimezone(ZoneInfo("America/New_York")).replace(tzinfo=None)
         - datetime(1970, 1, 4, 17)).days // 7
        for ns in timestamps
    ])
    for t in range(n):
        earlier = (week < week[t]) & (hour_of_week == hour_of_week[t]) & np.isfinite(rv)
        earlier[t:] = False
        if earlier.any() and rv[t] > 0:
            deviation[t] = math.log(rv[t] / rv[earlier].mean())
    ref[f"rv_hour_of_week_dev_{config.volatility_window}"] = deviation
    return ref


def _reference_time_features(timestamp_ns: np.ndarray) -> dict[str, np.ndarray]:
    zones = {"session_tokyo": ("Asia/Tokyo", 9, 18), "session_london": ("Europe/London", 8, 17),
             "session_new_york": ("America/New_York", 8, 17)}
    result = {name: np.zeros(len(timestamp_ns)) for name in ["hour_of_week", *zones]}
    for i, ns in enumerate(timestamp_ns):
        utc = datetime.fromtimestamp(int(ns) // 1_000_000_000, tz=timezone.utc)
        new_york = utc.astimezone(ZoneInfo("America/New_York"))
        # isoweekday: Monday 1 ... Sunday 7, so Sunday becomes day 0 of the FX week.
        hours = (new_york.isoweekday() % 7) * 24 + new_york.hour
        result["hour_of_week"][i] = (hours - 17) % 168
        for name, (zone, first, end) in zones.items():
            local = utc.astimezone(ZoneInfo(zone))
            result[name][i] = 1.0 if first <= local.hour < end else 0.0
    return result


@pytest.fixture(scope="module")
def random_bars() -> pd.DataFrame:
    return _random_bars(60_000, seed=11)


@pytest.fixture(scope="module")
def random_features(random_bars: pd.DataFrame) -> pd.DataFrame:
    return build_features(random_bars, 5, CONFIG, EURUSD)


@pytest.fixture(scope="module")
def reference(random_bars: pd.DataFrame) -> dict[str, np.ndarray]:
    return _reference_features(random_bars, CONFIG, EURUSD.pip_size)


@pytest.mark.parametrize("column", feature_columns(CONFIG))
def test_feature_matches_slow_reference(column, random_features, reference):
    assert len(random_features) == 864
    np.testing.assert_allclose(random_features[column].to_numpy(), reference[column],
                               rtol=1e-7, atol=1e-12, equal_nan=True, err_msg=column)


def test_jpy_pip_and_custom_windows_match_reference():
    config = FeaturesConfig(return_lookbacks=(2, 5), volatility_window=7, atr_window=5,
                            rsi_window=6, zscore_window=9, bollinger_window=11,
                            bollinger_width=1.5, roc_window=4, ma_slope_window=8,
                            efficiency_window=3, min_bars=10)
    bars = _random_bars(3_000, seed=5, timeframe_min=15, days=2.0)
    for column in [c for c in bars.columns if c.startswith(("bid_", "ask_"))]:
        bars[column] = bars[column] * 100.0
    bars["spread_mean"] = bars["spread_mean"] * 100.0
    features = build_features(bars, 15, config, USDJPY)
    expected = _reference_features(bars, config, USDJPY.pip_size)
    assert list(features.columns) == ["timestamp", *feature_columns(config)]
    for column in feature_columns(config):
        np.testing.assert_allclose(features[column].to_numpy(), expected[column], rtol=1e-7,
                                   atol=1e-12, equal_nan=True, err_msg=column)


def test_rsi_hand_worked_example():
    # Changes +1, -1, +2, +1, -1 with a 3-bar window:
    # row 3: gain 3/3 = 1, loss 1/3 -> 100 * 1 / (1 + 1/3) = 75
    # row 4: gain 1 + (1 - 1)/3 = 1, loss 1/3 + (0 - 1/3)/3 = 2/9 -> 100 * 9/11
    # row 5: gain 1 + (0 - 1)/3 = 2/3, loss 2/9 + (1 - 2/9)/3 = 13/27 -> 1800/31
    closes = np.array([10.0, 11.0, 10.0, 12.0, 13.0, 12.0])
    bars = _bars_from_closes(START_NS + np.arange(6) * 5 * NS_PER_MINUTE, closes)
    config = FeaturesConfig(rsi_window=3, min_bars=1)
    rsi = build_features(bars, 5, config, EURUSD)["rsi_3"].to_numpy()
    assert np.isnan(rsi[:3]).all()
    assert rsi[3] == pytest.approx(75.0)
    assert rsi[4] == pytest.approx(900.0 / 11.0)
    assert rsi[5] == pytest.approx(1800.0 / 31.0)


def test_atr_uses_gap_to_previous_close():
    # Bar 1 gaps up from close 1.1000 to a 1.1010-1.1012 range: true range 12 pips, not 2.
    timestamp_ns = START_NS + np.arange(3) * 5 * NS_PER_MINUTE
    bars = _bars_from_closes(timestamp_ns, np.array([1.1000, 1.1012, 1.1012]))
    bars.loc[:, ["bid_high", "ask_high"]] = [[1.1004, 1.1004], [1.1012, 1.1012], [1.1014, 1.1014]]
    bars.loc[:, ["bid_low", "ask_low"]] = [[1.0998, 1.0998], [1.1010, 1.1010], [1.1012, 1.1012]]
    config = FeaturesConfig(atr_window=2, min_bars=1)
    atr = build_features(bars, 5, config, EURUSD)["atr_2"].to_numpy()
    assert np.isnan(atr[0])
    assert atr[1] == pytest.approx((6.0 + 12.0) / 2.0)
    assert atr[2] == pytest.approx(9.0 + (2.0 - 9.0) / 2.0)


def test_flat_window_gives_neutral_values():
    timestamp_ns = START_NS + np.arange(40) * 5 * NS_PER_MINUTE
    bars = _bars_from_closes(timestamp_ns, np.full(40, 1.2345), spread=0.0001)
    features = build_features(bars, 5, FeaturesConfig(min_bars=1), EURUSD)
    last = features.iloc[-1]
    assert last["zscore_20"] == 0.0
    assert last["bb_pos_20"] == 0.5
    assert last["er_10"] == 0.0
    assert last["rsi_14"] == 50.0
    assert last["rv_20"] == 0.0
    assert last["ma_slope_20"] == 0.0
    assert last["spread_pips"] == pytest.approx(1.0)


@pytest.mark.parametrize("column, first_valid", [
    ("ret_1", 1), ("ret_3", 3), ("ret_6", 6), ("ret_12", 12), ("ret_24", 24), ("rv_20", 20),
    ("atr_14", 13), ("rsi_14", 14), ("zscore_20", 19), ("bb_pos_20", 19), ("roc_10", 10),
    ("ma_slope_20", 20), ("er_10", 10), ("spread_pips", 0), ("hour_of_week", 0),
    ("session_london", 0),
])
def test_warmup_rows_are_nan(column, first_valid, random_features):
    values = random_features[column].to_numpy()
    assert np.isnan(values[:first_valid]).all()
    assert np.isfinite(values[first_valid:]).all()


def test_output_schema_and_dtypes(random_features):
    assert list(random_features.columns) == ["timestamp", *feature_columns(CONFIG)]
    assert random_features["timestamp"].dtype == np.int64
    for column in feature_columns(CONFIG):
        assert random_features[column].dtype == np.float64, column


def test_datetime_timestamps_give_same_features(random_bars, random_features):
    bars = random_bars.copy()
    bars["timestamp"] = pd.to_datetime(bars["timestamp"], utc=True)
    features = build_features(bars, 5, CONFIG, EURUSD)
    pd.testing.assert_frame_equal(features, random_features)


def test_fewer_bars_than_min_bars_gives_empty_table(random_bars):
    bars = random_bars.iloc[:CONFIG.min_bars - 1]
    features = build_features(bars, 5, CONFIG, EURUSD)
    assert len(features) == 0
    pd.testing.assert_frame_equal(features, empty_features(CONFIG))
    assert features["timestamp"].dtype == np.int64
    assert (features.dtypes.iloc[1:] == np.float64).all()
    assert insufficient_reason(CONFIG.min_bars - 1, CONFIG) is not None
    assert "min_bars" in insufficient_reason(CONFIG.min_bars - 1, CONFIG)
    assert insufficient_reason(CONFIG.min_bars, CONFIG) is None


def test_bad_input_raises_with_column_name(random_bars):
    with pytest.raises(ValueError, match="spread_mean"):
        build_features(random_bars.drop(columns="spread_mean"), 5, CONFIG, EURUSD)
    broken = random_bars.copy()
    broken.loc[7, "ask_low"] = np.nan
    with pytest.raises(ValueError, match="ask_low.*row 7"):
        build_features(broken, 5, CONFIG, EURUSD)
    unsorted = random_bars.iloc[::-1].reset_index(drop=True)
    with pytest.raises(ValueError, match="strictly increasing"):
        build_features(unsorted, 5, CONFIG, EURUSD)
    with pytest.raises(ValueError, match="volatility_window"):
        build_features(random_bars, 5, FeaturesConfig(volatility_window=1), EURUSD)


# Time features across daylight saving. Sessions are fixed in local time, so in UTC the
# London session is 08:00-17:00 in January (GMT) and 07:00-16:00 in July (BST).

@pytest.mark.parametrize("utc, column, expected", [
    ("2024-01-15 07:30", "session_london", 0.0),
    ("2024-07-15 07:30", "session_london", 1.0),
    ("2024-01-15 16:30", "session_london", 1.0),
    ("2024-07-15 16:30", "session_london", 0.0),
    ("2024-01-15 12:30", "session_new_york", 0.0),
    ("2024-07-15 12:30", "session_new_york", 1.0),
    ("2024-01-15 21:30", "session_new_york", 1.0),
    ("2024-07-15 21:30", "session_new_york", 0.0),
    # Between the US (10 March) and UK (31 March) changes New York is on EDT, London on GMT.
    ("2024-03-20 12:30", "session_new_york", 1.0),
    ("2024-03-20 07:30", "session_london", 0.0),
    ("2024-04-03 07:30", "session_london", 1.0),
    # Tokyo has no daylight saving: 09:00-18:00 JST is 00:00-09:00 UTC all year.
    ("2024-01-15 00:00", "session_tokyo", 1.0),
    ("2024-07-15 00:00", "session_tokyo", 1.0),
    ("2024-07-14 23:30", "session_tokyo", 0.0),
    ("2024-07-15 09:00", "session_tokyo", 0.0),
    # The FX week starts Sunday 17:00 New York: 22:00 UTC in winter, 21:00 UTC in summer.
    ("2024-01-14 22:00", "hour_of_week", 0.0),
    ("2024-07-14 21:00", "hour_of_week", 0.0),
    ("2024-01-14 21:30", "hour_of_week", 167.0),
    ("2024-01-15 12:30", "hour_of_week", 14.0),
    ("2024-07-15 12:30", "hour_of_week", 15.0),
    ("2024-01-19 21:30", "hour_of_week", 119.0),
    ("2024-07-19 20:30", "hour_of_week", 119.0),
])
def test_time_features_on_specific_timestamps(utc, column, expected):
    timestamp_ns = np.array([_utc_ns(utc)])
    bars = _bars_from_closes(timestamp_ns, np.array([1.1]))
    features = build_features(bars, 5, FeaturesConfig(min_bars=1), EURUSD)
    assert features[column].iloc[0] == expected


def test_time_features_match_zoneinfo_across_dst_changes():
    # Hourly bars from 1 March to 8 April 2024 span the US and UK spring changes.
    start, end = _utc_ns("2024-03-01"), _utc_ns("2024-04-08")
    timestamp_ns = np.arange(start, end, 60 * NS_PER_MINUTE, dtype=np.int64)
    bars = _bars_from_closes(timestamp_ns, np.full(len(timestamp_ns), 1.1))
    features = build_features(bars, 60, FeaturesConfig(min_bars=1), EURUSD)
    expected = _reference_time_features(timestamp_ns)
    for column, values in expected.items():
        np.testing.assert_array_equal(features[column].to_numpy(), values, err_msg=column)
    london_hours_utc = {
        day: sorted(int(h) for h in features.loc[
            (features["session_london"] == 1.0)
            & (pd.to_datetime(features["timestamp"], utc=True).dt.strftime("%m-%d") == day),
            "timestamp"].map(lambda ns: (ns // (60 * NS_PER_MINUTE)) % 24))
        for day in ("03-28", "04-02")
    }
    assert london_hours_utc["03-28"] == list(range(8, 17))
    assert london_hours_utc["04-02"] == list(range(7, 16))


# Causality: a value on bar t may use bars up to t only.

@pytest.mark.parametrize("t", [0, 13, 24, 150, 500, 862])
def test_changing_later_bars_changes_no_earlier_feature(t, random_bars, random_features):
    rng = np.random.default_rng(t)
    changed = random_bars.copy()
    later = changed.index > t
    scale = rng.uniform(0.9, 1.1, later.sum())
    for column in [c for c in changed.columns if c.startswith(("bid_", "ask_"))]:
        changed.loc[later, column] = changed.loc[later, column].to_numpy() * scale
    changed.loc[later, "spread_mean"] = rng.uniform(0.0, 0.001, later.sum())
    features = build_features(changed, 5, CONFIG, EURUSD)
    for column in feature_columns(CONFIG):
        np.testing.assert_array_equal(features[column].to_numpy()[:t + 1],
                                      random_features[column].to_numpy()[:t + 1], err_msg=column)
    if t + 1 < len(random_bars):
        moved = features["ret_1"].to_numpy()[t + 1] != random_features["ret_1"].to_numpy()[t + 1]
        assert moved


@pytest.mark.parametrize("t", [CONFIG.min_bars, 300])
def test_truncated_bars_give_same_features(t, random_bars, random_features):
    features = build_features(random_bars.iloc[:t + 1], 5, CONFIG, EURUSD)
    pd.testing.assert_frame_equal(features, random_features.iloc[:t + 1])


# Higher-timeframe join.

def _feature_table(open_ns: list[int], values: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"timestamp": np.array(open_ns, dtype=np.int64),
                         "x": np.array(values, dtype=np.float64)})


def test_join_uses_only_closed_higher_bars():
    minute = NS_PER_MINUTE
    # M15 bars open 00:00, 00:15, 00:30 and 01:00 (00:45 has no ticks).
    higher = _feature_table([START_NS + m * minute for m in (0, 15, 30, 60)], [0.0, 1.0, 2.0, 3.0])
    lower = _feature_table([START_NS + m * minute for m in range(0, 80, 5)], list(range(16)))
    joined = join_higher_timeframe(lower, 5, higher, 15, prefix="m15_")
    # Lower close (open + 5) -> last higher bar with close (open + 15) at or before it.
    expected = [np.nan, np.nan,   # closes 00:05, 00:10: no higher bar has closed yet
                0.0, 0.0, 0.0,    # closes 00:15-00:25: the 00:00 bar closed at 00:15
                1.0, 1.0, 1.0,    # closes 00:30-00:40
                2.0, 2.0, 2.0,    # closes 00:45-00:55
                2.0, 2.0, 2.0,    # closes 01:00-01:10: the 00:45 bar is missing
                3.0, 3.0]         # closes 01:15, 01:20
    np.testing.assert_array_equal(joined["m15_x"].to_numpy(), expected)
    np.testing.assert_array_equal(joined["x"].to_numpy(), np.arange(16.0))
    assert list(joined.columns) == ["timestamp", "x", "m15_x"]


def test_join_never_reads_bar_in_progress():
    minute = NS_PER_MINUTE
    higher = _feature_table([START_NS + m * minute for m in (0, 60)], [1.0, 2.0])
    # M5 bars 00:00-01:50 close by 01:55, before the 01:00 H1 bar closes at 02:00.
    lower = _feature_table([START_NS + m * minute for m in range(0, 115, 5)], [0.0] * 23)
    joined = join_higher_timeframe(lower, 5, higher, 60, prefix="h1_")
    changed = higher.copy()
    changed.loc[1, "x"] = 99.0
    joined_changed = join_higher_timeframe(lower, 5, changed, 60, prefix="h1_")
    np.testing.assert_array_equal(joined["h1_x"].to_numpy(), joined_changed["h1_x"].to_numpy())
    # The 00:55 M5 bar closes at 01:00 exactly when the 00:00 H1 bar closes: it may use it.
    assert joined["h1_x"].iloc[11] == 1.0
    assert np.isnan(joined["h1_x"].iloc[10])


def test_join_real_feature_tables_is_causal(random_bars, random_features):
    higher_bars = _random_bars(60_000, seed=11, timeframe_min=60)
    higher = build_features(higher_bars, 60, CONFIG, EURUSD)
    joined = join_higher_timeframe(random_features, 5, higher, 60, prefix="h1_")
    lower_close = random_features["timestamp"].to_numpy() + 5 * NS_PER_MINUTE
    higher_close = higher["timestamp"].to_numpy() + 60 * NS_PER_MINUTE
    for i in range(0, len(joined), 37):
        closed = np.flatnonzero(higher_close <= lower_close[i])
        expected = higher["rsi_14"].iloc[closed[-1]] if len(closed) else np.nan
        np.testing.assert_equal(joined["h1_rsi_14"].iloc[i], expected)
    assert len(joined) == len(random_features)


def test_join_rejects_clashing_prefix():
    table = _feature_table([START_NS], [1.0])
    table["m15_x"] = 0.0
    with pytest.raises(ValueError, match="prefix"):
        join_higher_timeframe(table, 5, _feature_table([START_NS], [1.0]), 15, prefix="m15_")


def test_real_eurusd_ticks_give_bounded_features():
    path = DATA_DIR / "parquet" / "EURUSD_2014.parquet"
    if not path.exists():
        pytest.skip(f"real tick data not found at {path}")
    ticks = pd.read_parquet(path)
    timestamp_ns = datetime_to_ns(ticks["timestamp"])
    bars = _bars_from_ticks(timestamp_ns, ticks["bid"].to_numpy(), ticks["ask"].to_numpy(), 5)
    features = build_features(bars, 5, CONFIG, EURUSD)
    assert len(features) == len(bars)
    valid = features.iloc[30:]
    # The Hurst and entropy windows are 100 bars, and the volatility deviation needs one earlier week.
    first_set = [c for c in feature_columns(CONFIG)
                 if not c.startswith(("hurst_", "perm_entropy_", "rv_hour_of_week_dev_"))]
    assert valid[first_set].notna().all().all()
    assert features["hurst_100"].iloc[99:].notna().all()
    assert features["perm_entropy_3_100"].iloc[101:].notna().all()
    assert features["hurst_100"].iloc[99:].between(0.0, 1.2).all()
    assert features["perm_entropy_3_100"].iloc[101:].between(0.0, 1.0).all()
    # The file starts on Thursday 1 May. FX weeks start on Sundays 4 and 11 May at 21:00 UTC.
    deviation = features["rv_hour_of_week_dev_20"]
    first_week = features["timestamp"] < _utc_ns("2014-05-04 21:00")
    third_week = features["timestamp"] >= _utc_ns("2014-05-11 21:00")
    assert deviation[first_week].isna().all()
    assert deviation[third_week].notna().mean() > 0.95
    assert abs(deviation[third_week].median()) < 0.5
    assert valid["rsi_14"].between(0, 100).all()
    assert valid["er_10"].between(0, 1).all()
    assert valid["hour_of_week"].between(0, 119).all()
    # OANDA EURUSD spreads in May 2014 were a fraction of a pip to a few pips.
    assert 0.1 < valid["spread_pips"].median() < 5.0
    assert 0.5 < valid["atr_14"].median() < 10.0


def _hourly_bars(n_bars: int, log_returns: np.ndarray) -> pd.DataFrame:
    """H1 bars from Sunday 2024-01-07 22:00 UTC (17:00 New York) whose mid closes follow ``log_returns``."""
    start_ns = _utc_ns("2024-01-07 22:00")
    timestamp_ns = start_ns + np.arange(n_bars, dtype=np.int64) * 60 * NS_PER_MINUTE
    return _bars_from_closes(timestamp_ns, 1.1 * np.exp(np.cumsum(log_returns)))


def test_hurst_lags_are_powers_of_two():
    assert hurst_lags(100).tolist() == [1, 2, 4, 8, 16]
    assert hurst_lags(8).tolist() == [1, 2]
    assert hurst_lags(64).tolist() == [1, 2, 4, 8, 16]


def test_hurst_of_random_walk_is_one_half():
    rng = np.random.default_rng(5)
    bars = _hourly_bars(20_000, rng.normal(0.0, 1e-4, 20_000))
    hurst = build_features(bars, 60, CONFIG, EURUSD)["hurst_100"].to_numpy()[99:]
    assert abs(np.mean(hurst) - 0.5) < 0.03
    assert 0.05 < np.std(hurst) < 0.2


def test_hurst_of_persistent_moves_is_above_one_half():
    rng = np.random.default_rng(6)
    # AR(1) returns with coefficient 0.6: each move tends to follow the previous one.
    shocks = rng.normal(0.0, 1e-4, 20_000)
    returns = np.empty_like(shocks)
    returns[0] = shocks[0]
    for i in range(1, len(shocks)):
        returns[i] = 0.6 * returns[i - 1] + shocks[i]
    hurst = build_features(_hourly_bars(20_000, returns), 60, CONFIG, EURUSD)["hurst_100"].to_numpy()[99:]
    assert np.mean(hurst) > 0.65
    # A steady drift is the extreme trend: the q-bar change grows as q, so H is 1.
    drift = build_features(_hourly_bars(500, np.full(500, 1e-4)), 60, CONFIG, EURUSD)["hurst_100"]
    np.testing.assert_allclose(drift.to_numpy()[99:], 1.0, atol=1e-6)


def test_hurst_of_reverting_moves_is_below_one_half():
    rng = np.random.default_rng(7)
    # Each return partly undoes the previous one.
    shocks = rng.normal(0.0, 1e-4, 20_000)
    returns = shocks - 0.6 * np.r_[0.0, shocks[:-1]]
    hurst = build_features(_hourly_bars(20_000, returns), 60, CONFIG, EURUSD)["hurst_100"].to_numpy()[99:]
    assert np.mean(hurst) < 0.4


def test_permutation_entropy_of_noise_is_near_one():
    rng = np.random.default_rng(8)
    config = replace(CONFIG, entropy_window=2_000)
    # Closes that are themselves independent draws make all six order-3 patterns equally likely.
    noise = rng.normal(0.0, 1e-3, 10_000)
    features = build_features(_hourly_bars(10_000, np.diff(noise, prepend=0.0)), 60, config, EURUSD)
    values = features["perm_entropy_3_2000"].to_numpy()
    assert np.isnan(values[:2_001]).all()
    assert values[2_001:].min() > 0.99
    assert values[2_001:].max() <= 1.0


def test_permutation_entropy_of_random_walk():
    # A random walk's two monotone patterns have probability 1/4 each and the other four 1/8.
    expected = (2 * 0.25 * math.log(4) + 4 * 0.125 * math.log(8)) / math.log(6)
    rng = np.random.default_rng(14)
    config = replace(CONFIG, entropy_window=5_000)
    features = build_features(_hourly_bars(20_000, rng.normal(0.0, 1e-4, 20_000)), 60, config, EURUSD)
    values = features["perm_entropy_3_5000"].to_numpy()[5_001:]
    assert abs(values.mean() - expected) < 0.005


def test_permutation_entropy_of_monotone_series_is_zero():
    for step in (1e-4, -1e-4):
        features = build_features(_hourly_bars(400, np.full(400, step)), 60, CONFIG, EURUSD)
        values = features["perm_entropy_3_100"].to_numpy()
        assert np.isnan(values[:101]).all()
        assert (values[101:] == 0.0).all()


def test_permutation_entropy_of_two_alternating_patterns():
    # Up, up, down repeats, so order-3 windows see three patterns equally often: entropy log 3 / log 6.
    returns = np.tile([1e-4, 1e-4, -1.5e-4], 200)
    config = replace(CONFIG, entropy_window=99)
    values = build_features(_hourly_bars(600, returns), 60, config, EURUSD)["perm_entropy_3_99"].to_numpy()
    np.testing.assert_allclose(values[100:], math.log(3) / math.log(6), rtol=1e-12)


def test_scaled_return_is_return_over_volatility():
    rng = np.random.default_rng(9)
    features = build_features(_hourly_bars(300, rng.normal(0.0, 1e-4, 300)), 60, CONFIG, EURUSD)
    expected = features["ret_12"] / (features["rv_20"] * math.sqrt(12))
    np.testing.assert_allclose(features["scaled_ret_12"], expected, rtol=1e-12)
    # Under a random walk the scaled return has roughly unit spread.
    assert 0.6 < features["scaled_ret_1"].std() < 1.4


def test_volatility_deviation_of_constant_session_profile_is_zero():
    # The same volatility pattern repeats every week: quiet Asian hours, four times busier
    # London and New York hours.
    n_weeks, hours = 30, 168
    bars = _hourly_bars(n_weeks * hours, np.zeros(n_weeks * hours))
    hour_of_week, week_id = hour_and_week_of_bars(bars["timestamp"].to_numpy())
    assert hour_of_week[:3].tolist() == [0, 1, 2]
    assert week_id[hours - 1] + 1 == week_id[hours]
    session_scale = np.where((hour_of_week % 24 >= 8) & (hour_of_week % 24 < 16), 4e-4, 1e-4)
    rng = np.random.default_rng(10)
    bars = _hourly_bars(len(bars), rng.normal(0.0, 1.0, len(bars)) * session_scale)
    features = build_features(bars, 60, replace(CONFIG, volatility_window=6), EURUSD)
    deviation = features["rv_hour_of_week_dev_6"].to_numpy()
    # The first week has no earlier week, so its profile is unknown.
    assert np.isnan(deviation[:hours]).all()
    later = deviation[10 * hours:]
    assert np.isfinite(later).all()
    assert abs(np.mean(later)) < 0.15
    # Raw volatility swings fourfold across sessions, the deviation far less.
    raw = np.log(features["rv_6"].to_numpy()[10 * hours:])
    assert np.std(later) < 0.75 * np.std(raw)


def test_volatility_deviation_with_exact_weekly_profile_is_zero():
    # Absolute returns repeat exactly each week with alternating signs, so rv repeats exactly.
    hours = 168
    scale = np.where(np.arange(hours) % 24 < 12, 1e-4, 3e-4)
    returns = np.tile(scale, 4) * np.tile([1.0, -1.0], 2 * hours)
    features = build_features(_hourly_bars(4 * hours, returns), 60, CONFIG, EURUSD)
    deviation = features["rv_hour_of_week_dev_20"].to_numpy()
    np.testing.assert_allclose(deviation[2 * hours:], 0.0, atol=1e-9)
    assert np.isfinite(deviation[hours + 20:]).all()


def test_volatility_deviation_over_weeks_matches_reference():
    rng = np.random.default_rng(12)
    n = 3 * 168
    bars = _hourly_bars(n, rng.normal(0.0, 1e-4, n) * np.tile(np.linspace(0.5, 2.0, 168), 3))
    config = replace(CONFIG, hurst_window=16, entropy_window=20)
    features = build_features(bars, 60, config, EURUSD)
    reference = _reference_features(bars, config, EURUSD.pip_size)
    for column in ("rv_hour_of_week_dev_20", "hurst_16", "perm_entropy_3_20", "scaled_ret_12"):
        assert features[column].notna().sum() > 168, column
        np.testing.assert_allclose(features[column].to_numpy(), reference[column],
                                   rtol=1e-9, atol=1e-12, equal_nan=True, err_msg=column)


def test_profile_min_weeks_delays_the_deviation():
    rng = np.random.default_rng(13)
    bars = _hourly_bars(4 * 168, rng.normal(0.0, 1e-4, 4 * 168))
    config = replace(CONFIG, volatility_profile_min_weeks=2)
    deviation = build_features(bars, 60, config, EURUSD)["rv_hour_of_week_dev_20"].to_numpy()
    assert np.isnan(deviation[:2 * 168]).all()
    # Hours 0-19 of the first week have no volatility yet, so their buckets fill a week later.
    assert np.isnan(deviation[2 * 168:2 * 168 + 20]).all()
    assert np.isfinite(deviation[2 * 168 + 20:]).all()


@pytest.mark.parametrize("field, value, message", [
    ("hurst_window", 7, "hurst_window must be at least 8"),
    ("entropy_order", 8, "entropy_order must be at most 7"),
    ("entropy_order", 1, "entropy_order must be at least 2"),
    ("entropy_window", 1, "entropy_window must be at least 2"),
    ("scaled_return_lookbacks", (0,), "scaled_return_lookbacks must be whole bars"),
    ("scaled_return_lookbacks", (3, 3), "repeats a value"),
    ("volatility_profile_min_weeks", 0, "volatility_profile_min_weeks must be at least 1"),
])
def test_bad_new_feature_settings_raise(field, value, message, random_bars):
    with pytest.raises(ValueError, match=message):
        build_features(random_bars, 5, replace(CONFIG, **{field: value}), EURUSD)


def test_catalogue_lists_every_feature_column():
    from fxresearch.config import Config

    catalogue = (Path(__file__).resolve().parents[1] / "docs" / "features.md").read_text()
    rows = [line for line in catalogue.splitlines() if line.startswith("| `")]
    for column in feature_columns(Config().features):
        assert any(f"`{column}`" in row for row in rows), f"docs/features.md has no row for {column}"

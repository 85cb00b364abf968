"""Causality: changing market data after time t changes no feature or regime value at or before t.

The data are the built-in synthetic sample's EURUSD ticks (``fxresearch.sample``). Each case
rescales the prices after t by random factors and drops some of those ticks or bars, rebuilds
everything downstream and requires every value of every column on bars that closed by t to be
bit-for-bit equal.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fxresearch.bars import build_bars
from fxresearch.config import FeaturesConfig, RegimesConfig, SampleConfig
from fxresearch.features import build_features, feature_columns, join_higher_timeframe
from fxresearch.instruments import get_instrument
from fxresearch.regimes import build_regimes
from fxresearch.sample import generate_pair_ticks, sample_end_ns, sample_start_ns
from fxresearch.timeutil import NS_PER_MINUTE, datetime_to_ns

EURUSD = get_instrument("EURUSD")
FEATURES = FeaturesConfig()
REGIMES = RegimesConfig()
TIMEFRAMES_MIN = (5, 15, 60)
WEEKS = 6
# Cut times as shares of the sample's span: inside the first week (profile warm-up), mid-sample,
# late, and a few minutes before the end.
CUT_SHARES = (0.05, 0.4, 0.75, 0.999)


@pytest.fixture(scope="module")
def ticks() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    start_ns = sample_start_ns(SampleConfig.year)
    frame = generate_pair_ticks("EURUSD", start_ns, sample_end_ns(start_ns, WEEKS), seed=SampleConfig.seed,
                                ticks_per_hour=600.0)
    return datetime_to_ns(frame["timestamp"]), frame["bid"].to_numpy(), frame["ask"].to_numpy()


def _features_from_ticks(timestamp_ns: np.ndarray, bid: np.ndarray, ask: np.ndarray) -> dict[int, pd.DataFrame]:
    tables = {}
    for timeframe_min in TIMEFRAMES_MIN:
        bars = build_bars(timestamp_ns, bid, ask, timeframe_min)
        tables[timeframe_min] = build_features(bars, timeframe_min, FEATURES, EURUSD)
    return tables


@pytest.fixture(scope="module")
def features(ticks) -> dict[int, pd.DataFrame]:
    return _features_from_ticks(*ticks)


def _changed_ticks(ticks: tuple[np.ndarray, np.ndarray, np.ndarray], cut_ns: int,
                   seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ticks whose prices after ``cut_ns`` are rescaled and 30 % of which are dropped."""
    timestamp_ns, bid, ask = ticks
    rng = np.random.default_rng(seed)
    later = timestamp_ns > cut_ns
    keep = ~later | (rng.random(len(timestamp_ns)) > 0.3)
    # Each later hour gets its own factor, so volatility and trends change too.
    hour = (timestamp_ns - cut_ns) // (60 * NS_PER_MINUTE)
    factor = np.where(later, 1.0 + 0.05 * np.sin(hour * 1.7 + seed), 1.0)
    return timestamp_ns[keep], (bid * factor)[keep], (ask * factor)[keep]


def _assert_rows_equal(before: pd.DataFrame, after: pd.DataFrame, n_rows: int, columns: list[str],
                       case_name: str) -> None:
    assert n_rows > 0, case_name
    assert len(before) >= n_rows, case_name
    assert len(after) >= n_rows, case_name
    np.testing.assert_array_equal(after["timestamp"].to_numpy()[:n_rows],
                                  before["timestamp"].to_numpy()[:n_rows], err_msg=case_name)
    for column in columns:
        np.testing.assert_array_equal(after[column].to_numpy()[:n_rows], before[column].to_numpy()[:n_rows],
                                      err_msg=f"{case_name}: column {column}")


def _rows_closed_by(table: pd.DataFrame, timeframe_min: int, cut_ns: int) -> int:
    close_ns = table["timestamp"].to_numpy() + timeframe_min * NS_PER_MINUTE
    return int((close_ns <= cut_ns).sum())


def _cut_ns(ticks, share: float) -> int:
    timestamp_ns = ticks[0]
    return int(timestamp_ns[0] + share * (timestamp_ns[-1] - timestamp_ns[0]))


@pytest.mark.parametrize("share", CUT_SHARES)
def test_tick_changes_after_t_keep_every_earlier_feature(share, ticks, features):
    cut_ns = _cut_ns(ticks, share)
    changed = _features_from_ticks(*_changed_ticks(ticks, cut_ns, seed=int(share * 1000)))
    for timeframe_min in TIMEFRAMES_MIN:
        before = features[timeframe_min]
        n_rows = _rows_closed_by(before, timeframe_min, cut_ns)
        _assert_rows_equal(before, changed[timeframe_min], n_rows, feature_columns(FEATURES),
                           f"M{timeframe_min} cut at {share:.0%}")
        # The first bar still open at the cut does change, so the check above is not vacuous.
        assert not changed[timeframe_min].iloc[n_rows:].equals(before.iloc[n_rows:])


def test_every_new_feature_has_values_to_compare(features):
    table = features[5]
    for column in feature_columns(FEATURES):
        assert table[column].notna().mean() > 0.5, column


@pytest.mark.parametrize("share", CUT_SHARES)
def test_higher_timeframe_join_keeps_earlier_rows(share, ticks, features):
    cut_ns = _cut_ns(ticks, share)
    changed = _features_from_ticks(*_changed_ticks(ticks, cut_ns, seed=7))
    joined = join_higher_timeframe(features[5], 5, features[60], 60, prefix="h1_")
    joined_changed = join_higher_timeframe(changed[5], 5, changed[60], 60, prefix="h1_")
    n_rows = _rows_closed_by(joined, 5, cut_ns)
    columns = [c for c in joined.columns if c != "timestamp"]
    _assert_rows_equal(joined, joined_changed, n_rows, columns, f"M5 + H1 cut at {share:.0%}")


@pytest.mark.parametrize("share", [0.3, 0.6, 0.9])
def test_bar_changes_after_t_keep_every_earlier_feature(share, features, ticks):
    # Rescale and drop bars directly, as a data vendor's revision of later bars would.
    timestamp_ns, bid, ask = ticks
    bars = build_bars(timestamp_ns, bid, ask, 15)
    cut_row = int(len(bars) * share)
    rng = np.random.default_rng(cut_row)
    changed = bars.copy()
    later = np.arange(len(bars)) > cut_row
    factor = rng.uniform(0.9, 1.1, len(bars))
    for column in [c for c in bars.columns if c.startswith(("bid_", "ask_"))]:
        changed[column] = np.where(later, bars[column].to_numpy() * factor, bars[column].to_numpy())
    changed = changed[~later | (rng.random(len(bars)) > 0.2)].reset_index(drop=True)
    before = build_features(bars, 15, FEATURES, EURUSD)
    after = build_features(changed, 15, FEATURES, EURUSD)
    _assert_rows_equal(before, after, cut_row + 1, feature_columns(FEATURES), f"M15 bars after row {cut_row}")


@pytest.fixture(scope="module")
def regime_split(features) -> tuple[int, pd.DataFrame, dict]:
    table = features[REGIMES.timeframe_min]
    split_ns = int(table["timestamp"].iloc[int(len(table) * 0.6)])
    regimes, model = build_regimes(table, split_ns, REGIMES)
    return split_ns, regimes, model


@pytest.mark.parametrize("cut_after_split_hours", [0, 24, 200])
def test_regime_probabilities_at_or_before_t_stay(cut_after_split_hours, ticks, regime_split):
    split_ns, regimes, model = regime_split
    assert "insufficient_data" not in model, model.get("insufficient_data")
    cut_ns = split_ns + cut_after_split_hours * 60 * NS_PER_MINUTE
    changed_features = _features_from_ticks(*_changed_ticks(ticks, cut_ns, seed=cut_after_split_hours))
    changed, changed_model = build_regimes(changed_features[REGIMES.timeframe_min], split_ns, REGIMES)

    for key in ("scaler", "bic", "means", "covariances", "weights", "transition_matrix", "names"):
        assert changed_model[key] == model[key], key
    n_rows = _rows_closed_by(regimes, REGIMES.timeframe_min, cut_ns)
    _assert_rows_equal(regimes, changed, n_rows, ["regime_id", "regime_name", "probability"],
                       f"regimes cut {cut_after_split_hours} h after the split")
    assert regimes["probability"].iloc[:n_rows].notna().sum() > 100
    # Later probabilities do move, so the filter reads the changed bars.
    later = regimes["probability"].to_numpy()[n_rows:]
    later_changed = changed["probability"].to_numpy()[n_rows:len(regimes)]
    assert not np.array_equal(later[:len(later_changed)], later_changed, equal_nan=True)

"""Pattern mining on synthetic features and labels with the schemas of the real stages."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest

from scipy import stats

from fxresearch import artifacts
from fxresearch.config import PatternsConfig
from fxresearch.labels import uniqueness_weights
from fxresearch.patterns import (
    apply_patterns,
    benjamini_yekutieli_q,
    benjamini_yekutieli_threshold,
    mine_patterns,
)
from fxresearch.timeutil import NS_PER_MINUTE, datetime_to_ns, ns_to_datetime

TIMEFRAME_MIN = 5
BAR_NS = TIMEFRAME_MIN * NS_PER_MINUTE
PIP_SIZE = 0.0001
START_NS = int(datetime_to_ns(["2025-01-06T00:00:00Z"])[0])
RSI_LOW = "M5:g0:long:rsi_14[0]"


def mine(features: pd.DataFrame, labels: pd.DataFrame, split_ns: int,
         config: PatternsConfig | None = None, pair_year: str | None = None) -> dict:
    """Mine one 5-minute timeframe."""
    return mine_patterns({TIMEFRAME_MIN: features}, {TIMEFRAME_MIN: labels}, split_ns, config or PatternsConfig(),
                         PIP_SIZE,
                         pair_year=pair_year)


def make_features(n_bars: int, seed: int, n_noise: int = 6) -> pd.DataFrame:
    """Return a features table: rsi-like uniform values, a session flag, a constant, noise."""
    rng = np.random.default_rng(seed)
    columns: dict[str, np.ndarray] = {
        "timestamp": START_NS + np.arange(n_bars, dtype=np.int64) * BAR_NS,
        "rsi_14": rng.uniform(0.0, 100.0, n_bars),
        "session_london": rng.integers(0, 2, n_bars).astype(np.float64),
        "spread_pips": np.full(n_bars, 0.8),
    }
    for i in range(n_noise):
        columns[f"noise_{i}"] = rng.normal(size=n_bars)
    features = pd.DataFrame(columns)
    # Warm-up rows, as the features stage leaves them.
    features.loc[:19, ["rsi_14", "noise_0"]] = np.nan
    return features


def make_labels(features: pd.DataFrame, win_long, win_short, seed: int, grid_id: int = 0,
                take_profit_pips: float = 10.0, stop_loss_pips: float = 10.0,
                horizon_minutes: float = 60.0) -> pd.DataFrame:
    """Return long-format labels: each bar and side wins take-profit with the given probability."""
    rng = np.random.default_rng(seed)
    bar_open = features["timestamp"].to_numpy(dtype=np.int64)
    n_bars = len(bar_open)
    frames = []
    for side, win_probability in ((1, win_long), (-1, win_short)):
        win = rng.random(n_bars) < np.broadcast_to(win_probability, n_bars)
        entry_time = bar_open + BAR_NS + 1_000_000_000
        exit_time = entry_time + rng.integers(1, int(horizon_minutes), n_bars) * NS_PER_MINUTE
        frames.append(pd.DataFrame({
            "timestamp": bar_open,
            "grid_id": grid_id,
            "uniqueness": uniqueness_weights(entry_time, exit_time),
            "take_profit_pips": take_profit_pips,
            "stop_loss_pips": stop_loss_pips,
            "horizon_minutes": horizon_minutes,
            "side": side,
            "entry_time": entry_time,
            "entry_price": 1.1,
            "outcome": np.where(win, "take_profit", "stop_loss"),
            "exit_time": exit_time,
            "exit_price": 1.1,
            "pips": np.where(win, take_profit_pips, -stop_loss_pips),
        }))
    return pd.concat(frames, ignore_index=True)


def split_at(features: pd.DataFrame, fraction: float = 0.7) -> int:
    return int(features["timestamp"].iloc[int(len(features) * fraction)])


def planted_rsi_case(n_bars: int = 4000, seed: int = 1) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """Long labels win 80 % (short 20 %) when rsi_14 < 20, else 50 %, in both parts."""
    features = make_features(n_bars, seed)
    rsi = features["rsi_14"].to_numpy()
    low = rsi < 20.0
    labels = make_labels(features, np.where(low, 0.8, 0.5), np.where(low, 0.2, 0.5), seed + 100)
    return features, labels, split_at(features)


def reference_stats(features: pd.DataFrame, labels: pd.DataFrame, split_ns: int, side: int,
                    part: str, feature: str | None = None, lower: float | None = None,
                    upper: float | None = None) -> dict:
    """Return support, censored count, uniqueness-weighted win rate and mean pips, and the
    one-sided t-test p-value, with plain pandas and scipy."""
    rows = labels[(labels["side"] == side) & (labels["grid_id"] == 0)]
    rows = rows.merge(features, on="timestamp", how="inner")
    if part == "train":
        rows = rows[rows["exit_time"] < split_ns]
    else:
        rows = rows[rows["timestamp"] + BAR_NS >= split_ns]
    if feature is not None:
        values = rows[feature]
        keep = values.notna()
        if lower is not None:
            keep &= values >= lower
        if upper is not None:
            keep &= values < upper
        rows = rows[keep]
    known = rows[rows["outcome"] != "censored"]
    weight = known["uniqueness"].to_numpy()
    pips = known["pips"].to_numpy()
    mean = float(np.average(pips, weights=weight)) if len(known) else math.nan
    n = len(known)
    variance = np.average((pips - mean) ** 2, weights=weight) * n / (n - 1) if n > 1 else math.nan
    standard_error = math.sqrt(variance / weight.sum()) if n > 1 else math.nan
    return {
        "support": n,
        "censored": int((rows["outcome"] == "censored").sum()),
        "weighted_support": float(weight.sum()),
        "win_rate": float(np.average(known["outcome"] == "take_profit", weights=weight)) if n else math.nan,
        "expectancy_pips": mean,
        "p_value": float(stats.t.sf(mean / standard_error, max(weight.sum() - 1.0, 1.0))) if n > 1 else math.nan,
    }


def find_nan(value, path="document"):
    """Return the path of the first float NaN or infinity in a nested document, or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return path
    if isinstance(value, dict):
        for key, item in value.items():
            found = find_nan(item, f"{path}.{key}")
            if found:
                return found
    if isinstance(value, list):
        for i, item in enumerate(value):
            found = find_nan(item, f"{path}[{i}]")
            if found:
                return found
    return None


class TestPlantedEffect:
    def test_planted_condition_found_and_holds(self):
        features, labels, split_ns = planted_rsi_case()
        document = mine(features, labels, split_ns, pair_year="EURUSD_2025")

        assert document["insufficient_data"] is None
        by_id = {p["id"]: p for p in document["patterns"]}
        assert RSI_LOW in by_id
        pattern = by_id[RSI_LOW]
        assert pattern["side"] == 1
        assert pattern["timeframe_min"] == TIMEFRAME_MIN
        assert pattern["grid_id"] == 0
        assert pattern["take_profit_pips"] == 10.0
        assert pattern["conditions"][0]["feature"] == "rsi_14"
        assert pattern["conditions"][0]["lower"] is None
        assert 18.0 < pattern["conditions"][0]["upper"] < 22.0
        assert 0.75 < pattern["train"]["win_rate"] < 0.85
        assert 0.75 < pattern["holdout"]["win_rate"] < 0.88
        assert pattern["train"]["expectancy_pips"] > 4.0
        low, high = pattern["train"]["expectancy_ci_pips"]
        assert low < pattern["train"]["expectancy_pips"] < high
        assert low > 0.0
        assert pattern["train"]["weighted_support"] < pattern["train"]["support"]
        assert pattern["train"]["q_value"] <= 0.05
        assert pattern["holds_on_holdout"] is True
        assert RSI_LOW in document["kept"]
        assert document["pair_year"] == "EURUSD_2025"

    def test_planted_condition_ranked_first(self):
        features, labels, split_ns = planted_rsi_case()
        document = mine(features, labels, split_ns)

        assert document["patterns"][0]["id"] == RSI_LOW
        p_values = [p["train"]["p_value"] for p in document["patterns"]]
        assert p_values == sorted(p_values)
        assert all(p <= document["p_value_threshold"] for p in p_values)
        assert document["significant"] >= len(document["patterns"])

    def test_planted_pair_found(self):
        features = make_features(4000, 5)
        both = (features["rsi_14"] > 80.0).to_numpy() & (features["session_london"] == 1.0).to_numpy()
        labels = make_labels(features, np.where(both, 0.85, 0.5), 0.5, 6)
        document = mine(features, labels, split_at(features))

        by_id = {p["id"]: p for p in document["patterns"]}
        pair_id = "M5:g0:long:rsi_14[4]&session_london[1]"
        assert pair_id in by_id
        pair = by_id[pair_id]
        assert len(pair["conditions"]) == 2
        assert pair["conditions"][1] == {"feature": "session_london", "bin": 1, "lower": 1.0, "upper": 1.0}
        assert pair["holds_on_holdout"] is True
        single = by_id.get("M5:g0:long:rsi_14[4]", {"train": {"win_rate": 0}})
        assert single["train"]["win_rate"] < pair["train"]["win_rate"]

    def test_figures_match_pandas_reference(self):
        features, labels, split_ns = planted_rsi_case()
        document = mine(features, labels, split_ns)
        pattern = next(p for p in document["patterns"] if p["id"] == RSI_LOW)
        upper = pattern["conditions"][0]["upper"]

        for part in ("train", "holdout"):
            expected = reference_stats(features, labels, split_ns, 1, part, "rsi_14", None, upper)
            got = pattern[part]
            assert got["support"] == expected["support"]
            assert got["weighted_support"] == pytest.approx(expected["weighted_support"])
            assert got["win_rate"] == pytest.approx(expected["win_rate"])
            assert got["expectancy_pips"] == pytest.approx(expected["expectancy_pips"])
            base = reference_stats(features, labels, split_ns, 1, part)
            base_rates = document["base_rates"]["5"]["0"]["long"][part]
            assert base_rates["support"] == base["support"]
            assert base_rates["win_rate"] == pytest.approx(base["win_rate"])
            assert got["expectancy_edge_pips"] == pytest.approx(
                expected["expectancy_pips"] - base["expectancy_pips"])
        expected = reference_stats(features, labels, split_ns, 1, "train", "rsi_14", None, upper)
        assert pattern["train"]["p_value"] == pytest.approx(expected["p_value"], rel=1e-6, abs=1e-300)

    def test_flag_categories_and_constant_skipped(self):
        features, labels, split_ns = planted_rsi_case()
        document = mine(features, labels, split_ns)

        bins = document["bins"]["5"]
        assert bins["session_london"] == {"kind": "category", "edges": [0.0, 1.0]}
        assert bins["rsi_14"]["kind"] == "quantile"
        assert len(bins["rsi_14"]["edges"]) == 6
        assert "spread_pips" not in bins
        assert document["skipped_features"]["5"]["spread_pips"] == "constant on the training rows"

    def test_every_condition_counted(self):
        features, labels, split_ns = planted_rsi_case()
        document = mine(features, labels, split_ns)

        # rsi 5 bins, session 2, six noise features of 5: 37 singles, and pairs of different features.
        n_bins = [5, 2] + [5] * 6
        singles = sum(n_bins)
        pairs = (singles ** 2 - sum(n * n for n in n_bins)) // 2
        assert document["conditions_tested"] == 2 * (singles + pairs)
        assert document["conditions_tested_by_timeframe"] == {"5": 2 * (singles + pairs)}
        assert document["significant_share"] == pytest.approx(document["significant"] / document["conditions_tested"])

        singles_only = mine(features, labels, split_ns, dataclasses.replace(PatternsConfig(), pairs=False))
        assert singles_only["conditions_tested"] == 2 * singles
        assert all(len(p["conditions"]) == 1 for p in singles_only["patterns"])


class TestFalseDiscovery:
    SEEDS = range(10)

    def mine_noise(self, config: PatternsConfig) -> list[dict]:
        documents = []
        for seed in self.SEEDS:
            features = make_features(3000, seed, n_noise=10)
            # Exits within one bar, so the labels do not overlap and the effective count is exact.
            labels = make_labels(features, 0.5, 0.5, seed + 1000, horizon_minutes=5.0)
            documents.append(mine(features, labels, split_at(features), config))
        return documents

    def test_noise_keeps_almost_nothing(self):
        # With no effect at all, Benjamini-Yekutieli bounds the chance of any discovery per run
        # by the rate, 0.05, so 10 runs should find about 0.5 patterns. The bound of 3 allows
        # for an unlucky draw.
        documents = self.mine_noise(PatternsConfig())

        assert sum(d["significant"] for d in documents) <= 3
        assert sum(len(d["kept"]) for d in documents) <= 3
        # Without the correction about 5 % of the conditions pass, so the check bites.
        raw = sum(d["raw_significant"] for d in documents)
        tested = sum(d["conditions_tested"] for d in documents)
        assert raw > 300
        assert raw / tested < 0.08
        assert all(d["conditions_tested"] > 3000 for d in documents)

    def test_benjamini_yekutieli_matches_brute_force(self):
        rng = np.random.default_rng(4)
        p_values = np.concatenate([rng.uniform(size=200), rng.uniform(0, 1e-4, size=15)])
        m = len(p_values)
        harmonic = sum(1.0 / i for i in range(1, m + 1))
        ordered = np.sort(p_values)
        rejected = [k for k in range(1, m + 1) if ordered[k - 1] <= k * 0.05 / (m * harmonic)]

        threshold = benjamini_yekutieli_threshold(p_values, 0.05)

        assert threshold == ordered[max(rejected) - 1]
        q_values = benjamini_yekutieli_q(p_values, p_values)
        assert ((q_values <= 0.05) == (p_values <= threshold)).all()
        assert benjamini_yekutieli_threshold(np.array([0.5, 0.9]), 0.05) is None


class TestSplit:
    def test_bins_fitted_on_training_only(self):
        features, labels, split_ns = planted_rsi_case()
        before = mine(features, labels, split_ns)

        changed = features.copy()
        holdout_bar = (changed["timestamp"] + BAR_NS >= split_ns).to_numpy()
        for name in ("rsi_14", "noise_1", "noise_2"):
            changed.loc[holdout_bar, name] = changed.loc[holdout_bar, name] * 50.0 + 1000.0
        after = mine(changed, labels, split_ns)

        assert after["bins"] == before["bins"]
        assert [p["id"] for p in after["patterns"]] == [p["id"] for p in before["patterns"]]
        assert [p["train"] for p in after["patterns"]] == [p["train"] for p in before["patterns"]]
        # The holdout figures do move, so the changed values were read.
        rsi_after = next(p for p in after["patterns"] if p["id"] == RSI_LOW)
        assert rsi_after["holdout"]["support"] == 0
        assert rsi_after["holds_on_holdout"] is False

    def test_purge_rule_and_boundaries(self):
        features = make_features(1000, 11)
        labels = make_labels(features, 0.5, 0.5, 12)
        split_ns = split_at(features)
        bar_close = labels["timestamp"].to_numpy() + BAR_NS

        # An exit exactly at the split is not known before it, and a bar closing exactly at the
        # split is holdout.
        at_split_exit = np.flatnonzero(bar_close < split_ns)[-3]
        labels.loc[at_split_exit, "exit_time"] = split_ns
        labels.loc[labels["timestamp"] + BAR_NS == split_ns, "exit_time"] = split_ns + 30 * NS_PER_MINUTE
        exit_time = labels["exit_time"].to_numpy()

        is_train = exit_time < split_ns
        is_holdout = bar_close >= split_ns
        is_purged = ~is_train & ~is_holdout
        assert is_purged[at_split_exit]
        assert is_holdout[np.flatnonzero(bar_close == split_ns)].all()
        # Purged rows all win 1000 pips, so any leak into either part shows in the expectancy.
        labels.loc[is_purged, "outcome"] = "take_profit"
        labels.loc[is_purged, "pips"] = 1000.0

        document = mine(features, labels, split_ns, dataclasses.replace(PatternsConfig(), min_bars=100))

        counts = document["row_counts"]["5"]
        assert counts["train"] == int(is_train.sum())
        assert counts["holdout"] == int(is_holdout.sum())
        assert counts["purged"] == int(is_purged.sum())
        assert counts["purged"] >= 2
        assert counts["train"] + counts["holdout"] + counts["purged"] == len(labels)
        for side_name, side in (("long", 1), ("short", -1)):
            for part, mask in (("train", is_train), ("holdout", is_holdout)):
                stats_ = document["base_rates"]["5"]["0"][side_name][part]
                assert stats_["support"] == int((mask & (labels["side"].to_numpy() == side)).sum())
                assert abs(stats_["expectancy_pips"]) <= 10.0

    def test_censored_excluded_but_counted(self):
        features, labels, split_ns = planted_rsi_case(n_bars=3000, seed=21)
        rng = np.random.default_rng(22)
        censored = rng.random(len(labels)) < 0.1
        labels.loc[censored, "outcome"] = "censored"
        labels.loc[censored, "pips"] = np.nan
        # Censored rows keep their exit times, so the train part, the holdout and the purge
        # each get some.
        document = mine(features, labels, split_ns)

        for side_name, side in (("long", 1), ("short", -1)):
            for part in ("train", "holdout"):
                expected = reference_stats(features, labels, split_ns, side, part)
                got = document["base_rates"]["5"]["0"][side_name][part]
                assert got["support"] == expected["support"]
                assert got["censored"] == expected["censored"]
                assert got["censored"] > 0
                assert got["win_rate"] == pytest.approx(expected["win_rate"])
                assert got["expectancy_pips"] == pytest.approx(expected["expectancy_pips"])
        pattern = next(p for p in document["patterns"] if p["id"] == RSI_LOW)
        expected = reference_stats(features, labels, split_ns, 1, "train", "rsi_14", None,
                                   pattern["conditions"][0]["upper"])
        assert pattern["train"]["censored"] == expected["censored"]
        assert pattern["train"]["support"] == expected["support"]
        assert find_nan(document) is None

    def test_censored_without_exit_time_purged(self):
        features = make_features(1000, 31)
        labels = make_labels(features, 0.5, 0.5, 32)
        split_ns = split_at(features)
        labels["exit_time"] = ns_to_datetime(labels["exit_time"].to_numpy())
        labels["entry_time"] = ns_to_datetime(labels["entry_time"].to_numpy())
        labels["timestamp"] = ns_to_datetime(labels["timestamp"].to_numpy())
        config = dataclasses.replace(PatternsConfig(), min_bars=100)
        before = mine(features, labels, split_ns, config)
        early = np.flatnonzero((labels["side"] == 1).to_numpy())[100:110]
        labels.loc[early, "outcome"] = "censored"
        labels.loc[early, "pips"] = np.nan
        labels.loc[early, "exit_time"] = pd.NaT

        document = mine(features, labels, split_ns, config)

        assert document["row_counts"]["5"]["purged"] == before["row_counts"]["5"]["purged"] + 10
        assert document["row_counts"]["5"]["train"] == before["row_counts"]["5"]["train"] - 10
        long_train = document["base_rates"]["5"]["0"]["long"]["train"]
        assert long_train["support"] == before["base_rates"]["5"]["0"]["long"]["train"]["support"] - 10
        assert long_train["censored"] == 0

    @pytest.mark.parametrize("missing", ["nat_ns", "nullable_int", "float_nan"])
    def test_missing_exit_time_forms_purged(self, missing):
        # The labels stage writes int64 min (NaT) as the exit time of a trade that never
        # entered, and a parquet round trip may give nullable integers or floats instead.
        features = make_features(1000, 33)
        labels = make_labels(features, 0.5, 0.5, 34)
        split_ns = split_at(features)
        config = dataclasses.replace(PatternsConfig(), min_bars=100)
        before = mine(features, labels, split_ns, config)
        early = np.flatnonzero((labels["side"] == -1).to_numpy())[200:207]
        labels.loc[early, "outcome"] = "censored"
        labels.loc[early, "pips"] = np.nan
        exit_time = labels["exit_time"].to_numpy().copy()
        exit_time[early] = np.iinfo(np.int64).min
        if missing == "nat_ns":
            labels["exit_time"] = exit_time
        elif missing == "nullable_int":
            labels["exit_time"] = pd.array(np.where(exit_time == exit_time.min(), 0, exit_time), dtype="Int64")
            labels.loc[early, "exit_time"] = pd.NA
        else:
            labels["exit_time"] = np.where(exit_time == exit_time.min(), np.nan, exit_time.astype(np.float64))

        document = mine(features, labels, split_ns, config)

        short_train = document["base_rates"]["5"]["0"]["short"]["train"]
        assert document["row_counts"]["5"]["purged"] == before["row_counts"]["5"]["purged"] + 7
        assert short_train["censored"] == 0
        assert short_train["support"] == before["base_rates"]["5"]["0"]["short"]["train"]["support"] - 7


class TestApplyPatterns:
    DOCUMENT = {
        "timeframe_min": 5,
        "bins": {"5": {
            "a": {"kind": "quantile", "edges": [0.0, 1.0, 2.0, 3.0]},
            "flag": {"kind": "category", "edges": [0.0, 1.0]},
        }},
        "patterns": [
            {"id": "M5:g0:long:a[0]", "side": 1, "timeframe_min": 5,
             "conditions": [{"feature": "a", "bin": 0, "lower": None, "upper": 1.0}]},
            {"id": "M5:g0:short:flag[1]", "side": -1, "timeframe_min": 5,
             "conditions": [{"feature": "flag", "bin": 1, "lower": 1.0, "upper": 1.0}]},
            {"id": "M5:g1:long:a[2]&flag[0]", "side": 1, "timeframe_min": 5,
             "conditions": [{"feature": "a", "bin": 2, "lower": 2.0, "upper": None},
                            {"feature": "flag", "bin": 0, "lower": 0.0, "upper": 0.0}]},
            {"id": "M15:g0:short:b[0]", "side": -1, "timeframe_min": 15,
             "conditions": [{"feature": "b", "bin": 0, "lower": None, "upper": 1.0}]},
        ],
        "kept": ["M5:g0:long:a[0]"],
    }
    FEATURES = pd.DataFrame({
        "timestamp": START_NS + np.arange(9, dtype=np.int64) * BAR_NS,
        "a": [0.5, 0.5, 1.5, 2.5, 2.5, np.nan, -5.0, 10.0, 1.0],
        "flag": [0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.5],
    })

    def test_train_selected_signals(self):
        signal = apply_patterns(self.FEATURES, self.DOCUMENT)

        assert signal.dtype == np.int8
        # Bar 1 has a long and a short pattern firing, so it stays flat; bar 8 has a = 1.0 in
        # bin 1 and a flag value that is no category. The M15 pattern is not read.
        assert signal.tolist() == [1, 0, 0, 1, -1, 0, 1, -1, 0]

    def test_kept_signals(self):
        signal = apply_patterns(self.FEATURES, self.DOCUMENT, use="kept")

        assert signal.tolist() == [1, 1, 0, 0, 0, 0, 1, 0, 0]

    def test_other_timeframe_needs_its_bins(self):
        with pytest.raises(ValueError, match="no bins entry for M15"):
            apply_patterns(self.FEATURES.assign(b=0.0), self.DOCUMENT, timeframe_min=15)

    def test_missing_feature_column_raises(self):
        with pytest.raises(ValueError, match="'flag'"):
            apply_patterns(self.FEATURES.drop(columns=["flag"]), self.DOCUMENT)

    def test_unknown_use_raises(self):
        with pytest.raises(ValueError, match="use must be one of"):
            apply_patterns(self.FEATURES, self.DOCUMENT, use="holdout")

    def test_no_patterns_gives_zeros(self):
        document = dict(self.DOCUMENT, patterns=[], kept=[])

        assert apply_patterns(self.FEATURES, document).tolist() == [0] * 9

    def test_mined_document_matches_condition_bounds(self):
        features, labels, split_ns = planted_rsi_case()
        document = mine(features, labels, split_ns)
        assert document["patterns"][0]["id"] == RSI_LOW

        signal = apply_patterns(features, document)

        # Reference from each condition's lower/upper bounds instead of the stored edges.
        fires = {1: np.zeros(len(features), dtype=bool), -1: np.zeros(len(features), dtype=bool)}
        for pattern in document["patterns"]:
            match = np.ones(len(features), dtype=bool)
            for condition in pattern["conditions"]:
                values = features[condition["feature"]].to_numpy()
                lower, upper = condition["lower"], condition["upper"]
                if lower is not None and lower == upper:
                    match &= values == lower
                    continue
                match &= ~np.isnan(values)
                if lower is not None:
                    match &= values >= lower
                if upper is not None:
                    match &= values < upper
            fires[pattern["side"]] |= match
        expected = fires[1].astype(np.int8) - fires[-1].astype(np.int8)
        assert np.array_equal(signal, expected)
        assert (signal == 1).sum() > 500


class TestDocument:
    def test_json_round_trip_has_no_nan(self):
        features, labels, split_ns = planted_rsi_case(n_bars=3000, seed=41)
        labels.loc[labels.sample(frac=0.05, random_state=1).index, ["outcome", "pips"]] = ["censored", np.nan]
        document = mine(features, labels, split_ns)

        text = json.dumps(document, allow_nan=False)
        reloaded = json.loads(text)

        assert reloaded == document
        assert find_nan(reloaded) is None
        assert document["split_time"] == ns_to_datetime(np.array([split_ns]))[0].isoformat()
        assert document["grid"]["5"] == [{"grid_id": 0, "take_profit_pips": 10.0, "stop_loss_pips": 10.0,
                                          "horizon_minutes": 60.0}]
        assert np.array_equal(apply_patterns(features, reloaded), apply_patterns(features, document))

    def test_below_min_bars_gives_empty_document(self):
        features = make_features(150, 51)
        labels = make_labels(features, 0.5, 0.5, 52)
        full = mine(*planted_rsi_case())

        document = mine(features, labels, split_at(features))

        assert document["patterns"] == []
        assert document["kept"] == []
        assert "min_bars = 200" in document["insufficient_data"]
        assert "min_bars = 200" in document["timeframe_notes"]["5"]
        assert set(document) == set(full)
        json.dumps(document, allow_nan=False)

    def test_empty_labels_give_empty_document(self):
        features = make_features(300, 61)
        labels = make_labels(features, 0.5, 0.5, 62).iloc[0:0]

        document = mine(features, labels, split_at(features))

        assert document["patterns"] == []
        assert document["insufficient_data"] == "M5: the labels table is empty"

    def test_each_grid_entry_mined_apart(self):
        features, labels, split_ns = planted_rsi_case()
        other = make_labels(features, 0.9, 0.9, 71, grid_id=1, take_profit_pips=20.0)
        # Grid 1 wins 90 % on both sides, so nearly every one of its conditions is significant.
        config = dataclasses.replace(PatternsConfig(), max_patterns=100_000)
        document = mine(features, pd.concat([labels, other], ignore_index=True), split_ns, config)
        alone = mine(features, labels, split_ns, config)

        assert document["base_rates"]["5"]["0"] == alone["base_rates"]["5"]["0"]
        assert document["base_rates"]["5"]["1"]["long"]["train"]["win_rate"] > 0.85
        assert document["conditions_tested"] == 2 * alone["conditions_tested"]
        assert [g["grid_id"] for g in document["grid"]["5"]] == [0, 1]
        both = {p["id"]: p["train"]["p_value"] for p in document["patterns"]}
        assert both["M5:g0:long:rsi_14[0]"] == alone["patterns"][0]["train"]["p_value"]
        assert sum(key.startswith("M5:g1:") for key in both) > 1000

    def test_several_timeframes_share_one_correction(self):
        features, labels, split_ns = planted_rsi_case()
        document = mine_patterns({5: features, 15: features}, {5: labels, 15: labels, 60: labels}, split_ns,
                                 PatternsConfig(), PIP_SIZE)
        alone = mine(features, labels, split_ns)

        assert document["timeframes_min"] == [5, 15]
        assert document["timeframe_notes"] == {"60": "no features table for this timeframe"}
        assert document["conditions_tested"] == 2 * alone["conditions_tested"]
        ids = {p["id"] for p in document["patterns"]}
        assert {"M5:g0:long:rsi_14[0]", "M15:g0:long:rsi_14[0]"} <= ids

    def test_labels_file_matches_frame(self, tmp_path):
        features, labels, split_ns = planted_rsi_case(n_bars=2000, seed=81)
        other = make_labels(features, 0.6, 0.4, 82, grid_id=1, take_profit_pips=20.0)
        both = pd.concat([labels, other], ignore_index=True)
        artifacts.write_frame(tmp_path / "M5.parquet", both)

        from_file = mine_patterns({5: features}, {5: tmp_path / "M5.parquet"}, split_ns, PatternsConfig(), PIP_SIZE)

        assert from_file == mine(features, both, split_ns)

    def test_datetime_columns_match_int64(self):
        features, labels, split_ns = planted_rsi_case(n_bars=2000, seed=81)
        as_int = mine(features, labels, split_ns)
        features_dt = features.assign(timestamp=ns_to_datetime(features["timestamp"].to_numpy()))
        labels_dt = labels.copy()
        for column in ("timestamp", "entry_time", "exit_time"):
            labels_dt[column] = ns_to_datetime(labels[column].to_numpy())

        as_datetime = mine(features_dt, labels_dt, split_ns)

        assert as_datetime == as_int


class TestBadInput:
    def test_missing_label_column_raises(self):
        features, labels, split_ns = planted_rsi_case(n_bars=500)
        with pytest.raises(ValueError, match="missing columns \\['pips'\\]"):
            mine(features, labels.drop(columns=["pips"]), split_ns)

    def test_missing_uniqueness_raises(self):
        features, labels, split_ns = planted_rsi_case(n_bars=500)
        with pytest.raises(ValueError, match="missing columns \\['uniqueness'\\]"):
            mine(features, labels.drop(columns=["uniqueness"]), split_ns)

    def test_unknown_outcome_raises(self):
        features, labels, split_ns = planted_rsi_case(n_bars=500)
        labels.loc[0, "outcome"] = "tp"
        with pytest.raises(ValueError, match="unknown outcome values \\['tp'\\]"):
            mine(features, labels, split_ns)

    def test_non_censored_nan_pips_raises(self):
        features, labels, split_ns = planted_rsi_case(n_bars=500)
        labels.loc[3, "pips"] = np.nan
        with pytest.raises(ValueError, match="non-censored rows without pips"):
            mine(features, labels, split_ns)

    def test_duplicate_feature_bars_raise(self):
        features, labels, split_ns = planted_rsi_case(n_bars=500)
        doubled = pd.concat([features, features.iloc[[10]]]).sort_values("timestamp", kind="stable")
        with pytest.raises(ValueError, match="strictly increasing"):
            mine(doubled, labels, split_ns)

    def test_bad_pip_size_raises(self):
        features, labels, split_ns = planted_rsi_case(n_bars=500)
        with pytest.raises(ValueError, match="pip_size"):
            mine_patterns({5: features}, {5: labels}, split_ns, PatternsConfig(), 0.0)

    def test_bad_fdr_raises(self):
        with pytest.raises(ValueError, match="fdr"):
            PatternsConfig(fdr=0.0)

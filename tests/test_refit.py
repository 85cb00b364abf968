"""Patterns and regimes refitted per walk-forward block: causality, a planted pattern, the fallback, the search."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from fxresearch import artifacts, patterns
from fxresearch import refit as refit_module
from fxresearch.config import (Config, PatternsConfig, RegimesConfig, SampleConfig, SearchConfig,
                               ValidationConfig)
from fxresearch.instruments import get_instrument
from fxresearch.patterns import apply_patterns, mine_patterns
from fxresearch.refit import (RefitResult, in_sample_day_numbers, refit_per_block, trading_day_start_ns)
from fxresearch.regimes import build_regimes
from fxresearch.sample import write_sample_set
from fxresearch.search import search_light
from fxresearch.strategies import INPUT_BARS, INPUT_REGIMES, SignalContext, Template, compute_signals
from fxresearch.timeutil import NS_PER_MINUTE, datetime_to_ns, in_weekend_close, trading_day_ns

REAL_PARQUET = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "parquet"
TIMEFRAME_MIN = 5
LABEL_EXIT_MINUTES = 35
PLANTED_SHARE = 0.2
EURUSD = get_instrument("EURUSD")

# Eight weeks of five-minute bars, three walk-forward blocks of seven days in the in-sample part.
SYNTHETIC_CONFIG = Config(
    patterns=PatternsConfig(timeframe_min=TIMEFRAME_MIN, n_bins=4, pairs=False),
    regimes=RegimesConfig(timeframe_min=TIMEFRAME_MIN, max_regimes=3, n_init=1),
    validation=ValidationConfig(n_folds=3, min_train_days=5, min_test_days=5),
    search=SearchConfig(timeframe_min=TIMEFRAME_MIN, horizon_minutes=60.0),
)


def _regime_level_signals(context: SignalContext) -> np.ndarray:
    """+1 on bars in a high-volatility regime, -1 in a low-volatility one, 0 without a regime."""
    names = context.regime_names_on_bars()
    high = np.array([isinstance(name, str) and "high_vol" in name for name in names])
    low = np.array([isinstance(name, str) and "low_vol" in name for name in names])
    return (high.astype(np.int8) - low.astype(np.int8)).astype(np.int8)


# A family that shows each bar's regime, so a changed regime shows in its signal.
REGIME_LEVEL = {"regime_level": Template(_regime_level_signals, ({},), frozenset({INPUT_BARS, INPUT_REGIMES}))}


@dataclasses.dataclass
class Market:
    bars: pd.DataFrame
    features: pd.DataFrame
    labels: pd.DataFrame
    split_ns: int
    day_numbers: np.ndarray
    planted_from_ns: int


def _bar_times(weeks: int) -> np.ndarray:
    times = pd.date_range("2025-01-06", periods=weeks * 7 * 288, freq="5min", tz="UTC")
    open_ns = datetime_to_ns(times)
    return open_ns[~in_weekend_close(open_ns)]


def _synthetic_market(weeks: int = 8, seed: int = 3) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray, int]:
    """Return bars, features, the per-bar win of a long label, and the split: no edge anywhere yet."""
    rng = np.random.default_rng(seed)
    open_ns = _bar_times(weeks)
    n_bars = len(open_ns)
    mid = 1.1 + np.cumsum(rng.normal(0.0, 0.0002, n_bars))
    previous = np.r_[mid[0], mid[:-1]]
    bars = pd.DataFrame({"timestamp": open_ns})
    for side, offset in (("bid", -0.00005), ("ask", 0.00005)):
        bars[f"{side}_open"] = previous + offset
        bars[f"{side}_high"] = np.maximum(previous, mid) + 0.0001 + offset
        bars[f"{side}_low"] = np.minimum(previous, mid) - 0.0001 + offset
        bars[f"{side}_close"] = mid + offset

    # Volatility switches between two levels by trading day, so the regimes differ by day.
    day = trading_day_ns(open_ns)
    level = rng.integers(0, 2, day.max() - day.min() + 1)[day - day.min()]
    rv = np.exp(-8.0 + level + rng.normal(0.0, 0.1, n_bars))
    features = pd.DataFrame({
        "timestamp": open_ns,
        "planted": (rng.random(n_bars) < PLANTED_SHARE).astype(np.int64),
        "noise": rng.random(n_bars),
        "rv_20": rv,
        "rv_hour_of_week_dev_20": np.log(rv) + 7.5,
        "ret_12": rng.normal(0.0, 1.0, n_bars) * rv * np.sqrt(12.0),
        "er_10": rng.random(n_bars),
    })
    long_wins = rng.random(n_bars) < 0.5
    split_ns = int(open_ns[int(0.75 * n_bars)])
    return bars, features, long_wins, split_ns


def _labels(open_ns: np.ndarray, long_wins: np.ndarray) -> pd.DataFrame:
    """Return one grid entry of labels, long and short per bar; the short loses when the long wins."""
    n_bars = len(open_ns)
    side = np.tile(np.array([1, -1], dtype=np.int64), n_bars)
    wins = np.empty(2 * n_bars, dtype=bool)
    wins[0::2] = long_wins
    wins[1::2] = ~long_wins
    timestamp = np.repeat(open_ns, 2)
    return pd.DataFrame({
        "timestamp": timestamp,
        "side": side,
        "grid_id": np.zeros(2 * n_bars, dtype=np.int64),
        "take_profit_pips": 10.0,
        "stop_loss_pips": 10.0,
        "horizon_minutes": 60.0,
        "outcome": np.where(wins, "take_profit", "stop_loss"),
        "exit_time": timestamp + LABEL_EXIT_MINUTES * NS_PER_MINUTE,
        "pips": np.where(wins, 10.0, -10.0),
        "uniqueness": 1.0,
    })


@pytest.fixture(scope="module")
def market() -> Market:
    """Eight weeks with an edge planted only in the last in-sample block: planted bars win long there."""
    bars, features, long_wins, split_ns = _synthetic_market()
    open_ns = bars["timestamp"].to_numpy()
    day_numbers = in_sample_day_numbers(open_ns, split_ns)
    bounds, _reason = refit_module.block_bounds(day_numbers, split_ns, SYNTHETIC_CONFIG)
    planted_from_ns = bounds[-1][0]
    in_last_block = (open_ns >= planted_from_ns) & (open_ns < split_ns) & (features["planted"].to_numpy() == 1)
    long_wins = long_wins | in_last_block
    return Market(bars, features, _labels(open_ns, long_wins), split_ns, day_numbers, planted_from_ns)


def _whole_training(features: pd.DataFrame, labels: pd.DataFrame, split_ns: int) -> tuple[dict, pd.DataFrame]:
    config = SYNTHETIC_CONFIG
    document = mine_patterns({TIMEFRAME_MIN: features}, {TIMEFRAME_MIN: labels}, split_ns, config.patterns,
                             EURUSD.pip_size)
    regimes, _model = build_regimes(features, split_ns, config.regimes)
    return document, regimes


def _refit(bars: pd.DataFrame, features: pd.DataFrame, labels: pd.DataFrame, split_ns: int,
           day_numbers: np.ndarray) -> RefitResult:
    document, regimes = _whole_training(features, labels, split_ns)
    return refit_per_block({TIMEFRAME_MIN: features}, {TIMEFRAME_MIN: labels}, features, day_numbers, split_ns,
                           SYNTHETIC_CONFIG, EURUSD.pip_size, document, regimes)


def _signals(market: Market, result: RefitResult | None, features: pd.DataFrame | None = None,
             labels: pd.DataFrame | None = None) -> dict[str, np.ndarray]:
    """Return the pattern_entry and regime_level signals, per block when ``result`` is given."""
    features = market.features if features is None else features
    labels = market.labels if labels is None else labels
    document, regimes = _whole_training(features, labels, market.split_ns)
    context = SignalContext(market.bars, TIMEFRAME_MIN, EURUSD, features=features, regimes=regimes,
                            regimes_timeframe_min=TIMEFRAME_MIN, patterns_doc=document,
                            segments=None if result is None else result.segments)
    return {family: np.asarray(compute_signals(family, {}, context, REGIME_LEVEL))
            for family in ("pattern_entry", "regime_level")}


def _fits(result: RefitResult) -> list[str]:
    """Return each block's pattern document and regime model as JSON, to compare whole fits."""
    return [json.dumps({"patterns": block.patterns_doc, "regimes": block.regime_model}, sort_keys=True)
            for block in result.blocks]


@pytest.fixture(scope="module")
def refitted(market: Market) -> RefitResult:
    return _refit(market.bars, market.features, market.labels, market.split_ns, market.day_numbers)


def test_blocks_follow_the_walk_forward_test_blocks(market, refitted):
    starts = [block.start_ns for block in refitted.blocks]
    assert len(refitted.blocks) == 3
    assert refitted.blocks[-1].end_ns == market.split_ns
    assert [block.end_ns for block in refitted.blocks[:-1]] == starts[1:]
    # Each block starts at 17:00 New York, the start of a trading day.
    assert (trading_day_ns(np.array(starts) - 1) + 1 == trading_day_ns(np.array(starts))).all()
    assert refitted.report["reason"] == ""
    assert refitted.segments[-1].start_ns == market.split_ns


def test_later_labels_leave_block_signals_unchanged(market, refitted):
    labels = market.labels.copy()
    known_later = labels["exit_time"].to_numpy() >= refitted.blocks[-1].start_ns
    labels.loc[known_later, "pips"] = -labels.loc[known_later, "pips"]
    labels.loc[known_later, "outcome"] = np.where(labels.loc[known_later, "pips"] > 0, "take_profit", "stop_loss")
    changed = _refit(market.bars, market.features, labels, market.split_ns, market.day_numbers)

    assert _fits(changed) == _fits(refitted)
    in_sample = market.bars["timestamp"].to_numpy() < market.split_ns
    before = _signals(market, refitted)
    after = _signals(market, changed, labels=labels)
    for family in before:
        np.testing.assert_array_equal(after[family][in_sample], before[family][in_sample], err_msg=family)
    # The change does reach a fit on the whole training part, which the refit must not use.
    assert _whole_training(market.features, labels, market.split_ns)[0] != \
        _whole_training(market.features, market.labels, market.split_ns)[0]


def test_later_features_leave_earlier_signals_unchanged(market, refitted):
    block_start = refitted.blocks[-1].start_ns
    features = market.features.copy()
    later = features["timestamp"].to_numpy() >= block_start
    features.loc[later, "planted"] = 1 - features.loc[later, "planted"]
    features.loc[later, "noise"] = features.loc[later, "noise"].to_numpy()[::-1]
    for name in ("rv_20", "ret_12"):
        features.loc[later, name] = features.loc[later, name] * 3.0
    features.loc[later, "rv_hour_of_week_dev_20"] = np.log(features.loc[later, "rv_20"]) + 7.5
    changed = _refit(market.bars, features, market.labels, market.split_ns, market.day_numbers)

    assert _fits(changed) == _fits(refitted)
    open_ns = market.bars["timestamp"].to_numpy()
    before = _signals(market, refitted)
    after = _signals(market, changed, features=features)
    earlier = open_ns < block_start
    for family in before:
        np.testing.assert_array_equal(after[family][earlier], before[family][earlier], err_msg=family)
    # The block's own bars read their own, changed features.
    in_block = ~earlier & (open_ns < market.split_ns)
    assert (after["regime_level"][in_block] != before["regime_level"][in_block]).any()


def _planted_long(document: dict[str, Any]) -> list[str]:
    return [p["id"] for p in document["patterns"]
            if p["side"] == 1 and [c["feature"] for c in p["conditions"]] == ["planted"]]


def test_pattern_of_last_block_not_traded_there(market, refitted):
    open_ns = market.bars["timestamp"].to_numpy()
    planted_bars = ((open_ns >= market.planted_from_ns) & (open_ns < market.split_ns)
                    & (market.features["planted"].to_numpy() == 1))
    whole_document, _regimes = _whole_training(market.features, market.labels, market.split_ns)
    assert _planted_long(whole_document), "the planted edge should be found on the whole training part"
    assert planted_bars.sum() > 200

    whole = _signals(market, None)["pattern_entry"]
    per_block = _signals(market, refitted)["pattern_entry"]
    assert (whole[planted_bars] == 1).all()
    assert (per_block[planted_bars] == 0).all()
    for block in refitted.blocks:
        assert _planted_long(block.patterns_doc) == [], f"block {block.index} knew the planted pattern"


def test_warmup_bars_get_no_signal(market, refitted):
    open_ns = market.bars["timestamp"].to_numpy()
    warmup = open_ns < refitted.blocks[0].start_ns
    per_block = _signals(market, refitted)
    whole = _signals(market, None)
    assert (whole["regime_level"][warmup] != 0).any()
    assert (per_block["regime_level"][warmup] == 0).all()
    assert (per_block["pattern_entry"][warmup] == 0).all()
    assert refitted.report["warmup"]["end"] == pd.Timestamp(refitted.blocks[0].start_ns, tz="UTC").isoformat()


def test_trading_day_start_is_new_york_five_pm():
    # 2025-03-10 is the first Monday of US daylight saving time: its day starts Sunday 21:00 UTC.
    monday = np.array([pd.Timestamp("2025-03-10").value // 86_400_000_000_000])
    assert pd.Timestamp(int(trading_day_start_ns(monday)[0]), tz="UTC") == pd.Timestamp("2025-03-09 21:00", tz="UTC")
    friday = monday - 3
    assert pd.Timestamp(int(trading_day_start_ns(friday)[0]), tz="UTC") == pd.Timestamp("2025-03-06 22:00", tz="UTC")


# ---------------------------------------------------------------------------------------------
# Search-light runs. No edge exists in the sample or in the short real files, so the miner is
# wrapped to write one pattern per bin of ``rsi_14``, long on even bins and short on odd ones.
# pattern_entry then signals on most bars, and its trades show where patterns were applied.


def _mine_with_rsi_patterns(*args: Any, **kwargs: Any) -> dict[str, Any]:
    document = _REAL_MINE(*args, **kwargs)
    bins = document.get("bins", {}).get(str(TIMEFRAME_MIN), {})
    if "rsi_14" in bins:
        n_bins = len(bins["rsi_14"]["edges"]) - 1
        document["patterns"] = [
            {"id": f"M5:g0:{'long' if k % 2 == 0 else 'short'}:rsi_14[{k}]", "timeframe_min": TIMEFRAME_MIN,
             "side": 1 if k % 2 == 0 else -1, "conditions": [{"feature": "rsi_14", "bin": k}]}
            for k in range(n_bins)
        ]
        document["insufficient_data"] = None
    return document


_REAL_MINE = patterns.mine_patterns


@pytest.fixture
def rsi_patterns(monkeypatch):
    monkeypatch.setattr(patterns, "mine_patterns", _mine_with_rsi_patterns)
    monkeypatch.setattr(refit_module, "mine_patterns", _mine_with_rsi_patterns)


def _search_config(**validation: Any) -> Config:
    return Config(
        search=SearchConfig(families=("ma_cross", "pattern_entry", "regime_ma_cross"), sl_tp_sets=((10.0, 10.0),),
                            top_n_trades=100_000),
        validation=ValidationConfig(**validation),
    )


def _trades_by_family(out_dir: Path, pair_year: str) -> tuple[pd.DataFrame, dict[str, Any], pd.DataFrame]:
    pair_dir = out_dir / pair_year
    results = artifacts.read_frame(pair_dir / f"{pair_year}_backtest_results.parquet")
    trades = artifacts.read_frame(pair_dir / f"{pair_year}_top_trades.parquet")
    family = dict(zip(results["strategy_id"], results["family"], strict=True))
    trades["family"] = trades["strategy_id"].map(family)
    report = json.loads((pair_dir / f"{pair_year}_search_report.json").read_text())
    return trades, report, results


def test_search_in_sample_pattern_trades_inside_blocks(tmp_path, rsi_patterns):
    ticks = tmp_path / "ticks"
    write_sample_set(ticks, SampleConfig(weeks=6, pairs=("EURUSD",), ticks_per_hour=300))
    config = _search_config(n_folds=2, min_train_days=4, min_test_days=4)
    search_light(ticks / "EURUSD_2025.parquet", tmp_path / "out", config)

    trades, report, _results = _trades_by_family(tmp_path / "out", "EURUSD_2025")
    refit = report["refit"]
    assert refit["enabled"] is True
    assert len(refit["blocks"]) == report["walk_forward"]["made"] == 2
    assert refit["families"] == ["pattern_entry", "regime_ma_cross"]
    bars = artifacts.read_frame(tmp_path / "out" / "EURUSD_2025" / "bars" / "M5.parquet")
    signal_open = bars["timestamp"].to_numpy()[trades["signal_bar"].to_numpy()]
    in_a_block = np.zeros(len(trades), dtype=bool)
    for block in refit["blocks"]:
        in_a_block |= (signal_open >= block["start_ns"]) & (signal_open < block["end_ns"])
    for family in ("pattern_entry", "regime_ma_cross"):
        of_family = (trades["family"] == family).to_numpy()
        in_sample = of_family & trades["in_sample"].to_numpy()
        assert in_sample.sum() > 0, family
        assert in_a_block[in_sample].all(), f"{family} traded a bar outside every block"
        assert (of_family & ~trades["in_sample"].to_numpy()).sum() > 0, family
    # ma_cross reads neither patterns nor regimes, so it trades the warm-up too.
    first_start = refit["blocks"][0]["start_ns"]
    ma_cross = (trades["family"] == "ma_cross").to_numpy()
    assert (ma_cross & (signal_open < first_start)).sum() > 0

    # The whole-training patterns would have signalled in the warm-up.
    features = artifacts.read_frame(tmp_path / "out" / "EURUSD_2025" / "features" / "M5.parquet")
    document = json.loads((tmp_path / "out" / "EURUSD_2025" / "EURUSD_2025_patterns.json").read_text())
    warmup = features["timestamp"].to_numpy() < first_start
    assert (apply_patterns(features[warmup], document) != 0).sum() > 100


def test_short_real_file_gets_holdout_signals_only(tmp_path, rsi_patterns):
    path = REAL_PARQUET / "EURUSD_2014.parquet"
    if not path.exists():
        pytest.skip(f"real tick file {path} is absent; it comes with the shared test data")
    search_light(path, tmp_path / "out", _search_config())

    trades, report, results = _trades_by_family(tmp_path / "out", "EURUSD_2014")
    refit = report["refit"]
    assert refit["enabled"] is True
    assert refit["blocks"] == []
    assert refit["reason"].startswith("no walk-forward test block fits the")
    assert "only holdout signals" in refit["reason"]
    for family in ("pattern_entry", "regime_ma_cross"):
        of_family = results["family"] == family
        assert of_family.any(), family
        assert results.loc[of_family, "n_trades_is"].sum() == 0, family
    assert results.loc[results["family"] == "pattern_entry", "n_trades_oos"].sum() > 0
    assert results.loc[results["family"] == "ma_cross", "n_trades_is"].sum() > 0


def test_refit_switch_changes_the_results_config_hash():
    from fxresearch.search import _results_spec

    assert _results_spec(Config()) != _results_spec(
        dataclasses.replace(Config(), search=dataclasses.replace(SearchConfig(), refit_per_fold=False)))

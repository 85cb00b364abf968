"""Tests for strategy templates: hand-worked signals, causality, ids and the strategy list."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fxresearch.config import SearchConfig
from fxresearch.instruments import get_instrument
from fxresearch.strategies import (
    INPUT_BARS,
    INPUT_FEATURES,
    INPUT_PATTERNS,
    INPUT_REGIMES,
    TEMPLATES,
    SignalContext,
    Strategy,
    compute_signals,
    generate_strategies,
)
from fxresearch.timeutil import NS_PER_MINUTE, datetime_to_ns

REPO = Path(__file__).resolve().parents[1]
ALL_INPUTS = {INPUT_BARS, INPUT_FEATURES, INPUT_REGIMES, INPUT_PATTERNS}
# Half a spread that is exact in binary, so mids of the hand-made bars are exact.
HALF_SPREAD = 0.25


def _utc_ns(text: str) -> int:
    return int(datetime_to_ns([text])[0])


def _make_bars(close: list[float], start: str = "2024-01-10 00:00", timeframe_min: int = 5,
               high: list[float] | None = None, low: list[float] | None = None) -> pd.DataFrame:
    """Bars with the given mid close (and mid high/low), one per timeframe from ``start``."""
    close_arr = np.asarray(close, dtype=np.float64)
    high_arr = close_arr if high is None else np.asarray(high, dtype=np.float64)
    low_arr = close_arr if low is None else np.asarray(low, dtype=np.float64)
    timestamp = _utc_ns(start) + np.arange(len(close_arr), dtype=np.int64) * timeframe_min * NS_PER_MINUTE
    frame = {"timestamp": timestamp}
    for field, mid in (("open", close_arr), ("high", high_arr), ("low", low_arr), ("close", close_arr)):
        frame[f"bid_{field}"] = mid - HALF_SPREAD
        frame[f"ask_{field}"] = mid + HALF_SPREAD
    return pd.DataFrame(frame)


def _context(bars: pd.DataFrame, timeframe_min: int = 5, **kwargs) -> SignalContext:
    return SignalContext(bars, timeframe_min, get_instrument("USDJPY"), **kwargs)


def _signal_dict(signal: np.ndarray) -> dict[int, int]:
    return {int(i): int(signal[i]) for i in np.flatnonzero(signal)}


MA_CLOSES = [105, 105, 105, 104, 103, 104, 105, 106, 105, 104, 103]


class TestHandWorkedSignals:
    def test_ma_cross(self):
        # fast-slow: t2 0, t3 -1/6, t4 -1/2, t5 -1/6, t6 +1/2, t7 +1/2, t8 +1/6, t9 -1/2.
        signal = compute_signals("ma_cross", {"fast": 2, "slow": 3}, _context(_make_bars(MA_CLOSES)))
        assert signal.dtype == np.int8
        assert _signal_dict(signal) == {3: -1, 6: 1, 9: -1}

    def test_rsi_reversion(self):
        # Wilder RSI(2): 100, 100, 50, 25, 12.5, 6.25, 53.1, 76.6, 38.3 from bar 2 on.
        closes = [10, 11, 12, 13, 12, 11, 10, 9, 10, 11, 10]
        context = _context(_make_bars(closes))
        signal = compute_signals("rsi_reversion", {"window": 2, "lower": 30.0, "upper": 70.0}, context)
        assert _signal_dict(signal) == {4: -1, 8: 1, 10: -1}

    def test_zscore_reversion(self):
        # z(3): bar 4 +1.41, bar 5 +0.71 (short), bar 6 -1.41, bar 7 -0.71 (long); flat windows NaN.
        closes = [10, 10, 10, 10, 13, 13, 10, 10, 10, 10]
        signal = compute_signals("zscore_reversion", {"window": 3, "entry_z": 1.0}, _context(_make_bars(closes)))
        assert _signal_dict(signal) == {5: -1, 7: 1}

    def test_donchian_excludes_current_bar(self):
        # Channel of bars t-3..t-1: bar 4 closes 13 above the prior high 12 (its own high is 14);
        # bar 6 closes 8 below the prior low 10.
        closes = [10, 11, 10, 11, 13, 12, 8, 9, 10]
        bars = _make_bars(closes, high=[c + 1 for c in closes], low=[c - 1 for c in closes])
        signal = compute_signals("donchian_breakout", {"lookback": 3}, _context(bars))
        assert _signal_dict(signal) == {4: 1, 6: -1}


def _session_bars(date: str) -> pd.DataFrame:
    """Hourly bars 00:00..17:00 UTC: a Tokyo range 99..101, then London-hour closes."""
    tokyo_close = [100.0] * 9
    tokyo_high = [100.5] * 8 + [101.0]
    tokyo_low = [99.0] + [99.5] * 8
    london_close = [100.5, 101.5, 101.8, 100.5, 101.2, 98.5, 100.0, 98.0, 102.0]
    close = tokyo_close + london_close
    high = tokyo_high + london_close
    low = tokyo_low + london_close
    return _make_bars(close, start=f"{date} 00:00", timeframe_min=60, high=high, low=low)


class TestSessionBreakout:
    def test_winter_breaks_after_tokyo_close(self):
        # In January London is on UTC, so bars opening 09:00..16:00 UTC may signal.
        context = _context(_session_bars("2024-01-10"), timeframe_min=60)
        signal = compute_signals("session_breakout", {"buffer_pips": 0.0}, context)
        assert _signal_dict(signal) == {10: 1, 13: 1, 14: -1, 16: -1}

    def test_summer_london_closes_an_hour_earlier(self):
        # In July London is UTC+1, so its session ends at 16:00 UTC and bar 16 is outside it.
        context = _context(_session_bars("2024-07-10"), timeframe_min=60)
        signal = compute_signals("session_breakout", {"buffer_pips": 0.0}, context)
        assert _signal_dict(signal) == {10: 1, 13: 1, 14: -1}

    def test_buffer_in_pips(self):
        # 30 USDJPY pips = 0.30: the levels are 101.30 and 98.70.
        context = _context(_session_bars("2024-01-10"), timeframe_min=60)
        signal = compute_signals("session_breakout", {"buffer_pips": 30.0}, context)
        assert _signal_dict(signal) == {10: 1, 14: -1, 16: -1}

    def test_no_tokyo_bars_no_signal(self):
        bars = _session_bars("2024-01-10").iloc[9:].reset_index(drop=True)
        signal = compute_signals("session_breakout", {"buffer_pips": 0.0}, _context(bars, timeframe_min=60))
        assert not signal.any()


class TestRegimeMaCross:
    @pytest.fixture
    def context(self) -> SignalContext:
        # 15-minute regimes; a regime is known at its bar's close, 15 minutes after its open.
        start = _utc_ns("2024-01-10 00:00")
        regimes = pd.DataFrame({
            "timestamp": start + np.array([0, 15, 30], dtype=np.int64) * NS_PER_MINUTE,
            "regime_id": [0, 1, 2],
            "regime_name": ["range_low_vol", "trend_up_high_vol", "range_high_vol"],
        })
        return _context(_make_bars(MA_CLOSES), regimes=regimes, regimes_timeframe_min=15)

    @pytest.mark.parametrize(("token", "expected"), [
        # Bars 2-4 see range_low_vol, 5-7 trend_up_high_vol, 8-10 range_high_vol.
        ("trend", {6: 1}),
        ("range", {3: -1, 9: -1}),
        ("high_vol", {6: 1, 9: -1}),
        ("low_vol", {3: -1}),
    ])
    def test_regime_known_at_close(self, context, token, expected):
        params = {"fast": 2, "slow": 3, "regime": token}
        assert _signal_dict(compute_signals("regime_ma_cross", params, context)) == expected


def test_pattern_entry_aligns_features_to_bars(monkeypatch):
    """The pattern signal is apply_patterns on features reindexed to the bars."""
    bars = _make_bars([100.0] * 6)
    features = pd.DataFrame({
        "timestamp": bars["timestamp"].to_numpy()[[0, 1, 3, 4, 5]],
        "x": [1.0, -1.0, 1.0, 0.0, -1.0],
    })

    def fake_apply_patterns(frame: pd.DataFrame, doc: dict) -> np.ndarray:
        x = frame["x"].to_numpy()
        return np.where(x > 0, 1, np.where(x < 0, -1, 0)).astype(np.int8)

    monkeypatch.setitem(sys.modules, "fxresearch.patterns",
                        types.SimpleNamespace(apply_patterns=fake_apply_patterns))
    context = _context(bars, features=features, patterns_doc={"patterns": [{"id": "p"}]})
    assert INPUT_PATTERNS in context.available()
    signal = compute_signals("pattern_entry", {}, context)
    # Bar 2 has no feature row, so NaN gives no signal.
    assert signal.tolist() == [1, -1, 0, 1, 0, -1]


def test_patterns_of_other_timeframe_unavailable():
    bars = _make_bars([100.0] * 6)
    features = pd.DataFrame({"timestamp": bars["timestamp"].to_numpy(), "x": np.zeros(6)})
    doc = {"timeframe_min": 15, "patterns": [{"id": "p"}]}
    assert INPUT_PATTERNS not in _context(bars, features=features, patterns_doc=doc).available()
    doc["timeframe_min"] = 5
    assert INPUT_PATTERNS in _context(bars, features=features, patterns_doc=doc).available()


@pytest.mark.parametrize("family", ["ma_cross", "rsi_reversion", "zscore_reversion",
                                    "donchian_breakout", "session_breakout"])
def test_signals_are_causal(family):
    """Signals on bars[:k] equal the first k signals of the full series."""
    rng = np.random.default_rng(3)
    n_bars = 600
    close = 150.0 + np.cumsum(rng.normal(0.0, 0.05, n_bars))
    bars = _make_bars(list(close), high=list(close + rng.uniform(0, 0.1, n_bars)),
                      low=list(close - rng.uniform(0, 0.1, n_bars)), timeframe_min=5)
    full_context = _context(bars)
    for params in TEMPLATES[family].grid[:6]:
        full = compute_signals(family, params, full_context)
        for k in (150, 301, 477):
            part = compute_signals(family, params, _context(bars.iloc[:k].reset_index(drop=True)))
            np.testing.assert_array_equal(part, full[:k], err_msg=f"{family} {params} at k={k}")


class TestStrategyList:
    def test_default_config_has_1000_strategies(self):
        strategies = generate_strategies(SearchConfig(), ALL_INPUTS)
        assert len(strategies) >= 1000
        assert len({s.strategy_id for s in strategies}) == len(strategies)
        assert {s.family for s in strategies} == set(SearchConfig().families)

    def test_families_without_inputs_are_skipped(self):
        strategies = generate_strategies(SearchConfig(), {INPUT_BARS, INPUT_FEATURES})
        families = {s.family for s in strategies}
        assert "pattern_entry" not in families
        assert "regime_ma_cross" not in families
        assert "ma_cross" in families

    def test_sl_tp_variants_share_params(self):
        search = SearchConfig(families=("donchian_breakout",))
        strategies = generate_strategies(search, {INPUT_BARS})
        assert len(strategies) == len(TEMPLATES["donchian_breakout"].grid) * len(search.sl_tp_sets)
        first = strategies[:len(search.sl_tp_sets)]
        assert {s.params_json for s in first} == {first[0].params_json}
        assert [(s.stop_loss_pips, s.take_profit_pips) for s in first] == list(search.sl_tp_sets)

    def test_unknown_family_raises(self):
        with pytest.raises(ValueError, match="Unknown strategy families"):
            generate_strategies(SearchConfig(families=("ma_cross", "moon_phase")), ALL_INPUTS)

    def test_non_positive_stop_raises(self):
        with pytest.raises(ValueError, match="positive"):
            generate_strategies(SearchConfig(sl_tp_sets=((0.0, 10.0),)), ALL_INPUTS)


class TestStrategyId:
    def test_known_value(self):
        strategy = Strategy("ma_cross", {"slow": 20, "fast": 5}, 10.0, 20.0)
        assert strategy.params_json == '{"fast":5,"slow":20}'
        # The first 16 hex digits of sha1 of the sorted-key JSON of family, params, SL and TP.
        payload = ('{"family":"ma_cross","params":{"fast":5,"slow":20},'
                   '"stop_loss_pips":10.0,"take_profit_pips":20.0}')
        assert hashlib.sha1(payload.encode(), usedforsecurity=False).hexdigest()[:16] == "5233ea5ee2c37e4d"
        assert strategy.strategy_id == "5233ea5ee2c37e4d"

    def test_param_order_and_int_sl_do_not_matter(self):
        a = Strategy("ma_cross", {"fast": 5, "slow": 20}, 10.0, 20.0)
        b = Strategy("ma_cross", {"slow": 20, "fast": 5}, 10, 20)
        assert a.strategy_id == b.strategy_id

    def test_sl_tp_change_the_id(self):
        a = Strategy("ma_cross", {"fast": 5, "slow": 20}, 10.0, 20.0)
        assert a.strategy_id != Strategy("ma_cross", {"fast": 5, "slow": 20}, 20.0, 10.0).strategy_id

    def test_same_in_another_process(self):
        code = ("from fxresearch.config import SearchConfig; from fxresearch.strategies import generate_strategies;"
                "print(','.join(s.strategy_id for s in generate_strategies(SearchConfig(), "
                "{'bars','features','regimes','patterns'})))")
        result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                                check=True, env={"PYTHONHASHSEED": "123", "PATH": "/usr/bin:/bin",
                                                 "PYTHONPATH": str(REPO)})
        in_this_process = [s.strategy_id for s in generate_strategies(SearchConfig(), ALL_INPUTS)]
        assert result.stdout.strip().split(",") == in_this_process


def test_signal_cache_shared_by_sl_tp_variants():
    context = _context(_make_bars(MA_CLOSES))
    a = compute_signals("ma_cross", {"fast": 2, "slow": 3}, context)
    b = compute_signals("ma_cross", {"slow": 3, "fast": 2}, context)
    assert a is b
    assert not a.flags.writeable


def test_bars_with_float_timestamps_raise():
    bars = _make_bars(MA_CLOSES)
    bars["timestamp"] = bars["timestamp"].astype(np.float64)
    with pytest.raises(ValueError, match="int64 nanoseconds"):
        _context(bars)

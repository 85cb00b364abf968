"""Tests for the tick backtest: trading rules on hand-made ticks, fills equivalence, threads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import fxresearch.backtest as backtest
from fxresearch._fill_kernels import OPEN_AT_LIMIT, SIGNAL, find_exit_ticks_nb
from fxresearch.backtest import SKIP_REASONS, TRADE_COLUMNS, EntryFilter, Trades, entry_checks, run_backtests
from fxresearch.bars import build_bars, entry_tick_index
from fxresearch.config import ConfigError, SearchConfig
from fxresearch.fills import REASONS, horizon_to_ns, pips_to_points, prepare_tick_arrays, simulate_trade
from fxresearch.instruments import get_instrument
from fxresearch.strategies import SignalContext, Strategy, compute_signals, generate_strategies
from fxresearch.timeutil import datetime_to_ns

EURUSD = get_instrument("EURUSD")
NS_PER_SECOND = 1_000_000_000
# Hand-made ticks: one every 10 s from a Wednesday 10:00 UTC, so one-minute bar b contains ticks
# 6b .. 6b+5 and a signal on bar b enters at tick 6(b+1).
START_NS = int(datetime_to_ns(["2024-01-10 10:00:00"])[0])
N_HAND_TICKS = 120
BID = 1.10000
ASK = 1.10010


def _flat_ticks() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    timestamp_ns = START_NS + np.arange(N_HAND_TICKS, dtype=np.int64) * 10 * NS_PER_SECOND
    return timestamp_ns, np.full(N_HAND_TICKS, BID), np.full(N_HAND_TICKS, ASK)


def _run_hand(timestamp_ns, bid, ask, signal_at: dict[int, int], stop_loss_pips=10.0, take_profit_pips=10.0,
              horizon_minutes=None, timeframe_min=1, entry_filter=None) -> Trades:
    """Backtest one strategy whose signals are ``{bar: side}`` and return its trades."""
    arrays = prepare_tick_arrays(timestamp_ns, bid, ask, EURUSD, 30.0)
    bars = build_bars(timestamp_ns, bid, ask, timeframe_min)
    signal = np.zeros(len(bars), dtype=np.int8)
    for bar, side in signal_at.items():
        signal[bar] = side
    strategy = Strategy("hand", {}, stop_loss_pips, take_profit_pips)
    return run_backtests(arrays, bars, timeframe_min, [strategy], {strategy.signal_key: signal},
                         EURUSD, horizon_minutes, entry_filter=entry_filter)


def _run_one(*args, **kwargs) -> pd.DataFrame:
    return _run_hand(*args, **kwargs).to_frame()


class TestTradingRules:
    def test_same_direction_signal_ignored(self):
        trades = _run_one(*_flat_ticks(), {2: 1, 4: 1})
        assert len(trades) == 1
        trade = trades.iloc[0]
        assert trade.signal_bar == 2
        assert trade.entry_idx == 18
        assert trade.entry_price == ASK
        assert trade.exit_idx == N_HAND_TICKS - 1
        assert trade.reason == "end_of_data"
        assert trade.pips == -1.0

    def test_entry_time_is_first_tick_at_bar_close(self):
        trades = _run_one(*_flat_ticks(), {2: -1})
        # Bar 2 opens 10:02 and closes 10:03, the time of tick 18.
        assert trades.entry_time.iloc[0] == START_NS + 3 * 60 * NS_PER_SECOND
        assert trades.entry_price.iloc[0] == BID

    def test_opposite_signal_reverses_at_its_entry_tick(self):
        timestamp_ns, bid, ask = _flat_ticks()
        bid[36], ask[36] = 1.10040, 1.10050
        trades = _run_one(timestamp_ns, bid, ask, {2: 1, 5: -1})
        assert len(trades) == 2
        long, short = trades.iloc[0], trades.iloc[1]
        # The long closes at tick 36 (bar 5's close) at that tick's bid.
        assert (long.side, long.entry_idx, long.exit_idx) == (1, 18, 36)
        assert long.exit_price == 1.10040
        assert long.reason == "signal"
        assert long.pips == 3.0
        # The short opens at the same tick, at the same bid.
        assert (short.side, short.signal_bar, short.entry_idx) == (-1, 5, 36)
        assert short.entry_price == 1.10040
        assert short.exit_idx == N_HAND_TICKS - 1
        assert short.exit_price == ASK
        assert short.reason == "end_of_data"
        assert short.exit_time == timestamp_ns[-1]

    def test_stop_on_reversal_tick_comes_first(self):
        timestamp_ns, bid, ask = _flat_ticks()
        # The long's stop is 1.09910 on the bid; tick 36 gaps through it.
        bid[36], ask[36] = 1.09900, 1.09910
        trades = _run_one(timestamp_ns, bid, ask, {2: 1, 5: -1})
        assert trades.reason.tolist() == ["stop_loss", "stop_loss"]
        assert trades.exit_idx.tolist() == [36, 37]
        assert trades.entry_idx.tolist() == [18, 36]
        assert trades.exit_price.tolist() == [1.09900, ASK]
        # Long: 1.09900 - 1.10010; short: 1.09900 - 1.10010 after the quote returns.
        assert trades.pips.tolist() == [-11.0, -11.0]

    def test_signal_before_exit_ignored_signal_at_exit_taken(self):
        timestamp_ns, bid, ask = _flat_ticks()
        # The long's target 1.10110 is hit at tick 30, the entry tick of bar 4.
        bid[30:], ask[30:] = 1.10120, 1.10130
        trades = _run_one(timestamp_ns, bid, ask, {2: 1, 3: 1, 4: 1})
        assert trades.signal_bar.tolist() == [2, 4]
        assert trades.entry_idx.tolist() == [18, 30]
        assert trades.exit_idx.tolist() == [30, N_HAND_TICKS - 1]
        assert trades.reason.tolist() == ["take_profit", "end_of_data"]
        assert trades.exit_price.iloc[0] == 1.10110
        assert trades.entry_price.iloc[1] == 1.10130

    def test_horizon_exit(self):
        trades = _run_one(*_flat_ticks(), {2: 1}, horizon_minutes=3.0)
        # Entry at 10:03:00 (tick 18); the horizon ends at 10:06:00, tick 36.
        assert trades.exit_idx.tolist() == [36]
        assert trades.reason.tolist() == ["horizon"]

    def test_data_hole_exit(self):
        timestamp_ns, bid, ask = _flat_ticks()
        # Two hours without ticks after tick 59, on a Wednesday: a data hole, not the weekend.
        timestamp_ns[60:] += 2 * 3600 * NS_PER_SECOND
        trades = _run_one(timestamp_ns, bid, ask, {2: 1})
        assert trades.exit_idx.tolist() == [59]
        assert trades.reason.tolist() == ["data_gap"]

    def test_signal_on_last_bar_has_no_trade(self):
        timestamp_ns, bid, ask = _flat_ticks()
        n_bars = N_HAND_TICKS // 6
        trades = _run_one(timestamp_ns, bid, ask, {n_bars - 1: 1})
        assert len(trades) == 0

    def test_no_strategies(self):
        timestamp_ns, bid, ask = _flat_ticks()
        arrays = prepare_tick_arrays(timestamp_ns, bid, ask, EURUSD, 30.0)
        bars = build_bars(timestamp_ns, bid, ask, 1)
        trades = run_backtests(arrays, bars, 1, [], {}, EURUSD, None)
        assert len(trades) == 0
        assert list(trades.to_frame().columns)[:3] == ["strategy_index", "side", "signal_bar"]


def _skips(trades: Trades) -> dict[str, int]:
    return trades.entry_skips.totals()


def _weekend_ticks() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """60 ticks 10 s apart from Friday 21:40 UTC (16:40 New York), then 60 from Sunday 22:05 UTC (17:05)."""
    friday = int(datetime_to_ns(["2024-01-12 21:40:00"])[0])
    sunday = int(datetime_to_ns(["2024-01-14 22:05:00"])[0])
    steps = np.arange(60, dtype=np.int64) * 10 * NS_PER_SECOND
    timestamp_ns = np.r_[friday + steps, sunday + steps]
    return timestamp_ns, np.full(120, BID), np.full(120, ASK)


class TestEntryFilters:
    def test_wide_spread_signal_skipped(self):
        timestamp_ns, bid, ask = _flat_ticks()
        # Bar 2 enters at tick 18, whose spread is 3 pips.
        ask[18] = BID + 0.00030
        trades = _run_hand(timestamp_ns, bid, ask, {2: 1, 4: 1}, entry_filter=EntryFilter(max_spread_pips=2.0))
        assert trades.signal_bar.tolist() == [4]
        assert trades.entry_idx.tolist() == [30]
        assert _skips(trades) == {"no_tick": 0, "late": 0, "no_entry_window": 0, "wide_spread": 1}

    def test_spread_at_limit_allowed(self):
        timestamp_ns, bid, ask = _flat_ticks()
        ask[18] = BID + 0.00030
        trades = _run_hand(timestamp_ns, bid, ask, {2: 1}, entry_filter=EntryFilter(max_spread_pips=3.0))
        assert trades.entry_idx.tolist() == [18]

    def test_skipped_opposite_signal_does_not_reverse(self):
        timestamp_ns, bid, ask = _flat_ticks()
        ask[36] = BID + 0.00030
        trades = _run_hand(timestamp_ns, bid, ask, {2: 1, 5: -1}, entry_filter=EntryFilter(max_spread_pips=2.0))
        assert trades.side.tolist() == [1]
        assert trades.exit_idx.tolist() == [N_HAND_TICKS - 1]
        assert trades.reason.tolist() == [REASONS.index("end_of_data")]

    def test_friday_signal_not_filled_on_sunday(self):
        # Friday's last one-minute bar (21:49) closes at 21:50; its first tick after is Sunday 22:05.
        timestamp_ns, bid, ask = _weekend_ticks()
        late = _run_hand(timestamp_ns, bid, ask, {9: 1, 12: -1},
                         entry_filter=EntryFilter(max_delay_minutes=30.0))
        assert late.signal_bar.tolist() == [12]
        assert _skips(late)["late"] == 1
        unfiltered = _run_hand(timestamp_ns, bid, ask, {9: 1, 12: -1})
        # Sunday bar k >= 10 opens at 22:05 + (k - 10) minutes, so bar 12 enters at tick 78.
        assert unfiltered.entry_idx.tolist() == [60, 78]

    def test_late_counted_before_window(self):
        # The Sunday entry at 17:05 New York is both late and inside the rollover window.
        timestamp_ns, bid, ask = _weekend_ticks()
        entry_filter = EntryFilter(max_delay_minutes=30.0, no_entry_windows=(("16:55", "17:10"),))
        trades = _run_hand(timestamp_ns, bid, ask, {9: 1, 11: 1, 13: 1, 14: 1}, entry_filter=entry_filter)
        # Bars 11 and 13 enter at 17:07 and 17:09 New York, inside the window. Bar 14 enters at
        # 17:10, the window's end, which is outside it.
        assert _skips(trades) == {"no_tick": 0, "late": 1, "no_entry_window": 2, "wide_spread": 0}
        assert trades.signal_bar.tolist() == [14]
        assert trades.entry_idx.tolist() == [90]

    @pytest.mark.parametrize(("window", "skipped_bars"), [
        # Hand ticks start 10:00 UTC in January, 05:00 New York; bar b enters at 05:0(b+1).
        (("05:03", "05:04"), [2]),
        (("05:03", "05:05"), [2, 3]),
        (("23:00", "05:04"), [0, 1, 2]),
        (("05:04", "05:03"), [0, 1, 3, 4]),
    ])
    def test_no_entry_window(self, window, skipped_bars):
        timestamp_ns, bid, ask = _flat_ticks()
        arrays = prepare_tick_arrays(timestamp_ns, bid, ask, EURUSD, 30.0)
        bars = build_bars(timestamp_ns, bid, ask, 1)
        entry_idx, skip_code = entry_checks(arrays, bars, 1, EntryFilter(no_entry_windows=(window,)))
        assert entry_idx[:5].tolist() == [6, 12, 18, 24, 30]
        assert np.flatnonzero(skip_code[:5] == 3).tolist() == skipped_bars

    def test_signal_without_tick_counted(self):
        trades = _run_hand(*_flat_ticks(), {N_HAND_TICKS // 6 - 1: 1})
        assert _skips(trades)["no_tick"] == 1

    def test_skips_follow_sl_tp_variants(self):
        timestamp_ns, bid, ask = _flat_ticks()
        ask[18] = BID + 0.00030
        arrays = prepare_tick_arrays(timestamp_ns, bid, ask, EURUSD, 30.0)
        bars = build_bars(timestamp_ns, bid, ask, 1)
        signal = np.zeros(len(bars), dtype=np.int8)
        signal[[2, 4]] = 1
        strategies = [
            Strategy("hand", {}, 10.0, 10.0), Strategy("hand", {}, 5.0, 20.0), Strategy("other", {}, 5.0, 5.0),
        ]
        signals = {strategies[0].signal_key: signal, strategies[2].signal_key: np.zeros(len(bars), np.int8)}
        trades = run_backtests(arrays, bars, 1, strategies, signals, EURUSD, None,
                               entry_filter=EntryFilter(max_spread_pips=2.0))
        assert trades.entry_skips.wide_spread.tolist() == [1, 1, 0]
        assert trades.select(trades.strategy_index == 0).entry_skips is trades.entry_skips

    def test_from_search_config(self):
        entry_filter = EntryFilter.from_search(SearchConfig())
        assert entry_filter == EntryFilter(0.0, 30.0, (("16:55", "17:10"),))

    @pytest.mark.parametrize("kwargs", [
        {"max_spread_pips": -1.0},
        {"max_delay_minutes": float("nan")},
        {"no_entry_windows": (("5:00", "06:00"),)},
        {"no_entry_windows": (("17:00", "17:00"),)},
        {"no_entry_windows": (("24:00", "01:00"),)},
    ])
    def test_invalid_filter_raises(self, kwargs):
        with pytest.raises(ValueError):
            EntryFilter(**kwargs)

    @pytest.mark.parametrize("kwargs", [
        {"max_entry_spread_pips": -0.5},
        {"no_entry_windows": (("16:55",),)},
        {"no_entry_windows": (("16:5", "17:10"),)},
    ])
    def test_invalid_search_config_raises(self, kwargs):
        with pytest.raises(ConfigError, match="search"):
            SearchConfig(**kwargs)


class TestInputChecks:
    @pytest.fixture
    def setup(self):
        timestamp_ns, bid, ask = _flat_ticks()
        arrays = prepare_tick_arrays(timestamp_ns, bid, ask, EURUSD, 30.0)
        bars = build_bars(timestamp_ns, bid, ask, 1)
        return arrays, bars, Strategy("hand", {}, 10.0, 10.0)

    def test_missing_signal_raises(self, setup):
        arrays, bars, strategy = setup
        with pytest.raises(ValueError, match="No signal array"):
            run_backtests(arrays, bars, 1, [strategy], {}, EURUSD, None)

    def test_bad_signal_value_raises(self, setup):
        arrays, bars, strategy = setup
        signal = np.zeros(len(bars), dtype=np.int8)
        signal[3] = 2
        with pytest.raises(ValueError, match="value 2 at bar 3"):
            run_backtests(arrays, bars, 1, [strategy], {strategy.signal_key: signal}, EURUSD, None)

    def test_wrong_length_raises(self, setup):
        arrays, bars, strategy = setup
        with pytest.raises(ValueError, match="one per bar"):
            run_backtests(arrays, bars, 1, [strategy], {strategy.signal_key: np.zeros(3, np.int8)}, EURUSD, None)

    def test_other_instrument_raises(self, setup):
        arrays, bars, strategy = setup
        signal = np.zeros(len(bars), dtype=np.int8)
        with pytest.raises(ValueError, match="prepared for EURUSD"):
            run_backtests(arrays, bars, 1, [strategy], {strategy.signal_key: signal}, get_instrument("GBPUSD"), None)


def _random_ticks(n_ticks: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A random walk of EURUSD quotes from a Monday, 1-6 s apart, spread 0.5-2 pips."""
    rng = np.random.default_rng(seed)
    start = int(datetime_to_ns(["2024-01-08 00:00:00"])[0])
    timestamp_ns = start + np.cumsum(rng.integers(1, 7, n_ticks)).astype(np.int64) * NS_PER_SECOND
    mid = 1.10 + np.cumsum(rng.normal(0.0, 0.00004, n_ticks))
    spread = rng.integers(5, 21, n_ticks) * 1e-5
    bid = np.round(mid - spread / 2, 5)
    ask = np.round(bid + spread, 5)
    return timestamp_ns, bid, ask


@pytest.fixture(scope="module")
def random_market():
    timestamp_ns, bid, ask = _random_ticks(60_000, seed=11)
    arrays = prepare_tick_arrays(timestamp_ns, bid, ask, EURUSD, 30.0)
    bars = build_bars(timestamp_ns, bid, ask, 5)
    return arrays, bars


def _random_strategies(n_bars: int, n_rows: int, seed: int, density: float):
    rng = np.random.default_rng(seed)
    sl_tp = [(5.0, 5.0), (10.0, 20.0), (20.0, 10.0)]
    strategies, signals = [], {}
    for row in range(n_rows):
        signal = np.zeros(n_bars, dtype=np.int8)
        hits = rng.random(n_bars) < density
        signal[hits] = rng.choice(np.array([-1, 1], dtype=np.int8), hits.sum())
        for stop_loss_pips, take_profit_pips in sl_tp:
            strategy = Strategy("random", {"row": row}, stop_loss_pips, take_profit_pips)
            strategies.append(strategy)
            signals[strategy.signal_key] = signal
    return strategies, signals


def _reference_backtest(arrays, bars, timeframe_min, strategy, signal, horizon_minutes) -> list[tuple]:
    """Slow reference: replay signals in bar order with the plain tick-scan fill kernel.

    For each signal the open trade is scanned up to that signal's entry tick. If it exits on
    the way, the position is flat. Otherwise a same-direction signal is skipped, and an
    opposite one closes the trade there and reverses.
    """
    n_ticks = len(arrays.timestamp_ns)
    bar_entry = entry_tick_index(arrays.timestamp_ns, bars, timeframe_min)
    stop_points = pips_to_points(strategy.stop_loss_pips, EURUSD)
    target_points = pips_to_points(strategy.take_profit_pips, EURUSD)
    horizon_ns = horizon_to_ns(horizon_minutes)
    trades = []
    position = None
    last_exit = 0

    def scan(pos, limit):
        side, entry_idx = pos[0], pos[1]
        entry_pts = int(arrays.ask_pts[entry_idx] if side > 0 else arrays.bid_pts[entry_idx])
        horizon_end = min(int(arrays.timestamp_ns[entry_idx]) + horizon_ns, np.iinfo(np.int64).max)
        exit_idx, exit_pts, reason = find_exit_ticks_nb(
            *arrays.tick_args(), entry_idx, side, entry_pts - side * stop_points,
            entry_pts + side * target_points, horizon_end, limit)
        return entry_pts, int(exit_idx), int(exit_pts), int(reason)

    for bar in np.flatnonzero(signal):
        side, entry_idx = int(signal[bar]), int(bar_entry[bar])
        if entry_idx >= n_ticks:
            break
        if position is not None:
            entry_pts, exit_idx, exit_pts, reason = scan(position, entry_idx)
            if reason != OPEN_AT_LIMIT:
                trades.append((position[0], position[2], position[1], entry_pts, exit_idx, exit_pts, reason))
                last_exit = exit_idx
                position = None
            elif side == position[0]:
                continue
            else:
                trades.append((position[0], position[2], position[1], entry_pts, exit_idx, exit_pts, SIGNAL))
                position = (side, entry_idx, int(bar))
                continue
        if entry_idx >= last_exit:
            position = (side, entry_idx, int(bar))
    if position is not None:
        entry_pts, exit_idx, exit_pts, reason = scan(position, n_ticks)
        trades.append((position[0], position[2], position[1], entry_pts, exit_idx, exit_pts, reason))
    return trades


def _trade_tuples(trades: Trades, strategy_index: int) -> list[tuple]:
    mask = trades.strategy_index == strategy_index
    entry_pts = np.rint(trades.entry_price[mask] / EURUSD.point_size).astype(np.int64)
    exit_pts = np.rint(trades.exit_price[mask] / EURUSD.point_size).astype(np.int64)
    return list(zip(trades.side[mask].tolist(), trades.signal_bar[mask].tolist(), trades.entry_idx[mask].tolist(),
                    entry_pts.tolist(), trades.exit_idx[mask].tolist(), exit_pts.tolist(),
                    trades.reason[mask].tolist(), strict=True))


def test_single_signal_matches_simulate_trade(random_market):
    """A strategy with one signal trades exactly like fills.simulate_trade from the same bar."""
    arrays, bars = random_market
    bar_entry = entry_tick_index(arrays.timestamp_ns, bars, 5)
    rng = np.random.default_rng(5)
    strategies, signals, expected = [], {}, []
    for k, bar in enumerate(rng.choice(len(bars) - 1, 40, replace=False)):
        side = int(rng.choice([-1, 1]))
        stop_loss_pips, take_profit_pips = [(5.0, 5.0), (8.0, 15.0), (20.0, 6.0)][k % 3]
        signal = np.zeros(len(bars), dtype=np.int8)
        signal[bar] = side
        strategy = Strategy("one", {"k": k}, stop_loss_pips, take_profit_pips)
        strategies.append(strategy)
        signals[strategy.signal_key] = signal
        expected.append(simulate_trade(arrays, int(bar_entry[bar]), side, stop_loss_pips, take_profit_pips,
                                       120.0, EURUSD))
    trades = run_backtests(arrays, bars, 5, strategies, signals, EURUSD, 120.0).to_frame()
    assert trades.strategy_index.tolist() == list(range(len(strategies)))
    for k, fill in enumerate(expected):
        trade = trades.iloc[k]
        assert trade.entry_idx == fill.entry_idx
        assert trade.entry_price == fill.entry_price
        assert trade.exit_idx == fill.exit_idx
        assert trade.exit_price == fill.exit_price
        assert trade.reason == fill.reason
        assert trade.pips == fill.pips
    assert set(trades.reason) >= {"stop_loss", "take_profit"}


def test_matches_slow_reference(random_market):
    arrays, bars = random_market
    strategies, signals = _random_strategies(len(bars), n_rows=4, seed=21, density=0.05)
    trades = run_backtests(arrays, bars, 5, strategies, signals, EURUSD, 60.0)
    reasons = set()
    for s, strategy in enumerate(strategies):
        expected = _reference_backtest(arrays, bars, 5, strategy, signals[strategy.signal_key], 60.0)
        assert _trade_tuples(trades, s) == expected, f"strategy {s}"
        reasons |= {REASONS[t[-1]] for t in expected}
    # The random signals exercise reversals and every ordinary exit.
    assert reasons >= {"signal", "stop_loss", "take_profit", "horizon"}


@pytest.mark.parametrize("entry_filter", [
    None,
    # The random market's spreads are 0.5-2 pips and it spans two 17:00 New York rollovers.
    EntryFilter(max_spread_pips=1.5, max_delay_minutes=30.0, no_entry_windows=(("16:55", "17:10"), ("23:30", "00:30"))),
], ids=["no_filter", "filters_on"])
def test_serial_equals_parallel(random_market, entry_filter):
    arrays, bars = random_market
    strategies, signals = _random_strategies(len(bars), n_rows=30, seed=4, density=0.08)
    serial = run_backtests(arrays, bars, 5, strategies, signals, EURUSD, 240.0, workers=1, entry_filter=entry_filter)
    parallel = run_backtests(arrays, bars, 5, strategies, signals, EURUSD, 240.0, workers=2,
                             entry_filter=entry_filter)
    assert len(serial) > 1000
    for name in TRADE_COLUMNS:
        np.testing.assert_array_equal(getattr(serial, name), getattr(parallel, name), err_msg=name)
    for reason in SKIP_REASONS:
        np.testing.assert_array_equal(getattr(serial.entry_skips, reason), getattr(parallel.entry_skips, reason),
                                      err_msg=reason)
    if entry_filter is not None:
        totals = serial.entry_skips.totals()
        assert totals["wide_spread"] > 100
        assert totals["no_entry_window"] > 0


def test_tick_scan_equals_bar_walk(random_market):
    arrays, bars = random_market
    strategies, signals = _random_strategies(len(bars), n_rows=10, seed=12, density=0.08)
    walked = run_backtests(arrays, bars, 5, strategies, signals, EURUSD, 240.0)
    scanned = run_backtests(arrays, bars, 5, strategies, signals, EURUSD, 240.0, tick_scan=True)
    assert len(walked) > 100
    for name in TRADE_COLUMNS:
        np.testing.assert_array_equal(getattr(walked, name), getattr(scanned, name), err_msg=name)


def test_chunked_run_equals_single_call(random_market, monkeypatch):
    arrays, bars = random_market
    strategies, signals = _random_strategies(len(bars), n_rows=5, seed=8, density=0.05)
    whole = run_backtests(arrays, bars, 5, strategies, signals, EURUSD, 240.0)
    monkeypatch.setattr(backtest, "MAX_SIGNALS_PER_CALL", 100)
    chunked = run_backtests(arrays, bars, 5, strategies, signals, EURUSD, 240.0)
    for name in TRADE_COLUMNS:
        np.testing.assert_array_equal(getattr(whole, name), getattr(chunked, name), err_msg=name)


def test_one_position_at_a_time(random_market):
    arrays, bars = random_market
    strategies, signals = _random_strategies(len(bars), n_rows=3, seed=9, density=0.2)
    trades = run_backtests(arrays, bars, 5, strategies, signals, EURUSD, 240.0)
    for s in range(len(strategies)):
        mask = trades.strategy_index == s
        entry, exit_ = trades.entry_idx[mask], trades.exit_idx[mask]
        assert np.all(exit_ >= entry)
        # Each trade enters at or after the previous one's exit tick.
        assert np.all(entry[1:] >= exit_[:-1])
        reversed_ = trades.reason[mask][:-1] == SIGNAL
        assert np.all(entry[1:][reversed_] == exit_[:-1][reversed_])
        assert np.all(trades.side[mask][1:][reversed_] == -trades.side[mask][:-1][reversed_])


DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def test_real_ticks_match_reference_and_threads():
    """Template strategies on 48 hours of Dukascopy EURUSD ticks: reference and 1 vs 2 threads."""
    path = DATA_DIR / "parquet" / "EURUSD_2019.parquet"
    if not path.exists():
        pytest.skip(f"real tick file {path} is absent; it lives outside the repository")
    frame = pd.read_parquet(path)
    timestamp_ns = datetime_to_ns(frame["timestamp"])
    bid, ask = frame["bid"].to_numpy(), frame["ask"].to_numpy()
    arrays = prepare_tick_arrays(timestamp_ns, bid, ask, EURUSD, 30.0)
    bars = build_bars(timestamp_ns, bid, ask, 5)
    context = SignalContext(bars, 5, EURUSD)
    search = SearchConfig(families=("ma_cross", "donchian_breakout", "zscore_reversion"))
    strategies = generate_strategies(search, context.available())
    signals = {s.signal_key: compute_signals(s.family, s.params, context) for s in strategies}

    serial = run_backtests(arrays, bars, 5, strategies, signals, EURUSD, 240.0, workers=1)
    parallel = run_backtests(arrays, bars, 5, strategies, signals, EURUSD, 240.0, workers=2)
    for name in TRADE_COLUMNS:
        np.testing.assert_array_equal(getattr(serial, name), getattr(parallel, name), err_msg=name)
    for s in range(0, len(strategies), 37):
        expected = _reference_backtest(arrays, bars, 5, strategies[s], signals[strategies[s].signal_key], 240.0)
        assert _trade_tuples(serial, s) == expected, strategies[s]

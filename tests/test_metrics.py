"""Tests for per-strategy metrics on hand-made trade lists."""

from __future__ import annotations

import time

import numpy as np
import pytest

from fxresearch.backtest import Trades
from fxresearch.metrics import METRIC_NAMES, PERIOD_SUFFIXES, strategy_metrics, trading_days
from fxresearch.timeutil import NS_PER_DAY, NS_PER_MINUTE, datetime_to_ns, trading_day_ns

NS_PER_HOUR = 60 * NS_PER_MINUTE
FAR_FUTURE_NS = int(datetime_to_ns(["2030-01-01"])[0])


def _ns(text: str) -> int:
    return int(datetime_to_ns([text])[0])


def _weekday_noons(first: str, n_days: int) -> np.ndarray:
    """12:00 UTC on ``n_days`` consecutive weekdays from ``first``, one tick per trading day."""
    days = []
    day = _ns(first)
    while len(days) < n_days:
        if ((day // NS_PER_DAY) + 3) % 7 < 5:  # 1970-01-01 was a Thursday.
            days.append(day + 12 * NS_PER_HOUR)
        day += NS_PER_DAY
    return np.array(days, dtype=np.int64)


def _trades(strategy_index, pips, exit_time_ns, entry_time_ns=None, exit_idx=None) -> Trades:
    n = len(pips)
    exit_time_ns = np.asarray(exit_time_ns, dtype=np.int64)
    entry_time_ns = exit_time_ns - NS_PER_HOUR if entry_time_ns is None else np.asarray(entry_time_ns, np.int64)
    exit_idx = np.arange(n, dtype=np.int64) if exit_idx is None else np.asarray(exit_idx, dtype=np.int64)
    return Trades(
        strategy_index=np.asarray(strategy_index, dtype=np.int64),
        side=np.ones(n, dtype=np.int8),
        signal_bar=np.zeros(n, dtype=np.int64),
        entry_idx=exit_idx - 1,
        entry_time_ns=entry_time_ns,
        entry_price=np.ones(n),
        exit_idx=exit_idx,
        exit_time_ns=exit_time_ns,
        exit_price=np.ones(n),
        reason=np.zeros(n, dtype=np.int8),
        pips=np.asarray(pips, dtype=np.float64),
    )


@pytest.fixture
def five_strategies():
    """0: mixed, listed out of exit order; 1: wins only; 2: none; 3: losses only; 4: one flat trade."""
    ticks = _weekday_noons("2024-01-08", 25)
    exit_ns = ticks[:4]
    trades = _trades(
        strategy_index=[0, 0, 0, 0, 1, 1, 3, 3, 4],
        pips=[-10.0, 20.0, 10.0, -5.0, 5.0, 5.0, -4.0, -6.0, 0.0],
        exit_time_ns=[exit_ns[2], exit_ns[3], exit_ns[0], exit_ns[1], exit_ns[0], exit_ns[1],
                      exit_ns[0], exit_ns[1], exit_ns[0]],
        exit_idx=[3, 4, 1, 2, 1, 2, 1, 2, 1],
    )
    return strategy_metrics(trades, 5, FAR_FUTURE_NS, ticks)


class TestTradeMetrics:
    def test_columns(self, five_strategies):
        expected = ["strategy_index"] + [name + suffix for suffix in PERIOD_SUFFIXES for name in METRIC_NAMES]
        assert list(five_strategies.columns) == expected
        assert five_strategies.strategy_index.tolist() == [0, 1, 2, 3, 4]

    def test_mixed_strategy(self, five_strategies):
        row = five_strategies.iloc[0]
        assert row.n_trades_is == 4
        assert row.win_rate_is == 0.5
        assert row.profit_factor_is == 2.0
        assert row.total_pips_is == 15.0
        assert row.expectancy_pips_is == 3.75

    def test_drawdown_in_exit_order(self, five_strategies):
        # Exit order +10, -5, -10, +20: equity 10, 5, -5, 15, so the drawdown is 10 - (-5).
        # The listed order would give -10, 10, 20, 15 and a drawdown of 10.
        assert five_strategies.max_drawdown_pips_is.iloc[0] == 15.0

    def test_profit_factor_edge_cases(self, five_strategies):
        profit_factor = five_strategies.profit_factor_is
        assert profit_factor.iloc[1] == np.inf
        assert np.isnan(profit_factor.iloc[2])
        assert profit_factor.iloc[3] == 0.0
        assert np.isnan(profit_factor.iloc[4])

    def test_strategy_without_trades(self, five_strategies):
        row = five_strategies.iloc[2]
        assert row.n_trades_is == 0
        assert row.total_pips_is == 0.0
        for name in ("win_rate_is", "expectancy_pips_is", "sharpe_is", "max_drawdown_pips_is"):
            assert np.isnan(row[name]), name

    def test_wins_only_and_losses_only(self, five_strategies):
        assert five_strategies.max_drawdown_pips_is.iloc[1] == 0.0
        assert five_strategies.win_rate_is.iloc[1] == 1.0
        assert five_strategies.max_drawdown_pips_is.iloc[3] == 10.0
        assert five_strategies.win_rate_is.iloc[3] == 0.0
        assert five_strategies.win_rate_is.iloc[4] == 0.0

    def test_no_oos_trades(self, five_strategies):
        assert five_strategies.n_trades_oos.tolist() == [0, 0, 0, 0, 0]
        assert five_strategies.profit_factor_oos.isna().all()


class TestSharpe:
    def test_value_on_25_days(self):
        ticks = _weekday_noons("2024-01-08", 25)
        # Winter: 17:00 New York is 22:00 UTC, so an exit on Monday 15 Jan at 22:30 UTC books
        # on Tuesday 16 Jan, trading day 6. Day 3 has two exits, summed.
        exits = [ticks[0], ticks[3], ticks[3] + NS_PER_HOUR, _ns("2024-01-15 22:30"), ticks[10]]
        trades = _trades([0] * 5, [10.0, -5.0, 2.0, 7.0, 20.0], exits)
        daily = np.zeros(25)
        daily[[0, 3, 6, 10]] = [10.0, -3.0, 7.0, 20.0]
        expected = daily.mean() / daily.std(ddof=1) * np.sqrt(260)
        metrics = strategy_metrics(trades, 1, FAR_FUTURE_NS, ticks)
        assert metrics.sharpe_is.iloc[0] == pytest.approx(expected, rel=1e-12)
        # By hand: mean 34 / 25 = 1.36; sum of squares 558 - 25 * 1.36**2 = 511.76; std
        # sqrt(511.76 / 24) = 4.6177; 1.36 / 4.6177 * sqrt(260) = 4.7490.
        assert metrics.sharpe_is.iloc[0] == pytest.approx(4.7490, abs=1e-4)

    def test_nan_under_20_days(self):
        ticks = _weekday_noons("2024-01-08", 19)
        trades = _trades([0, 0], [10.0, -4.0], ticks[[0, 5]])
        metrics = strategy_metrics(trades, 1, FAR_FUTURE_NS, ticks)
        assert np.isnan(metrics.sharpe_is.iloc[0])

    def test_exit_after_split_books_in_sample(self):
        ticks = _weekday_noons("2024-01-08", 45)
        split_ns = int(ticks[25] - NS_PER_HOUR)
        # Strategy 0: entered in-sample on day 24, exits out-of-sample on day 26.
        # Strategy 1: the same trade entered on day 26.
        trades = _trades([0, 1], [12.0, 12.0], ticks[[26, 26]], entry_time_ns=[ticks[24], ticks[26]])
        metrics = strategy_metrics(trades, 2, split_ns, ticks)
        assert metrics.n_trades_is.tolist() == [1, 0]
        assert metrics.n_trades_oos.tolist() == [0, 1]
        # In-sample has 25 tick days plus the exit day outside them.
        daily = np.zeros(26)
        daily[-1] = 12.0
        expected = daily.mean() / daily.std(ddof=1) * np.sqrt(260)
        assert metrics.sharpe_is.iloc[0] == pytest.approx(expected, rel=1e-12)
        # Out-of-sample has the 20 tick days from day 25.
        daily = np.zeros(20)
        daily[1] = 12.0
        expected = daily.mean() / daily.std(ddof=1) * np.sqrt(260)
        assert metrics.sharpe_oos.iloc[1] == pytest.approx(expected, rel=1e-12)
        assert np.isnan(metrics.sharpe_oos.iloc[0])

    def test_same_pnl_every_day_is_nan(self):
        ticks = _weekday_noons("2024-01-08", 20)
        trades = _trades([0] * 20, [0.1] * 20, ticks)
        metrics = strategy_metrics(trades, 1, FAR_FUTURE_NS, ticks)
        assert np.isnan(metrics.sharpe_is.iloc[0])


def test_trading_days_match_timeutil():
    rng = np.random.default_rng(2)
    timestamp_ns = np.sort(_ns("2024-03-01") + rng.integers(0, 60 * NS_PER_DAY, 5000))
    np.testing.assert_array_equal(trading_days(timestamp_ns), trading_day_ns(timestamp_ns))


def test_strategy_index_out_of_range_raises():
    ticks = _weekday_noons("2024-01-08", 3)
    with pytest.raises(ValueError, match="outside 0..1"):
        strategy_metrics(_trades([0, 2], [1.0, 1.0], ticks[:2]), 2, FAR_FUTURE_NS, ticks)


def test_many_strategies_fast():
    """10,000 strategies x 100 trades over a year of trading days in a few seconds."""
    rng = np.random.default_rng(1)
    n_strategies, per_strategy = 10_000, 100
    ticks = _weekday_noons("2024-01-01", 260)
    n = n_strategies * per_strategy
    exit_ns = np.sort(rng.choice(ticks, n)) + rng.integers(-NS_PER_HOUR, NS_PER_HOUR, n)
    trades = _trades(rng.integers(0, n_strategies, n), rng.normal(0.5, 10.0, n), exit_ns,
                     exit_idx=np.arange(n))
    started = time.perf_counter()
    metrics = strategy_metrics(trades, n_strategies, int(ticks[182]), ticks)
    seconds = time.perf_counter() - started
    assert len(metrics) == n_strategies
    assert metrics.n_trades_is.sum() + metrics.n_trades_oos.sum() == n
    assert metrics.sharpe_is.notna().all()
    assert seconds < 15.0

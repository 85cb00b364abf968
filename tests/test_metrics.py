"""Tests for per-strategy metrics on hand-made trade lists."""

from __future__ import annotations

import time

import numpy as np
import pytest

from fxresearch.backtest import Trades
from fxresearch.fills import DATA_GAP, END_OF_DATA, HORIZON, NO_ENTRY, SIGNAL, STOP_LOSS, TAKE_PROFIT
from fxresearch.metrics import METRIC_NAMES, PERIOD_SUFFIXES, TRADE_REASONS, strategy_metrics
from fxresearch.timeutil import NS_PER_DAY, NS_PER_MINUTE, datetime_to_ns

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


def _trades(strategy_index, pips, exit_time_ns, entry_time_ns=None, exit_idx=None, reason=None) -> Trades:
    n = len(pips)
    reason = np.zeros(n, dtype=np.int8) if reason is None else np.asarray(reason, dtype=np.int8)
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
        reason=reason,
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


T0_NS = _ns("2024-01-09 08:00")


def _minutes(*values: float) -> np.ndarray:
    return T0_NS + np.asarray(values, dtype=np.int64) * NS_PER_MINUTE


class TestTradeAverages:
    """Strategy 0: four in-sample trades; 1: one in-sample and one out-of-sample; 2: none."""

    @pytest.fixture
    def metrics(self):
        ticks = _minutes(0, 1000, 1500, 2000)
        trades = _trades(
            strategy_index=[0, 0, 0, 0, 1, 1],
            pips=[20.0, -10.0, 0.0, 10.0, -5.0, 6.0],
            entry_time_ns=_minutes(0, 100, 200, 300, 0, 1500),
            exit_time_ns=_minutes(30, 160, 290, 420, 15, 1600),
            reason=[TAKE_PROFIT, STOP_LOSS, HORIZON, SIGNAL, DATA_GAP, END_OF_DATA],
        )
        split_ns = int(_minutes(1200)[0])
        return strategy_metrics(trades, 3, split_ns, ticks, stop_loss_pips=np.array([10.0, 5.0, 8.0]))

    def test_avg_win_and_loss(self, metrics):
        # The 0-pip trade is neither a win nor a loss: wins 20 and 10, one loss of -10.
        assert metrics.avg_win_pips_is.iloc[0] == 15.0
        assert metrics.avg_loss_pips_is.iloc[0] == -10.0
        assert np.isnan(metrics.avg_win_pips_is.iloc[1])
        assert metrics.avg_loss_pips_is.iloc[1] == -5.0
        assert metrics.avg_win_pips_oos.iloc[1] == 6.0
        assert np.isnan(metrics.avg_loss_pips_oos.iloc[1])

    def test_avg_r_multiple(self, metrics):
        # Stop-loss 10 pips: R of 2, -1, 0 and 1, mean 0.5. Stop-loss 5 pips: -5 / 5 = -1.
        assert metrics.avg_r_multiple_is.iloc[0] == pytest.approx(0.5)
        assert metrics.avg_r_multiple_is.iloc[1] == pytest.approx(-1.0)
        assert metrics.avg_r_multiple_oos.iloc[1] == pytest.approx(1.2)

    def test_avg_holding_minutes(self, metrics):
        # Holding times 30, 60, 90 and 120 minutes.
        assert metrics.avg_holding_minutes_is.iloc[0] == pytest.approx(75.0)
        assert metrics.avg_holding_minutes_is.iloc[1] == pytest.approx(15.0)
        assert metrics.avg_holding_minutes_oos.iloc[1] == pytest.approx(100.0)

    def test_reason_counts(self, metrics):
        row = metrics.iloc[0]
        assert row.n_take_profit_is == 1
        assert row.n_stop_loss_is == 1
        assert row.n_horizon_is == 1
        assert row.n_signal_is == 1
        assert row.n_data_gap_is == 0
        assert row.n_end_of_data_is == 0
        assert metrics.n_data_gap_is.iloc[1] == 1
        assert metrics.n_end_of_data_oos.iloc[1] == 1
        assert metrics.n_end_of_data_is.iloc[1] == 0

    def test_strategy_without_trades(self, metrics):
        row = metrics.iloc[2]
        for suffix in PERIOD_SUFFIXES:
            for reason in TRADE_REASONS:
                assert row[f"n_{reason}{suffix}"] == 0, reason
            for name in ("avg_win_pips", "avg_loss_pips", "avg_r_multiple", "avg_holding_minutes"):
                assert np.isnan(row[name + suffix]), name + suffix
            assert row["exposure" + suffix] == 0.0

    def test_count_columns_are_int64(self, metrics):
        for reason in TRADE_REASONS:
            assert metrics[f"n_{reason}_is"].dtype == np.int64

    def test_r_multiple_nan_without_stop_loss(self):
        ticks = _minutes(0, 1000)
        trades = _trades([0, 1], [10.0, 10.0], _minutes(60, 60), entry_time_ns=_minutes(0, 0))
        without = strategy_metrics(trades, 2, FAR_FUTURE_NS, ticks)
        assert without.avg_r_multiple_is.isna().all()
        with_nan = strategy_metrics(trades, 2, FAR_FUTURE_NS, ticks, stop_loss_pips=np.array([np.nan, 20.0]))
        assert np.isnan(with_nan.avg_r_multiple_is.iloc[0])
        assert with_nan.avg_r_multiple_is.iloc[1] == 0.5


class TestExposure:
    def test_held_time_over_span(self):
        # In-sample span: ticks at 0 and 1000 minutes, split at 1200.
        ticks = _minutes(0, 500, 1000, 1300, 1500, 1700)
        split_ns = int(_minutes(1200)[0])
        trades = _trades(
            strategy_index=[0, 0, 1],
            pips=[1.0, 1.0, 1.0],
            entry_time_ns=_minutes(0, 200, 1300),
            exit_time_ns=_minutes(100, 300, 1400),
        )
        metrics = strategy_metrics(trades, 3, split_ns, ticks)
        # Strategy 0: two 100-minute trades in a 1000-minute span.
        assert metrics.exposure_is.iloc[0] == pytest.approx(0.2)
        assert metrics.exposure_oos.iloc[0] == 0.0
        # Strategy 1: 100 minutes out of the 400-minute out-of-sample span, 1300 to 1700.
        assert metrics.exposure_oos.iloc[1] == pytest.approx(0.25)
        assert metrics.exposure_is.iloc[1] == 0.0
        assert metrics.exposure_is.iloc[2] == 0.0
        assert metrics.exposure_oos.iloc[2] == 0.0

    def test_overlapping_trades_count_once(self):
        ticks = _minutes(0, 1000)
        # Listed out of entry order: 0-100 and 50-150 overlap, 60-70 lies inside both and
        # 150-200 touches the end of the second, so the union is 0-200. 500-600 is separate.
        trades = _trades(
            strategy_index=[0, 0, 0, 0, 0],
            pips=[1.0] * 5,
            entry_time_ns=_minutes(150, 0, 500, 60, 50),
            exit_time_ns=_minutes(200, 100, 600, 70, 150),
        )
        metrics = strategy_metrics(trades, 1, FAR_FUTURE_NS, ticks)
        assert metrics.exposure_is.iloc[0] == pytest.approx(0.3)

    def test_trade_across_split_counts_in_entry_period(self):
        ticks = _minutes(0, 1000, 1300, 2000)
        split_ns = int(_minutes(1200)[0])
        trades = _trades([0], [1.0], _minutes(1500), entry_time_ns=_minutes(900))
        metrics = strategy_metrics(trades, 1, split_ns, ticks)
        # 600 minutes held, all of it booked in-sample against the 1000-minute span.
        assert metrics.exposure_is.iloc[0] == pytest.approx(0.6)
        assert metrics.exposure_oos.iloc[0] == 0.0

    def test_nan_for_period_without_span(self):
        ticks = _minutes(0, 1000, 1300)
        split_ns = int(_minutes(1200)[0])
        trades = _trades([0], [1.0], _minutes(1350), entry_time_ns=_minutes(1300))
        metrics = strategy_metrics(trades, 1, split_ns, ticks)
        assert np.isnan(metrics.exposure_oos.iloc[0])
        assert metrics.exposure_is.iloc[0] == 0.0


def test_reason_counts_sum_to_n_trades():
    rng = np.random.default_rng(3)
    n = 2000
    ticks = _weekday_noons("2024-01-08", 30)
    exit_ns = np.sort(rng.choice(ticks, n))
    trades = _trades(rng.integers(0, 50, n), rng.normal(0.0, 10.0, n), exit_ns,
                     reason=rng.integers(0, len(TRADE_REASONS), n))
    metrics = strategy_metrics(trades, 50, int(ticks[20]), ticks)
    for suffix in PERIOD_SUFFIXES:
        counted = sum(metrics[f"n_{reason}{suffix}"] for reason in TRADE_REASONS)
        np.testing.assert_array_equal(counted.to_numpy(), metrics[f"n_trades{suffix}"].to_numpy())
    assert metrics.n_trades_is.sum() + metrics.n_trades_oos.sum() == n


def test_reason_names_follow_fill_codes():
    assert TRADE_REASONS == ("stop_loss", "take_profit", "horizon", "data_gap", "end_of_data", "signal")
    assert METRIC_NAMES[-len(TRADE_REASONS):] == tuple(f"n_{reason}" for reason in TRADE_REASONS)


def test_no_entry_reason_raises():
    ticks = _minutes(0, 1000)
    trades = _trades([0], [1.0], _minutes(60), reason=[NO_ENTRY])
    with pytest.raises(ValueError, match="exit reasons"):
        strategy_metrics(trades, 1, FAR_FUTURE_NS, ticks)


def test_exit_before_entry_raises():
    ticks = _minutes(0, 1000)
    trades = _trades([0], [1.0], _minutes(60), entry_time_ns=_minutes(90))
    with pytest.raises(ValueError, match="exit before they enter"):
        strategy_metrics(trades, 1, FAR_FUTURE_NS, ticks)


@pytest.mark.parametrize("stop_loss_pips, message", [
    (np.array([10.0]), "shape"),
    (np.array([10.0, 0.0]), "strategy 1 is 0.0"),
    (np.array([-5.0, 10.0]), "strategy 0 is -5.0"),
    (np.array([10.0, np.inf]), "strategy 1 is inf"),
])
def test_bad_stop_loss_raises(stop_loss_pips, message):
    ticks = _minutes(0, 1000)
    trades = _trades([0, 1], [1.0, 1.0], _minutes(60, 60))
    with pytest.raises(ValueError, match=message):
        strategy_metrics(trades, 2, FAR_FUTURE_NS, ticks, stop_loss_pips=stop_loss_pips)


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


class TestWithoutTrades:
    """Zero trades in total or in one period, as after a tight entry filter."""

    def test_no_trades_at_all(self):
        ticks = _weekday_noons("2024-01-08", 45)
        metrics = strategy_metrics(_trades([], [], []), 3, int(ticks[25]), ticks,
                                   stop_loss_pips=np.array([10.0, 20.0, np.nan]))
        assert len(metrics) == 3
        for suffix in PERIOD_SUFFIXES:
            assert metrics[f"n_trades{suffix}"].tolist() == [0, 0, 0]
            assert metrics[f"total_pips{suffix}"].tolist() == [0.0, 0.0, 0.0]
            assert metrics[f"exposure{suffix}"].tolist() == [0.0, 0.0, 0.0]
            for name in ("win_rate", "profit_factor", "expectancy_pips", "sharpe", "max_drawdown_pips",
                         "avg_win_pips", "avg_loss_pips", "avg_r_multiple", "avg_holding_minutes"):
                assert metrics[name + suffix].isna().all(), name + suffix
            for reason in TRADE_REASONS:
                assert metrics[f"n_{reason}{suffix}"].tolist() == [0, 0, 0], reason

    def test_no_trades_keeps_dtypes(self):
        ticks = _weekday_noons("2024-01-08", 45)
        metrics = strategy_metrics(_trades([], [], []), 2, int(ticks[25]), ticks)
        for name in metrics.columns:
            is_count = name == "strategy_index" or name.startswith("n_")
            assert metrics[name].dtype == (np.int64 if is_count else np.float64), name

    def test_trades_only_in_sample(self):
        ticks = _weekday_noons("2024-01-08", 45)
        split_ns = int(ticks[25] - NS_PER_HOUR)
        trades = _trades([0, 0, 1], [10.0, -4.0, 6.0], ticks[[2, 5, 7]])
        metrics = strategy_metrics(trades, 2, split_ns, ticks, stop_loss_pips=np.array([10.0, 20.0]))
        assert metrics.n_trades_is.tolist() == [2, 1]
        assert metrics.total_pips_is.tolist() == [6.0, 6.0]
        assert metrics.avg_r_multiple_is.tolist() == pytest.approx([0.3, 0.3])
        daily = np.zeros(25)
        daily[[2, 5]] = [10.0, -4.0]
        expected = daily.mean() / daily.std(ddof=1) * np.sqrt(260)
        assert metrics.sharpe_is.iloc[0] == pytest.approx(expected, rel=1e-12)
        assert metrics.n_trades_oos.tolist() == [0, 0]
        assert metrics.total_pips_oos.tolist() == [0.0, 0.0]
        assert metrics.exposure_oos.tolist() == [0.0, 0.0]
        assert metrics.sharpe_oos.isna().all()
        assert metrics.max_drawdown_pips_oos.isna().all()
        assert metrics.avg_holding_minutes_oos.isna().all()

    def test_trades_only_out_of_sample(self):
        ticks = _weekday_noons("2024-01-08", 45)
        split_ns = int(ticks[25] - NS_PER_HOUR)
        trades = _trades([1, 1], [3.0, -1.0], ticks[[30, 31]])
        metrics = strategy_metrics(trades, 2, split_ns, ticks)
        assert metrics.n_trades_is.tolist() == [0, 0]
        assert metrics.n_trades_oos.tolist() == [0, 2]
        assert metrics.total_pips_oos.tolist() == [0.0, 2.0]
        assert metrics.sharpe_is.isna().all()
        assert metrics.avg_holding_minutes_oos.iloc[1] == 60.0

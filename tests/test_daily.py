"""Tests of day-end marks, the marked-to-market daily P&L matrix and daily ratios."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fxresearch.daily import (
    calmar, daily_pnl_matrix, day_end_marks, max_drawdown, sharpe_daily, sortino_daily,
)
from fxresearch.timeutil import datetime_to_ns, trading_day_ns

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PIP = 0.0001


def ns(text: str) -> int:
    return int(datetime_to_ns([text])[0])


# In July New York is UTC-4, so each trading day ends at 21:00 UTC.
DAY_CLOSE_NS = np.array([ns("2024-07-01 20:59:00"), ns("2024-07-02 20:59:30"), ns("2024-07-03 20:58:00")])
DAY_CLOSE_BID = np.array([1.1000, 1.1020, 1.1010])
DAY_CLOSE_ASK = np.array([1.1002, 1.1022, 1.1012])
DAY_CLOSE_MID = (DAY_CLOSE_BID + DAY_CLOSE_ASK) / 2


def matrix_of(trades: list[tuple], **kwargs) -> np.ndarray:
    """Build the matrix from (strategy, entry time, exit time, entry, exit, side) tuples."""
    strategy, entry_time, exit_time, entry_price, exit_price, side = (np.array(c) for c in zip(*trades, strict=True))
    return daily_pnl_matrix(strategy, entry_time, exit_time, entry_price, exit_price, side, PIP,
                            DAY_CLOSE_NS, DAY_CLOSE_MID, **kwargs)


class TestDayEndMarks:
    def test_day_ends_at_17_new_york(self):
        times = datetime_to_ns(["2024-07-01 10:00:00", "2024-07-01 20:59:59", "2024-07-01 21:00:00",
                                "2024-07-02 12:00:00", "2024-07-02 23:00:00"])
        bid = np.array([1.0, 1.1, 1.2, 1.3, 1.4])
        days, close_ns, close_bid, close_ask = day_end_marks(times, bid, bid + 0.0002)
        assert len(days) == 3
        assert close_ns.tolist() == [times[1], times[3], times[4]]
        assert close_bid.tolist() == [1.1, 1.3, 1.4]
        assert np.allclose(close_ask, [1.1002, 1.3002, 1.4002])
        assert days.tolist() == trading_day_ns(close_ns).tolist()

    def test_unsorted_ticks_rejected(self):
        times = np.array([2, 1], dtype=np.int64)
        with pytest.raises(ValueError, match="not sorted"):
            day_end_marks(times, np.ones(2), np.ones(2))

    def test_empty_ticks_give_no_days(self):
        days, close_ns, close_bid, close_ask = day_end_marks(np.empty(0, np.int64), np.empty(0), np.empty(0))
        assert len(days) == len(close_ns) == len(close_bid) == len(close_ask) == 0

    def test_real_eurusd_days_end_before_17_new_york(self):
        path = DATA_DIR / "parquet" / "EURUSD_2014.parquet"
        if not path.exists():
            pytest.skip(f"real tick data not found at {path}")
        frame = pd.read_parquet(path)
        times = datetime_to_ns(frame["timestamp"])
        days, close_ns, close_bid, _ = day_end_marks(times, frame["bid"].to_numpy(), frame["ask"].to_numpy())

        # 2014-05-01 to 05-15 UTC, two weekends: trading days May 1, 2, 5-9 and 12-16, the
        # last one partial because the data ends at 19:59 New York on May 15.
        assert len(days) == 12
        local = pd.DatetimeIndex(pd.to_datetime(close_ns, utc=True)).tz_convert("America/New_York")
        # Every complete day's last tick falls in the hour before 17:00 New York.
        assert (local[:-1].hour == 16).all()
        next_tick = times[np.searchsorted(times, close_ns[:-1], side="right")]
        assert (trading_day_ns(next_tick) > days[:-1]).all()
        assert np.isclose(close_bid[0], frame["bid"].to_numpy()[np.searchsorted(times, close_ns[0], side="right") - 1])


class TestDailyPnlMatrix:
    def test_trade_across_two_days_splits_at_mark(self):
        # Long at 1.1000 on day 0, marked at mid 1.1001, exits 1.1030 on day 1.
        pnl = matrix_of([(0, ns("2024-07-01 12:00"), ns("2024-07-02 12:00"), 1.1000, 1.1030, 1)])
        assert pnl.shape == (1, 3)
        assert pnl[0, 0] == pytest.approx(1.0)
        assert pnl[0, 1] == pytest.approx(29.0)
        assert pnl[0, 2] == 0.0
        assert pnl.sum() == pytest.approx(30.0)

    def test_short_across_three_days_sums_to_trade(self):
        pnl = matrix_of([(0, ns("2024-07-01 12:00"), ns("2024-07-03 10:00"), 1.1005, 1.0995, -1)])
        # Marks at mid 1.1001 then 1.1021: +4 pips, -20 pips, then 1.1021 -> 1.0995 is +26 pips.
        assert pnl[0].tolist() == pytest.approx([4.0, -20.0, 26.0])
        assert pnl.sum() == pytest.approx(10.0)

    def test_days_without_position_are_zero(self):
        pnl = matrix_of([
            (1, ns("2024-07-02 01:00"), ns("2024-07-02 03:00"), 1.1010, 1.1000, 1),
            (0, ns("2024-07-01 01:00"), ns("2024-07-01 02:00"), 1.1000, 1.1005, 1),
        ], n_strategies=3)
        assert pnl.shape == (3, 3)
        assert pnl[0].tolist() == pytest.approx([5.0, 0.0, 0.0])
        assert pnl[1].tolist() == pytest.approx([0.0, -10.0, 0.0])
        assert pnl[2].tolist() == [0.0, 0.0, 0.0]

    def test_bid_ask_marks_by_side(self):
        trades = [
            (0, ns("2024-07-01 12:00"), ns("2024-07-02 12:00"), 1.1002, 1.1030, 1),
            (1, ns("2024-07-01 12:00"), ns("2024-07-02 12:00"), 1.1000, 1.0990, -1),
        ]
        pnl = matrix_of(trades, day_close_bid=DAY_CLOSE_BID, day_close_ask=DAY_CLOSE_ASK)
        # The long is marked at bid 1.1000: the spread it paid shows on day 0.
        assert pnl[0, :2].tolist() == pytest.approx([-2.0, 30.0])
        # The short is marked at ask 1.1002.
        assert pnl[1, :2].tolist() == pytest.approx([-2.0, 12.0])

    def test_exit_on_close_tick_same_day(self):
        pnl = matrix_of([(0, ns("2024-07-01 12:00"), DAY_CLOSE_NS[0], 1.1000, 1.1010, 1)])
        assert pnl[0].tolist() == pytest.approx([10.0, 0.0, 0.0])

    def test_kernel_matches_python_reference(self):
        rng = np.random.default_rng(3)
        n_days, n_trades, n_strategies = 40, 500, 7
        close_ns = np.cumsum(rng.integers(10, 20, n_days)) * 3_600_000_000_000
        mid = 1.1 + rng.normal(0, 0.001, n_days)
        entry = rng.integers(0, close_ns[-1] - 1, n_trades)
        exit_ = np.minimum(entry + rng.integers(0, 5 * 86_400_000_000_000, n_trades), close_ns[-1])
        strategy = rng.integers(0, n_strategies, n_trades)
        side = rng.choice([-1, 1], n_trades)
        entry_price = 1.1 + rng.normal(0, 0.001, n_trades)
        exit_price = 1.1 + rng.normal(0, 0.001, n_trades)
        pnl = daily_pnl_matrix(strategy, entry, exit_, entry_price, exit_price, side, PIP, close_ns, mid,
                               n_strategies=n_strategies)

        expected = np.zeros((n_strategies, n_days))
        for k in range(n_trades):
            first = int(np.searchsorted(close_ns, entry[k]))
            last = int(np.searchsorted(close_ns, exit_[k]))
            previous = entry_price[k]
            for day in range(first, last):
                expected[strategy[k], day] += (mid[day] - previous) * side[k] / PIP
                previous = mid[day]
            expected[strategy[k], last] += (exit_price[k] - previous) * side[k] / PIP
        assert np.allclose(pnl, expected, atol=1e-9)
        totals = np.bincount(strategy, weights=(exit_price - entry_price) * side / PIP, minlength=n_strategies)
        assert np.allclose(pnl.sum(axis=1), totals, atol=1e-9)

    def test_exit_after_last_day_end_rejected(self):
        with pytest.raises(ValueError, match="after the last day end"):
            matrix_of([(0, ns("2024-07-01 12:00"), ns("2024-07-04 12:00"), 1.1, 1.1, 1)])

    def test_exit_before_entry_rejected(self):
        with pytest.raises(ValueError, match="exit before they enter"):
            matrix_of([(0, ns("2024-07-02 12:00"), ns("2024-07-01 12:00"), 1.1, 1.1, 1)])

    def test_side_zero_rejected(self):
        with pytest.raises(ValueError, match=r"\+1 or -1"):
            matrix_of([(0, ns("2024-07-01 12:00"), ns("2024-07-01 13:00"), 1.1, 1.1, 0)])

    def test_strategy_outside_rows_rejected(self):
        with pytest.raises(ValueError, match="outside"):
            matrix_of([(4, ns("2024-07-01 12:00"), ns("2024-07-01 13:00"), 1.1, 1.1, 1)], n_strategies=2)

    def test_bid_without_ask_rejected(self):
        with pytest.raises(ValueError, match="both"):
            matrix_of([(0, ns("2024-07-01 12:00"), ns("2024-07-01 13:00"), 1.1, 1.1, 1)],
                      day_close_bid=DAY_CLOSE_BID)


# Five days repeated five times: mean 0.4 pips, squared deviations 17.2 per cycle.
SERIES_25 = np.tile([2.0, -1.0, 0.0, 3.0, -2.0], 5)


class TestDailyRatios:
    def test_sharpe_by_hand(self):
        # std = sqrt(86 / 24) = 1.892969; 0.4 / 1.892969 * sqrt(260) = 3.407243.
        assert sharpe_daily(SERIES_25) == pytest.approx(0.4 / math.sqrt(86 / 24) * math.sqrt(260))
        assert sharpe_daily(SERIES_25) == pytest.approx(3.407243, abs=1e-6)

    def test_sortino_by_hand(self):
        # Downside squares 0, 1, 0, 0, 4 per cycle: mean 1 over all 25 days, deviation 1.
        assert sortino_daily(SERIES_25) == pytest.approx(0.4 * math.sqrt(260))
        assert sortino_daily(SERIES_25) == pytest.approx(6.449806, abs=1e-6)

    def test_max_drawdown_and_calmar_by_hand(self):
        # Equity 2, 1, 1, 4, 2, 4, ...: each cycle falls 2 from its peak of 4, 6, 8, 10.
        assert max_drawdown(SERIES_25) == pytest.approx(2.0)
        assert calmar(SERIES_25) == pytest.approx(0.4 * 260 / 2.0)

    def test_drawdown_counts_from_zero(self):
        assert max_drawdown(np.array([-3.0, 1.0])) == pytest.approx(3.0)
        assert max_drawdown(np.array([1.0, 2.0])) == 0.0

    def test_nan_below_20_days(self):
        short = SERIES_25[:19]
        assert math.isnan(sharpe_daily(short))
        assert math.isnan(sortino_daily(short))
        assert math.isnan(calmar(short))
        assert not math.isnan(sharpe_daily(SERIES_25[:20]))

    def test_min_days_configurable(self):
        assert not math.isnan(sharpe_daily(SERIES_25[:10], min_days=5))
        assert math.isnan(sharpe_daily(SERIES_25, min_days=30))

    def test_matrix_rows_match_single_series(self):
        matrix = np.vstack([SERIES_25, -SERIES_25, np.zeros(25)])
        sharpe = sharpe_daily(matrix)
        assert sharpe[0] == pytest.approx(sharpe_daily(SERIES_25))
        assert sharpe[1] == pytest.approx(-sharpe_daily(SERIES_25))
        assert math.isnan(sharpe[2])
        assert math.isnan(sortino_daily(matrix)[2])
        assert max_drawdown(matrix).tolist() == pytest.approx([2.0, 12.0, 0.0])

"""Trading costs: spread markup, slippage, rollover counting, swap, commission and net P&L.

The worked examples of docs/costs_and_pnl.md are checked here with the same numbers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fxresearch.config import AccountConfig, ConfigError, CostsConfig, load_config
from fxresearch.conversion import RateSources
from fxresearch.costs import (
    apply_slippage,
    apply_spread_markup,
    commission_usd,
    count_rollovers,
    spread_markup_for,
    swap_pips,
    swap_rates_for,
    trade_costs_and_pnl,
)
from fxresearch.fills import REASONS
from fxresearch.instruments import get_instrument
from fxresearch.timeutil import datetime_to_ns

STOP_LOSS = REASONS.index("stop_loss")
TAKE_PROFIT = REASONS.index("take_profit")
HORIZON = REASONS.index("horizon")
DATA_GAP = REASONS.index("data_gap")
END_OF_DATA = REASONS.index("end_of_data")
SIGNAL = REASONS.index("signal")

EURUSD = get_instrument("EURUSD")
NO_SWAP = CostsConfig(swap_long_pips_per_night={}, swap_short_pips_per_night={})


def new_york_ns(*times: str) -> np.ndarray:
    """Return int64 ns UTC of New York wall-clock times."""
    return datetime_to_ns([pd.Timestamp(t, tz="America/New_York") for t in times])


def utc_ns(*times: str) -> np.ndarray:
    return datetime_to_ns([pd.Timestamp(t, tz="UTC") for t in times])


def trades_frame(side, entry_time, exit_time, entry_price, exit_price, reason) -> pd.DataFrame:
    return pd.DataFrame({
        "side": np.asarray(side, dtype=np.int8),
        "entry_time": np.asarray(entry_time, dtype=np.int64),
        "entry_price": entry_price,
        "exit_time": np.asarray(exit_time, dtype=np.int64),
        "exit_price": exit_price,
        "reason": reason,
    })


# --- spread markup ----------------------------------------------------------------------


class TestSpreadMarkup:
    def test_doc_example_odd_points_extra_on_ask(self):
        bid, ask = apply_spread_markup(np.array([1.10000]), np.array([1.10002]), 0.5, 0.0001)
        assert bid[0] == 1.09998
        assert ask[0] == 1.10005

    def test_even_points_symmetric_around_mid(self):
        bid_in = np.array([1.10000, 1.20010])
        ask_in = np.array([1.10002, 1.20013])
        bid, ask = apply_spread_markup(bid_in, ask_in, 1.0, 0.0001)
        np.testing.assert_array_equal(bid, [1.09995, 1.20005])
        np.testing.assert_array_equal(ask, [1.10007, 1.20018])
        np.testing.assert_allclose((bid + ask) / 2, (bid_in + ask_in) / 2, atol=1e-12)

    def test_spread_widens_by_markup_in_points(self):
        rng = np.random.default_rng(3)
        bid_in = np.round(1.1 + rng.normal(0, 0.01, 1000), 5)
        ask_in = np.round(bid_in + rng.integers(0, 20, 1000) * 1e-5, 5)
        bid, ask = apply_spread_markup(bid_in, ask_in, 0.7, 0.0001)
        widened_points = np.rint((ask - bid) / 1e-5) - np.rint((ask_in - bid_in) / 1e-5)
        assert (widened_points == 7).all()

    def test_inputs_unchanged_and_new_arrays(self):
        bid_in = np.array([150.000])
        ask_in = np.array([150.010])
        bid, ask = apply_spread_markup(bid_in, ask_in, 0.0, 0.01)
        assert bid is not bid_in
        assert ask is not ask_in
        assert bid_in[0] == 150.000
        assert ask_in[0] == 150.010

    def test_jpy_pair_on_three_decimals(self):
        bid, ask = apply_spread_markup(np.array([150.000]), np.array([150.010]), 1.0, 0.01)
        assert bid[0] == 149.995
        assert ask[0] == 150.015

    def test_metal_uses_given_point_size(self):
        gold = get_instrument("XAUUSD")
        bid, ask = apply_spread_markup(np.array([2300.10]), np.array([2300.30]), 3.0, gold.pip_size,
                                       point_size=gold.point_size)
        assert bid[0] == 2300.09
        assert ask[0] == 2300.32

    def test_negative_markup_rejected(self):
        with pytest.raises(ValueError, match="spread markup"):
            apply_spread_markup(np.array([1.1]), np.array([1.1]), -0.1, 0.0001)

    def test_markup_looked_up_by_symbol(self):
        costs = CostsConfig(spread_markup_pips={"eurusd": 0.3})
        assert spread_markup_for("EURUSD", costs) == 0.3
        assert spread_markup_for("GBPUSD", costs) == 0.0


# --- slippage ---------------------------------------------------------------------------


class TestSlippage:
    def test_long_entry_up_market_exit_down(self):
        entry, exit_ = apply_slippage(np.array([1.08500]), np.array([1.08300]), np.array([1]),
                                      np.array([STOP_LOSS]), 0.5, 0.0001)
        assert entry[0] == pytest.approx(1.08505, abs=1e-12)
        assert exit_[0] == pytest.approx(1.08295, abs=1e-12)

    def test_short_entry_down_market_exit_up(self):
        entry, exit_ = apply_slippage(np.array([150.000]), np.array([150.200]), np.array([-1]),
                                      np.array([STOP_LOSS]), 2.0, 0.01)
        assert entry[0] == pytest.approx(149.98, abs=1e-12)
        assert exit_[0] == pytest.approx(150.22, abs=1e-12)

    def test_no_slippage_on_take_profit(self):
        entry, exit_ = apply_slippage(np.array([1.08500, 1.08500]), np.array([1.08700, 1.08300]),
                                      np.array([1, -1]), np.array([TAKE_PROFIT, TAKE_PROFIT]), 0.5, 0.0001)
        np.testing.assert_array_equal(exit_, [1.08700, 1.08300])
        np.testing.assert_allclose(entry, [1.08505, 1.08495], atol=1e-12)

    @pytest.mark.parametrize("reason", [STOP_LOSS, HORIZON, DATA_GAP, END_OF_DATA, SIGNAL])
    def test_every_market_exit_slips(self, reason):
        _, exit_ = apply_slippage(np.array([1.1]), np.array([1.1]), np.array([1]), np.array([reason]), 1.0, 0.0001)
        assert exit_[0] == pytest.approx(1.0999, abs=1e-12)

    def test_invalid_reason_rejected(self):
        with pytest.raises(ValueError, match="not a trade exit"):
            apply_slippage(np.array([1.1]), np.array([1.1]), np.array([1]), np.array([6]), 1.0, 0.0001)

    def test_invalid_side_rejected(self):
        with pytest.raises(ValueError, match="side"):
            apply_slippage(np.array([1.1]), np.array([1.1]), np.array([0]), np.array([HORIZON]), 1.0, 0.0001)

    def test_doc_example_net_columns(self):
        entry_time = new_york_ns("2024-03-13 10:00", "2024-03-13 10:00")
        exit_time = new_york_ns("2024-03-13 11:00", "2024-03-13 11:00")
        trades = trades_frame([1, 1], entry_time, exit_time, [1.08500, 1.08500], [1.08300, 1.08700],
                              ["stop_loss", "take_profit"])
        costs = CostsConfig(slippage_pips=0.5)
        result = trade_costs_and_pnl(trades, EURUSD, costs, AccountConfig(), RateSources.empty())
        np.testing.assert_allclose(result["entry_price_net"], [1.08505, 1.08505], atol=1e-12)
        np.testing.assert_allclose(result["exit_price_net"], [1.08295, 1.08700], atol=1e-12)
        np.testing.assert_array_equal(result["pips_gross"], [-20.0, 20.0])
        np.testing.assert_array_equal(result["pips_net"], [-21.0, 19.5])
        np.testing.assert_allclose(result["pnl_usd"], [-217.00, 188.00], atol=1e-6)


# --- rollovers --------------------------------------------------------------------------


class TestRollovers:
    def test_wednesday_counts_as_wednesday(self):
        nights, wednesdays = count_rollovers(new_york_ns("2024-03-13 10:00"), new_york_ns("2024-03-14 10:00"))
        assert nights.tolist() == [1]
        assert wednesdays.tolist() == [1]

    def test_tuesday_to_thursday_two_nights_one_wednesday(self):
        nights, wednesdays = count_rollovers(new_york_ns("2024-03-12 10:00"), new_york_ns("2024-03-14 10:00"))
        assert nights.tolist() == [2]
        assert wednesdays.tolist() == [1]

    def test_friday_to_monday_one_rollover(self):
        nights, wednesdays = count_rollovers(new_york_ns("2024-03-08 10:00"), new_york_ns("2024-03-11 10:00"))
        assert nights.tolist() == [1]
        assert wednesdays.tolist() == [0]

    def test_full_week_five_rollovers(self):
        nights, wednesdays = count_rollovers(new_york_ns("2024-06-03 09:00"), new_york_ns("2024-06-10 09:00"))
        assert nights.tolist() == [5]
        assert wednesdays.tolist() == [1]

    def test_bounds_entry_exclusive_exit_inclusive(self):
        rollover = new_york_ns("2024-06-04 17:00")[0]
        entry = np.array([rollover, rollover - 1, rollover - 1])
        exit_ = np.array([rollover + 10, rollover, rollover - 1])
        nights, _ = count_rollovers(entry, exit_)
        assert nights.tolist() == [0, 1, 0]

    def test_march_dst_change_moves_rollover_to_21_utc(self):
        # US daylight saving began Sunday 2024-03-10: Friday's rollover is 22:00 UTC and
        # Monday's is 21:00 UTC.
        entry = utc_ns("2024-03-08 21:30", "2024-03-08 22:30", "2024-03-11 20:30")
        exit_ = utc_ns("2024-03-08 21:59", "2024-03-11 21:30", "2024-03-11 21:00")
        nights, _ = count_rollovers(entry, exit_)
        assert nights.tolist() == [0, 1, 1]

    def test_november_dst_change_moves_rollover_to_22_utc(self):
        # US daylight saving ended Sunday 2024-11-03: Friday's rollover is 21:00 UTC and
        # Monday's is 22:00 UTC.
        entry = utc_ns("2024-11-01 20:30", "2024-11-04 20:30", "2024-11-04 20:30")
        exit_ = utc_ns("2024-11-01 21:00", "2024-11-04 21:30", "2024-11-04 22:00")
        nights, _ = count_rollovers(entry, exit_)
        assert nights.tolist() == [1, 0, 1]

    def test_dst_week_wednesday_triple(self):
        # Wednesday 2024-11-06 after the change: 17:00 New York is 22:00 UTC.
        entry = utc_ns("2024-11-06 21:30", "2024-11-06 21:30")
        exit_ = utc_ns("2024-11-06 21:59", "2024-11-06 22:00")
        nights, wednesdays = count_rollovers(entry, exit_)
        assert nights.tolist() == [0, 1]
        assert wednesdays.tolist() == [0, 1]
        swap = swap_pips(np.array([1, 1]), nights, wednesdays, -0.7, 0.2)
        np.testing.assert_allclose(swap, [0.0, -2.1])

    def test_matches_day_by_day_reference(self):
        rng = np.random.default_rng(11)
        start = utc_ns("2023-12-20")[0]
        entry = start + rng.integers(0, 400 * 86_400, 300) * 1_000_000_000
        exit_ = entry + rng.integers(0, 20 * 86_400, 300) * 1_000_000_000
        nights, wednesdays = count_rollovers(entry, exit_)

        # Reference: walk every New York calendar day with a weekday 17:00 rollover.
        days = pd.date_range("2023-12-01", "2025-03-01", freq="D")
        days = days[days.dayofweek < 5]
        instants = [pd.Timestamp(f"{d.date()} 17:00", tz="America/New_York") for d in days]
        instants_ns = datetime_to_ns(instants)
        is_wednesday = np.array([d.dayofweek == 2 for d in days])
        for i in range(len(entry)):
            held = (instants_ns > entry[i]) & (instants_ns <= exit_[i])
            assert nights[i] == held.sum()
            assert wednesdays[i] == (held & is_wednesday).sum()

    def test_exit_before_entry_rejected(self):
        with pytest.raises(ValueError, match="exit before"):
            count_rollovers(np.array([10]), np.array([5]))

    def test_empty_arrays(self):
        nights, wednesdays = count_rollovers(np.array([], dtype=np.int64), np.array([], dtype=np.int64))
        assert len(nights) == 0
        assert len(wednesdays) == 0


# --- swap and commission ----------------------------------------------------------------


class TestSwapAndCommission:
    def test_swap_side_rates_and_triple(self):
        swap = swap_pips(np.array([1, -1, 1, -1]), np.array([1, 1, 4, 0]), np.array([0, 1, 1, 0]), -0.7, 0.2)
        np.testing.assert_allclose(swap, [-0.7, 0.6, -4.2, 0.0])

    def test_swap_zero_nights_is_positive_zero(self):
        swap = swap_pips(np.array([-1]), np.array([0]), np.array([0]), 0.0, -3.0)
        assert np.signbit(swap[0]) == np.False_

    def test_doc_commission_example(self):
        assert commission_usd(1, 250_000, 3.5, 100_000) == pytest.approx(17.50)

    def test_commission_counts_trades(self):
        assert commission_usd(10, 100_000, 3.5, 100_000) == pytest.approx(70.0)
        np.testing.assert_allclose(commission_usd(np.array([1, 2]), 100_000, 3.5, 100_000), [7.0, 14.0])

    def test_swap_rates_default_and_missing_symbol(self):
        costs = CostsConfig()
        assert swap_rates_for("EURUSD", costs) == (-0.7, 0.2)
        assert swap_rates_for("XAUEUR", costs) == (0.0, 0.0)

    def test_doc_wednesday_triple_swap_example(self):
        entry = new_york_ns("2024-03-13 10:00")
        exit_ = new_york_ns("2024-03-14 10:00")
        trades = trades_frame([1], entry, exit_, [1.08500], [1.08500], ["horizon"])
        costs = CostsConfig(swap_long_pips_per_night={"EURUSD": -0.7})
        result = trade_costs_and_pnl(trades, EURUSD, costs, AccountConfig(), RateSources.empty())
        assert result["swap_pips"].iloc[0] == pytest.approx(-2.1)
        assert result["pips_net"].iloc[0] == pytest.approx(-2.1)
        assert result["pnl_usd"].iloc[0] == pytest.approx(-28.00)

    def test_doc_friday_to_monday_one_night(self):
        entry = new_york_ns("2024-03-08 10:00")
        exit_ = new_york_ns("2024-03-11 10:00")
        trades = trades_frame([1], entry, exit_, [1.08500], [1.08500], ["horizon"])
        costs = CostsConfig(swap_long_pips_per_night={"EURUSD": -0.7})
        result = trade_costs_and_pnl(trades, EURUSD, costs, AccountConfig(), RateSources.empty())
        assert result["swap_pips"].iloc[0] == pytest.approx(-0.7)


# --- trade_costs_and_pnl ----------------------------------------------------------------


class TestTradeCostsAndPnl:
    def test_doc_eurusd_example(self):
        times = new_york_ns("2024-06-12 10:00", "2024-06-12 11:00")
        trades = trades_frame([1], times[:1], times[1:], [1.08500], [1.08750], ["take_profit"])
        result = trade_costs_and_pnl(trades, EURUSD, NO_SWAP, AccountConfig(), RateSources.empty())
        row = result.iloc[0]
        assert row["pips_gross"] == 25.0
        assert row["pips_net"] == 25.0
        assert row["commission_usd"] == 7.0
        assert row["usd_rate"] == 1.0
        assert row["usd_rate_source"] == "quote_usd"
        assert row["pnl_usd"] == pytest.approx(243.00)

    def test_integer_reason_codes_and_datetime_columns(self):
        times = new_york_ns("2024-06-12 10:00", "2024-06-12 11:00")
        trades = trades_frame([1], times[:1], times[1:], [1.08500], [1.08750], [TAKE_PROFIT])
        trades["entry_time"] = pd.to_datetime(trades["entry_time"], utc=True)
        trades["exit_time"] = pd.to_datetime(trades["exit_time"], utc=True)
        result = trade_costs_and_pnl(trades, EURUSD, CostsConfig(slippage_pips=1.0), AccountConfig(),
                                     RateSources.empty())
        assert result["pips_net"].iloc[0] == 24.0

    def test_index_kept_and_columns_listed(self):
        times = new_york_ns("2024-06-12 10:00", "2024-06-12 11:00")
        trades = trades_frame([1, -1], [times[0]] * 2, [times[1]] * 2, [1.085, 1.085], [1.086, 1.084],
                              ["signal", "take_profit"])
        trades.index = [7, 9]
        result = trade_costs_and_pnl(trades, EURUSD, NO_SWAP, AccountConfig(), RateSources.empty())
        assert result.index.tolist() == [7, 9]
        assert list(result.columns) == ["entry_price_net", "exit_price_net", "pips_gross", "pips_net",
                                        "swap_pips", "commission_usd", "pnl_usd", "usd_rate", "usd_rate_source"]
        np.testing.assert_allclose(result["pnl_usd"], [93.0, 93.0])

    def test_empty_trades(self):
        trades = trades_frame([], [], [], [], [], pd.Series([], dtype=object))
        result = trade_costs_and_pnl(trades, get_instrument("GBPJPY"), CostsConfig(), AccountConfig(),
                                     RateSources.empty())
        assert len(result) == 0
        assert "pnl_usd" in result.columns

    def test_missing_column_rejected(self):
        trades = trades_frame([1], [0], [1], [1.0], [1.0], ["horizon"]).drop(columns="reason")
        with pytest.raises(ValueError, match="reason"):
            trade_costs_and_pnl(trades, EURUSD, CostsConfig(), AccountConfig(), RateSources.empty())

    def test_unknown_reason_name_rejected(self):
        trades = trades_frame([1], [0], [1], [1.0], [1.0], ["no_entry"])
        with pytest.raises(ValueError, match="Unknown exit reasons"):
            trade_costs_and_pnl(trades, EURUSD, CostsConfig(), AccountConfig(), RateSources.empty())


# --- configuration ----------------------------------------------------------------------


class TestCostsConfig:
    def test_toml_with_nested_tables_loads(self, tmp_path: Path):
        path = tmp_path / "config.toml"
        path.write_text(
            "[costs]\n"
            "slippage_pips = 0.5\n"
            "commission_per_lot_per_side_usd = 3\n"
            "[costs.spread_markup_pips]\n"
            "EURUSD = 0.3\n"
            "GBPJPY = 1\n"
            "[costs.swap_long_pips_per_night]\n"
            "EURUSD = -0.5\n"
            "[account]\n"
            "lots = 2.5\n"
            "[account.fixed_rates]\n"
            "JPY = 0.0067\n"
        )
        config = load_config(path)
        assert config.costs.slippage_pips == 0.5
        assert config.costs.commission_per_lot_per_side_usd == 3.0
        assert config.costs.spread_markup_pips == {"EURUSD": 0.3, "GBPJPY": 1.0}
        assert isinstance(config.costs.spread_markup_pips["GBPJPY"], float)
        assert config.costs.swap_long_pips_per_night == {"EURUSD": -0.5}
        assert config.costs.swap_short_pips_per_night["EURUSD"] == 0.2
        assert config.account.lots == 2.5
        assert config.account.fixed_rates == {"JPY": 0.0067}

    def test_non_numeric_table_value_rejected(self, tmp_path: Path):
        path = tmp_path / "config.toml"
        path.write_text('[costs.spread_markup_pips]\nEURUSD = "wide"\n')
        with pytest.raises(ConfigError, match="spread_markup_pips.EURUSD"):
            load_config(path)

    def test_account_currency_other_than_usd_rejected_at_load(self, tmp_path: Path):
        path = tmp_path / "config.toml"
        path.write_text('[account]\ncurrency = "EUR"\n')
        with pytest.raises(ConfigError, match="only \"USD\""):
            load_config(path)

    def test_negative_slippage_rejected(self):
        with pytest.raises(ConfigError, match="slippage_pips"):
            CostsConfig(slippage_pips=-1.0)

    def test_fixed_rate_key_must_be_currency_code(self):
        with pytest.raises(ConfigError, match="currency code"):
            AccountConfig(fixed_rates={"JPYUSD": 0.0067})


def test_gold_lot_is_one_hundred_ounces():
    from fxresearch.config import AccountConfig, CostsConfig
    from fxresearch.conversion import RateSources
    from fxresearch.costs import trade_costs_and_pnl
    from fxresearch.instruments import get_instrument

    trades = pd.DataFrame({"side": [1], "entry_time": [1_700_000_000_000_000_000],
                           "exit_time": [1_700_000_600_000_000_000], "entry_price": [2000.50],
                           "exit_price": [2000.15], "reason": ["stop_loss"]})
    out = trade_costs_and_pnl(trades, get_instrument("XAUUSD"), CostsConfig(), AccountConfig(), RateSources.empty())
    assert out["pips_gross"].iloc[0] == pytest.approx(-35.0)
    assert out["commission_usd"].iloc[0] == pytest.approx(7.0)
    assert out["pnl_usd"].iloc[0] == pytest.approx(-42.0)

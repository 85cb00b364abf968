"""USD conversion: the five rate sources, the no-lookahead tick lookup and the real tick files.

The conversion examples of docs/costs_and_pnl.md are checked here with the same numbers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fxresearch import conversion
from fxresearch.config import AccountConfig, Config, CostsConfig
from fxresearch.conversion import RateSources, pnl_usd, quote_to_usd_rate
from fxresearch.costs import trade_costs_and_pnl
from fxresearch.instruments import get_instrument
from fxresearch.timeutil import datetime_to_ns

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PARQUET_DIR = DATA_DIR / "parquet"

NO_SWAP = CostsConfig(swap_long_pips_per_night={}, swap_short_pips_per_night={})
GBPJPY = get_instrument("GBPJPY")


def utc_ns(*times: str) -> np.ndarray:
    return datetime_to_ns([pd.Timestamp(t, tz="UTC") for t in times])


def write_ticks(folder: Path, name: str, times: list[str], bid: list[float], ask: list[float]) -> Path:
    path = folder / name
    table = pa.table({
        "timestamp": pa.array(utc_ns(*times), pa.timestamp("ns", tz="UTC")),
        "bid": pa.array(bid, pa.float64()),
        "ask": pa.array(ask, pa.float64()),
    })
    pq.write_table(table, path)
    return path


def one_trade(side: int, entry_price: float, exit_price: float, exit_time: str,
              reason: str = "take_profit") -> pd.DataFrame:
    exit_ns = utc_ns(exit_time)[0]
    return pd.DataFrame({
        "side": [side], "entry_time": [exit_ns - 3_600_000_000_000], "entry_price": [entry_price],
        "exit_time": [exit_ns], "exit_price": [exit_price], "reason": [reason],
    })


@pytest.fixture
def usdjpy_folder(tmp_path: Path) -> Path:
    """A folder with USDJPY_2024 ticks around 2024-06-12 14:30:00 UTC, as in the docs."""
    write_ticks(tmp_path, "USDJPY_2024.parquet",
                ["2024-06-12 14:29:58", "2024-06-12 14:30:01"], [157.010, 157.190], [157.030, 157.210])
    return tmp_path


# --- the documented cases ---------------------------------------------------------------


class TestDocExamples:
    def test_quote_usd_rate_is_one(self):
        rates, source, flagged = quote_to_usd_rate(get_instrument("EURUSD"), utc_ns("2024-06-12 14:30"),
                                                   np.array([1.0875]), RateSources.empty())
        assert rates.tolist() == [1.0]
        assert source == "quote_usd"
        assert flagged is False

    def test_base_usd_usdjpy(self):
        trades = one_trade(-1, 150.250, 149.750, "2024-06-12 14:30")
        result = trade_costs_and_pnl(trades, get_instrument("USDJPY"), NO_SWAP, AccountConfig(), RateSources.empty())
        row = result.iloc[0]
        assert row["pips_gross"] == 50.0
        assert row["usd_rate"] == pytest.approx(1 / 149.75)
        assert row["usd_rate_source"] == "base_usd"
        assert row["pnl_usd"] == pytest.approx(326.89, abs=0.005)

    def test_cross_from_usd_pair_ticks(self, usdjpy_folder: Path):
        sources = RateSources.from_folder(usdjpy_folder, Config())
        trades = one_trade(1, 190.000, 190.400, "2024-06-12 14:30:00")
        result = trade_costs_and_pnl(trades, GBPJPY, NO_SWAP, AccountConfig(), sources)
        row = result.iloc[0]
        assert row["pips_gross"] == 40.0
        assert row["usd_rate"] == pytest.approx(1 / 157.02)
        assert row["usd_rate_source"] == "ticks:USDJPY"
        assert row["pnl_usd"] == pytest.approx(247.74, abs=0.005)
        _, source, flagged = quote_to_usd_rate(GBPJPY, utc_ns("2024-06-12 14:30:00"), np.array([190.4]), sources)
        assert source == "ticks:USDJPY"
        assert flagged is False

    def test_cross_from_fixed_rate_flagged(self):
        sources = RateSources.empty({"JPY": 0.0067})
        trades = one_trade(1, 190.000, 190.400, "2024-06-12 14:30:00")
        result = trade_costs_and_pnl(trades, GBPJPY, NO_SWAP, AccountConfig(), sources)
        assert result["usd_rate"].iloc[0] == 0.0067
        assert result["usd_rate_source"].iloc[0] == "fixed"
        assert result["pnl_usd"].iloc[0] == pytest.approx(261.00)
        _, source, flagged = quote_to_usd_rate(GBPJPY, utc_ns("2024-06-12 14:30:00"), np.array([190.4]), sources)
        assert source == "fixed"
        assert flagged is True

    def test_cross_without_source_pips_only(self):
        trades = one_trade(1, 190.000, 190.400, "2024-06-12 14:30:00")
        result = trade_costs_and_pnl(trades, GBPJPY, NO_SWAP, AccountConfig(), RateSources.empty())
        row = result.iloc[0]
        assert np.isnan(row["usd_rate"])
        assert np.isnan(row["pnl_usd"])
        assert row["usd_rate_source"] == "none"
        assert row["pips_gross"] == 40.0
        assert row["pips_net"] == 40.0
        assert row["commission_usd"] == 7.0
        rates, source, flagged = quote_to_usd_rate(GBPJPY, utc_ns("2024-06-12 14:30:00"), np.array([190.4]),
                                                   RateSources.empty())
        assert np.isnan(rates).all()
        assert source == "none"
        assert flagged is True


# --- the tick lookup --------------------------------------------------------------------


class TestTickLookup:
    def test_never_uses_tick_after_exit(self, usdjpy_folder: Path):
        sources = RateSources.from_folder(usdjpy_folder, Config())
        exits = utc_ns("2024-06-12 14:29:58", "2024-06-12 14:30:00.999999999", "2024-06-12 14:30:01")
        rates, _, _ = quote_to_usd_rate(GBPJPY, exits, np.full(3, 190.4), sources)
        np.testing.assert_allclose(rates, [1 / 157.02, 1 / 157.02, 1 / 157.20])

    def test_exit_before_first_tick_falls_back(self, usdjpy_folder: Path):
        config = Config(account=AccountConfig(fixed_rates={"JPY": 0.0067}))
        sources = RateSources.from_folder(usdjpy_folder, config)
        exits = utc_ns("2024-06-12 14:29:57", "2024-06-12 14:30:00")
        rates, source, flagged = quote_to_usd_rate(GBPJPY, exits, np.full(2, 190.4), sources)
        np.testing.assert_allclose(rates, [0.0067, 1 / 157.02])
        assert source == "ticks:USDJPY+fixed"
        assert flagged is True

    def test_stale_tick_not_used(self, usdjpy_folder: Path):
        sources = RateSources.from_folder(usdjpy_folder, Config(account=AccountConfig(max_rate_age_hours=1.0)))
        exits = utc_ns("2024-06-12 15:30:00", "2024-06-12 15:30:02")
        rates, source, _ = quote_to_usd_rate(GBPJPY, exits, np.full(2, 190.4), sources)
        assert rates[0] == pytest.approx(1 / 157.20)
        assert np.isnan(rates[1])
        assert source == "ticks:USDJPY+none"

    def test_quote_usd_pair_not_inverted(self, tmp_path: Path):
        write_ticks(tmp_path, "EURUSD_2024.parquet", ["2024-06-12 10:00:00"], [1.08000], [1.08020])
        sources = RateSources.from_folder(tmp_path, Config())
        rates, source, _ = quote_to_usd_rate(get_instrument("XAUEUR"), utc_ns("2024-06-12 10:05"),
                                             np.array([2150.0]), sources)
        assert rates[0] == pytest.approx(1.0801)
        assert source == "ticks:EURUSD"

    def test_other_year_file_not_used(self, usdjpy_folder: Path):
        sources = RateSources.from_folder(usdjpy_folder, Config())
        rates, source, _ = quote_to_usd_rate(GBPJPY, utc_ns("2025-01-02 10:00"), np.array([190.4]), sources)
        assert np.isnan(rates[0])
        assert source == "none"

    def test_files_read_lazily_once(self, usdjpy_folder: Path, monkeypatch: pytest.MonkeyPatch):
        write_ticks(usdjpy_folder, "GBPUSD_2024.parquet", ["2024-06-12 10:00:00"], [1.27], [1.2702])
        loaded: list[str] = []
        real_load = conversion.load_ticks

        def counting_load(path, config):
            loaded.append(Path(path).name)
            return real_load(path, config)

        monkeypatch.setattr(conversion, "load_ticks", counting_load)
        sources = RateSources.from_folder(usdjpy_folder, Config())
        assert loaded == []
        quote_to_usd_rate(get_instrument("EURUSD"), utc_ns("2024-06-12 14:30"), np.array([1.08]), sources)
        assert loaded == []
        for _ in range(2):
            quote_to_usd_rate(GBPJPY, utc_ns("2024-06-12 14:30"), np.array([190.4]), sources)
        assert loaded == ["USDJPY_2024.parquet"]

    def test_unreadable_file_falls_back_to_fixed(self, tmp_path: Path):
        (tmp_path / "USDJPY_2024.parquet").write_bytes(b"not a parquet file")
        config = Config(account=AccountConfig(fixed_rates={"JPY": 0.0067}))
        sources = RateSources.from_folder(tmp_path, config)
        rates, source, flagged = quote_to_usd_rate(GBPJPY, utc_ns("2024-06-12 14:30"), np.array([190.4]), sources)
        assert rates.tolist() == [0.0067]
        assert source == "fixed"
        assert flagged is True

    def test_empty_exit_array(self, usdjpy_folder: Path):
        rates, source, flagged = quote_to_usd_rate(GBPJPY, np.array([], dtype=np.int64), np.array([]),
                                                   RateSources.from_folder(usdjpy_folder, Config()))
        assert len(rates) == 0
        assert source == "none"
        assert flagged is False


def test_pnl_usd_formula():
    result = pnl_usd(100_000, np.array([190.0, 1.085]), np.array([190.4, 1.080]), np.array([1, -1]),
                     np.array([0.0067, 1.0]))
    np.testing.assert_allclose(result, [268.0, 500.0])
    assert np.isnan(pnl_usd(100_000, np.array([1.0]), np.array([1.1]), np.array([1]), np.array([np.nan]))[0])


# --- real tick files --------------------------------------------------------------------


def _require(*names: str) -> None:
    for name in names:
        if not (PARQUET_DIR / name).is_file():
            pytest.skip(f"real tick file {PARQUET_DIR / name} is absent (the shared data folder sits "
                        f"beside the repository)")


def _merge_asof_mids(path: Path, exits: np.ndarray) -> np.ndarray:
    """Slow reference: the mid of the last tick at or before each exit, by pandas merge_asof."""
    ticks = pd.read_parquet(path)
    ticks = ticks.drop_duplicates().sort_values("timestamp", kind="stable")
    ticks["mid"] = (ticks["bid"] + ticks["ask"]) / 2
    ticks["timestamp_ns"] = datetime_to_ns(ticks["timestamp"])
    query = pd.DataFrame({"timestamp_ns": exits, "order": np.arange(len(exits))}).sort_values("timestamp_ns")
    merged = pd.merge_asof(query, ticks[["timestamp_ns", "mid"]], on="timestamp_ns", direction="backward")
    return merged.sort_values("order")["mid"].to_numpy()


class TestRealTicks:
    def test_gbpjpy_from_real_usdjpy_ticks(self):
        _require("USDJPY_2013.parquet")
        sources = RateSources.from_folder(PARQUET_DIR, Config())
        exits = utc_ns("2013-01-01 22:02:36", "2013-01-01 22:02:36.197", "2013-01-01 22:20:00",
                       "2013-01-01 22:40:00", "2013-01-01 21:00:00")
        rates, source, flagged = quote_to_usd_rate(GBPJPY, exits, np.full(len(exits), 140.0), sources)
        expected = 1.0 / _merge_asof_mids(PARQUET_DIR / "USDJPY_2013.parquet", exits)
        np.testing.assert_allclose(rates[:4], expected[:4], rtol=1e-12)
        assert rates[0] == pytest.approx(1 / ((86.655 + 86.728) / 2))
        assert np.isnan(rates[4])
        assert source == "ticks:USDJPY+none"
        assert flagged is True

    def test_eurgbp_from_real_gbpusd_ticks(self):
        _require("GBPUSD_2013.parquet")
        sources = RateSources.from_folder(PARQUET_DIR, Config())
        rng = np.random.default_rng(5)
        exits = utc_ns("2013-05-01 00:00:00")[0] + rng.integers(0, 86_400_000_000_000, 200)
        rates, source, flagged = quote_to_usd_rate(get_instrument("EURGBP"), exits, np.full(200, 0.85), sources)
        expected = _merge_asof_mids(PARQUET_DIR / "GBPUSD_2013.parquet", exits)
        np.testing.assert_allclose(rates, expected, rtol=1e-12, equal_nan=True)
        assert source == "ticks:GBPUSD"
        assert flagged is False

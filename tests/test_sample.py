"""Tests for the synthetic tick generator: determinism, calendar, spreads, levels and the no-edge mode."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fxresearch.config import SampleConfig
from fxresearch.instruments import Instrument, get_instrument
from fxresearch.sample import (
    expected_tick_count,
    generate_pair_ticks,
    pair_profile,
    sample_end_ns,
    sample_start_ns,
    write_benchmark_year,
    write_sample_set,
)
from fxresearch.timeutil import NS_PER_DAY, NEW_YORK, datetime_to_ns

SEED = 11
RATE = 600.0


def _utc_ns(text: str) -> int:
    return int(datetime_to_ns([text])[0])


def _two_january_weeks() -> tuple[int, int]:
    start = sample_start_ns(2025)
    return start, sample_end_ns(start, 2)


@pytest.fixture(scope="module")
def eurusd_ticks() -> pd.DataFrame:
    start, end = _two_january_weeks()
    return generate_pair_ticks("EURUSD", start, end, SEED, RATE)


@pytest.fixture(scope="module")
def no_edge_ticks() -> pd.DataFrame:
    start, end = _two_january_weeks()
    return generate_pair_ticks("EURUSD", start, end, SEED, RATE, no_edge=True)


def _mid_steps_pips(ticks: pd.DataFrame) -> np.ndarray:
    mid = (ticks["bid"].to_numpy() + ticks["ask"].to_numpy()) / 2.0
    return np.diff(mid) / 1e-4


def _lag1_autocorrelation(values: np.ndarray) -> float:
    return float(np.corrcoef(values[1:], values[:-1])[0, 1])


def _median_spread_by_utc_hour(ticks: pd.DataFrame) -> pd.Series:
    spread = ticks["ask"] - ticks["bid"]
    return spread.groupby(ticks["timestamp"].dt.hour).median()


class TestDeterminism:
    def test_same_seed_identical_bytes(self, eurusd_ticks):
        start, end = _two_january_weeks()
        again = generate_pair_ticks("EURUSD", start, end, SEED, RATE)
        assert datetime_to_ns(again["timestamp"]).tobytes() == datetime_to_ns(eurusd_ticks["timestamp"]).tobytes()
        assert again["bid"].to_numpy().tobytes() == eurusd_ticks["bid"].to_numpy().tobytes()
        assert again["ask"].to_numpy().tobytes() == eurusd_ticks["ask"].to_numpy().tobytes()

    def test_other_seed_differs(self, eurusd_ticks):
        start, end = _two_january_weeks()
        other = generate_pair_ticks("EURUSD", start, end, SEED + 1, RATE)
        assert len(other) != len(eurusd_ticks) or not np.array_equal(other["bid"], eurusd_ticks["bid"])

    def test_pairs_get_different_seeds(self):
        start, end = _two_january_weeks()
        eurusd = generate_pair_ticks("EURUSD", start, end, SEED, RATE)
        gbpusd = generate_pair_ticks("GBPUSD", start, end, SEED, RATE)
        n = min(len(eurusd), len(gbpusd))
        assert not np.array_equal(eurusd["timestamp"].to_numpy()[:n], gbpusd["timestamp"].to_numpy()[:n])

    def test_benchmark_writer_matches_one_shot(self, tmp_path):
        path = tmp_path / "EURUSD_2025.parquet"
        rows = write_benchmark_year(path, "EURUSD", 2025, seed=SEED, target_ticks=100_000)
        written = pq.read_table(path)
        assert written.num_rows == rows
        assert 90_000 < rows < 110_000
        assert pq.ParquetFile(path).metadata.num_row_groups > 50

        start, end = _utc_ns("2025-01-01"), _utc_ns("2026-01-01")
        ticks_per_hour = 100_000 / expected_tick_count("EURUSD", start, end, 1.0)
        one_shot = generate_pair_ticks("EURUSD", start, end, SEED, ticks_per_hour)
        assert np.array_equal(datetime_to_ns(written.column("timestamp").to_pandas()),
                              datetime_to_ns(one_shot["timestamp"]))
        assert np.array_equal(written.column("bid").to_numpy(), one_shot["bid"].to_numpy())
        assert written.schema.metadata[b"synthetic"] == b"true"


class TestCalendar:
    def test_no_ticks_in_weekend_close(self, eurusd_ticks):
        local = eurusd_ticks["timestamp"].dt.tz_convert(NEW_YORK)
        hour, weekday = local.dt.hour, local.dt.dayofweek
        in_close = ((weekday == 4) & (hour >= 17)) | (weekday == 5) | ((weekday == 6) & (hour < 17))
        assert int(in_close.sum()) == 0
        # Two weeks span one full weekend: the longest gap is the close, about 48 hours.
        longest_gap_hours = eurusd_ticks["timestamp"].diff().max() / pd.Timedelta(hours=1)
        assert 47.0 < longest_gap_hours < 49.0

    def test_ticks_sorted_utc_nanoseconds(self, eurusd_ticks):
        assert str(eurusd_ticks["timestamp"].dtype) == "datetime64[ns, UTC]"
        assert eurusd_ticks["timestamp"].is_monotonic_increasing
        assert eurusd_ticks["bid"].dtype == np.float64

    def test_sample_starts_on_sunday_reopen(self):
        start = pd.Timestamp(sample_start_ns(2025), unit="ns", tz="UTC").tz_convert(NEW_YORK)
        assert (start.year, start.month, start.day, start.hour) == (2025, 1, 5, 17)

    def test_overlap_busier_than_asia(self, eurusd_ticks):
        hour = eurusd_ticks["timestamp"].dt.hour
        # January: London/New York overlap 13:00-16:00 UTC, Tokyo 00:00-06:00 UTC.
        days = 10
        overlap_rate = hour.between(13, 15).sum() / (3 * days)
        asia_rate = hour.between(0, 5).sum() / (6 * days)
        assert overlap_rate > 1.6 * asia_rate
        assert 0.6 * RATE < overlap_rate < 1.3 * RATE


class TestQuotes:
    def test_ask_above_bid_above_zero(self, eurusd_ticks):
        assert (eurusd_ticks["bid"] > 0).all()
        assert (eurusd_ticks["ask"] > eurusd_ticks["bid"]).all()

    def test_rollover_spread_wider_than_overlap(self, eurusd_ticks):
        by_hour = _median_spread_by_utc_hour(eurusd_ticks)
        # 17:00 New York is 22:00 UTC in January.
        assert by_hour[22] > 3.0 * by_hour[[13, 14, 15]].median()

    def test_overlap_spread_in_normal_range(self, eurusd_ticks):
        hour = eurusd_ticks["timestamp"].dt.hour
        spread_pips = (eurusd_ticks["ask"] - eurusd_ticks["bid"])[hour.between(13, 15)] / 1e-4
        assert 0.2 <= spread_pips.median() <= 1.0

    @pytest.mark.parametrize(("month_start", "rollover_hour_utc"), [("2025-07-06", 21), ("2025-01-12", 22)])
    def test_rollover_follows_new_york_dst(self, month_start, rollover_hour_utc):
        start = _utc_ns(month_start)
        ticks = generate_pair_ticks("EURUSD", start, start + 7 * NS_PER_DAY, SEED, RATE)
        assert _median_spread_by_utc_hour(ticks).idxmax() == rollover_hour_utc

    def test_usdjpy_level_and_precision(self):
        start, end = _two_january_weeks()
        ticks = generate_pair_ticks("USDJPY", start, end, SEED, RATE)
        mid = (ticks["bid"] + ticks["ask"]) / 2
        assert 145.0 < mid.iloc[0] < 155.0
        bid_points = ticks["bid"].to_numpy() * 1000
        assert np.allclose(bid_points, np.rint(bid_points), rtol=0, atol=1e-6)
        # The third decimal is used, so the quotes are not all on the 0.01 grid.
        assert np.any(np.rint(bid_points) % 10 != 0)
        spread_pips = (ticks["ask"] - ticks["bid"]) / 0.01
        assert 0.2 <= spread_pips.median() <= 2.0

    @pytest.mark.parametrize(("symbol", "level"), [
        ("EURUSD", 1.08), ("GBPUSD", 1.27), ("AUDUSD", 0.66), ("XAUUSD", 2000.0), ("EURJPY", 162.0),
    ])
    def test_pair_levels(self, symbol, level):
        assert pair_profile(symbol).level == pytest.approx(level, rel=1e-9)

    def test_unknown_currency_level_one_with_warning(self, caplog):
        instrument = Instrument("BTCUSD", 0.01, 2, "BTC", "USD")
        with caplog.at_level(logging.WARNING, logger="fxresearch.sample"):
            assert pair_profile("BTCUSD", instrument).level == 1.0
        assert "BTCUSD" in caplog.text

    def test_empty_range_rejected(self):
        start, _ = _two_january_weeks()
        with pytest.raises(ValueError, match="not after start_ns"):
            generate_pair_ticks("EURUSD", start, start, SEED, RATE)


class TestNoEdge:
    def test_mid_steps_uncorrelated(self, no_edge_ticks):
        steps = _mid_steps_pips(no_edge_ticks)
        assert len(steps) > 50_000
        assert abs(_lag1_autocorrelation(steps)) < 0.02

    def test_mid_steps_zero_mean(self, no_edge_ticks):
        steps = _mid_steps_pips(no_edge_ticks)
        standard_error = steps.std() / np.sqrt(len(steps))
        assert abs(steps.mean()) < 4.0 * standard_error

    def test_no_volatility_clustering(self, no_edge_ticks):
        step_sizes = np.abs(_mid_steps_pips(no_edge_ticks))
        assert abs(_lag1_autocorrelation(step_sizes)) < 0.02

    def test_default_mode_clusters_without_direction(self, eurusd_ticks):
        steps = _mid_steps_pips(eurusd_ticks)
        assert _lag1_autocorrelation(np.abs(steps)) > 0.05
        assert abs(_lag1_autocorrelation(steps)) < 0.03

    def test_daily_volatility_independent_of_rate(self):
        start, end = _two_january_weeks()
        realised = []
        for rate in (300.0, 3000.0):
            steps = _mid_steps_pips(generate_pair_ticks("EURUSD", start, end, SEED, rate, no_edge=True))
            realised.append(float(np.sum(steps**2)))
        assert 0.8 < realised[0] / realised[1] < 1.25


class TestSampleSet:
    def test_files_and_metadata(self, tmp_path):
        config = SampleConfig(seed=5, weeks=1, year=2024, pairs=("EURUSD", "USDJPY"), ticks_per_hour=300)
        paths = write_sample_set(tmp_path, config)
        assert [p.name for p in paths] == ["EURUSD_2024.parquet", "USDJPY_2024.parquet"]
        for path in paths:
            schema = pq.read_schema(path)
            assert schema.metadata[b"synthetic"] == b"true"
            assert schema.metadata[b"generator"] == b"fxresearch.sample"
            assert schema.metadata[b"seed"] == b"5"
            assert schema.metadata[b"no_edge"] == b"false"
            assert schema.field("timestamp").type == pa.timestamp("ns", tz="UTC")
            assert pq.read_metadata(path).num_rows > 10_000

    def test_default_size_per_pair(self):
        config = SampleConfig()
        start = sample_start_ns(config.year)
        end = sample_end_ns(start, config.weeks)
        expected = expected_tick_count("EURUSD", start, end, config.ticks_per_hour)
        assert 500_000 < expected < 1_500_000

    def test_zero_weeks_rejected(self, tmp_path):
        with pytest.raises(ValueError, match="weeks"):
            write_sample_set(Path(tmp_path), SampleConfig(weeks=0))

    def test_no_edge_flag_recorded(self, tmp_path):
        config = SampleConfig(weeks=1, pairs=("AUDUSD",), ticks_per_hour=200, no_edge=True)
        (path,) = write_sample_set(tmp_path, config)
        assert pq.read_schema(path).metadata[b"no_edge"] == b"true"

    def test_instrument_precision_used(self):
        instrument = get_instrument("EURUSD")
        start, _ = _two_january_weeks()
        ticks = generate_pair_ticks("EURUSD", start, start + NS_PER_DAY, SEED, RATE, instrument=instrument)
        bid = ticks["bid"].to_numpy()
        assert np.array_equal(np.round(bid, instrument.price_precision), bid)

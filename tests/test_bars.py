"""Tests for bid/ask OHLC bars: hand-made ticks, a slow pandas reference and vendor minute bars."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fxresearch.bars import (
    BAR_COLUMNS,
    TIMEFRAME_NAMES,
    bar_close_ns,
    bars_to_table,
    build_bars,
    entry_tick_index,
    read_bars,
    timeframe_name,
)
from fxresearch.timeutil import NS_PER_MINUTE, datetime_to_ns

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"
NS_PER_SECOND = 1_000_000_000


def _utc_ns(text: str) -> int:
    return int(datetime_to_ns([text])[0])


@pytest.fixture
def hand_ticks() -> dict[str, np.ndarray]:
    """Seven ticks over three one-minute bars, with the 10:02 minute empty."""
    start = _utc_ns("2024-03-04 10:00:00")
    seconds = np.array([5, 20, 20, 59.999, 60, 190, 200])
    timestamp_ns = start + (seconds * NS_PER_SECOND).astype(np.int64)
    bid = np.array([1.1000, 1.1005, 1.0995, 1.1001, 1.1010, 1.1020, 1.1015])
    ask = np.array([1.1002, 1.1008, 1.0996, 1.1003, 1.1011, 1.1024, 1.1016])
    return {"timestamp_ns": timestamp_ns, "bid": bid, "ask": ask, "start": start}


def _pandas_reference(timestamp_ns: np.ndarray, bid: np.ndarray, ask: np.ndarray,
                      timeframe_min: int) -> pd.DataFrame:
    """Build bars the slow way: a pandas groupby on the floored time."""
    timeframe_ns = timeframe_min * NS_PER_MINUTE
    ticks = pd.DataFrame({
        "open_ns": (timestamp_ns // timeframe_ns) * timeframe_ns,
        "bid": bid,
        "ask": ask,
        "spread": ask - bid,
        "row": np.arange(len(timestamp_ns), dtype=np.int64),
    })
    grouped = ticks.groupby("open_ns", sort=True)
    reference = pd.DataFrame({
        "timestamp": grouped.size().index.to_numpy(np.int64),
        "bid_open": grouped["bid"].first().to_numpy(),
        "bid_high": grouped["bid"].max().to_numpy(),
        "bid_low": grouped["bid"].min().to_numpy(),
        "bid_close": grouped["bid"].last().to_numpy(),
        "ask_open": grouped["ask"].first().to_numpy(),
        "ask_high": grouped["ask"].max().to_numpy(),
        "ask_low": grouped["ask"].min().to_numpy(),
        "ask_close": grouped["ask"].last().to_numpy(),
        "spread_mean": grouped["spread"].mean().to_numpy(),
        "spread_max": grouped["spread"].max().to_numpy(),
        "tick_count": grouped.size().to_numpy(np.int64),
        "first_tick": grouped["row"].min().to_numpy(),
        "last_tick": grouped["row"].max().to_numpy(),
    })
    open_ns = reference["timestamp"].to_numpy()
    reference["gap_before"] = np.concatenate([[False], np.diff(open_ns) > timeframe_ns])
    return reference


def _random_ticks(seed: int, n_ticks: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random-walk ticks with bursts, repeated times and multi-hour holes."""
    rng = np.random.default_rng(seed)
    step_ns = rng.exponential(4 * NS_PER_SECOND, n_ticks).astype(np.int64)
    step_ns[rng.random(n_ticks) < 0.05] = 0
    holes = rng.random(n_ticks) < 0.002
    step_ns[holes] += rng.integers(NS_PER_MINUTE, 6 * 60 * NS_PER_MINUTE, holes.sum())
    timestamp_ns = _utc_ns("2023-06-01 21:03:17") + np.cumsum(step_ns)
    bid = 1.08 + np.cumsum(rng.normal(0.0, 0.00005, n_ticks))
    ask = bid + rng.integers(0, 30, n_ticks) * 0.00001
    return timestamp_ns, bid, ask


def _read_ticks(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    table = pq.read_table(DATA_DIR / "parquet" / f"{name}.parquet")
    timestamp_ns = table.column("timestamp").cast(pa.timestamp("ns")).cast(pa.int64()).to_numpy()
    return timestamp_ns, table.column("bid").to_numpy(), table.column("ask").to_numpy()


def _read_vendor_bars(name: str) -> pd.DataFrame:
    table = pq.read_table(DATA_DIR / "bars" / f"{name}_M1.parquet")
    timestamp_ns = table.column("timestamp").cast(pa.timestamp("ns")).cast(pa.int64())
    return table.set_column(0, "timestamp", timestamp_ns).to_pandas()


class TestHandMadeTicks:
    def test_columns_match_contract(self, hand_ticks):
        bars = build_bars(hand_ticks["timestamp_ns"], hand_ticks["bid"], hand_ticks["ask"], 1)
        assert tuple(bars.columns) == BAR_COLUMNS
        assert bars["timestamp"].dtype == np.int64
        assert bars["tick_count"].dtype == np.int64
        assert bars["gap_before"].dtype == np.bool_

    def test_one_minute_ohlc(self, hand_ticks):
        bars = build_bars(hand_ticks["timestamp_ns"], hand_ticks["bid"], hand_ticks["ask"], 1)
        start = hand_ticks["start"]
        # 10:02 has no tick, so only three bars exist.
        assert bars["timestamp"].tolist() == [start, start + NS_PER_MINUTE, start + 3 * NS_PER_MINUTE]

        first = bars.iloc[0]
        assert first["bid_open"] == 1.1000
        assert first["bid_high"] == 1.1005
        assert first["bid_low"] == 1.0995
        assert first["bid_close"] == 1.1001
        assert first["ask_open"] == 1.1002
        assert first["ask_high"] == 1.1008
        assert first["ask_low"] == 1.0996
        assert first["ask_close"] == 1.1003

        # A tick exactly on 10:01:00 opens the next bar.
        second = bars.iloc[1]
        assert second["bid_open"] == second["bid_close"] == 1.1010
        assert second["ask_high"] == second["ask_low"] == 1.1011

        third = bars.iloc[2]
        assert third["bid_open"] == 1.1020
        assert third["bid_low"] == 1.1015
        assert third["ask_high"] == 1.1024
        assert third["ask_close"] == 1.1016

    def test_spread_mean_and_max(self, hand_ticks):
        bars = build_bars(hand_ticks["timestamp_ns"], hand_ticks["bid"], hand_ticks["ask"], 1)
        spreads = hand_ticks["ask"] - hand_ticks["bid"]
        assert bars["spread_mean"].iloc[0] == pytest.approx(spreads[:4].mean(), abs=1e-15)
        assert bars["spread_max"].iloc[0] == pytest.approx(0.0003, abs=1e-12)
        assert bars["spread_mean"].iloc[2] == pytest.approx(0.00025, abs=1e-12)
        assert bars["spread_max"].iloc[2] == pytest.approx(0.0004, abs=1e-12)

    def test_tick_counts_and_indices(self, hand_ticks):
        bars = build_bars(hand_ticks["timestamp_ns"], hand_ticks["bid"], hand_ticks["ask"], 1)
        assert bars["tick_count"].tolist() == [4, 1, 2]
        assert bars["first_tick"].tolist() == [0, 4, 5]
        assert bars["last_tick"].tolist() == [3, 4, 6]

    def test_gap_flag_after_empty_minute(self, hand_ticks):
        bars = build_bars(hand_ticks["timestamp_ns"], hand_ticks["bid"], hand_ticks["ask"], 1)
        assert bars["gap_before"].tolist() == [False, False, True]

    def test_five_minute_bar_holds_all_ticks(self, hand_ticks):
        bars = build_bars(hand_ticks["timestamp_ns"], hand_ticks["bid"], hand_ticks["ask"], 5)
        assert len(bars) == 1
        assert bars["timestamp"].iloc[0] == hand_ticks["start"]
        assert bars["bid_high"].iloc[0] == 1.1020
        assert bars["bid_low"].iloc[0] == 1.0995
        assert bars["bid_close"].iloc[0] == 1.1015
        assert bars["tick_count"].iloc[0] == 7
        assert not bars["gap_before"].iloc[0]

    def test_single_tick(self):
        bars = build_bars(np.array([_utc_ns("2024-01-02 00:00:30")]), [1.2], [1.25], 15)
        assert len(bars) == 1
        assert bars["timestamp"].iloc[0] == _utc_ns("2024-01-02 00:00:00")
        assert bars["spread_mean"].iloc[0] == pytest.approx(0.05)
        assert bars["first_tick"].iloc[0] == bars["last_tick"].iloc[0] == 0

    def test_no_ticks_gives_empty_typed_table(self):
        bars = build_bars(np.array([], dtype=np.int64), [], [], 5)
        assert len(bars) == 0
        assert tuple(bars.columns) == BAR_COLUMNS
        assert bars["timestamp"].dtype == np.int64
        assert bars["bid_open"].dtype == np.float64


class TestUtcBins:
    @pytest.mark.parametrize("timeframe_min", [5, 15, 60])
    def test_bins_open_on_utc_boundaries(self, timeframe_min):
        timestamp_ns, bid, ask = _random_ticks(seed=timeframe_min, n_ticks=5_000)
        bars = build_bars(timestamp_ns, bid, ask, timeframe_min)
        opens = pd.DatetimeIndex(pd.to_datetime(bars["timestamp"].to_numpy(), utc=True))
        assert (opens.second == 0).all()
        assert (opens.minute % timeframe_min == 0).all()
        assert (bars["timestamp"].to_numpy() % (timeframe_min * NS_PER_MINUTE) == 0).all()

    def test_hour_bar_starts_on_the_hour(self):
        timestamp_ns = np.array([_utc_ns("2024-05-06 13:59:59.999"), _utc_ns("2024-05-06 14:00:00"),
                                 _utc_ns("2024-05-06 14:59:59")])
        bars = build_bars(timestamp_ns, [1.0, 1.1, 1.2], [1.0, 1.1, 1.2], 60)
        assert bars["timestamp"].tolist() == [_utc_ns("2024-05-06 13:00"), _utc_ns("2024-05-06 14:00")]
        assert bars["tick_count"].tolist() == [1, 2]

    @pytest.mark.parametrize("timeframe_min", [1, 5, 15, 60, 240])
    def test_no_empty_bars(self, timeframe_min):
        timestamp_ns, bid, ask = _random_ticks(seed=11, n_ticks=5_000)
        bars = build_bars(timestamp_ns, bid, ask, timeframe_min)
        assert (bars["tick_count"] > 0).all()
        assert bars["tick_count"].sum() == len(timestamp_ns)
        assert np.all(np.diff(bars["timestamp"].to_numpy()) > 0)
        # Consecutive bars cover consecutive tick ranges with nothing skipped.
        assert bars["first_tick"].iloc[0] == 0
        assert bars["last_tick"].iloc[-1] == len(timestamp_ns) - 1
        assert (bars["first_tick"].to_numpy()[1:] == bars["last_tick"].to_numpy()[:-1] + 1).all()

    def test_ticks_before_1970_floor_downwards(self):
        timestamp_ns = np.array([-30 * NS_PER_SECOND, 10 * NS_PER_SECOND])
        bars = build_bars(timestamp_ns, [1.0, 2.0], [1.0, 2.0], 1)
        assert bars["timestamp"].tolist() == [-NS_PER_MINUTE, 0]


class TestPandasReference:
    @pytest.mark.parametrize("timeframe_min", [1, 5, 15, 60, 1440])
    @pytest.mark.parametrize("seed", [1, 2, 3])
    def test_matches_groupby_reference(self, timeframe_min, seed):
        timestamp_ns, bid, ask = _random_ticks(seed=seed, n_ticks=20_000)
        bars = build_bars(timestamp_ns, bid, ask, timeframe_min)
        reference = _pandas_reference(timestamp_ns, bid, ask, timeframe_min)
        assert len(bars) == len(reference)
        exact = [name for name in BAR_COLUMNS if name != "spread_mean"]
        pd.testing.assert_frame_equal(bars[exact], reference[exact], check_exact=True)
        np.testing.assert_allclose(bars["spread_mean"], reference["spread_mean"], rtol=1e-12, atol=1e-15)

    def test_random_data_has_gaps(self):
        # Guards the reference test above: it must see both flag values to mean anything.
        timestamp_ns, bid, ask = _random_ticks(seed=1, n_ticks=20_000)
        bars = build_bars(timestamp_ns, bid, ask, 5)
        assert bars["gap_before"].sum() > 10
        assert (~bars["gap_before"]).sum() > 10


class TestInputValidation:
    def test_rejects_unequal_lengths(self):
        with pytest.raises(ValueError, match="differ in shape"):
            build_bars(np.array([1, 2, 3]), [1.0, 1.0, 1.0], [1.0, 1.0], 1)

    def test_rejects_unsorted_timestamps(self):
        with pytest.raises(ValueError, match="not sorted.*index 2"):
            build_bars(np.array([1, 5, 4]), [1.0, 1.0, 1.0], [1.0, 1.0, 1.0], 1)

    def test_rejects_datetime_timestamps(self):
        timestamps = np.array(["2024-01-01T00:00"], dtype="datetime64[ns]")
        with pytest.raises(ValueError, match="datetime_to_ns"):
            build_bars(timestamps, [1.0], [1.0], 1)

    def test_rejects_nan_price(self):
        with pytest.raises(ValueError, match="ask has 1 NaN"):
            build_bars(np.array([1, 2]), [1.0, 1.0], [1.0, np.nan], 1)

    def test_rejects_infinite_bid(self):
        with pytest.raises(ValueError, match="bid has 1 NaN or infinite.*index 0"):
            build_bars(np.array([1, 2]), [np.inf, 1.0], [1.0, 1.0], 1)

    @pytest.mark.parametrize("timeframe_min", [0, -5, 2.5, 5.0, "5", True, None])
    def test_rejects_bad_timeframe(self, timeframe_min):
        with pytest.raises(ValueError, match="timeframe_min"):
            build_bars(np.array([1, 2]), [1.0, 1.0], [1.0, 1.0], timeframe_min)

    def test_accepts_numpy_integer_timeframe(self):
        bars = build_bars(np.array([1, 2]), [1.0, 1.0], [1.0, 1.0], np.int64(5))
        assert len(bars) == 1


class TestTimeframeName:
    def test_known_names(self):
        assert [timeframe_name(m) for m in TIMEFRAME_NAMES] == ["M1", "M5", "M15", "M30", "H1", "H4", "D1"]

    @pytest.mark.parametrize("minutes, name", [(7, "M7"), (90, "M90"), (120, "H2"), (180, "H3"), (2880, "D2")])
    def test_other_values(self, minutes, name):
        assert timeframe_name(minutes) == name

    def test_rejects_zero(self):
        with pytest.raises(ValueError, match="positive integer"):
            timeframe_name(0)


class TestParquetRoundTrip:
    def test_table_schema_is_utc_nanoseconds(self, hand_ticks):
        bars = build_bars(hand_ticks["timestamp_ns"], hand_ticks["bid"], hand_ticks["ask"], 1)
        table = bars_to_table(bars)
        assert table.schema.field("timestamp").type == pa.timestamp("ns", tz="UTC")
        assert table.column_names == list(BAR_COLUMNS)
        first_open = table.column("timestamp")[0].as_py()
        assert first_open.isoformat() == "2024-03-04T10:00:00+00:00"

    def test_read_returns_same_frame(self, hand_ticks, tmp_path):
        bars = build_bars(hand_ticks["timestamp_ns"], hand_ticks["bid"], hand_ticks["ask"], 1)
        path = tmp_path / "M1.parquet"
        pq.write_table(bars_to_table(bars), path)
        restored = read_bars(path)
        assert restored["timestamp"].dtype == np.int64
        pd.testing.assert_frame_equal(restored, bars, check_exact=True)

    def test_read_converts_microsecond_file(self, hand_ticks, tmp_path):
        bars = build_bars(hand_ticks["timestamp_ns"], hand_ticks["bid"], hand_ticks["ask"], 1)
        table = bars_to_table(bars)
        table = table.set_column(0, "timestamp", table.column("timestamp").cast(pa.timestamp("us", tz="UTC")))
        path = tmp_path / "M1_us.parquet"
        pq.write_table(table, path)
        assert read_bars(path)["timestamp"].tolist() == bars["timestamp"].tolist()

    def test_read_missing_file_names_path(self, tmp_path):
        with pytest.raises(FileNotFoundError, match="nothing.parquet"):
            read_bars(tmp_path / "nothing.parquet")

    def test_read_rejects_file_without_bar_columns(self, tmp_path):
        path = tmp_path / "ticks.parquet"
        pq.write_table(pa.table({"timestamp": pa.array([0], pa.timestamp("ns", tz="UTC"))}), path)
        with pytest.raises(ValueError, match="missing columns.*bid_open"):
            read_bars(path)


class TestEntryTick:
    def test_close_is_open_plus_timeframe(self, hand_ticks):
        bars = build_bars(hand_ticks["timestamp_ns"], hand_ticks["bid"], hand_ticks["ask"], 1)
        close_ns = bar_close_ns(bars, 1)
        assert close_ns.tolist() == (bars["timestamp"] + NS_PER_MINUTE).tolist()

    def test_entry_is_first_tick_at_or_after_close(self, hand_ticks):
        timestamp_ns = hand_ticks["timestamp_ns"]
        bars = build_bars(timestamp_ns, hand_ticks["bid"], hand_ticks["ask"], 1)
        entry = entry_tick_index(timestamp_ns, bars, 1)
        # Bar 10:00 closes at 10:01:00, when tick 4 arrives exactly. Bar 10:01 closes at 10:02,
        # and the next tick is 10:03:10 (tick 5). The last bar has no tick after its close.
        assert entry.tolist() == [4, 5, len(timestamp_ns)]
        assert entry.dtype == np.int64

    def test_entry_never_inside_signal_bar(self):
        timestamp_ns, bid, ask = _random_ticks(seed=5, n_ticks=5_000)
        bars = build_bars(timestamp_ns, bid, ask, 5)
        entry = entry_tick_index(timestamp_ns, bars, 5)
        assert (entry > bars["last_tick"].to_numpy()).all()
        inside = entry < len(timestamp_ns)
        assert (timestamp_ns[entry[inside]] >= bar_close_ns(bars, 5)[inside]).all()

    def test_entry_rejects_unsorted_ticks(self, hand_ticks):
        bars = build_bars(hand_ticks["timestamp_ns"], hand_ticks["bid"], hand_ticks["ask"], 1)
        with pytest.raises(ValueError, match="not sorted"):
            entry_tick_index(hand_ticks["timestamp_ns"][::-1], bars, 1)


@pytest.mark.parametrize("name", ["EURUSD_2014", "EURUSD_2019"])
def test_vendor_minute_bars_match(name):
    tick_path = DATA_DIR / "parquet" / f"{name}.parquet"
    bar_path = DATA_DIR / "bars" / f"{name}_M1.parquet"
    if not tick_path.exists() or not bar_path.exists():
        pytest.skip(f"real data not available: {tick_path} or {bar_path} is missing "
                    f"(the shared data folder sits beside the repository)")

    timestamp_ns, bid, ask = _read_ticks(name)
    bars = build_bars(timestamp_ns, bid, ask, 1)
    assert bars["tick_count"].sum() == len(timestamp_ns)

    # The vendor's 2019 bar file covers the first of the two tick days only, so the check
    # runs over the vendor's span. Within it, every minute must match in both directions.
    vendor = _read_vendor_bars(name)
    first_ns, last_ns = vendor["timestamp"].iloc[0], vendor["timestamp"].iloc[-1]
    bars = bars[(bars["timestamp"] >= first_ns) & (bars["timestamp"] <= last_ns)]
    assert len(vendor) > 1000
    assert len(bars) == len(vendor)
    np.testing.assert_array_equal(bars["timestamp"].to_numpy(), vendor["timestamp"].to_numpy())
    for column in ("bid_open", "bid_high", "bid_low", "bid_close",
                   "ask_open", "ask_high", "ask_low", "ask_close"):
        np.testing.assert_allclose(bars[column].to_numpy(), vendor[column].to_numpy(), rtol=0, atol=1e-9,
                                   err_msg=f"{name} {column}")

"""Tick loading: timestamp and price normalisation, validation counts and the real tick files."""

from __future__ import annotations

import decimal
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fxresearch.config import Config, TicksConfig
from fxresearch.instruments import UnknownInstrumentError
from fxresearch.naming import InvalidFileNameError
from fxresearch.ticks import TickDataError, Ticks, load_ticks, write_ticks_report

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PARQUET_DIR = DATA_DIR / "parquet"

NS_PER_SECOND = 1_000_000_000
# 2024-03-04 10:00:00 UTC and 2024-07-01 10:00:00 UTC, in ns since the epoch.
WINTER_NS = 1_709_546_400_000_000_000
SUMMER_NS = 1_719_828_000_000_000_000

LENIENT = Config(ticks=TicksConfig(max_invalid_fraction=0.5))


def _write(folder: Path, name: str, columns: dict[str, pa.Array | list],
           metadata: dict[str, str] | None = None) -> Path:
    table = pa.table(columns)
    if metadata:
        table = table.replace_schema_metadata(metadata)
    path = folder / name
    pq.write_table(table, path)
    return path


def _utc(ns: list[int]) -> pa.Array:
    return pa.array(ns, pa.timestamp("ns", tz="UTC"))


def _three_seconds() -> list[int]:
    return [WINTER_NS, WINTER_NS + NS_PER_SECOND, WINTER_NS + 2 * NS_PER_SECOND]


BIDS = [1.1000, 1.1001, 1.1002]
ASKS = [1.1001, 1.1002, 1.1003]


# --- timestamps -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("unit", "ns_per_unit"),
    [("seconds", NS_PER_SECOND), ("milliseconds", 1_000_000), ("microseconds", 1_000), ("nanoseconds", 1)],
)
def test_integer_epoch_unit_inferred(tmp_path: Path, unit: str, ns_per_unit: int) -> None:
    stored = [ns // ns_per_unit for ns in _three_seconds()]
    path = _write(tmp_path, "EURUSD_2024.parquet",
                  {"timestamp": pa.array(stored, pa.int64()), "bid": BIDS, "ask": ASKS})

    ticks = load_ticks(path, Config())

    assert ticks.timestamp_ns.dtype == np.int64
    assert ticks.timestamp_ns.tolist() == _three_seconds()
    assert ticks.report["source_timestamp_type"] == f"int64 epoch {unit}"
    assert ticks.report["first_timestamp"] == "2024-03-04T10:00:00+00:00"
    assert ticks.report["warnings"] == []


def test_unsigned_nanosecond_epoch(tmp_path: Path) -> None:
    path = _write(tmp_path, "AUDUSD_2024.parquet",
                  {"ts_event": pa.array(_three_seconds(), pa.uint64()), "bid": BIDS, "ask": ASKS})
    ticks = load_ticks(path, Config())
    assert ticks.timestamp_ns.tolist() == _three_seconds()
    assert ticks.report["source_timestamp_type"] == "uint64 epoch nanoseconds"


def test_float_second_epoch(tmp_path: Path) -> None:
    seconds = [WINTER_NS // NS_PER_SECOND + 0.25, WINTER_NS // NS_PER_SECOND + 1.5]
    path = _write(tmp_path, "EURUSD_2024.parquet",
                  {"time": pa.array(seconds, pa.float64()), "bid": BIDS[:2], "ask": ASKS[:2]})
    ticks = load_ticks(path, Config())
    assert ticks.timestamp_ns.tolist() == [WINTER_NS + 250_000_000, WINTER_NS + 1_500_000_000]
    assert ticks.report["source_timestamp_type"] == "double epoch seconds"


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_arrow_timestamp_any_unit(tmp_path: Path, unit: str) -> None:
    ns_per_unit = {"s": NS_PER_SECOND, "ms": 1_000_000, "us": 1_000, "ns": 1}[unit]
    stored = pa.array([ns // ns_per_unit for ns in _three_seconds()], pa.timestamp(unit, tz="UTC"))
    path = _write(tmp_path, "EURUSD_2024.parquet", {"timestamp": stored, "bid": BIDS, "ask": ASKS})

    ticks = load_ticks(path, Config())

    assert ticks.timestamp_ns.tolist() == _three_seconds()
    # Parquet has no seconds unit, so pyarrow stores timestamp[s] as milliseconds.
    stored_unit = "ms" if unit == "s" else unit
    assert ticks.report["source_timestamp_type"] == f"timestamp[{stored_unit}, tz=UTC]"
    assert ticks.report["warnings"] == []


def test_naive_timestamp_read_as_utc_with_warning(tmp_path: Path) -> None:
    stored = pa.array([ns // 1_000 for ns in _three_seconds()], pa.timestamp("us"))
    path = _write(tmp_path, "EURUSD_2024.parquet", {"timestamp": stored, "bid": BIDS, "ask": ASKS})

    ticks = load_ticks(path, Config())

    assert ticks.timestamp_ns.tolist() == _three_seconds()
    assert len(ticks.report["warnings"]) == 1
    assert "no time zone" in ticks.report["warnings"][0]
    assert "read as UTC" in ticks.report["warnings"][0]


def test_new_york_timestamps_converted_to_utc(tmp_path: Path) -> None:
    # 05:00 New York is 10:00 UTC in March (EST, UTC-5), and 06:00 New York is 10:00 UTC in
    # July (EDT, UTC-4).
    local = pd.DatetimeIndex([pd.Timestamp("2024-03-04 05:00:00"), pd.Timestamp("2024-07-01 06:00:00")])
    local = local.tz_localize("America/New_York").as_unit("ms")
    stored = pa.array(local)
    assert str(stored.type) == "timestamp[ms, tz=America/New_York]"
    path = _write(tmp_path, "EURUSD_2024.parquet", {"DateTime": stored, "bid": BIDS[:2], "ask": ASKS[:2]})

    ticks = load_ticks(path, Config())

    assert ticks.timestamp_ns.tolist() == [WINTER_NS, SUMMER_NS]
    assert ticks.report["first_timestamp"] == "2024-03-04T10:00:00+00:00"
    assert ticks.report["last_timestamp"] == "2024-07-01T10:00:00+00:00"
    assert ticks.report["warnings"] == []


def test_iso_strings_with_offsets(tmp_path: Path) -> None:
    stored = ["2024-03-04T10:00:00Z", "2024-03-04T05:00:00.5-05:00", "2024-03-04T12:00:01+02:00"]
    path = _write(tmp_path, "EURUSD_2024.parquet", {"timestamp": stored, "bid": BIDS, "ask": ASKS})

    ticks = load_ticks(path, Config())

    assert ticks.timestamp_ns.tolist() == [WINTER_NS, WINTER_NS + 500_000_000, WINTER_NS + NS_PER_SECOND]
    assert ticks.report["source_timestamp_type"] == "string ISO 8601"
    assert ticks.report["warnings"] == []


def test_iso_strings_without_zone_warn(tmp_path: Path) -> None:
    stored = ["2024-03-04T10:00:00", "2024-03-04 10:00:01.000000001", "2024-03-04T10:00:02Z"]
    path = _write(tmp_path, "EURUSD_2024.parquet", {"timestamp": stored, "bid": BIDS, "ask": ASKS})

    ticks = load_ticks(path, Config())

    assert ticks.timestamp_ns.tolist() == [WINTER_NS, WINTER_NS + NS_PER_SECOND + 1, WINTER_NS + 2 * NS_PER_SECOND]
    assert ticks.report["warnings"] == [
        "2 of 3 times in column 'timestamp' have no UTC offset; they were read as UTC"
    ]


def test_unparseable_iso_string_is_missing_timestamp(tmp_path: Path) -> None:
    stored = ["2024-03-04T10:00:00Z", "not a time", "2024-03-04T10:00:02Z"]
    path = _write(tmp_path, "EURUSD_2024.parquet", {"timestamp": stored, "bid": BIDS, "ask": ASKS})

    ticks = load_ticks(path, LENIENT)

    assert ticks.timestamp_ns.tolist() == [WINTER_NS, WINTER_NS + 2 * NS_PER_SECOND]
    assert ticks.report["missing_timestamp"] == 1
    assert ticks.report["rows_kept"] == 2


@pytest.mark.parametrize(
    ("stored", "shown"),
    [
        ([1_000, 2_000], "1000"),  # seconds in 1970
        ([WINTER_NS // NS_PER_SECOND, 50_000_000_000], "50000000000"),  # seconds in the year 3554
        ([WINTER_NS, 2**63 - 1], str(2**63 - 1)),  # nanoseconds after 2100
    ],
)
def test_out_of_range_integer_epoch_raises(tmp_path: Path, stored: list[int], shown: str) -> None:
    path = _write(tmp_path, "EURUSD_2024.parquet",
                  {"timestamp": pa.array(stored, pa.int64()), "bid": BIDS[:2], "ask": ASKS[:2]})
    with pytest.raises(TickDataError) as caught:
        load_ticks(path, Config())
    message = str(caught.value)
    assert str(path) in message
    assert f"timestamp {shown} " in message
    assert "outside 1990-01-01 to 2100-01-01 UTC" in message
    assert "Expected epoch seconds, milliseconds, microseconds or nanoseconds" in message


def test_out_of_range_arrow_timestamp_raises(tmp_path: Path) -> None:
    stored = pa.array([pd.Timestamp("1985-06-01").value, WINTER_NS], pa.timestamp("ns", tz="UTC"))
    path = _write(tmp_path, "EURUSD_2024.parquet", {"timestamp": stored, "bid": BIDS[:2], "ask": ASKS[:2]})
    with pytest.raises(TickDataError, match="timestamp 1985-06-01T00:00:00\\+00:00 .* is outside"):
        load_ticks(path, Config())


# --- columns and prices -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("time_name", "bid_name", "ask_name"),
    [
        ("Timestamp", "Bid", "Ask"),
        ("TIME", "bid_price", "ask_price"),
        ("datetime", "BidPrice", "AskPrice"),
        ("Date", "bid", "Offer"),
        ("ts", "Bid Price", "Ask Price"),
        ("ts_event", "BID", "OFFER"),
    ],
)
def test_column_name_variants(tmp_path: Path, time_name: str, bid_name: str, ask_name: str) -> None:
    path = _write(tmp_path, "EURUSD_2024.parquet",
                  {time_name: _utc(_three_seconds()), bid_name: BIDS, ask_name: ASKS, "volume": [1, 2, 3]})
    ticks = load_ticks(path, Config())
    assert ticks.bid.tolist() == BIDS
    assert ticks.ask.tolist() == ASKS


def test_missing_column_lists_columns_found(tmp_path: Path) -> None:
    path = _write(tmp_path, "EURUSD_2024.parquet", {"time": _utc(_three_seconds()), "bid": BIDS, "sell": ASKS})
    with pytest.raises(TickDataError) as caught:
        load_ticks(path, Config())
    message = str(caught.value)
    assert f"Tick file {path} has no ask column" in message
    assert "Columns found: ['time', 'bid', 'sell']" in message
    assert "ask, ask_price, askprice, offer" in message


def test_missing_timestamp_column_lists_columns_found(tmp_path: Path) -> None:
    path = _write(tmp_path, "EURUSD_2024.parquet", {"when": _utc(_three_seconds()), "bid": BIDS, "ask": ASKS})
    with pytest.raises(TickDataError, match=r"no timestamp column\. Columns found: \['when', 'bid', 'ask'\]"):
        load_ticks(path, Config())


def test_prices_from_int_decimal_and_string(tmp_path: Path) -> None:
    decimals = pa.array([decimal.Decimal("1.10000"), decimal.Decimal("1.10010"), decimal.Decimal("1.10020")],
                        pa.decimal128(8, 5))
    path = _write(tmp_path, "USDJPY_2024.parquet",
                  {"timestamp": _utc(_three_seconds()), "bid": pa.array([150, 151, 152], pa.int64()),
                   "ask": ["150.5", " 151.5 ", "152.5"]})
    ticks = load_ticks(path, Config())
    assert ticks.bid.dtype == np.float64
    assert ticks.bid.tolist() == [150.0, 151.0, 152.0]
    assert ticks.ask.tolist() == [150.5, 151.5, 152.5]
    assert ticks.report["median_spread_pips"] == 50.0

    path = _write(tmp_path, "EURUSD_2024.parquet",
                  {"timestamp": _utc(_three_seconds()), "bid": decimals, "ask": ASKS})
    ticks = load_ticks(path, Config())
    assert ticks.bid.tolist() == BIDS


def test_unparseable_price_string_counts_as_missing(tmp_path: Path) -> None:
    path = _write(tmp_path, "EURUSD_2024.parquet",
                  {"timestamp": _utc(_three_seconds()), "bid": ["1.1000", "n/a", None], "ask": ASKS})
    ticks = load_ticks(path, Config(ticks=TicksConfig(max_invalid_fraction=0.7)))
    assert ticks.report["missing_price"] == 2
    assert ticks.report["rows_kept"] == 1
    assert ticks.report["warnings"] == [
        "1 values in price column 'bid' are not numbers; they count as missing prices"
    ]


# --- validation -------------------------------------------------------------------------


def _second(offset: int) -> int:
    return WINTER_NS + offset * NS_PER_SECOND


def test_validation_rules_exact_counts(tmp_path: Path) -> None:
    nan = float("nan")
    rows = [  # (second, bid, ask): what the row tests
        (5, 1.1000, 1.1002),  # valid
        (3, 1.1000, 1.1001),  # valid, earlier than the row before it (out of order)
        (3, 1.0999, 1.1001),  # valid, same time as the row before it
        (3, 1.1000, 1.1001),  # duplicate of the row two above (A, B, A)
        (4, nan, 1.1000),     # missing price
        (4, 0.0, 1.1000),     # zero bid
        (6, 1.1000, -1.0),    # negative ask
        (6, 1.1003, 1.1002),  # crossed
        (6, 1.1003, 1.1002),  # duplicate of the crossed row: counted once, as a duplicate
        (7, 1.1002, 1.1002),  # zero spread, valid
        (1, 1.1000, 1.1001),  # valid, out of order
        (7, 1.1002, 1.1003),  # valid, same time as the zero-spread row
    ]
    path = _write(tmp_path, "EURUSD_2024.parquet", {
        "timestamp": _utc([_second(r[0]) for r in rows]),
        "bid": [r[1] for r in rows],
        "ask": [r[2] for r in rows],
    })

    ticks = load_ticks(path, LENIENT)
    report = ticks.report

    assert report["rows_read"] == 12
    assert report["out_of_order"] == 2
    assert report["duplicates_dropped"] == 2
    assert report["missing_price"] == 1
    assert report["non_positive_price"] == 2
    assert report["crossed"] == 1
    assert report["missing_timestamp"] == 0
    assert report["zero_spread"] == 1
    assert report["equal_timestamps"] == 2
    assert report["rows_kept"] == 6
    assert ticks.n == 6
    assert ticks.timestamp_ns.tolist() == [_second(s) for s in (1, 3, 3, 5, 7, 7)]
    assert ticks.bid.tolist() == [1.1000, 1.1000, 1.0999, 1.1000, 1.1002, 1.1002]
    assert ticks.ask.tolist() == [1.1001, 1.1001, 1.1001, 1.1002, 1.1002, 1.1003]


def test_equal_timestamps_keep_file_order(tmp_path: Path) -> None:
    # The file is out of order; the ticks at second 2 must come out in file order a, b, c.
    seconds = [3, 2, 2, 0, 2, 1]
    bids = [1.3000, 1.2001, 1.2003, 1.0000, 1.2002, 1.1000]
    path = _write(tmp_path, "EURUSD_2024.parquet", {
        "timestamp": _utc([_second(s) for s in seconds]),
        "bid": bids,
        "ask": [b + 0.0001 for b in bids],
    })

    ticks = load_ticks(path, Config())

    assert ticks.timestamp_ns.tolist() == [_second(s) for s in (0, 1, 2, 2, 2, 3)]
    assert ticks.bid.tolist() == [1.0000, 1.1000, 1.2001, 1.2003, 1.2002, 1.3000]
    assert ticks.report["out_of_order"] == 3
    assert ticks.report["equal_timestamps"] == 2


def _reference_clean(seconds: np.ndarray, bid: np.ndarray, ask: np.ndarray) -> list[tuple[int, float, float]]:
    """Stable sort by time, then keep the first of each exact (time, bid, ask) row, row by row."""
    order = sorted(range(len(seconds)), key=lambda i: seconds[i])
    seen: set[tuple[int, float, float]] = set()
    kept = []
    for i in order:
        row = (int(seconds[i]), float(bid[i]), float(ask[i]))
        if row not in seen:
            seen.add(row)
            kept.append(row)
    return kept


def test_duplicates_match_row_by_row_reference(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    seconds = rng.integers(0, 40, size=600)
    bid = 1.1 + rng.integers(0, 3, size=600) * 0.0001
    ask = bid + rng.integers(0, 2, size=600) * 0.0001
    path = _write(tmp_path, "EURUSD_2024.parquet",
                  {"timestamp": _utc((WINTER_NS + seconds * NS_PER_SECOND).tolist()), "bid": bid, "ask": ask})

    ticks = load_ticks(path, Config())

    expected = _reference_clean(seconds, bid, ask)
    got = list(zip(((ticks.timestamp_ns - WINTER_NS) // NS_PER_SECOND).tolist(),
                   ticks.bid.tolist(), ticks.ask.tolist(), strict=True))
    assert got == expected
    assert ticks.report["duplicates_dropped"] == 600 - len(expected)
    assert ticks.report["duplicates_dropped"] > 100


def _file_with_invalid_rows(folder: Path, n_rows: int, n_invalid: int, n_duplicates: int = 0) -> Path:
    seconds = list(range(n_rows)) + list(range(n_duplicates))
    bids = [1.1000] * len(seconds)
    for i in range(n_invalid):
        bids[n_rows - 1 - i] = 1.2000  # crossed: above the ask, and after the duplicated rows
    return _write(folder, "EURUSD_2024.parquet", {
        "timestamp": _utc([_second(s) for s in seconds]),
        "bid": bids,
        "ask": [1.1001] * len(seconds),
    })


def test_invalid_fraction_above_limit_raises(tmp_path: Path) -> None:
    path = _file_with_invalid_rows(tmp_path, n_rows=300, n_invalid=4)
    with pytest.raises(TickDataError) as caught:
        load_ticks(path, Config())
    message = str(caught.value)
    assert str(path) in message
    assert "4 of 300 rows (1.33 %) are invalid" in message
    assert "4 with the bid above the ask" in message
    assert "0 with a missing price" in message
    assert "max_invalid_fraction" in message


def test_invalid_fraction_at_limit_passes(tmp_path: Path) -> None:
    ticks = load_ticks(_file_with_invalid_rows(tmp_path, n_rows=300, n_invalid=3), Config())
    assert ticks.report["crossed"] == 3
    assert ticks.report["rows_kept"] == 297


def test_duplicates_excluded_from_invalid_fraction(tmp_path: Path) -> None:
    # 150 duplicates and 3 crossed rows: 3 of 300 unique rows is exactly 1 %.
    ticks = load_ticks(_file_with_invalid_rows(tmp_path, n_rows=300, n_invalid=3, n_duplicates=150), Config())
    assert ticks.report["duplicates_dropped"] == 150
    assert ticks.report["crossed"] == 3
    assert ticks.report["rows_kept"] == 297


def test_empty_file_raises(tmp_path: Path) -> None:
    path = _write(tmp_path, "EURUSD_2024.parquet",
                  {"timestamp": _utc([]), "bid": pa.array([], pa.float64()), "ask": pa.array([], pa.float64())})
    with pytest.raises(TickDataError, match="contains no valid tick"):
        load_ticks(path, Config())


def test_all_rows_invalid_raises(tmp_path: Path) -> None:
    path = _write(tmp_path, "EURUSD_2024.parquet",
                  {"timestamp": _utc(_three_seconds()), "bid": [0.0, 0.0, 0.0], "ask": ASKS})
    with pytest.raises(TickDataError, match="3 with a zero or negative price"):
        load_ticks(path, Config())
    with pytest.raises(TickDataError, match="contains no valid tick"):
        load_ticks(path, Config(ticks=TicksConfig(max_invalid_fraction=1.0)))


# --- file level -------------------------------------------------------------------------


def test_synthetic_flag_from_metadata(tmp_path: Path) -> None:
    columns = {"timestamp": _utc(_three_seconds()), "bid": BIDS, "ask": ASKS}
    synthetic = load_ticks(_write(tmp_path, "EURUSD_2024.parquet", columns, {"synthetic": "true"}), Config())
    real = load_ticks(_write(tmp_path, "GBPUSD_2024.parquet", columns), Config())
    assert synthetic.synthetic is True
    assert synthetic.report["synthetic"] is True
    assert real.synthetic is False


def _hourly_ns(first: str, n_hours: int) -> list[int]:
    start_ns = int(pd.Timestamp(first, tz="UTC").value)
    return [start_ns + hour * 3600 * NS_PER_SECOND for hour in range(n_hours)]


def _hourly_file(folder: Path, name: str, timestamp_ns: list[int]) -> Path:
    n = len(timestamp_ns)
    return _write(folder, name, {"timestamp": _utc(timestamp_ns), "bid": [1.1] * n, "ask": [1.1001] * n})


def test_ticks_of_other_year_fail(tmp_path: Path) -> None:
    path = _hourly_file(tmp_path, "EURUSD_2024.parquet", _hourly_ns("2019-03-04", 10))
    with pytest.raises(TickDataError) as error:
        load_ticks(path, Config())
    message = str(error.value)
    assert "0 of 10 ticks (0.0%) fall in 2024 UTC" in message
    assert "2019-03-04" in message
    assert "EURUSD_2024.parquet" in message
    assert "Rename the file to the year its ticks cover" in message


def test_ticks_mostly_of_other_year_warn(tmp_path: Path) -> None:
    # 4 of 10 ticks in 2024: fewer than half.
    timestamp_ns = _hourly_ns("2023-12-31 18:00", 10)
    path = _hourly_file(tmp_path, "EURUSD_2024.parquet", timestamp_ns)
    ticks = load_ticks(path, Config())
    # Sunday 18:00 UTC is before the 17:00 New York reopen, so a weekend warning comes too.
    year_warnings = [warning for warning in ticks.report["warnings"] if "fall in 2024 UTC" in warning]
    assert len(year_warnings) == 1
    assert "4 of 10 ticks (40.0%)" in year_warnings[0]


def test_ticks_from_previous_evening_accepted(tmp_path: Path) -> None:
    # A year's file may start on 31 December at 22:00 UTC, the Sunday-evening open of its first week.
    timestamp_ns = _hourly_ns("2023-12-31 22:00", 6)
    path = _hourly_file(tmp_path, "EURUSD_2024.parquet", timestamp_ns)
    ticks = load_ticks(path, Config())
    assert ticks.report["warnings"] == []
    assert ticks.report["rows_kept"] == 6


def test_ticks_fields_and_read_only_arrays(tmp_path: Path) -> None:
    path = _write(tmp_path, "USDJPY_2024.parquet",
                  {"timestamp": _utc(_three_seconds()), "bid": [150.0, 150.1, 150.2], "ask": [150.02, 150.12, 150.22]})
    ticks = load_ticks(path, Config())
    assert isinstance(ticks, Ticks)
    assert (ticks.symbol, ticks.year, ticks.pair_year, ticks.path) == ("USDJPY", 2024, "USDJPY_2024", path)
    assert ticks.instrument.pip_size == 0.01
    assert ticks.report["pip_size"] == 0.01
    assert ticks.report["price_precision"] == 3
    assert ticks.report["median_spread_pips"] == 2.0
    for array in (ticks.timestamp_ns, ticks.bid, ticks.ask):
        assert not array.flags.writeable
    with pytest.raises(ValueError):
        ticks.bid[0] = 1.0


def test_unknown_symbol_and_bad_name_raise(tmp_path: Path) -> None:
    columns = {"timestamp": _utc(_three_seconds()), "bid": BIDS, "ask": ASKS}
    with pytest.raises(UnknownInstrumentError, match=r"\[instruments.ABCDEF\]"):
        load_ticks(_write(tmp_path, "ABCDEF_2024.parquet", columns), Config())
    with pytest.raises(InvalidFileNameError):
        load_ticks(_write(tmp_path, "eurusd_2024.parquet", columns), Config())


def test_not_parquet_raises(tmp_path: Path) -> None:
    path = tmp_path / "EURUSD_2024.parquet"
    path.write_text("timestamp,bid,ask\n")
    with pytest.raises(TickDataError, match="Cannot read tick file .*EURUSD_2024.parquet as parquet"):
        load_ticks(path, Config())
    with pytest.raises(FileNotFoundError):
        load_ticks(tmp_path / "GBPUSD_2024.parquet", Config())


def test_corrupt_file_message_has_single_period(tmp_path: Path) -> None:
    # Arrow's own message ends in a period here, before the sentence naming the fix.
    good = _write(tmp_path, "GBPUSD_2024.parquet", {"timestamp": _utc(_three_seconds()), "bid": BIDS, "ask": ASKS})
    path = tmp_path / "EURUSD_2024.parquet"
    path.write_bytes(good.read_bytes()[:-20])
    with pytest.raises(TickDataError) as raised:
        load_ticks(path, Config())
    message = str(raised.value)
    assert "Write the ticks as a parquet file" in message
    assert ".." not in message
    assert ". Write the ticks" in message


def test_write_ticks_report(tmp_path: Path) -> None:
    path = _write(tmp_path, "EURUSD_2024.parquet", {"timestamp": _utc(_three_seconds()), "bid": BIDS, "ask": ASKS})
    ticks = load_ticks(path, Config())
    out_dir = tmp_path / "out"
    out_dir.mkdir()

    written = write_ticks_report(ticks, out_dir)

    assert written == out_dir / "EURUSD_2024_ticks_report.json"
    document = json.loads(written.read_text())
    assert document == ticks.report
    assert document["rows_kept"] == 3
    assert document["median_spread_pips"] == 1.0


# --- real tick files --------------------------------------------------------------------

# Per real tick file: rows, exact duplicate rows, repeated timestamps and zero spreads, as
# documented with the data. "Repeated timestamps" counts rows of the stored file whose
# timestamp equals the previous row's, duplicates included, which the meaning test checks.
# The report's equal_timestamps counts the same among the kept ticks. Every dropped
# duplicate shares its timestamp with a kept tick, so equal_timestamps = repeated - duplicates.
REAL_FILES = [
    ("EURUSD_2014", 532_903, 12, 4_494, 0),
    ("NZDUSD_2014", 457_699, 31, 7_043, 0),
    ("EURUSD_2019", 266_219, 0, 0, 0),
    ("EURUSD_2020", 108_808, 0, 0, 0),
    ("AUDUSD_2020", 100_000, 0, 179, 3_498),
    ("GBPUSD_2013", 62_012, 4_470, 28_712, 0),
    ("USDJPY_2013", 1_000, 0, 7, 1),
]


@pytest.fixture(scope="module")
def real_parquet_dir() -> Path:
    if not PARQUET_DIR.is_dir():
        pytest.skip(f"real tick files not found at {PARQUET_DIR}")
    return PARQUET_DIR


@pytest.mark.parametrize(("pair_year", "rows", "duplicates", "repeated", "zero_spread"), REAL_FILES)
def test_real_file_counts(real_parquet_dir: Path, pair_year: str, rows: int, duplicates: int,
                          repeated: int, zero_spread: int) -> None:
    path = real_parquet_dir / f"{pair_year}.parquet"
    ticks = load_ticks(path, Config())
    report = ticks.report

    assert report["rows_read"] == rows
    assert report["duplicates_dropped"] == duplicates
    assert report["rows_kept"] == rows - duplicates
    assert report["equal_timestamps"] == repeated - duplicates
    assert report["zero_spread"] == zero_spread
    assert report["out_of_order"] == 0
    assert report["missing_price"] == 0
    assert report["non_positive_price"] == 0
    assert report["crossed"] == 0
    assert report["synthetic"] is False
    assert report["warnings"] == []
    assert np.all(np.diff(ticks.timestamp_ns) >= 0)
    assert np.all(ticks.bid <= ticks.ask)


@pytest.mark.parametrize(("pair_year", "rows", "duplicates", "repeated", "zero_spread"), REAL_FILES)
def test_real_file_repeated_timestamps_meaning(real_parquet_dir: Path, pair_year: str, rows: int,
                                               duplicates: int, repeated: int, zero_spread: int) -> None:
    stored = pq.read_table(real_parquet_dir / f"{pair_year}.parquet", columns=["timestamp"])
    timestamp_ns = stored.column("timestamp").cast(pa.int64()).to_numpy()
    assert int(np.count_nonzero(timestamp_ns[1:] == timestamp_ns[:-1])) == repeated


def test_real_usdjpy_span_and_spread(real_parquet_dir: Path) -> None:
    ticks = load_ticks(real_parquet_dir / "USDJPY_2013.parquet", Config())
    assert ticks.n == 1_000
    assert ticks.instrument.pip_size == 0.01
    assert ticks.report["first_timestamp"].startswith("2013-01-01T22:00:")
    assert ticks.report["last_timestamp"].startswith("2013-01-01T22:35:")
    assert ticks.report["median_spread_pips"] == 2.0


def test_null_timestamp_and_null_price_dropped(tmp_path: Path) -> None:
    path = _write(tmp_path, "EURUSD_2024.parquet", {
        "timestamp": _utc([WINTER_NS, None, WINTER_NS + 2 * NS_PER_SECOND, WINTER_NS + 3 * NS_PER_SECOND]),
        "bid": [1.1000, 1.1001, None, 1.1003],
        "ask": [1.1001, 1.1002, 1.1003, 1.1004],
    })
    ticks = load_ticks(path, LENIENT)
    assert ticks.report["missing_timestamp"] == 1
    assert ticks.report["missing_price"] == 1
    assert ticks.timestamp_ns.tolist() == [WINTER_NS, WINTER_NS + 3 * NS_PER_SECOND]


def test_dictionary_encoded_columns(tmp_path: Path) -> None:
    times = pa.array(["2024-03-04T10:00:00Z", "2024-03-04T10:00:01Z", "2024-03-04T10:00:00Z"]).dictionary_encode()
    bids = pa.array(["1.1000", "1.1001", "1.1000"]).dictionary_encode()
    path = _write(tmp_path, "EURUSD_2024.parquet", {"timestamp": times, "bid": bids, "ask": [1.1001, 1.1002, 1.1001]})
    ticks = load_ticks(path, Config())
    assert ticks.timestamp_ns.tolist() == [WINTER_NS, WINTER_NS + NS_PER_SECOND]
    assert ticks.report["duplicates_dropped"] == 1
    assert ticks.report["out_of_order"] == 1


def test_weekend_close_ticks_are_counted_and_warned(tmp_path):
    # Saturday and Sunday-morning ticks lie inside the Friday 17:00 - Sunday 17:00 New York close.
    times = pd.date_range("2019-03-09 00:00", "2019-03-10 20:00", freq="min", tz="UTC")
    frame = pd.DataFrame({"timestamp": times, "bid": 1.1, "ask": 1.1001})
    path = tmp_path / "EURUSD_2019.parquet"
    frame.to_parquet(path)
    ticks = load_ticks(path, Config())
    # 2019-03-10 is the US daylight-saving change: 17:00 New York is 21:00 UTC that Sunday.
    assert ticks.report["weekend_close_ticks"] == len(times)
    assert any("weekend close" in warning for warning in ticks.report["warnings"])


def test_real_files_have_no_weekend_close_ticks():
    if not PARQUET_DIR.is_dir():
        pytest.skip(f"real tick files not found at {PARQUET_DIR}")
    for path in sorted(PARQUET_DIR.glob("*.parquet")):
        ticks = load_ticks(path, Config())
        assert ticks.report["weekend_close_ticks"] == 0, path.name

"""Vendor formats without a real file here: hand-written inputs with UTC values computed by hand."""

from __future__ import annotations

import lzma
import struct
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fxresearch.importing import ImportDataError, ImportOptions, convert_files, detect_format, normalise_symbol
from fxresearch.importing.common import Source

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "import"


def _ns(text: str) -> int:
    return int(pd.Timestamp(text, tz="UTC").as_unit("ns").value)


def _ticks(path: Path) -> tuple[list[int], list[float], list[float]]:
    table = pq.read_table(path)
    timestamps = table.column("timestamp").cast(pa.timestamp("ns", tz="UTC")).cast(pa.int64()).to_pylist()
    return timestamps, table.column("bid").to_pylist(), table.column("ask").to_pylist()


@pytest.mark.parametrize(("name", "expected"), [
    ("Exness_EURUSDm_2024_01.csv", "exness"),
    ("EURUSD_Ticks_07.01.2019-07.01.2019.csv", "dukascopy-csv"),
    ("EURUSD_Ticks_local_2019.csv", "dukascopy-csv"),
    ("USDJPY-2013-01.csv", "truefx"),
    ("DAT_ASCII_EURUSD_T_202007.csv", "histdata"),
    ("EURUSD_mt5_ticks.csv", "mt5"),
    ("EURUSD_export.csv", "generic"),
])
def test_format_detected_from_content(name, expected):
    assert detect_format(Source(FIXTURES / name)) == expected


@pytest.mark.parametrize(("raw", "symbol", "variant"), [
    ("EUR/USD", "EURUSD", ""),
    ("eurusd", "EURUSD", ""),
    ("EURUSDm", "EURUSD", "m"),
    ("EURUSDc", "EURUSD", "c"),
    ("EURUSD_Raw_Spread", "EURUSD", "Raw_Spread"),
    ("EURUSD_Zero_Spread", "EURUSD", "Zero_Spread"),
    ("EURUSD.a", "EURUSD", "a"),
    ("AUD/USD.SIM", "AUDUSD", ""),
    ("XAUUSD", "XAUUSD", ""),
])
def test_symbol_normalised(raw, symbol, variant):
    assert normalise_symbol(raw, "test") == (symbol, variant)


@pytest.mark.parametrize("raw", ["../x", "EUR", "EURUSD/../../etc", "12USD3"])
def test_symbol_invalid_rejected(raw):
    with pytest.raises(ImportDataError, match="Invalid symbol"):
        normalise_symbol(raw, "test")


def test_exness_variant_dedup_and_invalid(tmp_path):
    report = convert_files([FIXTURES / "Exness_EURUSDm_2024_01.csv"], tmp_path)[0]
    timestamps, bid, ask = _ticks(tmp_path / "EURUSD_2024.parquet")
    assert timestamps == [_ns("2024-01-02 00:00:00.125"), _ns("2024-01-02 00:00:01.250"),
                          _ns("2024-01-02 00:00:01.500")]
    assert bid == [1.10351, 1.10350, 1.10352]
    assert ask == [1.10372, 1.10371, 1.10372]
    assert report["rows_read"] == 5
    assert report["duplicates_dropped"] == 1
    assert report["rows_reordered"] == 1
    assert report["invalid_dropped"] == {"bid above ask": 1}
    assert report["variant"] == "m"
    metadata = pq.read_schema(tmp_path / "EURUSD_2024.parquet").metadata
    assert metadata[b"variant"] == b"m"
    assert metadata[b"source_format"] == b"exness"


def test_exness_overlapping_variants_rejected(tmp_path):
    with pytest.raises(ImportDataError) as error:
        convert_files([FIXTURES / "Exness_EURUSDm_2024_01.csv", FIXTURES / "Exness_EURUSD_Raw_Spread_2024_01.csv"],
                      tmp_path)
    message = str(error.value)
    assert "Exness_EURUSDm_2024_01.csv" in message
    assert "Exness_EURUSD_Raw_Spread_2024_01.csv" in message
    assert "variant Raw_Spread" in message
    assert list(tmp_path.glob("*.parquet")) == []


def _bi5(records: list[tuple[int, int, int, float, float]]) -> bytes:
    raw = b"".join(struct.pack(">IIIff", *record) for record in records)
    return lzma.compress(raw, format=lzma.FORMAT_ALONE)


def test_dukascopy_bi5_native_layout_months_from_zero(tmp_path):
    # Month folder 00 is January: 2019-01-07 13:00 UTC.
    hour_file = tmp_path / "in" / "EURUSD" / "2019" / "00" / "07" / "13h_ticks.bi5"
    hour_file.parent.mkdir(parents=True)
    hour_file.write_bytes(_bi5([(123, 114412, 114405, 0.75, 1.5), (1_700, 114413, 114406, 1.0, 2.0)]))
    convert_files([tmp_path / "in"], tmp_path / "out")
    timestamps, bid, ask = _ticks(tmp_path / "out" / "EURUSD_2019.parquet")
    assert timestamps == [_ns("2019-01-07 13:00:00.123"), _ns("2019-01-07 13:00:01.700")]
    assert bid == [1.14405, 1.14406]
    assert ask == [1.14412, 1.14413]


def test_dukascopy_bi5_jpy_divisor_and_real_date_name(tmp_path):
    hour_file = tmp_path / "dukascopy_USDJPY_2019-02-04_05h_ticks.bi5"
    hour_file.write_bytes(_bi5([(0, 108123, 108120, 1.0, 1.0)]))
    empty_hour = tmp_path / "dukascopy_USDJPY_2019-02-04_06h_ticks.bi5"
    empty_hour.write_bytes(b"")
    report = convert_files([hour_file, empty_hour], tmp_path / "out")[0]
    timestamps, bid, ask = _ticks(tmp_path / "out" / "USDJPY_2019.parquet")
    assert timestamps == [_ns("2019-02-04 05:00:00")]
    assert bid == [108.12]
    assert ask == [108.123]
    assert report["rows_written"] == 1


def test_dukascopy_csv_gmt_time_day_first(tmp_path):
    convert_files([FIXTURES / "EURUSD_Ticks_07.01.2019-07.01.2019.csv"], tmp_path)
    timestamps, bid, ask = _ticks(tmp_path / "EURUSD_2019.parquet")
    assert timestamps == [_ns("2019-01-07 13:00:00.123"), _ns("2019-01-07 13:00:01.700")]
    assert bid == [1.14405, 1.14406]
    assert ask == [1.14412, 1.14413]


def test_dukascopy_csv_local_time_row_offsets(tmp_path):
    convert_files([FIXTURES / "EURUSD_Ticks_local_2019.csv"], tmp_path)
    timestamps, bid, _ = _ticks(tmp_path / "EURUSD_2019.parquet")
    # GMT+0200 in January and GMT+0300 in July, each row by its own offset.
    assert timestamps == [_ns("2019-01-07 13:00:00.123"), _ns("2019-07-01 13:30:00")]
    assert bid == [1.14405, 1.1389]


def test_truefx_symbol_from_content(tmp_path):
    report = convert_files([FIXTURES / "USDJPY-2013-01.csv"], tmp_path)[0]
    timestamps, bid, ask = _ticks(tmp_path / "USDJPY_2013.parquet")
    assert timestamps == [_ns("2013-01-01 21:59:59.981"), _ns("2013-01-01 22:00:00.102")]
    assert bid == [86.655, 86.657]
    assert ask == [86.728, 86.728]
    assert report["inputs"][0]["symbol_from"] == "file content"


def test_histdata_eastern_standard_time_in_summer(tmp_path):
    report = convert_files([FIXTURES / "DAT_ASCII_EURUSD_T_202007.csv"], tmp_path)[0]
    timestamps, _, _ = _ticks(tmp_path / "EURUSD_2020.parquet")
    # 17:00 EST is 22:00 UTC all year; New York's summer time (EDT) would give 21:00.
    assert timestamps == [_ns("2020-07-01 22:00:00.065"), _ns("2020-07-01 22:00:10.447")]
    assert report["invalid_dropped"] == {"unreadable timestamp": 1}
    assert "UTC-05:00" in report["tz_rule"][0]


def test_mt5_one_sided_updates_and_inferred_offset(tmp_path):
    report = convert_files([FIXTURES / "EURUSD_mt5_ticks.csv"], tmp_path)[0]
    timestamps, bid, ask = _ticks(tmp_path / "EURUSD_2024.parquet")
    # Server UTC+2: the Monday 00:00:05 server tick is 5 s after Sunday 17:00 New York (22:00 UTC).
    assert timestamps == [_ns("2024-01-05 21:58:00.200"), _ns("2024-01-05 21:58:30"),
                          _ns("2024-01-07 22:00:05"), _ns("2024-01-07 22:00:07.500")]
    assert bid == [1.094, 1.09395, 1.09395, 1.0943]
    assert ask == [1.0941, 1.0941, 1.0948, 1.0947]
    assert report["invalid_dropped"] == {"no bid or ask (last-price or volume update)": 1,
                                         "one side empty before its first quote": 1}
    assert "fixed UTC+2" in report["tz_rule"][0]


def test_mt5_server_tz_option_overrides(tmp_path):
    convert_files([FIXTURES / "EURUSD_mt5_ticks.csv"], tmp_path, ImportOptions(server_tz="UTC+3"))
    timestamps, _, _ = _ticks(tmp_path / "EURUSD_2024.parquet")
    assert timestamps[0] == _ns("2024-01-05 20:58:00.200")


def test_mt5_new_york_clock_across_daylight_saving(tmp_path):
    # A server on New York time + 7 h: UTC+2 before 10 March 2024, UTC+3 after. UTF-16, as MetaTrader writes.
    rows = ["<DATE>\t<TIME>\t<BID>\t<ASK>\t<LAST>\t<VOLUME>\t<FLAGS>",
            "2024.03.01\t23:50:00.000\t1.08000\t1.08010\t\t\t6",
            "2024.03.04\t00:00:02.000\t1.08100\t1.08110\t\t\t6",
            "2024.03.08\t23:50:00.000\t1.09000\t1.09010\t\t\t6",
            "2024.03.11\t00:00:03.000\t1.09100\t1.09110\t\t\t6"]
    path = tmp_path / "EURUSD_ticks.csv"
    path.write_text("\r\n".join(rows) + "\r\n", encoding="utf-16")
    report = convert_files([path], tmp_path / "out")[0]
    timestamps, _, _ = _ticks(tmp_path / "out" / "EURUSD_2024.parquet")
    assert timestamps == [_ns("2024-03-01 21:50"), _ns("2024-03-03 22:00:02"), _ns("2024-03-08 21:50"),
                          _ns("2024-03-10 21:00:03")]
    assert "New York time +7 h" in report["tz_rule"][0]


def test_mt5_without_weekend_needs_server_tz(tmp_path):
    path = tmp_path / "EURUSD_ticks.csv"
    path.write_text("<DATE>\t<TIME>\t<BID>\t<ASK>\n2024.03.05\t10:00:00.000\t1.08\t1.0801\n")
    with pytest.raises(ImportDataError, match="--server-tz"):
        convert_files([path], tmp_path / "out")


def _lean_zip(folder: Path, csv_text: str) -> Path:
    folder.mkdir(parents=True)
    path = folder / "20110307_quote.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("20110307_eurusd_tick_quote.csv", csv_text)
    return path


def test_lean_fxcm_day_is_utc_minus_five(tmp_path):
    path = _lean_zip(tmp_path / "forex" / "fxcm" / "tick" / "eurusd",
                     "3600000,1.39000,1.39020\r\n3600250,1.39001,1.39020")
    report = convert_files([path], tmp_path / "out")[0]
    timestamps, bid, _ = _ticks(tmp_path / "out" / "EURUSD_2011.parquet")
    assert timestamps == [_ns("2011-03-07 06:00:00"), _ns("2011-03-07 06:00:00.250")]
    assert bid == [1.39, 1.39001]
    assert report["vendor"] == "fxcm"


def test_lean_oanda_day_is_utc(tmp_path):
    path = _lean_zip(tmp_path / "forex" / "oanda" / "tick" / "eurusd", "3600000,1.39000,1.39020")
    convert_files([path], tmp_path / "out")
    timestamps, _, _ = _ticks(tmp_path / "out" / "EURUSD_2011.parquet")
    assert timestamps == [_ns("2011-03-07 01:00:00")]


def test_lean_unknown_market_needs_source_tz(tmp_path):
    path = _lean_zip(tmp_path / "data" / "eurusd", "3600000,1.39000,1.39020")
    with pytest.raises(ImportDataError, match="--source-tz"):
        convert_files([path], tmp_path / "out")


def test_generic_csv_without_zone_needs_source_tz(tmp_path):
    with pytest.raises(ImportDataError, match="--source-tz"):
        convert_files([FIXTURES / "EURUSD_export.csv"], tmp_path)


def test_generic_csv_source_tz_and_symbol_from_content(tmp_path):
    report = convert_files([FIXTURES / "EURUSD_export.csv"], tmp_path,
                           ImportOptions(source_tz="America/New_York"))[0]
    timestamps, bid, _ = _ticks(tmp_path / "GBPUSD_2024.parquet")
    # 01:30 EST and 03:30 EDT (after the 02:00 change); the third row carries its own +00:00.
    assert timestamps == [_ns("2024-03-10 04:00"), _ns("2024-03-10 06:30"), _ns("2024-03-10 07:30:00.250")]
    assert bid == [1.28505, 1.285, 1.2851]
    assert report["rows_reordered"] == 1
    assert "EURUSD" in report["inputs"][0]["notes"][0]
    assert not (tmp_path / "EURUSD_2024.parquet").exists()


def test_generic_csv_bad_symbol_rejected(tmp_path):
    with pytest.raises(ImportDataError, match="Invalid symbol '../x'"):
        convert_files([FIXTURES / "bad_symbol.csv"], tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_generic_csv_split_by_utc_year(tmp_path):
    path = tmp_path / "EURUSD.csv"
    path.write_text("time,bid,ask\n2019-12-31T23:59:59.900Z,1.1,1.1002\n2020-01-01T00:00:00.100Z,1.1001,1.1003\n")
    reports = convert_files([path], tmp_path / "out")
    assert [r["pair_year"] for r in reports] == ["EURUSD_2019", "EURUSD_2020"]
    assert [r["rows_written"] for r in reports] == [1, 1]


def test_streamed_chunks_match_one_shot_sort(tmp_path):
    # Small blocks and rows out of order across blocks force several sorted runs and a k-way merge.
    rng = np.random.default_rng(7)
    n = 6_000
    base = _ns("2024-02-01")
    timestamps = base + np.sort(rng.integers(0, 10**12, n))
    order = np.arange(n)
    for start in range(0, n, 700):
        order[start:start + 700] = rng.permutation(order[start:start + 700])
    swap = rng.choice(n, 300, replace=False)
    order[swap] = order[swap[::-1]]
    timestamps = timestamps[order]
    bid = np.round(1.1 + rng.integers(0, 50, n) * 1e-5, 5)
    ask = np.round(bid + 2e-5, 5)
    timestamps[100:110] = timestamps[99]
    bid[100:110], ask[100:110] = bid[99], ask[99]
    text = "\n".join(f"{pd.Timestamp(int(t), tz='UTC').isoformat()},{b:.5f},{a:.5f}"
                     for t, b, a in zip(timestamps, bid, ask, strict=True))
    path = tmp_path / "EURUSD.csv"
    path.write_text("timestamp,bid,ask\n" + text + "\n")
    report = convert_files([path], tmp_path / "out", ImportOptions(block_bytes=4_096))[0]

    frame = pd.DataFrame({"t": timestamps, "b": bid, "a": ask})
    expected = frame.sort_values("t", kind="stable").drop_duplicates()
    got_t, got_b, got_a = _ticks(tmp_path / "out" / "EURUSD_2024.parquet")
    assert got_t == expected["t"].tolist()
    assert got_b == expected["b"].tolist()
    assert got_a == expected["a"].tolist()
    assert report["duplicates_dropped"] == n - len(expected)
    assert report["rows_reordered"] == int(np.count_nonzero(timestamps[1:] < timestamps[:-1]))


def test_format_override(tmp_path):
    with pytest.raises(ImportDataError, match="no valid tick"):
        convert_files([FIXTURES / "USDJPY-2013-01.csv"], tmp_path, ImportOptions(file_format="histdata"))

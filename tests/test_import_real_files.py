"""Conversion of the real vendor files in ../shared/data/raw against the reference PAIR_YEAR.parquet files.

The references are UTC, so equal ticks prove each vendor's time-zone rule. Exact duplicate
rows are dropped by the conversion and kept in the references, so both sides are compared
after dropping them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fxresearch.config import Config
from fxresearch.importing import ImportOptions, convert_files
from fxresearch.ticks import load_ticks

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
RAW = DATA / "raw"

CASES = {
    "EURUSD_2014": (["oanda_EURUSD_2014-05"], None),
    "NZDUSD_2014": (["oanda_NZDUSD_2014-05"], None),
    "EURUSD_2019": (["dukascopy_EURUSD_2019-02"], None),
    "EURUSD_2020": (["histdata_EURUSD_2020-01-01_ticks_nautilus.csv",
                     "histdata_EURUSD_2020-01-30_31_ticks_nautilus-catalog.parquet"], None),
    "AUDUSD_2020": (["truefx_AUDUSD_2020-01-30_ticks_nautilus-catalog.parquet"], None),
    "USDJPY_2013": (["truefx_USDJPY_2013-01-01_ticks_nautilus.csv"], None),
    # The tutorial file states no zone; its source documents it as UTC, so the test passes it.
    "GBPUSD_2013": (["sentdex_GBPUSD_2013-05-01_ticks.txt"], "UTC"),
}


def _frame(path: Path) -> pd.DataFrame:
    table = pq.read_table(path)
    return pd.DataFrame({
        "timestamp_ns": table.column("timestamp").cast(pa.timestamp("ns", tz="UTC")).cast(pa.int64()).to_numpy(),
        "bid": table.column("bid").to_numpy(),
        "ask": table.column("ask").to_numpy(),
    })


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    if not RAW.is_dir():
        pytest.skip(f"real vendor files not found at {RAW}")
    results = {}
    for pair_year, (names, source_tz) in CASES.items():
        out = tmp_path_factory.mktemp(pair_year)
        reports = convert_files([RAW / name for name in names], out, ImportOptions(source_tz=source_tz))
        results[pair_year] = (out, reports)
    return results


@pytest.mark.parametrize("pair_year", sorted(CASES))
def test_real_file_matches_reference(converted, pair_year):
    out, reports = converted[pair_year]
    assert [r["pair_year"] for r in reports] == [pair_year]
    actual = _frame(out / f"{pair_year}.parquet")
    expected = _frame(DATA / "parquet" / f"{pair_year}.parquet").drop_duplicates().reset_index(drop=True)
    assert len(actual) == len(expected)
    np.testing.assert_array_equal(actual["timestamp_ns"].to_numpy(), expected["timestamp_ns"].to_numpy())
    np.testing.assert_array_equal(actual["bid"].to_numpy(), expected["bid"].to_numpy())
    np.testing.assert_array_equal(actual["ask"].to_numpy(), expected["ask"].to_numpy())


@pytest.mark.parametrize("pair_year", sorted(CASES))
def test_real_file_report_counts(converted, pair_year):
    out, reports = converted[pair_year]
    report = reports[0]
    reference_rows = pq.read_metadata(DATA / "parquet" / f"{pair_year}.parquet").num_rows
    assert report["rows_read"] == reference_rows
    assert report["rows_written"] + report["duplicates_dropped"] == reference_rows
    assert report["invalid_dropped"] == {}
    on_disk = json.loads((out / f"{pair_year}_import_report.json").read_text())
    assert on_disk["rows_written"] == report["rows_written"]


def test_real_duplicate_counts(converted):
    # Exact duplicate rows counted in the reference files' own description.
    expected = {"EURUSD_2014": 12, "NZDUSD_2014": 31, "GBPUSD_2013": 4470, "EURUSD_2019": 0}
    for pair_year, duplicates in expected.items():
        assert converted[pair_year][1][0]["duplicates_dropped"] == duplicates, pair_year


def test_real_histdata_rule_in_metadata(converted):
    out, _ = converted["EURUSD_2020"]
    metadata = pq.read_schema(out / "EURUSD_2020.parquet").metadata
    assert metadata[b"source_format"] == b"histdata,nautilus-parquet"
    assert b"UTC-05:00" in metadata[b"tz_rules"]
    assert metadata[b"pair_year"] == b"EURUSD_2020"


def test_real_output_loads_with_load_ticks(converted):
    out, _ = converted["EURUSD_2019"]
    ticks = load_ticks(out / "EURUSD_2019.parquet", Config())
    assert ticks.n == 266_219
    assert ticks.report["warnings"] == []
    assert ticks.report["source_timestamp_type"].startswith("timestamp")


def test_real_sentdex_requires_source_tz(tmp_path):
    if not RAW.is_dir():
        pytest.skip(f"real vendor files not found at {RAW}")
    from fxresearch.importing import ImportDataError

    with pytest.raises(ImportDataError, match="--source-tz"):
        convert_files([RAW / "sentdex_GBPUSD_2013-05-01_ticks.txt"], tmp_path)
    assert list(tmp_path.glob("*.parquet")) == []


def test_real_bar_files_rejected(tmp_path):
    if not RAW.is_dir():
        pytest.skip(f"real vendor files not found at {RAW}")
    from fxresearch.importing import ImportDataError

    with pytest.raises(ImportDataError, match="bar file"):
        convert_files([RAW / "bars" / "oanda_EURUSD_2014-05-01_M1_quote_lean.zip"], tmp_path)
    with pytest.raises(ImportDataError, match="candle"):
        convert_files([RAW / "bars" / "dukascopy_EURUSD_2019-02-04_BID_candles_min_1.bi5"], tmp_path)

"""Converting into a folder that already contains the output, option checks, mixed zones and messages."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import main
from fxresearch.importing import ImportDataError, ImportOptions, convert_files

EXNESS_HEADER = '"Exness","Symbol","Timestamp","Bid","Ask"\n'


def _exness(path: Path, symbol: str, rows: list[tuple[str, float, float]]) -> Path:
    lines = [f'"exness","{symbol}","{stamp}",{bid},{ask}\n' for stamp, bid, ask in rows]
    path.write_text(EXNESS_HEADER + "".join(lines))
    return path


def _timestamps(path: Path) -> list[str]:
    table = pq.read_table(path)
    return [t.isoformat() for t in table.column("timestamp").to_pylist()]


@pytest.fixture
def two_months(tmp_path):
    january = _exness(tmp_path / "Exness_EURUSDm_2024_01.csv", "EURUSDm", [
        ("2024-01-02 00:00:00.000Z", 1.1035, 1.1037), ("2024-01-02 00:00:01.000Z", 1.1036, 1.1038)])
    february = _exness(tmp_path / "Exness_EURUSDm_2024_02.csv", "EURUSDm", [
        ("2024-01-02 00:00:01.000Z", 1.1036, 1.1038),  # repeats the last January row exactly
        ("2024-02-01 00:00:00.000Z", 1.0835, 1.0837)])
    return january, february, tmp_path / "out"


def test_second_month_merges_with_existing_file(two_months, capsys):
    january, february, out = two_months
    assert main.main(["--convert", str(january), "--output-dir", str(out)]) == 0
    capsys.readouterr()
    assert main.main(["--convert", str(february), "--output-dir", str(out)]) == 0
    console = capsys.readouterr().out

    assert "merged with the existing EURUSD_2024.parquet (2 rows)" in console
    assert _timestamps(out / "EURUSD_2024.parquet") == [
        "2024-01-02T00:00:00+00:00", "2024-01-02T00:00:01+00:00", "2024-02-01T00:00:00+00:00"]
    report = json.loads((out / "EURUSD_2024_import_report.json").read_text())
    assert report["existing_file"] == {"action": "merged", "file": "EURUSD_2024.parquet", "rows": 2}
    assert report["duplicates_dropped"] == 1
    assert report["rows_written"] == 3
    metadata = pq.read_schema(out / "EURUSD_2024.parquet").metadata
    assert metadata[b"vendor"] == b"exness" and metadata[b"variant"] == b"m"
    assert json.loads(metadata[b"tz_rules"]) == report["tz_rule"]
    assert len(report["tz_rule"]) == 1


def test_overwrite_replaces_existing_file(two_months, capsys):
    january, february, out = two_months
    convert_files([january], out)
    assert main.main(["--convert", str(february), "--output-dir", str(out), "--overwrite"]) == 0

    assert "replaced EURUSD_2024.parquet (2 rows)" in capsys.readouterr().out
    assert _timestamps(out / "EURUSD_2024.parquet") == ["2024-01-02T00:00:01+00:00", "2024-02-01T00:00:00+00:00"]
    report = json.loads((out / "EURUSD_2024_import_report.json").read_text())
    assert report["existing_file"] == {"action": "replaced", "file": "EURUSD_2024.parquet", "rows": 2}


def test_existing_file_of_another_variant_is_not_merged(two_months, tmp_path):
    january, _, out = two_months
    convert_files([january], out)
    raw = _exness(tmp_path / "Exness_EURUSD_Raw_Spread_2024_03.csv", "EURUSD_Raw_Spread",
                  [("2024-03-01 00:00:00.000Z", 1.0835, 1.0835)])

    with pytest.raises(ImportDataError, match=r"two feeds of EURUSD.*EURUSD_2024\.parquet.*variant m.*Raw_Spread"):
        convert_files([raw], out)
    assert len(_timestamps(out / "EURUSD_2024.parquet")) == 2
    convert_files([raw], out, ImportOptions(overwrite=True))
    assert len(_timestamps(out / "EURUSD_2024.parquet")) == 1


def test_existing_file_without_conversion_metadata_is_not_merged(two_months):
    january, _, out = two_months
    out.mkdir()
    pq.write_table(_plain_tick_table(), out / "EURUSD_2024.parquet")
    with pytest.raises(ImportDataError, match=r"EURUSD_2024\.parquet.*--overwrite"):
        convert_files([january], out)


def _plain_tick_table() -> pa.Table:
    return pa.table({"timestamp": pa.array([1_704_153_600_000_000_000], pa.timestamp("ns", tz="UTC")),
                      "bid": [1.1], "ask": [1.2]})


@pytest.mark.parametrize("option, value", [("--source-tz", "Mars/Base"), ("--server-tz", "UTC+99")])
def test_invalid_zone_rejected_when_no_input_needs_it(two_months, capsys, option, value):
    january, _, out = two_months
    with pytest.raises(SystemExit) as exit_info:
        main.main(["--convert", str(january), "--output-dir", str(out), option, value])
    assert exit_info.value.code == 2
    assert f"Invalid {option} {value!r}" in capsys.readouterr().err
    assert not (out / "EURUSD_2024.parquet").exists()


def test_mixed_zoned_and_naive_rows_warn(tmp_path):
    csv = tmp_path / "EURUSD_mixed.csv"
    csv.write_text("timestamp,bid,ask\n2024-03-01 10:00:00Z,1.1,1.2\n2024-03-01 10:00:01+02:00,1.1,1.2\n"
                   "2024-03-01 10:00:02,1.1,1.2\n")
    report = convert_files([csv], tmp_path / "out", ImportOptions(source_tz="America/New_York"))[0]
    assert any("2 rows carried their own zone and 1 row was read with --source-tz" in w for w in report["warnings"])


def test_interrupted_conversion_says_nothing_was_replaced(monkeypatch, two_months, capsys):
    january, _, out = two_months

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(main, "convert_files", interrupted)
    assert main.main(["--convert", str(january), "--output-dir", str(out)]) == main.EXIT_INTERRUPTED
    err = capsys.readouterr().err
    assert "no output file was replaced" in err and "Rerun the same command" in err
    assert "reused by the next run" not in err


def test_one_input_spanning_two_years_uses_singular(tmp_path):
    csv = _exness(tmp_path / "Exness_EURUSDm_newyear.csv", "EURUSDm", [
        ("2024-12-31 23:59:59.000Z", 1.1, 1.2), ("2025-01-01 00:00:01.000Z", 1.1, 1.2)])
    reports = convert_files([csv], tmp_path / "out")
    assert "1 input spans two years; its rows_read counts in each year's report" in reports[0]["warnings"]

"""File name parsing and the input folder scan."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fxresearch.naming import (
    PAIR_FILE_RE,
    InvalidFileNameError,
    parse_pair_filename,
    scan_input_dir,
)

EXPECTED = "PAIR_YEAR.parquet, e.g. EURUSD_2025.parquet"


@pytest.mark.parametrize(
    ("name", "symbol", "year"),
    [
        ("EURUSD_2025.parquet", "EURUSD", 2025),
        ("XAUUSD_2024.parquet", "XAUUSD", 2024),
        ("USDJPY_2013.PARQUET", "USDJPY", 2013),
        ("GBPUSD_1999.Parquet", "GBPUSD", 1999),
    ],
)
def test_parse_valid_names(name: str, symbol: str, year: int) -> None:
    assert parse_pair_filename(name) == (symbol, year)
    assert parse_pair_filename(Path("/data/in") / name) == (symbol, year)
    assert PAIR_FILE_RE.match(name) is not None


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("eurusd.parquet", "not followed by an underscore and a year"),
        ("EURUSD-2025.parquet", "not followed by an underscore and a year"),
        ("EURUSD_25.parquet", "the year '25' must be four digits"),
        ("EURUSD_20250.parquet", "the year '20250' must be four digits"),
        ("EURUSD_2025.csv", "the suffix is not .parquet"),
        ("EURUSD_2025", "the suffix is not .parquet"),
        ("eurusd_2025.parquet", "must be uppercase (EURUSD)"),
        ("EurUsd_2025.parquet", "must be uppercase (EURUSD)"),
        ("EURUSDX_2025.parquet", "has 7 letters, expected 6"),
        ("EUR_2025.parquet", "has 3 letters, expected 6"),
        ("EUR1SD_2025.parquet", "must contain letters only"),
        ("EURUSD_2025_v2.parquet", "the year '2025_v2' must be four digits"),
    ],
)
def test_parse_invalid_names_explain_reason(name: str, reason: str) -> None:
    with pytest.raises(InvalidFileNameError) as caught:
        parse_pair_filename(Path("/data/in") / name)
    message = str(caught.value)
    assert repr(name) in message
    assert reason in message
    assert EXPECTED in message
    assert "/data/in" in message
    assert PAIR_FILE_RE.match(name) is None


def test_invalid_name_error_is_value_error() -> None:
    assert issubclass(InvalidFileNameError, ValueError)


def _touch(folder: Path, name: str) -> Path:
    path = folder / name
    path.write_bytes(b"PAR1")
    return path


def test_scan_splits_valid_and_invalid(tmp_path: Path) -> None:
    for name in ("USDJPY_2013.parquet", "EURUSD_2025.parquet", "eurusd.parquet",
                 "EURUSD-2024.parquet", "GBPUSD_24.parquet", "notes.txt", "EURUSD_2023.csv"):
        _touch(tmp_path, name)

    result = scan_input_dir(tmp_path)

    assert [f.path.name for f in result.valid] == ["EURUSD_2025.parquet", "USDJPY_2013.parquet"]
    first = result.valid[0]
    assert (first.symbol, first.year, first.pair_year) == ("EURUSD", 2025, "EURUSD_2025")
    assert first.path == tmp_path / "EURUSD_2025.parquet"
    # Files without the .parquet suffix are not tick files and are not listed at all.
    assert [f.path.name for f in result.invalid] == ["EURUSD-2024.parquet", "GBPUSD_24.parquet",
                                                     "eurusd.parquet"]
    for invalid in result.invalid:
        assert EXPECTED in invalid.reason
    assert "the year '24' must be four digits" in result.invalid[1].reason


def test_scan_rejects_both_files_of_case_conflict(tmp_path: Path) -> None:
    _touch(tmp_path, "EURUSD_2025.parquet")
    _touch(tmp_path, "EURUSD_2025.PARQUET")
    _touch(tmp_path, "GBPUSD_2025.parquet")

    result = scan_input_dir(tmp_path)

    assert [f.pair_year for f in result.valid] == ["GBPUSD_2025"]
    assert sorted(f.path.name for f in result.invalid) == ["EURUSD_2025.PARQUET", "EURUSD_2025.parquet"]
    for invalid in result.invalid:
        assert "EURUSD_2025.PARQUET" in invalid.reason
        assert "EURUSD_2025.parquet" in invalid.reason
        assert "Conflicting tick files for EURUSD_2025" in invalid.reason


def test_scan_rejects_symlink_copy_conflict(tmp_path: Path) -> None:
    original = _touch(tmp_path, "AUDUSD_2020.parquet")
    os.symlink(original, tmp_path / "AUDUSD_2020.Parquet")

    result = scan_input_dir(tmp_path)

    assert result.valid == []
    assert [f.path.name for f in result.invalid] == ["AUDUSD_2020.Parquet", "AUDUSD_2020.parquet"]
    assert "AUDUSD_2020.Parquet and AUDUSD_2020.parquet" in result.invalid[0].reason


def test_scan_symlink_to_file_is_valid(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    source = _touch(store, "ticks.bin")
    folder = tmp_path / "in"
    folder.mkdir()
    os.symlink(source, folder / "NZDUSD_2014.parquet")

    result = scan_input_dir(folder)

    assert [f.pair_year for f in result.valid] == ["NZDUSD_2014"]
    assert result.invalid == []


def test_scan_reports_broken_link_and_folder(tmp_path: Path) -> None:
    os.symlink(tmp_path / "missing.parquet", tmp_path / "EURUSD_2025.parquet")
    (tmp_path / "GBPUSD_2025.parquet").mkdir()

    result = scan_input_dir(tmp_path)

    assert result.valid == []
    reasons = {f.path.name: f.reason for f in result.invalid}
    assert "broken symbolic link" in reasons["EURUSD_2025.parquet"]
    assert "is a folder" in reasons["GBPUSD_2025.parquet"]


def test_scan_empty_folder(tmp_path: Path) -> None:
    result = scan_input_dir(tmp_path)
    assert result.valid == []
    assert result.invalid == []


def test_scan_missing_folder_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="Input folder not found"):
        scan_input_dir(tmp_path / "absent")
    not_a_folder = _touch(tmp_path, "EURUSD_2025.parquet")
    with pytest.raises(NotADirectoryError, match="is not a folder"):
        scan_input_dir(not_a_folder)


def test_scan_skips_hidden_files(tmp_path: Path) -> None:
    for name in ("USDJPY_2013.parquet", "._USDJPY_2013.parquet", ".parquet", ".hidden.PARQUET"):
        (tmp_path / name).write_bytes(b"PAR1")
    result = scan_input_dir(tmp_path)
    assert [f.pair_year for f in result.valid] == ["USDJPY_2013"]
    assert result.invalid == []

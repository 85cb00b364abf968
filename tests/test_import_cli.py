"""The --convert mode and the --csv --convert-only alias of main.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import main

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "import"


def test_convert_prints_report_and_writes_json(tmp_path, capsys):
    code = main.main(["--convert", str(FIXTURES / "Exness_EURUSDm_2024_01.csv"), "--output-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    assert "EURUSD_2024" in out
    assert "1 exact duplicates dropped" in out
    assert "1 bid above ask" in out
    report = json.loads((tmp_path / "EURUSD_2024_import_report.json").read_text())
    assert report["rows_written"] == 3


def test_csv_convert_only_alias(tmp_path, capsys):
    code = main.main(["--csv", str(FIXTURES / "EURUSD_export.csv"), "--convert-only", "--output-dir", str(tmp_path),
                      "--source-tz", "America/New_York"])
    assert code == 0
    assert (tmp_path / "GBPUSD_2024.parquet").is_file()
    assert "note" in capsys.readouterr().out


def test_convert_bad_input_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main.main(["--convert", str(FIXTURES / "EURUSD_export.csv"), "--output-dir", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "--source-tz" in capsys.readouterr().err


def test_convert_with_job_rejected(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main.main(["--convert", "x.csv", "--generate-base"])
    assert exit_info.value.code == 2
    assert "not allowed" in capsys.readouterr().err


def test_conversion_options_need_convert(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main.main(["--parquet", "x.parquet", "--generate-base", "--server-tz", "UTC+2"])
    assert exit_info.value.code == 2
    assert "only apply with --convert" in capsys.readouterr().err


def test_convert_only_needs_csv(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main.main(["--convert-only"])
    assert exit_info.value.code == 2
    assert "--csv FILE" in capsys.readouterr().err

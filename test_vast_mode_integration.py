"""VAST generate-base end to end: the built-in synthetic sample and the real tick files.

Each run goes through ``main.py`` in a subprocess, exactly as a user starts it, and must
end with ``Failed: 0`` and every pair's ticks report and bar files on disk.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent
MAIN = REPO_ROOT / "main.py"
REAL_PARQUET = Path(__file__).resolve().parent.parent / "shared" / "data" / "parquet"
BAR_FILES = ("M1.parquet", "M5.parquet", "M15.parquet", "M30.parquet", "H1.parquet")
# One week of the default sample pairs at a low tick rate keeps the run to seconds.
SMALL_SAMPLE_CONFIG = """\
[sample]
weeks = 1
ticks_per_hour = 300
"""


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(MAIN), *args], capture_output=True, text=True,
                          encoding="utf-8", errors="replace", cwd=cwd, timeout=600)


def assert_base_outputs(output_dir: Path, pairs: list[str]) -> None:
    for pair in pairs:
        report = output_dir / pair / f"{pair}_ticks_report.json"
        assert report.is_file(), report
        json.loads(report.read_text())
        for bar_file in BAR_FILES:
            assert (output_dir / pair / "bars" / bar_file).is_file(), f"{pair}/bars/{bar_file}"


def test_generate_base_on_builtin_sample(tmp_path):
    from fxresearch.config import load_config

    (tmp_path / "small.toml").write_text(SMALL_SAMPLE_CONFIG)
    sample = load_config(tmp_path / "small.toml").sample

    # No --input-dir and no data/parquet/ in the working folder: the sample is written there.
    result = run_cli("--vast-mode", "--generate-base", "--config", "small.toml", "--parallel-pairs", "2",
                     "--max-workers", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "data/parquet/ is missing" in result.stdout
    assert "built-in SYNTHETIC sample" in result.stdout
    assert "  Failed: 0\n" in result.stdout

    pairs = [f"{symbol}_{sample.year}" for symbol in sample.pairs]
    assert f"Results of {len(pairs)} of {len(pairs)} pairs are on SYNTHETIC data" in result.stdout
    assert sorted(p.name for p in (tmp_path / "data" / "parquet").iterdir()) == sorted(f"{p}.parquet" for p in pairs)
    assert f"  Total pairs: {len(pairs)}\n" in result.stdout
    assert_base_outputs(tmp_path / "output", pairs)


def test_generate_base_on_real_files(tmp_path):
    if not REAL_PARQUET.is_dir():
        pytest.skip(f"real tick files not found at {REAL_PARQUET} (the shared data folder is not beside the repo)")
    pairs = sorted(p.stem for p in REAL_PARQUET.glob("*.parquet"))
    out = tmp_path / "output"
    result = run_cli("--vast-mode", "--input-dir", str(REAL_PARQUET), "--generate-base", "--output-dir", str(out),
                     "--parallel-pairs", "2", "--max-workers", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Parquet files:      {len(pairs)} valid, 0 invalid" in result.stdout
    assert "SYNTHETIC" not in result.stdout
    assert f"  Total pairs: {len(pairs)}\n" in result.stdout
    assert "  Failed: 0\n" in result.stdout
    for pair in pairs:
        assert re.search(rf"^\u2705 \[\d+/{len(pairs)}\] {pair} - generate-base complete", result.stdout, re.M), pair
    assert_base_outputs(out, pairs)

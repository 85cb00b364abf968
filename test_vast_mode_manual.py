"""The command line as a user runs it: real generate-base jobs on a small synthetic sample.

The sample (two pairs, one week, a low tick rate) is written once per module with
``fxresearch.sample.write_sample_set`` from the same TOML file the CLI gets with --config.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fxresearch.config import load_config
from fxresearch.sample import write_sample_set

REPO_ROOT = Path(__file__).resolve().parent
MAIN = REPO_ROOT / "main.py"
SMALL_CONFIG = """\
[sample]
weeks = 1
ticks_per_hour = 400
year = 2025
pairs = ["EURUSD", "GBPUSD"]
"""
BAR_FILES = ("M1.parquet", "M5.parquet", "M15.parquet", "M30.parquet", "H1.parquet")


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> tuple[Path, Path]:
    """Return (folder with EURUSD_2025 and GBPUSD_2025 sample files, config TOML path)."""
    root = tmp_path_factory.mktemp("sample")
    config_path = root / "small.toml"
    config_path.write_text(SMALL_CONFIG)
    folder = root / "parquet"
    folder.mkdir()
    written = write_sample_set(folder, load_config(config_path).sample)
    assert sorted(p.name for p in written) == ["EURUSD_2025.parquet", "GBPUSD_2025.parquet"]
    return folder, config_path


def copy_inputs(sample_folder: Path, target: Path, names: list[str]) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(sample_folder / name, target / name)
    return target


def run_cli(*args: str, env_extra: dict[str, str] | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, str(MAIN), *args], capture_output=True, text=True,
                          encoding="utf-8", errors="replace", env=env, cwd=cwd or REPO_ROOT, timeout=300)


def test_vast_run_on_sample_folder(sample, tmp_path):
    sample_folder, config = sample
    out = tmp_path / "out"
    result = run_cli("--vast-mode", "--input-dir", str(sample_folder), "--generate-base", "--config", str(config),
                     "--output-dir", str(out), "--parallel-pairs", "2", "--max-workers", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    stdout = result.stdout

    # Banner
    assert "VAST mode: generate-base" in stdout
    assert re.search(r"^CPU cores:\s+\d+ \(affinity \d+", stdout, re.M)
    assert re.search(r"^RAM:\s+[\d.]+ GB total, [\d.]+ GB available", stdout, re.M)
    assert "Parquet files:      2 valid, 0 invalid" in stdout
    assert "Parallel pairs:     2 (" in stdout
    assert "Workers per pair:   1" in stdout
    assert re.search(r"^Estimated time:\s+~\d", stdout, re.M)
    assert "SYNTHETIC sample data (2 of 2 files)" in stdout

    # One line per pair, then the summary
    pair_lines = [line for line in stdout.splitlines() if re.match(r"^\u2705 \[\d/2\] ", line)]
    assert len(pair_lines) == 2, stdout
    for pair in ("EURUSD_2025", "GBPUSD_2025"):
        assert any(re.match(rf"^\u2705 \[[12]/2\] {pair} - generate-base complete \(\d+\.\d+s\)", line)
                   for line in pair_lines), stdout
    assert "  Total pairs: 2\n" in stdout
    assert "  Successful: 2\n" in stdout
    assert "  Failed: 0\n" in stdout
    assert re.search(r"^  Total time: \d+\.\ds \(estimated ~\d+ s\)$", stdout, re.M), stdout
    assert re.search(r"^Progress: 2/2 pairs done \(0 failed\), 0 running, 0 queued; elapsed \d+s", stdout, re.M)
    assert "Resume:             0 of 2 pairs are current; all run" in stdout
    assert "Results of 2 of 2 pairs are on SYNTHETIC data" in stdout
    assert "Traceback" not in result.stderr

    for pair in ("EURUSD_2025", "GBPUSD_2025"):
        assert (out / pair / f"{pair}_ticks_report.json").is_file()
        for bar_file in BAR_FILES:
            assert (out / pair / "bars" / bar_file).is_file(), bar_file

    # Run log and ledger: one start and one end line per pair.
    [log_file] = (out / "logs").glob("run-*.log")
    assert "EURUSD_2025 generate-base started" in log_file.read_text()
    [ledger] = (out / "runs").glob("*.jsonl")
    events = [json.loads(line) for line in ledger.read_text().splitlines()]
    assert sorted((e["pair"], e["event"]) for e in events) == [
        ("EURUSD_2025", "end"), ("EURUSD_2025", "start"), ("GBPUSD_2025", "end"), ("GBPUSD_2025", "start")]
    assert all(e["ok"] is True for e in events if e["event"] == "end")

    # A second run of one pair, chosen by --pairs, skips it: its manifest says every output is current.
    again = run_cli("--vast-mode", "--input-dir", str(sample_folder), "--generate-base", "--config", str(config),
                    "--output-dir", str(out), "--pairs", "eurusd")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Selected by --pairs: 1 of 2 valid files" in again.stdout
    assert "Resume:             1 of 1 pairs are current and will be skipped (EURUSD_2025)" in again.stdout
    assert "  Total pairs: 1\n" in again.stdout
    assert "  Skipped (outputs current): 1 (EURUSD_2025)\n" in again.stdout
    assert "GBPUSD_2025" not in again.stdout.split("=" * 72)[-1]


def test_dry_run_stops_after_banner(sample, tmp_path):
    sample_folder, config = sample
    out = tmp_path / "out"
    result = run_cli("--vast-mode", "--input-dir", str(sample_folder), "--generate-base", "--config", str(config),
                     "--output-dir", str(out), "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "Parquet files:      2 valid, 0 invalid" in result.stdout
    assert re.search(r"^  EURUSD_2025\s+[\d,]+ ticks \[synthetic\] -> ", result.stdout, re.M)
    assert "Dry run: nothing was run." in result.stdout
    assert "Summary" not in result.stdout
    assert not out.exists()


def test_invalid_file_name_is_listed_apart(sample, tmp_path):
    sample_folder, config = sample
    folder = copy_inputs(sample_folder, tmp_path / "in", ["EURUSD_2025.parquet"])
    shutil.copy(sample_folder / "GBPUSD_2025.parquet", folder / "gbpusd-2025.parquet")
    result = run_cli("--vast-mode", "--input-dir", str(folder), "--generate-base", "--config", str(config),
                     "--output-dir", str(tmp_path / "out"))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Parquet files:      1 valid, 1 invalid" in result.stdout
    assert re.search(r"^  INVALID gbpusd-2025\.parquet: .*Expected PAIR_YEAR\.parquet", result.stdout, re.M)
    assert re.search(r"^\u2705 \[1/1\] EURUSD_2025 - generate-base complete", result.stdout, re.M)
    assert "  Total pairs: 1\n" in result.stdout
    assert "  Successful: 1\n" in result.stdout
    assert "  Failed: 0\n" in result.stdout
    assert "  Invalid files: 1 (not pairs; listed below)\n" in result.stdout
    assert (tmp_path / "out" / "EURUSD_2025" / "bars" / "H1.parquet").is_file()


def test_corrupt_parquet_fails_alone_with_ascii_output(sample, tmp_path):
    sample_folder, config = sample
    folder = copy_inputs(sample_folder, tmp_path / "in", ["EURUSD_2025.parquet"])
    (folder / "GBPUSD_2025.parquet").write_bytes(b"PAR1 this is not a parquet file")
    result = run_cli("--vast-mode", "--input-dir", str(folder), "--generate-base", "--config", str(config),
                     "--output-dir", str(tmp_path / "out"), env_extra={"PYTHONIOENCODING": "ascii"})
    assert result.returncode == 1, result.stdout + result.stderr
    result.stdout.encode("ascii")  # raises when a non-ASCII character was printed
    assert re.search(r"^OK \[\d/2\] EURUSD_2025 - generate-base complete \(\d+\.\d+s\)", result.stdout, re.M)
    assert re.search(r"^FAIL \[\d/2\] GBPUSD_2025 - generate-base failed: \w+", result.stdout, re.M), result.stdout
    assert "\u2705" not in result.stdout
    assert "Unreadable parquet footer (these pairs will fail): GBPUSD_2025" in result.stdout
    assert "  Failed: 1\n" in result.stdout
    assert "Traceback" not in result.stderr
    assert (tmp_path / "out" / "EURUSD_2025" / "EURUSD_2025_ticks_report.json").is_file()
    [log_file] = (tmp_path / "out" / "logs").glob("run-*.log")
    assert "Traceback" in log_file.read_text()


def test_single_pair_mode_prints_same_lines(sample, tmp_path):
    sample_folder, config = sample
    result = run_cli("--parquet", str(sample_folder / "GBPUSD_2025.parquet"), "--generate-base",
                     "--config", str(config), "--output-dir", str(tmp_path / "out"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^\u2705 \[1/1\] GBPUSD_2025 - generate-base complete \(\d+\.\d+s\)", result.stdout, re.M)
    assert "  Total pairs: 1\n" in result.stdout
    assert "  Failed: 0\n" in result.stdout
    assert (tmp_path / "out" / "GBPUSD_2025" / "bars" / "M1.parquet").is_file()

"""VAST generate-base then search-light end to end: the built-in sample and the real tick files.

Each run goes through ``main.py`` in a subprocess, exactly as a user starts it, and must
end with ``Failed: 0`` and every pair's artifacts on disk: the ticks report and bars, the
features, labels, patterns and regimes, and the backtest results with both periods.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
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


BASE_STAGES = ("ticks_report", "split", "bars", "features", "labels", "patterns", "regimes")
RESULT_METRICS = ("n_trades", "win_rate", "profit_factor", "total_pips", "expectancy_pips", "sharpe",
                  "max_drawdown_pips")


def assert_full_base(output_dir: Path, pair: str) -> dict:
    """Check every generate-base artifact of one pair and return its manifest."""
    import pandas as pd

    manifest = json.loads((output_dir / pair / "manifest.json").read_text())
    for stage in BASE_STAGES:
        assert stage in manifest["artifacts"], f"{pair}: stage {stage} missing from the manifest"
    assert manifest["artifacts"]["split"]["split_ns"] > 0
    for folder in ("features", "labels"):
        assert any((output_dir / pair / folder).glob("*.parquet")), f"{pair}/{folder}"
    patterns = json.loads((output_dir / pair / f"{pair}_patterns.json").read_text())
    assert patterns["split_ns"] == manifest["artifacts"]["split"]["split_ns"]
    regimes = pd.read_parquet(output_dir / pair / f"{pair}_regimes.parquet")
    assert list(regimes.columns) == ["timestamp", "regime_id", "regime_name", "probability"]
    return manifest


def assert_search_results(output_dir: Path, pair: str, min_strategies: int):
    import pandas as pd

    results = pd.read_parquet(output_dir / pair / f"{pair}_backtest_results.parquet")
    for column in ("strategy_id", "family", "params", "stop_loss_pips", "take_profit_pips"):
        assert column in results.columns, column
    for metric in RESULT_METRICS:
        assert f"{metric}_is" in results.columns, metric
        assert f"{metric}_oos" in results.columns, metric
    assert len(results) >= min_strategies, f"{pair}: {len(results)} strategies"
    assert results["strategy_id"].is_unique
    assert (output_dir / pair / f"{pair}_top_trades.parquet").is_file()
    return results


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
    for pair in pairs:
        assert_full_base(tmp_path / "output", pair)

    # search-light on the same folder reuses the base and writes results for every pair.
    result = run_cli("--vast-mode", "--search-light", "--config", "small.toml", "--max-workers", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "  Failed: 0\n" in result.stdout
    assert "built base first" not in result.stdout
    for pair in pairs:
        results = assert_search_results(tmp_path / "output", pair, min_strategies=1000)
        assert results["n_trades_is"].sum() > 0
        assert results["n_trades_oos"].sum() > 0

    # A second search-light run skips every pair: each manifest says the results are current.
    result = run_cli("--vast-mode", "--search-light", "--config", "small.toml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Resume:             {len(pairs)} of {len(pairs)} pairs are current" in result.stdout
    assert f"  Skipped (outputs current): {len(pairs)} (" in result.stdout
    # The leaderboard of the resumed run still ranks every pair.
    leaderboard = pd.read_parquet(tmp_path / "output" / "leaderboard.parquet")
    assert sorted(set(leaderboard["pair_year"])) == sorted(pairs)


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


def test_search_light_on_real_files_builds_base_first(tmp_path):
    if not REAL_PARQUET.is_dir():
        pytest.skip(f"real tick files not found at {REAL_PARQUET} (the shared data folder is not beside the repo)")
    pairs = sorted(p.stem for p in REAL_PARQUET.glob("*.parquet"))
    out = tmp_path / "output"

    # No base yet: every pair builds it first, reports that, and still ends with results.
    result = run_cli("--vast-mode", "--input-dir", str(REAL_PARQUET), "--search-light", "--output-dir", str(out),
                     cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "  Failed: 0\n" in result.stdout
    assert result.stdout.count("built base first") == len(pairs)
    for pair in pairs:
        assert_full_base(out, pair)
        assert_search_results(out, pair, min_strategies=0)

    # The largest real file gets the full search. The 35-minute USDJPY file gets an empty
    # table with the right columns and the reason in its manifest.
    results = assert_search_results(out, "EURUSD_2014", min_strategies=1000)
    assert results["n_trades_is"].sum() > 0
    assert results["n_trades_oos"].sum() > 0
    short = assert_search_results(out, "USDJPY_2013", min_strategies=0)
    assert len(short) == 0
    manifest = json.loads((out / "USDJPY_2013" / "manifest.json").read_text())
    assert "fewer than search.min_bars" in manifest["artifacts"]["backtest_results"]["insufficient_data"]

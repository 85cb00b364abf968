"""Search-light runs through the command line, shared by the leaderboard and report tests."""

from __future__ import annotations

import logging
from pathlib import Path

import main
import vast_mode
from fxresearch.config import SampleConfig
from fxresearch.sample import write_sample_set

REAL_PARQUET = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "parquet"
# Six weeks give 21 in-sample trading days (20+ needed), so strategies get a deflated Sharpe score.
SAMPLE = SampleConfig(weeks=6, pairs=("EURUSD", "USDJPY"), ticks_per_hour=300)
# Three templates keep a pair's search to a few seconds; ma_cross has the two-parameter grid.
SMALL_SEARCH_TOML = '[search]\nfamilies = ["ma_cross", "zscore_reversion", "donchian_breakout"]\n'


# Three short real files, one of them (USDJPY_2013) too short for any strategy.
REAL_PAIRS = "EURUSD_2019,AUDUSD_2020,USDJPY_2013"


def run_search_light(input_dir: Path, root: Path, pairs: str | None = None) -> tuple[Path, int]:
    """Run ``main.py --vast-mode --search-light`` on ``input_dir`` and return the output folder and exit code."""
    config_path = root / "small_search.toml"
    config_path.write_text(SMALL_SEARCH_TOML)
    output_dir = root / "output"
    try:
        code = main.main(["--vast-mode", "--input-dir", str(input_dir), "--search-light", "--output-dir",
                          str(output_dir), "--config", str(config_path), "--parallel-pairs", "2",
                          "--max-workers", "1", *(["--pairs", pairs] if pairs else [])])
    finally:
        # main installs a console handler on the root logger; none may outlive the run.
        vast_mode.configure_run_logging(None)
        root_logger = logging.getLogger()
        for handler in list(root_logger.handlers):
            if getattr(handler, "_fxresearch", False):
                root_logger.removeHandler(handler)
    return output_dir, code


def sample_run(root: Path) -> Path:
    """Write the small synthetic sample under ``root`` and search it; return the output folder."""
    input_dir = root / "ticks"
    write_sample_set(input_dir, SAMPLE)
    output_dir, code = run_search_light(input_dir, root)
    assert code == 0, f"search-light on the sample failed with exit code {code}"
    return output_dir

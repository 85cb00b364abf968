"""The search must not find an edge where there is none: the no-edge sample is a martingale."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd

from fxresearch.base import generate_base
from fxresearch.config import Config, SampleConfig
from fxresearch.sample import write_sample_set
from fxresearch.search import search_light

# The deflated Sharpe ratio is a probability that the true Sharpe is above zero after the
# number of trials is accounted for; 0.95 is the usual bar for significance.
SIGNIFICANT_SCORE = 0.95


def test_no_edge_sample_top_score_not_significant(tmp_path):
    sample = SampleConfig(weeks=14, pairs=("EURUSD",), ticks_per_hour=600, no_edge=True, seed=11)
    config = replace(Config(), sample=sample)
    path = write_sample_set(tmp_path / "data", sample)[0]

    generate_base(path, tmp_path / "out", config)
    search_light(path, tmp_path / "out", config, workers=2)

    results = pd.read_parquet(tmp_path / "out" / "EURUSD_2025" / "EURUSD_2025_backtest_results.parquet")
    scores = results["score"].to_numpy()
    assert len(results) >= 1000
    # Enough strategies pass the trade-count rule for the check to mean something.
    assert np.isfinite(scores).sum() >= 100
    assert np.nanmax(scores) < SIGNIFICANT_SCORE

    # The best raw in-sample Sharpe is high by luck alone, which is what the score corrects.
    assert np.nanmax(results["sharpe_is"].to_numpy()) > 1.0

    report = json.loads((tmp_path / "out" / "EURUSD_2025" / "EURUSD_2025_search_report.json").read_text())
    assert report["effective_trials"] > 10
    assert report["pbo"]["value"] is not None
    # With no edge the in-sample winner is no better than median out-of-sample about half the time.
    assert report["pbo"]["value"] > 0.2

"""Nothing may look like an edge where there is none: the no-edge sample is a martingale."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fxresearch import artifacts
from fxresearch.base import generate_base
from fxresearch.config import Config, SampleConfig
from fxresearch.sample import write_sample_set
from fxresearch.search import search_light

# The deflated Sharpe ratio is a probability that the true Sharpe is above zero after the
# number of trials is accounted for; 0.95 is the usual bar for significance.
SIGNIFICANT_SCORE = 0.95
PAIR_DIR = Path("EURUSD_2025")


def no_edge_config(seed: int, weeks: int = 14) -> Config:
    sample = SampleConfig(weeks=weeks, pairs=("EURUSD",), ticks_per_hour=600, no_edge=True, seed=seed)
    return replace(Config(), sample=sample)


@pytest.fixture(scope="module")
def searched(tmp_path_factory) -> Path:
    """Output folder of generate-base and search-light on a 14-week no-edge EURUSD sample."""
    root = tmp_path_factory.mktemp("no_edge")
    config = no_edge_config(11)
    path = write_sample_set(root / "data", config.sample)[0]
    generate_base(path, root / "out", config)
    search_light(path, root / "out", config, workers=2)
    return root / "out" / PAIR_DIR


def test_no_edge_sample_top_score_not_significant(searched):
    results = pd.read_parquet(searched / "EURUSD_2025_backtest_results.parquet")
    scores = results["score"].to_numpy()
    assert len(results) >= 1000
    # Enough strategies pass the trade-count rule for the check to mean something.
    assert np.isfinite(scores).sum() >= 100
    assert np.nanmax(scores) < SIGNIFICANT_SCORE

    # The best raw in-sample Sharpe is high by luck alone, which is what the score corrects.
    assert np.nanmax(results["sharpe_is"].to_numpy()) > 1.0

    report = json.loads((searched / "EURUSD_2025_search_report.json").read_text())
    assert report["effective_trials"] > 10
    assert report["pbo"]["value"] is not None
    # With no edge the in-sample winner is no better than median out-of-sample about half the time.
    assert report["pbo"]["value"] > 0.2


def assert_patterns_within_fdr(document: dict) -> None:
    fdr = document["selection"]["fdr"]
    assert document["insufficient_data"] is None
    assert document["conditions_tested"] > 10_000
    assert document["significant_share"] <= fdr
    assert document["significant"] / document["conditions_tested"] <= fdr
    assert len(document["patterns"]) <= document["significant"]


def test_no_edge_patterns_within_fdr(searched):
    document = json.loads((searched / "EURUSD_2025_patterns.json").read_text())

    assert_patterns_within_fdr(document)
    # Every labelled timeframe, grid entry and side went into the one correction.
    assert document["timeframes_min"] == [5, 15]
    assert sorted(document["conditions_tested_by_timeframe"]) == ["15", "5"]
    assert [g["grid_id"] for g in document["grid"]["5"]] == [0, 1, 2]


def test_no_edge_patterns_second_seed(tmp_path):
    config = no_edge_config(23, weeks=6)
    path = write_sample_set(tmp_path / "data", config.sample)[0]
    generate_base(path, tmp_path / "out", config)

    document = json.loads((tmp_path / "out" / PAIR_DIR / "EURUSD_2025_patterns.json").read_text())

    assert_patterns_within_fdr(document)


def test_search_reports_label_meta_columns(searched):
    results = pd.read_parquet(searched / "EURUSD_2025_backtest_results.parquet")
    traded = results["n_trades_is"].to_numpy() > 0

    # Every bar of the search timeframe is labelled, so every in-sample entry finds its label.
    np.testing.assert_array_equal(results.loc[traded, "label_coverage_is"].to_numpy(), 1.0)
    assert results.loc[~traded, "label_coverage_is"].isna().all()
    win_rate = results.loc[traded, "label_win_rate_is"].to_numpy()
    assert np.isfinite(win_rate).mean() > 0.99
    assert ((win_rate[np.isfinite(win_rate)] >= 0.0) & (win_rate[np.isfinite(win_rate)] <= 1.0)).all()


def test_label_win_rate_matches_pandas_join(searched):
    """Recompute the label win rate of the top strategies from their trades with pandas."""
    results = pd.read_parquet(searched / "EURUSD_2025_backtest_results.parquet")
    trades = artifacts.read_frame(searched / "EURUSD_2025_top_trades.parquet")
    bars = artifacts.read_frame(searched / "bars" / "M5.parquet")
    labels = artifacts.read_frame(searched / "labels" / "M5.parquet")
    labels["outcome"] = labels["outcome"].astype(str)
    grid = labels.groupby("grid_id")[["take_profit_pips", "stop_loss_pips", "horizon_minutes"]].first()

    checked = 0
    for strategy_id, group in trades[trades["in_sample"]].groupby("strategy_id"):
        row = results[results["strategy_id"] == strategy_id].iloc[0]
        distance = ((grid["take_profit_pips"] - row["take_profit_pips"]).abs()
                    + (grid["stop_loss_pips"] - row["stop_loss_pips"]).abs())
        gap = (grid["horizon_minutes"] - Config().search.horizon_minutes).abs()
        grid_id = grid.assign(distance=distance, gap=gap).sort_values(["distance", "gap"], kind="stable").index[0]
        entries = pd.DataFrame({"timestamp": bars["timestamp"].to_numpy()[group["signal_bar"].to_numpy()],
                                "side": group["side"].to_numpy()})
        joined = entries.merge(labels[labels["grid_id"] == grid_id], on=["timestamp", "side"], how="left")
        split_ns = int(artifacts.read_metadata(searched / "EURUSD_2025_backtest_results.parquet")["split_ns"])
        known = joined[joined["outcome"].isin(["take_profit", "stop_loss", "horizon"])
                       & (joined["exit_time"] < split_ns)]
        expected = np.average(known["outcome"] == "take_profit", weights=known["uniqueness"])
        assert row["label_win_rate_is"] == pytest.approx(expected, rel=1e-5)
        assert row["label_coverage_is"] == joined["outcome"].notna().mean()
        checked += 1
    assert checked >= 5

"""The cross-pair leaderboard, checked against the per-pair results it is built from."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from search_outputs import REAL_PAIRS, REAL_PARQUET, run_search_light, sample_run

from fxresearch import artifacts
from fxresearch.config import Config
from fxresearch.leaderboard import (
    FAMILIES_STEM, LEADERBOARD_STEM, TOP_FRACTION, build_leaderboard, read_run_ledger, results_path,
    write_leaderboard,
)

PAIRS = ("EURUSD_2025", "USDJPY_2025")
COMPARED = ("strategy_id", "family", "params", "stop_loss_pips", "take_profit_pips", "score", "n_trades_is",
            "n_trades_oos", "total_pips_is", "total_pips_oos", "sharpe_is", "sharpe_oos", "pnl_usd_is",
            "pnl_usd_oos", "max_drawdown_pips_is", "max_drawdown_pips_oos")


@pytest.fixture(scope="module")
def sample_output(tmp_path_factory):
    return sample_run(tmp_path_factory.mktemp("leaderboard_sample"))


@pytest.fixture(scope="module")
def real_output(tmp_path_factory):
    if not REAL_PARQUET.is_dir():
        pytest.skip(f"real tick files not found at {REAL_PARQUET}")
    output_dir, _ = run_search_light(REAL_PARQUET, tmp_path_factory.mktemp("leaderboard_real"), REAL_PAIRS)
    return output_dir


def pair_results(output_dir, pair_year):
    return artifacts.read_frame(results_path(output_dir, pair_year))


def search_report(output_dir, pair_year):
    return json.loads((output_dir / pair_year / f"{pair_year}_search_report.json").read_text())


def test_top_rows_equal_pair_results(sample_output):
    board = build_leaderboard(sample_output, top_n=5)
    assert sorted(board.pairs) == list(PAIRS)
    for pair_year in PAIRS:
        results = pair_results(sample_output, pair_year)
        expected = results[results["rank"] <= 5].sort_values("rank").reset_index(drop=True)
        rows = board.table[board.table["pair_year"] == pair_year].sort_values("pair_rank").reset_index(drop=True)
        assert rows["pair_rank"].tolist() == [1, 2, 3, 4, 5]
        for column in COMPARED:
            pd.testing.assert_series_equal(rows[column], expected[column], check_names=False, check_dtype=False)


def test_metrics_sit_side_by_side(sample_output):
    columns = list(build_leaderboard(sample_output).table.columns)
    for name in ("total_pips", "sharpe", "n_trades", "pnl_usd"):
        assert columns.index(f"{name}_oos") == columns.index(f"{name}_is") + 1


def test_run_trials_count_every_pair(sample_output):
    board = build_leaderboard(sample_output)
    reports = [search_report(sample_output, p) for p in PAIRS]
    assert board.trials.n_trials == sum(r["n_strategies"] for r in reports)
    assert board.trials.effective_trials == sum(r["effective_trials"] for r in reports)
    assert (board.table["n_trials_run"] == board.trials.n_trials).all()
    assert (board.table["effective_trials_run"] == board.trials.effective_trials).all()


def test_one_pair_run_score_equals_pair_score(sample_output):
    board = build_leaderboard(sample_output, pairs=["EURUSD_2025"], top_n=20)
    inverted = board.table[board.table["score_run_basis"] == "from pair score"]
    assert len(inverted) > 0
    np.testing.assert_allclose(inverted["score_run"], inverted["score"], rtol=1e-7)


def test_run_variance_pools_pairs(sample_output):
    # V of the run is the pairs' V weighted by their effective trials.
    board = build_leaderboard(sample_output, top_n=20)
    scored = board.table[board.table["score_run_basis"] == "from pair score"]
    variances = [search_report(sample_output, p)["sharpe_variance_is"] for p in PAIRS]
    assert len(scored) > 0
    assert board.trials.sharpe_variance == pytest.approx(
        sum(v * search_report(sample_output, p)["effective_trials"] for v, p in zip(variances, PAIRS, strict=True))
        / board.trials.effective_trials)
    assert board.trials.variance_source == {p: "search report" for p in PAIRS}
    assert np.isfinite(scored["score_run"]).all()


def test_table_sorted_by_run_score(sample_output):
    table = build_leaderboard(sample_output).table
    scores = table["score_run"].to_numpy(np.float64)
    finite = scores[np.isfinite(scores)]
    assert (np.diff(finite) <= 0).all()


def test_family_summary_counts_top_decile(sample_output):
    board = build_leaderboard(sample_output)
    row = board.families.iloc[0]
    expected_pairs = []
    for pair_year in PAIRS:
        results = pair_results(sample_output, pair_year)
        cutoff = max(1, math.ceil(TOP_FRACTION * len(results)))
        same = results[(results["family"] == row["family"]) & (results["params"] == row["params"])]
        if same["rank"].min() <= cutoff:
            expected_pairs.append(pair_year)
    assert row["n_pairs_top_decile"] == len(expected_pairs)
    assert row["pairs_top_decile"] == ",".join(expected_pairs)
    assert row["n_pairs_tried"] == 2


def test_written_csv_equals_parquet(sample_output, tmp_path):
    board = build_leaderboard(sample_output)
    written = write_leaderboard(tmp_path, board)
    assert sorted(p.name for p in written) == sorted(
        f"{stem}.{ext}" for stem in (LEADERBOARD_STEM, FAMILIES_STEM) for ext in ("parquet", "csv"))
    from_parquet = pd.read_parquet(tmp_path / f"{LEADERBOARD_STEM}.parquet")
    from_csv = pd.read_csv(tmp_path / f"{LEADERBOARD_STEM}.csv", dtype={"strategy_id": str})
    assert len(from_csv) == len(from_parquet) == len(board.table)
    assert from_csv["strategy_id"].tolist() == from_parquet["strategy_id"].tolist()
    np.testing.assert_allclose(from_csv["total_pips_oos"], from_parquet["total_pips_oos"])


def test_real_files_rank_by_pips_fallback(real_output):
    board = build_leaderboard(real_output, top_n=3)
    assert "USDJPY_2013" in board.skipped
    assert "min_bars" in board.skipped["USDJPY_2013"]
    assert set(board.table["ranked_by"]) == {"total_pips_is"}
    assert board.table["score_run"].isna().all()
    for pair_year, rows in board.table.groupby("pair_year"):
        results = pair_results(real_output, pair_year)
        # Without a score, strategies with too few in-sample trades rank after the rest.
        enough = results["n_trades_is"] >= Config().validation.fallback_min_trades
        best = (results.assign(enough=enough).sort_values(["enough", "total_pips_is"], ascending=False,
                                                          kind="stable")["total_pips_is"].head(3))
        np.testing.assert_allclose(rows.sort_values("pair_rank")["total_pips_is"], best)
    assert board.trials.n_trials == sum(search_report(real_output, p).get("n_strategies", 0) for p in board.pairs)


def test_ledger_reads_both_line_forms(tmp_path):
    ledger = tmp_path / "runs" / "20250101T000000Z-1.jsonl"
    ledger.parent.mkdir()
    lines = [
        {"event": "start", "pair": "EURUSD_2025", "job": "search-light", "time": "2025-01-01T00:00:01+00:00"},
        {"event": "end", "pair": "EURUSD_2025", "job": "search-light", "time": "2025-01-01T00:00:09+00:00",
         "ok": True, "seconds": 8.0, "message": "10 strategies"},
        {"event": "end", "pair": "GBPUSD_2025", "job": "search-light", "time": "2025-01-01T00:00:10+00:00",
         "status": "failed", "seconds": 1.0, "message": "ValueError: bad"},
        {"event": "start", "pair": "USDJPY_2025", "job": "search-light", "time": "2025-01-01T00:00:11+00:00"},
    ]
    ledger.write_text("".join(json.dumps(line) + "\n" for line in lines) + '{"event": "en')
    record = read_run_ledger(ledger)
    assert record.job == "search-light"
    assert record.ok_pairs == ["EURUSD_2025"]
    assert record.failed_pairs == ["GBPUSD_2025", "USDJPY_2025"]
    assert record.pairs["USDJPY_2025"].status == "started"
    assert record.pairs["EURUSD_2025"].seconds == 8.0
    assert record.started == "2025-01-01T00:00:01+00:00"
    assert record.ended == "2025-01-01T00:00:11+00:00"

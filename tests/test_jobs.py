"""The two per-pair jobs: manifest reuse and invalidation, the split, and shared fill rules."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fxresearch import artifacts
from fxresearch.base import compute_split_ns, generate_base
from fxresearch.config import Config, SampleConfig, SearchConfig
from fxresearch.sample import write_sample_set
from fxresearch.search import search_light

REAL_PARQUET = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "parquet"

# Small search: two families and two SL/TP sets keep each run to a second or two.
SMALL_SEARCH = SearchConfig(families=("ma_cross", "donchian_breakout"), sl_tp_sets=((10.0, 10.0), (20.0, 40.0)))


@pytest.fixture(scope="module")
def sample_file(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sample")
    paths = write_sample_set(folder, SampleConfig(weeks=2, pairs=("EURUSD",), ticks_per_hour=600))
    return paths[0]


def stage_build_ids(output_dir: Path, pair_year: str) -> dict[str, str]:
    manifest = json.loads((output_dir / pair_year / "manifest.json").read_text())
    return {name: entry["build_id"] for name, entry in manifest["artifacts"].items()}


def test_rerun_reuses_every_stage(sample_file, tmp_path):
    config = replace(Config(), search=SMALL_SEARCH)
    first = generate_base(sample_file, tmp_path, config)
    assert first["reused"] == []
    assert len(first["built"]) == 7

    second = generate_base(sample_file, tmp_path, config)
    assert second["built"] == []
    assert len(second["reused"]) == 7


def test_config_change_rebuilds_stage_and_dependants(sample_file, tmp_path):
    config = replace(Config(), search=SMALL_SEARCH)
    generate_base(sample_file, tmp_path, config)
    before = stage_build_ids(tmp_path, "EURUSD_2025")

    # A label setting changes the labels and what reads them (patterns), nothing else.
    changed = replace(config, labels=replace(config.labels, grid=((15.0, 15.0, 60.0),)))
    summary = generate_base(sample_file, tmp_path, changed)
    assert summary["built"] == ["labels", "patterns"]
    after = stage_build_ids(tmp_path, "EURUSD_2025")
    assert after["labels"] != before["labels"]
    assert after["patterns"] != before["patterns"]
    assert after["features"] == before["features"]
    assert after["regimes"] == before["regimes"]

    # A feature setting rebuilds features, then patterns and regimes that read them.
    changed = replace(changed, features=replace(changed.features, rsi_window=10))
    summary = generate_base(sample_file, tmp_path, changed)
    assert summary["built"] == ["features", "patterns", "regimes"]


def test_changed_input_file_rebuilds_everything(sample_file, tmp_path):
    config = replace(Config(), search=SMALL_SEARCH)
    copy = tmp_path / "in" / sample_file.name
    copy.parent.mkdir()
    shutil.copy(sample_file, copy)
    generate_base(copy, tmp_path / "out", config)

    # Same name, other content: the fingerprint differs, so no stage is reused.
    table = pd.read_parquet(copy).iloc[:-1000]
    table.to_parquet(copy)
    summary = generate_base(copy, tmp_path / "out", config)
    assert summary["reused"] == []


def test_force_rerun_rebuilds_and_deleted_file_is_rebuilt(sample_file, tmp_path):
    config = replace(Config(), search=SMALL_SEARCH)
    generate_base(sample_file, tmp_path, config)
    assert len(generate_base(sample_file, tmp_path, config, force_rerun=True)["built"]) == 7

    (tmp_path / "EURUSD_2025" / "EURUSD_2025_regimes.parquet").unlink()
    assert generate_base(sample_file, tmp_path, config)["built"] == ["regimes"]


def test_search_builds_base_first_then_reuses(sample_file, tmp_path):
    config = replace(Config(), search=SMALL_SEARCH)
    first = search_light(sample_file, tmp_path, config)
    assert first["message"].startswith("built base first")

    second = search_light(sample_file, tmp_path, config)
    assert second["message"].startswith("results reused")

    forced = search_light(sample_file, tmp_path, config, force_rerun=True)
    assert "strategies" in forced["message"]
    assert "reused" not in forced["message"]

    # A changed search setting makes the result stale.
    changed = replace(config, search=replace(SMALL_SEARCH, sl_tp_sets=((15.0, 15.0),)))
    assert "reused" not in search_light(sample_file, tmp_path, changed)["message"]


def test_search_serial_equals_parallel(sample_file, tmp_path):
    config = replace(Config(), search=SMALL_SEARCH)
    search_light(sample_file, tmp_path / "one", config, workers=1)
    search_light(sample_file, tmp_path / "two", config, workers=2)
    name = "EURUSD_2025/EURUSD_2025_backtest_results.parquet"
    serial = pd.read_parquet(tmp_path / "one" / name)
    parallel = pd.read_parquet(tmp_path / "two" / name)
    assert len(serial) > 0
    pd.testing.assert_frame_equal(serial, parallel)

    trades = "EURUSD_2025/EURUSD_2025_top_trades.parquet"
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "one" / trades),
                                  pd.read_parquet(tmp_path / "two" / trades))


def test_label_equals_one_trade_backtest(sample_file, tmp_path):
    """A label and a backtest of a strategy with one signal on the same bar give the same trade.

    The backtest counts its horizon in wall-clock minutes, so the labels here do too. Label
    pips are float32, so they match to float32 precision.
    """
    from fxresearch.backtest import run_backtests
    from fxresearch.fills import prepare_tick_arrays
    from fxresearch.instruments import get_instrument
    from fxresearch.strategies import Strategy
    from fxresearch.ticks import load_ticks

    config = replace(Config(), labels=replace(Config().labels, horizon_clock="wall"))
    generate_base(sample_file, tmp_path, replace(config, search=SMALL_SEARCH))
    ticks = load_ticks(sample_file, config)
    instrument = get_instrument("EURUSD")
    bars = artifacts.read_frame(tmp_path / "EURUSD_2025" / "bars" / "M5.parquet")
    labels = artifacts.read_frame(tmp_path / "EURUSD_2025" / "labels" / "M5.parquet")
    arrays = prepare_tick_arrays(ticks.timestamp_ns, ticks.bid, ticks.ask, instrument, config.fills.max_gap_minutes)

    rng = np.random.default_rng(3)
    decided = labels[labels["outcome"] != "censored"]
    checked = 0
    for row in decided.iloc[rng.choice(len(decided), size=40, replace=False)].itertuples():
        bar = int(np.searchsorted(bars["timestamp"].to_numpy(), row.timestamp))
        signals = np.zeros(len(bars), dtype=np.int8)
        signals[bar] = row.side
        strategy = Strategy("one_trade", {"bar": bar}, row.stop_loss_pips, row.take_profit_pips)
        trades = run_backtests(arrays, bars, 5, [strategy], {strategy.signal_key: signals}, instrument,
                               row.horizon_minutes)
        assert len(trades) == 1
        assert trades.entry_time_ns[0] == row.entry_time
        assert trades.entry_price[0] == pytest.approx(row.entry_price, abs=1e-12)
        assert trades.exit_time_ns[0] == row.exit_time
        assert trades.exit_price[0] == pytest.approx(row.exit_price, abs=1e-12)
        assert trades.pips[0] == pytest.approx(row.pips, abs=1e-4)
        checked += 1
    assert checked == 40


def test_split_after_seventy_percent_of_trading_days():
    # Two weeks of hourly ticks from Sunday 2025-01-05 22:00 UTC (17:00 New York), weekends removed.
    start = pd.Timestamp("2025-01-05 22:00", tz="UTC")
    times = pd.date_range(start, periods=24 * 14, freq="h")
    weekday = times.dayofweek < 4
    friday_open = (times.dayofweek == 4) & (times.hour < 22)
    sunday_open = (times.dayofweek == 6) & (times.hour >= 22)
    times = times[weekday | friday_open | sunday_open]
    timestamp_ns = times.as_unit("ns").asi8
    split_ns, details = compute_split_ns(timestamp_ns, 0.7)
    days = details["trading_days"]
    assert days == 10
    assert details["train_days"] == 7
    assert details["train_days"] + details["holdout_days"] == days
    # The split is the first tick of a trading day, which starts at 17:00 New York (22:00 UTC in winter).
    assert pd.Timestamp(split_ns, tz="UTC").hour == 22


def test_split_of_single_day_file_is_inside_the_day():
    timestamp_ns = pd.date_range("2013-01-01 22:00", periods=35, freq="min", tz="UTC").as_unit("ns").asi8
    split_ns, details = compute_split_ns(timestamp_ns, 0.7)
    assert details["trading_days"] == 1
    assert split_ns == timestamp_ns[int(0.7 * 35)]
    assert details["train_days"] == 1
    assert details["holdout_days"] == 1


def test_split_of_partial_days_follows_tick_share():
    # A 5-hour Monday, a full Tuesday, a 19-hour Wednesday, as in the Dukascopy sample: by
    # day count the holdout would be the Wednesday alone, about 40 % of the ticks.
    times = pd.date_range("2019-02-04 00:00", "2019-02-05 23:59", freq="min", tz="UTC").as_unit("ns").asi8
    split_ns, details = compute_split_ns(times, 0.7)
    share = details["train_tick_share"]
    assert abs(share - 0.7) <= 0.15
    assert (times < split_ns).mean() == pytest.approx(share, abs=1e-3)


def test_real_short_file_writes_empty_tables_with_reasons(tmp_path):
    path = REAL_PARQUET / "USDJPY_2013.parquet"
    if not path.is_file():
        pytest.skip(f"real tick file not found at {path} (the shared data folder is not beside the repo)")
    config = Config()
    generate_base(path, tmp_path, config)
    manifest = json.loads((tmp_path / "USDJPY_2013" / "manifest.json").read_text())["artifacts"]

    # 35 minutes of ticks: bars exist, and the later stages write empty tables and record why.
    assert manifest["bars"]["bar_counts"]["M1"] == 34
    assert "M5" in manifest["features"]["insufficient_data"]
    assert manifest["regimes"]["insufficient_data"]
    labels = artifacts.read_frame(tmp_path / "USDJPY_2013" / "labels" / "M5.parquet")
    assert len(labels) == 0
    assert "outcome" in labels.columns
    regimes = pd.read_parquet(tmp_path / "USDJPY_2013" / "USDJPY_2013_regimes.parquet")
    assert len(regimes) == 0
    assert list(regimes.columns) == ["timestamp", "regime_id", "regime_name", "probability"]
    # Every output records the pip size it used: 0.01 for a JPY-quoted pair.
    assert artifacts.read_metadata(tmp_path / "USDJPY_2013" / "bars" / "M1.parquet")["pip_size"] == "0.01"


def test_search_runs_user_template_folder(sample_file, tmp_path):
    folder = Path(__file__).resolve().parents[1] / "examples" / "templates"
    search = replace(SMALL_SEARCH, user_templates_dir=str(folder))
    config = replace(Config(), search=search)
    search_light(sample_file, tmp_path, config)

    results = pd.read_parquet(tmp_path / "EURUSD_2025" / "EURUSD_2025_backtest_results.parquet")
    assert "momentum_breakout" in set(results["family"])
    user_rows = results[results["family"] == "momentum_breakout"]
    assert len(user_rows) == 6 * len(SMALL_SEARCH.sl_tp_sets)
    assert user_rows["n_trades_is"].sum() > 0

    # Editing the template file makes the stored result stale.
    assert search_light(sample_file, tmp_path, config)["message"].startswith("results reused")
    copy = tmp_path / "templates"
    shutil.copytree(folder, copy)
    config = replace(Config(), search=replace(search, user_templates_dir=str(copy)))
    search_light(sample_file, tmp_path, config)
    (copy / "momentum_breakout.py").write_text((copy / "momentum_breakout.py").read_text() + "\n# edited\n")
    assert "reused" not in search_light(sample_file, tmp_path, config)["message"]


def test_results_schema_same_when_empty(sample_file, tmp_path):
    from fxresearch.search import result_columns

    config = replace(Config(), search=SMALL_SEARCH)
    search_light(sample_file, tmp_path / "full", config)
    full = pd.read_parquet(tmp_path / "full" / "EURUSD_2025" / "EURUSD_2025_backtest_results.parquet")

    # Too few bars for the search: the file is written with the same columns and no rows.
    short = replace(config, search=replace(SMALL_SEARCH, min_bars=10**9))
    search_light(sample_file, tmp_path / "empty", short)
    empty = pd.read_parquet(tmp_path / "empty" / "EURUSD_2025" / "EURUSD_2025_backtest_results.parquet")

    assert list(full.columns) == list(result_columns())
    assert list(empty.columns) == list(full.columns)
    assert len(empty) == 0
    # Same Arrow types too, so tables of many pairs concatenate.
    import pyarrow.parquet as pq

    for name in ("backtest_results", "top_trades"):
        full_schema = pq.read_schema(tmp_path / "full" / "EURUSD_2025" / f"EURUSD_2025_{name}.parquet")
        empty_schema = pq.read_schema(tmp_path / "empty" / "EURUSD_2025" / f"EURUSD_2025_{name}.parquet")
        assert empty_schema.remove_metadata() == full_schema.remove_metadata(), name


def test_rank_falls_back_without_scores():
    from fxresearch.search import rank_results

    results = pd.DataFrame({"score": [np.nan, np.nan, np.nan], "sharpe_is": [np.nan, np.nan, np.nan],
                            "total_pips_is": [5.0, 30.0, -2.0]})
    rank, ranking = rank_results(results)
    assert list(rank) == [2, 1, 3]
    assert ranking["by"] == "total_pips_is"
    assert "no strategy has a score" in ranking["reason"]

    results["score"] = [0.2, np.nan, 0.9]
    rank, ranking = rank_results(results)
    assert list(rank) == [2, 3, 1]
    assert ranking["by"] == "score"
    assert ranking["reason"] == ""


def test_fallback_rank_puts_few_trades_last():
    from fxresearch.search import rank_results

    # The one-trade strategy has the most pips but ranks after the two with enough trades.
    results = pd.DataFrame({"score": [np.nan] * 3, "sharpe_is": [np.nan] * 3,
                            "total_pips_is": [35.5, 20.0, -4.0], "n_trades_is": [1, 12, 15]})
    rank, ranking = rank_results(results, fallback_min_trades=10)
    assert list(rank) == [3, 1, 2]
    assert "fewer than 10 in-sample trades rank after the rest" in ranking["reason"]

    # With a score, the trade count changes nothing: the score already needs 30 trades.
    results["score"] = [0.9, 0.1, 0.5]
    rank, ranking = rank_results(results, fallback_min_trades=10)
    assert list(rank) == [1, 3, 2]


def test_search_without_any_trade_writes_results(sample_file, tmp_path):
    # A spread cap below every quote skips every signal: no trade at all, still a result.
    config = replace(Config(), search=replace(SMALL_SEARCH, max_entry_spread_pips=0.01))
    search_light(sample_file, tmp_path, config)
    results = pd.read_parquet(tmp_path / "EURUSD_2025" / "EURUSD_2025_backtest_results.parquet")
    assert len(results) > 0
    assert (results["n_trades_is"] == 0).all()
    assert results["profit_factor_is"].isna().all()
    assert (results["pnl_usd_is"] == 0).all()
    report = json.loads((tmp_path / "EURUSD_2025" / "EURUSD_2025_search_report.json").read_text())
    assert report["entry_skips"]["wide_spread"] > 0


def test_daily_series_follow_trade_periods(sample_file, tmp_path, monkeypatch):
    """Each period's daily P&L adds up to the same trades as its trade metrics."""
    import fxresearch.validation as validation
    from fxresearch.config import CostsConfig

    captured = {}
    original = validation.score_column

    def capture(daily_is, *args, **kwargs):
        captured["daily_is"] = daily_is
        return original(daily_is, *args, **kwargs)

    monkeypatch.setattr(validation, "score_column", capture)
    # Without swap the daily series (which leave swap out) and the trade pips must agree.
    costs = CostsConfig(swap_long_pips_per_night={}, swap_short_pips_per_night={})
    config = replace(Config(), search=SMALL_SEARCH, costs=costs)
    search_light(sample_file, tmp_path, config)

    results = pd.read_parquet(tmp_path / "EURUSD_2025" / "EURUSD_2025_backtest_results.parquet")
    daily_totals = captured["daily_is"].sum(axis=1)
    np.testing.assert_allclose(daily_totals, results["total_pips_is"].to_numpy(), atol=1e-6)
    assert (results["n_days_is"] > 0).all()


def test_holdout_prices_leave_in_sample_unchanged(sample_file, tmp_path):
    """Changing only the ticks after the split changes no in-sample figure."""
    config = replace(Config(), search=SMALL_SEARCH)
    search_light(sample_file, tmp_path / "a", config)
    manifest = json.loads((tmp_path / "a" / "EURUSD_2025" / "manifest.json").read_text())
    split_ns = manifest["artifacts"]["split"]["split_ns"]

    # Same file name in another folder, holdout prices moved by a random walk.
    table = pd.read_parquet(sample_file)
    after = (table["timestamp"].astype("int64") >= split_ns).to_numpy()
    walk = np.cumsum(np.random.default_rng(5).normal(0.0, 0.00005, after.sum())).round(5)
    table.loc[after, "bid"] += walk
    table.loc[after, "ask"] += walk
    changed = tmp_path / "changed" / sample_file.name
    changed.parent.mkdir()
    table.to_parquet(changed)
    search_light(changed, tmp_path / "b", config)

    name = "EURUSD_2025/EURUSD_2025_backtest_results.parquet"
    first = pd.read_parquet(tmp_path / "a" / name)
    second = pd.read_parquet(tmp_path / "b" / name)
    in_sample = [c for c in first.columns if c.endswith("_is") and c != "pnl_usd_is"]
    pd.testing.assert_frame_equal(first[in_sample], second[in_sample])
    np.testing.assert_allclose(first["pnl_usd_is"], second["pnl_usd_is"])
    # The ranking reads nothing of the holdout, not even its trade counts.
    pd.testing.assert_series_equal(first["score"], second["score"])
    pd.testing.assert_series_equal(first["rank"], second["rank"])
    assert not first["total_pips_oos"].equals(second["total_pips_oos"])

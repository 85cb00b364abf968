"""Labels stage: schema, counts, censoring, agreement with simulate_trade, and causality."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fxresearch import artifacts, fills, labels
from fxresearch.backtest import run_backtests
from fxresearch.bars import build_bars
from fxresearch.config import Config, ConfigError, LabelsConfig
from fxresearch.features import build_features
from fxresearch.strategies import Strategy
from fxresearch.instruments import get_instrument
from fxresearch.timeutil import NS_PER_MINUTE, datetime_to_ns

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"
EURUSD = get_instrument("EURUSD")
TIMEFRAME_MIN = 5
# Tuesday 00:00 UTC; two days of ticks stay clear of the weekend close.
START_NS = int(datetime_to_ns(["2014-05-06 00:00:00"])[0])
HOLE_START_MIN = 20 * 60
HOLE_MINUTES = 90
FLAT_TAIL_MIN = 180


def synthetic_ticks(seed: int = 5):
    """Two days of EURUSD-like ticks about 2 s apart, with a 90-minute data hole at 20:00 on day
    one and a flat last three hours in which no level can be reached."""
    rng = np.random.default_rng(seed)
    n_ticks = 2 * 24 * 60 * 30
    seconds = np.cumsum(rng.uniform(0.5, 3.5, size=n_ticks))
    seconds = seconds[seconds < 2 * 86400]
    seconds = seconds[(seconds < HOLE_START_MIN * 60) | (seconds >= (HOLE_START_MIN + HOLE_MINUTES) * 60)]
    timestamp_ns = START_NS + np.rint(seconds * 1e9).astype(np.int64)

    bid_pts = 110_000 + np.cumsum(np.rint(rng.normal(0, 2.5, size=len(seconds)))).astype(np.int64)
    flat = seconds >= 2 * 86400 - FLAT_TAIL_MIN * 60
    bid_pts[flat] = bid_pts[np.flatnonzero(flat)[0] - 1]
    spread_pts = rng.integers(1, 15, size=len(seconds))
    return timestamp_ns, bid_pts * 1e-5, (bid_pts + spread_pts) * 1e-5


def minute_bars(timestamp_ns: np.ndarray, timeframe_min: int) -> pd.DataFrame:
    """Bars with just the ``timestamp`` column labels read: the open of each bin with ticks."""
    timeframe_ns = timeframe_min * NS_PER_MINUTE
    return pd.DataFrame({"timestamp": np.unique(timestamp_ns // timeframe_ns) * timeframe_ns})


@pytest.fixture(scope="module")
def ticks():
    return synthetic_ticks()


@pytest.fixture(scope="module")
def built(ticks):
    timestamp_ns, bid, ask = ticks
    bars = minute_bars(timestamp_ns, TIMEFRAME_MIN)
    table = labels.build_labels(timestamp_ns, bid, ask, bars, TIMEFRAME_MIN, Config(), EURUSD)
    return bars, table


def test_labels_schema(built):
    _, table = built
    assert tuple(table.columns) == labels.LABEL_COLUMNS
    for name, dtype in labels.LABEL_DTYPES.items():
        assert table[name].dtype == dtype, name
    assert set(table["outcome"].unique()) <= set(labels.OUTCOMES)


def test_labels_one_row_per_bar_grid_side(built):
    bars, table = built
    grid = Config().labels.grid
    assert len(table) == len(bars) * len(grid) * 2
    assert not table.duplicated(["timestamp", "grid_id", "side"]).any()
    for grid_id, (take_profit_pips, stop_loss_pips, horizon_minutes) in enumerate(grid):
        rows = table[table["grid_id"] == grid_id]
        assert len(rows) == len(bars) * 2
        assert (rows["take_profit_pips"] == take_profit_pips).all()
        assert (rows["stop_loss_pips"] == stop_loss_pips).all()
        assert (rows["horizon_minutes"] == horizon_minutes).all()
    assert table["side"].value_counts().to_dict() == {1: len(bars) * len(grid), -1: len(bars) * len(grid)}


def test_labels_enter_at_first_tick_after_close(built, ticks):
    _, table = built
    timestamp_ns, bid, ask = ticks
    entered = table[table["entry_time"] != labels.NAT_NS]
    close_ns = entered["timestamp"].to_numpy() + TIMEFRAME_MIN * NS_PER_MINUTE
    entry_idx = np.searchsorted(timestamp_ns, close_ns)
    np.testing.assert_array_equal(entered["entry_time"].to_numpy(), timestamp_ns[entry_idx])
    long = entered["side"].to_numpy() == 1
    np.testing.assert_allclose(entered["entry_price"].to_numpy()[long], ask[entry_idx[long]], atol=1e-9)
    np.testing.assert_allclose(entered["entry_price"].to_numpy()[~long], bid[entry_idx[~long]], atol=1e-9)


def test_labels_pips_match_outcome(built):
    _, table = built
    take_profit = table[table["outcome"] == "take_profit"]
    stop_loss = table[table["outcome"] == "stop_loss"]
    horizon = table[table["outcome"] == "horizon"]
    assert len(take_profit) > 500
    assert len(stop_loss) > 500
    assert len(horizon) > 500
    np.testing.assert_array_equal(take_profit["pips"], take_profit["take_profit_pips"])
    assert (stop_loss["pips"] <= -stop_loss["stop_loss_pips"]).all()
    assert (horizon["pips"] > -horizon["stop_loss_pips"]).all()
    assert (horizon["pips"] < horizon["take_profit_pips"]).all()
    assert (horizon["exit_time"] - horizon["entry_time"] >= horizon["horizon_minutes"] * NS_PER_MINUTE).all()


def test_last_bar_is_censored_no_entry(built):
    bars, table = built
    last = table[table["timestamp"] == bars["timestamp"].iloc[-1]]
    assert (last["outcome"] == "censored").all()
    assert (last["entry_time"] == labels.NAT_NS).all()
    assert (last["exit_time"] == labels.NAT_NS).all()
    assert last["pips"].isna().all()
    assert last["entry_price"].isna().all()


def test_labels_censored_near_end(built, ticks):
    _, table = built
    timestamp_ns = ticks[0]
    end_ns = int(timestamp_ns[-1])
    # In the flat tail no level is reachable, so a trade censors exactly when its horizon
    # reaches past the last tick.
    in_tail = table[(table["entry_time"] >= end_ns - (FLAT_TAIL_MIN - 10) * NS_PER_MINUTE)
                    & (table["entry_time"] != labels.NAT_NS)]
    past_end = in_tail["entry_time"] + in_tail["horizon_minutes"] * NS_PER_MINUTE > end_ns
    assert past_end.sum() > 50
    assert (~past_end).sum() > 50
    assert (in_tail.loc[past_end, "outcome"] == "censored").all()
    assert (in_tail.loc[past_end, "exit_time"] == end_ns).all()
    assert in_tail.loc[past_end, "pips"].isna().all()
    assert (in_tail.loc[~past_end, "outcome"] == "horizon").all()


def test_labels_censored_at_data_hole(built, ticks):
    _, table = built
    timestamp_ns = ticks[0]
    hole_ns = START_NS + HOLE_START_MIN * NS_PER_MINUTE
    last_before_hole = int(timestamp_ns[timestamp_ns < hole_ns][-1])
    gap_rows = table[table["exit_time"] == last_before_hole]
    censored = gap_rows[gap_rows["outcome"] == "censored"]
    # Trades of the last hour before the hole that reach no level censor at its edge.
    assert len(censored) > 20
    assert censored["pips"].isna().all()
    assert (table.loc[table["outcome"] != "censored", "pips"].notna()).all()


def test_label_equals_simulate_trade(built, ticks):
    bars, table = built
    timestamp_ns, bid, ask = ticks
    arrays = fills.prepare_tick_arrays(timestamp_ns, bid, ask, EURUSD, Config().fills.max_gap_minutes)
    rng = np.random.default_rng(3)
    for row_idx in rng.choice(len(table) - 12, size=200, replace=False):
        row = table.iloc[row_idx]
        entry_idx = int(np.searchsorted(timestamp_ns, row["timestamp"] + TIMEFRAME_MIN * NS_PER_MINUTE))
        fill = fills.simulate_trade(arrays, entry_idx, int(row["side"]), row["stop_loss_pips"],
                                    row["take_profit_pips"], row["horizon_minutes"], EURUSD)
        assert timestamp_ns[fill.exit_idx] == row["exit_time"]
        assert fill.exit_price == row["exit_price"]
        assert fill.entry_price == row["entry_price"]
        if fill.reason in ("stop_loss", "take_profit", "horizon"):
            assert row["outcome"] == fill.reason
            # Label pips are float32.
            assert fill.pips == pytest.approx(row["pips"], abs=1e-5)
        else:
            assert row["outcome"] == "censored"


def test_labels_causal_after_price_change(built, ticks):
    bars, table = built
    timestamp_ns, bid, ask = ticks
    cut_ns = START_NS + 30 * 60 * NS_PER_MINUTE
    later = timestamp_ns > cut_ns
    rng = np.random.default_rng(9)
    shift = np.cumsum(rng.normal(0, 3e-5, size=later.sum()))
    changed_bid = bid.copy()
    changed_ask = ask.copy()
    changed_bid[later] += shift
    changed_ask[later] += shift
    changed = labels.build_labels(timestamp_ns, changed_bid, changed_ask, bars, TIMEFRAME_MIN, Config(), EURUSD)

    known = (table["exit_time"] <= cut_ns) & (table["exit_time"] != labels.NAT_NS)
    assert known.sum() > 1500
    # The horizon return is known at the horizon end, which can come after the exit.
    pd.testing.assert_frame_equal(table[known].drop(columns="horizon_return_pips"),
                                  changed[known].drop(columns="horizon_return_pips"))
    horizon_end = table["entry_time"] + table["horizon_minutes"].astype(np.int64) * NS_PER_MINUTE
    horizon_known = known & (horizon_end < cut_ns - NS_PER_MINUTE)
    assert horizon_known.sum() > 1000
    pd.testing.assert_series_equal(table.loc[horizon_known, "horizon_return_pips"],
                                   changed.loc[horizon_known, "horizon_return_pips"])
    # The change does reach labels that exit later, so the check above is not vacuous.
    assert not table.loc[~known, "pips"].equals(changed.loc[~known, "pips"])


def test_few_bars_give_empty_labels(ticks):
    timestamp_ns, bid, ask = ticks
    bars = minute_bars(timestamp_ns, TIMEFRAME_MIN).iloc[:49]
    table = labels.build_labels(timestamp_ns, bid, ask, bars, TIMEFRAME_MIN, Config(), EURUSD)
    assert len(table) == 0
    assert tuple(table.columns) == labels.LABEL_COLUMNS
    assert table.dtypes.to_dict() == labels.empty_labels().dtypes.to_dict()
    assert labels.insufficient_reason(49, LabelsConfig()) == "49 bars, fewer than labels.min_bars = 50"
    assert labels.insufficient_reason(50, LabelsConfig()) is None


def test_bad_grid_entry_raises(ticks):
    timestamp_ns, bid, ask = ticks
    config = replace(Config(), labels=LabelsConfig(grid=((10.0, 0.0, 60.0),)))
    with pytest.raises(ValueError, match="labels.grid entry 0"):
        labels.build_labels(timestamp_ns, bid, ask, minute_bars(timestamp_ns, 5), 5, config, EURUSD)


def test_datetime_bar_timestamps_accepted(built, ticks):
    bars, table = built
    timestamp_ns, bid, ask = ticks
    dated = bars.assign(timestamp=pd.to_datetime(bars["timestamp"], utc=True))
    from_dates = labels.build_labels(timestamp_ns, bid, ask, dated, TIMEFRAME_MIN, Config(), EURUSD)
    pd.testing.assert_frame_equal(from_dates, table)


def test_labels_eurusd_2014_consistent():
    path = DATA_DIR / "parquet" / "EURUSD_2014.parquet"
    if not path.exists():
        pytest.skip(f"real tick file {path} is absent")
    frame = pd.read_parquet(path)
    timestamp_ns = datetime_to_ns(frame["timestamp"])
    bid, ask = frame["bid"].to_numpy(), frame["ask"].to_numpy()
    bars = minute_bars(timestamp_ns, 15)
    table = labels.build_labels(timestamp_ns, bid, ask, bars, 15, Config(), EURUSD)

    assert len(table) == len(bars) * len(Config().labels.grid) * 2
    counts = table["outcome"].value_counts()
    assert counts["take_profit"] > 500
    assert counts["stop_loss"] > 500
    assert counts["horizon"] > 500
    resolved = table[table["outcome"] != "censored"]
    assert resolved["pips"].notna().all()
    assert (resolved["exit_time"] > resolved["entry_time"]).all()
    take_profit = table[table["outcome"] == "take_profit"]
    np.testing.assert_array_equal(take_profit["pips"], take_profit["take_profit_pips"])
    # Ticks share timestamps on this file, so a long must still enter at the first of them.
    entered = table[table["entry_time"] != labels.NAT_NS]
    first_idx = np.searchsorted(timestamp_ns, entered["entry_time"].to_numpy(), side="left")
    long = entered["side"].to_numpy() == 1
    np.testing.assert_allclose(entered["entry_price"].to_numpy()[long], ask[first_idx[long]], atol=1e-9)


def ticks_around_hole(hole_start: str, hole_end: str, hours_each_side: float = 5.0):
    """Ticks every 10 s for ``hours_each_side`` hours before ``hole_start`` and after ``hole_end``,
    with a gentle price oscillation that reaches no 10-pip level within two hours."""
    start_ns = int(datetime_to_ns([hole_start])[0])
    end_ns = int(datetime_to_ns([hole_end])[0])
    side_ns = int(hours_each_side * 60 * NS_PER_MINUTE)
    step_ns = 10 * 10**9
    timestamp_ns = np.concatenate([
        np.arange(start_ns - side_ns, start_ns, step_ns, dtype=np.int64) + step_ns // 2,
        np.arange(end_ns, end_ns + side_ns, step_ns, dtype=np.int64) + step_ns // 2,
    ])
    bid = 1.38 + 2e-5 * np.sin(np.arange(len(timestamp_ns)) / 30.0)
    return timestamp_ns, bid, bid + 1e-4


def labels_around_hole(hole_start: str, hole_end: str, max_entry_delay_minutes: float):
    timestamp_ns, bid, ask = ticks_around_hole(hole_start, hole_end)
    config = replace(Config(), labels=LabelsConfig(max_entry_delay_minutes=max_entry_delay_minutes))
    bars = minute_bars(timestamp_ns, TIMEFRAME_MIN)
    table = labels.build_labels(timestamp_ns, bid, ask, bars, TIMEFRAME_MIN, config, EURUSD)
    return timestamp_ns, table


def rows_of_bar(table: pd.DataFrame, bar_open: str) -> pd.DataFrame:
    return table[table["timestamp"] == int(datetime_to_ns([bar_open])[0])]


def assert_no_entry(rows: pd.DataFrame) -> None:
    assert len(rows) == len(Config().labels.grid) * 2
    assert (rows["outcome"] == "censored").all()
    assert (rows["entry_time"] == labels.NAT_NS).all()
    assert (rows["exit_time"] == labels.NAT_NS).all()
    assert rows["entry_price"].isna().all()
    assert rows["exit_price"].isna().all()
    assert rows["pips"].isna().all()


def test_friday_close_bar_gets_no_entry():
    # The week ends Friday 2 May 2014 at 21:00 UTC and the next starts Sunday 4 May at 21:00.
    timestamp_ns, table = labels_around_hole("2014-05-02 21:00", "2014-05-04 21:00", 30.0)
    assert_no_entry(rows_of_bar(table, "2014-05-02 20:55"))
    # The bar before it closes at 20:55 with Friday ticks left, so it enters normally.
    before = rows_of_bar(table, "2014-05-02 20:50")
    assert (before["entry_time"] >= int(datetime_to_ns(["2014-05-02 20:55"])[0])).all()
    assert (before["entry_time"] < int(datetime_to_ns(["2014-05-02 21:00"])[0])).all()
    # Only that bar and the last bar have no entry.
    no_entry = table.loc[table["entry_time"] == labels.NAT_NS, "timestamp"].unique()
    assert len(no_entry) == 2


def test_friday_close_enters_at_sunday_without_limit():
    timestamp_ns, table = labels_around_hole("2014-05-02 21:00", "2014-05-04 21:00", 0.0)
    rows = rows_of_bar(table, "2014-05-02 20:55")
    sunday_open_ns = int(timestamp_ns[timestamp_ns >= int(datetime_to_ns(["2014-05-04 21:00"])[0])][0])
    assert (rows["entry_time"] == sunday_open_ns).all()
    assert rows["entry_price"].notna().all()


def test_midweek_two_hour_hole_gets_no_entry():
    # Wednesday 7 May 2014, no ticks from 10:00 to 12:00 UTC.
    timestamp_ns, table = labels_around_hole("2014-05-07 10:00", "2014-05-07 12:00", 30.0)
    assert_no_entry(rows_of_bar(table, "2014-05-07 09:55"))
    after = rows_of_bar(table, "2014-05-07 12:00")
    assert (after["entry_time"] != labels.NAT_NS).all()
    assert (after["outcome"] != "censored").all()


def test_entry_delay_at_limit_allowed():
    # The 09:55 bar closes at 10:00 and the first tick after the hole is at 10:30:05, a delay of
    # 30 min 5 s: within a 30.5-minute limit and beyond a 30-minute one.
    _, table = labels_around_hole("2014-05-07 10:00", "2014-05-07 10:30", 30.5)
    rows = rows_of_bar(table, "2014-05-07 09:55")
    assert (rows["entry_time"] == int(datetime_to_ns(["2014-05-07 10:30:05"])[0])).all()
    _, table = labels_around_hole("2014-05-07 10:00", "2014-05-07 10:30", 30.0)
    assert_no_entry(rows_of_bar(table, "2014-05-07 09:55"))


def test_negative_entry_delay_raises():
    with pytest.raises(ValueError, match="max_entry_delay_minutes"):
        LabelsConfig(max_entry_delay_minutes=-1.0)


def with_labels(**changes) -> Config:
    return replace(Config(), labels=replace(LabelsConfig(), **changes))


def test_unknown_barrier_mode_and_clock_raise():
    with pytest.raises(ConfigError, match="barrier_mode"):
        LabelsConfig(barrier_mode="percent")
    with pytest.raises(ConfigError, match="horizon_clock"):
        LabelsConfig(horizon_clock="trading")


def ticks_every_10s_around_weekend():
    """EURUSD ticks every 10 s on the minute grid, Friday 2 May 2014 15:00 to 21:00 UTC and
    Sunday 4 May 21:00 to 23:59 UTC, with a flat bid that reaches no barrier."""
    step_ns = 10 * 10**9
    friday = np.arange(int(datetime_to_ns(["2014-05-02 15:00"])[0]), int(datetime_to_ns(["2014-05-02 21:00"])[0]),
                       step_ns, dtype=np.int64)
    sunday = np.arange(int(datetime_to_ns(["2014-05-04 21:00"])[0]), int(datetime_to_ns(["2014-05-05 00:00"])[0]),
                       step_ns, dtype=np.int64)
    timestamp_ns = np.concatenate([friday, sunday])
    bid = np.full(len(timestamp_ns), 1.38)
    return timestamp_ns, bid, bid + 1e-4


def friday_label(clock: str) -> pd.Series:
    timestamp_ns, bid, ask = ticks_every_10s_around_weekend()
    config = with_labels(horizon_clock=clock, grid=((10.0, 10.0, 60.0),))
    table = labels.build_labels(timestamp_ns, bid, ask, minute_bars(timestamp_ns, 5), 5, config, EURUSD)
    # The 20:45 bar closes at 20:50 UTC, ten minutes before the 17:00 New York close (EDT).
    rows = rows_of_bar(table, "2014-05-02 20:45")
    return rows[rows["side"] == 1].iloc[0]


def test_friday_horizon_counts_market_minutes():
    row = friday_label("market")

    assert row["entry_time"] == int(datetime_to_ns(["2014-05-02 20:50"])[0])
    assert row["outcome"] == "horizon"
    # Ten minutes before the close and fifty after Sunday's 17:00 New York open.
    assert row["exit_time"] == int(datetime_to_ns(["2014-05-04 21:50"])[0])
    assert row["horizon_return_pips"] == pytest.approx(-1.0)


def test_friday_horizon_on_wall_clock_ends_at_open():
    row = friday_label("wall")

    assert row["outcome"] == "horizon"
    assert row["exit_time"] == int(datetime_to_ns(["2014-05-04 21:00"])[0])


def test_weekday_labels_same_on_both_clocks(built, ticks):
    bars, table = built
    timestamp_ns, bid, ask = ticks
    wall = labels.build_labels(timestamp_ns, bid, ask, bars, TIMEFRAME_MIN, with_labels(horizon_clock="wall"), EURUSD)

    pd.testing.assert_frame_equal(wall, table)


def test_horizon_end_skips_every_weekend():
    start = datetime_to_ns(["2014-05-02 20:50", "2014-05-02 22:00", "2014-05-07 10:00", "2014-12-05 21:50"])
    end = labels.horizon_end_ns(start, 60.0, "market")

    expected = datetime_to_ns(["2014-05-04 21:50", "2014-05-04 22:00", "2014-05-07 11:00", "2014-12-07 22:50"])
    np.testing.assert_array_equal(end, expected)
    # A week of open minutes (5 days) from Monday ends the next Monday, 7 days later.
    monday = datetime_to_ns(["2014-05-05 12:00"])
    assert labels.horizon_end_ns(monday, 5 * 24 * 60.0, "market")[0] == monday[0] + 7 * 24 * 60 * NS_PER_MINUTE


def reference_uniqueness(entry_ns: np.ndarray, exit_ns: np.ndarray) -> np.ndarray:
    """Slow reference: integrate 1 / concurrency over each span, segment by segment."""
    bounds = np.unique(np.concatenate([entry_ns, exit_ns]))
    result = []
    for start, end in zip(entry_ns, exit_ns, strict=True):
        if start == end:
            result.append(1.0 / np.sum((entry_ns <= start) & (exit_ns >= start)))
            continue
        inside = bounds[(bounds >= start) & (bounds <= end)]
        total = 0.0
        for left, right in zip(inside[:-1], inside[1:], strict=True):
            middle = (left + right) / 2.0
            total += (right - left) / np.sum((entry_ns <= middle) & (exit_ns >= middle))
        result.append(total / (end - start))
    return np.array(result)


def test_uniqueness_matches_reference():
    rng = np.random.default_rng(12)
    entry = np.sort(rng.integers(0, 1000, size=60))
    exit_ = entry + rng.integers(0, 80, size=60)

    np.testing.assert_allclose(labels.uniqueness_weights(entry, exit_), reference_uniqueness(entry, exit_))
    np.testing.assert_allclose(labels.uniqueness_weights(np.array([0, 10]), np.array([5, 20])), [1.0, 1.0])
    np.testing.assert_allclose(labels.uniqueness_weights(np.array([0, 0]), np.array([10, 10])), [0.5, 0.5])
    np.testing.assert_allclose(labels.uniqueness_weights(np.array([0, 5]), np.array([10, 10])), [0.75, 0.5])


def test_labels_uniqueness_per_grid_and_side(built):
    _, table = built
    for (grid_id, side), group in table.groupby(["grid_id", "side"]):
        entered = group[group["entry_time"] != labels.NAT_NS].iloc[:400]
        expected = reference_uniqueness(entered["entry_time"].to_numpy(), entered["exit_time"].to_numpy())
        # The reference sees only the first 400 labels, so compare those far from its end.
        np.testing.assert_allclose(entered["uniqueness"].to_numpy()[:300], expected[:300], rtol=1e-5,
                                   err_msg=f"grid {grid_id} side {side}")
    assert table.loc[table["entry_time"] == labels.NAT_NS, "uniqueness"].isna().all()
    assert (table["uniqueness"].dropna() <= 1.0).all()


def test_horizon_return_matches_ticks(built, ticks):
    _, table = built
    timestamp_ns, bid, ask = ticks
    horizon_rows = table[table["outcome"] == "horizon"]
    # A horizon exit is the tick at the horizon end, so both figures agree.
    np.testing.assert_allclose(horizon_rows["horizon_return_pips"], horizon_rows["pips"], atol=1e-4)

    rng = np.random.default_rng(4)
    decided = table[table["outcome"].isin(["take_profit", "stop_loss"])]
    for row in decided.iloc[rng.choice(len(decided), size=100, replace=False)].itertuples():
        end = row.entry_time + int(row.horizon_minutes) * NS_PER_MINUTE
        index = int(np.searchsorted(timestamp_ns, end))
        hole = START_NS + HOLE_START_MIN * NS_PER_MINUTE
        if index == len(timestamp_ns) or row.entry_time < hole <= timestamp_ns[index]:
            assert np.isnan(row.horizon_return_pips)
            continue
        entry = int(np.searchsorted(timestamp_ns, row.entry_time))
        move = bid[index] - ask[entry] if row.side == 1 else bid[entry] - ask[index]
        assert row.horizon_return_pips == pytest.approx(move / EURUSD.pip_size, abs=1e-3)


def test_atr_barriers_from_feature_atr(ticks):
    timestamp_ns, bid, ask = ticks
    bars = build_bars(timestamp_ns, bid, ask, TIMEFRAME_MIN)
    config = with_labels(barrier_mode="atr", atr_grid=((1.5, 1.0, 60.0),))
    table = labels.build_labels(timestamp_ns, bid, ask, bars, TIMEFRAME_MIN, config, EURUSD)
    atr = build_features(bars, TIMEFRAME_MIN, Config().features, EURUSD)["atr_14"].to_numpy()

    long_rows = table[table["side"] == 1]
    np.testing.assert_allclose(long_rows["atr_pips"].to_numpy(), atr, rtol=1e-5)
    entered = long_rows["entry_time"].to_numpy() != labels.NAT_NS
    expected_tp = np.maximum(1, np.rint(1.5 * atr * 10)) / 10
    np.testing.assert_allclose(long_rows["take_profit_pips"].to_numpy()[entered], expected_tp[entered], rtol=1e-6)
    # The warm-up bars have no ATR, so no barrier and no entry.
    assert not entered[:13].any()
    assert entered[13:200].all()
    take_profit = table[table["outcome"] == "take_profit"]
    assert len(take_profit) > 200
    np.testing.assert_allclose(take_profit["pips"], take_profit["take_profit_pips"], atol=1e-4)


def test_chunks_and_file_match_one_table(built, ticks, tmp_path, caplog):
    bars, table = built
    timestamp_ns, bid, ask = ticks
    config = with_labels(max_rows_per_chunk=len(bars) * 2)
    with caplog.at_level("INFO", logger="fxresearch.labels"):
        summary = labels.write_labels(tmp_path / "M5.parquet", timestamp_ns, bid, ask, bars, TIMEFRAME_MIN,
                                      config, EURUSD, {"pair_year": "EURUSD_2014"})
    progress = [r.getMessage() for r in caplog.records if "grid entries" in r.getMessage()]

    assert len(progress) == 3
    assert "(100%)" in progress[-1]
    assert summary["rows"] == len(table)
    assert summary["outcome_counts"] == {k: int(v) for k, v in table["outcome"].value_counts().items() if v}
    from_file = artifacts.read_frame(tmp_path / "M5.parquet")
    pd.testing.assert_frame_equal(from_file, table)
    metadata = artifacts.read_metadata(tmp_path / "M5.parquet")
    assert metadata["horizon_clock"] == "market"
    assert metadata["pair_year"] == "EURUSD_2014"


def test_outcome_codes_table():
    assert list(labels.OUTCOME_DTYPE.categories) == ["stop_loss", "take_profit", "horizon", "censored"]


def test_label_equals_backtest(ticks):
    """A label and a one-signal backtest with the same SL/TP/horizon give the same trade.

    The backtest's horizon is wall-clock minutes after the entry tick
    (``run_backtests(horizon_minutes=...)``), so the labels use ``horizon_clock = "wall"``.
    """
    timestamp_ns, bid, ask = ticks
    bars = build_bars(timestamp_ns, bid, ask, TIMEFRAME_MIN)
    arrays = fills.prepare_tick_arrays(timestamp_ns, bid, ask, EURUSD, Config().fills.max_gap_minutes)
    checked = 0
    for mode in ("pips", "atr"):
        config = with_labels(horizon_clock="wall", barrier_mode=mode)
        table = labels.build_labels(timestamp_ns, bid, ask, bars, TIMEFRAME_MIN, config, EURUSD, arrays=arrays)
        entered = table[table["entry_time"] != labels.NAT_NS]
        rng = np.random.default_rng(8)
        for row in entered.iloc[rng.choice(len(entered), size=40, replace=False)].itertuples():
            bar = int(np.searchsorted(bars["timestamp"].to_numpy(), row.timestamp))
            signals = np.zeros(len(bars), dtype=np.int8)
            signals[bar] = row.side
            strategy = Strategy("one_trade", {"bar": bar}, float(row.stop_loss_pips), float(row.take_profit_pips))
            trades = run_backtests(arrays, bars, TIMEFRAME_MIN, [strategy], {strategy.signal_key: signals}, EURUSD,
                                   float(row.horizon_minutes))
            assert len(trades) == 1
            reason = fills.REASONS[trades.reason[0]]
            expected_outcome = reason if reason in labels.OUTCOMES else "censored"
            assert row.outcome == expected_outcome
            assert trades.entry_time_ns[0] == row.entry_time
            assert trades.exit_time_ns[0] == row.exit_time
            assert trades.exit_price[0] == row.exit_price
            if expected_outcome != "censored":
                assert trades.pips[0] == pytest.approx(row.pips, abs=1e-4)
            checked += 1
    assert checked == 80



def test_chunks_follow_pair_memory_budget(ticks, monkeypatch, caplog):
    """A small pair memory budget cuts the grid into more chunks, with the same labels."""
    from fxresearch import resources

    timestamp_ns, bid, ask = ticks
    bars = minute_bars(timestamp_ns, TIMEFRAME_MIN)
    config = Config()
    n_grid = len(config.labels.grid)
    whole = list(labels.iter_label_chunks(timestamp_ns, bid, ask, bars, TIMEFRAME_MIN, config, EURUSD))
    assert len(whole) == 1

    # Room for one grid entry (both sides of every bar) per chunk.
    budget = int(2 * len(bars) * labels.LABEL_ROW_BYTES / resources.CHUNK_BUDGET_SHARE) + 1
    monkeypatch.setenv(resources.PAIR_MEMORY_ENV, str(budget))
    caplog.set_level("INFO", logger="fxresearch.labels")
    small = list(labels.iter_label_chunks(timestamp_ns, bid, ask, bars, TIMEFRAME_MIN, config, EURUSD))
    assert len(small) == n_grid
    assert any("sized to the pair's memory budget" in r.getMessage() for r in caplog.records)
    pd.testing.assert_frame_equal(pd.concat(small, ignore_index=True), whole[0])


def test_chunk_rows_for_budget_caps(monkeypatch):
    from fxresearch.resources import PAIR_MEMORY_ENV, chunk_rows_for_budget

    monkeypatch.delenv(PAIR_MEMORY_ENV, raising=False)
    assert chunk_rows_for_budget(1_000, 100, None) == 1_000
    assert chunk_rows_for_budget(1_000, 100, 4_000) == 10
    assert chunk_rows_for_budget(1_000, 100, 10**12) == 1_000
    assert chunk_rows_for_budget(1_000, 10**9, 4_000) == 1

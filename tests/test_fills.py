"""Fill kernel rules on hand-made ticks, and the bar walk checked against the tick scan."""

from __future__ import annotations

from pathlib import Path

import numba
import numpy as np
import pandas as pd
import pytest

from fxresearch import fills
from fxresearch._fill_kernels import (
    NO_HORIZON_NS,
    OPEN_AT_LIMIT,
    find_exit_bars_nb,
    find_exit_ticks_nb,
    label_many_nb,
)
from fxresearch.instruments import get_instrument
from fxresearch.timeutil import NS_PER_MINUTE, datetime_to_ns

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"
EURUSD = get_instrument("EURUSD")
USDJPY = get_instrument("USDJPY")
# A Wednesday, so no gap in these tests is a weekend close unless a test puts one there.
WEDNESDAY_NS = int(datetime_to_ns(["2014-05-07 10:00:00"])[0])
NS_PER_SECOND = 1_000_000_000


def make_arrays(rows, instrument=EURUSD, start_ns=WEDNESDAY_NS, max_gap_minutes=30.0):
    """Build TickArrays from (seconds after start, bid, ask) rows."""
    seconds = np.array([row[0] for row in rows], dtype=np.float64)
    timestamp_ns = start_ns + np.rint(seconds * NS_PER_SECOND).astype(np.int64)
    bid = np.array([row[1] for row in rows])
    ask = np.array([row[2] for row in rows])
    return fills.prepare_tick_arrays(timestamp_ns, bid, ask, instrument, max_gap_minutes)


def trade(arrays, entry_idx, side, stop_loss_pips, take_profit_pips, horizon_minutes=None,
          instrument=EURUSD):
    """Run simulate_trade (bar walk) and check the tick scan gives the same exit."""
    fill = fills.simulate_trade(arrays, entry_idx, side, stop_loss_pips, take_profit_pips,
                                horizon_minutes, instrument)
    entry_pts = arrays.ask_pts[entry_idx] if side > 0 else arrays.bid_pts[entry_idx]
    stop_pts = entry_pts - side * fills.pips_to_points(stop_loss_pips, instrument)
    target_pts = entry_pts + side * fills.pips_to_points(take_profit_pips, instrument)
    horizon_end_ns = min(int(arrays.timestamp_ns[entry_idx]) + fills.horizon_to_ns(horizon_minutes),
                         int(NO_HORIZON_NS))
    exit_idx, exit_pts, reason = find_exit_ticks_nb(
        *arrays.tick_args(), entry_idx, side, stop_pts, target_pts, horizon_end_ns,
        len(arrays.timestamp_ns),
    )
    assert (exit_idx, fills.REASONS[reason]) == (fill.exit_idx, fill.reason)
    assert exit_pts * instrument.point_size == pytest.approx(fill.exit_price, abs=1e-9)
    return fill


# ---------------------------------------------------------------- rules on hand-made ticks


def test_long_stop_triggers_on_bid():
    # Long enters at ask 1.10010; 10-pip stop at bid 1.09910. Tick 1's bid stays above it.
    arrays = make_arrays([(0, 1.10000, 1.10010), (5, 1.09915, 1.09925), (10, 1.09910, 1.09930),
                          (15, 1.09800, 1.09810)])
    fill = trade(arrays, 0, +1, stop_loss_pips=10, take_profit_pips=10)
    assert fill.reason == "stop_loss"
    assert fill.exit_idx == 2
    assert fill.exit_price == pytest.approx(1.09910)
    assert fill.pips == pytest.approx(-10.0)


def test_short_stop_triggers_on_ask():
    # Short enters at bid 1.10000; 10-pip stop at ask 1.10100, reached by a wide spread at tick 2
    # while the bid is still 2 pips below the stop.
    arrays = make_arrays([(0, 1.10000, 1.10010), (5, 1.10095, 1.10099), (10, 1.10080, 1.10100)])
    fill = trade(arrays, 0, -1, stop_loss_pips=10, take_profit_pips=10)
    assert fill.reason == "stop_loss"
    assert fill.exit_idx == 2
    assert fill.exit_price == pytest.approx(1.10100)
    assert fill.pips == pytest.approx(-10.0)


def test_short_stop_ignores_bid_touch():
    # Only the ask triggers a short's stop, and here the ask never reaches 1.10100.
    arrays = make_arrays([(0, 1.10000, 1.10010), (5, 1.10099, 1.10099), (10, 1.10050, 1.10060)])
    fill = trade(arrays, 0, -1, stop_loss_pips=10, take_profit_pips=10)
    assert fill.reason == "end_of_data"
    assert fill.exit_idx == 2


def test_gap_through_stop_fills_at_worse_tick():
    # Stop at bid 1.09910; the bid jumps from 1.09950 to 1.09800, so the long loses 21 pips.
    arrays = make_arrays([(0, 1.10000, 1.10010), (5, 1.09950, 1.09960), (10, 1.09800, 1.09810)])
    fill = trade(arrays, 0, +1, stop_loss_pips=10, take_profit_pips=10)
    assert fill.reason == "stop_loss"
    assert fill.exit_idx == 2
    assert fill.exit_price == pytest.approx(1.09800)
    assert fill.pips == pytest.approx(-21.0)


def test_short_gap_through_stop_fills_at_ask():
    # Short from bid 1.10000, stop at ask 1.10100; the ask jumps to 1.10250, a 25-pip loss.
    arrays = make_arrays([(0, 1.10000, 1.10010), (5, 1.10240, 1.10250)])
    fill = trade(arrays, 0, -1, stop_loss_pips=10, take_profit_pips=10)
    assert fill.reason == "stop_loss"
    assert fill.exit_price == pytest.approx(1.10250)
    assert fill.pips == pytest.approx(-25.0)


def test_target_jump_fills_at_level():
    # Target at bid 1.10110; the bid jumps to 1.10300, but a limit order fills at its level.
    arrays = make_arrays([(0, 1.10000, 1.10010), (5, 1.10050, 1.10060), (10, 1.10300, 1.10310)])
    fill = trade(arrays, 0, +1, stop_loss_pips=10, take_profit_pips=10)
    assert fill.reason == "take_profit"
    assert fill.exit_idx == 2
    assert fill.exit_price == pytest.approx(1.10110)
    assert fill.pips == pytest.approx(10.0)


def test_short_target_triggers_on_ask():
    # Short from bid 1.10000, target at ask 1.09900. Tick 1's bid is below it, its ask is not.
    arrays = make_arrays([(0, 1.10000, 1.10010), (5, 1.09890, 1.09905), (10, 1.09880, 1.09890)])
    fill = trade(arrays, 0, -1, stop_loss_pips=10, take_profit_pips=10)
    assert fill.reason == "take_profit"
    assert fill.exit_idx == 2
    assert fill.exit_price == pytest.approx(1.09900)
    assert fill.pips == pytest.approx(10.0)


def test_target_before_stop_in_same_bar():
    # Both levels are touched inside one minute; the earlier tick (the target) decides.
    arrays = make_arrays([(0, 1.10000, 1.10010), (5, 1.10120, 1.10130), (10, 1.09900, 1.09910)])
    fill = trade(arrays, 0, +1, stop_loss_pips=10, take_profit_pips=10)
    assert fill.reason == "take_profit"
    assert fill.exit_idx == 1


def test_stop_before_target_in_same_bar():
    arrays = make_arrays([(0, 1.10000, 1.10010), (5, 1.09900, 1.09910), (10, 1.10120, 1.10130)])
    fill = trade(arrays, 0, +1, stop_loss_pips=10, take_profit_pips=10)
    assert fill.reason == "stop_loss"
    assert fill.exit_idx == 1
    assert fill.exit_price == pytest.approx(1.09900)


def test_one_tick_checks_stop_then_target_then_horizon():
    # Levels set by hand so that one tick meets stop, target and horizon at once.
    arrays = make_arrays([(0, 1.10000, 1.10010), (120, 1.10000, 1.10010)])
    ticks = arrays.tick_args()
    n = len(arrays.timestamp_ns)
    horizon_end_ns = WEDNESDAY_NS + NS_PER_MINUTE
    both = find_exit_ticks_nb(*ticks, 0, 1, 110000, 110000, horizon_end_ns, n)
    assert both == (1, 110000, fills.STOP_LOSS)
    target_and_horizon = find_exit_ticks_nb(*ticks, 0, 1, 100000, 110000, horizon_end_ns, n)
    assert target_and_horizon == (1, 110000, fills.TAKE_PROFIT)
    horizon_only = find_exit_ticks_nb(*ticks, 0, 1, 100000, 120000, horizon_end_ns, n)
    assert horizon_only == (1, 110000, fills.HORIZON)


def test_horizon_exits_at_tick_exactly_at_end():
    # One-minute horizon from tick 0; tick 3 at exactly 60 s is the first at or after it.
    arrays = make_arrays([(0, 1.10000, 1.10010), (30, 1.10020, 1.10030), (59.999, 1.10030, 1.10040),
                          (60, 1.10040, 1.10050), (61, 1.10050, 1.10060)])
    fill = trade(arrays, 0, +1, stop_loss_pips=10, take_profit_pips=10, horizon_minutes=1)
    assert fill.reason == "horizon"
    assert fill.exit_idx == 3
    assert fill.exit_price == pytest.approx(1.10040)
    assert fill.pips == pytest.approx(3.0)


def test_horizon_exits_at_first_tick_after_end():
    # No tick at 60 s; a short exits at tick 2's ask (75 s).
    arrays = make_arrays([(0, 1.10000, 1.10010), (30, 1.10020, 1.10030), (75, 1.09970, 1.09980)])
    fill = trade(arrays, 0, -1, stop_loss_pips=10, take_profit_pips=10, horizon_minutes=1)
    assert fill.reason == "horizon"
    assert fill.exit_idx == 2
    assert fill.exit_price == pytest.approx(1.09980)
    assert fill.pips == pytest.approx(2.0)


def test_data_hole_exits_at_last_tick_before():
    # 31 minutes between ticks 2 and 3 is longer than the 30-minute limit on a Wednesday.
    arrays = make_arrays([(0, 1.10000, 1.10010), (10, 1.10020, 1.10030), (20, 1.10030, 1.10040),
                          (20 + 31 * 60, 1.09000, 1.09010)])
    assert arrays.hole_after.tolist() == [0, 0, 1, 0]
    fill = trade(arrays, 0, +1, stop_loss_pips=10, take_profit_pips=50)
    assert fill.reason == "data_gap"
    assert fill.exit_idx == 2
    assert fill.exit_price == pytest.approx(1.10030)
    assert fill.pips == pytest.approx(2.0)


def test_data_hole_after_entry_tick():
    # The hole follows the entry tick itself: the long exits there at the bid, losing the spread.
    arrays = make_arrays([(0, 1.10000, 1.10010), (40 * 60, 1.10020, 1.10030)])
    fill = trade(arrays, 0, +1, stop_loss_pips=10, take_profit_pips=10)
    assert fill.reason == "data_gap"
    assert fill.exit_idx == 0
    assert fill.exit_price == pytest.approx(1.10000)
    assert fill.pips == pytest.approx(-1.0)


def test_weekend_close_is_no_data_hole():
    # Friday 20:59 UTC to Sunday 21:00 UTC is the weekend close, so the trade stays open.
    friday_ns = int(datetime_to_ns(["2014-05-09 20:59:00"])[0])
    sunday_offset = 48 * 3600 + 60
    arrays = make_arrays([(0, 1.10000, 1.10010), (30, 1.10020, 1.10030),
                          (sunday_offset, 1.10040, 1.10050), (sunday_offset + 5, 1.09900, 1.09910)],
                         start_ns=friday_ns)
    assert arrays.hole_after.tolist() == [0, 0, 0, 0]
    fill = trade(arrays, 0, +1, stop_loss_pips=10, take_profit_pips=10)
    assert fill.reason == "stop_loss"
    assert fill.exit_idx == 3


def test_end_of_data_closes_at_last_tick():
    arrays = make_arrays([(0, 1.10000, 1.10010), (10, 1.10020, 1.10030), (90, 1.10050, 1.10060)])
    fill = trade(arrays, 0, -1, stop_loss_pips=10, take_profit_pips=10, horizon_minutes=60)
    assert fill.reason == "end_of_data"
    assert fill.exit_idx == 2
    assert fill.exit_price == pytest.approx(1.10060)
    assert fill.pips == pytest.approx(-6.0)


def test_entry_on_last_tick_ends_at_once():
    arrays = make_arrays([(0, 1.10000, 1.10010), (10, 1.10020, 1.10030)])
    fill = trade(arrays, 1, +1, stop_loss_pips=10, take_profit_pips=10)
    assert fill.reason == "end_of_data"
    assert fill.exit_idx == 1
    assert fill.exit_price == pytest.approx(1.10020)


def test_no_tick_after_signal_is_no_entry():
    arrays = make_arrays([(0, 1.10000, 1.10010), (10, 1.10020, 1.10030)])
    fill = fills.simulate_trade(arrays, 2, +1, 10, 10, 60, EURUSD)
    assert fill.reason == "no_entry"
    assert fill.exit_idx == -1
    assert np.isnan(fill.pips)


def test_jpy_pip_is_one_hundredth():
    # USDJPY: 10 pips = 0.100. The bid 149.960 is 5 pips under the ask, no stop; 149.909 is past it.
    rows = [(0, 150.000, 150.010), (5, 149.960, 149.970), (10, 149.909, 149.919)]
    fill = trade(make_arrays(rows, USDJPY), 0, +1, 10, 10, instrument=USDJPY)
    assert fill.reason == "stop_loss"
    assert fill.exit_idx == 2
    assert fill.exit_price == pytest.approx(149.909)
    assert fill.pips == pytest.approx(-10.1)


def test_eurusd_pip_on_same_prices_stops_sooner():
    # Read as EURUSD, 10 pips are 0.0010, so the 0.050 drop at tick 1 is already a stop.
    rows = [(0, 150.000, 150.010), (5, 149.960, 149.970), (10, 149.909, 149.919)]
    fill = trade(make_arrays(rows, EURUSD), 0, +1, 10, 10, instrument=EURUSD)
    assert fill.reason == "stop_loss"
    assert fill.exit_idx == 1
    assert fill.pips == pytest.approx(-500.0)


def test_checks_start_after_entry_tick():
    # Spread 2 pips, stop 1 pip: the entry tick's own bid is below the stop but must not count.
    arrays = make_arrays([(0, 1.10000, 1.10020), (5, 1.10015, 1.10025), (10, 1.10000, 1.10020)])
    fill = trade(arrays, 0, +1, stop_loss_pips=1, take_profit_pips=10)
    assert fill.reason == "stop_loss"
    assert fill.exit_idx == 2
    assert fill.exit_price == pytest.approx(1.10000)
    assert fill.pips == pytest.approx(-2.0)


def test_scan_limit_returns_open_trade():
    arrays = make_arrays([(0, 1.10000, 1.10010), (10, 1.10020, 1.10030), (20, 1.10040, 1.10050),
                          (30, 1.09800, 1.09810)])
    args = (0, 1, 109910, 110110, int(NO_HORIZON_NS), 2)
    expected = (2, 110040, OPEN_AT_LIMIT)
    assert find_exit_ticks_nb(*arrays.tick_args(), *args) == expected
    assert find_exit_bars_nb(*arrays.tick_args(), *args, *arrays.bar_args()) == expected


def test_scan_limit_loses_to_stop_on_same_tick():
    arrays = make_arrays([(0, 1.10000, 1.10010), (10, 1.10020, 1.10030), (20, 1.09800, 1.09810)])
    args = (0, 1, 109910, 110110, int(NO_HORIZON_NS), 2)
    expected = (2, 109800, fills.STOP_LOSS)
    assert find_exit_ticks_nb(*arrays.tick_args(), *args) == expected
    assert find_exit_bars_nb(*arrays.tick_args(), *args, *arrays.bar_args()) == expected


def test_unsorted_ticks_raise():
    timestamp_ns = np.array([2, 1], dtype=np.int64) * NS_PER_SECOND
    with pytest.raises(ValueError, match="not sorted"):
        fills.prepare_tick_arrays(timestamp_ns, np.ones(2), np.ones(2), EURUSD, 30.0)


def test_wrong_instrument_raises():
    arrays = make_arrays([(0, 1.10000, 1.10010), (10, 1.10020, 1.10030)])
    with pytest.raises(ValueError, match="EURUSD"):
        fills.simulate_trade(arrays, 0, 1, 10, 10, 60, USDJPY)


def test_reasons_follow_code_order():
    assert fills.REASONS == ("stop_loss", "take_profit", "horizon", "data_gap", "end_of_data",
                             "signal", "no_entry")
    for code, name in enumerate(fills.REASONS):
        if name != "no_entry" and name != "signal":
            assert getattr(fills, name.upper()) == code
    assert fills.SIGNAL == 5
    assert fills.NO_ENTRY == 6


# ---------------------------------------------------------------- bar walk equals tick scan


def random_arrays(rng: np.random.Generator, n_ticks: int) -> fills.TickArrays:
    """Random ticks: bursts within a minute, quiet minutes, equal times and data holes."""
    gap_s = rng.choice([0.0, 0.2, 1.0, 7.0, 45.0, 200.0, 2400.0], size=n_ticks - 1,
                       p=[0.05, 0.4, 0.3, 0.15, 0.06, 0.03, 0.01])
    seconds = np.r_[0.0, np.cumsum(gap_s)]
    steps = rng.choice([-30, -3, -1, 0, 1, 3, 30], size=n_ticks, p=[0.02, 0.15, 0.3, 0.06, 0.3, 0.15, 0.02])
    bid_pts = 110_000 + np.cumsum(steps)
    spread_pts = rng.integers(0, 25, size=n_ticks)
    timestamp_ns = WEDNESDAY_NS + np.rint(seconds * NS_PER_SECOND).astype(np.int64)
    return fills.prepare_tick_arrays(timestamp_ns, bid_pts * 1e-5, (bid_pts + spread_pts) * 1e-5,
                                     EURUSD, 30.0)


def random_trade_args(rng: np.random.Generator, arrays: fills.TickArrays) -> tuple[int, ...]:
    n = len(arrays.timestamp_ns)
    entry = int(rng.integers(0, n))
    side = int(rng.choice([1, -1]))
    entry_pts = int(arrays.ask_pts[entry] if side > 0 else arrays.bid_pts[entry])
    stop_pts = entry_pts - side * int(rng.integers(1, 400))
    target_pts = entry_pts + side * int(rng.integers(1, 400))
    horizon_kind = rng.integers(0, 3)
    if horizon_kind == 0:
        horizon_end_ns = int(NO_HORIZON_NS)
    elif horizon_kind == 1:
        horizon_end_ns = int(arrays.timestamp_ns[entry]) + int(rng.integers(0, 300 * NS_PER_MINUTE))
    else:
        # Exactly on a later tick's time, the boundary of "at or after".
        horizon_end_ns = int(arrays.timestamp_ns[min(entry + int(rng.integers(0, 3000)), n - 1)])
    limit_kind = rng.integers(0, 3)
    if limit_kind == 0:
        limit = n
    elif limit_kind == 1:
        limit = entry + int(rng.integers(0, 500))
    else:
        limit = int(rng.integers(0, n))
    return entry, side, stop_pts, target_pts, horizon_end_ns, limit


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_bar_walk_equals_tick_scan_random(seed):
    rng = np.random.default_rng(seed)
    arrays = random_arrays(rng, 6000)
    assert arrays.hole_after.sum() > 0
    seen = set()
    for _ in range(1500):
        args = random_trade_args(rng, arrays)
        expected = find_exit_ticks_nb(*arrays.tick_args(), *args)
        result = find_exit_bars_nb(*arrays.tick_args(), *args, *arrays.bar_args())
        assert result == expected, f"trade {args}"
        seen.add(int(expected[2]))
    # Every exit kind the kernels produce came up, so the comparison covered each path.
    assert seen == {OPEN_AT_LIMIT, 0, 1, 2, 3, 4}


def test_bar_walk_equals_tick_scan_eurusd_2014():
    path = DATA_DIR / "parquet" / "EURUSD_2014.parquet"
    if not path.exists():
        pytest.skip(f"real tick file {path} is absent")
    frame = pd.read_parquet(path)
    arrays = fills.prepare_tick_arrays(datetime_to_ns(frame["timestamp"]), frame["bid"].to_numpy(),
                                       frame["ask"].to_numpy(), EURUSD, 30.0)
    rng = np.random.default_rng(2014)
    reasons = []
    for _ in range(3000):
        args = random_trade_args(rng, arrays)
        expected = find_exit_ticks_nb(*arrays.tick_args(), *args)
        result = find_exit_bars_nb(*arrays.tick_args(), *args, *arrays.bar_args())
        assert result == expected, f"trade {args}"
        reasons.append(int(expected[2]))
    counts = np.bincount(np.array(reasons) + 1, minlength=6)
    assert counts[1 + fills.STOP_LOSS] > 100
    assert counts[1 + fills.TAKE_PROFIT] > 100
    assert counts[1 + fills.HORIZON] > 100


# ---------------------------------------------------------------- batched labels kernel


def test_label_many_equals_tick_scan_and_ignores_threads():
    rng = np.random.default_rng(11)
    arrays = random_arrays(rng, 8000)
    n = len(arrays.timestamp_ns)
    entries = np.r_[rng.integers(0, n, size=1500), n].astype(np.int64)
    take_profit_points, stop_loss_points, horizon_ns = 120, 80, 45 * NS_PER_MINUTE

    previous = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        serial = label_many_nb(*arrays.tick_args(), *arrays.bar_args(), entries, -1,
                               take_profit_points, stop_loss_points, horizon_ns)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        parallel = label_many_nb(*arrays.tick_args(), *arrays.bar_args(), entries, -1,
                                 take_profit_points, stop_loss_points, horizon_ns)
    finally:
        numba.set_num_threads(previous)
    for serial_column, parallel_column in zip(serial, parallel, strict=True):
        np.testing.assert_array_equal(serial_column, parallel_column)

    exit_idx, exit_pts, reason = serial
    assert reason[-1] == fills.NO_ENTRY
    assert exit_idx[-1] == -1
    for k, entry in enumerate(entries[:-1]):
        entry_pts = int(arrays.bid_pts[entry])
        expected = find_exit_ticks_nb(
            *arrays.tick_args(), int(entry), -1, entry_pts + stop_loss_points,
            entry_pts - take_profit_points, int(arrays.timestamp_ns[entry]) + horizon_ns, n,
        )
        assert (exit_idx[k], exit_pts[k], reason[k]) == expected


def test_close_positions_at_boundary_tick():
    # Ticks a minute apart: a long from tick 0 would run to its target at tick 5, but a
    # boundary after tick 2 (the train/holdout split) closes it at tick 2's bid.
    rows = [(60 * i, 1.10000 + 0.0001 * i, 1.10010 + 0.0001 * i) for i in range(6)]
    arrays = make_arrays(rows)
    assert trade(arrays, 0, +1, stop_loss_pips=10, take_profit_pips=4).exit_idx == 5

    bounded = fills.close_positions_at(arrays, 2)
    fill = trade(bounded, 0, +1, stop_loss_pips=10, take_profit_pips=4)
    assert fill.reason == "data_gap"
    assert fill.exit_idx == 2
    assert fill.exit_price == pytest.approx(1.10020)
    # The original arrays are unchanged, and a trade entered after the boundary runs on.
    assert arrays.hole_after.tolist() == [0] * 6
    assert trade(bounded, 3, +1, stop_loss_pips=10, take_profit_pips=1).exit_idx == 5

"""run_backtests equals a plain tick-by-tick Python engine, trade for trade, on every real tick file.

Each file is cut to a slice of ticks around its longest gap (a weekend close or a data hole)
so that the Python engine stays fast. Random signal arrays of several densities and two
template families run with random stop-loss, take-profit and horizon, once without entry
filters and once with random ones, on one thread and on two.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fxresearch.backtest import SKIP_REASONS, TRADE_COLUMNS, EntryFilter, Trades, run_backtests
from fxresearch.bars import build_bars
from fxresearch.fills import REASONS, horizon_to_ns, pips_to_points, prepare_tick_arrays
from fxresearch.instruments import Instrument, get_instrument
from fxresearch.strategies import SignalContext, Strategy, compute_signals
from fxresearch.timeutil import NS_PER_MINUTE, datetime_to_ns
from reference_engine import ReferenceTrade, reference_backtest

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PARQUET_DIR = DATA_DIR / "parquet"
SLICE_TICKS = 60_000
MIN_BARS = 30
MAX_GAP_MINUTES = 30.0
DENSITIES = (0.03, 0.15, 0.6)
TEMPLATE_PARAMS = (("ma_cross", {"fast": 3, "slow": 10}), ("donchian_breakout", {"lookback": 10}))


def _tick_files() -> list:
    files = sorted(PARQUET_DIR.glob("*.parquet")) if PARQUET_DIR.is_dir() else []
    if not files:
        return [pytest.param(None, marks=pytest.mark.skip(
            reason=f"no real tick files in {PARQUET_DIR}; the data lives outside the repository"))]
    return [pytest.param(path, id=path.stem) for path in files]


def _slice_around_longest_gap(timestamp_ns: np.ndarray) -> slice:
    """Return up to SLICE_TICKS ticks with the longest gap between ticks in the middle."""
    if len(timestamp_ns) <= SLICE_TICKS:
        return slice(0, len(timestamp_ns))
    gap_at = int(np.argmax(np.diff(timestamp_ns)))
    start = min(max(gap_at - SLICE_TICKS // 2, 0), len(timestamp_ns) - SLICE_TICKS)
    return slice(start, start + SLICE_TICKS)


def _random_filter(rng: np.random.Generator, spread_pips: np.ndarray) -> EntryFilter:
    """A filter with a spread cap inside the slice's spread range, a delay cap and two windows."""
    start = int(rng.integers(0, 24 * 60))
    length = int(rng.integers(30, 180))
    end = (start + length) % (24 * 60)
    window = (f"{start // 60:02d}:{start % 60:02d}", f"{end // 60:02d}:{end % 60:02d}")
    return EntryFilter(
        max_spread_pips=float(np.round(np.quantile(spread_pips, rng.uniform(0.4, 0.9)), 1)),
        max_delay_minutes=float(rng.choice([0.5, 1.0, 5.0, 30.0])),
        no_entry_windows=(("16:55", "17:10"), window),
    )


def _strategies(rng: np.random.Generator, context: SignalContext) -> tuple[list[Strategy], dict]:
    n_bars = len(context.bars)
    strategies: list[Strategy] = []
    signals: dict[tuple[str, str], np.ndarray] = {}

    def add(family: str, params: dict, signal: np.ndarray) -> None:
        stop_loss_pips = float(rng.choice([1.0, 2.5, 4.0, 8.0, 15.0]))
        take_profit_pips = float(rng.choice([1.0, 3.0, 5.0, 12.0, 25.0]))
        strategy = Strategy(family, params, stop_loss_pips, take_profit_pips)
        strategies.append(strategy)
        signals[strategy.signal_key] = signal

    for row, density in enumerate(DENSITIES):
        signal = np.zeros(n_bars, dtype=np.int8)
        hits = rng.random(n_bars) < density
        signal[hits] = rng.choice(np.array([-1, 1], dtype=np.int8), int(hits.sum()))
        add("random", {"row": row, "density": density}, signal)
    for family, params in TEMPLATE_PARAMS:
        add(family, params, compute_signals(family, params, context))
    return strategies, signals


def _engine_trades(trades: Trades, s: int, instrument: Instrument) -> list[ReferenceTrade]:
    mask = trades.strategy_index == s
    entry_pts = np.rint(trades.entry_price[mask] / instrument.point_size).astype(np.int64)
    exit_pts = np.rint(trades.exit_price[mask] / instrument.point_size).astype(np.int64)
    return [
        ReferenceTrade(int(side), int(bar), int(entry), int(entry_price), int(exit_), int(exit_price), REASONS[reason])
        for side, bar, entry, entry_price, exit_, exit_price, reason in zip(
            trades.side[mask], trades.signal_bar[mask], trades.entry_idx[mask], entry_pts,
            trades.exit_idx[mask], exit_pts, trades.reason[mask], strict=True)
    ]


def _check_prices_and_pips(trades: Trades, instrument: Instrument, timestamp_ns: np.ndarray) -> None:
    """Prices are the rounded points, pips the point difference by side, times the ticks' times."""
    decimals = len(str(instrument.points_per_pip)) - 1
    for k in range(len(trades)):
        entry_pts = round(trades.entry_price[k] / instrument.point_size)
        exit_pts = round(trades.exit_price[k] / instrument.point_size)
        assert trades.entry_price[k] == round(entry_pts * instrument.point_size, instrument.price_precision)
        assert trades.exit_price[k] == round(exit_pts * instrument.point_size, instrument.price_precision)
        expected_pips = round((exit_pts - entry_pts) * int(trades.side[k]) / instrument.points_per_pip, decimals)
        assert trades.pips[k] == expected_pips, f"trade {k}"
    np.testing.assert_array_equal(trades.entry_time_ns, timestamp_ns[trades.entry_idx])
    np.testing.assert_array_equal(trades.exit_time_ns, timestamp_ns[trades.exit_idx])


@pytest.mark.parametrize("path", _tick_files())
def test_engine_matches_reference_on_real_ticks(path: Path):
    frame = pd.read_parquet(path)
    instrument = get_instrument(path.stem.split("_")[0])
    timestamp_ns = datetime_to_ns(frame["timestamp"])
    part = _slice_around_longest_gap(timestamp_ns)
    timestamp_ns = np.ascontiguousarray(timestamp_ns[part])
    bid = frame["bid"].to_numpy(dtype=np.float64)[part]
    ask = frame["ask"].to_numpy(dtype=np.float64)[part]

    # Five-minute bars on long slices, one-minute bars on short ones, so both have enough bars.
    span_hours = (timestamp_ns[-1] - timestamp_ns[0]) / (60 * NS_PER_MINUTE)
    timeframe_min = 5 if span_hours > 8 else 1
    bars = build_bars(timestamp_ns, bid, ask, timeframe_min)
    if len(bars) < MIN_BARS:
        pytest.skip(f"{path.name}: {len(bars)} bars of {timeframe_min} minutes, fewer than {MIN_BARS}")
    arrays = prepare_tick_arrays(timestamp_ns, bid, ask, instrument, MAX_GAP_MINUTES)
    context = SignalContext(bars, timeframe_min, instrument)
    rng = np.random.default_rng(zlib.crc32(path.stem.encode()))

    ticks = (arrays.timestamp_ns.tolist(), arrays.bid_pts.tolist(), arrays.ask_pts.tolist(),
             arrays.hole_after.tolist())
    bar_open_ns = bars["timestamp"].to_numpy().astype(np.int64).tolist()
    spread_pips = (arrays.ask_pts - arrays.bid_pts) / instrument.points_per_pip
    reasons_seen: set[str] = set()
    n_compared = 0
    for entry_filter in (None, _random_filter(rng, spread_pips)):
        horizon_minutes = [None, 10.0, 60.0, 240.0][int(rng.integers(0, 4))]
        strategies, signals = _strategies(rng, context)
        trades = run_backtests(arrays, bars, timeframe_min, strategies, signals, instrument, horizon_minutes,
                               workers=1, entry_filter=entry_filter)
        in_parallel = run_backtests(arrays, bars, timeframe_min, strategies, signals, instrument,
                                    horizon_minutes, workers=2, entry_filter=entry_filter)
        for name in TRADE_COLUMNS:
            np.testing.assert_array_equal(getattr(trades, name), getattr(in_parallel, name), err_msg=name)
        _check_prices_and_pips(trades, instrument, arrays.timestamp_ns)

        active = entry_filter or EntryFilter()
        horizon_ns = None if horizon_minutes is None else horizon_to_ns(horizon_minutes)
        for s, strategy in enumerate(strategies):
            expected, skips = reference_backtest(
                *ticks, bar_open_ns, timeframe_min, signals[strategy.signal_key].tolist(),
                pips_to_points(strategy.stop_loss_pips, instrument),
                pips_to_points(strategy.take_profit_pips, instrument), horizon_ns,
                max_spread_points=active.max_spread_pips * instrument.points_per_pip,
                max_delay_ns=int(round(active.max_delay_minutes * NS_PER_MINUTE)),
                no_entry_windows=active.no_entry_windows,
            )
            label = (f"{path.name} {strategy.family} {strategy.params_json} filter={entry_filter} "
                     f"horizon={horizon_minutes}")
            assert _engine_trades(trades, s, instrument) == expected, label
            assert {reason: int(getattr(trades.entry_skips, reason)[s]) for reason in SKIP_REASONS} == skips, label
            reasons_seen |= {trade.reason for trade in expected}
            reasons_seen |= {reason for reason, count in skips.items() if count and entry_filter is not None}
            n_compared += len(expected)

    assert n_compared >= 20
    # The spread cap lies inside the slice's spread range, so the filtered run skips some signals.
    assert {"stop_loss", "take_profit", "signal", "wide_spread"} <= reasons_seen

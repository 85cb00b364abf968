"""Strategy templates: causal entry signals per bar, parameter grids and the strategy list.

A strategy is a template family with one parameter set and one stop-loss/take-profit pair. A
family's signal function turns the bars (and, for some families, features, regimes or mined
patterns) into one int8 per bar: +1 long entry, -1 short entry, 0 none. The backtest
(``fxresearch.backtest``) turns signals into trades.

Market assumptions shared by every family:

- Prices are mids, ``(bid + ask) / 2`` of each OHLC field. The mid high and low are the mean
  of the bid and ask highs (lows), as in ``fxresearch.features``.
- A signal on bar t uses bars up to and including t only. It is known at t's close
  (``open + timeframe``) and acts at the first tick at or after that time.
- Windows count bars, not minutes, so a window can span the weekend close or a data hole.
- Warm-up bars, where a window is not yet full, never signal.

Signals depend on the family and parameters only, never on the stop-loss and take-profit, so
``compute_signals`` caches them per (family, params) in the ``SignalContext`` and the SL/TP
variants of one parameter set share one array.

Mined patterns and fitted regimes are chosen on past data, so a bar may only use ones chosen
before it. A context with ``segments`` (see ``SignalSegment`` and ``fxresearch.refit``) gives
each span of bars its own pattern document and regime table. A family that reads patterns or
regimes is then computed once per segment, and each bar keeps the value of its own segment.
Bars in no segment get no signal from such a family.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, NamedTuple

import numpy as np
import pandas as pd

from fxresearch.config import SearchConfig
from fxresearch.features import SESSIONS, wilder_rsi
from fxresearch.instruments import Instrument
from fxresearch.timeutil import NS_PER_DAY, NS_PER_MINUTE, to_local

logger = logging.getLogger(__name__)

# Inputs a family can need; ``SignalContext.available`` reports which ones a pair has.
INPUT_BARS = "bars"
INPUT_FEATURES = "features"
INPUT_REGIMES = "regimes"
INPUT_PATTERNS = "patterns"
# Inputs chosen on past data; with ``SignalContext.segments`` each bar takes them from its segment.
_SEGMENTED_INPUTS = frozenset({INPUT_REGIMES, INPUT_PATTERNS})

# Tokens that select regimes by name in ``regime_ma_cross``: a bar is allowed when its regime
# name contains the token (``fxresearch.regimes`` names them like ``trend_up_high_vol`` or ``range_low_vol``).
REGIME_TOKENS: tuple[str, ...] = ("trend", "range", "high_vol", "low_vol")

# Japan has kept UTC+9 without daylight saving since 1951, so a Tokyo session in local hours
# is a fixed span of UTC hours on one UTC date.
TOKYO_UTC_OFFSET_HOURS = 9

_PRICE_COLUMNS = ("bid_high", "bid_low", "bid_close", "ask_high", "ask_low", "ask_close")


@dataclass(frozen=True)
class Strategy:
    """One template family with one parameter set and one stop-loss/take-profit pair.

    ``strategy_id`` is the first 16 hex digits of the SHA-1 of the JSON of family, params
    (sorted keys) and the two pip distances, so it is the same in every run and process.
    """

    family: str
    params: Mapping[str, Any]
    stop_loss_pips: float
    take_profit_pips: float

    @property
    def params_json(self) -> str:
        """Parameters as compact JSON with sorted keys."""
        return params_to_json(self.params)

    @property
    def signal_key(self) -> tuple[str, str]:
        """Key of this strategy's signal array: (family, params_json)."""
        return (self.family, self.params_json)

    @property
    def strategy_id(self) -> str:
        """Stable 16-hex-digit id of family, params, stop-loss and take-profit."""
        payload = json.dumps(
            {
                "family": self.family,
                "params": dict(self.params),
                "stop_loss_pips": float(self.stop_loss_pips),
                "take_profit_pips": float(self.take_profit_pips),
            },
            sort_keys=True,
            separators=(",", ":"),
        )
        # The hash only names the strategy; it guards nothing.
        return hashlib.sha1(payload.encode(), usedforsecurity=False).hexdigest()[:16]


def params_to_json(params: Mapping[str, Any]) -> str:
    """Return parameters as compact JSON with sorted keys (tuples become lists)."""
    return json.dumps(dict(params), sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class SignalSegment:
    """Patterns and regimes for the bars whose open lies in ``[start_ns, end_ns)``.

    ``patterns_doc`` and ``regimes`` were chosen on data before ``start_ns`` (for the holdout
    segment, on the whole training part). Either may be None when there are none for this span.
    """

    start_ns: int
    end_ns: int
    patterns_doc: Mapping[str, Any] | None
    regimes: pd.DataFrame | None


@dataclass
class SignalContext:
    """Inputs of the signal functions for one pair and one timeframe, with a signal cache.

    ``features`` must be at the bars' timeframe and is matched to bars by ``timestamp``.
    ``regimes`` (``timestamp``, ``regime_name``) may be at a coarser timeframe
    ``regimes_timeframe_min``: a bar gets the regime of the last regime bar that closed at or
    before its own close. ``patterns_doc`` is the train-selected pattern document read by
    ``fxresearch.patterns.apply_patterns``.

    ``segments``, when set, replaces ``patterns_doc`` and ``regimes`` for the families that
    read them: each bar takes them from the segment containing its open, and bars outside
    every segment get no signal from those families. ``patterns_doc`` and ``regimes`` still
    decide which families are available.
    """

    bars: pd.DataFrame
    timeframe_min: int
    instrument: Instrument
    features: pd.DataFrame | None = None
    regimes: pd.DataFrame | None = None
    regimes_timeframe_min: int | None = None
    patterns_doc: Mapping[str, Any] | None = None
    segments: tuple[SignalSegment, ...] | None = None
    cache: dict[tuple[str, str], np.ndarray] = field(default_factory=dict, repr=False)
    # Mid prices and aligned tables shared by the signal functions.
    derived: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        missing = [name for name in ("timestamp", *_PRICE_COLUMNS) if name not in self.bars.columns]
        if missing:
            raise ValueError(f"Bars are missing columns {missing}; build them with fxresearch.bars.build_bars.")
        if not np.issubdtype(self.bars["timestamp"].to_numpy().dtype, np.integer):
            raise ValueError(
                f"Bar column 'timestamp' must be int64 nanoseconds UTC, got dtype "
                f"{self.bars['timestamp'].dtype}. Read bar files with fxresearch.bars.read_bars."
            )
        if self.timeframe_min <= 0:
            raise ValueError(f"timeframe_min must be a positive number of minutes, got {self.timeframe_min}")
        if self.regimes is not None and self.regimes_timeframe_min is None:
            raise ValueError("regimes_timeframe_min is required with regimes; pass config.regimes.timeframe_min.")
        if self.segments is not None:
            _check_segments(self.segments, self.regimes_timeframe_min)
            if (np.diff(self.open_ns()) <= 0).any():
                raise ValueError("Bars must be in strictly increasing time order to be split into signal "
                                 "segments; sort them by timestamp and drop duplicates.")

    def available(self) -> set[str]:
        """Return the inputs this context contains: bars always, and features, regimes and patterns when set."""
        inputs = {INPUT_BARS}
        if self.features is not None and len(self.features):
            inputs.add(INPUT_FEATURES)
        if self.regimes is not None and len(self.regimes):
            inputs.add(INPUT_REGIMES)
        if (self.patterns_doc is not None and self.features is not None
                and _has_patterns(self.patterns_doc, self.timeframe_min)):
            inputs.add(INPUT_PATTERNS)
        return inputs

    def mid(self, name: str) -> np.ndarray:
        """Return the mid of a price field (``high``, ``low`` or ``close``) per bar."""
        key = f"mid_{name}"
        if key not in self.derived:
            bid = self.bars[f"bid_{name}"].to_numpy(dtype=np.float64)
            ask = self.bars[f"ask_{name}"].to_numpy(dtype=np.float64)
            self.derived[key] = (bid + ask) / 2.0
        return self.derived[key]

    def open_ns(self) -> np.ndarray:
        """Return bar open times as int64 nanoseconds UTC."""
        return self.bars["timestamp"].to_numpy().astype(np.int64, copy=False)

    def features_on_bars(self) -> pd.DataFrame:
        """Return the features matched to the bars by ``timestamp``, one row per bar, NaN where missing."""
        if self.features is None:
            raise ValueError("This SignalContext has no features; require \"features\" to get them.")
        return _features_on_bars(self, self.features)

    def regime_names_on_bars(self) -> np.ndarray:
        """Return per bar the name of the last regime whose bar closed by the bar's close, or None."""
        if self.regimes is None:
            raise ValueError("This SignalContext has no regimes; require \"regimes\" to get them.")
        if self.regimes_timeframe_min is None:
            raise ValueError("This SignalContext has regimes but no regimes_timeframe_min; set the regime bar length.")
        return _regime_names_on_bars(self, self.regimes, self.regimes_timeframe_min)


def _check_segments(segments: tuple[SignalSegment, ...], regimes_timeframe_min: int | None) -> None:
    """Raise unless the segments are ordered, do not overlap and have a regime timeframe when needed."""
    previous_end: int | None = None
    for segment in segments:
        if not segment.start_ns < segment.end_ns:
            raise ValueError(f"Signal segment [{segment.start_ns}, {segment.end_ns}) is empty; "
                             f"start_ns must be before end_ns.")
        if previous_end is not None and segment.start_ns < previous_end:
            raise ValueError(f"Signal segment starting at {segment.start_ns} overlaps the previous one, "
                             f"which ends at {previous_end}; pass segments in time order without overlap.")
        if segment.regimes is not None and regimes_timeframe_min is None:
            raise ValueError("regimes_timeframe_min is required with segment regimes; "
                             "pass config.regimes.timeframe_min.")
        previous_end = segment.end_ns


def _segment_context(context: SignalContext, segment: SignalSegment, index: int) -> SignalContext:
    """Return the context of one segment: the parent's bars and features with the segment's inputs.

    Built once per segment and kept in ``context.derived``, so families without patterns or
    regimes that a segmented family calls (``ma_cross`` in ``regime_ma_cross``) are cached too.
    """
    children = context.derived.setdefault("segment_contexts", {})
    if index not in children:
        if context.features is not None:
            _features_on_bars(context, context.features)
        child = SignalContext(
            bars=context.bars, timeframe_min=context.timeframe_min, instrument=context.instrument,
            features=context.features, regimes=segment.regimes,
            regimes_timeframe_min=context.regimes_timeframe_min, patterns_doc=segment.patterns_doc,
        )
        # Mid prices and features on bars do not depend on the segment, so they are shared.
        for name in ("mid_high", "mid_low", "mid_close", "features_on_bars"):
            if name in context.derived:
                child.derived[name] = context.derived[name]
        children[index] = child
    return children[index]


def _segmented_signals(family: str, params: Mapping[str, Any], context: SignalContext,
                       segments: tuple[SignalSegment, ...], template: Template,
                       user_templates: Mapping[str, Template] | None) -> np.ndarray:
    """Compute a pattern or regime family per segment; each bar keeps its own segment's value."""
    open_ns = context.open_ns()
    signal = np.zeros(len(open_ns), dtype=np.int8)
    for index, segment in enumerate(segments):
        # Bars are in time order, so a segment's bars are one slice.
        first, stop = np.searchsorted(open_ns, [segment.start_ns, segment.end_ns], side="left")
        if first == stop:
            continue
        child = _segment_context(context, segment, index)
        # A segment without the inputs (no patterns mined before it, too few bars for regimes)
        # gives no signal, as a pair without them gives no strategies of the family.
        if not template.requires <= child.available():
            continue
        signal[first:stop] = compute_signals(family, params, child, user_templates)[first:stop]
    return signal


def _has_patterns(patterns_doc: Mapping[str, Any], timeframe_min: int) -> bool:
    """Return True when the document has patterns mined on bars of ``timeframe_min``."""
    patterns = patterns_doc.get("patterns") if isinstance(patterns_doc, Mapping) else None
    if not patterns:
        return False
    # Bin edges fitted on one timeframe's features do not fit another's.
    mined_on = patterns_doc.get("timeframe_min", timeframe_min)
    if mined_on != timeframe_min:
        logger.warning("Patterns were mined on %s-minute bars, not the search's %d-minute bars; "
                       "pattern_entry is skipped", mined_on, timeframe_min)
        return False
    return True


# ---------------------------------------------------------------------------------------------
# Indicators on mid prices. Each returns NaN during warm-up.


def _sma(values: np.ndarray, window: int) -> np.ndarray:
    return pd.Series(values).rolling(window).mean().to_numpy()


def _rsi(close: np.ndarray, window: int) -> np.ndarray:
    """Wilder RSI, 0..100, the same values as the ``rsi_*`` feature columns."""
    return wilder_rsi(pd.Series(close), window).to_numpy()


def _zscore(close: np.ndarray, window: int) -> np.ndarray:
    """(close - rolling mean) / rolling population std; NaN when the window is flat."""
    rolling = pd.Series(close).rolling(window)
    std = rolling.std(ddof=0)
    return ((pd.Series(close) - rolling.mean()) / std.where(std > 0)).to_numpy()


def _cross_up(values: np.ndarray, level: float | np.ndarray) -> np.ndarray:
    """True at t when values[t-1] < level and values[t] >= level (NaN never crosses)."""
    above = values >= level
    below = values < level
    out = np.zeros(len(values), dtype=bool)
    out[1:] = below[:-1] & above[1:]
    return out


def _cross_down(values: np.ndarray, level: float | np.ndarray) -> np.ndarray:
    """True at t when values[t-1] > level and values[t] <= level (NaN never crosses)."""
    above = values > level
    below = values <= level
    out = np.zeros(len(values), dtype=bool)
    out[1:] = above[:-1] & below[1:]
    return out


def _to_signal(long_mask: np.ndarray, short_mask: np.ndarray) -> np.ndarray:
    signal = np.zeros(len(long_mask), dtype=np.int8)
    signal[long_mask] = 1
    signal[short_mask] = -1
    # A bar that would be both long and short gets no signal.
    signal[long_mask & short_mask] = 0
    return signal


# ---------------------------------------------------------------------------------------------
# Signal functions: (context, **params) -> int8 per bar.


def ma_cross_signals(context: SignalContext, fast: int, slow: int) -> np.ndarray:
    """Signal where the fast SMA of the mid close crosses the slow SMA.

    Long on the bar where ``fast - slow`` turns positive after being zero or negative on the
    previous bar. Short where it turns negative after being zero or positive.
    """
    if not 0 < fast < slow:
        raise ValueError(f"ma_cross needs 0 < fast < slow, got fast={fast}, slow={slow}")
    close = context.mid("close")
    difference = _sma(close, fast) - _sma(close, slow)
    previous = np.r_[np.nan, difference[:-1]]
    long_mask = (previous <= 0) & (difference > 0)
    short_mask = (previous >= 0) & (difference < 0)
    return _to_signal(long_mask, short_mask)


def rsi_reversion_signals(context: SignalContext, window: int, lower: float, upper: float) -> np.ndarray:
    """Signal when the Wilder RSI of the mid close crosses back into the [lower, upper] band.

    Long on the bar where the RSI rises to ``lower`` or above after closing below it. Short
    where it falls to ``upper`` or below after closing above it.
    """
    if not 0 < lower < upper < 100:
        raise ValueError(f"rsi_reversion needs 0 < lower < upper < 100, got lower={lower}, upper={upper}")
    rsi = _rsi(context.mid("close"), window)
    return _to_signal(_cross_up(rsi, lower), _cross_down(rsi, upper))


def zscore_reversion_signals(context: SignalContext, window: int, entry_z: float) -> np.ndarray:
    """Signal when the rolling z-score of the mid close crosses back inside ±entry_z.

    The z-score is ``(close - mean) / std`` over ``window`` bars, population std. Long on the
    bar where it rises to ``-entry_z`` or above after closing below. Short where it falls to
    ``+entry_z`` or below after closing above.
    """
    if not entry_z > 0:
        raise ValueError(f"zscore_reversion needs entry_z > 0, got {entry_z}")
    zscore = _zscore(context.mid("close"), window)
    return _to_signal(_cross_up(zscore, -entry_z), _cross_down(zscore, entry_z))


def donchian_breakout_signals(context: SignalContext, lookback: int) -> np.ndarray:
    """Signal when the mid close breaks the high or low of the previous ``lookback`` bars.

    The channel on bar t is the max mid high and min mid low of bars t-lookback .. t-1, so
    bar t itself is not in it. Every bar that closes above the channel is a long signal and
    every bar below it a short, and the backtest ignores repeats while a trade is open.
    """
    if lookback < 1:
        raise ValueError(f"donchian_breakout needs lookback >= 1, got {lookback}")
    close = context.mid("close")
    channel_high = pd.Series(context.mid("high")).shift(1).rolling(lookback).max().to_numpy()
    channel_low = pd.Series(context.mid("low")).shift(1).rolling(lookback).min().to_numpy()
    return _to_signal(close > channel_high, close < channel_low)


def session_breakout_signals(context: SignalContext, buffer_pips: float) -> np.ndarray:
    """Signal when a London-session bar closes beyond the day's Tokyo-session range.

    Sessions use local hours from ``fxresearch.features.SESSIONS`` (Tokyo 09:00-18:00,
    London 08:00-17:00, with daylight saving). The Tokyo session is always 00:00-09:00 UTC,
    so the day is the UTC date. The range is the max mid high and min mid
    low of the bars that open and close inside the Tokyo session. It is known only at the
    session's end, so a bar can signal only when it opens at or after that end and opens
    inside the London session. Long on the first such bar whose mid close is above the range
    high plus ``buffer_pips``, and again each time the close comes back above after falling
    below. Short mirrors this below the range low minus ``buffer_pips``.
    """
    if buffer_pips < 0:
        raise ValueError(f"session_breakout needs buffer_pips >= 0, got {buffer_pips}")
    open_ns = context.open_ns()
    close_ns = open_ns + np.int64(context.timeframe_min * NS_PER_MINUTE)
    day = open_ns // NS_PER_DAY
    day_start_ns = day * NS_PER_DAY

    _, tokyo_first_hour, tokyo_end_hour = SESSIONS["session_tokyo"]
    tokyo_start_ns = day_start_ns + (tokyo_first_hour - TOKYO_UTC_OFFSET_HOURS) * 60 * NS_PER_MINUTE
    tokyo_end_ns = day_start_ns + (tokyo_end_hour - TOKYO_UTC_OFFSET_HOURS) * 60 * NS_PER_MINUTE
    in_tokyo = (open_ns >= tokyo_start_ns) & (close_ns <= tokyo_end_ns)

    high = pd.Series(np.where(in_tokyo, context.mid("high"), np.nan))
    low = pd.Series(np.where(in_tokyo, context.mid("low"), np.nan))
    range_high = high.groupby(day).transform("max").to_numpy()
    range_low = low.groupby(day).transform("min").to_numpy()

    london_zone, london_first_hour, london_end_hour = SESSIONS["session_london"]
    london_hour = to_local(open_ns, london_zone).hour.to_numpy()
    in_london = (london_hour >= london_first_hour) & (london_hour < london_end_hour)
    eligible = in_london & (open_ns >= tokyo_end_ns) & np.isfinite(range_high)

    buffer = buffer_pips * context.instrument.pip_size
    close = context.mid("close")
    above = eligible & (close > range_high + buffer)
    below = eligible & (close < range_low - buffer)

    # A breakout is a new event only when the previous eligible bar of the same day was not
    # already beyond the level.
    same_day_before = np.zeros(len(open_ns), dtype=bool)
    same_day_before[1:] = eligible[:-1] & eligible[1:] & (day[1:] == day[:-1])
    was_above = np.r_[False, above[:-1]] & same_day_before
    was_below = np.r_[False, below[:-1]] & same_day_before
    return _to_signal(above & ~was_above, below & ~was_below)


def pattern_entry_signals(context: SignalContext) -> np.ndarray:
    """Signal from the train-selected patterns: ``fxresearch.patterns.apply_patterns`` per bar.

    Features are matched to bars by ``timestamp``; bars without a feature row get no signal.
    """
    from fxresearch.patterns import apply_patterns

    if context.features is None or context.patterns_doc is None:
        raise ValueError("pattern_entry needs features and a patterns document in the SignalContext.")
    features = _features_on_bars(context, context.features)
    signal = np.asarray(apply_patterns(features, dict(context.patterns_doc)), dtype=np.int8)
    if signal.shape != (len(context.bars),):
        raise ValueError(
            f"apply_patterns returned shape {signal.shape}, expected ({len(context.bars)},), one value per bar."
        )
    return signal


def regime_ma_cross_signals(context: SignalContext, fast: int, slow: int, regime: str) -> np.ndarray:
    """``ma_cross`` signals kept only on bars whose current regime name contains ``regime``.

    The current regime of a bar is that of the last regime bar that closed at or before the
    bar's close, so a coarser regime timeframe never leaks a later label.
    """
    if context.regimes is None or context.regimes_timeframe_min is None:
        raise ValueError("regime_ma_cross needs regimes and regimes_timeframe_min in the SignalContext.")
    names = _regime_names_on_bars(context, context.regimes, context.regimes_timeframe_min)
    allowed = np.array([isinstance(name, str) and regime in name for name in names], dtype=bool)
    signal = compute_signals("ma_cross", {"fast": fast, "slow": slow}, context).copy()
    signal[~allowed] = 0
    return signal


def _features_on_bars(context: SignalContext, features: pd.DataFrame) -> pd.DataFrame:
    """Return the features reindexed to the bars, one row per bar in bar order."""
    key = "features_on_bars"
    if key not in context.derived:
        timestamp = features["timestamp"].to_numpy()
        if not np.issubdtype(timestamp.dtype, np.integer):
            raise ValueError(
                f"Feature column 'timestamp' must be int64 nanoseconds UTC, got dtype {timestamp.dtype}."
            )
        aligned = features.set_index(timestamp.astype(np.int64)).drop(columns="timestamp")
        aligned = aligned[~aligned.index.duplicated(keep="last")].reindex(context.open_ns())
        aligned.insert(0, "timestamp", context.open_ns())
        context.derived[key] = aligned.reset_index(drop=True)
    return context.derived[key]


def _regime_names_on_bars(context: SignalContext, regimes: pd.DataFrame, regimes_timeframe_min: int) -> np.ndarray:
    """Return, per bar, the name of the last regime whose bar closed by the bar's close; None before the first."""
    key = "regime_names_on_bars"
    if key not in context.derived:
        if "regime_name" not in regimes.columns or "timestamp" not in regimes.columns:
            raise ValueError(
                f"Regimes table needs columns 'timestamp' and 'regime_name', got {list(regimes.columns)}."
            )
        regime_open = regimes["timestamp"].to_numpy()
        if not np.issubdtype(regime_open.dtype, np.integer):
            raise ValueError(f"Regime column 'timestamp' must be int64 nanoseconds UTC, got {regime_open.dtype}.")
        order = np.argsort(regime_open, kind="stable")
        regime_close = regime_open[order].astype(np.int64) + int(regimes_timeframe_min) * NS_PER_MINUTE
        names = regimes["regime_name"].to_numpy(dtype=object)[order]
        bar_close = context.open_ns() + np.int64(context.timeframe_min * NS_PER_MINUTE)
        last = np.searchsorted(regime_close, bar_close, side="right") - 1
        on_bars = np.full(len(last), None, dtype=object)
        on_bars[last >= 0] = names[last[last >= 0]]
        context.derived[key] = on_bars
    return context.derived[key]


# ---------------------------------------------------------------------------------------------
# Registry and strategy list.


class Template(NamedTuple):
    """A family's signal function, its parameter grid, the inputs it needs and, for a user template, its file."""

    signal: Callable[..., np.ndarray]
    grid: tuple[dict[str, Any], ...]
    requires: frozenset[str]
    source: str = ""


def _grid(**values: Iterable[Any]) -> list[dict[str, Any]]:
    names = list(values)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*values.values())]


_MA_PAIRS = [
    {"fast": fast, "slow": slow}
    for fast in (3, 5, 8, 10, 15, 20, 30, 50)
    for slow in (10, 20, 30, 50, 100, 150, 200)
    if fast < slow
]
_RSI_BANDS = ((15.0, 85.0), (20.0, 80.0), (25.0, 75.0), (30.0, 70.0), (35.0, 65.0))

TEMPLATES: dict[str, Template] = {
    "ma_cross": Template(ma_cross_signals, tuple(_MA_PAIRS), frozenset({INPUT_BARS})),
    "rsi_reversion": Template(
        rsi_reversion_signals,
        tuple({"window": window, "lower": lower, "upper": upper}
              for window in (7, 10, 14, 21, 28) for lower, upper in _RSI_BANDS),
        frozenset({INPUT_BARS}),
    ),
    "zscore_reversion": Template(
        zscore_reversion_signals,
        tuple(_grid(window=(10, 20, 30, 50, 100, 200), entry_z=(1.0, 1.5, 2.0, 2.5, 3.0))),
        frozenset({INPUT_BARS}),
    ),
    "donchian_breakout": Template(
        donchian_breakout_signals,
        tuple(_grid(lookback=(10, 15, 20, 30, 40, 50, 75, 100, 150, 200))),
        frozenset({INPUT_BARS}),
    ),
    "session_breakout": Template(
        session_breakout_signals,
        tuple(_grid(buffer_pips=(0.0, 2.0, 5.0, 10.0))),
        frozenset({INPUT_BARS}),
    ),
    "pattern_entry": Template(pattern_entry_signals, ({},), frozenset({INPUT_BARS, INPUT_FEATURES, INPUT_PATTERNS})),
    "regime_ma_cross": Template(
        regime_ma_cross_signals,
        tuple({**pair, "regime": token} for pair in _MA_PAIRS for token in REGIME_TOKENS),
        frozenset({INPUT_BARS, INPUT_REGIMES}),
    ),
}


def generate_strategies(search: SearchConfig, available: set[str],
                        user_templates: Mapping[str, Template] | None = None) -> list[Strategy]:
    """Return every family x parameter set x (stop-loss, take-profit) pair of the search config.

    The families are those in ``search.families``, then every user template (from
    ``fxresearch.user_templates.load_user_templates``) not listed there, in the mapping's
    order. Families whose inputs are not all in ``available`` are skipped with a log message.
    The order is stable: family order, grid order, then ``search.sl_tp_sets`` order.

    Raises
    ------
    ValueError
        When a family name is unknown or a stop-loss or take-profit is not positive.
    """
    templates = _all_templates(user_templates)
    unknown = [family for family in search.families if family not in templates]
    if unknown:
        raise ValueError(
            f"Unknown strategy families {unknown} in search.families; known: {sorted(templates)}."
        )
    for stop_loss_pips, take_profit_pips in search.sl_tp_sets:
        if not (stop_loss_pips > 0 and take_profit_pips > 0):
            raise ValueError(
                f"search.sl_tp_sets entry ({stop_loss_pips}, {take_profit_pips}) must have a positive "
                f"stop-loss and take-profit in pips."
            )

    families = list(search.families) + [name for name in (user_templates or {}) if name not in search.families]
    strategies: list[Strategy] = []
    for family in families:
        template = templates[family]
        missing = template.requires - set(available)
        if missing:
            logger.info("Skipping strategy family %s: inputs %s are not available", family, sorted(missing))
            continue
        for params in template.grid:
            for stop_loss_pips, take_profit_pips in search.sl_tp_sets:
                strategies.append(Strategy(family, dict(params), float(stop_loss_pips), float(take_profit_pips)))
    return strategies


def compute_signals(family: str, params: Mapping[str, Any], context: SignalContext,
                    user_templates: Mapping[str, Template] | None = None) -> np.ndarray:
    """Return the int8 signal per bar of one family and parameter set, cached in ``context``.

    ``family`` is a built-in family or a key of ``user_templates``. The returned array is
    shared with the cache; treat it as read-only.

    Raises
    ------
    ValueError
        For an unknown family, or for a user template whose output is not one integer -1, 0
        or +1 per bar. The message names the template's file.
    """
    templates = _all_templates(user_templates)
    if family not in templates:
        raise ValueError(f"Unknown strategy family {family!r}; known: {sorted(templates)}.")
    key = (family, params_to_json(params))
    cached = context.cache.get(key)
    if cached is None:
        template = templates[family]
        if context.segments is not None and template.requires & _SEGMENTED_INPUTS:
            cached = _segmented_signals(family, params, context, context.segments, template, user_templates)
            cached.setflags(write=False)
            context.cache[key] = cached
            return cached
        try:
            output = template.signal(context, **params)
        except Exception as exc:
            if not template.source:
                raise
            raise RuntimeError(
                f"Template {family} in {template.source} raised {type(exc).__name__}: {exc} "
                f"(params {params_to_json(params)}); fix the template's signals function"
            ) from exc
        if template.source:
            cached = check_signal_output(output, len(context.bars), f"Template {family} in {template.source}")
        else:
            cached = np.ascontiguousarray(output, dtype=np.int8)
        if cached.shape != (len(context.bars),):
            raise ValueError(f"Family {family} returned {cached.shape} signals for {len(context.bars)} bars.")
        cached.setflags(write=False)
        context.cache[key] = cached
    return cached


def check_signal_output(output: Any, n_bars: int, label: str) -> np.ndarray:
    """Return ``output`` as a contiguous int8 array after checking it is one -1, 0 or +1 per bar.

    Raises
    ------
    ValueError
        Starting with ``label`` when the output is not an integer numpy array of shape ``(n_bars,)``
        holding only -1, 0 and +1.
    """
    if not isinstance(output, np.ndarray):
        raise ValueError(f"{label} returned {type(output).__name__}; return a numpy array of int8, one value per bar.")
    if output.shape != (n_bars,):
        raise ValueError(f"{label} returned shape {output.shape} for {n_bars} bars; return shape ({n_bars},).")
    if not np.issubdtype(output.dtype, np.integer):
        raise ValueError(f"{label} returned dtype {output.dtype}; return integers, e.g. with .astype(np.int8).")
    bad = np.flatnonzero((output < -1) | (output > 1))
    if len(bad):
        raise ValueError(
            f"{label} returned {output[bad[0]].item()} at bar {bad[0]}; allowed values are -1, 0 and +1."
        )
    return np.ascontiguousarray(output, dtype=np.int8)


def _all_templates(user_templates: Mapping[str, Template] | None) -> Mapping[str, Template]:
    if not user_templates:
        return TEMPLATES
    clashes = sorted(set(user_templates) & set(TEMPLATES))
    if clashes:
        raise ValueError(f"User templates {clashes} have the names of built-in families; rename them.")
    return {**TEMPLATES, **user_templates}

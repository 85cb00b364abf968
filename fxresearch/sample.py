"""Seeded synthetic FX ticks: the built-in sample set and the benchmark year.

Every file written here is labelled synthetic in its parquet schema metadata
(``synthetic = "true"``, ``generator = "fxresearch.sample"``, ``seed``, ``no_edge``), so no
result computed on it can be mistaken for one on market data.

The model, per pair:

1. **Minute grid.** Each UTC minute of the range gets a deterministic activity level from
   the Sydney, Tokyo, London and New York sessions in their own local time (IANA zones, so
   daylight saving moves them). Activity peaks in the London/New York overlap, is lower in
   Asia and lowest in the hour after the 17:00 New York rollover. Minutes from Friday 17:00
   to Sunday 17:00 New York time are closed and get no ticks.
2. **Arrivals.** Tick counts per minute are Poisson with mean activity times
   ``ticks_per_hour / 60``. Each tick gets a uniform millisecond inside its minute, so the
   arrivals form a Poisson process with a piecewise-constant rate. A few ticks share a
   millisecond, as in vendor data.
3. **Mid price.** The mid lives on the half-point grid (a point is one unit of the last
   quoted decimal). Each tick adds ``rint(sigma * t)`` half-points, where ``t`` is an
   independent Student-t draw (5 degrees of freedom, unit variance). The rounding is
   symmetric, so every increment has zero mean given the past and the mid is a martingale
   with no drift, no mean reversion and no bid-ask bounce. ``sigma`` is fixed per pair so
   that 24 trading hours have the pair's typical daily volatility, whatever the tick rate.
   The first tick after a weekend adds one more independent, zero-mean normal move (the
   reopen gap, about a sixth of a daily move).
4. **Spread.** A per-pair spread in pips, widened where activity is low, multiplied by a
   sharp spike that decays over the hour after the 17:00 New York rollover (and a little
   more after the Sunday reopen), with independent log-normal noise per tick. It is
   rounded to whole points, at least one point, with the parity of the mid in half-points,
   so that bid and ask sit exactly on the price grid and ``(bid + ask) / 2`` is exactly the
   martingale mid. That parity rule moves the spread by at most one point.

Default mode adds realistic features that carry no directional edge. A log-volatility
process (two AR(1) components, half-lives of 30 minutes and one day) scales the per-tick
sigma, the tick rate and the spread together, so volatility clusters and busy times are
volatile. Each trading day also gets a random activity level. Increments still have zero
mean given the past, so direction is unpredictable, but their size is predictable.

``no_edge=True`` keeps steps 1–4 without the random multipliers of default mode. Arrivals
are Poisson with the deterministic seasonal rate only. Every mid increment is independent,
symmetric and zero-mean with the same variance, except the reopen increment, which has its
own fixed variance. Spreads are the deterministic seasonal spread times independent noise,
independent of the mid except for the one-point parity rule. The past therefore predicts
neither the direction nor the size of the next move, so a strategy that looks profitable
on this data is overfitting or has a bug.

Not modelled in either mode: holidays, news jumps, trends, correlation between pairs,
the leverage effect, quote revisions and the negative autocorrelation of real tick-by-tick
mid changes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from scipy.signal import lfilter

from fxresearch.artifacts import write_parquet_atomic
from fxresearch.config import SampleConfig
from fxresearch.instruments import Instrument, get_instrument
from fxresearch.timeutil import LONDON, NEW_YORK, NS_PER_DAY, NS_PER_MINUTE, TOKYO, index_to_ns, ns_to_datetime

logger = logging.getLogger(__name__)

GENERATOR_NAME = "fxresearch.sample"
TICK_SCHEMA = pa.schema([
    ("timestamp", pa.timestamp("ns", tz="UTC")),
    ("bid", pa.float64()),
    ("ask", pa.float64()),
])

SYDNEY = "Australia/Sydney"
NS_PER_HOUR = 60 * NS_PER_MINUTE
NS_PER_MS = 1_000_000
MINUTES_PER_DAY = 1440
MINUTES_PER_CHUNK = 7 * MINUTES_PER_DAY
ROLLOVER_HOUR_NY = 17

# Value of one unit of each currency or metal in US dollars, early-2025 levels. Pair levels
# are cross rates of these, so EURUSD starts at 1.08, USDJPY at 150 and XAUUSD at 2000.
_USD_VALUE = {
    "USD": 1.0, "EUR": 1.08, "GBP": 1.27, "AUD": 0.66, "NZD": 0.60, "CAD": 1 / 1.36,
    "CHF": 1 / 0.88, "JPY": 1 / 150.0, "NOK": 1 / 10.9, "SEK": 1 / 10.7, "SGD": 1 / 1.35,
    "HKD": 1 / 7.8, "MXN": 1 / 19.0, "ZAR": 1 / 18.5, "TRY": 1 / 35.0, "PLN": 1 / 4.0,
    "CZK": 1 / 23.5, "HUF": 1 / 390.0, "DKK": 1 / 6.9, "CNH": 1 / 7.25,
    "XAU": 2000.0, "XAG": 24.0, "XPT": 950.0, "XPD": 1000.0,
}
_G10 = {"USD", "EUR", "GBP", "AUD", "NZD", "CAD", "CHF", "JPY", "NOK", "SEK"}
_ASIAN = {"JPY", "AUD", "NZD", "SGD", "HKD", "CNH"}

# Spread in pips in the London/New York overlap, before noise. Other G10 crosses get
# 1.2 pips, other currency pairs 10 pips.
_SPREAD_PIPS = {
    "EURUSD": 0.4, "USDJPY": 0.5, "GBPUSD": 0.7, "AUDUSD": 0.5, "NZDUSD": 0.8,
    "USDCAD": 0.8, "USDCHF": 0.8, "EURGBP": 0.8, "EURJPY": 0.9, "EURCHF": 1.0,
    "GBPJPY": 1.5, "AUDJPY": 1.0, "XAUUSD": 25.0, "XAGUSD": 25.0,
}
# Standard deviation of a 24-hour mid change as a fraction of the price (about 7 %
# a year for EURUSD). Other currency pairs get 0.6 %, metals their own value.
_DAILY_VOLATILITY = {
    "EURUSD": 0.0045, "GBPUSD": 0.0050, "USDJPY": 0.0060, "AUDUSD": 0.0060,
    "NZDUSD": 0.0065, "USDCAD": 0.0040, "USDCHF": 0.0045, "EURGBP": 0.0035,
    "EURJPY": 0.0065, "GBPJPY": 0.0070, "AUDJPY": 0.0080, "EURCHF": 0.0035,
    "XAUUSD": 0.0100, "XAGUSD": 0.0160,
}

# Trading sessions: (zone, local open hour, local close hour, activity weight, is Asian).
_SESSIONS = (
    (SYDNEY, 7.0, 16.0, 0.12, True),
    (TOKYO, 8.0, 17.0, 0.28, True),
    (LONDON, 7.0, 16.5, 0.55, False),
    (NEW_YORK, 8.0, 17.0, 0.45, False),
)
_BASE_ACTIVITY = 0.06
# Activity in the London/New York overlap, used to scale the busiest session to 1.
_PEAK_ACTIVITY = _BASE_ACTIVITY + 0.55 + 0.45
_SESSION_RAMP_HOURS = 0.25

_T_DEGREES_OF_FREEDOM = 5.0
_REOPEN_GAP_DAILY_FRACTION = 0.15
_SPREAD_NOISE_SD = 0.25

# Log-volatility components: (half-life in minutes, stationary standard deviation).
_LOG_VOL_COMPONENTS = ((30.0, 0.30), (MINUTES_PER_DAY, 0.35))
# Loadings of the log-volatility on the tick rate and on the spread.
_ACTIVITY_VOL_LOADING = 0.8
_SPREAD_VOL_LOADING = 0.5
_DAY_ACTIVITY_SD = 0.15


@dataclass(frozen=True)
class PairProfile:
    """Market levels used to simulate one symbol."""

    level: float
    # Standard deviation of a 24-hour mid change, as a fraction of the level.
    daily_volatility: float
    # Spread in the London/New York overlap, in pips.
    spread_pips: float
    # Multiplier on the Sydney and Tokyo session weights (higher for JPY, AUD and NZD).
    asia_weight: float


@dataclass(frozen=True)
class _MinuteGrid:
    """Per-minute inputs of the tick model, from ``start_ns`` (a whole UTC minute)."""

    start_ns: int
    expected_ticks: np.ndarray   # deterministic Poisson mean per minute, 0 when closed
    activity_noise: np.ndarray   # random multiplier of the tick rate (1.0 in no_edge mode)
    sigma_scale: np.ndarray      # random multiplier of the per-tick sigma (1.0 in no_edge mode)
    spread_factor: np.ndarray    # multiplier of the overlap spread, noise excluded
    reopen_count: np.ndarray     # number of weekend reopens up to and including the minute


def pair_profile(symbol: str, instrument: Instrument | None = None) -> PairProfile:
    """Return the start level, daily volatility, spread and Asian weight for a symbol.

    Levels are cross rates of early-2025 US-dollar values. A symbol whose currencies are not
    in that table gets a level of 1.0, a logged warning and the default volatility and spread.
    """
    symbol = symbol.upper()
    if instrument is None:
        instrument = get_instrument(symbol)
    base, quote = instrument.base.upper(), instrument.quote.upper()

    if base in _USD_VALUE and quote in _USD_VALUE:
        level = _USD_VALUE[base] / _USD_VALUE[quote]
    else:
        level = 1.0
        logger.warning("No price level is known for %s, so its synthetic ticks start at 1.0", symbol)

    if symbol in _SPREAD_PIPS:
        spread_pips = _SPREAD_PIPS[symbol]
    elif base in _G10 and quote in _G10:
        spread_pips = 1.2
    else:
        spread_pips = 10.0

    daily_volatility = _DAILY_VOLATILITY.get(symbol, 0.006)
    asia_weight = 1.6 if (base in _ASIAN or quote in _ASIAN) else 1.0
    return PairProfile(level, daily_volatility, spread_pips, asia_weight)


def pair_seed(seed: int, symbol: str) -> np.random.SeedSequence:
    """Derive a pair's seed sequence from the base seed and the symbol (stable across runs)."""
    symbol_key = int.from_bytes(hashlib.blake2b(symbol.upper().encode(), digest_size=4).digest(), "big")
    return np.random.SeedSequence([int(seed), symbol_key])


def sample_start_ns(year: int) -> int:
    """Return the first Sunday 17:00 New York reopen on or after 2 January of ``year``, in UTC ns.

    The search starts on 2 January so that the sample never opens on New Year's Day.
    """
    day = pd.Timestamp(year=year, month=1, day=2)
    day += pd.Timedelta(days=(6 - day.dayofweek) % 7)
    reopen = pd.Timestamp(year=day.year, month=day.month, day=day.day, hour=ROLLOVER_HOUR_NY, tz=NEW_YORK)
    return int(reopen.tz_convert("UTC").as_unit("ns").value)


def sample_end_ns(start_ns: int, weeks: int) -> int:
    """Return ``weeks`` weeks after ``start_ns`` in New York wall-clock time, in UTC ns."""
    start = pd.Timestamp(start_ns, unit="ns", tz="UTC").tz_convert(NEW_YORK)
    end = start + pd.DateOffset(days=7 * weeks)
    return int(end.tz_convert("UTC").as_unit("ns").value)


def generate_pair_ticks(symbol: str, start_ns: int, end_ns: int, seed: int, ticks_per_hour: float,
                        no_edge: bool = False, instrument: Instrument | None = None) -> pd.DataFrame:
    """Generate synthetic bid/ask ticks for one symbol between two UTC times.

    Parameters
    ----------
    symbol : str
        Pair such as ``"EURUSD"``; sets the price level, volatility and spread.
    start_ns, end_ns : int
        Half-open range ``[start_ns, end_ns)`` in UTC nanoseconds.
    seed : int
        Base seed. The pair's own seed is derived from it and the symbol, so pairs differ and
        the same arguments always return identical ticks.
    ticks_per_hour : float
        Mean tick rate in the London/New York overlap. Other sessions are slower. The
        per-tick volatility is scaled so that the hourly volatility does not depend on it.
    no_edge : bool
        Simulate the mid as independent, identically distributed increments (see the
        module docstring for exactly what remains).
    instrument : Instrument, optional
        Pip size and precision; looked up with ``get_instrument(symbol)`` when omitted.

    Returns
    -------
    pd.DataFrame
        ``timestamp`` (datetime64[ns, UTC], sorted, millisecond resolution), ``bid`` and
        ``ask`` (float64 on the instrument's price grid, ``ask > bid > 0``). No ticks fall
        between Friday 17:00 and Sunday 17:00 New York time.

    Raises
    ------
    ValueError
        When the range is empty or ``ticks_per_hour`` is not positive.
    UnknownInstrumentError
        When ``instrument`` is omitted and the symbol is not in the instrument table.
    """
    timestamps, bids, asks = [], [], []
    for chunk_ns, chunk_bid, chunk_ask in _iter_tick_chunks(symbol, start_ns, end_ns, seed, ticks_per_hour,
                                                            no_edge, instrument):
        timestamps.append(chunk_ns)
        bids.append(chunk_bid)
        asks.append(chunk_ask)
    timestamp_ns = np.concatenate(timestamps) if timestamps else np.empty(0, np.int64)
    return pd.DataFrame({
        "timestamp": ns_to_datetime(timestamp_ns),
        "bid": np.concatenate(bids) if bids else np.empty(0),
        "ask": np.concatenate(asks) if asks else np.empty(0),
    })


def expected_tick_count(symbol: str, start_ns: int, end_ns: int, ticks_per_hour: float,
                        instrument: Instrument | None = None) -> float:
    """Return the expected number of ticks ``generate_pair_ticks`` produces for a range.

    The random activity multipliers of default mode have mean 1, so the count is the same in
    both modes.
    """
    instrument = instrument or get_instrument(symbol)
    profile = pair_profile(symbol, instrument)
    grid = _build_minute_grid(start_ns, end_ns, profile, float(ticks_per_hour), np.random.default_rng(0),
                              no_edge=True)
    return float(grid.expected_ticks.sum())


def write_sample_set(folder: Path, sample_config: SampleConfig) -> list[Path]:
    """Write the built-in synthetic sample set, one ``PAIR_YEAR.parquet`` per pair.

    Each file contains ``sample_config.weeks`` weeks of ticks from the first Sunday reopen in
    January of ``sample_config.year`` (see ``sample_start_ns``), with the schema metadata
    ``synthetic``, ``generator``, ``seed`` and ``no_edge``. Existing files are replaced.

    Raises
    ------
    ValueError
        When ``weeks`` or ``ticks_per_hour`` is not positive or ``pairs`` is empty.
    """
    folder = Path(folder)
    if sample_config.weeks <= 0:
        raise ValueError(f"Invalid [sample] weeks = {sample_config.weeks}: it must be at least 1")
    if not sample_config.pairs:
        raise ValueError("Invalid [sample] pairs: the list is empty. List at least one symbol, "
                         "e.g. pairs = [\"EURUSD\"]")

    start_ns = sample_start_ns(sample_config.year)
    end_ns = sample_end_ns(start_ns, sample_config.weeks)
    written: list[Path] = []
    for symbol in sample_config.pairs:
        started = time.perf_counter()
        ticks = generate_pair_ticks(symbol, start_ns, end_ns, sample_config.seed, sample_config.ticks_per_hour,
                                    no_edge=sample_config.no_edge)
        path = folder / f"{symbol.upper()}_{sample_config.year}.parquet"
        table = pa.Table.from_pandas(ticks, schema=TICK_SCHEMA, preserve_index=False)
        write_parquet_atomic(path, table, metadata=_synthetic_metadata(
            symbol, sample_config.seed, sample_config.no_edge, sample_config.ticks_per_hour, start_ns, end_ns))
        logger.info("Wrote %s: %d synthetic %s ticks from %s to %s (seed %d, no_edge %s) in %.1f s",
                    path, len(ticks), symbol.upper(), ns_to_datetime([start_ns])[0], ns_to_datetime([end_ns])[0],
                    sample_config.seed, sample_config.no_edge, time.perf_counter() - started)
        written.append(path)
    return written


def write_benchmark_year(path: Path, symbol: str = "EURUSD", year: int = 2025, seed: int = SampleConfig.seed,
                         target_ticks: int = 15_000_000, no_edge: bool = False) -> int:
    """Write a calendar year of synthetic ticks, about ``target_ticks`` rows, and return the row count.

    The tick rate is calibrated so that the expected count over the year equals
    ``target_ticks``. The actual count differs by the Poisson and activity noise, a few
    percent. Each week is written as its own row group, so memory stays at about one
    week of ticks. The file is written under a temporary name and renamed into place.
    """
    path = Path(path)
    if target_ticks <= 0:
        raise ValueError(f"target_ticks must be positive, got {target_ticks}")
    instrument = get_instrument(symbol)
    start_ns = int(pd.Timestamp(year=year, month=1, day=1, tz="UTC").value)
    end_ns = int(pd.Timestamp(year=year + 1, month=1, day=1, tz="UTC").value)
    ticks_per_hour = target_ticks / expected_tick_count(symbol, start_ns, end_ns, 1.0, instrument)

    metadata = _synthetic_metadata(symbol, seed, no_edge, ticks_per_hour, start_ns, end_ns)
    schema = TICK_SCHEMA.with_metadata({k.encode(): v.encode() for k, v in metadata.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    rows = 0
    try:
        # Delta-encoded timestamps make the file about a third smaller than plain encoding.
        with pq.ParquetWriter(tmp, schema, compression="zstd", use_dictionary=["bid", "ask"],
                              column_encoding={"timestamp": "DELTA_BINARY_PACKED"}) as writer:
            for timestamp_ns, bid, ask in _iter_tick_chunks(symbol, start_ns, end_ns, seed, ticks_per_hour,
                                                            no_edge, instrument):
                writer.write_table(pa.Table.from_arrays([
                    pa.array(timestamp_ns, type=pa.int64()).cast(TICK_SCHEMA.field("timestamp").type),
                    pa.array(bid, type=pa.float64()),
                    pa.array(ask, type=pa.float64()),
                ], schema=schema))
                rows += len(timestamp_ns)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    logger.info("Wrote %s: %d synthetic %s ticks for %d at %.0f ticks/hour in the overlap",
                path, rows, symbol.upper(), year, ticks_per_hour)
    return rows


def _synthetic_metadata(symbol: str, seed: int, no_edge: bool, ticks_per_hour: float,
                        start_ns: int, end_ns: int) -> dict[str, str]:
    return {
        "synthetic": "true",
        "generator": GENERATOR_NAME,
        "seed": str(int(seed)),
        "no_edge": "true" if no_edge else "false",
        "symbol": symbol.upper(),
        "ticks_per_hour": f"{ticks_per_hour:g}",
        "start": ns_to_datetime([start_ns])[0].isoformat(),
        "end": ns_to_datetime([end_ns])[0].isoformat(),
    }


def _iter_tick_chunks(
    symbol: str, start_ns: int, end_ns: int, seed: int, ticks_per_hour: float, no_edge: bool,
    instrument: Instrument | None,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield ``(timestamp_ns, bid, ask)`` arrays, one week of the range at a time, in time order."""
    start_ns, end_ns = int(start_ns), int(end_ns)
    if end_ns <= start_ns:
        raise ValueError(f"Empty tick range for {symbol}: end_ns {end_ns} is not after start_ns {start_ns}")
    if not ticks_per_hour > 0:
        raise ValueError(f"ticks_per_hour must be positive, got {ticks_per_hour}")
    instrument = instrument or get_instrument(symbol)
    profile = pair_profile(symbol, instrument)
    seed_sequence = pair_seed(seed, symbol)
    grid_seed, chunk_seed = seed_sequence.spawn(2)
    grid = _build_minute_grid(start_ns, end_ns, profile, float(ticks_per_hour), np.random.default_rng(grid_seed),
                              no_edge)

    # Sigma is fixed for the whole range from the start level. Dividing the daily move by
    # sqrt(ticks per 24 trading hours) keeps the daily volatility the same at any tick rate.
    half_point = instrument.point_size / 2.0
    ticks_per_day = _reference_ticks_per_day(start_ns, profile, float(ticks_per_hour))
    daily_move_half_points = profile.level * profile.daily_volatility / half_point
    sigma_half_points = daily_move_half_points / np.sqrt(ticks_per_day)
    reopen_gap_half_points = _REOPEN_GAP_DAILY_FRACTION * daily_move_half_points
    spread_points = profile.spread_pips * instrument.points_per_pip
    t_scale = np.sqrt((_T_DEGREES_OF_FREEDOM - 2.0) / _T_DEGREES_OF_FREEDOM)

    mid_half_points = int(round(profile.level / half_point))
    previous_reopen_count: int | None = None
    n_minutes = len(grid.expected_ticks)
    chunk_seeds = chunk_seed.spawn((n_minutes + MINUTES_PER_CHUNK - 1) // MINUTES_PER_CHUNK)
    for chunk_index, first_minute in enumerate(range(0, n_minutes, MINUTES_PER_CHUNK)):
        rng = np.random.default_rng(chunk_seeds[chunk_index])
        minutes = slice(first_minute, min(first_minute + MINUTES_PER_CHUNK, n_minutes))

        # Arrivals: Poisson counts per minute, a uniform millisecond inside the minute.
        counts = rng.poisson(grid.expected_ticks[minutes] * grid.activity_noise[minutes])
        n_ticks = int(counts.sum())
        minute_of_tick = np.repeat(np.arange(minutes.start, minutes.stop, dtype=np.int64), counts)
        ms_since_grid = np.sort(minute_of_tick * 60_000 + rng.integers(0, 60_000, n_ticks))
        minute_of_tick = ms_since_grid // 60_000
        timestamp_ns = grid.start_ns + ms_since_grid * NS_PER_MS

        # Mid: symmetric rounding of a symmetric draw keeps every increment zero-mean.
        draws = rng.standard_t(_T_DEGREES_OF_FREEDOM, n_ticks) * t_scale
        steps = np.rint(sigma_half_points * grid.sigma_scale[minute_of_tick] * draws).astype(np.int64)

        # The first tick after each weekend reopen carries the weekend's move.
        tick_reopen_count = grid.reopen_count[minute_of_tick]
        if n_ticks:
            if previous_reopen_count is None:
                previous_reopen_count = int(tick_reopen_count[0])
            after_reopen = tick_reopen_count != np.concatenate(([previous_reopen_count], tick_reopen_count[:-1]))
            gap_draws = rng.standard_normal(int(after_reopen.sum()))
            steps[after_reopen] += np.rint(reopen_gap_half_points * gap_draws).astype(np.int64)
            previous_reopen_count = int(tick_reopen_count[-1])
        mid = mid_half_points + np.cumsum(steps)
        if n_ticks:
            mid_half_points = int(mid[-1])

        spread_noise = np.exp(_SPREAD_NOISE_SD * rng.standard_normal(n_ticks) - _SPREAD_NOISE_SD**2 / 2)
        target_spread = spread_points * grid.spread_factor[minute_of_tick] * spread_noise
        bid_points, ask_points = _quote_points(mid, target_spread)

        keep = (timestamp_ns >= start_ns) & (timestamp_ns < end_ns)
        if n_ticks and bid_points[keep].min(initial=1) <= 0:
            raise RuntimeError(f"Synthetic {symbol} mid fell to zero or below with seed {seed}. "
                               f"Use a shorter range or another seed.")
        # Dividing whole points by the exact power of ten gives the nearest float to the
        # quoted decimal price, so no further rounding is needed.
        scale = 10.0 ** instrument.price_precision
        yield timestamp_ns[keep], bid_points[keep] / scale, ask_points[keep] / scale


def _quote_points(mid_half_points: np.ndarray, target_spread_points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return bid and ask in whole points with ``(bid + ask) / 2`` equal to the mid exactly.

    ``ask - bid`` must have the parity of the mid in half-points, so the target spread is
    rounded to the nearest integer of that parity, at least 1 (odd) or 2 (even) points.
    """
    parity = np.mod(mid_half_points, 2)
    spread = 2 * np.rint((target_spread_points - parity) / 2.0).astype(np.int64) + parity
    spread = np.maximum(spread, 2 - parity)
    bid = (mid_half_points - spread) // 2
    return bid, bid + spread


def _build_minute_grid(start_ns: int, end_ns: int, profile: PairProfile, ticks_per_hour: float,
                       rng: np.random.Generator, no_edge: bool) -> _MinuteGrid:
    """Compute the deterministic session model and, outside no_edge mode, the random multipliers."""
    grid_start = start_ns - start_ns % NS_PER_MINUTE
    minute_ns = np.arange(grid_start, end_ns, NS_PER_MINUTE, dtype=np.int64)
    n_minutes = len(minute_ns)

    ny_hour, ny_weekday, ny_day = _local_clock(minute_ns, NEW_YORK)
    market_open = _market_open(ny_hour, ny_weekday)
    activity = _session_activity(minute_ns, profile) * _rollover_activity(ny_hour, ny_weekday)
    activity = np.where(market_open, activity, 0.0)
    expected_ticks = activity * ticks_per_hour / 60.0

    # Spreads widen as liquidity thins, then spike at the rollover.
    spread_factor = _rollover_spread(ny_hour, ny_weekday) / (0.35 + 0.65 * np.minimum(activity, 1.0))

    reopen = np.zeros(n_minutes, dtype=np.int64)
    reopen[1:] = market_open[1:] & ~market_open[:-1]
    reopen_count = np.cumsum(reopen)

    if no_edge:
        ones = np.ones(n_minutes)
        return _MinuteGrid(grid_start, expected_ticks, ones, ones, spread_factor, reopen_count)

    # Log-volatility h drives tick size, tick rate and spread. Each exponent is centred so
    # the multiplier has mean 1, and sigma_scale so that E[rate * sigma^2] stays unchanged.
    log_vol = _log_volatility(rng, n_minutes)
    log_vol_variance = sum(sd**2 for _, sd in _LOG_VOL_COMPONENTS)
    loading = _ACTIVITY_VOL_LOADING
    sigma_scale = np.exp(log_vol - (1.0 + loading) * log_vol_variance)
    day_index = ny_day + (ny_hour >= ROLLOVER_HOUR_NY)
    day_index -= day_index.min(initial=0)
    day_activity = np.exp(_DAY_ACTIVITY_SD * rng.standard_normal(int(day_index.max(initial=0)) + 1)
                          - _DAY_ACTIVITY_SD**2 / 2)
    activity_noise = np.exp(loading * log_vol - loading**2 * log_vol_variance / 2) * day_activity[day_index]
    spread_factor = spread_factor * np.exp(_SPREAD_VOL_LOADING * log_vol
                                           - _SPREAD_VOL_LOADING**2 * log_vol_variance / 2)
    return _MinuteGrid(grid_start, expected_ticks, activity_noise, sigma_scale, spread_factor, reopen_count)


def _reference_ticks_per_day(start_ns: int, profile: PairProfile, ticks_per_hour: float) -> float:
    """Return the mean expected ticks per 24 open hours over the week from ``start_ns``."""
    grid = _build_minute_grid(start_ns, start_ns + 7 * NS_PER_DAY, profile, ticks_per_hour,
                              np.random.default_rng(0), no_edge=True)
    open_minutes = grid.expected_ticks > 0
    return float(grid.expected_ticks[open_minutes].mean() * MINUTES_PER_DAY)


def _log_volatility(rng: np.random.Generator, n_minutes: int) -> np.ndarray:
    """Simulate the sum of stationary AR(1) log-volatility components, one value per minute."""
    log_vol = np.zeros(n_minutes)
    for half_life_minutes, stationary_sd in _LOG_VOL_COMPONENTS:
        phi = 0.5 ** (1.0 / half_life_minutes)
        shocks = rng.standard_normal(n_minutes) * stationary_sd * np.sqrt(1.0 - phi**2)
        if n_minutes:
            shocks[0] = rng.standard_normal() * stationary_sd
        log_vol += lfilter([1.0], [1.0, -phi], shocks)
    return log_vol


def _local_clock(utc_ns: np.ndarray, zone: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return local hour of day (fractional), weekday (Monday 0) and day number in ``zone``."""
    wall_ns = index_to_ns(ns_to_datetime(utc_ns).tz_convert(zone).tz_localize(None))
    day = wall_ns // NS_PER_DAY
    hour = (wall_ns - day * NS_PER_DAY) / NS_PER_HOUR
    # 1970-01-01 was a Thursday (weekday 3).
    weekday = (day + 3) % 7
    return hour, weekday, day


def _market_open(ny_hour: np.ndarray, ny_weekday: np.ndarray) -> np.ndarray:
    """Return True outside the weekend close, Friday 17:00 to Sunday 17:00 New York time."""
    closed = (((ny_weekday == 4) & (ny_hour >= ROLLOVER_HOUR_NY)) | (ny_weekday == 5)
              | ((ny_weekday == 6) & (ny_hour < ROLLOVER_HOUR_NY)))
    return ~closed


def _session_activity(minute_ns: np.ndarray, profile: PairProfile) -> np.ndarray:
    """Return tick activity from the four sessions, about 1.0 in the London/New York overlap."""
    activity = np.full(len(minute_ns), _BASE_ACTIVITY)
    for zone, open_hour, close_hour, weight, is_asian in _SESSIONS:
        hour, _, _ = _local_clock(minute_ns, zone)
        inside = (_logistic((hour - open_hour) / _SESSION_RAMP_HOURS)
                  * _logistic((close_hour - hour) / _SESSION_RAMP_HOURS))
        activity += weight * (profile.asia_weight if is_asian else 1.0) * inside
    return activity / _PEAK_ACTIVITY


def _rollover_activity(ny_hour: np.ndarray, ny_weekday: np.ndarray) -> np.ndarray:
    """Return the activity multiplier: a dip around the 17:00 rollover and a quiet Friday afternoon."""
    hours_since_rollover = np.mod(ny_hour - ROLLOVER_HOUR_NY, 24.0)
    hours_to_rollover = 24.0 - hours_since_rollover
    dip = 0.75 * np.exp(-hours_since_rollover / 0.6) + 0.5 * np.exp(-hours_to_rollover / 0.1)
    friday_afternoon = (ny_weekday == 4) & (ny_hour >= 12.0)
    fade = np.where(friday_afternoon, 1.0 - 0.5 * (ny_hour - 12.0) / 5.0, 1.0)
    return (1.0 - dip) * fade


def _rollover_spread(ny_hour: np.ndarray, ny_weekday: np.ndarray) -> np.ndarray:
    """Return the spread multiplier: a spike at the 17:00 rollover decaying over about an hour."""
    minutes_since_rollover = np.mod(ny_hour - ROLLOVER_HOUR_NY, 24.0) * 60.0
    minutes_to_rollover = MINUTES_PER_DAY - minutes_since_rollover
    spike = 6.0 * np.exp(-minutes_since_rollover / 25.0) + 1.0 * np.exp(-minutes_to_rollover / 3.0)
    # Liquidity returns slowly after the weekend, so the Sunday evening spread stays wider.
    sunday_evening = (ny_weekday == 6) & (ny_hour >= ROLLOVER_HOUR_NY)
    spike += np.where(sunday_evening, 1.0 * np.exp(-minutes_since_rollover / 90.0), 0.0)
    return 1.0 + spike


def _logistic(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))

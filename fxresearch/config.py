"""Typed configuration with documented defaults, loaded from an optional TOML file.

One ``Config`` object is built in the CLI and passed down explicitly. Every section is a
frozen dataclass so a pair process cannot change the settings of another. A TOML file only
needs the keys it changes; an unknown section or key is an error naming the file and key.

Example ``config.toml``::

    [split]
    train_fraction = 0.7

    [labels]
    timeframes_min = [5]

    [instruments.XAUEUR]
    pip_size = 0.01
    price_precision = 2
    base = "XAU"
    quote = "EUR"
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """Invalid configuration file or value."""


@dataclass(frozen=True)
class TicksConfig:
    """Tick validation settings."""

    # A pair fails when more than this fraction of rows is dropped as invalid.
    max_invalid_fraction: float = 0.01


@dataclass(frozen=True)
class BarsConfig:
    """Bar timeframes in minutes; each gets its own bid/ask OHLC table."""

    timeframes_min: tuple[int, ...] = (1, 5, 15, 30, 60)


@dataclass(frozen=True)
class SplitConfig:
    """Train/holdout split: the split time falls after this fraction of the pair's trading days."""

    train_fraction: float = 0.7

    def __post_init__(self) -> None:
        if not 0.0 < self.train_fraction < 1.0:
            raise ConfigError(
                f"[split] train_fraction = {self.train_fraction} must be between 0 and 1 "
                f"(exclusive), e.g. 0.7, so both the training part and the holdout have data")


@dataclass(frozen=True)
class FillConfig:
    """Fill kernel settings shared by labels and backtests."""

    # A gap between ticks longer than this, outside the weekend close, is a data hole.
    max_gap_minutes: float = 30.0


@dataclass(frozen=True)
class FeaturesConfig:
    """Causal feature settings, computed per timeframe."""

    timeframes_min: tuple[int, ...] = (5, 15, 60)
    return_lookbacks: tuple[int, ...] = (1, 3, 6, 12, 24)
    volatility_window: int = 20
    atr_window: int = 14
    rsi_window: int = 14
    zscore_window: int = 20
    bollinger_window: int = 20
    bollinger_width: float = 2.0
    roc_window: int = 10
    ma_slope_window: int = 20
    efficiency_window: int = 10
    # Closes in the rolling Hurst window; its lags are the powers of two up to a quarter of it.
    hurst_window: int = 100
    # Permutation entropy: closes per ordinal pattern (2-7) and patterns per window.
    entropy_order: int = 3
    entropy_window: int = 100
    # Lookbacks k of ret_k / (rv * sqrt(k)), in bars.
    scaled_return_lookbacks: tuple[int, ...] = (1, 12)
    # Earlier weeks an hour-of-week bucket needs before its volatility profile is used.
    volatility_profile_min_weeks: int = 1
    # Below this many bars a timeframe's feature table is written empty.
    min_bars: int = 50


@dataclass(frozen=True)
class LabelsConfig:
    """Outcome labels: every bar of each timeframe, for each (take-profit, stop-loss, horizon)."""

    timeframes_min: tuple[int, ...] = (5, 15)
    # Each entry is (take_profit_pips, stop_loss_pips, horizon_minutes).
    grid: tuple[tuple[float, float, float], ...] = ((10.0, 10.0, 60.0), (20.0, 10.0, 120.0), (10.0, 20.0, 120.0))
    min_bars: int = 50
    # A bar whose first tick after its close comes more than this many minutes later gets no
    # entry (censored, like the search's late signals); 0 means no limit.
    max_entry_delay_minutes: float = 30.0
    # "pips": barriers from `grid`; "atr": barriers from `atr_grid`, multiples of the bar's ATR.
    barrier_mode: str = "pips"
    # Each entry is (take_profit_atr, stop_loss_atr, horizon_minutes), used when barrier_mode = "atr".
    atr_grid: tuple[tuple[float, float, float], ...] = ((1.0, 1.0, 60.0), (2.0, 1.0, 120.0), (1.0, 2.0, 120.0))
    # Wilder ATR window in bars for barrier_mode = "atr", computed from bars up to the signal bar.
    atr_window: int = 14
    # "market": horizons count open-market minutes, skipping the weekend close; "wall": clock minutes.
    horizon_clock: str = "market"
    # Grid entries are labelled and written in chunks of at most this many rows.
    max_rows_per_chunk: int = 2_000_000

    def __post_init__(self) -> None:
        if not self.max_entry_delay_minutes >= 0:
            raise ConfigError(
                f"[labels] max_entry_delay_minutes = {self.max_entry_delay_minutes} must be 0 (no limit) or positive"
            )
        if self.barrier_mode not in ("pips", "atr"):
            raise ConfigError(f"[labels] barrier_mode = {self.barrier_mode!r} is invalid; use \"pips\" or \"atr\"")
        if self.horizon_clock not in ("market", "wall"):
            raise ConfigError(f"[labels] horizon_clock = {self.horizon_clock!r} is invalid; use \"market\" or \"wall\"")
        for name in ("atr_window", "max_rows_per_chunk"):
            if getattr(self, name) < 1:
                raise ConfigError(f"[labels] {name} = {getattr(self, name)} must be 1 or more")


@dataclass(frozen=True)
class PatternsConfig:
    """Feature conditions tested against the labels of every timeframe, grid entry and side."""

    # Timeframe whose patterns apply_patterns uses by default (the search's pattern_entry).
    timeframe_min: int = 5
    n_bins: int = 5
    # Conditions with fewer non-censored training labels get p-value 1 (still counted as tested).
    min_support_train: int = 30
    min_support_holdout: int = 10
    # At most this many significant conditions are written, smallest p-value first.
    max_patterns: int = 50
    # A timeframe needs this many bars with a usable training label to be mined.
    min_bars: int = 200
    # A feature with at most this many distinct train values is binned by value, not by quantile.
    max_categories: int = 8
    # Test pairs of bins on two different features as well as single bins.
    pairs: bool = True
    # Benjamini-Yekutieli false discovery rate over every condition tested.
    fdr: float = 0.05

    def __post_init__(self) -> None:
        if not 0.0 < self.fdr < 1.0:
            raise ConfigError(f"[patterns] fdr = {self.fdr} must be between 0 and 1 (exclusive), e.g. 0.05")
        if self.n_bins < 2:
            raise ConfigError(f"[patterns] n_bins = {self.n_bins} must be 2 or more")


@dataclass(frozen=True)
class RegimesConfig:
    """Market regimes: a Gaussian mixture of causal volatility and trend features, filtered forward."""

    timeframe_min: int = 15
    # BIC on the training part picks the number of regimes in [min_regimes, max_regimes].
    min_regimes: int = 2
    max_regimes: int = 6
    # Gaussian mixture restarts per candidate count; the best likelihood is kept.
    n_init: int = 3
    random_state: int = 7
    min_bars: int = 100
    # Feature windows modelled: rv_hour_of_week_dev_<volatility_window>, ret_<trend_lookback>, er_<efficiency_window>.
    volatility_window: int = 20
    trend_lookback: int = 12
    efficiency_window: int = 10
    # A regime is a trend when its mean trend_lookback return is this many volatility units or more.
    trend_threshold: float = 0.5


@dataclass(frozen=True)
class SearchConfig:
    """Strategy search: templates x parameter grids x SL/TP sets."""

    timeframe_min: int = 5
    # Each entry is (stop_loss_pips, take_profit_pips).
    sl_tp_sets: tuple[tuple[float, float], ...] = (
        (10.0, 10.0), (10.0, 20.0), (10.0, 30.0), (15.0, 15.0), (15.0, 30.0),
        (20.0, 20.0), (20.0, 40.0), (30.0, 30.0), (30.0, 60.0),
    )
    # Trades still open after this many minutes exit at the first tick past it.
    horizon_minutes: float = 1440.0
    families: tuple[str, ...] = (
        "ma_cross", "rsi_reversion", "zscore_reversion", "donchian_breakout",
        "session_breakout", "pattern_entry", "regime_ma_cross",
    )
    top_n_trades: int = 20
    min_bars: int = 100
    # Skip a signal whose entry tick's spread is above this many pips; 0 means no limit.
    max_entry_spread_pips: float = 0.0
    # Skip a signal whose entry tick comes more than this many minutes after the bar close
    # (a Friday signal would otherwise fill at the Sunday open); 0 means no limit.
    max_entry_delay_minutes: float = 30.0
    # Skip entries whose tick falls in [start, end) New York time, "HH:MM"; start > end wraps midnight.
    no_entry_windows: tuple[tuple[str, str], ...] = (("16:55", "17:10"),)
    # Folder of user template files (see docs/user_templates.md); "" loads none.
    user_templates_dir: str = ""
    # Re-mine patterns and refit regimes per walk-forward block, so in-sample signals never use later data.
    refit_per_fold: bool = True

    def __post_init__(self) -> None:
        for name in ("max_entry_spread_pips", "max_entry_delay_minutes"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"[search] {name} = {getattr(self, name)} must be 0 (no limit) or positive")
        for window in self.no_entry_windows:
            _check_time_window(window, "[search] no_entry_windows")


def _check_time_window(window: Any, key: str) -> None:
    """Raise ConfigError unless ``window`` is two distinct "HH:MM" times of day."""
    if not (isinstance(window, tuple) and len(window) == 2):
        raise ConfigError(f"{key} entry {window!r} must be a pair of times such as [\"16:55\", \"17:10\"]")
    for text in window:
        if not (isinstance(text, str) and re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", text)):
            raise ConfigError(f"{key} entry {window!r} has time {text!r}; write it as HH:MM from 00:00 to 23:59")
    if window[0] == window[1]:
        raise ConfigError(f"{key} entry {window!r} is empty: start and end are equal")


@dataclass(frozen=True)
class SampleConfig:
    """Built-in synthetic sample set."""

    seed: int = 20250101
    weeks: int = 14
    year: int = 2025
    pairs: tuple[str, ...] = ("EURUSD", "GBPUSD", "USDJPY", "AUDUSD")
    # Mean ticks per hour in the busiest session.
    ticks_per_hour: int = 1000
    no_edge: bool = False


@dataclass(frozen=True)
class InstrumentSpec:
    """One instrument: pip size in price units, price decimals, currencies and contract size."""

    pip_size: float
    price_precision: int
    base: str
    quote: str
    # Units of the base (currency or troy ounces) in one lot.
    lot_units: float = 100_000.0


# Swap rates in pips per lot per night; negative means the holder pays. These are illustrative
# retail values, not any broker's quote: set [costs.swap_long_pips_per_night] and
# [costs.swap_short_pips_per_night] from your broker's current table.
DEFAULT_SWAP_LONG_PIPS_PER_NIGHT: dict[str, float] = {
    "EURUSD": -0.7, "GBPUSD": -0.4, "AUDUSD": -0.4, "NZDUSD": -0.4,
    "USDJPY": 1.5, "USDCHF": 0.6, "USDCAD": -0.2, "EURGBP": -0.4, "EURJPY": 0.8, "GBPJPY": 1.4,
}
DEFAULT_SWAP_SHORT_PIPS_PER_NIGHT: dict[str, float] = {
    "EURUSD": 0.2, "GBPUSD": -0.2, "AUDUSD": -0.1, "NZDUSD": -0.1,
    "USDJPY": -3.0, "USDCHF": -1.5, "USDCAD": -0.6, "EURGBP": -0.2, "EURJPY": -2.0, "GBPJPY": -3.0,
}


@dataclass(frozen=True)
class CostsConfig:
    """Trading costs applied to backtested trades (see docs/costs_and_pnl.md).

    Each per-symbol table in TOML replaces the whole default table; a symbol missing from a
    swap table is charged no swap.
    """

    # One lot is the instrument's contract size (InstrumentSpec.lot_units).
    commission_per_lot_per_side_usd: float = 3.5
    # Adverse slippage on market fills: every entry and every exit except a take-profit.
    slippage_pips: float = 0.0
    # Per symbol: widen each tick's spread by this many pips, half on each side of the mid.
    spread_markup_pips: dict[str, float] = field(default_factory=dict)
    # Per symbol, charged per night held through 17:00 New York, three times on Wednesday.
    swap_long_pips_per_night: dict[str, float] = field(
        default_factory=lambda: dict(DEFAULT_SWAP_LONG_PIPS_PER_NIGHT))
    swap_short_pips_per_night: dict[str, float] = field(
        default_factory=lambda: dict(DEFAULT_SWAP_SHORT_PIPS_PER_NIGHT))

    def __post_init__(self) -> None:
        for name in ("commission_per_lot_per_side_usd", "slippage_pips"):
            if getattr(self, name) < 0:
                raise ConfigError(f"[costs] {name} = {getattr(self, name)} is negative; set 0 or more")
        for symbol, pips in self.spread_markup_pips.items():
            if pips < 0:
                raise ConfigError(f"[costs.spread_markup_pips] {symbol} = {pips} is negative; set 0 or more")


@dataclass(frozen=True)
class AccountConfig:
    """Account currency and trade size for P&L in money; only USD is supported.

    A currency other than USD raises ConfigError when the section is built, so at load time.
    """

    currency: str = "USD"
    # Trade size in lots. A lot is the instrument's contract size: 100,000 units of the base
    # currency for currency pairs, 100 troy ounces for gold, 5,000 for silver.
    lots: float = 1.0
    # USD value of one unit of a currency, keyed by its code (e.g. JPY = 0.0067). Used only
    # when no tick file of that currency's USD pair is in the input folder; flagged "fixed".
    fixed_rates: dict[str, float] = field(default_factory=dict)
    # A USD pair's last tick older than this at a trade's exit is too stale to convert with.
    max_rate_age_hours: float = 72.0

    def __post_init__(self) -> None:
        if self.currency != "USD":
            raise ConfigError(
                f"[account] currency = {self.currency!r} is not supported; only \"USD\" is. "
                f"Remove the key or set it to \"USD\"."
            )
        if self.lots <= 0:
            raise ConfigError(f"[account] lots = {self.lots} must be positive, e.g. 1.0")
        if self.max_rate_age_hours <= 0:
            raise ConfigError(f"[account] max_rate_age_hours = {self.max_rate_age_hours} must be positive")
        for code, rate in self.fixed_rates.items():
            if len(code) != 3 or not code.isalpha() or not code.isupper():
                raise ConfigError(
                    f"[account.fixed_rates] key {code!r} is not a currency code; use three "
                    f"uppercase letters such as JPY")
            if not rate > 0:
                raise ConfigError(f"[account.fixed_rates] {code} = {rate} must be a positive USD value")


@dataclass(frozen=True)
class ValidationConfig:
    """Validation statistics of the strategy search: walk-forward folds, lockbox, DSR and PBO."""

    # Walk-forward folds after the first training block; "anchored" (expanding) or "rolling" train windows.
    n_folds: int = 5
    scheme: str = "anchored"
    # Trading days dropped after the purge between every train window and the next test block.
    embargo_days: int = 1
    # The last fraction of trading days, never seen by any fold, kept for one final check.
    lockbox_fraction: float = 0.15
    min_train_days: int = 20
    min_test_days: int = 20
    # Daily Sharpe, Sortino and Calmar ratios are NaN on fewer days than this.
    min_days: int = 20
    # Strategies join a cluster below this correlation distance sqrt((1 - rho) / 2); 0.5 is rho = 0.5.
    cluster_threshold: float = 0.5
    # More distinct return series than this are clustered by samples of this size (see validation.py).
    max_exact_cluster: int = 2000
    # CSCV blocks for the probability of backtest overfitting, and the cap on block combinations.
    pbo_partitions: int = 16
    max_pbo_combinations: int = 12870
    # The ranking score is NaN for strategies with fewer in-sample trades than this.
    min_trades: int = 30
    # Without any score, strategies with fewer in-sample trades than this rank after the rest.
    fallback_min_trades: int = 10
    random_state: int = 7

    def __post_init__(self) -> None:
        if self.scheme not in ("anchored", "rolling"):
            raise ConfigError(f"[validation] scheme = {self.scheme!r} is invalid; use \"anchored\" or \"rolling\"")
        if not 0.0 <= self.lockbox_fraction < 1.0:
            raise ConfigError(f"[validation] lockbox_fraction = {self.lockbox_fraction} must be in [0, 1)")
        if self.pbo_partitions < 2 or self.pbo_partitions % 2:
            raise ConfigError(
                f"[validation] pbo_partitions = {self.pbo_partitions} must be an even number of 2 or more")
        for name in ("n_folds", "min_train_days", "min_test_days", "min_days", "max_exact_cluster",
                     "max_pbo_combinations"):
            if getattr(self, name) < 1:
                raise ConfigError(f"[validation] {name} = {getattr(self, name)} must be 1 or more")


@dataclass(frozen=True)
class Config:
    """Whole tool configuration; each stage reads its own section."""

    ticks: TicksConfig = field(default_factory=TicksConfig)
    bars: BarsConfig = field(default_factory=BarsConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    fills: FillConfig = field(default_factory=FillConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    labels: LabelsConfig = field(default_factory=LabelsConfig)
    patterns: PatternsConfig = field(default_factory=PatternsConfig)
    regimes: RegimesConfig = field(default_factory=RegimesConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    costs: CostsConfig = field(default_factory=CostsConfig)
    account: AccountConfig = field(default_factory=AccountConfig)
    # Extra or overriding instruments, keyed by symbol (e.g. "XAUEUR").
    instruments: dict[str, InstrumentSpec] = field(default_factory=dict)


def section_hash(*sections: Any) -> str:
    """Return a short stable hash of one or more config sections, for the manifest."""
    payload = json.dumps([_to_plain(s) for s in sections], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _to_plain(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value


def load_config(path: str | Path | None = None) -> Config:
    """Load a Config from a TOML file, or return the defaults when path is None."""
    if path is None:
        return Config()
    path = Path(path)
    try:
        with path.open("rb") as handle:
            raw = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"Config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"Invalid TOML in {path}: {exc}") from None
    return config_from_dict(raw, source=str(path))


def config_from_dict(raw: dict[str, Any], source: str = "<dict>") -> Config:
    """Build a Config from nested dicts, as read from TOML."""
    hints = typing.get_type_hints(Config)
    kwargs: dict[str, Any] = {}
    for name, value in raw.items():
        if name not in hints:
            known = ", ".join(sorted(hints))
            raise ConfigError(f"Unknown config section [{name}] in {source}; known sections: {known}")
        if not isinstance(value, dict):
            raise ConfigError(f"Config section [{name}] in {source} must be a table, got {value!r}")
        if name == "instruments":
            kwargs[name] = {
                symbol.upper(): _build_section(InstrumentSpec, spec, f"instruments.{symbol}", source)
                for symbol, spec in value.items()
            }
        else:
            kwargs[name] = _build_section(hints[name], value, name, source)
    return Config(**kwargs)


def _build_section(cls: type, values: dict[str, Any], name: str, source: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"Config section [{name}] in {source} must be a table, got {values!r}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in hints:
            known = ", ".join(sorted(hints))
            raise ConfigError(f"Unknown key '{key}' in [{name}] of {source}; known keys: {known}")
        kwargs[key] = _coerce(value, hints[key], f"{name}.{key}", source)
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"Invalid section [{name}] in {source}: {exc}") from None


def _coerce(value: Any, hint: Any, key: str, source: str) -> Any:
    """Convert TOML values to the field's type: lists become tuples, ints become floats."""
    origin = typing.get_origin(hint)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"Config key {key} in {source} must be a list, got {value!r}")
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], key, source) for v in value)
        if len(args) != len(value):
            raise ConfigError(f"Config key {key} in {source} needs {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, key, source) for v, a in zip(value, args, strict=True))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"Config key {key} in {source} must be a table, got {value!r}")
        value_hint = typing.get_args(hint)[1]
        return {str(k): _coerce(v, value_hint, f"{key}.{k}", source) for k, v in value.items()}
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"Config key {key} in {source} must be a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"Config key {key} in {source} must be an integer, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"Config key {key} in {source} must be true or false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"Config key {key} in {source} must be a string, got {value!r}")
        return value
    return value

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
    # Below this many bars a timeframe's feature table is written empty.
    min_bars: int = 50


@dataclass(frozen=True)
class LabelsConfig:
    """Outcome labels: every bar of each timeframe, for each (take-profit, stop-loss, horizon)."""

    timeframes_min: tuple[int, ...] = (5, 15)
    # Each entry is (take_profit_pips, stop_loss_pips, horizon_minutes).
    grid: tuple[tuple[float, float, float], ...] = ((10.0, 10.0, 60.0), (20.0, 10.0, 120.0), (10.0, 20.0, 120.0))
    min_bars: int = 50


@dataclass(frozen=True)
class PatternsConfig:
    """Conditional pattern mining on label outcomes."""

    timeframe_min: int = 5
    n_bins: int = 5
    # Index into LabelsConfig.grid of the label the patterns are mined against.
    label_index: int = 0
    min_support_train: int = 30
    min_support_holdout: int = 10
    # A bin is a candidate when its train win rate differs from the base rate by this much.
    min_win_rate_edge: float = 0.05
    max_patterns: int = 50
    min_bars: int = 200
    # A candidate also needs this binomial z-score of its train win rate against the base rate.
    min_z_train: float = 2.0
    # Two-condition candidates pair up this many of the best single conditions per side.
    max_conjunction_conditions: int = 20
    # A feature with at most this many distinct train values is binned by value, not by quantile.
    max_categories: int = 8
    # The train z floor rises to the Bonferroni level for this family-wise error rate over all
    # single and two-condition candidates a side could test; 1.0 or more turns this off.
    familywise_alpha: float = 0.05


@dataclass(frozen=True)
class RegimesConfig:
    """Market regimes from clustering causal volatility and trend features."""

    timeframe_min: int = 15
    n_regimes: int = 4
    random_state: int = 7
    min_bars: int = 100
    # Feature windows clustered: rv_<volatility_window>, ret_<trend_lookback>, er_<efficiency_window>.
    volatility_window: int = 20
    trend_lookback: int = 12
    efficiency_window: int = 10
    # A regime is a trend when its centre's trend_lookback return is this many volatility units or more.
    trend_threshold: float = 0.5


@dataclass(frozen=True)
class SearchConfig:
    """Strategy search: templates x parameter grids x SL/TP sets."""

    timeframe_min: int = 5
    # Each entry is (stop_loss_pips, take_profit_pips).
    sl_tp_sets: tuple[tuple[float, float], ...] = (
        (10.0, 10.0), (10.0, 20.0), (15.0, 30.0), (20.0, 20.0), (20.0, 40.0), (30.0, 30.0),
    )
    # Trades still open after this many minutes exit at the first tick past it.
    horizon_minutes: float = 1440.0
    families: tuple[str, ...] = (
        "ma_cross", "rsi_reversion", "zscore_reversion", "donchian_breakout",
        "session_breakout", "pattern_entry", "regime_ma_cross",
    )
    top_n_trades: int = 20
    min_bars: int = 100


@dataclass(frozen=True)
class SampleConfig:
    """Built-in synthetic sample set."""

    seed: int = 20250101
    weeks: int = 3
    year: int = 2025
    pairs: tuple[str, ...] = ("EURUSD", "GBPUSD", "USDJPY", "AUDUSD")
    # Mean ticks per hour in the busiest session.
    ticks_per_hour: int = 3000
    no_edge: bool = False


@dataclass(frozen=True)
class InstrumentSpec:
    """One instrument: pip size in price units, price decimals, base and quote currency."""

    pip_size: float
    price_precision: int
    base: str
    quote: str


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
    # Extra or overriding instruments, keyed by symbol (e.g. "XAUEUR").
    instruments: dict[str, InstrumentSpec] = field(default_factory=dict)


def section_hash(*sections: Any) -> str:
    """Return a short stable hash of one or more config sections, for the manifest."""
    payload = json.dumps([_to_plain(s) for s in sections], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
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
        return tuple(_coerce(v, a, key, source) for v, a in zip(value, args))
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

"""Conversion of trade P&L from the quote currency to USD, the only supported account currency.

A trade's price P&L is in the instrument's quote currency. ``quote_to_usd_rate`` returns the
USD value of one unit of that currency at each trade's exit, by the first rule that applies:

1. the quote is USD (EURUSD, XAUUSD): the rate is 1, source ``quote_usd``;
2. USD is the base (USDJPY): the rate is ``1 / exit_price``, source ``base_usd``;
3. a cross (EURGBP, GBPJPY, XAUEUR) whose quote currency's USD pair has a tick file for the
   exit's year in the input folder: the mid of that pair's last tick at or before the exit
   time, never a later tick. The mid is inverted for a USD-based pair, so JPY takes
   ``1 / USDJPY``. Source ``ticks:PAIR``. A last tick more than
   ``[account] max_rate_age_hours`` old is not used;
4. a fixed rate from ``[account] fixed_rates``, keyed by currency code: source ``fixed``;
5. otherwise NaN with source ``none``, and the P&L is reported in pips only.

Rules 3 to 5 are decided per trade, so one call may mix sources, for example ticks for most
trades and the fixed rate where the USD pair's file has a hole.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from fxresearch.config import Config
from fxresearch.instruments import Instrument
from fxresearch.naming import scan_input_dir
from fxresearch.ticks import TickDataError, load_ticks
from fxresearch.timeutil import ns_to_datetime

logger = logging.getLogger(__name__)

ACCOUNT_CURRENCY = "USD"
NS_PER_HOUR = 3_600_000_000_000
SOURCE_QUOTE_USD = "quote_usd"
SOURCE_BASE_USD = "base_usd"
SOURCE_FIXED = "fixed"
SOURCE_NONE = "none"
TICKS_SOURCE_PREFIX = "ticks:"


class RateSources:
    """USD pair tick files of an input folder and fixed rates, for converting crosses to USD.

    Tick files are found by name when the object is built but read only when a rate from them
    is needed, then kept as timestamps and mids (16 bytes per tick).
    """

    def __init__(self, files: Mapping[tuple[str, int], Path], fixed_rates: Mapping[str, float],
                 max_rate_age_hours: float, config: Config | None) -> None:
        self._files = dict(files)
        self._fixed_rates = {code.upper(): float(rate) for code, rate in fixed_rates.items()}
        self.max_rate_age_ns = int(max_rate_age_hours * NS_PER_HOUR)
        self._config = config
        self._mids: dict[tuple[str, int], tuple[np.ndarray, np.ndarray] | None] = {}

    @classmethod
    def from_folder(cls, input_dir: str | Path, config: Config) -> RateSources:
        """Index the ``PAIR_YEAR.parquet`` files of ``input_dir`` and read ``[account]`` settings.

        Every valid tick file is indexed, but only USD pairs are ever read. Files are loaded
        with ``fxresearch.ticks.load_ticks`` and the same configuration.
        """
        scan = scan_input_dir(input_dir)
        files = {(item.symbol, item.year): item.path for item in scan.valid}
        return cls(files, config.account.fixed_rates, config.account.max_rate_age_hours, config)

    @classmethod
    def empty(cls, fixed_rates: Mapping[str, float] | None = None, max_rate_age_hours: float = 72.0) -> RateSources:
        """Return sources without tick files, with optional fixed rates by currency code."""
        return cls({}, fixed_rates or {}, max_rate_age_hours, None)

    def fixed_rate(self, currency: str) -> float | None:
        """Return the configured USD value of one unit of ``currency``, or None."""
        return self._fixed_rates.get(currency.upper())

    def has_file(self, symbol: str, year: int) -> bool:
        """Return True when the folder contains ``SYMBOL_YEAR.parquet``."""
        return (symbol, year) in self._files

    def mids(self, symbol: str, year: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Return (timestamp_ns, mid) of ``SYMBOL_YEAR.parquet``, or None when absent or unreadable.

        The file is read on the first call and cached. An unreadable file is logged and
        treated as absent, so the caller falls back to a fixed rate.
        """
        key = (symbol, year)
        if key in self._mids:
            return self._mids[key]
        path = self._files.get(key)
        series = None
        if path is not None:
            try:
                ticks = load_ticks(path, self._config if self._config is not None else Config())
            except (TickDataError, OSError) as exc:
                logger.warning("%s_%d: cannot read %s for USD conversion, so it is not used: %s",
                               symbol, year, path, exc)
            else:
                series = (ticks.timestamp_ns, (ticks.bid + ticks.ask) / 2.0)
                logger.info("%s_%d: loaded %d mids from %s for USD conversion", symbol, year, ticks.n, path)
        self._mids[key] = series
        return series


def quote_to_usd_rate(instrument: Instrument, exit_time_ns: np.ndarray, exit_price: np.ndarray,
                      rate_sources: RateSources) -> tuple[np.ndarray, str, bool]:
    """Return the USD value of one unit of the quote currency at each exit, with its source.

    See the module docstring for the rules. The market assumption for crosses is that the
    account converts at the mid of the USD pair, at the last quote known at the exit.

    Parameters
    ----------
    instrument
        The traded symbol, for its base and quote currency.
    exit_time_ns
        int64 ns UTC of each trade's exit.
    exit_price
        Each trade's exit price in quote currency, used when USD is the base.
    rate_sources
        USD pair tick files and fixed rates.

    Returns
    -------
    tuple
        - ``rates``: float64, NaN where unknown.
        - ``source``: one of ``quote_usd``, ``base_usd``, ``ticks:PAIR``, ``fixed`` and
          ``none``. When trades differ, the distinct sources are joined by ``+`` in the order
          of the rules, for example ``ticks:USDJPY+fixed``.
        - ``flagged``: True when any trade has a fixed rate or none, because those are not
          market rates at the exit.
    """
    rates, sources = quote_rates_by_trade(instrument, exit_time_ns, exit_price, rate_sources)
    distinct = sorted(set(sources.tolist()), key=_source_rank)
    source = "+".join(distinct) if distinct else SOURCE_NONE
    flagged = bool(np.isin(sources, [SOURCE_FIXED, SOURCE_NONE]).any())
    return rates, source, flagged


def quote_rates_by_trade(instrument: Instrument, exit_time_ns: np.ndarray, exit_price: np.ndarray,
                         rate_sources: RateSources) -> tuple[np.ndarray, np.ndarray]:
    """Return each trade's quote-to-USD rate and its source name, as ``quote_to_usd_rate`` decides them."""
    exit_time_ns = np.asarray(exit_time_ns, dtype=np.int64)
    exit_price = np.asarray(exit_price, dtype=np.float64)
    n = len(exit_time_ns)
    if instrument.quote == ACCOUNT_CURRENCY:
        return np.ones(n), np.full(n, SOURCE_QUOTE_USD, dtype=object)
    if instrument.base == ACCOUNT_CURRENCY:
        return 1.0 / exit_price, np.full(n, SOURCE_BASE_USD, dtype=object)

    rates = np.full(n, np.nan)
    sources = np.full(n, SOURCE_NONE, dtype=object)
    if n == 0:
        return rates, sources
    currency = instrument.quote
    pair_rates, pair = _tick_rates(currency, exit_time_ns, rate_sources)
    if pair is not None:
        from_ticks = ~np.isnan(pair_rates)
        rates[from_ticks] = pair_rates[from_ticks]
        sources[from_ticks] = TICKS_SOURCE_PREFIX + pair

    fixed = rate_sources.fixed_rate(currency)
    unresolved = np.isnan(rates)
    if fixed is not None and unresolved.any():
        rates[unresolved] = fixed
        sources[unresolved] = SOURCE_FIXED

    fixed_count = int(np.count_nonzero(sources == SOURCE_FIXED))
    none_count = int(np.count_nonzero(sources == SOURCE_NONE))
    if fixed_count or none_count:
        logger.warning(
            "%s: %d of %d trades have no recent %sUSD or USD%s tick at their exit: %d use the fixed "
            "rate [account.fixed_rates] %s, %d have no USD P&L",
            instrument.symbol, fixed_count + none_count, n, currency, currency, fixed_count, currency,
            none_count)
    return rates, sources


def pnl_usd(units: float, entry_price: np.ndarray, exit_price: np.ndarray, side: np.ndarray,
            rate: np.ndarray) -> np.ndarray:
    """Return the price P&L in USD: ``units * (exit - entry) * side * rate``.

    ``units`` is the position in base currency, prices are in quote currency and ``rate`` is
    the USD value of one unit of the quote currency. NaN rates give NaN.
    """
    return (units * (np.asarray(exit_price, dtype=np.float64) - np.asarray(entry_price, dtype=np.float64))
            * np.asarray(side, dtype=np.float64) * np.asarray(rate, dtype=np.float64))


def _tick_rates(currency: str, exit_time_ns: np.ndarray,
                rate_sources: RateSources) -> tuple[np.ndarray, str | None]:
    """Return the rate from the currency's USD pair ticks (NaN where none) and the pair used.

    NOTE: only the files of the exits' own years are read, so an exit in the first minutes
    of a year before that year's first tick gets no tick rate, even when the previous
    year's file is present.
    """
    exit_years = np.asarray(ns_to_datetime(exit_time_ns).year)
    years = sorted(set(exit_years.tolist()))
    for pair, invert in ((currency + ACCOUNT_CURRENCY, False), (ACCOUNT_CURRENCY + currency, True)):
        if not any(rate_sources.has_file(pair, year) for year in years):
            continue
        loaded = [series for year in years if (series := rate_sources.mids(pair, year)) is not None]
        if not loaded:
            continue
        timestamp_ns = np.concatenate([series[0] for series in loaded])
        mid = np.concatenate([series[1] for series in loaded])
        if len(loaded) > 1 and (np.diff(timestamp_ns) < 0).any():
            order = np.argsort(timestamp_ns, kind="stable")
            timestamp_ns, mid = timestamp_ns[order], mid[order]

        # The last tick at or before the exit: a later tick would be knowledge from the future.
        last = np.searchsorted(timestamp_ns, exit_time_ns, side="right") - 1
        found = last >= 0
        last_known = np.where(found, last, 0)
        fresh = found & (exit_time_ns - timestamp_ns[last_known] <= rate_sources.max_rate_age_ns)
        rates = np.where(fresh, mid[last_known], np.nan)
        return (1.0 / rates if invert else rates), pair
    return np.full(len(exit_time_ns), np.nan), None


def _source_rank(source: str) -> int:
    order = (SOURCE_QUOTE_USD, SOURCE_BASE_USD, TICKS_SOURCE_PREFIX, SOURCE_FIXED, SOURCE_NONE)
    return next(i for i, prefix in enumerate(order) if source.startswith(prefix))

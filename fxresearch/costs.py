"""Trading costs of backtested trades: spread markup, slippage, swap and commission.

The backtest engine fills at the vendor's bid and ask and charges nothing else. This module
adds a retail account's costs as vectorised functions over trade arrays, and
``trade_costs_and_pnl`` combines them with the USD conversion of ``fxresearch.conversion``:

- spread markup: each tick's spread widened by a fixed number of pips, half on each side of
  the mid, before the fill kernel runs (``apply_spread_markup``);
- slippage: a fixed number of pips against the trade on every market fill, so on the entry
  and on every exit except a take-profit, which is a limit order (``apply_slippage``);
- swap: pips per lot per night held through the 17:00 New York rollover, three times for the
  Wednesday rollover, which carries the weekend (``count_rollovers``, ``swap_pips``);
- commission: USD per lot per side, so twice per round trip (``commission_usd``).

The rules and worked examples are in ``docs/costs_and_pnl.md``.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd

from fxresearch.config import AccountConfig, CostsConfig
from fxresearch.conversion import RateSources, pnl_usd, quote_rates_by_trade
from fxresearch.fills import REASONS
from fxresearch.instruments import Instrument
from fxresearch.timeutil import NEW_YORK, datetime_to_ns, to_local

logger = logging.getLogger(__name__)

TAKE_PROFIT = REASONS.index("take_profit")
# Reason codes a trade can close with; "no_entry" never reaches a trade.
_TRADE_REASONS = REASONS[: REASONS.index("signal") + 1]
WEDNESDAY = 2
ROLLOVER_HOUR_NEW_YORK = 17

TRADE_COLUMNS = ("side", "entry_time", "entry_price", "exit_time", "exit_price", "reason")
RESULT_COLUMNS = (
    "entry_price_net", "exit_price_net", "pips_gross", "pips_net", "swap_pips", "commission_usd",
    "pnl_usd", "usd_rate", "usd_rate_source",
)
# Pips are rounded to this many decimals to drop float noise from price differences.
PIPS_DECIMALS = 6


def apply_spread_markup(bid: np.ndarray, ask: np.ndarray, markup_pips: float, pip_size: float,
                        point_size: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Widen every tick's spread by ``markup_pips``, half below the bid and half above the ask.

    Use this for a vendor whose spreads are tighter than a retail account's, before the fill
    kernel runs. The markup is rounded to whole points and the new prices are snapped to the
    point grid. An odd number of points puts the extra point on the ask, so the mid moves up
    by half a point. A round trip still pays the whole markup, because it crosses both sides.

    Parameters
    ----------
    bid, ask
        Tick prices in quote currency.
    markup_pips
        Widening of the spread in pips, 0 or more.
    pip_size
        Price units per pip.
    point_size
        Price units per point, the smallest quoted step (``Instrument.point_size``). None
        means a tenth of a pip, which is right for currency pairs in the built-in table but
        not for metals: pass the instrument's point size for those.

    Returns
    -------
    tuple of ndarray
        New bid and ask arrays. The inputs are not changed.

    Raises
    ------
    ValueError
        When the markup is negative or not finite, or a widened bid is zero or negative.
    """
    bid = np.asarray(bid, dtype=np.float64)
    ask = np.asarray(ask, dtype=np.float64)
    if not math.isfinite(markup_pips) or markup_pips < 0:
        raise ValueError(f"Invalid spread markup {markup_pips} pips. Set a finite value of 0 or more")
    if point_size is None:
        point_size = pip_size / 10.0
    markup_points = int(round(markup_pips * pip_size / point_size))
    if not math.isclose(markup_points * point_size, markup_pips * pip_size, rel_tol=1e-9, abs_tol=1e-12):
        logger.warning("Spread markup of %s pips is not a whole number of points of %s, so it was rounded to %d points",
                       markup_pips, point_size, markup_points)
    if markup_points == 0:
        return bid.copy(), ask.copy()

    bid_points = markup_points // 2
    ask_points = markup_points - bid_points
    decimals = max(0, round(-math.log10(point_size)))
    new_bid = np.round((np.rint(bid / point_size) - bid_points) * point_size, decimals)
    new_ask = np.round((np.rint(ask / point_size) + ask_points) * point_size, decimals)
    if len(new_bid) and new_bid.min() <= 0:
        raise ValueError(
            f"A spread markup of {markup_pips} pips takes a bid to {new_bid.min()}, which is not a "
            f"valid price. Lower the markup"
        )
    return new_bid, new_ask


def apply_slippage(entry_price: np.ndarray, exit_price: np.ndarray, side: np.ndarray, reason: np.ndarray,
                   slippage_pips: float, pip_size: float) -> tuple[np.ndarray, np.ndarray]:
    """Move market fills ``slippage_pips`` against the trade.

    A long enters higher and exits lower, a short enters lower and exits higher. Every
    entry is a market order. Exits by stop-loss, horizon, data gap, end of data and opposite
    signal are market orders too. A take-profit is a limit order, so its exit price does not
    move. The prices are not snapped to the point grid, so a fractional point of slippage is kept.

    Parameters
    ----------
    entry_price, exit_price
        Fill prices in quote currency.
    side
        +1 long, -1 short.
    reason
        Exit reason codes, indices into ``fxresearch.fills.REASONS`` (1 is take-profit).
    slippage_pips
        Adverse slippage per market fill in pips, 0 or more.
    pip_size
        Price units per pip.

    Returns
    -------
    tuple of ndarray
        New entry and exit price arrays.

    Raises
    ------
    ValueError
        When the slippage is negative or not finite, a side is not ±1 or a reason code is not
        a trade exit.
    """
    if not math.isfinite(slippage_pips) or slippage_pips < 0:
        raise ValueError(f"Invalid slippage {slippage_pips} pips. Set a finite value of 0 or more")
    side = _check_side(side)
    reason = _check_reason_codes(reason)
    slippage = slippage_pips * pip_size
    entry_net = np.asarray(entry_price, dtype=np.float64) + side * slippage
    market_exit = reason != TAKE_PROFIT
    exit_net = np.asarray(exit_price, dtype=np.float64) - side * slippage * market_exit
    return entry_net, exit_net


def count_rollovers(entry_time_ns: np.ndarray, exit_time_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Count the 17:00 New York rollovers each trade is held through.

    A rollover counts when it falls strictly after the entry and at or before the exit. The
    rollovers are Monday to Friday at 17:00 New York time, converted to UTC with the zone's
    daylight saving rules, so they sit at 21:00 UTC in summer and 22:00 UTC in winter. A
    position held from Friday into the next week passes one rollover, Friday's. The
    Wednesday rollover carries the weekend's financing, which ``swap_pips`` charges.

    NOTE: bank holidays are not modelled, so a rollover that a broker skips or doubles around
    a holiday counts as an ordinary night.

    Parameters
    ----------
    entry_time_ns, exit_time_ns
        int64 nanoseconds UTC, one element per trade.

    Returns
    -------
    tuple of ndarray
        int64 ``nights`` (all rollovers passed) and ``wednesday_nights`` (those on a
        Wednesday, also included in ``nights``).

    Raises
    ------
    ValueError
        When the arrays differ in length or an exit comes before its entry.
    """
    entry_time_ns = np.asarray(entry_time_ns, dtype=np.int64)
    exit_time_ns = np.asarray(exit_time_ns, dtype=np.int64)
    if entry_time_ns.shape != exit_time_ns.shape:
        raise ValueError(f"entry_time_ns has shape {entry_time_ns.shape} but exit_time_ns has "
                         f"{exit_time_ns.shape}. Pass one element per trade in both")
    if len(entry_time_ns) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    early = np.flatnonzero(exit_time_ns < entry_time_ns)
    if len(early):
        raise ValueError(f"{len(early)} trades exit before they enter, first at position {early[0]}. "
                         f"check the entry_time and exit_time columns")

    rollover_ns, is_wednesday = _rollover_instants(int(entry_time_ns.min()), int(exit_time_ns.max()))
    nights = np.searchsorted(rollover_ns, exit_time_ns, side="right") - np.searchsorted(
        rollover_ns, entry_time_ns, side="right")
    wednesday_ns = rollover_ns[is_wednesday]
    wednesday_nights = np.searchsorted(wednesday_ns, exit_time_ns, side="right") - np.searchsorted(
        wednesday_ns, entry_time_ns, side="right")
    return nights.astype(np.int64), wednesday_nights.astype(np.int64)


def _rollover_instants(start_ns: int, end_ns: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the sorted UTC ns of the weekday 17:00 New York rollovers covering a span, and a Wednesday mask."""
    first_day, last_day = to_local(np.array([start_ns, end_ns]), NEW_YORK).tz_localize(None).normalize()
    days = pd.date_range(first_day - pd.Timedelta(days=1), last_day + pd.Timedelta(days=1), freq="D")
    days = days[days.dayofweek < 5]
    # 17:00 is never inside a daylight saving change in New York (those happen at 02:00), so
    # every local rollover time exists and is unambiguous.
    local = (days + pd.Timedelta(hours=ROLLOVER_HOUR_NEW_YORK)).tz_localize(NEW_YORK)
    rollover_ns = datetime_to_ns(local.tz_convert("UTC"))
    return rollover_ns, np.asarray(days.dayofweek == WEDNESDAY)


def swap_pips(side: np.ndarray, nights: np.ndarray, wednesday_nights: np.ndarray,
              long_rate: float, short_rate: float) -> np.ndarray:
    """Return each trade's swap in pips: the side's rate per night, three nights on Wednesday.

    ``nights`` already includes the Wednesday rollovers, so each of those adds two more
    nights for the weekend. Rates are pips per lot per night with negative meaning a cost.
    In pips the swap scales with the position like a price move, so it needs no lot count.
    """
    side = _check_side(side)
    charged_nights = np.asarray(nights, dtype=np.int64) + 2 * np.asarray(wednesday_nights, dtype=np.int64)
    rate = np.where(side > 0, long_rate, short_rate)
    # Adding 0.0 turns the -0.0 of a negative rate times zero nights into 0.0.
    return rate * charged_nights + 0.0


def commission_usd(n_trades: int | np.ndarray, units: float, commission_per_lot_per_side: float,
                   lot_units: float) -> float | np.ndarray:
    """Return the commission in USD of ``n_trades`` round trips of ``units`` each.

    A round trip pays on two sides, the entry and the exit, and the commission scales with
    the position in lots (``units / lot_units``). The result is a positive cost.
    """
    per_round_trip = 2.0 * commission_per_lot_per_side * units / lot_units
    if np.ndim(n_trades) == 0:
        return float(n_trades) * per_round_trip
    return np.asarray(n_trades, dtype=np.float64) * per_round_trip


def spread_markup_for(symbol: str, costs: CostsConfig) -> float:
    """Return the configured spread markup in pips for a symbol, 0 when it has none."""
    return _lookup(costs.spread_markup_pips, symbol, 0.0)


def swap_rates_for(symbol: str, costs: CostsConfig) -> tuple[float, float]:
    """Return the (long, short) swap in pips per lot per night for a symbol, 0 when it has none."""
    return _lookup(costs.swap_long_pips_per_night, symbol, 0.0), _lookup(costs.swap_short_pips_per_night, symbol, 0.0)


def trade_costs_and_pnl(trades: pd.DataFrame, instrument: Instrument, costs: CostsConfig,
                        account: AccountConfig, rate_sources: RateSources) -> pd.DataFrame:
    """Apply slippage, swap and commission to trades and return their net pips and USD P&L.

    Parameters
    ----------
    trades
        One row per trade with ``side`` (±1), ``entry_time`` and ``exit_time`` (int64 ns UTC or
        datetimes), ``entry_price`` and ``exit_price`` (quote currency) and ``reason`` (a code
        or a name from ``fxresearch.fills.REASONS``), as ``Trades.to_frame`` writes them.
    instrument
        The traded symbol, for its pip size and quote currency.
    costs, account
        The ``[costs]`` and ``[account]`` configuration sections.
    rate_sources
        Where USD conversion rates come from, see ``fxresearch.conversion.RateSources``.

    Returns
    -------
    pandas.DataFrame
        Same index as ``trades``, one column per name in ``RESULT_COLUMNS``:

        - ``entry_price_net``, ``exit_price_net``: fill prices after slippage;
        - ``pips_gross``: pips from the given prices;
        - ``swap_pips``: the swap over the nights held, negative when paid;
        - ``pips_net``: pips after slippage and swap, before commission;
        - ``commission_usd``: the round trip's commission, a positive cost;
        - ``usd_rate``, ``usd_rate_source``: USD per unit of the quote currency at the exit,
          and where it came from (see ``fxresearch.conversion``);
        - ``pnl_usd``: the price P&L after slippage plus the swap, both converted at
          ``usd_rate``, minus the commission. It is NaN where no USD rate is known.

    Raises
    ------
    ValueError
        When a column is missing, a side is not ±1, a reason is unknown or an exit comes
        before its entry.
    """
    missing = [name for name in TRADE_COLUMNS if name not in trades.columns]
    if missing:
        raise ValueError(f"Trades frame lacks columns {missing}. Expected {list(TRADE_COLUMNS)} "
                         f"as Trades.to_frame writes them")
    side = _check_side(trades["side"].to_numpy())
    reason = _reason_codes(trades["reason"])
    entry_time_ns = _time_ns(trades["entry_time"])
    exit_time_ns = _time_ns(trades["exit_time"])
    entry_price = trades["entry_price"].to_numpy(dtype=np.float64)
    exit_price = trades["exit_price"].to_numpy(dtype=np.float64)
    pip_size = instrument.pip_size

    entry_net, exit_net = apply_slippage(entry_price, exit_price, side, reason, costs.slippage_pips, pip_size)
    pips_gross = np.round((exit_price - entry_price) * side / pip_size, PIPS_DECIMALS)
    slippage_paid = costs.slippage_pips * (1.0 + (reason != TAKE_PROFIT))

    nights, wednesday_nights = count_rollovers(entry_time_ns, exit_time_ns)
    long_rate, short_rate = swap_rates_for(instrument.symbol, costs)
    if (long_rate, short_rate) == (0.0, 0.0) and (nights > 0).any():
        logger.warning("%s: no swap rate is configured, so %d trades held overnight pay no swap",
                       instrument.symbol, int(np.count_nonzero(nights)))
    swap = swap_pips(side, nights, wednesday_nights, long_rate, short_rate)
    pips_net = np.round(pips_gross - slippage_paid + swap, PIPS_DECIMALS)

    # The quote currency's USD value at the exit fill converts both the price P&L and the swap.
    rate, source = quote_rates_by_trade(instrument, exit_time_ns, exit_net, rate_sources)
    # A lot is the instrument's contract size: 100,000 units of a currency, 100 oz of gold.
    units = account.lots * instrument.lot_units
    commission = np.full(len(side), commission_usd(1, units, costs.commission_per_lot_per_side_usd,
                                                   instrument.lot_units))
    pip_value_usd = units * pip_size * rate
    pnl = pnl_usd(units, entry_net, exit_net, side, rate) + swap * pip_value_usd - commission

    return pd.DataFrame({
        "entry_price_net": entry_net,
        "exit_price_net": exit_net,
        "pips_gross": pips_gross,
        "pips_net": pips_net,
        "swap_pips": swap,
        "commission_usd": commission,
        "pnl_usd": pnl,
        "usd_rate": rate,
        "usd_rate_source": source,
    }, index=trades.index, columns=list(RESULT_COLUMNS))


def _lookup(table: dict[str, float], symbol: str, default: float) -> float:
    symbol = symbol.upper()
    for key, value in table.items():
        if key.upper() == symbol:
            return float(value)
    return default


def _check_side(side: np.ndarray) -> np.ndarray:
    side = np.asarray(side)
    bad = np.flatnonzero((side != 1) & (side != -1))
    if len(bad):
        raise ValueError(f"Trade side {side[bad[0]]!r} at position {bad[0]} is invalid. Use +1 for long, -1 for short")
    return side.astype(np.int64)


def _check_reason_codes(reason: np.ndarray) -> np.ndarray:
    reason = np.asarray(reason)
    if not np.issubdtype(reason.dtype, np.integer):
        raise ValueError(f"Reason codes must be integers, got dtype {reason.dtype}. Convert names "
                         f"with fxresearch.fills.REASONS.index")
    bad = np.flatnonzero((reason < 0) | (reason >= len(_TRADE_REASONS)))
    if len(bad):
        raise ValueError(f"Reason code {reason[bad[0]]} at position {bad[0]} is not a trade exit. "
                         f"valid codes are 0 to {len(_TRADE_REASONS) - 1} ({', '.join(_TRADE_REASONS)})")
    return reason.astype(np.int64)


def _reason_codes(reason: pd.Series) -> np.ndarray:
    """Return int reason codes from a column of codes or of names such as ``take_profit``."""
    if pd.api.types.is_integer_dtype(reason.dtype):
        return _check_reason_codes(reason.to_numpy())
    names = reason.astype(str).to_numpy()
    unknown = sorted(set(names) - set(_TRADE_REASONS))
    if unknown:
        raise ValueError(f"Unknown exit reasons {unknown}. Expected codes 0 to {len(_TRADE_REASONS) - 1} "
                         f"or names {list(_TRADE_REASONS)}")
    return pd.Index(_TRADE_REASONS).get_indexer(pd.Index(names)).astype(np.int64)


def _time_ns(column: pd.Series) -> np.ndarray:
    """Return a time column as int64 ns UTC, taking integers as ns already."""
    if pd.api.types.is_integer_dtype(column.dtype):
        return column.to_numpy(dtype=np.int64)
    return datetime_to_ns(column)


__all__ = [
    "apply_slippage", "apply_spread_markup", "commission_usd", "count_rollovers",
    "spread_markup_for", "swap_pips", "swap_rates_for", "trade_costs_and_pnl",
]

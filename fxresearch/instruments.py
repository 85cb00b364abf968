"""Instrument table: symbol -> pip size, price precision, base and quote currency.

Pip sizes: 0.0001 for most currency pairs and 0.01 for JPY-quoted pairs. Metals have no
universal pip, so this table states its choice: XAU 0.01 (one cent of a troy ounce) and
XAG 0.001. Every output records the pip size it used. A lot is 100,000 units of the base
currency, 100 troy ounces of gold (XAU) and 5,000 of silver (XAG). Add a symbol with an
``[instruments.SYMBOL]`` table in the TOML configuration.
"""

from __future__ import annotations

from dataclasses import dataclass

from fxresearch.config import Config, InstrumentSpec

_CURRENCIES = ("EUR", "GBP", "AUD", "NZD", "USD", "CAD", "CHF", "JPY", "NOK", "SEK", "SGD", "HKD",
               "MXN", "ZAR", "TRY", "PLN", "CZK", "HUF", "DKK", "CNH")
# Metal: (pip size, price decimals, troy ounces per lot).
_METALS = {"XAU": (0.01, 2, 100.0), "XAG": (0.001, 3, 5_000.0), "XPT": (0.01, 2, 100.0), "XPD": (0.01, 2, 100.0)}


class UnknownInstrumentError(ValueError):
    """A symbol that is neither in the built-in table nor in the configuration."""


@dataclass(frozen=True)
class Instrument:
    """A traded symbol with its pip size (price units), price decimals and currencies."""

    symbol: str
    pip_size: float
    price_precision: int
    base: str
    quote: str
    # Units of the base (currency or troy ounces) in one lot.
    lot_units: float = 100_000.0

    @property
    def point_size(self) -> float:
        """Smallest price step (one unit of the last quoted decimal)."""
        return 10.0 ** -self.price_precision

    @property
    def points_per_pip(self) -> int:
        """Integer number of price points in one pip."""
        return int(round(self.pip_size / self.point_size))


def _builtin_table() -> dict[str, InstrumentSpec]:
    table: dict[str, InstrumentSpec] = {}
    for base in _CURRENCIES:
        for quote in _CURRENCIES:
            if base == quote:
                continue
            if quote == "JPY":
                table[base + quote] = InstrumentSpec(0.01, 3, base, quote)
            else:
                table[base + quote] = InstrumentSpec(0.0001, 5, base, quote)
    for metal, (pip, precision, ounces) in _METALS.items():
        for quote in ("USD", "EUR", "GBP", "AUD", "CHF", "JPY"):
            table[metal + quote] = InstrumentSpec(pip, precision, metal, quote, ounces)
    return table


BUILTIN_INSTRUMENTS: dict[str, InstrumentSpec] = _builtin_table()


def get_instrument(symbol: str, config: Config | None = None) -> Instrument:
    """Look up a symbol, configuration entries first, then the built-in table."""
    symbol = symbol.upper()
    overrides = config.instruments if config is not None else {}
    spec = overrides.get(symbol) or BUILTIN_INSTRUMENTS.get(symbol)
    if spec is None:
        raise UnknownInstrumentError(
            f"Unknown symbol {symbol}: no pip size is known for it. Add it to the configuration as "
            f"[instruments.{symbol}] with pip_size, price_precision, base and quote, "
            f"and pass the file with --config."
        )
    return Instrument(symbol, spec.pip_size, spec.price_precision, spec.base, spec.quote, spec.lot_units)

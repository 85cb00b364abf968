"""FX tick research: validated ticks, bid/ask bars, a research base and a tick-exact strategy search.

Data flow for one pair (see ``vast_mode.py`` for the fan-out over a folder)::

    PAIR_YEAR.parquet -> ticks (UTC ns, bid, ask, pip size) -> bars per timeframe
        -> features, labels (fill kernel), patterns, regimes        [generate-base]
        -> strategies -> fill kernel over ticks -> metrics           [search-light]
"""

__version__ = "0.1.0"

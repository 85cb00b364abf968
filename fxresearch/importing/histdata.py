"""HistData.com ASCII tick files: ``YYYYMMDD HHMMSSmmm,bid,ask,volume``, no header.

HistData states that its times are Eastern Standard Time all year, without daylight saving,
so a time is UTC−5 in winter and summer alike. The symbol comes from the file name, e.g.
``DAT_ASCII_EURUSD_T_202001.csv``.
"""

from __future__ import annotations

from typing import Iterator

import pyarrow as pa

from fxresearch.importing.common import (
    NS_PER_HOUR,
    ImportOptions,
    ReadResult,
    Source,
    SourceInfo,
    TickChunk,
    ZoneRule,
    clock_to_utc,
    iter_csv_batches,
    make_chunk,
    parse_wall_clock,
    prices_to_float,
    resolve_symbol,
)
from fxresearch.importing.detect import read_text_head

FORMAT = "histdata"
TIME_PATTERN = r"^(?P<Y>\d{4})(?P<m>\d{2})(?P<d>\d{2}) (?P<H>\d{2})(?P<M>\d{2})(?P<S>\d{2})(?P<f>\d{3})$"
RULE = ZoneRule("fixed UTC-05:00 (HistData: Eastern Standard Time all year, no daylight saving)", None,
                -5 * NS_PER_HOUR)


def read(source: Source, options: ImportOptions) -> ReadResult:
    """Describe a HistData tick file and stream its ticks."""
    resolved = resolve_symbol(source, None)
    info = SourceInfo(source, FORMAT, resolved.symbol, resolved.variant, "histdata", RULE.description,
                      resolved.origin)
    n_columns = len(read_text_head(source).fields())
    return ReadResult(info, _chunks(source, options, n_columns))


def _chunks(source: Source, options: ImportOptions, n_columns: int) -> Iterator[TickChunk]:
    names = ["time", "bid", "ask", "volume", *(f"extra_{i}" for i in range(max(0, n_columns - 4)))][:n_columns]
    for batch in iter_csv_batches(source, options.block_bytes, column_names=names,
                                  column_types={"time": pa.string()}):
        times = batch.column("time")
        clock = parse_wall_clock(times, TIME_PATTERN)
        utc_ns, dropped = clock_to_utc(clock, RULE, source, times)
        yield make_chunk(utc_ns, clock.valid, prices_to_float(batch.column("bid")),
                         prices_to_float(batch.column("ask")), dropped)

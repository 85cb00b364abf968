"""TrueFX tick files: ``EUR/USD,20130101 21:59:59.981,bid,ask``, no header, times in UTC.

The symbol is in every row; the first row's symbol is used and a file that mixes symbols
is rejected.
"""

from __future__ import annotations

from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc

from fxresearch.importing.common import (
    UTC_RULE,
    ImportDataError,
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

FORMAT = "truefx"
TIME_PATTERN = (r"^(?P<Y>\d{4})(?P<m>\d{2})(?P<d>\d{2}) (?P<H>\d{2}):(?P<M>\d{2}):(?P<S>\d{2})"
                r"(?:\.(?P<f>\d{1,9}))?$")
RULE = ZoneRule("UTC (TrueFX publishes its times in UTC)")


def read(source: Source, options: ImportOptions) -> ReadResult:
    """Describe a TrueFX tick file and stream its ticks."""
    head = read_text_head(source)
    content_symbol = head.fields()[0]
    resolved = resolve_symbol(source, content_symbol)
    info = SourceInfo(source, FORMAT, resolved.symbol, resolved.variant, "truefx", RULE.description,
                      resolved.origin, [resolved.note] if resolved.note else [])
    return ReadResult(info, _chunks(source, options, content_symbol, len(head.fields())))


def _chunks(source: Source, options: ImportOptions, content_symbol: str, n_columns: int) -> Iterator[TickChunk]:
    names = ["symbol", "time", "bid", "ask", *(f"extra_{i}" for i in range(max(0, n_columns - 4)))][:n_columns]
    for batch in iter_csv_batches(source, options.block_bytes, column_names=names,
                                  column_types={"symbol": pa.string(), "time": pa.string()}):
        check_one_symbol(batch.column("symbol"), content_symbol, source)
        times = batch.column("time")
        clock = parse_wall_clock(times, TIME_PATTERN)
        utc_ns, dropped = clock_to_utc(clock, UTC_RULE, source, times)
        yield make_chunk(utc_ns, clock.valid, prices_to_float(batch.column("bid")),
                         prices_to_float(batch.column("ask")), dropped)


def check_one_symbol(symbols: pa.Array, expected: str, source: Source) -> None:
    """Raise ImportDataError when a symbol column holds another symbol than ``expected``."""
    distinct = [value for value in pc.unique(symbols).to_pylist() if value is not None]
    others = [value for value in distinct if value.strip() != expected]
    if others:
        raise ImportDataError(
            f"{source.label} mixes symbols: {expected!r} and {others[0]!r}. Split it into one file per symbol."
        )

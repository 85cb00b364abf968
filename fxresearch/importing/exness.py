"""Exness tick exports: header ``"Exness","Symbol","Timestamp","Bid","Ask"``, times in UTC with ``Z``.

The symbol column carries the account variant (``EURUSDm``, ``EURUSDc``,
``EURUSD_Raw_Spread``, ``EURUSD_Zero_Spread``). Variants are separate feeds with different
spreads, so the variant is kept and two variants are never merged where they overlap.
"""

from __future__ import annotations

from typing import Iterator

import pyarrow as pa

from fxresearch.importing.common import (
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
from fxresearch.importing.truefx import check_one_symbol

FORMAT = "exness"
ISO_PATTERN = (r"^(?P<Y>\d{4})-(?P<m>\d{2})-(?P<d>\d{2})[T ](?P<H>\d{2}):(?P<M>\d{2}):(?P<S>\d{2})"
               r"(?:\.(?P<f>\d{1,9}))?\s*(?P<z>Z|UTC|[+-]\d{2}:?\d{2})?$")
RULE = ZoneRule("UTC (Exness exports times in UTC, marked Z)")
COLUMNS = ["exness", "symbol", "timestamp", "bid", "ask"]


def read(source: Source, options: ImportOptions) -> ReadResult:
    """Describe an Exness tick export and stream its ticks."""
    head = read_text_head(source)
    header = [name.lower() for name in head.fields(0)]
    if header[:5] != COLUMNS:
        raise ImportDataError(f"{source.label}: expected the Exness header "
                              f"\"Exness\",\"Symbol\",\"Timestamp\",\"Bid\",\"Ask\", found {head.lines[0]!r}.")
    if len(head.lines) < 2:
        raise ImportDataError(f"{source.label} contains the Exness header but no tick row.")
    content_symbol = head.fields(1)[1]
    resolved = resolve_symbol(source, content_symbol)
    info = SourceInfo(source, FORMAT, resolved.symbol, resolved.variant, "exness", RULE.description,
                      resolved.origin, [resolved.note] if resolved.note else [])
    return ReadResult(info, _chunks(source, options, content_symbol, len(header)))


def _chunks(source: Source, options: ImportOptions, content_symbol: str, n_columns: int) -> Iterator[TickChunk]:
    names = COLUMNS + [f"extra_{i}" for i in range(n_columns - len(COLUMNS))]
    for batch in iter_csv_batches(source, options.block_bytes, column_names=names, skip_rows=1,
                                  column_types={"symbol": pa.string(), "timestamp": pa.string()}):
        check_one_symbol(batch.column("symbol"), content_symbol, source)
        times = batch.column("timestamp")
        clock = parse_wall_clock(times, ISO_PATTERN)
        # Rows without a Z are UTC too, by the vendor's rule.
        utc_ns, dropped = clock_to_utc(clock, RULE, source, times)
        yield make_chunk(utc_ns, clock.valid, prices_to_float(batch.column("bid")),
                         prices_to_float(batch.column("ask")), dropped)

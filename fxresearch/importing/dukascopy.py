"""Dukascopy ticks: ``.bi5`` hour files and CSV exports.

``.bi5``: one LZMA-compressed file per hour of 20-byte big-endian records: uint32
milliseconds since the hour, uint32 ask, uint32 bid (integer prices), float32 ask and bid
volumes. Prices are divided by 10^3 for JPY-quoted pairs and metals and by 10^5 for other
pairs. Times are UTC. The hour comes from the path: Dukascopy's own layout
``EURUSD/2019/01/04/00h_ticks.bi5`` counts months from 0 (01 is February), and the name
``..._EURUSD_2019-02-04_00h_ticks.bi5`` gives the real date.

CSV exports: the header starts with ``Gmt time`` (UTC, day first: ``04.02.2019
00:00:00.123``) or ``Local time`` (each row carries its own ``GMT+0200`` offset). The Ask
column comes before Bid; columns are found by name.
"""

from __future__ import annotations

import lzma
import re
from collections import Counter
from typing import Iterator

import numpy as np
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
    parse_zone,
    prices_to_float,
    resolve_symbol,
)
from fxresearch.importing.detect import read_text_head

BI5_FORMAT = "dukascopy-bi5"
CSV_FORMAT = "dukascopy-csv"
BI5_RULE = ZoneRule("UTC (Dukascopy hour files; hour from the path)")
RECORD = np.dtype([("ms", ">u4"), ("ask", ">u4"), ("bid", ">u4"), ("ask_volume", ">f4"), ("bid_volume", ">f4")])
# An hour file decompresses to a few MB; a larger result is not a tick file.
MAX_DECOMPRESSED_BYTES = 512 << 20

_NAME_HOUR_RE = re.compile(r"(?P<Y>\d{4})-(?P<m>\d{2})-(?P<d>\d{2})_(?P<H>\d{2})h_ticks", re.IGNORECASE)
_NATIVE_HOUR_RE = re.compile(r"^(?P<H>\d{2})h_ticks\.bi5$", re.IGNORECASE)
CSV_PATTERN = (r"^(?P<d>\d{2})\.(?P<m>\d{2})\.(?P<Y>\d{4}) (?P<H>\d{2}):(?P<M>\d{2}):(?P<S>\d{2})"
               r"(?:\.(?P<f>\d{1,9}))?(?:\s*GMT(?P<z>[+-]\d{2}:?\d{2}))?$")


def price_divisor(symbol: str) -> float:
    """Return the integer-price divisor of a Dukascopy instrument: 10^3 for JPY pairs and metals, else 10^5."""
    if symbol.endswith("JPY") or symbol.startswith(("XAU", "XAG", "XPT", "XPD")):
        return 1e3
    return 1e5


def hour_start_ns(source: Source) -> int:
    """Return the UTC start of the hour a ``.bi5`` file covers, from its name or its folders.

    Raises
    ------
    ImportDataError
        Neither layout matches.
    """
    match = _NAME_HOUR_RE.search(source.name)
    if match:
        year, month, day, hour = (int(match[key]) for key in "YmdH")
    else:
        parts = source.name_parts
        native = _NATIVE_HOUR_RE.match(source.name)
        if native is None or len(parts) < 4 or not all(p.isdigit() for p in parts[-4:-1]):
            raise ImportDataError(
                f"Cannot tell the hour of Dukascopy file {source.label}: expected Dukascopy's layout "
                f"SYMBOL/YYYY/MM/DD/HHh_ticks.bi5 (months from 00) or a name containing YYYY-MM-DD_HHh_ticks."
            )
        year, month, day = int(parts[-4]), int(parts[-3]) + 1, int(parts[-2])
        hour = int(native["H"])
    try:
        start = np.datetime64(f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}", "ns")
    except ValueError:
        raise ImportDataError(f"Invalid date or hour in the path of Dukascopy file {source.label}.") from None
    return int(start.astype(np.int64))


def read_bi5(source: Source, options: ImportOptions) -> ReadResult:
    """Describe a Dukascopy ``.bi5`` hour file and read its ticks."""
    if "candles" in source.name.lower():
        raise ImportDataError(f"{source.label} is a Dukascopy candle (bar) file, not ticks. Pass *_ticks.bi5 files.")
    resolved = resolve_symbol(source, None)
    info = SourceInfo(source, BI5_FORMAT, resolved.symbol, resolved.variant, "dukascopy", BI5_RULE.description,
                      resolved.origin)
    return ReadResult(info, _bi5_chunks(source, resolved.symbol))


def _bi5_chunks(source: Source, symbol: str) -> Iterator[TickChunk]:
    start_ns = hour_start_ns(source)
    with source.open() as handle:
        compressed = handle.read()
    if not compressed:
        return  # Dukascopy publishes empty files for hours without ticks
    decompressor = lzma.LZMADecompressor()
    try:
        raw = decompressor.decompress(compressed, max_length=MAX_DECOMPRESSED_BYTES)
    except lzma.LZMAError as exc:
        raise ImportDataError(f"Cannot decompress Dukascopy file {source.label}: {exc}. Download it again.") from exc
    if len(raw) % RECORD.itemsize:
        raise ImportDataError(
            f"Dukascopy file {source.label} holds {len(raw)} bytes, not a whole number of 20-byte tick records. "
            f"Download it again."
        )
    records = np.frombuffer(raw, dtype=RECORD)
    divisor = price_divisor(symbol)
    timestamp_ns = start_ns + records["ms"].astype(np.int64) * 1_000_000
    bid = records["bid"].astype(np.float64) / divisor
    ask = records["ask"].astype(np.float64) / divisor
    yield make_chunk(timestamp_ns, np.ones(len(records), dtype=bool), bid, ask, Counter())


def read_csv(source: Source, options: ImportOptions) -> ReadResult:
    """Describe a Dukascopy CSV export and stream its ticks."""
    head = read_text_head(source)
    header = [name.lower() for name in head.fields(0)]
    time_name = header[0]
    if time_name not in ("gmt time", "local time") or "bid" not in header or "ask" not in header:
        raise ImportDataError(f"{source.label}: expected a Dukascopy header such as "
                              f"'Gmt time,Ask,Bid,AskVolume,BidVolume', found {head.lines[0]!r}.")
    if time_name == "gmt time":
        rule: ZoneRule | None = ZoneRule("UTC (Dukascopy 'Gmt time' column, day first)")
    else:
        rule = parse_zone(options.source_tz, "--source-tz") if options.source_tz else None
    description = (rule.description if time_name == "gmt time" and rule is not None
                   else "each row's own GMT offset (Dukascopy 'Local time')")
    resolved = resolve_symbol(source, None)
    info = SourceInfo(source, CSV_FORMAT, resolved.symbol, resolved.variant, "dukascopy", description,
                      resolved.origin)
    return ReadResult(info, _csv_chunks(source, options, header, head.delimiter, rule))


def _csv_chunks(source: Source, options: ImportOptions, header: list[str], delimiter: str,
                rule: ZoneRule | None) -> Iterator[TickChunk]:
    names = [f"c{i}_{name}" for i, name in enumerate(header)]
    time_column, bid_column, ask_column = names[0], names[header.index("bid")], names[header.index("ask")]
    for batch in iter_csv_batches(source, options.block_bytes, column_names=names, skip_rows=1, delimiter=delimiter,
                                  column_types={time_column: pa.string()}):
        times = batch.column(time_column)
        clock = parse_wall_clock(times, CSV_PATTERN)
        utc_ns, dropped = clock_to_utc(clock, rule, source, times)
        yield make_chunk(utc_ns, clock.valid, prices_to_float(batch.column(bid_column)),
                         prices_to_float(batch.column(ask_column)), dropped)


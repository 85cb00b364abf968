"""Quote ticks re-encoded as parquet by nautilus_trader's data catalog.

Two layouts: prices as decimal strings (``bid``, ``ask``), or as int64 fixed point scaled by
10^9 (``bid_price``, ``ask_price``); both with ``ts_event`` in nanoseconds. ``ts_event`` is
UTC by the layout's definition, but a HistData source stored the vendor's Eastern Standard
Time wall clock (UTC−5, no daylight saving) there as if it were UTC, so for HistData the
five hours are added back. The vendor comes from the file name (``histdata_...``,
``truefx_...``); for an unknown vendor ``--source-tz`` states the zone of the stored clock.
The symbol comes from the ``instrument_id`` metadata (``AUD/USD.SIM``) when present.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fxresearch.importing.common import (
    NS_PER_HOUR,
    ImportDataError,
    ImportOptions,
    ReadResult,
    Source,
    SourceInfo,
    TickChunk,
    ZoneRule,
    make_chunk,
    prices_to_float,
    resolve_symbol,
)
from fxresearch.importing.lean import zone_rule_from_path

FORMAT = "nautilus-parquet"
FIXED_POINT_SCALE = 1e9
BATCH_ROWS = 1_000_000
VENDOR_RULES = {
    "histdata": ZoneRule("ts_event holds HistData's Eastern Standard Time wall clock (UTC-05:00, no daylight "
                         "saving) stored as UTC; read as fixed UTC-05:00", None, -5 * NS_PER_HOUR),
    "truefx": ZoneRule("UTC (ts_event in UTC; TrueFX times are UTC)"),
    "dukascopy": ZoneRule("UTC (ts_event in UTC; Dukascopy times are UTC)"),
    "oanda": ZoneRule("UTC (ts_event in UTC; OANDA times are UTC)"),
    "exness": ZoneRule("UTC (ts_event in UTC; Exness times are UTC)"),
}
_PRICE_COLUMNS = (("bid_price", "ask_price"), ("bid", "ask"))


def read(source: Source, options: ImportOptions) -> ReadResult:
    """Describe a re-encoded parquet tick file and read its ticks in batches."""
    if source.member is not None:
        raise ImportDataError(f"{source.label}: parquet files inside zip archives are not read; unzip it first.")
    try:
        schema = pq.read_schema(source.path)
    except (pa.ArrowException, OSError) as exc:
        raise ImportDataError(f"Cannot read parquet file {source.label}: {exc}.") from exc
    names = set(schema.names)
    prices = next((pair for pair in _PRICE_COLUMNS if set(pair) <= names), None)
    if "ts_event" not in names or prices is None:
        raise ImportDataError(
            f"{source.label}: expected a parquet file with ts_event and bid/ask or bid_price/ask_price columns, "
            f"found {', '.join(schema.names)}. A PAIR_YEAR.parquet tick file needs no conversion."
        )
    vendor, rule = zone_rule_from_path(
        source, VENDOR_RULES, options,
        "cannot tell the vendor from the file name, so it is unknown whether ts_event is true UTC. Put the "
        "vendor (histdata, truefx, dukascopy, oanda) in the name, or pass --source-tz with the zone of the "
        "stored clock (UTC when it is true UTC).")
    metadata = {k.decode(): v.decode() for k, v in (schema.metadata or {}).items() if k != b"pandas"}
    resolved = resolve_symbol(source, metadata.get("instrument_id"))
    info = SourceInfo(source, FORMAT, resolved.symbol, resolved.variant, vendor or "nautilus", rule.description,
                      resolved.origin, [resolved.note] if resolved.note else [])
    return ReadResult(info, _chunks(source, prices, rule))


def _price_array(column: pa.Array) -> np.ndarray:
    if pa.types.is_integer(column.type):
        return column.to_numpy(zero_copy_only=False).astype(np.float64) / FIXED_POINT_SCALE
    return prices_to_float(column)


def _chunks(source: Source, prices: tuple[str, str], rule: ZoneRule) -> Iterator[TickChunk]:
    parquet_file = pq.ParquetFile(source.path)
    for batch in parquet_file.iter_batches(batch_size=BATCH_ROWS, columns=["ts_event", *prices]):
        stored = batch.column("ts_event")
        valid = stored.is_valid().to_numpy(zero_copy_only=False)
        stored_ns = stored.fill_null(0).cast(pa.int64()).to_numpy(zero_copy_only=False)
        utc_ns, exists = rule.to_utc_ns(stored_ns)
        dropped: Counter[str] = Counter()
        if not valid.all():
            dropped["unreadable timestamp"] += int(np.count_nonzero(~valid))
        yield make_chunk(utc_ns, valid & exists, _price_array(batch.column(prices[0])),
                         _price_array(batch.column(prices[1])), dropped)

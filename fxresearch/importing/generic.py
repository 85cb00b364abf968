"""Generic tick CSV: columns found by name, or ``time,bid,ask`` without a header.

Accepted names (any case, spaces as underscores): time ``timestamp``, ``time``, ``datetime``,
``date_time``, ``ts``, ``ts_event``, or a ``date`` and a ``time`` column; bid ``bid``,
``bid_price``, ``bidprice``; ask ``ask``, ``ask_price``, ``askprice``, ``offer``; an optional
``symbol``/``instrument``/``pair`` column. Times may be year-first text (``2024-01-02
03:04:05.123``, ``2024.01.02 …``, ``20240102 030405``, ``20240102030405``), with or without
a zone (``Z``, ``+02:00``), or integer epochs (10, 13, 16 or 19 digits: s, ms, µs, ns).
Text without a zone needs ``--source-tz``; an epoch is UTC by definition.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

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
from fxresearch.importing.detect import TextHead, read_text_head
from fxresearch.importing.truefx import check_one_symbol

FORMAT = "generic"
TIME_PATTERN = (r"^(?P<Y>\d{4})[-./]?(?P<m>\d{2})[-./]?(?P<d>\d{2})[T ]?(?P<H>\d{2}):?(?P<M>\d{2}):?(?P<S>\d{2})"
                r"(?:[.,](?P<f>\d{1,9}))?\s*(?P<z>Z|UTC|GMT|[+-]\d{2}:?\d{2})?$")
TIME_NAMES = ("timestamp", "time", "datetime", "date_time", "ts", "ts_event", "gmt_time", "utc_time")
BID_NAMES = ("bid", "bid_price", "bidprice")
ASK_NAMES = ("ask", "ask_price", "askprice", "offer")
SYMBOL_NAMES = ("symbol", "instrument", "pair", "ticker")
_EPOCH_NS_PER_UNIT = {10: 1_000_000_000, 13: 1_000_000, 16: 1_000, 19: 1}
_EPOCH_RE = re.compile(r"^\d{10}(\d{3}){0,3}$")


def _normal(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


def _find(header: list[str], candidates: tuple[str, ...]) -> int | None:
    for name in candidates:
        if name in header:
            return header.index(name)
    return None


def _layout(head: TextHead, source: Source) -> tuple[list[str], bool, dict[str, int | None]]:
    """Return column names, whether the first line is a header, and the index of each role."""
    fields = head.fields()
    header = [_normal(name) for name in fields]
    has_header = _find(header, BID_NAMES) is not None or _find(header, ASK_NAMES) is not None
    if not has_header:
        if len(fields) < 3:
            raise ImportDataError(f"{source.label}: expected at least three columns (time, bid, ask), "
                                  f"found {head.lines[0]!r}.")
        names = ["time", "bid", "ask", *(f"extra_{i}" for i in range(len(fields) - 3))]
        return names, False, {"time": 0, "date": None, "bid": 1, "ask": 2, "symbol": None}
    roles: dict[str, int | None] = {
        "time": _find(header, TIME_NAMES), "date": _find(header, ("date",)),
        "bid": _find(header, BID_NAMES), "ask": _find(header, ASK_NAMES), "symbol": _find(header, SYMBOL_NAMES),
    }
    if roles["time"] is None and roles["date"] is not None:
        roles["time"], roles["date"] = roles["date"], None
    missing = [role for role in ("time", "bid", "ask") if roles[role] is None]
    if missing:
        raise ImportDataError(
            f"{source.label}: no {' or '.join(missing)} column among {', '.join(fields)}. Name the columns "
            f"timestamp, bid and ask, or pass --format for a vendor format."
        )
    names = [f"c{i}_{name}" for i, name in enumerate(header)]
    return names, True, roles


def read(source: Source, options: ImportOptions) -> ReadResult:
    """Describe a generic tick CSV and stream its ticks."""
    head = read_text_head(source)
    names, has_header, roles = _layout(head, source)
    content_symbol = None
    if roles["symbol"] is not None and len(head.lines) > 1:
        content_symbol = head.fields(1)[roles["symbol"]]
    rule = parse_zone(options.source_tz, "--source-tz") if options.source_tz else None
    resolved = resolve_symbol(source, content_symbol)
    description = rule.description if rule else "the zone written in each timestamp"
    info = SourceInfo(source, FORMAT, resolved.symbol, resolved.variant, "generic", description,
                      resolved.origin, [resolved.note] if resolved.note else [])
    return ReadResult(info, _chunks(source, options, head, names, has_header, roles, rule, content_symbol))


def _column(batch: pa.RecordBatch, names: list[str], roles: dict[str, int | None], role: str) -> pa.Array:
    """Return the batch's column for ``role``; the header check made sure the role has one."""
    index = roles[role]
    if index is None:
        raise ValueError(f"the generic CSV reader found no {role} column")
    return batch.column(names[index])


def _times(batch: pa.RecordBatch, names: list[str], roles: dict[str, int | None]) -> pa.Array:
    times = _column(batch, names, roles, "time")
    if roles["date"] is not None:
        times = pc.binary_join_element_wise(batch.column(names[roles["date"]]), times, " ")
    return times


def _chunks(source: Source, options: ImportOptions, head: TextHead, names: list[str], has_header: bool,
            roles: dict[str, int | None], rule: ZoneRule | None, content_symbol: str | None) -> Iterator[TickChunk]:
    text_columns = [names[i] for key, i in roles.items() if i is not None and key in ("time", "date", "symbol")]
    for batch in iter_csv_batches(source, options.block_bytes, column_names=names, skip_rows=1 if has_header else 0,
                                  delimiter=head.delimiter, encoding=head.encoding,
                                  column_types={name: pa.string() for name in text_columns}):
        if content_symbol is not None:
            check_one_symbol(_column(batch, names, roles, "symbol"), content_symbol, source)
        times = pc.utf8_trim_whitespace(_times(batch, names, roles))
        utc_ns, valid, dropped, zone_rows = _parse_times(times, rule, source)
        chunk = make_chunk(utc_ns, valid, prices_to_float(_column(batch, names, roles, "bid")),
                           prices_to_float(_column(batch, names, roles, "ask")), dropped)
        chunk.zone_rows = zone_rows
        yield chunk


def _parse_times(times: pa.Array, rule: ZoneRule | None,
                 source: Source) -> tuple[np.ndarray, np.ndarray, Counter[str], Counter[str]]:
    """Parse text or epoch times of one batch into UTC ns, a validity mask, dropped counts and zone counts.

    The zone counts tell the rows whose text carried a zone from those read with ``rule``
    (``--source-tz``), so a file that mixes the two can be reported.
    """
    first = next((value for value in times.slice(0, 1000).to_pylist() if value), None)
    if first is not None and _EPOCH_RE.match(first):
        unit_ns = _EPOCH_NS_PER_UNIT[len(first)]
        is_epoch = pc.match_substring_regex(times, _EPOCH_RE.pattern).to_numpy(zero_copy_only=False)
        digits = pc.if_else(pc.match_substring_regex(times, _EPOCH_RE.pattern), times, "0")
        values = pc.cast(digits, pa.int64()).to_numpy(zero_copy_only=False)
        lengths = pc.utf8_length(times).to_numpy(zero_copy_only=False)
        valid = is_epoch & (lengths == len(first))
        dropped: Counter[str] = Counter()
        if not valid.all():
            dropped["unreadable timestamp"] += int(np.count_nonzero(~valid))
        return np.where(valid, values * unit_ns, 0), valid, dropped, Counter()
    clock = parse_wall_clock(times, TIME_PATTERN)
    zone_rows: Counter[str] = Counter()
    if clock.has_offset is not None:
        zone_rows["own zone"] = int(np.count_nonzero(clock.valid & clock.has_offset))
        zone_rows["source tz"] = int(np.count_nonzero(clock.valid & ~clock.has_offset))
    utc_ns, dropped = clock_to_utc(clock, rule, source, times)
    return utc_ns, clock.valid, dropped, zone_rows

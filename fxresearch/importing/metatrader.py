"""MetaTrader 5 tick exports: tab-separated ``<DATE> <TIME> <BID> <ASK> <LAST> <VOLUME> <FLAGS>``.

Times are the broker's server clock, with no zone in the file. ``--server-tz`` gives it.
Without it, the offset is inferred from the weekly open: the FX market opens on Sunday at
17:00 New York time, so the first tick after each weekend gap, read on the server clock,
is that instant plus the server's offset. The inferred rule is a fixed UTC offset when every
weekend gives the same one, or "New York time + N hours" (the common MetaTrader clock that
follows US daylight saving) when every weekend gives that.

A row that updates one side leaves the other empty; that side is carried forward from its
last value. Rows before the first value of a side, and rows with neither bid nor ask
(last-price or volume updates), are dropped and counted.
"""

from __future__ import annotations

import logging
from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from fxresearch.importing.common import (
    NS_PER_DAY,
    NS_PER_HOUR,
    NS_PER_MINUTE,
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
from fxresearch.timeutil import NEW_YORK

logger = logging.getLogger(__name__)

FORMAT = "mt5"
TIME_PATTERN = (r"^(?P<Y>\d{4})\.(?P<m>\d{2})\.(?P<d>\d{2}) (?P<H>\d{2}):(?P<M>\d{2}):(?P<S>\d{2})"
                r"(?:\.(?P<f>\d{1,9}))?$")
# A gap this long in server time is a weekend (or a holiday) close.
WEEKEND_GAP_NS = 36 * NS_PER_HOUR
# The first tick after the open may lag it; a larger distance from a whole-hour offset means
# the gap ended at another time (a holiday reopening) and it is not used.
MAX_OPEN_LAG_NS = 20 * NS_PER_MINUTE
MAX_WEEKLY_OPENS = 520


def read(source: Source, options: ImportOptions) -> ReadResult:
    """Describe a MetaTrader 5 tick export, with its server-time rule, and stream its ticks."""
    head = read_text_head(source)
    header = [name.upper() for name in head.fields(0)]
    for required in ("<DATE>", "<TIME>", "<BID>", "<ASK>"):
        if required not in header:
            raise ImportDataError(f"{source.label}: the MetaTrader header lacks {required}; found {head.lines[0]!r}.")
    names = [f"c{i}_{name.strip('<>').lower()}" for i, name in enumerate(header)]
    columns = {name.strip("<>").lower(): names[i] for i, name in enumerate(header)}
    if options.server_tz:
        rule = parse_zone(options.server_tz, "--server-tz")
    else:
        opens = _weekly_opens(source, options, head, names, columns)
        rule = infer_server_rule(opens, source)
        logger.info("%s: server time rule inferred: %s", source.label, rule.description)
    resolved = resolve_symbol(source, None)
    info = SourceInfo(source, FORMAT, resolved.symbol, resolved.variant, "mt5", rule.description, resolved.origin)
    return ReadResult(info, _chunks(source, options, head, names, columns, rule))


def _server_times(batch: pa.RecordBatch, columns: dict[str, str]) -> pa.Array:
    return pc.binary_join_element_wise(batch.column(columns["date"]), batch.column(columns["time"]), " ")


def _batches(source: Source, options: ImportOptions, head: TextHead, names: list[str],
             columns: dict[str, str]) -> Iterator[pa.RecordBatch]:
    types = {columns["date"]: pa.string(), columns["time"]: pa.string(), columns["bid"]: pa.string(),
             columns["ask"]: pa.string()}
    return iter_csv_batches(source, options.block_bytes, column_names=names, skip_rows=1, delimiter="\t",
                            encoding=head.encoding, column_types=types)


def _weekly_opens(source: Source, options: ImportOptions, head: TextHead, names: list[str],
                  columns: dict[str, str]) -> list[int]:
    """Return the server times of the first tick after each gap of 36 hours or more (a first pass)."""
    opens: list[int] = []
    previous: int | None = None
    for batch in _batches(source, options, head, names, columns):
        clock = parse_wall_clock(_server_times(batch, columns), TIME_PATTERN)
        wall_ns = clock.wall_ns[clock.valid]
        if len(wall_ns) == 0:
            continue
        if previous is not None:
            wall_ns = np.concatenate([[previous], wall_ns])
        gaps = np.flatnonzero(np.diff(wall_ns) >= WEEKEND_GAP_NS)
        opens.extend(int(wall_ns[i + 1]) for i in gaps)
        previous = int(wall_ns[-1])
        if len(opens) >= MAX_WEEKLY_OPENS:
            break
    return opens


def infer_server_rule(open_wall_ns: list[int], source: Source) -> ZoneRule:
    """Infer the server clock from the server times of weekly opens (Sunday 17:00 New York).

    Raises
    ------
    ImportDataError
        The file has no weekend gap, or its weekends give no single rule.
    """
    offsets_utc: list[int] = []
    offsets_new_york: list[int] = []
    for wall_ns in open_wall_ns:
        match = _offset_from_open(wall_ns)
        if match is not None:
            offsets_utc.append(match[0])
            offsets_new_york.append(match[1])
    if not offsets_utc:
        raise ImportDataError(
            f"{source.label}: cannot infer the MetaTrader server's time zone, because the file contains no "
            f"weekend gap that ends at the Sunday 17:00 New York open. Pass it with --server-tz, e.g. "
            f"--server-tz UTC+2 or --server-tz Europe/Athens."
        )
    count = len(offsets_utc)
    if len(set(offsets_utc)) == 1:
        hours = offsets_utc[0] / NS_PER_HOUR
        return ZoneRule(f"server time = fixed UTC{hours:+g} h, inferred from {count} weekly opens "
                        f"(Sunday 17:00 New York)", None, offsets_utc[0])
    if len(set(offsets_new_york)) == 1:
        hours = offsets_new_york[0] / NS_PER_HOUR
        return ZoneRule(f"server time = New York time {hours:+g} h (follows US daylight saving), inferred from "
                        f"{count} weekly opens (Sunday 17:00 New York)", NEW_YORK, offsets_new_york[0])
    found = sorted({f"UTC{o / NS_PER_HOUR:+g}" for o in offsets_utc})
    raise ImportDataError(
        f"{source.label}: the weekly opens give different server offsets ({', '.join(found)}) that follow "
        f"neither a fixed offset nor New York daylight saving. Pass the server's zone with --server-tz."
    )


def _offset_from_open(wall_ns: int) -> tuple[int, int] | None:
    """Return (server minus UTC, server minus New York wall clock), whole hours, for one weekly open.

    The open is the Sunday 17:00 New York nearest to the server time read as UTC; servers
    run between UTC-12 and UTC+14, so that Sunday is within a day of it.
    """
    day = wall_ns // NS_PER_DAY
    best: tuple[int, int] | None = None
    for candidate in (day - 1, day, day + 1):
        # 1970-01-01 was a Thursday, so (days + 3) % 7 is 0 on Mondays and 6 on Sundays.
        if (candidate + 3) % 7 != 6:
            continue
        local_open = pd.Timestamp(int(candidate * NS_PER_DAY + 17 * NS_PER_HOUR), unit="ns")
        open_utc = int(local_open.tz_localize(NEW_YORK).tz_convert("UTC").as_unit("ns").value)
        offset = wall_ns - open_utc
        rounded = int(round(offset / NS_PER_HOUR)) * NS_PER_HOUR
        if abs(offset - rounded) > MAX_OPEN_LAG_NS or abs(rounded) > 14 * NS_PER_HOUR:
            continue
        new_york_wall = candidate * NS_PER_DAY + 17 * NS_PER_HOUR
        best = (rounded, rounded + open_utc - new_york_wall)
    return best


def _carry_forward(values: np.ndarray, last: float) -> tuple[np.ndarray, float]:
    """Fill NaN from the previous value in the array, or from ``last`` (the previous chunk's value)."""
    index = np.where(np.isnan(values), -1, np.arange(len(values)))
    np.maximum.accumulate(index, out=index)
    filled = np.where(index >= 0, values[np.maximum(index, 0)], last)
    new_last = float(filled[-1]) if len(filled) else last
    return filled, new_last


def _chunks(source: Source, options: ImportOptions, head: TextHead, names: list[str], columns: dict[str, str],
            rule: ZoneRule) -> Iterator[TickChunk]:
    last_bid = last_ask = float("nan")
    for batch in _batches(source, options, head, names, columns):
        times = _server_times(batch, columns)
        clock = parse_wall_clock(times, TIME_PATTERN)
        utc_ns, dropped = clock_to_utc(clock, rule, source, times)
        bid = prices_to_float(batch.column(columns["bid"]))
        ask = prices_to_float(batch.column(columns["ask"]))

        # Only quote rows with a readable time carry a side forward, in file order.
        no_quote = np.isnan(bid) & np.isnan(ask) & clock.valid
        if no_quote.any():
            dropped["no bid or ask (last-price or volume update)"] += int(np.count_nonzero(no_quote))
        keep = clock.valid & ~no_quote
        bid_kept, last_bid = _carry_forward(bid[keep], last_bid)
        ask_kept, last_ask = _carry_forward(ask[keep], last_ask)
        before_first = np.isnan(bid_kept) | np.isnan(ask_kept)
        if before_first.any():
            dropped["one side empty before its first quote"] += int(np.count_nonzero(before_first))
        chunk = make_chunk(utc_ns[keep], ~before_first, bid_kept, ask_kept, dropped)
        chunk.rows_read = batch.num_rows
        yield chunk


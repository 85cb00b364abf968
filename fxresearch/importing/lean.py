"""LEAN (QuantConnect) forex tick day files: a zip per day holding ``ms since midnight,bid,ask``.

The date comes from the file name (``20140501_eurusd_tick_quote.csv`` inside
``20140501_quote.zip``, or a name containing ``2014-05-01``) and the market from the path
(``forex/oanda/...``, ``oanda_EURUSD_...``). LEAN stores OANDA days in UTC and FXCM days in
fixed UTC−5. For another market, ``--source-tz`` gives the zone.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Iterator

import numpy as np
import pyarrow as pa

from fxresearch.importing.common import (
    NS_PER_HOUR,
    ImportDataError,
    ImportOptions,
    ReadResult,
    Source,
    SourceInfo,
    TickChunk,
    ZoneRule,
    iter_csv_batches,
    make_chunk,
    parse_zone,
    prices_to_float,
    resolve_symbol,
)
from fxresearch.importing.detect import read_text_head

FORMAT = "lean"
MARKET_RULES = {
    "oanda": ZoneRule("UTC (LEAN OANDA data)"),
    "fxcm": ZoneRule("fixed UTC-05:00 (LEAN FXCM data)", None, -5 * NS_PER_HOUR),
}
_DATE_RE = re.compile(r"(?<!\d)(?P<Y>(?:19|20)\d{2})-?(?P<m>\d{2})-?(?P<d>\d{2})(?!\d)")
MS_PER_DAY = 86_400_000


def vendor_from_path(source: Source, vendors: tuple[str, ...]) -> str | None:
    """Return the first of ``vendors`` found as a word in the input's names, innermost first."""
    for part in reversed(source.name_parts):
        words = set(re.split(r"[^a-z0-9]+", part.lower()))
        for vendor in vendors:
            if vendor in words:
                return vendor
    return None


def zone_rule_from_path(source: Source, rules: dict[str, ZoneRule], options: ImportOptions,
                        unknown: str) -> tuple[str | None, ZoneRule]:
    """Return the vendor named in the input's path and its zone rule, else ``--source-tz``'s rule.

    Raises ImportDataError with ``unknown`` (what cannot be told, and the fix) when the path
    names none of ``rules`` and no ``--source-tz`` is given.
    """
    vendor = vendor_from_path(source, tuple(rules))
    if vendor is not None:
        return vendor, rules[vendor]
    if options.source_tz:
        return None, parse_zone(options.source_tz, "--source-tz")
    raise ImportDataError(f"{source.label}: {unknown}")


def day_start_ns(source: Source) -> int:
    """Return midnight (as wall-clock ns) of the day named in the file or archive name."""
    for part in reversed(source.name_parts[-2:]):
        match = _DATE_RE.search(part)
        if match:
            try:
                day = np.datetime64(f"{match['Y']}-{match['m']}-{match['d']}", "ns")
            except ValueError:
                continue
            return int(day.astype(np.int64))
    raise ImportDataError(
        f"Cannot tell the day of LEAN file {source.label}: its name must contain the date, as "
        f"20140501_eurusd_tick_quote.csv or ..._2014-05-01_... does."
    )


def read(source: Source, options: ImportOptions) -> ReadResult:
    """Describe a LEAN tick day file and stream its ticks."""
    head = read_text_head(source)
    n_columns = len(head.fields())
    if n_columns != 3:
        kind = "a LEAN bar file" if n_columns >= 9 else "not a LEAN tick file"
        raise ImportDataError(f"{source.label} has {n_columns} columns, {kind}; LEAN forex ticks have three "
                              f"(ms since midnight, bid, ask).")
    market, rule = zone_rule_from_path(
        source, MARKET_RULES, options,
        "cannot tell the LEAN market (oanda or fxcm) from the path, so the time zone is unknown. Put the "
        "market in the folder or file name, or pass --source-tz.")
    resolved = resolve_symbol(source, None)
    info = SourceInfo(source, FORMAT, resolved.symbol, resolved.variant, market or "lean", rule.description,
                      resolved.origin)
    return ReadResult(info, _chunks(source, options, rule))


def _chunks(source: Source, options: ImportOptions, rule: ZoneRule) -> Iterator[TickChunk]:
    midnight_ns = day_start_ns(source)
    for batch in iter_csv_batches(source, options.block_bytes, column_names=["ms", "bid", "ask"],
                                  column_types={"ms": pa.float64()}):
        ms = batch.column("ms").to_numpy(zero_copy_only=False)
        valid = np.isfinite(ms) & (ms >= 0) & (ms < MS_PER_DAY)
        wall_ns = midnight_ns + np.where(valid, np.rint(ms * 1_000_000), 0).astype(np.int64)
        utc_ns, exists = rule.to_utc_ns(wall_ns)
        counts: Counter[str] = Counter()
        if not valid.all():
            counts["unreadable timestamp"] += int(np.count_nonzero(~valid))
        yield make_chunk(utc_ns, valid & exists, prices_to_float(batch.column("bid")),
                         prices_to_float(batch.column("ask")), counts)

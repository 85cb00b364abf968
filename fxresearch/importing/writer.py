"""Chunked writing: validate tick chunks, spool them in sorted runs, merge and write each output.

Data flow for one conversion::

    reader chunks ─► validate quotes ─► stable sort within the chunk ─► split by UTC year
        ─► append to a sorted run of PAIR_YEAR on disk (a new run when the chunk starts
           before the run's last tick)
    all inputs read ─► per PAIR_YEAR: k-way merge of its runs in blocks ─► drop exact
        duplicates ─► PAIR_YEAR.parquet (temporary name, then renamed) + report JSON

Memory is bounded by the chunk size plus one block per run, never by the file size. Files
in time order, the usual case, give one run per output whatever the number of inputs.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fxresearch.artifacts import atomic_path, write_json_atomic
from fxresearch.importing.common import (
    MAX_TIMESTAMP_NS,
    MIN_TIMESTAMP_NS,
    ReadResult,
    SourceInfo,
    TickChunk,
)
from fxresearch.timeutil import ns_to_datetime

logger = logging.getLogger(__name__)

# Rows per block read back from a run during the merge, and per row group written.
MERGE_BLOCK_ROWS = 262_144
ROW_GROUP_ROWS = 1_048_576
REPORT_SUFFIX = "_import_report.json"

TICK_SCHEMA = pa.schema([("timestamp", pa.timestamp("ns", tz="UTC")), ("bid", pa.float64()), ("ask", pa.float64())])
_RUN_SCHEMA = pa.schema([("timestamp_ns", pa.int64()), ("bid", pa.float64()), ("ask", pa.float64())])


def year_bounds_ns(year: int) -> tuple[int, int]:
    """Return the first nanosecond of ``year`` and of the next year, UTC."""
    start = np.datetime64(f"{year}-01-01", "ns").astype(np.int64)
    end = np.datetime64(f"{year + 1}-01-01", "ns").astype(np.int64)
    return int(start), int(end)


def utc_year(timestamp_ns: int) -> int:
    """Return the UTC calendar year of a nanosecond timestamp."""
    return int(np.datetime64(int(timestamp_ns), "ns").astype("datetime64[Y]").astype(np.int64)) + 1970


@dataclass
class InputStats:
    """Counts of one input, gathered while it is spooled."""

    info: SourceInfo
    rows_read: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    rows_reordered: int = 0
    rows_kept: int = 0
    zone_rows: Counter[str] = field(default_factory=Counter)
    first_ns: int | None = None
    last_ns: int | None = None
    pair_years: set[str] = field(default_factory=set)
    _previous_ns: int | None = None

    def to_report(self) -> dict[str, Any]:
        """Return the JSON-ready description of the input."""
        info = self.info
        return {
            "file": info.source.label,
            "format": info.file_format,
            "vendor": info.vendor,
            "variant": info.variant,
            "symbol": info.symbol,
            "symbol_from": info.symbol_origin,
            "tz_rule": info.zone_rule,
            "rows_read": self.rows_read,
            "invalid_dropped": dict(sorted(self.dropped.items())),
            "rows_reordered": self.rows_reordered,
            "rows_kept": self.rows_kept,
            "first_timestamp": _iso(self.first_ns),
            "last_timestamp": _iso(self.last_ns),
            "pair_years": sorted(self.pair_years),
            "notes": list(info.notes),
        }


def _iso(timestamp_ns: int | None) -> str | None:
    return None if timestamp_ns is None else ns_to_datetime(np.array([timestamp_ns]))[0].isoformat()


@dataclass
class _Run:
    """A spool file whose rows are sorted by time; rows are appended while they stay sorted."""

    path: Path
    writer: pq.ParquetWriter
    last_ns: int
    rows: int = 0


@dataclass
class PendingOutput:
    """The runs and inputs of one ``PAIR_YEAR`` output, before the merge."""

    symbol: str
    year: int
    runs: list[_Run] = field(default_factory=list)
    inputs: list[InputStats] = field(default_factory=list)

    @property
    def pair_year(self) -> str:
        """``SYMBOL_YEAR`` id of the output."""
        return f"{self.symbol}_{self.year}"


def _validate_chunk(chunk: TickChunk, dropped: Counter[str]) -> TickChunk:
    """Drop invalid quotes, counting each row once under the first rule it breaks.

    A zero spread (bid equal to ask) is a valid quote and is kept.
    """
    timestamp_ns, bid, ask = chunk.timestamp_ns, chunk.bid, chunk.ask
    out_of_range = (timestamp_ns < MIN_TIMESTAMP_NS) | (timestamp_ns >= MAX_TIMESTAMP_NS)
    missing = ~out_of_range & ~(np.isfinite(bid) & np.isfinite(ask))
    rest = ~out_of_range & ~missing
    non_positive = rest & ((bid <= 0.0) | (ask <= 0.0))
    crossed = rest & ~non_positive & (bid > ask)
    for reason, mask in (("timestamp outside 1990-2100", out_of_range), ("missing price", missing),
                         ("zero or negative price", non_positive), ("bid above ask", crossed)):
        count = int(np.count_nonzero(mask))
        if count:
            dropped[reason] += count
    bad = out_of_range | missing | non_positive | crossed
    if not bad.any():
        return chunk
    keep = ~bad
    return TickChunk(timestamp_ns[keep], bid[keep], ask[keep], chunk.rows_read, chunk.dropped)


class Spool:
    """Sorted runs of every output, kept in a temporary folder until they are merged."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.outputs: dict[tuple[str, int], PendingOutput] = {}
        self._n_runs = 0

    def add(self, result: ReadResult) -> InputStats:
        """Read every chunk of one input into the runs of its outputs and return its counts."""
        stats = InputStats(result.info)
        for chunk in result.chunks:
            stats.rows_read += chunk.rows_read
            stats.dropped.update(chunk.dropped)
            stats.zone_rows.update(chunk.zone_rows)
            chunk = _validate_chunk(chunk, stats.dropped)
            if len(chunk.timestamp_ns) == 0:
                continue
            self._add_chunk(stats, chunk)
        return stats

    def _add_chunk(self, stats: InputStats, chunk: TickChunk) -> None:
        timestamp_ns, bid, ask = chunk.timestamp_ns, chunk.bid, chunk.ask

        # Reordered rows are counted in file order, across chunk boundaries.
        previous = stats._previous_ns
        stats.rows_reordered += int(np.count_nonzero(timestamp_ns[1:] < timestamp_ns[:-1]))
        if previous is not None and timestamp_ns[0] < previous:
            stats.rows_reordered += 1
        stats._previous_ns = int(timestamp_ns[-1])
        if np.any(timestamp_ns[1:] < timestamp_ns[:-1]):
            # A stable sort keeps the file order of ticks that share a timestamp.
            order = np.argsort(timestamp_ns, kind="stable")
            timestamp_ns, bid, ask = timestamp_ns[order], bid[order], ask[order]

        stats.rows_kept += len(timestamp_ns)
        first, last = int(timestamp_ns[0]), int(timestamp_ns[-1])
        stats.first_ns = first if stats.first_ns is None else min(stats.first_ns, first)
        stats.last_ns = last if stats.last_ns is None else max(stats.last_ns, last)

        for year in range(utc_year(first), utc_year(last) + 1):
            start_ns, end_ns = year_bounds_ns(year)
            lo, hi = np.searchsorted(timestamp_ns, [start_ns, end_ns])
            if hi > lo:
                self._append(stats, year, timestamp_ns[lo:hi], bid[lo:hi], ask[lo:hi])

    def _append(self, stats: InputStats, year: int, timestamp_ns: np.ndarray, bid: np.ndarray,
                ask: np.ndarray) -> None:
        key = (stats.info.symbol, year)
        output = self.outputs.setdefault(key, PendingOutput(stats.info.symbol, year))
        if stats not in output.inputs:
            output.inputs.append(stats)
        stats.pair_years.add(output.pair_year)

        # Append to the run that ends latest at or before this block's first tick, so runs
        # stay sorted and a file in time order needs one run only.
        first = int(timestamp_ns[0])
        fitting = [run for run in output.runs if run.last_ns <= first]
        run = max(fitting, key=lambda r: r.last_ns) if fitting else self._new_run(output)
        table = pa.table({"timestamp_ns": timestamp_ns, "bid": bid, "ask": ask}, schema=_RUN_SCHEMA)
        run.writer.write_table(table)
        run.last_ns = int(timestamp_ns[-1])
        run.rows += len(timestamp_ns)

    def _new_run(self, output: PendingOutput) -> _Run:
        self._n_runs += 1
        path = self.folder / f"run_{self._n_runs:06d}.parquet"
        writer = pq.ParquetWriter(path, _RUN_SCHEMA, compression="lz4")
        run = _Run(path, writer, np.iinfo(np.int64).min)
        output.runs.append(run)
        return run

    def close(self) -> None:
        """Close every run's writer; call before merging."""
        for output in self.outputs.values():
            for run in output.runs:
                run.writer.close()


def _merged_blocks(runs: list[_Run], block_rows: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield the rows of sorted runs in time order, in blocks; ties keep run order, then file order.

    Each block holds every row below a bound (the smallest last timestamp of the runs'
    buffers), so rows of one timestamp never straddle two blocks and duplicates can be
    found block by block.
    """
    batches = [pq.ParquetFile(run.path).iter_batches(batch_size=block_rows) for run in runs]
    empty = (np.empty(0, np.int64), np.empty(0), np.empty(0))
    buffers: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = [empty] * len(runs)
    exhausted = [False] * len(runs)

    def refill(i: int) -> None:
        try:
            batch = next(batches[i])
        except StopIteration:
            exhausted[i] = True
            return
        columns = [batch.column(j).to_numpy(zero_copy_only=False) for j in range(3)]
        buffers[i] = tuple(np.concatenate([old, new]) for old, new in zip(buffers[i], columns, strict=True))

    for i in range(len(runs)):
        refill(i)
    while True:
        live = [i for i in range(len(runs)) if not exhausted[i]]
        bound = min((int(buffers[i][0][-1]) for i in live), default=None)
        parts = []
        for i, (timestamp_ns, bid, ask) in enumerate(buffers):
            cut = len(timestamp_ns) if bound is None else int(np.searchsorted(timestamp_ns, bound, side="left"))
            if cut:
                parts.append((timestamp_ns[:cut], bid[:cut], ask[:cut]))
                buffers[i] = (timestamp_ns[cut:], bid[cut:], ask[cut:])
        if not parts and bound is None:
            return
        if parts:
            timestamp_ns, bid, ask = (np.concatenate(column) for column in zip(*parts, strict=True))
            if len(parts) > 1:
                order = np.argsort(timestamp_ns, kind="stable")
                timestamp_ns, bid, ask = timestamp_ns[order], bid[order], ask[order]
            yield timestamp_ns, bid, ask
        # Runs whose buffer is empty or holds only the bound get their next batch.
        for i in live:
            if len(buffers[i][0]) == 0 or int(buffers[i][0][0]) == bound:
                refill(i)


def duplicate_mask(timestamp_ns: np.ndarray, bid: np.ndarray, ask: np.ndarray) -> np.ndarray:
    """Return a mask of rows that repeat an earlier row's (timestamp, bid, ask) exactly.

    ``timestamp_ns`` must be sorted; the first row of each equal group is kept, as the
    reference files keep it.
    """
    mask = np.zeros(len(timestamp_ns), dtype=bool)
    same = timestamp_ns[1:] == timestamp_ns[:-1]
    if not same.any():
        return mask
    in_run = np.zeros(len(timestamp_ns), dtype=bool)
    in_run[1:] |= same
    in_run[:-1] |= same
    rows = np.flatnonzero(in_run)
    rows = rows[np.lexsort((rows, ask[rows], bid[rows], timestamp_ns[rows]))]
    repeats = ((timestamp_ns[rows[1:]] == timestamp_ns[rows[:-1]]) & (bid[rows[1:]] == bid[rows[:-1]])
               & (ask[rows[1:]] == ask[rows[:-1]]))
    mask[rows[1:][repeats]] = True
    return mask


@contextlib.contextmanager
def _atomic_parquet_writer(path: Path, schema: pa.Schema) -> Iterator[pq.ParquetWriter]:
    """Stream a parquet file under a temporary name beside ``path`` and rename it into place on success.

    ``fxresearch.artifacts.atomic_path`` gives the temporary name, so a killed conversion never
    leaves a half-written ``PAIR_YEAR.parquet``, and its leftovers are recognised as temporary.
    """
    with atomic_path(path) as tmp:
        # Delta encoding stores sorted timestamps in a few bits each.
        writer = pq.ParquetWriter(tmp, schema, compression="zstd", use_dictionary=["bid", "ask"],
                                  column_encoding={"timestamp": "DELTA_BINARY_PACKED"})
        try:
            yield writer
        finally:
            writer.close()


def write_output(output: PendingOutput, output_dir: Path, metadata: dict[str, str], staging_dir: Path,
                 existing: dict[str, Any] | None = None) -> dict[str, Any]:
    """Merge the runs of one output into ``staging_dir/PAIR_YEAR.parquet`` and return its report.

    ``install_output`` then moves the file to ``output_dir`` and writes the report beside it,
    so an interrupted conversion replaces no output. ``existing`` describes the file of that
    name already in ``output_dir``: ``{"action": "merged" or "replaced", "file", "rows"}``.
    """
    path = output_dir / f"{output.pair_year}.parquet"
    schema = TICK_SCHEMA.with_metadata({k.encode(): v.encode() for k, v in metadata.items()})
    rows_in = duplicates = written = 0
    first_ns = last_ns = None
    pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    pending_rows = 0

    def flush(writer: pq.ParquetWriter) -> None:
        nonlocal pending, pending_rows
        if not pending:
            return
        timestamp_ns, bid, ask = (np.concatenate(column) for column in zip(*pending, strict=True))
        table = pa.table({"timestamp": pa.array(timestamp_ns, pa.int64()).cast(pa.timestamp("ns", tz="UTC")),
                          "bid": bid, "ask": ask}, schema=schema)
        writer.write_table(table)
        pending, pending_rows = [], 0

    with _atomic_parquet_writer(staging_dir / path.name, schema) as writer:
        for timestamp_ns, bid, ask in _merged_blocks(output.runs, MERGE_BLOCK_ROWS):
            rows_in += len(timestamp_ns)
            repeat = duplicate_mask(timestamp_ns, bid, ask)
            if repeat.any():
                duplicates += int(np.count_nonzero(repeat))
                keep = ~repeat
                timestamp_ns, bid, ask = timestamp_ns[keep], bid[keep], ask[keep]
            first_ns = int(timestamp_ns[0]) if first_ns is None else first_ns
            last_ns = int(timestamp_ns[-1])
            written += len(timestamp_ns)
            pending.append((timestamp_ns, bid, ask))
            pending_rows += len(timestamp_ns)
            if pending_rows >= ROW_GROUP_ROWS:
                flush(writer)
        flush(writer)

    return _build_report(output, path, rows_in, duplicates, written, first_ns, last_ns, metadata, existing)


def install_output(report: dict[str, Any], staging_dir: Path) -> None:
    """Move an output written by ``write_output`` into place, then write its report beside it."""
    path = Path(report["output"])
    (staging_dir / path.name).replace(path)
    write_json_atomic(path.with_name(f"{report['pair_year']}{REPORT_SUFFIX}"), report)
    n_inputs = len(report["inputs"])
    logger.info("%s: wrote %d ticks to %s (%d exact duplicates dropped, from %d %s)", report["pair_year"],
                report["rows_written"], path, report["duplicates_dropped"], n_inputs, plural(n_inputs, "input"))


def plural(count: int, noun: str) -> str:
    """Return ``noun`` or its plural (an ``s`` added) to follow ``count``."""
    return noun if count == 1 else f"{noun}s"


def _build_report(output: PendingOutput, path: Path, rows_in: int, duplicates: int, written: int,
                  first_ns: int | None, last_ns: int | None, metadata: dict[str, str],
                  existing: dict[str, Any] | None) -> dict[str, Any]:
    """Return the report of one output.

    ``rows_read``, ``invalid_dropped`` and ``rows_reordered`` add up the inputs that fed the
    file; an input whose ticks span two years counts in both years' reports (its entry in
    ``inputs`` lists its ``pair_years``).
    """
    invalid: Counter[str] = Counter()
    for stats in output.inputs:
        invalid.update(stats.dropped)
    warnings = []
    rows_read = sum(s.rows_read for s in output.inputs)
    n_invalid = sum(invalid.values())
    if rows_read and n_invalid > 0.01 * rows_read:
        warnings.append(f"{n_invalid} of {rows_read} rows ({n_invalid / rows_read:.1%}) were invalid and dropped; "
                        f"check the format (--format) and time zone of the inputs")
    feeds = sorted({s.info.feed for s in output.inputs})
    if len(feeds) > 1:
        warnings.append(f"inputs of several feeds were merged ({', '.join(feeds)}); they do not overlap in time, "
                        f"but their spreads may differ")
    split_inputs = [s.info.source.label for s in output.inputs if len(s.pair_years) > 1]
    if len(split_inputs) == 1:
        warnings.append("1 input spans two years; its rows_read counts in each year's report")
    elif split_inputs:
        warnings.append(f"{len(split_inputs)} inputs span two years; their rows_read counts in each year's report")
    for stats in output.inputs:
        own, from_option = stats.zone_rows["own zone"], stats.zone_rows["source tz"]
        if own and from_option:
            warnings.append(
                f"{stats.info.source.label} mixes zones: {own} {plural(own, 'row')} carried their own zone and "
                f"{from_option} {plural(from_option, 'row')} {'was' if from_option == 1 else 'were'} read with "
                f"--source-tz ({stats.info.zone_rule}); check that the file does not mix two clocks")
    return {
        "output": str(path),
        "pair_year": output.pair_year,
        "symbol": output.symbol,
        "rows_read": rows_read,
        "invalid_dropped": dict(sorted(invalid.items())),
        "rows_reordered": sum(s.rows_reordered for s in output.inputs),
        "rows_merged": rows_in,
        "duplicates_dropped": duplicates,
        "rows_written": written,
        "first_timestamp": _iso(first_ns),
        "last_timestamp": _iso(last_ns),
        "source_format": metadata["source_format"],
        "vendor": metadata["vendor"],
        "variant": metadata["variant"],
        "tz_rule": json.loads(metadata["tz_rules"]),
        "existing_file": existing,
        "warnings": warnings,
        "inputs": [s.to_report() for s in output.inputs],
    }


def format_report(report: dict[str, Any]) -> str:
    """Return an output's report as the lines the command line prints."""
    invalid = report["invalid_dropped"]
    invalid_text = ", ".join(f"{count} {reason}" for reason, count in invalid.items()) if invalid else "none"
    lines = [
        f"{report['pair_year']}: {report['output']}",
        f"  source         {report['source_format']} ({report['vendor']}"
        f"{', variant ' + report['variant'] if report['variant'] else ''}), {len(report['inputs'])} input(s)",
        f"  time zone      {'; '.join(report['tz_rule'])}",
        f"  rows           {report['rows_read']} read, {report['rows_written']} written, "
        f"{report['duplicates_dropped']} exact duplicates dropped, {report['rows_reordered']} reordered",
        f"  invalid        {invalid_text}",
        f"  span (UTC)     {report['first_timestamp']} to {report['last_timestamp']}",
    ]
    existing = report.get("existing_file")
    if existing:
        action = "merged with the existing" if existing["action"] == "merged" else "replaced"
        lines.append(f"  existing file  {action} {existing['file']} ({existing['rows']:,} rows)")
    lines.extend(f"  note           {note}" for item in report["inputs"] for note in item["notes"])
    lines.extend(f"  warning        {warning}" for warning in report["warnings"])
    lines.append(f"  report         {Path(report['output']).with_name(report['pair_year'] + REPORT_SUFFIX)}")
    return "\n".join(lines)

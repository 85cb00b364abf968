"""Conversion run: inputs → format readers → spool → one ``PAIR_YEAR.parquet`` per pair and UTC year.

Nothing is written under a final name until every input has been read and every output
written in a temporary folder, so an input that fails, or an interrupt, leaves earlier
outputs untouched. An output that already exists is read as one more input of its feed and
merged, unless ``ImportOptions.overwrite`` is set, which replaces it.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fxresearch.importing import dukascopy, exness, generic, histdata, lean, metatrader, nautilus, truefx
from fxresearch.importing.common import (
    ImportDataError,
    ImportOptions,
    ReadResult,
    Source,
    SourceInfo,
    TickChunk,
    expand_inputs,
    parse_zone,
)
from fxresearch.importing.detect import detect_format
from fxresearch.importing.writer import (
    InputStats,
    PendingOutput,
    Spool,
    install_output,
    plural,
    write_output,
    year_bounds_ns,
)
from fxresearch.instruments import UnknownInstrumentError, get_instrument

logger = logging.getLogger(__name__)

Reader = Callable[[Source, ImportOptions], ReadResult]

FORMATS: dict[str, Reader] = {
    "exness": exness.read,
    "dukascopy-bi5": dukascopy.read_bi5,
    "dukascopy-csv": dukascopy.read_csv,
    "truefx": truefx.read,
    "histdata": histdata.read,
    "mt5": metatrader.read,
    "lean": lean.read,
    "nautilus-parquet": nautilus.read,
    "generic": generic.read,
}


def convert_files(inputs: list[str | Path], output_dir: str | Path,
                  options: ImportOptions | None = None) -> list[dict[str, Any]]:
    """Convert vendor tick files into ``output_dir/PAIR_YEAR.parquet`` files, one per pair and UTC year.

    Each input (a file, a folder read recursively, or a zip archive) is read in chunks in
    its vendor's time zone, its invalid quotes are dropped and counted, and the inputs of one
    pair and year are merged in time order with exact duplicates dropped. An existing output
    of the same name is read as one more input and merged, or replaced when
    ``options.overwrite`` is set; the report's ``existing_file`` says which.

    Parameters
    ----------
    inputs
        Files, folders or zip archives.
    output_dir
        Folder for the outputs and their ``PAIR_YEAR_import_report.json`` reports.
    options
        Format override, ``--server-tz`` and ``--source-tz``, chunk size, configuration.

    Returns
    -------
    list of dict
        The report of each output, in ``PAIR_YEAR`` order.

    Raises
    ------
    ImportDataError
        An input cannot be read or has no valid tick, a time zone is unknown (checked
        first, whether or not an input needs it), a symbol is invalid or unknown, two feeds
        (account variants or vendors) overlap in time, or an existing output to merge with
        belongs to another feed or has no conversion metadata.
    """
    options = options or ImportOptions()
    if options.file_format is not None and options.file_format not in FORMATS:
        raise ImportDataError(f"Unknown format {options.file_format!r}; expected one of {', '.join(FORMATS)}.")
    for zone, option in ((options.server_tz, "--server-tz"), (options.source_tz, "--source-tz")):
        if zone is not None:
            parse_zone(zone, option)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    sources = expand_inputs(inputs)
    logger.info("Converting %d %s into %s", len(sources), plural(len(sources), "input"), output_dir)

    with tempfile.TemporaryDirectory(prefix=".import-", dir=output_dir) as spool_dir:
        staging_dir = Path(spool_dir) / "outputs"
        staging_dir.mkdir()
        spool = Spool(Path(spool_dir))
        existing: dict[tuple[str, int], dict[str, Any] | None] = {}
        try:
            all_stats = [_read_source(spool, source, options) for source in sources]
            check_feed_overlap(all_stats)
            for key in sorted(spool.outputs):
                existing[key] = _handle_existing(spool, spool.outputs[key], output_dir, options)
        finally:
            spool.close()
        reports = []
        for key in sorted(spool.outputs):
            output = spool.outputs[key]
            reports.append(write_output(output, output_dir, _metadata(output, options), staging_dir,
                                        existing.get(key)))
        for report in reports:
            install_output(report, staging_dir)
    return reports


def _handle_existing(spool: Spool, output: PendingOutput, output_dir: Path,
                     options: ImportOptions) -> dict[str, Any] | None:
    """Spool the ticks of an output's existing file as one more input, unless it is to be replaced.

    Returns the report's ``existing_file`` entry, or None when no file of that name exists.
    """
    path = output_dir / f"{output.pair_year}.parquet"
    if not path.is_file():
        return None
    try:
        parquet_file = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        if options.overwrite:
            return {"action": "replaced", "file": path.name, "rows": 0}
        raise ImportDataError(
            f"Cannot read the existing {path} to merge the new ticks into it: {exc}. Pass --overwrite to "
            f"replace it, or convert into another --output-dir."
        ) from exc
    rows = parquet_file.metadata.num_rows
    if options.overwrite:
        return {"action": "replaced", "file": path.name, "rows": rows}
    info = _existing_info(path, parquet_file, output)
    spool.add(ReadResult(info, _existing_chunks(parquet_file, output.year)))
    return {"action": "merged", "file": path.name, "rows": rows}


def _existing_info(path: Path, parquet_file: pq.ParquetFile, output: PendingOutput) -> SourceInfo:
    """Describe an existing output from its metadata, checking that the new inputs are of its feed."""
    raw = parquet_file.schema_arrow.metadata or {}
    metadata = {k.decode(): v.decode() for k, v in raw.items() if k != b"pandas"}
    if not {"source_format", "vendor", "tz_rules"} <= set(metadata) or metadata.get("symbol") != output.symbol:
        raise ImportDataError(
            f"{path} already exists but was not written by --convert for {output.symbol} (its metadata has no "
            f"source_format, vendor or tz_rules, or another symbol), so the new ticks are not merged into it. "
            f"Pass --overwrite to replace it, or convert into another --output-dir."
        )
    vendors = set(metadata["vendor"].split(","))
    variants = set(metadata.get("variant", "").split(","))
    info = SourceInfo(Source(path), metadata["source_format"], output.symbol, metadata.get("variant", ""),
                      metadata["vendor"], "\n".join(json.loads(metadata["tz_rules"])), "existing output")
    existing_words = f"{info.vendor}, variant {info.variant}" if info.variant else f"{info.vendor}, no variant"
    for stats in output.inputs:
        new = stats.info
        if new.vendor not in vendors or new.variant not in variants:
            raise ImportDataError(
                f"Inputs of two feeds of {output.symbol} cannot be merged: the existing {path} ({existing_words}) "
                f"and {new.source.label} ({_feed_words(stats)}). Convert each feed into its own --output-dir, "
                f"or pass --overwrite to replace {path.name}."
            )
    return info


def _existing_chunks(parquet_file: pq.ParquetFile, year: int) -> Iterator[TickChunk]:
    """Yield the ticks of an existing output; ticks outside its UTC year are dropped and counted."""
    start_ns, end_ns = year_bounds_ns(year)
    for batch in parquet_file.iter_batches(batch_size=1_000_000, columns=["timestamp", "bid", "ask"]):
        timestamp_ns = batch.column(0).cast(pa.int64()).to_numpy(zero_copy_only=False)
        bid = batch.column(1).to_numpy(zero_copy_only=False).astype(np.float64)
        ask = batch.column(2).to_numpy(zero_copy_only=False).astype(np.float64)
        inside = (timestamp_ns >= start_ns) & (timestamp_ns < end_ns)
        chunk = TickChunk(timestamp_ns[inside], bid[inside], ask[inside], len(timestamp_ns))
        if not inside.all():
            chunk.dropped["outside the year of the existing file"] += int(np.count_nonzero(~inside))
        yield chunk


def _read_source(spool: Spool, source: Source, options: ImportOptions) -> InputStats:
    file_format = options.file_format or detect_format(source)
    result = FORMATS[file_format](source, options)
    stats = spool.add(result)
    info = result.info
    logger.debug("%s: %s, %s %s, %d rows read, %d kept; %s", source.label, file_format, info.symbol,
                info.variant or "", stats.rows_read, stats.rows_kept, info.zone_rule)
    if stats.rows_read and not stats.rows_kept:
        reasons = ", ".join(f"{count} {reason}" for reason, count in stats.dropped.most_common())
        raise ImportDataError(
            f"{source.label} contains no valid tick ({stats.rows_read} rows read as {file_format}: {reasons}). "
            f"Check the format (pass --format to override the detected {file_format!r}) and the time zone."
        )
    return stats


def check_feed_overlap(all_stats: list[InputStats]) -> None:
    """Raise ImportDataError when inputs of one symbol from two feeds overlap in time.

    A feed is a vendor and account variant (Exness ``EURUSDm`` and ``EURUSD_Raw_Spread``
    quote different spreads). Merging two feeds where they overlap would interleave two
    price streams, so the error names both inputs.
    """
    spans = [s for s in all_stats if s.first_ns is not None]
    for i, first in enumerate(spans):
        for second in spans[i + 1:]:
            if first.info.symbol != second.info.symbol or first.info.feed == second.info.feed:
                continue
            if first.first_ns <= second.last_ns and second.first_ns <= first.last_ns:  # type: ignore[operator]  # spans holds only stats with first_ns set, and last_ns is set with it
                raise ImportDataError(
                    f"Inputs of two feeds of {first.info.symbol} overlap in time and cannot be merged: "
                    f"{first.info.source.label} ({_feed_words(first)}) and {second.info.source.label} "
                    f"({_feed_words(second)}). Convert each feed into its own --output-dir."
                )


def _feed_words(stats: InputStats) -> str:
    info = stats.info
    return f"{info.vendor}, variant {info.variant}" if info.variant else f"{info.vendor}, no variant"


def _metadata(output: PendingOutput, options: ImportOptions) -> dict[str, str]:
    """Return the parquet metadata of one output: the keys every project parquet carries, plus the source."""
    try:
        instrument = get_instrument(output.symbol, options.config)
    except UnknownInstrumentError as exc:
        raise ImportDataError(str(exc)) from None
    infos = [stats.info for stats in output.inputs]

    def joined(values: list[str], separator: str = ",") -> list[str]:
        # An existing output's info contains lists joined by commas (its rules joined by line ends).
        return sorted({part for value in values for part in value.split(separator) if part})

    return {
        "pair_year": output.pair_year,
        "symbol": output.symbol,
        "pip_size": repr(instrument.pip_size),
        "synthetic": "false",
        "source_format": ",".join(joined([info.file_format for info in infos])),
        "vendor": ",".join(joined([info.vendor for info in infos])),
        "variant": ",".join(joined([info.variant for info in infos])),
        "tz_rules": json.dumps(joined([info.zone_rule for info in infos], "\n")),
        "source_files": str(len(infos)),
    }

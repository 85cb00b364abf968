"""Conversion run: inputs → format readers → spool → one ``PAIR_YEAR.parquet`` per pair and UTC year.

Nothing is written under a final name until every input has been read and checked, so an
input that fails leaves earlier outputs untouched.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any, Callable

from fxresearch.importing import dukascopy, exness, generic, histdata, lean, metatrader, nautilus, truefx
from fxresearch.importing.common import (
    ImportDataError,
    ImportOptions,
    ReadResult,
    Source,
    expand_inputs,
)
from fxresearch.importing.detect import detect_format
from fxresearch.importing.writer import InputStats, PendingOutput, Spool, write_output
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
    of the same name is replaced.

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
        An input cannot be read or has no valid tick, a time zone is unknown, a symbol is
        invalid or unknown, or two feeds (account variants or vendors) overlap in time.
    """
    options = options or ImportOptions()
    if options.file_format is not None and options.file_format not in FORMATS:
        raise ImportDataError(f"Unknown format {options.file_format!r}; expected one of {', '.join(FORMATS)}.")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    sources = expand_inputs(inputs)
    logger.info("Converting %d inputs into %s", len(sources), output_dir)

    with tempfile.TemporaryDirectory(prefix=".import-", dir=output_dir) as spool_dir:
        spool = Spool(Path(spool_dir))
        try:
            all_stats = [_read_source(spool, source, options) for source in sources]
        finally:
            spool.close()
        check_feed_overlap(all_stats)
        reports = []
        for key in sorted(spool.outputs):
            output = spool.outputs[key]
            reports.append(write_output(output, output_dir, _metadata(output, options)))
    return reports


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
            if first.first_ns <= second.last_ns and second.first_ns <= first.last_ns:  # type: ignore[operator]
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
    return {
        "pair_year": output.pair_year,
        "symbol": output.symbol,
        "pip_size": repr(instrument.pip_size),
        "synthetic": "false",
        "source_format": ",".join(sorted({info.file_format for info in infos})),
        "vendor": ",".join(sorted({info.vendor for info in infos})),
        "variant": ",".join(sorted({info.variant for info in infos if info.variant})),
        "tz_rules": json.dumps(sorted({info.zone_rule for info in infos})),
        "source_files": str(len(infos)),
    }

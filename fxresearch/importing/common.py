"""Shared parts of the vendor importers: inputs, symbols, time-zone rules and tick chunks.

Every format reader turns one input (a file, or a member of a zip archive) into a
``SourceInfo`` (symbol, vendor, variant, time-zone rule) and an iterator of ``TickChunk``
objects: UTC nanosecond timestamps with bid and ask in quote currency, in file order. The
writer (``fxresearch.importing.writer``) validates, sorts, merges and writes them.

Wall-clock times are parsed here with one vectorised routine, ``parse_wall_clock``, from a
regular expression with named groups, so each format only states its layout. A time without
a zone is converted by the ``ZoneRule`` of its vendor; this module never assumes UTC.
"""

from __future__ import annotations

import codecs
import contextlib
import logging
import re
import time
import zipfile
import zoneinfo
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from fxresearch.config import Config
from fxresearch.instruments import BUILTIN_INSTRUMENTS
from fxresearch.timeutil import index_to_ns

logger = logging.getLogger(__name__)

NS_PER_SECOND = 1_000_000_000
NS_PER_MINUTE = 60 * NS_PER_SECOND
NS_PER_HOUR = 60 * NS_PER_MINUTE
NS_PER_DAY = 24 * NS_PER_HOUR

# Tick times outside [1990-01-01, 2100-01-01) UTC are a wrong layout or zone, as in ticks.py.
MIN_TIMESTAMP_NS = 631_152_000_000_000_000
MAX_TIMESTAMP_NS = 4_102_444_800_000_000_000

# Bytes per CSV block handed to pyarrow's streaming reader: about 300,000 tick rows.
DEFAULT_BLOCK_BYTES = 16 << 20
# Seconds between two progress lines of one input.
PROGRESS_INTERVAL_S = 10.0

SYMBOL_RE = re.compile(r"^[A-Z]{6}$")


class ImportDataError(ValueError):
    """An input file or option that cannot be converted; the message names the file and the fix."""


@dataclass(frozen=True)
class ImportOptions:
    """Options of one conversion run.

    ``file_format`` forces a format (a name of ``fxresearch.importing.FORMATS``) instead of
    detecting it. ``server_tz`` is the MetaTrader server's zone, ``source_tz`` the zone of
    zone-less times in a generic CSV or of a LEAN or re-encoded file whose vendor is unknown.
    Both accept an IANA name (``Europe/Athens``) or a fixed offset (``UTC+2``, ``-05:00``).
    An output that already exists is merged with the new ticks, or replaced when
    ``overwrite`` is set.
    """

    file_format: str | None = None
    server_tz: str | None = None
    source_tz: str | None = None
    block_bytes: int = DEFAULT_BLOCK_BYTES
    config: Config | None = None
    overwrite: bool = False


# ---------------------------------------------------------------------------------------------
# Inputs


@dataclass(frozen=True)
class Source:
    """One input stream: a file on disk, or a member of the zip archive at ``path``."""

    path: Path
    member: str | None = None

    @property
    def name(self) -> str:
        """File name of the stream (the member's own name inside an archive)."""
        return self.member.rsplit("/", 1)[-1] if self.member else self.path.name

    @property
    def label(self) -> str:
        """Name used in messages and reports: ``archive.zip!member`` for a member."""
        return f"{self.path}!{self.member}" if self.member else str(self.path)

    @property
    def name_parts(self) -> list[str]:
        """Folder and file names from the path and the member, outermost first."""
        parts = list(self.path.parts)
        if self.member:
            parts.extend(self.member.split("/"))
        return parts

    @contextlib.contextmanager
    def open(self) -> Iterator[IO[bytes]]:
        """Open the stream for binary reading."""
        if self.member is None:
            with self.path.open("rb") as handle:
                yield handle
            return
        with zipfile.ZipFile(self.path) as archive, archive.open(self.member) as handle:
            yield handle

    def size(self) -> int:
        """Size in bytes of the (uncompressed) stream."""
        if self.member is None:
            return self.path.stat().st_size
        with zipfile.ZipFile(self.path) as archive:
            return archive.getinfo(self.member).file_size

    def read_head(self, n_bytes: int = 65_536) -> bytes:
        """Return the first ``n_bytes`` of the stream."""
        with self.open() as handle:
            return handle.read(n_bytes)


def expand_inputs(inputs: list[str | Path]) -> list[Source]:
    """Expand files, folders (recursively, in name order) and zip archives into sources.

    Hidden files and this tool's own reports (``*_import_report.json``) in a folder are
    skipped. Every other file must be a tick file of a known format.

    Raises
    ------
    ImportDataError
        An input does not exist, or a zip archive is unreadable.
    """
    sources: list[Source] = []
    for item in inputs:
        path = Path(item)
        if not path.exists():
            raise ImportDataError(f"Input not found: {path}. Pass tick files, folders or zip archives.")
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and not _skipped_in_folder(p))
            for file in files:
                sources.extend(_expand_file(file))
        else:
            sources.extend(_expand_file(path))
    if not sources:
        raise ImportDataError(f"No input files found in {', '.join(map(str, inputs))}.")
    return sources


def _skipped_in_folder(path: Path) -> bool:
    return path.name.startswith(".") or path.name.endswith("_import_report.json")


def _expand_file(path: Path) -> list[Source]:
    if not zipfile.is_zipfile(path):
        return [Source(path)]
    try:
        with zipfile.ZipFile(path) as archive:
            members = sorted(info.filename for info in archive.infolist()
                             if not info.is_dir() and not info.filename.rsplit("/", 1)[-1].startswith("."))
    except (zipfile.BadZipFile, OSError) as exc:
        raise ImportDataError(f"Cannot read zip archive {path}: {exc}. Check that the download is complete.") from exc
    if not members:
        raise ImportDataError(f"Zip archive {path} contains no file.")
    return [Source(path, member) for member in members]


# ---------------------------------------------------------------------------------------------
# Symbols

# Separators and broker suffixes after the six letters of a pair: EURUSDm, EURUSD.a,
# EURUSD_Raw_Spread, EURUSD-ECN, EURUSD+, AUD/USD.SIM (a venue).
_SYMBOL_PARTS_RE = re.compile(r"^(?P<base>[A-Za-z]{3})[/_\-. ]?(?P<quote>[A-Za-z]{3})(?P<suffix>.*)$")
_SUFFIX_RE = re.compile(r"^[A-Za-z0-9_.\-+#!]*$")


def normalise_symbol(raw: str, where: str) -> tuple[str, str]:
    """Return ``(SYMBOL, variant)`` from a vendor's symbol text.

    ``EUR/USD`` and ``eurusd`` become ``EURUSD``. A broker suffix after the six letters is
    the account variant, returned without its leading separator: ``EURUSDm`` gives
    ``("EURUSD", "m")``, ``EURUSD_Raw_Spread`` gives ``("EURUSD", "Raw_Spread")``. A
    ``.SIM``-style venue after a slash-separated pair (``AUD/USD.SIM``) is not a variant.

    Raises
    ------
    ImportDataError
        The text is not six letters, optionally followed by a suffix of letters, digits and
        ``_ . - + # !``. Such a symbol (``../x``) could never name an output file safely.
    """
    text = raw.strip().strip("\"'")
    match = _SYMBOL_PARTS_RE.match(text)
    suffix = match["suffix"] if match else ""
    if match is None or not _SUFFIX_RE.match(suffix):
        raise ImportDataError(
            f"Invalid symbol {raw!r} in {where}: expected six letters such as EURUSD or EUR/USD, "
            f"optionally with a broker suffix (EURUSDm, EURUSD_Raw_Spread). Fix the symbol in the file, "
            f"or rename the file to contain the pair."
        )
    symbol = (match["base"] + match["quote"]).upper()
    venue = "/" in text and suffix.startswith(".")
    variant = "" if venue else suffix.lstrip("_.-")
    return symbol, variant


def symbol_from_name(parts: list[str]) -> tuple[str, str] | None:
    """Find a known pair in file or folder names, innermost first: ``(SYMBOL, variant)`` or None.

    A name is split into tokens at ``_``, ``-``, ``.`` and spaces, except that the suffixes
    ``Raw_Spread`` and ``Zero_Spread`` stay with their pair. A token counts when its first six
    letters are a pair of the built-in instrument table (``EURUSD``, ``eurusd``, ``EURUSDm``).
    """
    for part in reversed(parts):
        stem = part.rsplit(".", 1)[0] if "." in part else part
        stem = re.sub(r"_(Raw|Zero)_Spread", r"-\1Spread", stem, flags=re.IGNORECASE)
        for token in re.split(r"[_\-. ]+", stem):
            letters = token[:6].upper()
            if len(token) >= 6 and letters in BUILTIN_INSTRUMENTS and token[:6].isalpha():
                variant = token[6:]
                variant = re.sub(r"^(Raw|Zero)Spread$", r"\1_Spread", variant, flags=re.IGNORECASE)
                if variant and not variant.isalpha() and variant not in ("Raw_Spread", "Zero_Spread"):
                    continue
                return letters, variant
    return None


@dataclass(frozen=True)
class ResolvedSymbol:
    """The symbol and variant used for an input, with a note when the name disagrees."""

    symbol: str
    variant: str
    origin: str  # "file content" or "file name"
    note: str | None = None


def resolve_symbol(source: Source, content_symbol: str | None) -> ResolvedSymbol:
    """Choose the input's symbol: the one in the file wins over the one in its name.

    Raises
    ------
    ImportDataError
        Neither the content nor the name gives a valid symbol.
    """
    from_name = symbol_from_name(source.name_parts)
    if content_symbol is None:
        if from_name is None:
            raise ImportDataError(
                f"Cannot tell the symbol of {source.label}: the file does not contain it and no pair such as "
                f"EURUSD appears in its path. Rename the file to contain the pair, e.g. EURUSD_ticks.csv."
            )
        return ResolvedSymbol(from_name[0], from_name[1], "file name")

    symbol, variant = normalise_symbol(content_symbol, source.label)
    check_symbol(symbol, source.label)
    note = None
    if from_name is not None and from_name[0] != symbol:
        note = (f"the file contains symbol {content_symbol!r} but its name suggests {from_name[0]}; "
                f"used {symbol} from the content")
        logger.warning("%s: %s", source.label, note)
    return ResolvedSymbol(symbol, variant, "file content", note)


def check_symbol(symbol: str, where: str) -> None:
    """Raise ImportDataError unless ``symbol`` is six uppercase letters (currency pair or metal)."""
    if not SYMBOL_RE.match(symbol):
        raise ImportDataError(
            f"Invalid symbol {symbol!r} from {where}: a symbol must be six letters such as EURUSD or XAUUSD."
        )


# ---------------------------------------------------------------------------------------------
# Time zones

_OFFSET_RE = re.compile(r"^(?:UTC|GMT)?\s*(?P<sign>[+-])(?P<hours>\d{1,2})(?::?(?P<minutes>\d{2}))?$", re.IGNORECASE)


@dataclass(frozen=True)
class ZoneRule:
    """How a vendor's wall-clock times map to UTC.

    A wall-clock time minus ``offset_ns`` is a time in ``zone`` (an IANA name, with daylight
    saving), or in UTC when ``zone`` is None. So ``UTC+2`` is ``(None, +2 h)`` and "New York
    time + 7 h", the clock of many MetaTrader servers, is ``("America/New_York", +7 h)``.
    """

    description: str
    zone: str | None = None
    offset_ns: int = 0

    def to_utc_ns(self, wall_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return UTC nanoseconds and a mask of valid rows (False for a wall time that does not exist).

        With a daylight-saving zone, a time in the repeated autumn hour is read as the first
        (summer) one when the rows do not let pandas infer it, and a time in the skipped
        spring hour is invalid.
        """
        shifted = wall_ns - self.offset_ns
        if self.zone is None:
            return shifted, np.ones(len(shifted), dtype=bool)
        naive = pd.DatetimeIndex(shifted.view("datetime64[ns]"))
        try:
            local = naive.tz_localize(self.zone, ambiguous="infer", nonexistent="NaT")
        except (ValueError, TypeError):
            # NOTE: a chunk that cuts the repeated hour cannot be inferred, so its rows are taken as summer time.
            ambiguous = np.ones(len(naive), dtype=bool)
            local = naive.tz_localize(self.zone, ambiguous=ambiguous, nonexistent="NaT")
        exists = ~np.asarray(local.isna(), dtype=bool)
        utc_ns = index_to_ns(pd.DatetimeIndex(local))
        return utc_ns, exists


UTC_RULE = ZoneRule("UTC")


def parse_zone(text: str, option: str) -> ZoneRule:
    """Parse ``--server-tz`` or ``--source-tz``: an IANA zone name or a fixed offset such as ``UTC+2``.

    Raises
    ------
    ImportDataError
        The text is neither.
    """
    value = text.strip()
    if value.upper() in ("UTC", "GMT", "Z"):
        return ZoneRule(f"UTC (from {option})")
    match = _OFFSET_RE.match(value)
    if match:
        sign = 1 if match["sign"] == "+" else -1
        minutes = int(match["hours"]) * 60 + int(match["minutes"] or 0)
        if minutes > 14 * 60:
            raise ImportDataError(f"Invalid {option} {text!r}: offsets run from UTC-14:00 to UTC+14:00.")
        offset_ns = sign * minutes * NS_PER_MINUTE
        return ZoneRule(f"fixed UTC{'+' if sign > 0 else '-'}{minutes // 60:02d}:{minutes % 60:02d} "
                        f"(from {option})", None, offset_ns)
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ImportDataError(
            f"Invalid {option} {text!r}: expected an IANA zone name such as Europe/Athens or America/New_York, "
            f"or a fixed offset such as UTC+2 or -05:00."
        ) from None
    return ZoneRule(f"{value} local time, with its daylight saving (from {option})", value, 0)


# ---------------------------------------------------------------------------------------------
# Parsed data


@dataclass
class TickChunk:
    """Ticks of one block of an input, in file order, with the rows its reader already dropped.

    ``timestamp_ns`` contains int64 UTC nanoseconds, ``bid`` and ``ask`` float64 prices in
    quote currency (NaN where missing). ``dropped`` counts rows dropped before this point,
    by reason (an unreadable time, say); ``rows_read`` counts every row of the block.
    ``zone_rows`` counts the rows whose time carried its own zone (``"own zone"``) and those
    read with ``--source-tz`` (``"source tz"``), for formats where both may occur.
    """

    timestamp_ns: np.ndarray
    bid: np.ndarray
    ask: np.ndarray
    rows_read: int
    dropped: Counter[str] = field(default_factory=Counter)
    zone_rows: Counter[str] = field(default_factory=Counter)


@dataclass
class SourceInfo:
    """What a reader found out about one input before reading its ticks."""

    source: Source
    file_format: str
    symbol: str
    variant: str
    vendor: str
    zone_rule: str
    symbol_origin: str
    notes: list[str] = field(default_factory=list)

    @property
    def feed(self) -> str:
        """Vendor and account variant: inputs of one feed may be merged."""
        return f"{self.vendor}:{self.variant}" if self.variant else self.vendor


@dataclass
class ReadResult:
    """Result of a reader: the input's description and its chunks (read lazily)."""

    info: SourceInfo
    chunks: Iterator[TickChunk]


# ---------------------------------------------------------------------------------------------
# Wall-clock parsing


@dataclass
class WallClock:
    """Parsed times: wall-clock ns (as if UTC), a validity mask, and the UTC offset of rows that carry one.

    ``offset_ns`` is None when no row carries a zone. Otherwise ``has_offset`` marks the rows
    that do, and ``offset_ns`` contains their offset (local minus UTC).
    """

    wall_ns: np.ndarray
    valid: np.ndarray
    offset_ns: np.ndarray | None = None
    has_offset: np.ndarray | None = None


_DAYS_IN_MONTH = np.array([0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)


def _days_from_civil(year: np.ndarray, month: np.ndarray, day: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 of a proleptic Gregorian date, vectorised (H. Hinnant's algorithm)."""
    y = year - (month <= 2)
    era = np.floor_divide(y, 400)
    yoe = y - era * 400
    mp = (month + 9) % 12
    doy = (153 * mp + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146_097 + doe - 719_468


def _group_int(groups: pa.StructArray, name: str) -> np.ndarray:
    column = groups.field(name)
    filled = pc.if_else(pc.equal(column, ""), "0", column)
    return pc.cast(filled, pa.int64()).to_numpy(zero_copy_only=False)


def parse_wall_clock(strings: pa.Array | pa.ChunkedArray, pattern: str) -> WallClock:
    """Parse time strings with a regular expression whose named groups give the fields.

    Groups ``Y m d H M S`` are required; ``f`` (fraction of a second, 1 to 9 digits) and
    ``z`` (``Z``, ``UTC``, or an offset ``+0200`` / ``-05:00``) are optional. A row that does
    not match, or has an impossible date or time (31 April, 25:00), is invalid.
    """
    if isinstance(strings, pa.ChunkedArray):
        strings = strings.combine_chunks()
    if not pa.types.is_string(strings.type) and not pa.types.is_large_string(strings.type):
        strings = pc.cast(strings, pa.string())
    groups = pc.extract_regex(pc.utf8_trim_whitespace(strings), pattern)
    matched = groups.is_valid().to_numpy(zero_copy_only=False)
    names = {groups.type.field(i).name for i in range(groups.type.num_fields)}

    year, month, day = (_group_int(groups, key) for key in ("Y", "m", "d"))
    hour, minute, second = (_group_int(groups, key) for key in ("H", "M", "S"))
    month_ok = (month >= 1) & (month <= 12)
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    max_day = _DAYS_IN_MONTH[np.where(month_ok, month, 1)] - ((month == 2) & ~leap)
    valid = matched & month_ok & (day >= 1) & (day <= max_day) & (hour < 24) & (minute < 60) & (second < 60)

    wall_ns = ((_days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
               * NS_PER_SECOND)
    if "f" in names:
        fraction = pc.utf8_slice_codeunits(groups.field("f"), 0, 9)
        fraction = pc.utf8_rpad(fraction, 9, "0")
        wall_ns += pc.cast(fraction, pa.int64()).to_numpy(zero_copy_only=False)

    clock = WallClock(np.where(valid, wall_ns, 0), valid)
    if "z" in names:
        clock.offset_ns, clock.has_offset = _zone_offsets(groups.field("z"))
        clock.has_offset &= valid
    return clock


def _zone_offsets(zone: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Return (offset ns, has zone) from zone texts ``Z``, ``UTC``, ``+0200``, ``-05:00`` or empty."""
    upper = pc.utf8_upper(zone)
    is_utc = pc.is_in(upper, pa.array(["Z", "UTC", "GMT"])).to_numpy(zero_copy_only=False)
    digits = pc.replace_substring(pc.utf8_slice_codeunits(upper, 1, 10), ":", "")
    numeric = pc.match_substring_regex(digits, r"^\d{4}$").to_numpy(zero_copy_only=False)
    signs = pc.utf8_slice_codeunits(upper, 0, 1).to_numpy(zero_copy_only=False)
    has_offset = numeric & np.isin(signs, ["+", "-"])
    padded = pc.if_else(pc.match_substring_regex(digits, r"^\d{4}$"), digits, "0000")
    hours = pc.cast(pc.utf8_slice_codeunits(padded, 0, 2), pa.int64()).to_numpy(zero_copy_only=False)
    minutes = pc.cast(pc.utf8_slice_codeunits(padded, 2, 4), pa.int64()).to_numpy(zero_copy_only=False)
    offset_ns = np.where(signs == "-", -1, 1) * (hours * 60 + minutes) * NS_PER_MINUTE
    offset_ns = np.where(has_offset, offset_ns, 0)
    return offset_ns.astype(np.int64), has_offset | is_utc


def prices_to_float(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Return float64 prices; empty, missing or non-numeric values become NaN."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    kind = column.type
    if pa.types.is_floating(kind) or pa.types.is_integer(kind) or pa.types.is_decimal(kind):
        return pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
    if pa.types.is_null(kind):
        return np.full(len(column), np.nan)
    text = pc.utf8_trim_whitespace(pc.cast(column, pa.string()))
    numeric = pc.match_substring_regex(text, r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
    cleaned = pc.if_else(numeric, text, pa.scalar(None, pa.string()))
    return pc.cast(cleaned, pa.float64()).to_numpy(zero_copy_only=False)


# ---------------------------------------------------------------------------------------------
# Streaming CSV


def _line_pieces(handle: IO[bytes], block_bytes: int, encoding: str) -> Iterator[bytes]:
    """Yield UTF-8 pieces of about ``block_bytes`` that end at a line end (the last one may not)."""
    decoder = None if encoding == "utf8" else codecs.getincrementaldecoder(encoding)(errors="replace")
    carry = b""
    first = True
    while True:
        raw = handle.read(block_bytes)
        data = raw if decoder is None else decoder.decode(raw, final=not raw).encode()
        if first:
            data = data.removeprefix(codecs.BOM_UTF8)
            first = False
        data = carry + data
        if not raw:
            if data:
                yield data
            return
        cut = data.rfind(b"\n") + 1
        carry = data[cut:]
        if cut:
            yield data[:cut]


def iter_csv_batches(source: Source, block_bytes: int, *, delimiter: str = ",", column_names: list[str],
                     skip_rows: int = 0, encoding: str = "utf8",
                     column_types: dict[str, pa.DataType] | None = None) -> Iterator[pa.RecordBatch]:
    """Stream a CSV input in record batches with pyarrow, logging progress every few seconds.

    The file is cut into pieces of about ``block_bytes`` at line ends, and each piece is
    parsed with ``pyarrow.csv.open_csv``. Given the whole file, pyarrow's reader reads ahead
    as fast as it can, so its memory grows with the file; the pieces keep it near
    ``block_bytes`` times a small factor. A quoted field may therefore not contain a line end.
    """
    total = source.size()
    parse_options = pcsv.ParseOptions(delimiter=delimiter)
    convert_options = pcsv.ConvertOptions(column_types=column_types or {}, strings_can_be_null=True,
                                          quoted_strings_can_be_null=True)
    started = last_log = time.monotonic()
    rows = 0
    read_bytes = 0
    with source.open() as handle:
        for piece in _line_pieces(handle, block_bytes, encoding):
            read_options = pcsv.ReadOptions(block_size=len(piece) + 1, column_names=column_names,
                                            skip_rows=skip_rows if read_bytes == 0 else 0)
            read_bytes += len(piece)
            try:
                reader = pcsv.open_csv(pa.BufferReader(piece), read_options=read_options,
                                       parse_options=parse_options, convert_options=convert_options)
                batches = list(reader)
            except StopIteration:
                continue
            except pa.ArrowInvalid as exc:
                if "Empty CSV file" in str(exc):
                    continue
                raise ImportDataError(
                    f"Cannot read {source.label} as CSV after row {rows}: {exc}. Check the format (--format), "
                    f"the delimiter and that every row has the same columns."
                ) from exc
            for batch in batches:
                rows += batch.num_rows
                yield batch
            now = time.monotonic()
            if now - last_log >= PROGRESS_INTERVAL_S:
                last_log = now
                share = f", {100.0 * handle.tell() / total:.0f} %" if source.member is None and total else ""
                logger.info("%s: %d rows read in %.0f s%s", source.label, rows, now - started, share)


def column_as_string(batch: pa.RecordBatch, name: str) -> pa.Array:
    """Return a batch column as a string array."""
    column = batch.column(name)
    return column if pa.types.is_string(column.type) else pc.cast(column, pa.string())


def clock_to_utc(clock: WallClock, rule: ZoneRule | None, source: Source,
                 sample: pa.Array) -> tuple[np.ndarray, Counter[str]]:
    """Convert parsed times to UTC ns: rows with their own zone use it, the others ``rule``.

    Returns the UTC times and the rows dropped by reason (their times are set to 0).

    Raises
    ------
    ImportDataError
        Some valid row has no zone and ``rule`` is None.
    """
    dropped: Counter[str] = Counter()
    n_bad = int(np.count_nonzero(~clock.valid))
    if n_bad:
        dropped["unreadable timestamp"] += n_bad
    has_offset = clock.has_offset if clock.has_offset is not None else np.zeros(len(clock.wall_ns), dtype=bool)
    needs_rule = clock.valid & ~has_offset
    utc_ns = clock.wall_ns.copy()
    if clock.offset_ns is not None:
        utc_ns[has_offset] -= clock.offset_ns[has_offset]
    if needs_rule.any():
        if rule is None:
            example = sample[int(np.flatnonzero(needs_rule)[0])].as_py()
            raise ImportDataError(
                f"{source.label}: timestamps such as {example!r} carry no time zone, and this format has no "
                f"vendor rule. Pass the zone of these times with --source-tz, e.g. --source-tz UTC or "
                f"--source-tz America/New_York."
            )
        converted, exists = rule.to_utc_ns(clock.wall_ns[needs_rule])
        utc_ns[needs_rule] = converted
        missing = int(np.count_nonzero(~exists))
        if missing:
            dropped["local time skipped by a daylight-saving change"] += missing
            index = np.flatnonzero(needs_rule)[~exists]
            clock.valid[index] = False
    return np.where(clock.valid, utc_ns, 0), dropped


def make_chunk(timestamp_ns: np.ndarray, valid_time: np.ndarray, bid: np.ndarray, ask: np.ndarray,
               dropped: Counter[str]) -> TickChunk:
    """Build a chunk from one block, keeping only the rows whose time was read."""
    rows_read = len(timestamp_ns)
    if not valid_time.all():
        timestamp_ns, bid, ask = timestamp_ns[valid_time], bid[valid_time], ask[valid_time]
    return TickChunk(timestamp_ns.astype(np.int64, copy=False), bid.astype(np.float64, copy=False),
                     ask.astype(np.float64, copy=False), rows_read, dropped)

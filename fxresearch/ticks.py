"""Tick files: read ``PAIR_YEAR.parquet``, normalise time and prices, validate and report.

A tick is one quote: a UTC timestamp, a bid and an ask in quote currency. ``load_ticks``
returns the validated ticks as numpy arrays, stably sorted by time, with a report of every
row it changed or dropped:

- exact duplicate rows (same timestamp, bid and ask) are dropped, the first one kept;
- rows out of time order are sorted with a stable sort, so ticks that share a timestamp keep
  their file order;
- rows with a missing timestamp, a missing, zero or negative price, or the bid above the ask
  are dropped as invalid, and more than ``config.ticks.max_invalid_fraction`` of them fails
  the pair. A zero spread (bid equal to ask) is a valid quote and is only counted;
- when fewer than half of the kept ticks fall in the UTC year of the file name, the file
  loads with a warning in the report, because its name is probably wrong; below a tenth
  the pair fails, since its results would be filed under the wrong year.

The work is vectorised over whole columns, because a year of ticks can hold 50 million rows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fxresearch.artifacts import write_json_atomic
from fxresearch.config import Config
from fxresearch.instruments import Instrument, get_instrument
from fxresearch.naming import parse_pair_filename
from fxresearch.timeutil import datetime_to_ns, in_weekend_close, index_to_ns, ns_to_datetime

logger = logging.getLogger(__name__)

# Accepted column names, compared after lowercasing and turning spaces and hyphens into
# underscores. When several are present, the first name in the tuple wins.
TIMESTAMP_COLUMNS = ("timestamp", "time", "datetime", "date", "ts", "ts_event")
BID_COLUMNS = ("bid", "bid_price", "bidprice")
ASK_COLUMNS = ("ask", "ask_price", "askprice", "offer")

# Tick times outside [1990-01-01, 2100-01-01) UTC are taken as a wrong unit or a broken file.
MIN_TIMESTAMP_NS = 631_152_000_000_000_000
MAX_TIMESTAMP_NS = 4_102_444_800_000_000_000

# Nanoseconds per unit of an integer epoch, smallest unit last. Within 1990-2100 the four
# units give magnitudes about 150 times apart, so the largest magnitude determines the unit.
_EPOCH_UNITS = (
    ("seconds", 1_000_000_000, 1e11),
    ("milliseconds", 1_000_000, 1e14),
    ("microseconds", 1_000, 1e17),
    ("nanoseconds", 1, float("inf")),
)

# An ISO time string that ends in Z or a UTC offset such as +02:00 or -0500.
_ZONE_SUFFIX_RE = r"(?:[Zz]|[+-][0-9]{2}:?[0-9]{2})$"


class TickDataError(ValueError):
    """A tick file that cannot be read or fails validation."""


@dataclass
class Ticks:
    """Validated ticks of one pair and year, sorted by time.

    ``timestamp_ns`` contains int64 nanoseconds since the epoch in UTC, non-decreasing. Ticks
    with equal timestamps keep their file order. ``bid`` and ``ask`` are float64 prices in
    quote currency with ``0 < bid <= ask``. The three arrays are read-only, because every
    stage of the pair shares them.
    """

    symbol: str
    year: int
    pair_year: str
    path: Path
    timestamp_ns: np.ndarray
    bid: np.ndarray
    ask: np.ndarray
    instrument: Instrument
    report: dict[str, Any]
    synthetic: bool

    @property
    def n(self) -> int:
        """Number of ticks."""
        return len(self.timestamp_ns)


def load_ticks(path: str | Path, config: Config) -> Ticks:
    """Read, normalise and validate one ``PAIR_YEAR.parquet`` tick file.

    The symbol and year come from the file name and the pip size from the instrument table.
    The timestamp, bid and ask columns are found by name in any case, among
    ``TIMESTAMP_COLUMNS``, ``BID_COLUMNS`` and ``ASK_COLUMNS``. Timestamps may be arrow
    timestamps of any unit and zone, integer or float epochs in s, ms, µs or ns (the unit is
    inferred from the magnitude), or ISO strings. A timestamp without a zone is read as UTC
    and recorded in the report's ``warnings``. Prices may be floats, integers, decimals or
    strings. A string that is not a number counts as a missing price. Integer prices are
    taken as prices, not as fixed-point values.

    Parameters
    ----------
    path
        The tick file, named ``PAIR_YEAR.parquet``.
    config
        Reads ``config.ticks.max_invalid_fraction`` and ``config.instruments``.

    Returns
    -------
    Ticks
        The validated ticks with their report (see ``_build_report`` for its keys).

    Raises
    ------
    InvalidFileNameError
        The name does not follow ``PAIR_YEAR.parquet``.
    UnknownInstrumentError
        No pip size is known for the symbol.
    FileNotFoundError
        The file does not exist.
    TickDataError
        The file is unreadable, lacks a column, contains timestamps outside 1990-2100, has
        more invalid rows than allowed, or has no valid tick.
    """
    path = Path(path)
    symbol, year = parse_pair_filename(path)
    pair_year = f"{symbol}_{year}"
    instrument = get_instrument(symbol, config)
    if not path.is_file():
        raise FileNotFoundError(f"Tick file not found: {path}")

    schema = _read_schema(path)
    timestamp_name = _find_column(schema, TIMESTAMP_COLUMNS, "timestamp", path)
    bid_name = _find_column(schema, BID_COLUMNS, "bid", path)
    ask_name = _find_column(schema, ASK_COLUMNS, "ask", path)
    synthetic = (schema.metadata or {}).get(b"synthetic", b"").decode() == "true"

    warnings: list[str] = []
    columns = _read_columns(path, timestamp_name, bid_name, ask_name, warnings)
    rows_read = len(columns.timestamp_ns)
    counts = _validate(columns, path, config.ticks.max_invalid_fraction)
    timestamp_ns, bid, ask = columns.timestamp_ns, columns.bid, columns.ask
    del columns
    for array in (timestamp_ns, bid, ask):
        array.flags.writeable = False
    _check_year(timestamp_ns, year, path, warnings)
    counts["weekend_close_ticks"] = _check_weekend_close(timestamp_ns, warnings)

    report = _build_report(path, pair_year, symbol, instrument, rows_read, counts, timestamp_ns,
                           bid, ask, synthetic, counts["source_timestamp_type"], warnings)
    for warning in warnings:
        logger.warning("%s: %s", pair_year, warning)
    logger.info(
        "%s: read %d rows from %s, kept %d; dropped %d duplicates, %d with a missing timestamp, "
        "%d with a missing price, %d with a non-positive price, %d crossed; sorted %d out of order; "
        "%d zero spreads, %d equal timestamps",
        pair_year, rows_read, path, report["rows_kept"], counts["duplicates_dropped"],
        counts["missing_timestamp"], counts["missing_price"], counts["non_positive_price"],
        counts["crossed"], counts["out_of_order"], counts["zero_spread"], counts["equal_timestamps"],
    )
    return Ticks(symbol, year, pair_year, path, timestamp_ns, bid, ask, instrument, report, synthetic)


def write_ticks_report(ticks: Ticks, out_dir: Path) -> Path:
    """Write ``out_dir/PAIR_YEAR_ticks_report.json`` atomically and return its path."""
    path = Path(out_dir) / f"{ticks.pair_year}_ticks_report.json"
    write_json_atomic(path, ticks.report)
    return path


def _clause(exc: BaseException) -> str:
    """Return an exception's message without end punctuation, to go before a sentence of ours.

    Arrow messages often end in a period, and ours add one after them.
    """
    return str(exc).strip().rstrip(".")


def _read_schema(path: Path) -> pa.Schema:
    try:
        return pq.read_schema(path)
    except (pa.ArrowException, OSError) as exc:
        raise TickDataError(
            f"Cannot read tick file {path} as parquet: {_clause(exc)}. Write the ticks as a parquet file "
            f"with timestamp, bid and ask columns."
        ) from exc


def _normalise_name(name: str) -> str:
    return name.strip().lower().replace(" ", "_").replace("-", "_")


def _find_column(schema: pa.Schema, accepted: tuple[str, ...], role: str, path: Path) -> str:
    """Return the file's column name for ``role``, matching ``accepted`` names in any case."""
    by_name: dict[str, list[str]] = {}
    for name in schema.names:
        by_name.setdefault(_normalise_name(name), []).append(name)
    for candidate in accepted:
        matches = by_name.get(candidate, [])
        if len(matches) > 1:
            raise TickDataError(
                f"Tick file {path} has {len(matches)} {role} columns that differ only in case or "
                f"spacing: {matches}. Keep one of them."
            )
        if matches:
            return matches[0]
    raise TickDataError(
        f"Tick file {path} has no {role} column. Columns found: {schema.names}. "
        f"Accepted {role} column names (any case): {', '.join(accepted)}. Rename the column."
    )


def _decode(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Return the column with dictionary encoding removed."""
    if pa.types.is_dictionary(column.type):
        return column.cast(column.type.value_type)
    return column


def _timestamps_to_ns(column: pa.ChunkedArray, name: str, path: Path,
                      warnings: list[str]) -> tuple[np.ndarray, np.ndarray | None, str]:
    """Convert a timestamp column to int64 UTC nanoseconds.

    Returns the nanoseconds, a validity mask (None when no value is missing) and a
    description of the stored type for the report. Missing or unparseable values get 0 in
    the nanoseconds and False in the mask.
    """
    column = _decode(column)
    kind = column.type
    if pa.types.is_date(kind):
        column = column.cast(pa.timestamp("ns"))
        kind = column.type

    if pa.types.is_timestamp(kind):
        # Arrow stores zoned timestamps as UTC instants, so a zone such as America/New_York
        # needs no shift. A naive timestamp has no stated zone and is read as UTC.
        if kind.tz is None:
            warnings.append(f"column {name!r} ({kind}) has no time zone; its times were read as UTC")
        try:
            column = column.cast(pa.timestamp("ns", tz=kind.tz))
        except pa.ArrowInvalid as exc:
            raise TickDataError(
                f"Tick file {path}: timestamps in column {name!r} ({kind}) do not fit in nanoseconds: "
                f"{_clause(exc)}. Expected times between 1990 and 2100."
            ) from exc
        timestamp_ns, valid = _int_values(column.cast(pa.int64()))
        description = str(kind)
    elif pa.types.is_integer(kind):
        timestamp_ns, valid, unit = _integer_epoch_to_ns(column, name, path)
        description = f"{kind} epoch {unit}"
    elif pa.types.is_floating(kind):
        timestamp_ns, valid, unit = _float_epoch_to_ns(column, name, path)
        description = f"{kind} epoch {unit}"
    elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
        timestamp_ns, valid = _iso_strings_to_ns(column, name, path, warnings)
        description = f"{kind} ISO 8601"
    else:
        raise TickDataError(
            f"Tick file {path}: timestamp column {name!r} has type {kind}, which cannot be read as a "
            f"time. Store an arrow timestamp, an integer epoch (s, ms, µs or ns) or ISO 8601 strings."
        )

    _check_timestamp_range(timestamp_ns, valid, name, description, path)
    return timestamp_ns, valid, description


def _int_values(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray | None]:
    """Return an int64 column as numpy, with nulls as 0 and a validity mask when any is null."""
    if column.null_count == 0:
        return column.to_numpy(), None
    valid = pc.is_valid(column).to_numpy()
    return pc.fill_null(column, 0).to_numpy(), valid


def _epoch_unit(largest: float) -> tuple[str, int]:
    for unit, ns_per_unit, below in _EPOCH_UNITS:
        if abs(largest) < below:
            return unit, ns_per_unit
    raise AssertionError("the last epoch unit has no upper bound")


def _out_of_range_error(path: Path, name: str, value: Any, unit: str) -> TickDataError:
    return TickDataError(
        f"Tick file {path}: timestamp {value} in column {name!r}, read as epoch {unit} from its "
        f"magnitude, is outside 1990-01-01 to 2100-01-01 UTC. Expected epoch seconds, milliseconds, "
        f"microseconds or nanoseconds since 1970-01-01 UTC within that range; fix or remove the row."
    )


def _integer_epoch_to_ns(column: pa.ChunkedArray, name: str,
                         path: Path) -> tuple[np.ndarray, np.ndarray | None, str]:
    bounds = pc.min_max(column)
    smallest, largest = bounds["min"].as_py(), bounds["max"].as_py()
    if largest is None:
        return np.zeros(len(column), dtype=np.int64), np.zeros(len(column), dtype=bool), "unknown unit"
    unit, ns_per_unit = _epoch_unit(max(abs(smallest), abs(largest)))

    # Compare in the stored unit, before multiplying, so a bad value cannot overflow int64.
    for value in (smallest, largest):
        if not MIN_TIMESTAMP_NS // ns_per_unit <= value < MAX_TIMESTAMP_NS // ns_per_unit:
            raise _out_of_range_error(path, name, value, unit)
    values, valid = _int_values(column.cast(pa.int64()))
    if ns_per_unit != 1:
        values = values * ns_per_unit
    return values, valid, unit


def _float_epoch_to_ns(column: pa.ChunkedArray, name: str,
                       path: Path) -> tuple[np.ndarray, np.ndarray | None, str]:
    # NOTE: float64 keeps about 16 significant digits, so a float epoch in µs or ns is already
    # rounded in the file, by up to a few hundred ns.
    values = column.cast(pa.float64()).to_numpy(zero_copy_only=False)
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(len(values), dtype=np.int64), finite, "unknown unit"
    smallest, largest = float(values[finite].min()), float(values[finite].max())
    unit, ns_per_unit = _epoch_unit(max(abs(smallest), abs(largest)))
    for value in (smallest, largest):
        if not MIN_TIMESTAMP_NS / ns_per_unit <= value < MAX_TIMESTAMP_NS / ns_per_unit:
            raise _out_of_range_error(path, name, value, unit)
    # Whole units and the fraction are scaled apart, because the product of a float epoch
    # and 1e9 is past float64's exact integers and would round the nanoseconds.
    values = np.where(finite, values, 0.0)
    whole = np.floor(values)
    timestamp_ns = whole.astype(np.int64) * ns_per_unit + np.rint((values - whole) * ns_per_unit).astype(np.int64)
    return timestamp_ns, (None if finite.all() else finite), unit


def _iso_strings_to_ns(column: pa.ChunkedArray, name: str, path: Path,
                       warnings: list[str]) -> tuple[np.ndarray, np.ndarray | None]:
    present = len(column) - column.null_count
    with_zone = pc.sum(pc.match_substring_regex(column, _ZONE_SUFFIX_RE)).as_py() or 0
    if with_zone < present:
        warnings.append(
            f"{present - with_zone} of {present} times in column {name!r} have no UTC offset; "
            f"they were read as UTC"
        )

    # NaT marks a missing or unparseable string. Pandas also returns NaT for times outside
    # the nanosecond range, so those count as missing timestamps.
    parsed = pd.DatetimeIndex(pd.to_datetime(
        column.to_numpy(zero_copy_only=False), utc=True, format="ISO8601", errors="coerce"))
    missing = np.asarray(parsed.isna())
    timestamp_ns = index_to_ns(parsed).copy()
    if not missing.any():
        return timestamp_ns, None
    timestamp_ns[missing] = 0
    unparseable = int(missing.sum()) - column.null_count
    if unparseable:
        warnings.append(f"{unparseable} times in column {name!r} of {path.name} are not ISO 8601")
    return timestamp_ns, ~missing


def _check_timestamp_range(timestamp_ns: np.ndarray, valid: np.ndarray | None, name: str,
                           description: str, path: Path) -> None:
    present = timestamp_ns if valid is None else timestamp_ns[valid]
    if len(present) == 0:
        return
    for value in (int(present.min()), int(present.max())):
        if not MIN_TIMESTAMP_NS <= value < MAX_TIMESTAMP_NS:
            iso_time = pd.Timestamp(value, unit="ns", tz="UTC").isoformat()
            raise TickDataError(
                f"Tick file {path}: timestamp {iso_time} in column {name!r} ({description}) is outside "
                f"1990-01-01 to 2100-01-01 UTC. Check the column's unit and zone, or remove the row."
            )


def _prices_to_float(column: pa.ChunkedArray, name: str, warnings: list[str]) -> np.ndarray:
    """Convert a price column to float64 with NaN for missing or unparseable values."""
    column = _decode(column)
    kind = column.type
    if pa.types.is_floating(kind) or pa.types.is_integer(kind) or pa.types.is_decimal(kind):
        return column.cast(pa.float64()).to_numpy(zero_copy_only=False)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        prices = pd.to_numeric(column.to_numpy(zero_copy_only=False), errors="coerce")
        prices = np.asarray(prices, dtype=np.float64)
        unparseable = int(np.isnan(prices).sum()) - column.null_count
        if unparseable:
            warnings.append(f"{unparseable} values in price column {name!r} are not numbers; "
                            f"they count as missing prices")
        return prices
    raise TickDataError(
        f"Price column {name!r} has type {kind}, which cannot be read as a price. "
        f"Store prices as floats, integers, decimals or numeric strings."
    )


@dataclass
class _TickColumns:
    """Tick columns during validation. Each step replaces an array, so the old one is freed."""

    timestamp_ns: np.ndarray
    timestamp_valid: np.ndarray | None
    bid: np.ndarray
    ask: np.ndarray
    source_timestamp_type: str

    def take(self, index: np.ndarray) -> None:
        """Keep the rows selected by a boolean mask or an index array, one column at a time."""
        self.timestamp_ns = self.timestamp_ns[index]
        self.bid = self.bid[index]
        self.ask = self.ask[index]


def _read_columns(path: Path, timestamp_name: str, bid_name: str, ask_name: str,
                  warnings: list[str]) -> _TickColumns:
    """Read and convert the three columns one at a time, so one Arrow column is in memory at once."""
    try:
        parquet_file = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise TickDataError(
            f"Cannot read tick file {path}: {_clause(exc)}. Check that it is a complete parquet file."
        ) from exc

    def read(name: str) -> pa.ChunkedArray:
        try:
            return parquet_file.read(columns=[name]).column(0)
        except (pa.ArrowException, OSError) as exc:
            raise TickDataError(
                f"Cannot read column {name!r} of tick file {path}: {_clause(exc)}. "
                f"Check that it is a complete parquet file."
            ) from exc

    timestamp_ns, timestamp_valid, source_timestamp_type = _timestamps_to_ns(
        read(timestamp_name), timestamp_name, path, warnings)
    bid = _prices_to_float(read(bid_name), bid_name, warnings)
    ask = _prices_to_float(read(ask_name), ask_name, warnings)
    return _TickColumns(timestamp_ns, timestamp_valid, bid, ask, source_timestamp_type)


def _validate(columns: _TickColumns, path: Path, max_invalid_fraction: float) -> dict[str, Any]:
    """Drop rows without a timestamp, sort, then drop duplicates and invalid quotes, in place.

    Returns the counts for the report.
    """
    rows_read = len(columns.timestamp_ns)
    counts: dict[str, Any] = {"source_timestamp_type": columns.source_timestamp_type, "missing_timestamp": 0}
    if columns.timestamp_valid is not None:
        counts["missing_timestamp"] = int(rows_read - np.count_nonzero(columns.timestamp_valid))
        columns.take(columns.timestamp_valid)
        columns.timestamp_valid = None

    # A stable sort keeps the file order of ticks that share a timestamp, because that is
    # the only order the vendor gave them.
    timestamp_ns = columns.timestamp_ns
    counts["out_of_order"] = int(np.count_nonzero(timestamp_ns[1:] < timestamp_ns[:-1]))
    if counts["out_of_order"]:
        del timestamp_ns
        columns.take(np.argsort(columns.timestamp_ns, kind="stable"))
    timestamp_ns, bid, ask = columns.timestamp_ns, columns.bid, columns.ask

    keep = np.ones(len(timestamp_ns), dtype=bool)
    duplicates = _duplicate_rows(timestamp_ns, bid, ask)
    keep[duplicates] = False
    counts["duplicates_dropped"] = len(duplicates)

    # Each invalid row is counted once, under the first rule it breaks. A non-finite price
    # (NaN from a null or an unparseable string, or infinity) is missing.
    missing = ~(np.isfinite(bid) & np.isfinite(ask))
    non_positive = ~missing & ((bid <= 0.0) | (ask <= 0.0))
    crossed = ~missing & ~non_positive & (bid > ask)
    counts["missing_price"] = int(np.count_nonzero(missing & keep))
    counts["non_positive_price"] = int(np.count_nonzero(non_positive & keep))
    counts["crossed"] = int(np.count_nonzero(crossed & keep))
    keep &= ~(missing | non_positive | crossed)
    del missing, non_positive, crossed, timestamp_ns, bid, ask

    _check_invalid_fraction(counts, rows_read, path, max_invalid_fraction)
    if not keep.any():
        raise TickDataError(
            f"Tick file {path} contains no valid tick ({rows_read} rows read). "
            f"Supply a file with at least one row of timestamp, bid and ask."
        )
    if not keep.all():
        columns.take(keep)
    del keep

    counts["zero_spread"] = int(np.count_nonzero(columns.bid == columns.ask))
    counts["equal_timestamps"] = int(np.count_nonzero(columns.timestamp_ns[1:] == columns.timestamp_ns[:-1]))
    return counts


def _duplicate_rows(timestamp_ns: np.ndarray, bid: np.ndarray, ask: np.ndarray) -> np.ndarray:
    """Return the indices of rows that repeat an earlier row's (timestamp, bid, ask) exactly.

    ``timestamp_ns`` must be sorted, so exact duplicates lie in the same run of equal
    timestamps, though not always next to each other (A, B, A). Only rows in such runs are
    sorted by (timestamp, bid, ask, index); the first of each equal group is kept.
    """
    same_as_previous = timestamp_ns[1:] == timestamp_ns[:-1]
    if not same_as_previous.any():
        return np.empty(0, dtype=np.int64)
    in_run = np.zeros(len(timestamp_ns), dtype=bool)
    in_run[1:] |= same_as_previous
    in_run[:-1] |= same_as_previous
    rows = np.flatnonzero(in_run)
    del in_run, same_as_previous

    # np.lexsort sorts by the last key first. The row index, as the first key, keeps equal
    # rows in file order, so the earliest one survives.
    rows = rows[np.lexsort((rows, ask[rows], bid[rows], timestamp_ns[rows]))]
    repeats = ((timestamp_ns[rows[1:]] == timestamp_ns[rows[:-1]])
               & (bid[rows[1:]] == bid[rows[:-1]])
               & (ask[rows[1:]] == ask[rows[:-1]]))
    return np.sort(rows[1:][repeats])


def _check_invalid_fraction(counts: dict[str, Any], rows_read: int, path: Path,
                            max_invalid_fraction: float) -> None:
    """Raise when more than ``max_invalid_fraction`` of the non-duplicate rows is invalid."""
    checked = rows_read - counts["duplicates_dropped"]
    invalid = (counts["missing_timestamp"] + counts["missing_price"] + counts["non_positive_price"]
               + counts["crossed"])
    if checked == 0 or invalid <= max_invalid_fraction * checked:
        return
    raise TickDataError(
        f"Tick file {path}: {invalid} of {checked} rows ({100.0 * invalid / checked:.2f} %) are invalid, "
        f"above the limit of {100.0 * max_invalid_fraction:.2f} %: {counts['missing_price']} with a "
        f"missing price, {counts['non_positive_price']} with a zero or negative price, "
        f"{counts['crossed']} with the bid above the ask, {counts['missing_timestamp']} with a missing "
        f"timestamp. Fix the source file, or raise [ticks] max_invalid_fraction in the configuration "
        f"if these rows may be dropped."
    )


# Share of ticks inside the weekend close above which the report warns. It is not zero
# because a few quotes just after Friday 17:00 New York are normal for some vendors.
WEEKEND_TICK_WARNING_SHARE = 0.005


def _check_weekend_close(timestamp_ns: np.ndarray, warnings: list[str]) -> int:
    """Count ticks inside the weekend close (Friday 17:00 to Sunday 17:00 New York) and warn.

    Such ticks are kept, because some vendors quote through the close, but trades can be
    filled on them, so a file with many is flagged.
    """
    n_closed = int(np.count_nonzero(in_weekend_close(timestamp_ns)))
    if n_closed > WEEKEND_TICK_WARNING_SHARE * len(timestamp_ns):
        warnings.append(
            f"{n_closed} of {len(timestamp_ns)} ticks ({n_closed / len(timestamp_ns):.1%}) fall in the weekend "
            f"close (Friday 17:00 to Sunday 17:00 New York), when the market is shut; check the file's "
            f"time zone, or drop those ticks if the vendor quotes through the close"
        )
    return n_closed


# A file with fewer than this share of its ticks in the year of its name fails: its results
# would be filed under the wrong year.
MIN_YEAR_SHARE = 0.1


def _check_year(timestamp_ns: np.ndarray, year: int, path: Path, warnings: list[str]) -> None:
    """Warn when fewer than half of the sorted ticks fall in the file name's UTC year; fail below a tenth.

    A file may start before its year, for example at the Sunday-evening open on 31 December
    at 22:00 UTC, so the check only flags a file whose ticks are mostly of another year.
    Raises TickDataError when fewer than ``MIN_YEAR_SHARE`` of them are in that year.
    """
    year_start_ns, year_end_ns = datetime_to_ns([f"{year}-01-01", f"{year + 1}-01-01"])
    n_ticks = len(timestamp_ns)
    n_in_year = int(np.searchsorted(timestamp_ns, year_end_ns) - np.searchsorted(timestamp_ns, year_start_ns))
    if 2 * n_in_year >= n_ticks:
        return
    first, last = ns_to_datetime(timestamp_ns[[0, -1]])
    message = (
        f"{n_in_year} of {n_ticks} ticks ({n_in_year / n_ticks:.1%}) fall in {year} UTC, the year in "
        f"the file name {path.name}; the ticks run from {first:%Y-%m-%d %H:%M} to {last:%Y-%m-%d %H:%M} "
        f"UTC. Rename the file to the year its ticks cover"
    )
    if n_in_year < MIN_YEAR_SHARE * n_ticks:
        raise TickDataError(f"Tick file {path}: {message}.")
    warnings.append(message)


def _build_report(path: Path, pair_year: str, symbol: str, instrument: Instrument, rows_read: int,
                  counts: dict[str, Any], timestamp_ns: np.ndarray, bid: np.ndarray, ask: np.ndarray,
                  synthetic: bool, source_timestamp_type: str, warnings: list[str]) -> dict[str, Any]:
    """Return the JSON-ready report of one tick file.

    Counts: ``rows_read``; ``duplicates_dropped``; ``out_of_order`` (rows earlier than the
    row before them in the file); ``missing_timestamp``, ``missing_price``,
    ``non_positive_price`` and ``crossed`` (bid > ask), each row under the first rule it
    breaks; ``zero_spread`` and ``equal_timestamps`` (kept ticks whose timestamp equals the
    previous kept tick's); ``rows_kept``.
    """
    first, last = ns_to_datetime(timestamp_ns[[0, -1]])
    median_spread = float(np.median(ask - bid, overwrite_input=True))
    return {
        "file": str(path),
        "pair_year": pair_year,
        "symbol": symbol,
        "pip_size": instrument.pip_size,
        "price_precision": instrument.price_precision,
        "rows_read": rows_read,
        "duplicates_dropped": counts["duplicates_dropped"],
        "out_of_order": counts["out_of_order"],
        "equal_timestamps": counts["equal_timestamps"],
        "missing_timestamp": counts["missing_timestamp"],
        "missing_price": counts["missing_price"],
        "non_positive_price": counts["non_positive_price"],
        "crossed": counts["crossed"],
        "zero_spread": counts["zero_spread"],
        "weekend_close_ticks": counts["weekend_close_ticks"],
        "rows_kept": len(timestamp_ns),
        "first_timestamp": first.isoformat(),
        "last_timestamp": last.isoformat(),
        "synthetic": synthetic,
        "source_timestamp_type": source_timestamp_type,
        "warnings": list(warnings),
        "median_spread_pips": round(median_spread / instrument.pip_size, 6),
    }

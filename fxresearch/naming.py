"""Input file names: ``PAIR_YEAR.parquet`` parsing and the scan of an input folder.

A tick file is named by its symbol and year, for example ``EURUSD_2025.parquet``: six
uppercase letters (a currency pair such as ``EURUSD`` or a metal such as ``XAUUSD``), an
underscore and a four-digit year. The suffix may be in any case. The name is the only
place the tool reads the symbol from, so a file that does not follow the rule is reported
and never guessed at.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from fxresearch.storage import is_url, list_parquet_urls

logger = logging.getLogger(__name__)

EXPECTED_FORM = "PAIR_YEAR.parquet, e.g. EURUSD_2025.parquet"

PAIR_FILE_RE = re.compile(r"^(?P<symbol>[A-Z]{6})_(?P<year>[0-9]{4})\.(?i:parquet)\Z")


class InvalidFileNameError(ValueError):
    """A file name that does not follow ``PAIR_YEAR.parquet``."""


@dataclass(frozen=True)
class PairFile:
    """A tick file whose name follows the rule: its path, symbol, year and ``SYMBOL_YEAR`` id."""

    # A local path, or for a file behind an fsspec URL a UrlPath, which has .name like a Path.
    path: Path
    symbol: str
    year: int
    pair_year: str


@dataclass(frozen=True)
class InvalidFile:
    """A file skipped by the folder scan, with the reason in words."""

    path: Path  # or a UrlPath, as in PairFile
    reason: str


@dataclass
class ScanResult:
    """Files of an input folder, split into valid tick files and rejected ones, each sorted by name."""

    valid: list[PairFile] = field(default_factory=list)
    invalid: list[InvalidFile] = field(default_factory=list)


def parse_pair_filename(path: str | Path) -> tuple[str, int]:
    """Return ``(SYMBOL, YEAR)`` from a ``PAIR_YEAR.parquet`` file name.

    Only the name is read, never the file.

    Raises
    ------
    InvalidFileNameError
        With the file, the reason and the expected form.
    """
    path = Path(path)
    match = PAIR_FILE_RE.fullmatch(path.name)
    if match is None:
        reason = _explain_mismatch(path.name)
        location = f" in {path.parent}" if path.parent != Path(".") else ""
        raise InvalidFileNameError(
            f"Invalid tick file name {path.name!r}{location}: {reason}. Expected {EXPECTED_FORM}."
        )
    return match["symbol"], int(match["year"])


def _explain_mismatch(name: str) -> str:
    """Return why ``name`` does not match ``PAIR_FILE_RE``, checking the parts in reading order."""
    stem, dot, suffix = name.rpartition(".")
    if not dot or suffix.lower() != "parquet":
        return "the suffix is not .parquet"
    symbol, underscore, year = stem.partition("_")
    if not underscore:
        return "the symbol is not followed by an underscore and a year"
    if not symbol.isascii() or not symbol.isalpha():
        return f"the symbol {symbol!r} must contain letters only"
    if len(symbol) != 6:
        return f"the symbol {symbol!r} has {len(symbol)} letters, expected 6"
    if not symbol.isupper():
        return f"the symbol {symbol!r} must be uppercase ({symbol.upper()})"
    if not (len(year) == 4 and year.isascii() and year.isdigit()):
        return f"the year {year!r} must be four digits"
    return "the name does not follow the rule"


def scan_input_dir(folder: str | Path) -> ScanResult:
    """Split the ``*.parquet`` files of a folder into valid tick files and invalid ones.

    The scan is not recursive and matches the ``.parquet`` suffix in any case; other files
    are ignored, and so are hidden files (names starting with a dot, such as the
    ``._EURUSD_2025.parquet`` metadata files macOS writes on shared drives).
    When two files name the same pair and year (``EURUSD_2025.parquet`` and
    ``EURUSD_2025.PARQUET``, say), neither can be chosen safely, so both become invalid
    with a reason naming both.

    Raises
    ------
    FileNotFoundError, NotADirectoryError
        When ``folder`` is missing or is not a folder.
    """
    if is_url(folder):
        return _scan_url_dir(str(folder))
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"Input folder not found: {folder}. Pass a folder of PAIR_YEAR.parquet files.")
    if not folder.is_dir():
        raise NotADirectoryError(f"Input path {folder} is not a folder. Pass a folder of PAIR_YEAR.parquet files.")

    candidates = sorted(
        (p for p in folder.iterdir() if _is_candidate(p.name)), key=lambda p: p.name
    )
    result = ScanResult()
    by_pair_year: dict[str, list[PairFile]] = defaultdict(list)
    for path in candidates:
        problem = _file_problem(path)
        if problem is not None:
            result.invalid.append(InvalidFile(path, problem))
            continue
        try:
            symbol, year = parse_pair_filename(path)
        except InvalidFileNameError as exc:
            result.invalid.append(InvalidFile(path, str(exc)))
            continue
        by_pair_year[f"{symbol}_{year}"].append(PairFile(path, symbol, year, f"{symbol}_{year}"))

    # Two files for one pair and year: picking either would hide the other's data.
    for pair_year, files in by_pair_year.items():
        if len(files) == 1:
            result.valid.append(files[0])
            continue
        names = " and ".join(f.path.name for f in files)
        for pair_file in files:
            result.invalid.append(InvalidFile(
                pair_file.path,
                f"Conflicting tick files for {pair_year}: {names} in {folder} name the same pair "
                f"and year. Remove or rename all but one of them.",
            ))

    result.valid.sort(key=lambda f: f.path.name)
    result.invalid.sort(key=lambda f: f.path.name)
    logger.info("Scanned %s: %d valid tick files, %d invalid", folder, len(result.valid), len(result.invalid))
    return result


def _scan_url_dir(folder_url: str) -> ScanResult:
    """Scan a folder behind an fsspec URL with the same rules as a local folder."""
    result = ScanResult()
    by_pair_year: dict[str, list[PairFile]] = defaultdict(list)
    for url_path, is_file in list_parquet_urls(folder_url):
        url = cast(Path, url_path)
        if not _is_candidate(url.name):
            continue
        if not is_file:
            result.invalid.append(InvalidFile(url, f"{url.name} is a folder, expected a single parquet file "
                                                   f"named {EXPECTED_FORM}."))
            continue
        try:
            symbol, year = parse_pair_filename(url.name)
        except InvalidFileNameError as exc:
            result.invalid.append(InvalidFile(url, f"{exc} (in {folder_url})"))
            continue
        by_pair_year[f"{symbol}_{year}"].append(PairFile(url, symbol, year, f"{symbol}_{year}"))
    for pair_year, files in by_pair_year.items():
        if len(files) == 1:
            result.valid.append(files[0])
            continue
        names = " and ".join(f.path.name for f in files)
        result.invalid.extend(InvalidFile(f.path, f"Conflicting tick files for {pair_year}: {names} in {folder_url} "
                                                  f"name the same pair and year. Remove or rename all but one of them.")
                              for f in files)
    result.valid.sort(key=lambda f: f.path.name)
    result.invalid.sort(key=lambda f: f.path.name)
    logger.info("Scanned %s: %d valid tick files, %d invalid", folder_url, len(result.valid), len(result.invalid))
    return result


def _is_candidate(name: str) -> bool:
    """Return True for a name the scan looks at: a ``.parquet`` suffix in any case, not a hidden file."""
    return name.lower().endswith(".parquet") and not name.startswith(".")


def _file_problem(path: Path) -> str | None:
    """Return why ``path`` cannot be read as a single tick file, or None when it can."""
    if path.is_symlink() and not path.exists():
        return f"{path.name} is a broken symbolic link. Point it at a parquet file or remove it."
    if path.is_dir():
        return f"{path.name} is a folder, expected a single parquet file named {EXPECTED_FORM}."
    if not path.is_file():
        return f"{path.name} is not a regular file. Expected {EXPECTED_FORM}."
    return None

"""Import vendor tick files (CSV, zip, ``.bi5``, re-encoded parquet) into ``PAIR_YEAR.parquet``.

``convert_files`` is the entry point; ``FORMATS`` maps each format name (the values of
``--format``) to its reader. One module per format family reads its vendor's layout and time
zone; ``common`` holds symbols, zone rules and parsing, ``writer`` the chunked merge and the
report.
"""

from fxresearch.importing.common import ImportDataError, ImportOptions, normalise_symbol, parse_zone
from fxresearch.importing.convert import FORMATS, check_feed_overlap, convert_files
from fxresearch.importing.detect import detect_format
from fxresearch.importing.writer import REPORT_SUFFIX, format_report

__all__ = ["FORMATS", "REPORT_SUFFIX", "ImportDataError", "ImportOptions", "check_feed_overlap", "convert_files",
           "detect_format", "format_report", "normalise_symbol", "parse_zone"]

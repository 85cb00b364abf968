"""Format detection from a file's first bytes and lines, and the text helpers readers share.

Detection looks at content, never at the file name, except for ``.bi5`` (LZMA-compressed
binary records with no header to read). ``--format`` overrides it.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

from fxresearch.importing.common import ImportDataError, Source

HEAD_BYTES = 65_536
PARQUET_MAGIC = b"PAR1"


@dataclass(frozen=True)
class TextHead:
    """The first complete lines of a text input, its encoding for pyarrow and its delimiter."""

    lines: list[str]
    encoding: str
    delimiter: str

    def fields(self, index: int = 0) -> list[str]:
        """Return the fields of line ``index``, stripped of spaces and quotes."""
        return [field.strip().strip('"').strip() for field in self.lines[index].split(self.delimiter)]


def read_text_head(source: Source) -> TextHead:
    """Read the first lines of a text input, detecting a UTF-16 byte-order mark and the delimiter.

    Raises
    ------
    ImportDataError
        The input is empty.
    """
    raw = source.read_head(HEAD_BYTES)
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding = "utf-16"
    elif len(raw) > 1 and raw[1:2] == b"\x00" and raw[0:1] == b"<":
        encoding = "utf-16-le"  # MetaTrader exports without a byte-order mark
    else:
        encoding = "utf8"
    text = raw.decode(encoding if encoding != "utf8" else "utf-8-sig", errors="replace")
    lines = text.splitlines()
    if len(raw) == HEAD_BYTES and len(lines) > 1:
        lines = lines[:-1]  # the last line may be cut
    lines = [line for line in lines if line.strip()]
    if not lines:
        raise ImportDataError(f"Input {source.label} is empty.")
    first = lines[0]
    delimiter = max(("\t", ";", ","), key=first.count)
    if first.count(delimiter) == 0:
        delimiter = ","
    return TextHead(lines, encoding, delimiter)


_TRUEFX_SYMBOL_RE = re.compile(r"^[A-Za-z]{3}/[A-Za-z]{3}$")
_HISTDATA_TIME_RE = re.compile(r"^\d{8} \d{9}$")
_LEAN_MS_RE = re.compile(r"^\d{1,8}$")


def detect_format(source: Source) -> str:
    """Return the format name of an input from its content (see ``fxresearch.importing.FORMATS``)."""
    if source.name.lower().endswith(".bi5"):
        return "dukascopy-bi5"
    if source.read_head(4) == PARQUET_MAGIC:
        return "nautilus-parquet"
    head = read_text_head(source)
    fields = head.fields()
    first = fields[0].lower()
    if first == "exness":
        return "exness"
    if "<DATE>" in head.lines[0].upper() and "<BID>" in head.lines[0].upper():
        return "mt5"
    if first in ("gmt time", "local time"):
        return "dukascopy-csv"
    if _TRUEFX_SYMBOL_RE.match(fields[0]) and len(fields) >= 4:
        return "truefx"
    if _HISTDATA_TIME_RE.match(fields[0]) and len(fields) >= 3:
        return "histdata"
    if _LEAN_MS_RE.match(fields[0]) and int(fields[0]) <= 86_400_000:
        return "lean"
    return "generic"

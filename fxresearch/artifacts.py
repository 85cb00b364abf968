"""Output paths, atomic writes and the per-pair manifest.

Every artifact is written to a temporary name in the same folder and renamed into place, so
a killed run never leaves a half-written file under a final name. The manifest
(``output/PAIR_YEAR/manifest.json``) records, for each artifact, the input file's
fingerprint, a hash of the configuration sections the stage reads, the code version and the
artifacts it was built from. An artifact is current only when all of these still match.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fxresearch import __version__

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"


def pair_dir(output_dir: str | Path, pair_year: str) -> Path:
    """Return ``output_dir/PAIR_YEAR``, created if missing."""
    path = Path(output_dir) / pair_year
    path.mkdir(parents=True, exist_ok=True)
    return path


def _atomic_target(path: Path) -> tuple[int, str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    return tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write bytes to a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    fd, tmp = _atomic_target(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | Path, document: Any) -> None:
    """Write a JSON document atomically, with sorted keys and NaN written as null."""
    text = json.dumps(_json_safe(document), indent=2, sort_keys=True, allow_nan=False)
    write_bytes_atomic(path, (text + "\n").encode())


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    return value


def write_parquet_atomic(path: str | Path, table: pd.DataFrame | pa.Table,
                         metadata: dict[str, str] | None = None) -> None:
    """Write a DataFrame or Arrow table as zstd parquet atomically, with optional metadata."""
    path = Path(path)
    if isinstance(table, pd.DataFrame):
        table = pa.Table.from_pandas(table, preserve_index=False)
    if metadata:
        merged = dict(table.schema.metadata or {})
        merged.update({k.encode(): v.encode() for k, v in metadata.items()})
        table = table.replace_schema_metadata(merged)
    fd, tmp = _atomic_target(path)
    os.close(fd)
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def file_fingerprint(path: str | Path) -> str:
    """Return a content hash of a file (BLAKE2b over all bytes) with its size."""
    path = Path(path)
    digest = hashlib.blake2b(digest_size=16)
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return f"{path.stat().st_size}-{digest.hexdigest()}"


class Manifest:
    """The per-pair record of which artifacts exist and what they were built from."""

    def __init__(self, directory: Path, document: dict[str, Any]) -> None:
        self.directory = directory
        self.document = document
        self.document.setdefault("artifacts", {})

    @classmethod
    def load(cls, directory: str | Path) -> "Manifest":
        directory = Path(directory)
        path = directory / MANIFEST_NAME
        document: dict[str, Any] = {}
        if path.exists():
            try:
                document = json.loads(path.read_text())
            except (json.JSONDecodeError, OSError) as exc:
                logger.warning("Ignoring unreadable manifest %s (%s); artifacts will be rebuilt", path, exc)
                document = {}
        return cls(directory, document)

    def save(self) -> None:
        write_json_atomic(self.directory / MANIFEST_NAME, self.document)

    def entry(self, name: str) -> dict[str, Any] | None:
        return self.document["artifacts"].get(name)

    def stale_reason(self, name: str, input_fingerprint: str, config_hash: str,
                     depends_on: dict[str, str] | None = None, code_version: str = __version__) -> str | None:
        """Return why the artifact must be rebuilt, or None when it is current.

        The reasons, checked in this order: never built, input file changed, configuration
        changed, code changed, an input stage was rebuilt, a recorded file is missing.
        """
        entry = self.entry(name)
        if entry is None:
            return "not built yet"
        if entry.get("input_fingerprint") != input_fingerprint:
            return "input file changed"
        if entry.get("config_hash") != config_hash:
            return "configuration changed"
        if entry.get("code_version") != code_version:
            return "code changed"
        if entry.get("depends_on", {}) != (depends_on or {}):
            changed = sorted(k for k in set(entry.get("depends_on", {})) | set(depends_on or {})
                             if entry.get("depends_on", {}).get(k) != (depends_on or {}).get(k))
            return f"rebuilt input: {', '.join(changed)}"
        missing = [f for f in entry.get("files", []) if not (self.directory / f).exists()]
        if missing:
            return f"file missing: {missing[0]}"
        return None

    def is_current(self, name: str, input_fingerprint: str, config_hash: str,
                   depends_on: dict[str, str] | None = None, code_version: str = __version__) -> bool:
        """Return True when the artifact exists on disk and was built from the same inputs."""
        return self.stale_reason(name, input_fingerprint, config_hash, depends_on, code_version) is None

    def record(self, name: str, files: list[str], input_fingerprint: str, config_hash: str,
               depends_on: dict[str, str] | None = None, code_version: str = __version__,
               **extra: Any) -> str:
        """Record a freshly built artifact and return its build id (used by dependants)."""
        build_id = hashlib.sha256(
            json.dumps([name, input_fingerprint, config_hash, code_version, depends_on or {}],
                       sort_keys=True).encode()).hexdigest()[:16]
        self.document["artifacts"][name] = {
            "files": files,
            "input_fingerprint": input_fingerprint,
            "config_hash": config_hash,
            "code_version": code_version,
            "depends_on": depends_on or {},
            "build_id": build_id,
            **extra,
        }
        return build_id

    def build_id(self, name: str) -> str:
        entry = self.entry(name)
        return entry["build_id"] if entry else ""


TIME_COLUMNS = ("timestamp", "entry_time", "exit_time")


def write_frame(path: str | Path, frame: pd.DataFrame, metadata: dict[str, str] | None = None) -> None:
    """Write a table whose time columns hold int64 UTC ns as ``timestamp[ns, tz=UTC]`` parquet.

    The columns named in ``TIME_COLUMNS`` are converted so that pandas, polars and duckdb
    read real timestamps; every other column is written as it is.
    """
    table = pa.Table.from_pandas(frame, preserve_index=False)
    # An empty text column arrives as Arrow's null type; store it as text so that empty and
    # full tables of one kind share a schema.
    for index, item in enumerate(table.schema):
        if pa.types.is_null(item.type):
            table = table.set_column(index, item.name, table.column(index).cast(pa.large_string()))
    for name in TIME_COLUMNS:
        if name in table.column_names and pa.types.is_integer(table.schema.field(name).type):
            index = table.column_names.index(name)
            column = table.column(name).cast(pa.int64()).cast(pa.timestamp("ns", tz="UTC"))
            table = table.set_column(index, name, column)
    write_parquet_atomic(path, table, metadata)


def read_frame(path: str | Path) -> pd.DataFrame:
    """Read a table written by ``write_frame``, giving time columns back as int64 UTC ns."""
    table = pq.read_table(path)
    for name in TIME_COLUMNS:
        if name in table.column_names and pa.types.is_timestamp(table.schema.field(name).type):
            index = table.column_names.index(name)
            column = table.column(name).cast(pa.timestamp("ns", tz="UTC")).cast(pa.int64())
            table = table.set_column(index, name, column)
    return table.to_pandas()


def read_metadata(path: str | Path) -> dict[str, str]:
    """Return a parquet file's schema metadata as text, without the pandas block."""
    raw = pq.read_schema(path).metadata or {}
    return {k.decode(): v.decode() for k, v in raw.items() if k != b"pandas"}

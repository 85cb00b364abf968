"""Output paths, atomic writes and the per-pair manifest.

Every artifact is written to a temporary name in the same folder and renamed into place, so
a killed run never leaves a half-written file under a final name. The temporary name
carries the writing process's id and a random part (``.NAME.<pid>.<uuid>.tmp``), so two
processes never share one, and a parent can remove what a stopped pair process left
(``remove_temp_files``). The manifest is saved after the files it lists, so it is the mark
that they are complete. The manifest
(``output/PAIR_YEAR/manifest.json``) records, for each artifact, the input file's
fingerprint, a hash of the configuration sections the stage reads, the code version and the
artifacts it was built from. An artifact is current only when all of these still match.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fxresearch import __version__

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
# Temporary names: a dot, the final name, the writer's pid, 32 hex digits, ".tmp".
TEMP_NAME_RE = re.compile(r"^\.(?P<name>.+)\.(?P<pid>[0-9]+)\.(?P<token>[0-9a-f]{32})\.tmp$")


class OutputWriteError(OSError):
    """An artifact could not be written; the message names the path, the cause and the fix."""


def _write_failure(path: Path, exc: OSError) -> OutputWriteError:
    """Return an OutputWriteError for ``exc`` with the advice that fits its errno."""
    cause = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = (f"The disk holding {path.parent} is full. Free space there (or pass another --output-dir) "
               f"and rerun: finished pairs are kept and skipped")
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = f"The folder {path.parent} is not writable. Fix its permissions or pass a writable --output-dir"
    elif exc.errno in (errno.ENOTDIR, errno.EEXIST):
        fix = f"A file is in the way of the output folder {path.parent}. Move it, or pass another --output-dir"
    else:
        fix = "Check the output folder and rerun"
    # One argument keeps str(error) to the message; the errno stays for callers that check it.
    error = OutputWriteError(f"Cannot write {path}: {cause}. {fix}.")
    error.errno = exc.errno
    return error


def pair_dir(output_dir: str | Path, pair_year: str) -> Path:
    """Return ``output_dir/PAIR_YEAR``, created if missing.

    Raises OutputWriteError when the folder cannot be made, and ValueError when ``pair_year``
    is not one folder name directly inside ``output_dir``.
    """
    path = Path(output_dir) / pair_year
    # Checked before mkdir: a name such as "../x", "EUR/USD" or an absolute path, or an existing
    # symbolic link at ``path``, would put the pair's files outside the output folder.
    root = Path(output_dir).resolve()
    if pair_year in ("", ".", "..") or Path(pair_year).name != pair_year or path.resolve().parent != root:
        raise ValueError(
            f"Pair folder name {pair_year!r} does not resolve to a folder directly inside the output folder "
            f"{root}. Use a SYMBOL_YEAR name such as EURUSD_2025, and remove any symbolic link there that leads out."
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _write_failure(path / MANIFEST_NAME, exc) from exc
    return path


def temp_path_for(path: Path) -> Path:
    """Return a temporary name beside ``path`` unique to this process and call."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")


def _atomic_target(path: Path) -> tuple[int, Path]:
    tmp = temp_path_for(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644), tmp
    except OSError as exc:
        raise _write_failure(path, exc) from exc


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write bytes to a temporary file beside ``path``, then rename it into place.

    Raises OutputWriteError, naming the path and the fix, when the write fails.
    """
    path = Path(path)
    fd, tmp = _atomic_target(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and not isinstance(exc, OutputWriteError):
            raise _write_failure(path, exc) from exc
        raise


def remove_temp_files(folder: str | Path, pids: set[int] | None = None) -> list[Path]:
    """Remove temporary files under ``folder`` written by ``pids``, or by any process that is gone.

    With ``pids`` None, a file is removed only when no process with its pid exists, so the
    files of a running writer stay. Returns the removed paths.
    """
    removed = []
    for path in Path(folder).rglob(".*.tmp"):
        match = TEMP_NAME_RE.match(path.name)
        if match is None:
            continue
        pid = int(match["pid"])
        if (pid in pids) if pids is not None else not _process_exists(pid):
            path.unlink(missing_ok=True)
            removed.append(path)
    if removed:
        logger.info("Removed %d temporary files under %s", len(removed), folder)
    return removed


def _process_exists(pid: int) -> bool:
    """Return True when ``pid`` runs; a zombie (exited, not yet reaped) does not count."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by another user
        return True
    # In a container whose first process does not reap orphans, a killed writer stays a zombie.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


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
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a new empty temporary file beside ``path``; rename it to ``path`` when the block succeeds.

    For files written in parts (a parquet writer appending chunks). The temporary name is
    this process's (``temp_path_for``), so ``remove_temp_files`` cleans it up after a killed
    run. On an exception the temporary file is removed, and an OSError becomes an
    OutputWriteError naming the path and the fix.
    """
    path = Path(path)
    fd, tmp = _atomic_target(path)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and not isinstance(exc, OutputWriteError):
            raise _write_failure(path, exc) from exc
        raise


def file_fingerprint(path: str | Path) -> str:
    """Return a content hash of a file (BLAKE2b over all bytes) with its size.

    ``path`` may be an fsspec URL; the hash is the same as that of a local copy.
    """
    from fxresearch.storage import is_url, open_url

    digest = hashlib.blake2b(digest_size=16)
    size = 0
    with (open_url(str(path)) if is_url(path) else Path(path).open("rb")) as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
            size += len(chunk)
    return f"{size}-{digest.hexdigest()}"


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

    def forget(self, name: str) -> bool:
        """Drop an artifact's entry before it is rebuilt; return True when there was one.

        Saved before the rebuild, this keeps the manifest from listing files that are being
        replaced, so a run killed mid-stage leaves that stage not current.
        """
        return self.document["artifacts"].pop(name, None) is not None

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

"""Input and output folders given as fsspec URLs (``s3://bucket/ticks``, ``file:///data``, ``memory://x``).

The stages read and write local files. A pair whose input or output folder is a URL runs in
a local staging folder instead (``staged_pair``):

1. its tick file and its existing output files are copied down from the URLs;
2. the job runs on the local copies, so every stage and the manifest work as they do locally;
3. the old remote manifest is deleted, then each file the job wrote is copied up once under
   its final name, and the manifest last, because an object store can neither rename nor
   append. A pair killed before the last copy has no manifest, so it is not current and a
   rerun computes it again.

The orchestrator reads the URLs too: the folder listing, each file's parquet footer and
content fingerprint, and the pairs' manifests for the resume check (``manifest_mirror``).
``memory://`` is a store inside one process, so it only works where the pairs run in the
orchestrator's process (a Dask cluster with ``processes=False``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

logger = logging.getLogger(__name__)

__all__ = ["INSTALL_HINT", "StagedPair", "UrlPath", "is_url", "join_url", "list_parquet_urls", "local_run_dir",
           "manifest_mirror", "open_url", "read_footer", "staged_pair", "url_filesystem"]

INSTALL_HINT = "pip install -r requirements-cluster.txt"
URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# Name of the manifest, repeated here so this module imports nothing heavy.
_MANIFEST_NAME = "manifest.json"


def is_url(location: object) -> bool:
    """Return True when ``location`` is a text fsspec URL such as ``s3://bucket/ticks``."""
    return isinstance(location, str) and URL_RE.match(location) is not None


class UrlPath(str):
    """A file or folder URL with ``.name`` and ``.parent``, like a ``pathlib.Path``.

    ``Path("s3://bucket/x")`` would fold the two slashes into one, so URLs stay text.
    """

    @property
    def name(self) -> str:
        return self.rstrip("/").rsplit("/", 1)[-1]

    @property
    def parent(self) -> "UrlPath":
        return UrlPath(self.rstrip("/").rsplit("/", 1)[0])


def join_url(url: str, *parts: str) -> str:
    """Join path parts onto a URL with single slashes: ``join_url("s3://b/out", "EURUSD_2025")``."""
    joined = url.rstrip("/")
    for part in parts:
        joined = f"{joined}/{part.strip('/')}"
    return joined


def url_filesystem(url: str) -> tuple[Any, str]:
    """Return the fsspec filesystem of ``url`` and the path inside it.

    Raises
    ------
    ValueError
        When fsspec is missing or has no filesystem for the URL's protocol. The message
        names the URL and the package to install.
    """
    try:
        import fsspec
        from fsspec.core import url_to_fs
    except ImportError:
        raise ValueError(f"Reading {url} needs the fsspec package, which is not installed. "
                         f"Install it with: {INSTALL_HINT}") from None
    try:
        filesystem, path = url_to_fs(url)
    except (ImportError, ValueError) as exc:
        protocol = url.split("://", 1)[0]
        known = ", ".join(sorted(p for p in fsspec.available_protocols() if len(p) > 2)[:12])
        raise ValueError(f"Cannot open {url}: no filesystem for {protocol}:// is available ({exc}). Install its "
                         f"fsspec package (s3fs for s3://, gcsfs for gs://) or use one of: {known}") from None
    return filesystem, path


def open_url(url: str, mode: str = "rb") -> Any:
    """Open a file at ``url`` through fsspec (a context manager, as ``open``)."""
    filesystem, path = url_filesystem(url)
    return filesystem.open(path, mode)


def local_run_dir(output_url: str, root: str | Path = "output") -> Path:
    """Return the local folder of a URL output's logs, ledgers and measurements.

    The ledger stays on the machine that runs the command, under ``root/remote/<URL as a name>``.
    """
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", output_url.rstrip("/")).strip("_")
    return Path(root) / "remote" / name


def list_parquet_urls(folder_url: str) -> list[tuple[UrlPath, bool]]:
    """Return ``(url, is_file)`` of every entry of ``folder_url`` whose name ends in ``.parquet``, any case.

    Raises FileNotFoundError, naming the URL, when the folder does not exist.
    """
    filesystem, base = url_filesystem(folder_url)
    base = base.rstrip("/")
    if not filesystem.isdir(base):
        raise FileNotFoundError(f"Input folder not found: {folder_url}. Pass a folder of PAIR_YEAR.parquet files.")
    protocol = folder_url.split("://", 1)[0]
    entries = []
    for info in filesystem.ls(base, detail=True):
        name = str(info["name"]).rstrip("/").rsplit("/", 1)[-1]
        if name.lower().endswith(".parquet"):
            entries.append((UrlPath(join_url(folder_url, name)), info.get("type") == "file"))
    logger.info("Listed %s (%s): %d parquet entries", folder_url, protocol, len(entries))
    return sorted(entries, key=lambda entry: entry[0].name)


def read_footer(url: str) -> Any:
    """Return the parquet footer metadata (``pyarrow.parquet.FileMetaData``) of the file at ``url``."""
    import pyarrow.parquet as pq

    with open_url(url) as handle:
        return pq.ParquetFile(handle).metadata


# --------------------------------------------------------------------------- the worker side


class StagedPair:
    """Local copies of one pair's tick file and output folder, and what to copy back."""

    def __init__(self, root: Path, input_path: Path, output_dir: Path, pair_year: str, output_url: str | None) -> None:
        self.root, self.input_path, self.output_dir = root, input_path, output_dir
        self.pair_year, self.output_url = pair_year, output_url
        self._before: dict[str, tuple[int, int]] = {}

    @property
    def local_pair_dir(self) -> Path:
        return self.output_dir / self.pair_year

    def snapshot(self) -> None:
        """Record the size and modification time of every local output file, so ``upload`` finds the job's writes."""
        self._before = _file_stamps(self.local_pair_dir)

    def upload(self) -> list[str]:
        """Copy each file the job wrote to the output URL, the manifest last, and return their names."""
        if self.output_url is None:
            return []
        after = _file_stamps(self.local_pair_dir)
        changed = sorted(name for name, stamp in after.items() if self._before.get(name) != stamp)
        if _MANIFEST_NAME in changed:
            changed.remove(_MANIFEST_NAME)
            changed.append(_MANIFEST_NAME)
        filesystem, base = url_filesystem(join_url(self.output_url, self.pair_year))
        manifest_target = f"{base.rstrip('/')}/{_MANIFEST_NAME}"
        # Deleted first: the old manifest would list names whose files are being replaced.
        if changed and filesystem.exists(manifest_target):
            filesystem.rm_file(manifest_target)
        for name in changed:
            target = f"{base.rstrip('/')}/{name}"
            filesystem.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
            filesystem.put_file(str(self.local_pair_dir / name), target)
        logger.info("%s: copied %d files to %s", self.pair_year, len(changed),
                    join_url(self.output_url, self.pair_year))
        return changed


def _file_stamps(folder: Path) -> dict[str, tuple[int, int]]:
    if not folder.is_dir():
        return {}
    return {path.relative_to(folder).as_posix(): (path.stat().st_size, path.stat().st_mtime_ns)
            for path in folder.rglob("*") if path.is_file() and not path.name.endswith(".tmp")}


def _download_tree(url: str, local: Path) -> int:
    """Copy every file under ``url`` into ``local`` and return the count (0 when the URL has none)."""
    filesystem, base = url_filesystem(url)
    base = base.rstrip("/")
    if not filesystem.exists(base):
        return 0
    count = 0
    for remote in filesystem.find(base):
        relative = remote[len(base):].lstrip("/")
        if not relative:
            continue
        target = local / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        filesystem.get_file(remote, str(target))
        count += 1
    return count


@contextlib.contextmanager
def staged_pair(input_location: str | Path, output_location: str | Path, pair_year: str) -> Iterator[StagedPair]:
    """Yield local stand-ins for a pair whose tick file or output folder is a URL.

    Local paths are used as they are. On leaving without an exception, the files the job
    wrote are copied to the output URL, the manifest last. The staging folder is always removed.
    """
    root = Path(tempfile.mkdtemp(prefix=f"fxresearch-{pair_year}-"))
    try:
        if is_url(input_location):
            input_url = str(input_location)
            input_path = root / "in" / input_url.rstrip("/").rsplit("/", 1)[-1]
            input_path.parent.mkdir(parents=True)
            filesystem, remote = url_filesystem(input_url)
            filesystem.get_file(remote, str(input_path))
        else:
            input_path = Path(input_location)
        output_url = str(output_location) if is_url(output_location) else None
        if output_url is not None:
            output_dir = root / "out"
            copied = _download_tree(join_url(output_url, pair_year), output_dir / pair_year)
            logger.info("%s: staged %s and %d existing output files in %s", pair_year, input_location, copied, root)
        else:
            output_dir = Path(output_location)
        staged = StagedPair(root, input_path, output_dir, pair_year, output_url)
        staged.snapshot()
        yield staged
        staged.upload()
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --------------------------------------------------------------------------- the orchestrator side


@contextlib.contextmanager
def manifest_mirror(output_url: str, pair_years: list[str]) -> Iterator[Path]:
    """Yield a local folder that stands for the output URL in the resume check.

    Each pair's manifest is copied down, and each file it lists that exists at the URL gets
    an empty stand-in, so ``Manifest.stale_reason`` finds which files are missing without
    downloading them.
    """
    import json

    root = Path(tempfile.mkdtemp(prefix="fxresearch-manifests-"))
    try:
        filesystem, base = url_filesystem(output_url)
        base = base.rstrip("/")
        for pair_year in pair_years:
            remote_manifest = f"{base}/{pair_year}/{_MANIFEST_NAME}"
            if not filesystem.exists(remote_manifest):
                continue
            local_dir = root / pair_year
            local_dir.mkdir(parents=True)
            filesystem.get_file(remote_manifest, str(local_dir / _MANIFEST_NAME))
            try:
                document = json.loads((local_dir / _MANIFEST_NAME).read_text())
            except (OSError, ValueError):
                continue  # Manifest.load logs a warning about it, and the pair runs
            listed = {name for entry in document.get("artifacts", {}).values() for name in entry.get("files", [])}
            for name in sorted(listed):
                stand_in = local_dir / name
                if os.path.isabs(name) or ".." in Path(name).parts:
                    continue
                if filesystem.exists(f"{base}/{pair_year}/{name}"):
                    stand_in.parent.mkdir(parents=True, exist_ok=True)
                    stand_in.touch()
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)

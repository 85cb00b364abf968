"""The run ledger: one JSON line as each pair of a VAST run starts and ends.

A run writes ``output/runs/<run id>.jsonl``. The ledger is the run's history for people and
for ``--retry-failed``. Whether a pair's outputs are current is decided by its manifest, not
here. Lines are appended with one ``write`` call on a file opened with ``O_APPEND``, so the
parent and the pair processes can append to the same ledger without interleaving lines.

Line fields: ``event`` (``start`` or ``end``), ``pair``, ``job``, ``time`` (UTC ISO 8601),
``status``, ``pid`` (start lines), ``fingerprint`` (the input file's content hash),
``seconds``, ``message`` and ``error`` (end lines of failed pairs: ``type``, ``message``
and ``traceback``). End statuses are listed in ``END_STATUSES``.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

RUNS_FOLDER = "runs"
LEDGER_SUFFIX = ".jsonl"

STARTED = "started"
OK = "ok"
FAILED = "failed"
SKIPPED = "skipped"
# A pair that was running when the user interrupted the run. Its process was stopped and its
# temporary files removed.
INTERRUPTED = "interrupted"
# A pair still queued when the user interrupted the run, so it never started.
NOT_STARTED = "not started"
END_STATUSES = (OK, FAILED, SKIPPED, INTERRUPTED, NOT_STARTED)


def runs_dir(output_dir: str | Path) -> Path:
    """Return ``output_dir/runs``, the folder of the ledgers and the stored measurements."""
    return Path(output_dir) / RUNS_FOLDER


def append_event(ledger_path: Path | None, event: str, pair: str, job: str, status: str,
                 **fields: Any) -> None:
    """Append one JSON line to the ledger with a single ``write``, or do nothing when ``ledger_path`` is None."""
    if ledger_path is None:
        return
    record: dict[str, Any] = {
        "event": event, "pair": pair, "job": job,
        "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        "status": status,
    }
    record.update(fields)
    if isinstance(record.get("seconds"), float):
        record["seconds"] = round(record["seconds"], 3)
    line = json.dumps(record, ensure_ascii=False, default=str) + "\n"
    ledger_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(ledger_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode("utf-8"))
    finally:
        os.close(fd)


def read_events(ledger_path: Path) -> list[dict[str, Any]]:
    """Return the ledger's lines as dicts, skipping a line cut short by a killed writer."""
    events = []
    with ledger_path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                events.append(json.loads(raw))
            except json.JSONDecodeError:
                logger.warning("Ignoring unreadable line %d of ledger %s", number, ledger_path)
    return events


def latest_ledger(output_dir: str | Path, exclude: Path | None = None) -> Path | None:
    """Return the newest ledger under ``output_dir/runs`` other than ``exclude``, or None.

    Run ids start with the UTC start time, so the newest ledger sorts last by name.
    """
    folder = runs_dir(output_dir)
    if not folder.is_dir():
        return None
    ledgers = sorted(p for p in folder.glob(f"*{LEDGER_SUFFIX}") if exclude is None or p != exclude)
    return ledgers[-1] if ledgers else None


def final_statuses(events: list[dict[str, Any]]) -> dict[str, str]:
    """Return each pair's last status in the ledger. A pair with only a start line is ``started``."""
    statuses: dict[str, str] = {}
    for event in events:
        statuses[event["pair"]] = event.get("status") or (STARTED if event.get("event") == "start" else FAILED)
    return statuses


def failed_pairs(ledger_path: Path) -> list[str]:
    """Return the pairs whose last line in the ledger has status ``failed``, sorted."""
    return sorted(pair for pair, status in final_statuses(read_events(ledger_path)).items() if status == FAILED)


# Last statuses that ``--retry-failed`` reruns: failed, stopped by Ctrl-C or SIGTERM, and started
# without an end line (the run was killed with SIGKILL or the machine stopped).
RETRY_STATUSES = (FAILED, INTERRUPTED, STARTED)


def pairs_to_retry(ledger_path: Path) -> dict[str, str]:
    """Return pair -> last status for the pairs whose last status is one of ``RETRY_STATUSES``, sorted by pair."""
    statuses = final_statuses(read_events(ledger_path))
    return {pair: statuses[pair] for pair in sorted(statuses) if statuses[pair] in RETRY_STATUSES}

"""Selection of the pairs a VAST run computes, skipping current outputs and retrying failed pairs.

A pair is current when its manifest records that every output of the job was built from this input
file (same content fingerprint), this configuration and this code, and the files exist. The
manifest is written after the files it lists, so a pair killed mid-run is never current.
For an fsspec URL output, the manifests are read through a local mirror
(``storage.manifest_mirror``) and the ledger lives in the local ``storage.local_run_dir``.
The run ledger only records history, and ``--retry-failed`` reads it to choose the pairs to rerun.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from fxresearch.config import Config
from fxresearch.naming import PairFile

logger = logging.getLogger(__name__)

# Input files hashed at once. Threads suffice because hashing is mostly disk reads and hashlib
# releases the GIL.
FINGERPRINT_THREADS = 4


@dataclass
class ResumeCheck:
    """Each pair's input fingerprint and the pairs whose outputs are current."""

    fingerprints: dict[str, str] = field(default_factory=dict)
    current: set[str] = field(default_factory=set)
    # Pair-year -> why it could not be checked. Such a pair runs, and its job reports the problem.
    errors: dict[str, str] = field(default_factory=dict)


def _check_pair(pair_file: PairFile, job: str, output_dir: Path, config: Config) -> tuple[str, bool]:
    """Return the pair's input fingerprint and whether the job's outputs are current."""
    from fxresearch import artifacts
    from fxresearch.base import PairContext, base_is_current
    from fxresearch.instruments import get_instrument

    fingerprint = artifacts.file_fingerprint(pair_file.path)
    out_dir = Path(output_dir) / pair_file.pair_year
    if not (out_dir / artifacts.MANIFEST_NAME).is_file():
        return fingerprint, False
    instrument = get_instrument(pair_file.symbol, config)
    ctx = PairContext(pair_file.path, out_dir, pair_file.pair_year, config, instrument, fingerprint,
                      artifacts.Manifest.load(out_dir), False)
    if not base_is_current(ctx):
        return fingerprint, False
    if job == "generate-base":
        return fingerprint, True

    from fxresearch.codeversion import code_version
    from fxresearch.search import RESULTS_DEPENDS, RESULTS_STAGE, _results_spec

    depends = {name: ctx.manifest.build_id(name) for name in RESULTS_DEPENDS}
    current = ctx.manifest.is_current(RESULTS_STAGE, fingerprint, _results_spec(config), depends,
                                      code_version(RESULTS_STAGE))
    return fingerprint, current


def check_current(files: Sequence[PairFile], job: str, output_dir: str | Path, config: Config) -> ResumeCheck:
    """Fingerprint every input file and find the pairs whose ``job`` outputs are current.

    Reads each input file once, in ``FINGERPRINT_THREADS`` threads. A pair that cannot be
    checked (an unreadable file, an unknown symbol) is not current, and its error is kept.
    Input files and ``output_dir`` may be fsspec URLs.
    """
    from fxresearch.storage import is_url, manifest_mirror

    if is_url(output_dir):
        with manifest_mirror(str(output_dir), [f.pair_year for f in files]) as mirror:
            return check_current(files, job, mirror, config)
    check = ResumeCheck()
    output_dir = Path(output_dir)

    def one(pair_file: PairFile) -> tuple[PairFile, str, bool, str]:
        try:
            fingerprint, current = _check_pair(pair_file, job, output_dir, config)
        except (OSError, ValueError) as exc:
            return pair_file, "", False, f"{type(exc).__name__}: {exc}"
        return pair_file, fingerprint, current, ""

    with ThreadPoolExecutor(max_workers=FINGERPRINT_THREADS) as pool:
        for pair_file, fingerprint, current, error in pool.map(one, files):
            if fingerprint:
                check.fingerprints[pair_file.pair_year] = fingerprint
            if current:
                check.current.add(pair_file.pair_year)
            if error:
                check.errors[pair_file.pair_year] = error
                logger.info("%s: cannot check whether its outputs are current (%s), so it runs",
                            pair_file.pair_year, error)
    return check


def pairs_to_retry(output_dir: str | Path, exclude_ledger: Path | None = None) -> tuple[Path | None, dict[str, str]]:
    """Return the last run's ledger and its pairs to retry (``--retry-failed``), each with its last status.

    A pair is retried when it failed, was stopped (``interrupted``), or started and never
    ended (``started``: the run was killed before it could write the end line).
    """
    from fxresearch.ledger import latest_ledger
    from fxresearch.ledger import pairs_to_retry as ledger_pairs_to_retry
    from fxresearch.storage import is_url, local_run_dir

    ledger = latest_ledger(local_run_dir(str(output_dir)) if is_url(output_dir) else output_dir,
                           exclude=exclude_ledger)
    if ledger is None:
        return None, {}
    return ledger, ledger_pairs_to_retry(ledger)

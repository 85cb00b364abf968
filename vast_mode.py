"""VAST mode: run one job (generate-base or search-light) over every tick file of a folder.

Data flow::

    input folder of PAIR_YEAR.parquet files
        -> names      naming.scan_input_dir: valid PairFiles, invalid files with reasons
        -> resume     resume.check_current: input fingerprints; pairs whose manifests say
                      their outputs are current are skipped (not with --force-rerun)
        -> plan       resources: cores x memory -> parallel_pairs x workers_per_pair, tick
                      counts from each parquet footer, memory and time from the estimates
                      measured by earlier runs (output/runs/measurements.json)
        -> executor   pair_executor.PairProcessExecutor: one new spawned process per pair,
                      largest files first, started only while memory (and with --adaptive,
                      load) allows; or any concurrent.futures.Executor, such as Dask's
        -> pair workers   run_pair in its pair process, threads capped at workers_per_pair
        -> stages     fxresearch.base.generate_base / fxresearch.search.search_light
        -> artifacts  output/PAIR_YEAR/..., each renamed into place, the manifest last
        -> summary    one line per pair as it ends and a progress line, then totals; the
                      ledger output/runs/<run id>.jsonl and the log output/logs/run-<run id>.log

A pair's failure never stops the others. A pair job's exception becomes a failed
PairResult inside its process. A pair process that dies (a signal, ``os._exit``, an
out-of-memory kill) fails only its own pair, with the signal or exit code as the reason,
because each pair has a process of its own. On Dask, a worker that dies affects only the
pairs it was running: the scheduler reruns them on other workers and fails a pair with
KilledWorker once its retries are spent. Tracebacks of failed pairs go to the log file and
the ledger, not to the screen. Ctrl-C cancels the queued pairs, stops the running ones,
removes their temporary files and ends with a summary of what finished.

The orchestrator prints progress to a stream because it is the program's user interface;
the pair jobs below it only log.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import platform
import signal
import sys
import threading
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, BrokenExecutor, CancelledError, Executor, Future, wait
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, TextIO

from fxresearch import __version__
from fxresearch import ledger as run_ledger
from fxresearch.config import Config
from fxresearch.naming import (
    InvalidFile, InvalidFileNameError, PairFile, ScanResult, parse_pair_filename,
)
from fxresearch.pair_executor import PairProcessDied, PairProcessExecutor
from fxresearch.storage import UrlPath, is_url, local_run_dir, read_footer, staged_pair
from fxresearch.resources import (
    GB, MEMORY_HEADROOM, PAIR_MEMORY_ENV, PAIR_SECONDS_ESTIMATE, PROCESS_STARTUP_SECONDS_ESTIMATE, JobEstimate,
    Measurements, Resources, TickFileInfo, WorkerPlan, detect_resources, estimate_run_seconds,
    max_pairs_for_memory, plan_workers, read_tick_file_info, system_load,
)

__all__ = [
    "JOBS", "PairResult", "PairSelectionError", "Resources", "RunLogs", "RunPlan", "VastSummary",
    "configure_run_logging", "detect_resources", "make_plan", "new_run_logs", "print_plan",
    "make_cluster_plan", "print_resources_banner", "print_summary", "run_generate_base_single", "run_pair",
    "run_search_light_single", "run_single_pair", "run_vast_mode", "select_pairs", "load_admission",
    "RunTerminated", "select_invalid",
]

logger = logging.getLogger(__name__)

# Log records carrying this attribute go to the log file only (tracebacks of failed pairs).
FILE_ONLY = "file_only"
THREAD_ENV_VARS = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
# A failure reason longer than this is cut at a word boundary on screen, and the run log keeps it whole.
MAX_REASON_CHARS = 1000
# Seconds a running pair process gets to end after SIGTERM on Ctrl-C, before SIGKILL.
STOP_GRACE_SECONDS = 5.0

JobFunction = Callable[[Path, Path, Config, bool, int], dict]


class RunTerminated(KeyboardInterrupt):
    """Interrupt raised when SIGTERM reaches a run, which then stops like after Ctrl-C.

    ``docker stop``, ``timeout``, systemd and cloud hosts stop a process with SIGTERM.
    """


def _generate_base_job(path: Path, output_dir: Path, config: Config, force_rerun: bool, workers: int) -> dict:
    from fxresearch.base import generate_base

    return generate_base(path, output_dir, config, force_rerun=force_rerun)


def _search_light_job(path: Path, output_dir: Path, config: Config, force_rerun: bool, workers: int) -> dict:
    from fxresearch.search import search_light

    return search_light(path, output_dir, config, force_rerun=force_rerun, workers=workers)


# Job name (as in the CLI flag) -> the per-pair function run inside a pair process.
JOBS: dict[str, JobFunction] = {"generate-base": _generate_base_job, "search-light": _search_light_job}


# --------------------------------------------------------------------------- results and logs


@dataclass(frozen=True)
class PairResult:
    """Outcome of one pair's job: ``message`` is the job's one-line summary or the failure reason.

    ``status`` is one of the ledger's end statuses (``ok``, ``failed``, ``interrupted``,
    ``not started``). ``peak_memory_bytes`` is the pair process's maximum resident memory and
    ``measured`` says whether the job built its outputs, so its cost can be stored as an
    estimate for later runs.
    """

    pair_year: str
    job: str
    ok: bool
    seconds: float
    message: str
    synthetic: bool = False
    status: str = ""
    error_type: str = ""
    traceback: str = ""
    peak_memory_bytes: int | None = None
    measured: bool = False

    def __post_init__(self) -> None:
        if not self.status:
            object.__setattr__(self, "status", run_ledger.OK if self.ok else run_ledger.FAILED)


@dataclass
class VastSummary:
    """All pair results of one run; invalid input files are kept apart in ``invalid``.

    Pairs skipped because their outputs were current are listed in ``skipped`` and are not
    part of ``results``. ``invalid`` contains one failed result per rejected file (named by the
    file), which is not a pair; ``unselected_invalid`` names rejected files that ``--pairs``
    did not select, which do not count.
    """

    job: str
    results: list[PairResult] = field(default_factory=list)
    seconds: float = 0.0
    skipped: list[str] = field(default_factory=list)
    interrupted: bool = False
    estimated_seconds: float | None = None
    cost_per_hour: float | None = None
    invalid: list[PairResult] = field(default_factory=list)
    unselected_invalid: list[str] = field(default_factory=list)
    # The signal that stopped the run (SIGINT for Ctrl-C, or SIGTERM), when interrupted.
    signal_name: str = ""
    force_rerun: bool = False
    # Skipped pairs whose (unchanged) inputs are synthetic.
    skipped_synthetic: int = 0

    @property
    def total(self) -> int:
        return len(self.results)

    @property
    def successful(self) -> int:
        return sum(r.ok for r in self.results)

    @property
    def failed(self) -> int:
        return sum(r.status == run_ledger.FAILED for r in self.results)

    @property
    def synthetic(self) -> bool:
        return any(r.synthetic for r in self.results) or self.skipped_synthetic > 0

    @property
    def all_ok(self) -> bool:
        """True when no pair failed and no selected input file was invalid."""
        return self.failed == 0 and not self.invalid

    def with_status(self, status: str) -> list[str]:
        """Return the pairs that ended with ``status``, in the order they ended."""
        return [r.pair_year for r in self.results if r.status == status]


@dataclass(frozen=True)
class RunLogs:
    """Paths of a run's log file and JSONL ledger, passed to every pair process."""

    run_id: str
    log_path: Path | None
    ledger_path: Path | None
    # Level of the console handler. The log file always records INFO and above.
    console_level: int = logging.WARNING
    # True when the pairs run on Dask workers, which may be other machines: a worker then
    # announces a pair's start to the client (which writes the ledger line) and its log
    # records reach the client's log file by Dask's log forwarding.
    on_cluster: bool = False


def new_run_logs(output_dir: str | Path, console_level: int = logging.WARNING, on_cluster: bool = False) -> RunLogs:
    """Name a new run (UTC time and process id) and its files under ``output_dir``.

    For an fsspec URL output the files go to the local ``storage.local_run_dir`` instead:
    the ledger and the log stay on the machine that runs the command.
    """
    run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + f"-{os.getpid()}"
    state_dir = run_state_dir(output_dir)
    return RunLogs(run_id, state_dir / "logs" / f"run-{run_id}.log",
                   run_ledger.runs_dir(state_dir) / f"{run_id}{run_ledger.LEDGER_SUFFIX}", console_level,
                   on_cluster)


def run_state_dir(output_dir: str | Path) -> Path:
    """Return the local folder of a run's logs, ledgers and measurements: the output folder itself,
    or for an fsspec URL output its ``storage.local_run_dir``."""
    return local_run_dir(str(output_dir)) if is_url(output_dir) else Path(output_dir)


class _ConsoleFormatter(logging.Formatter):
    """One line per record: tracebacks belong in the log file."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname}: {record.getMessage()}"


def _not_file_only(record: logging.LogRecord) -> bool:
    return not getattr(record, FILE_ONLY, False)


def configure_run_logging(run_logs: RunLogs | None, console_level: int = logging.WARNING) -> None:
    """Send log records to stderr (one line each, at ``console_level``) and to the run log file.

    The file gets INFO and above with tracebacks. Called once by the CLI and once in each
    pair process; handlers installed earlier by this function are replaced.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_fxresearch", False):
            root.removeHandler(handler)
            handler.close()

    console = logging.StreamHandler(sys.stderr)
    console.setLevel(console_level)
    console.setFormatter(_ConsoleFormatter())
    console.addFilter(_not_file_only)
    handlers: list[logging.Handler] = [console]

    if run_logs is not None and run_logs.log_path is not None:
        run_logs.log_path.parent.mkdir(parents=True, exist_ok=True)
        log_file = logging.FileHandler(run_logs.log_path, mode="a", encoding="utf-8")
        log_file.setLevel(logging.INFO)
        log_file.setFormatter(logging.Formatter(
            "%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"))
        handlers.append(log_file)

    for handler in handlers:
        handler._fxresearch = True  # type: ignore[attr-defined]  # marks the handlers this tool added
        root.addHandler(handler)
    root.setLevel(min(logging.INFO, console_level))

# --------------------------------------------------------------------------- the pair worker


def _setup_worker_environment(workers: int) -> None:
    """Cap every thread pool of this process at ``workers`` threads.

    The environment variables only take effect for libraries loaded after this call (and
    for child processes). numba, threadpoolctl and pyarrow are also capped at run time, so
    the cap applies even where numpy was already imported.
    """
    workers = max(1, int(workers))
    numba_loaded = "numba" in sys.modules
    for name in THREAD_ENV_VARS:
        # Once numba is loaded, a changed NUMBA_NUM_THREADS makes its next compile fail
        # ("Cannot set NUMBA_NUM_THREADS ... once the threads have been launched"), so the
        # running pool is capped with set_num_threads below instead.
        if name == "NUMBA_NUM_THREADS" and numba_loaded:
            continue
        os.environ[name] = str(workers)

    import numba

    # numba's pool is sized at import, so a cap above it is lowered to the pool's size.
    numba.set_num_threads(min(workers, numba.config.NUMBA_NUM_THREADS))

    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        logger.info("threadpoolctl is not installed; BLAS threads are capped by environment only")
    else:
        threadpool_limits(limits=workers)

    import pyarrow

    pyarrow.set_cpu_count(workers)
    pyarrow.set_io_thread_count(workers)


_worker_logging_for: RunLogs | None = None


def _setup_worker_logging(run_logs: RunLogs | None) -> None:
    """In a pair process, send log records to the run's log file (once per process).

    On a Dask worker the records go to the client instead (``cluster.FORWARDED_LOGGERS``),
    so this only lets INFO records through to the forwarding handler.
    """
    global _worker_logging_for
    if run_logs is not None and run_logs.on_cluster:
        for name in ("fxresearch", __name__):
            logging.getLogger(name).setLevel(logging.INFO)
        return
    if run_logs is None or multiprocessing.parent_process() is None or _worker_logging_for == run_logs:
        return
    configure_run_logging(run_logs, run_logs.console_level)
    _worker_logging_for = run_logs


def _one_line_reason(exc: BaseException) -> str:
    """Return the exception type and the whole first line of its message.

    The line is cut only beyond ``MAX_REASON_CHARS``, at the last space before the limit,
    because the reason must name the problem and its fix in full.
    """
    text = str(exc).strip().splitlines()
    reason = f"{type(exc).__name__}: {text[0].strip()}" if text else type(exc).__name__
    if len(reason) <= MAX_REASON_CHARS:
        return reason
    suffix = " ... (cut, the run log has the full message)"
    head = reason[:MAX_REASON_CHARS - len(suffix)]
    space = head.rfind(" ")
    if space > len(head) // 2:
        head = head[:space]
    return head.rstrip(" ,;:") + suffix


def _pair_year_of(path: Path) -> str:
    try:
        symbol, year = parse_pair_filename(path)
    except InvalidFileNameError:
        return path.name
    return f"{symbol}_{year}"




def _peak_memory_bytes() -> int | None:
    """Return this process's maximum resident memory in bytes, or None where it is not known."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _failure_reason(exc: BaseException) -> str:
    """Return the one-line reason, with advice for an allocation that hit a memory limit."""
    reason = _one_line_reason(exc)
    if isinstance(exc, MemoryError):
        return (f"out of memory ({reason}); lower --parallel-pairs, or run this pair alone on a machine "
                f"with more memory")
    return reason


def _built_outputs(job: str, summary: dict) -> bool:
    """Return True when the job built its outputs rather than reusing them."""
    if job == "generate-base":
        return bool(summary.get("built")) and not summary.get("reused")
    message = str(summary.get("message", ""))
    return "reused" not in message and "built base first" not in message


def run_pair(job_function: JobFunction, job: str, path: str | Path, output_dir: str | Path, config: Config,
             force_rerun: bool = False, workers: int = 1, run_logs: RunLogs | None = None, *,
             fingerprint: str = "", memory_budget_bytes: int | None = None) -> PairResult:
    """Run one pair's job in this process and return its result.

    An ``Exception`` from the job or from the thread set-up is not raised. It is logged
    with its traceback (to the run log file only) and returned as ``ok=False`` with a
    one-line reason (the exception type and its message's first line) and the traceback,
    which the parent writes to the ledger. KeyboardInterrupt and SystemExit propagate.

    ``memory_budget_bytes`` reaches the job's stages through the ``PAIR_MEMORY_ENV``
    environment variable, so a stage that works in chunks can size them.
    """
    path = UrlPath(path) if is_url(path) else Path(path)
    output_dir = UrlPath(output_dir) if is_url(output_dir) else Path(output_dir)
    pair_year = _pair_year_of(path)
    _setup_worker_logging(run_logs)
    _record_start(run_logs, pair_year, job, fingerprint, path)
    logger.info("%s %s started on %s with %d workers in process %d", pair_year, job, path, workers, os.getpid())
    if memory_budget_bytes:
        os.environ[PAIR_MEMORY_ENV] = str(int(memory_budget_bytes))

    started = time.perf_counter()
    try:
        _setup_worker_environment(workers)
        if isinstance(path, UrlPath) or isinstance(output_dir, UrlPath):
            # The stages work on local files: copy down, run, copy each new file up once, manifest last.
            with staged_pair(path, output_dir, pair_year) as staged:
                summary = job_function(staged.input_path, staged.output_dir, config, force_rerun, workers)
        else:
            summary = job_function(path, output_dir, config, force_rerun, workers)
    except Exception as exc:
        seconds = time.perf_counter() - started
        logger.error("%s %s failed after %.1fs on %s", pair_year, job, seconds, path,
                     exc_info=True, extra={FILE_ONLY: True})
        return PairResult(pair_year, job, False, seconds, _failure_reason(exc), error_type=type(exc).__name__,
                          traceback=traceback.format_exc(), peak_memory_bytes=_peak_memory_bytes())

    seconds = time.perf_counter() - started
    summary = summary or {}
    message = str(summary.get("message", "")).strip().replace("\n", " ")
    logger.info("%s %s complete in %.1fs: %s", pair_year, job, seconds, message)
    return PairResult(summary.get("pair_year", pair_year), job, True, seconds, message,
                      bool(summary.get("synthetic", False)), peak_memory_bytes=_peak_memory_bytes(),
                      measured=_built_outputs(job, summary))



def _record_start(run_logs: RunLogs | None, pair_year: str, job: str, fingerprint: str, path: Path | str) -> None:
    """Write the pair's start line to the ledger, or on a Dask worker ask the client to write it."""
    if run_logs is None or run_logs.ledger_path is None:
        return
    fields = {"pid": os.getpid(), "fingerprint": fingerprint, "file": str(path)}
    if run_logs.on_cluster:
        from fxresearch.cluster import announce_start

        host = platform.node()
        if announce_start({"ledger": str(run_logs.ledger_path), "pair": pair_year, "job": job, "host": host,
                           **fields}):
            return
    run_ledger.append_event(run_logs.ledger_path, "start", pair_year, job, run_ledger.STARTED, **fields)


def tick_file_info(path: Path | str) -> TickFileInfo:
    """Read a tick file's row count and synthetic marker from its footer, also behind an fsspec URL."""
    if not is_url(path):
        return read_tick_file_info(path)
    try:
        metadata = read_footer(str(path))
    except (OSError, ValueError) as exc:
        logger.info("Cannot read the parquet footer of %s: %s", path, exc)
        return TickFileInfo(Path(UrlPath(path).name), 0, False, f"{type(exc).__name__}: {exc}")
    synthetic = (metadata.metadata or {}).get(b"synthetic", b"").decode(errors="replace").lower() == "true"
    return TickFileInfo(Path(UrlPath(path).name), metadata.num_rows, synthetic)


def run_generate_base_single(path: str | Path, output_dir: str | Path, config: Config, force_rerun: bool = False,
                             workers: int = 1, run_logs: RunLogs | None = None) -> PairResult:
    """Build one pair's research base (``fxresearch.base.generate_base``); a failure is returned, not raised."""
    return run_pair(_generate_base_job, "generate-base", path, output_dir, config, force_rerun, workers, run_logs)


def run_search_light_single(path: str | Path, output_dir: str | Path, config: Config, force_rerun: bool = False,
                            workers: int = 1, run_logs: RunLogs | None = None) -> PairResult:
    """Run one pair's light strategy search (``fxresearch.search.search_light``); a failure is returned, not raised."""
    return run_pair(_search_light_job, "search-light", path, output_dir, config, force_rerun, workers, run_logs)


# --------------------------------------------------------------------------- plan and banner


class PairSelectionError(ValueError):
    """A ``--pairs`` entry that matches no tick file in the input folder."""


def select_pairs(files: Sequence[PairFile], requested: Iterable[str] | None) -> list[PairFile]:
    """Keep the files whose symbol (``EURUSD``) or pair-year (``EURUSD_2020``) is requested.

    Matching ignores case. Raises PairSelectionError naming every request that matches no
    file, with the pairs that are available.
    """
    if requested is None:
        return list(files)
    requested_ids = [r.strip().upper() for r in requested if r.strip()]
    if not requested_ids:
        raise PairSelectionError("--pairs: no pair selected; list symbols or pair-years, "
                                 "e.g. --pairs EURUSD,GBPJPY_2020")
    missing = [r for r in requested_ids if not any(r in (f.symbol, f.pair_year) for f in files)]
    if missing:
        available = ", ".join(f.pair_year for f in files) or "none"
        raise PairSelectionError(
            f"--pairs: no tick file for {', '.join(missing)} in the input folder (available: {available})")
    return [f for f in files if f.symbol in requested_ids or f.pair_year in requested_ids]


def select_invalid(invalid: Sequence[InvalidFile],
                   requested: Iterable[str] | None) -> tuple[list[InvalidFile], list[InvalidFile]]:
    """Split rejected files into those ``--pairs`` selects and the others.

    A rejected file is selected when the part of its name before the first dot, or the part
    before its first underscore, matches a request ignoring case (``eurusd_2025.parquet`` is
    selected by ``EURUSD``). Without ``--pairs`` every rejected file is selected.
    """
    if requested is None:
        return list(invalid), []
    requested_ids = {r.strip().upper() for r in requested if r.strip()}
    chosen, others = [], []
    for bad in invalid:
        stem = bad.path.name.split(".")[0].upper()
        (chosen if stem in requested_ids or stem.partition("_")[0] in requested_ids else others).append(bad)
    return chosen, others


@dataclass(frozen=True)
class RunPlan:
    """The pairs to run, with their tick counts, and how the cores and memory are split between them."""

    files: tuple[PairFile, ...]
    infos: dict[str, TickFileInfo]
    workers: WorkerPlan
    # Estimated peak memory of the largest pair to run, in bytes.
    bytes_per_pair: int
    estimated_seconds: float
    estimate: JobEstimate | None = None
    # Pairs whose outputs are current, left out of ``files``.
    skipped: tuple[str, ...] = ()
    # Pair-year -> input file fingerprint, for the ledger.
    fingerprints: dict[str, str] = field(default_factory=dict)
    # Memory the running pairs may use together, in bytes; None when not limited.
    memory_budget_bytes: float | None = None
    # Skipped pairs whose inputs are synthetic: their current outputs are synthetic results too.
    skipped_synthetic: tuple[str, ...] = ()

    @property
    def parallel_pairs(self) -> int:
        return self.workers.parallel_pairs

    @property
    def workers_per_pair(self) -> int:
        return self.workers.workers_per_pair

    @property
    def total_ticks(self) -> int:
        return sum(self.infos[f.pair_year].rows for f in self.files if f.pair_year in self.infos)

    @property
    def synthetic_count(self) -> int:
        return sum(self.infos[f.pair_year].synthetic for f in self.files if f.pair_year in self.infos)

    def pair_bytes(self, pair_year: str) -> int:
        """Return a pair's estimated peak memory in bytes (0 when its tick count is unknown)."""
        info = self.infos.get(pair_year)
        if info is None:
            return 0
        return (self.estimate or JobEstimate.builtin("generate-base")).pair_bytes(info.rows)


def make_plan(resources: Resources, files: Sequence[PairFile], job: str,
              parallel_pairs: int | None = None, max_workers: int | None = None, *,
              estimate: JobEstimate | None = None, skipped: Iterable[str] = (),
              fingerprints: dict[str, str] | None = None) -> RunPlan:
    """Read each file's footer and split the cores, lowering parallel pairs to fit the memory.

    Pairs in ``skipped`` are left out. The parallel pairs are capped so that that many of the
    largest pair fit in the available memory (``MEMORY_HEADROOM`` of it), and the scheduler
    also keeps the running pairs' summed estimate within it. ``estimate`` contains the measured
    per-tick memory and throughput (``Measurements.estimate``), built-in figures by default.
    """
    estimate = estimate or JobEstimate.builtin(job)
    skipped = tuple(skipped)
    to_run = [f for f in files if f.pair_year not in skipped]
    infos = {f.pair_year: tick_file_info(f.path) for f in to_run}
    bytes_per_pair = max((estimate.pair_bytes(i.rows) for i in infos.values()), default=0)
    available = resources.ram_available_gb * GB
    memory_cap = max_pairs_for_memory(available, bytes_per_pair)
    workers = plan_workers(resources.cores, len(to_run), parallel_pairs, max_workers, memory_cap)
    seconds = estimate_run_seconds((i.rows for i in infos.values()), job, workers.parallel_pairs,
                                   workers.workers_per_pair, estimate)
    return RunPlan(tuple(to_run), infos, workers, bytes_per_pair, seconds, estimate, skipped,
                   dict(fingerprints or {}), available * MEMORY_HEADROOM, _synthetic_skipped(files, skipped))


def _synthetic_skipped(files: Sequence[PairFile], skipped: tuple[str, ...]) -> tuple[str, ...]:
    """Return the skipped pairs whose input files are marked synthetic (read from their footers)."""
    return tuple(f.pair_year for f in files if f.pair_year in skipped and tick_file_info(f.path).synthetic)


def make_cluster_plan(files: Sequence[PairFile], job: str, dask_workers: int, threads_per_worker: int,
                      max_workers: int | None = None, *, estimate: JobEstimate | None = None,
                      skipped: Iterable[str] = (), fingerprints: dict[str, str] | None = None,
                      worker_memory_bytes: int | None = None) -> RunPlan:
    """Plan a run on a Dask cluster: one pair per Dask worker, its threads for the pair.

    ``parallel_pairs`` is the number of Dask workers (or of pairs, if fewer), and
    ``workers_per_pair`` is ``max_workers`` or else the threads of the smallest Dask worker.
    This machine's cores and memory do not limit the plan, because the pairs run on the
    workers. With ``worker_memory_bytes`` (the smallest worker's Dask memory limit), the
    parallel pairs are capped so that each pair's estimate fits within ``MEMORY_HEADROOM``
    of one worker's limit beside the other pairs that worker may run, and each pair gets
    that share as its memory budget.
    """
    if dask_workers < 1:
        raise ValueError(f"dask_workers must be at least 1, got {dask_workers}")
    estimate = estimate or JobEstimate.builtin(job)
    skipped = tuple(skipped)
    to_run = [f for f in files if f.pair_year not in skipped]
    infos = {f.pair_year: tick_file_info(f.path) for f in to_run}
    bytes_per_pair = max((estimate.pair_bytes(i.rows) for i in infos.values()), default=0)
    pairs, limited_by = dask_workers, "dask"
    notes: tuple[str, ...] = ()
    budget = None
    if worker_memory_bytes:
        usable = worker_memory_bytes * MEMORY_HEADROOM
        if bytes_per_pair > usable:
            notes = (f"the largest pair needs an estimated {_format_bytes(bytes_per_pair)}, more than "
                     f"{MEMORY_HEADROOM:.0%} of a Dask worker's {_format_bytes(worker_memory_bytes)} memory limit; "
                     f"the worker may be restarted and the pair fail with KilledWorker. Start workers with a "
                     f"larger --memory-limit",)
    if 1 <= len(to_run) < pairs:
        pairs, limited_by = len(to_run), "pairs"
    # NOTE: the cap limits the pairs on the cluster at once, not where Dask places them: a worker with
    # several threads and no pair resource may still get two pairs while another worker idles.
    if worker_memory_bytes:
        # One worker's usable memory per running pair: _submit hands each pair budget / pairs.
        budget = worker_memory_bytes * MEMORY_HEADROOM * pairs
    workers = WorkerPlan(pairs, max_workers or max(1, threads_per_worker), limited_by, notes)
    seconds = estimate_run_seconds((i.rows for i in infos.values()), job, pairs, workers.workers_per_pair, estimate)
    return RunPlan(tuple(to_run), infos, workers, bytes_per_pair, seconds, estimate, skipped,
                   dict(fingerprints or {}), budget, _synthetic_skipped(files, skipped))


def _count(number: int, noun: str) -> str:
    """Return ``1 pair`` or ``3 pairs``."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _largest_first(files: Iterable[PairFile], rows: dict[str, int]) -> list[PairFile]:
    """Return the files in run order: most ticks first, so the run does not end on one long straggler."""
    return sorted(files, key=lambda f: -rows.get(f.pair_year, 0))


def _format_bytes(size: float) -> str:
    return f"{size / GB:.2f} GB" if size >= GB / 10 else f"{size / 1024 ** 2:.1f} MB"


def _format_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _format_clock(seconds: float) -> str:
    """Return ``1h02m05s``, ``4m05s`` or ``7s``."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def format_cost(seconds: float, cost_per_hour: float) -> str:
    """Return the cost of ``seconds`` of machine time at ``cost_per_hour``, in the price's own currency."""
    return f"{seconds / 3600 * cost_per_hour:.2f}"


def print_resources_banner(resources: Resources, scan: ScanResult, plan: RunPlan, job_name: str,
                           stream: TextIO | None = None, *, input_dir: str | Path | None = None,
                           output_dir: str | Path | None = None, cluster: str | None = None,
                           cost_per_hour: float | None = None, adaptive: str | None = None,
                           force_rerun: bool = False, selection: str = "--pairs") -> None:
    """Print the machine, the input files (each invalid one with its reason) and the plan.

    ``selection`` names what chose a subset of the files (``--pairs`` or ``--retry-failed``).
    ``cluster`` is a one-line description of the Dask cluster the pairs run on (its workers,
    threads and memory limit per worker), shown instead of this machine's cores and memory;
    None when the pairs run in processes on this machine. ``adaptive`` describes the load and memory
    thresholds of ``--adaptive``, or is None without it.
    """
    stream = stream or sys.stdout
    rule = "=" * 72
    quota = "none" if resources.cpu_quota is None else f"{resources.cpu_quota:g} cores"
    cgroup_note = " (cgroup memory limit)" if resources.memory_limited_by_cgroup else ""
    estimate = plan.estimate or JobEstimate.builtin(job_name)
    lines = [
        rule,
        f"fxresearch {__version__} - VAST mode: {job_name}",
        rule,
        f"CPU cores:          {resources.cores} (affinity {resources.affinity_cores}, cgroup quota {quota})",
        f"RAM:                {resources.ram_total_gb:.1f} GB total, "
        f"{resources.ram_available_gb:.1f} GB available{cgroup_note}",
        f"Parquet files:      {len(scan.valid)} valid, {len(scan.invalid)} invalid",
    ]
    if cluster is not None:
        # The pairs run on the cluster's workers, so this machine's cores and memory do not matter.
        lines[3:5] = [f"Runs on:            {cluster}"]
    for bad in scan.invalid:
        # Each reason names the problem and its fix already.
        lines.append(f"  INVALID {bad.path.name}: {bad.reason}")
    selected = len(plan.files) + len(plan.skipped)
    if selected != len(scan.valid):
        lines.append(f"Selected by {selection}: {selected} of {len(scan.valid)} valid files")
    if force_rerun:
        lines.append("Resume:             --force-rerun: every pair is computed again, current outputs included")
    elif plan.skipped:
        lines.append(f"Resume:             {len(plan.skipped)} of {selected} pairs are current and will be skipped "
                     f"({', '.join(plan.skipped[:5])}{' ...' if len(plan.skipped) > 5 else ''}); "
                     f"--force-rerun redoes them")
    else:
        lines.append(f"Resume:             0 of {selected} pairs are current; all run")

    limits = {"cores": "limited by cores", "pairs": "one per pair", "requested": "as requested",
              "memory": "limited by memory, not cores", "dask": "one per Dask worker"}
    lines.append(f"Parallel pairs:     {plan.parallel_pairs} ({limits.get(plan.workers.limited_by, '')})")
    lines.append(f"Workers per pair:   {plan.workers_per_pair}")
    for note in plan.workers.notes:
        lines.append(f"  NOTE: {note}")
    lines.append(f"Ticks:              {plan.total_ticks:,} in {len(plan.files)} files")
    unreadable = [f.pair_year for f in plan.files if plan.infos.get(f.pair_year) and plan.infos[f.pair_year].error]
    if unreadable:
        lines.append(f"  Unreadable parquet footer (these pairs will fail): {', '.join(unreadable)}")
    lines.append(f"Memory per pair:    {_format_bytes(plan.bytes_per_pair)} for the largest file "
                 f"(estimate: {estimate.bytes_per_tick:,.0f} bytes per tick + "
                 f"{_format_bytes(estimate.process_bytes)} per process, {estimate.memory_source})")
    if plan.workers.limited_by == "memory":
        lines.append(f"  Memory, not cores, limits parallel pairs: {plan.parallel_pairs} x "
                     f"{_format_bytes(plan.bytes_per_pair)} fit in {resources.ram_available_gb:.1f} GB available")
    if plan.memory_budget_bytes is not None and len(plan.files) > 1 and cluster is None:
        lines.append(f"  Largest files start first; a pair starts only while the running pairs' estimates "
                     f"fit in {_format_bytes(plan.memory_budget_bytes)}")
    if adaptive:
        lines.append(f"Adaptive:           {adaptive}")
    lines.append(f"Estimated time:     ~{_format_duration(plan.estimated_seconds)} "
                 f"({estimate.ticks_per_second_per_worker:,.0f} ticks/s per worker, {estimate.throughput_source}; "
                 f"{PAIR_SECONDS_ESTIMATE:g} s per pair job, {PROCESS_STARTUP_SECONDS_ESTIMATE:g} s process start-up)")
    if cost_per_hour is not None:
        lines.append(f"Estimated cost:     ~{format_cost(plan.estimated_seconds, cost_per_hour)} "
                     f"at {cost_per_hour:g} per hour of this machine")
    synthetic_count = plan.synthetic_count + len(plan.skipped_synthetic)
    if synthetic_count:
        lines.append(f"Input:              SYNTHETIC sample data ({synthetic_count} of {selected} "
                     f"files); results on it are synthetic, not market results")
    if input_dir is not None:
        lines.append(f"Input folder:       {input_dir}")
    if output_dir is not None:
        lines.append(f"Output folder:      {output_dir}")
    lines.append(rule)
    stream.write("\n".join(lines) + "\n")
    stream.flush()


def print_plan(plan: RunPlan, output_dir: str | Path, stream: TextIO | None = None) -> None:
    """Print each pair to run with its tick count and output folder (the ``--dry-run`` output)."""
    stream = stream or sys.stdout
    stream.write(f"Plan: {_count(len(plan.files), 'pair')}, {plan.parallel_pairs} at a time, "
                 f"{_count(plan.workers_per_pair, 'worker')} each; largest files first\n")
    # The order the run starts them in: largest files first.
    for pair_file in _largest_first(plan.files, {p: i.rows for p, i in plan.infos.items()}):
        info = plan.infos[pair_file.pair_year]
        detail = f"unreadable footer: {info.error}" if info.error else f"{info.rows:,} ticks"
        marker = " [synthetic]" if info.synthetic else ""
        target = f"{str(output_dir).rstrip('/')}/{pair_file.pair_year}" if is_url(output_dir) else \
            Path(output_dir) / pair_file.pair_year
        stream.write(f"  {pair_file.pair_year:<12} {detail}{marker} -> {target}\n")
    for pair_year in plan.skipped:
        stream.write(f"  {pair_year:<12} current, skipped\n")
    stream.flush()


# --------------------------------------------------------------------------- the fan-out


def _status_symbols(stream: TextIO) -> tuple[str, str]:
    """Return the success and failure marks, in ASCII when the stream cannot encode emoji."""
    encoding = getattr(stream, "encoding", None)
    if encoding is None:
        return "\u2705", "\u274c"
    try:
        "\u2705\u274c".encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return "OK", "FAIL"
    return "\u2705", "\u274c"


def _resolve_files(files: Sequence[PairFile | str | Path],
                   invalid: Sequence[InvalidFile]) -> tuple[list[PairFile], list[InvalidFile]]:
    """Turn paths into PairFiles; bad names and pairs given twice become invalid files."""
    parsed: list[PairFile] = []
    rejected = list(invalid)
    for item in files:
        if isinstance(item, PairFile):
            parsed.append(item)
            continue
        path = Path(item)
        try:
            symbol, year = parse_pair_filename(path)
        except InvalidFileNameError as exc:
            rejected.append(InvalidFile(path, str(exc)))
            continue
        parsed.append(PairFile(path, symbol, year, f"{symbol}_{year}"))

    counts: dict[str, int] = {}
    for pair_file in parsed:
        counts[pair_file.pair_year] = counts.get(pair_file.pair_year, 0) + 1
    unique = [f for f in parsed if counts[f.pair_year] == 1]
    for pair_file in parsed:
        if counts[pair_file.pair_year] > 1:
            rejected.append(InvalidFile(pair_file.path, f"Conflicting tick files for {pair_file.pair_year}: "
                                        f"{counts[pair_file.pair_year]} files name the same pair and year."))
    return unique, rejected


# Seconds without a finished pair after which the console gets a line on the pairs still running.
HEARTBEAT_SECONDS = 60.0


class _Progress:
    """Prints one line per finished pair and a progress line, and appends the pair's ledger line.

    Lines are plain text, one per event, so they read the same in a terminal, a log file or CI.
    """

    def __init__(self, summary: VastSummary, total: int, stream: TextIO, run_logs: RunLogs | None,
                 synthetic: dict[str, bool], rows: dict[str, int] | None = None,
                 estimated_seconds: float | None = None, fingerprints: dict[str, str] | None = None) -> None:
        self.summary, self.total, self.stream, self.run_logs = summary, total, stream, run_logs
        self.synthetic = synthetic
        self.rows = rows or {}
        self.estimated_seconds = estimated_seconds
        self.fingerprints = fingerprints or {}
        self.done = 0
        self.rows_done = 0
        self.ok_mark, self.fail_mark = _status_symbols(stream)
        self.started = time.perf_counter()
        # The executor's manager thread prints hold lines while the main thread prints results.
        self._lock = threading.Lock()

    def _write(self, text: str) -> None:
        with self._lock:
            self.stream.write(text + "\n")
            self.stream.flush()

    def heartbeat(self, running: Iterable[str], state: str = "running") -> None:
        """Print a line saying which pairs are still ``state`` (running, or unfinished), for long pairs."""
        names = sorted(running)
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        elapsed = time.perf_counter() - self.started
        self._write(f"... [{self.done}/{self.total}] done, {len(names)} {state} ({shown}), "
                    f"elapsed {elapsed / 60:.0f}m{elapsed % 60:02.0f}s")

    def hold(self, reason: str) -> None:
        """Print why the next pair waits to start."""
        self._write(f"... next pair waits: {reason}")

    def remaining_seconds(self, unfinished: Iterable[str]) -> float | None:
        """Return the estimated seconds left, from this run's throughput once a pair has finished.

        Before the first pair ends, the plan's estimate minus the elapsed time is used.
        """
        elapsed = time.perf_counter() - self.started
        unfinished_rows = sum(self.rows.get(pair_year, 0) for pair_year in unfinished)
        if self.rows_done > 0 and elapsed > 0:
            return unfinished_rows / (self.rows_done / elapsed)
        if self.estimated_seconds is not None:
            return max(0.0, self.estimated_seconds - elapsed)
        return None

    def progress(self, running: int, queued: int, unfinished: Iterable[str]) -> None:
        """Print the run's progress: pairs done, running and queued, elapsed and estimated time left."""
        elapsed = time.perf_counter() - self.started
        failed = self.summary.failed
        remaining = self.remaining_seconds(unfinished) if running + queued else 0.0
        left = "estimate unknown" if remaining is None else f"about {_format_clock(remaining)} left (estimate)"
        self._write(f"Progress: {self.done}/{self.total} pairs done ({failed} failed), {running} running, "
                    f"{queued} queued; elapsed {_format_clock(elapsed)}, {left}")

    def record(self, result: PairResult) -> None:
        """Add a pair's result to the summary, append its ledger line and print its line."""
        if not result.synthetic and self.synthetic.get(result.pair_year, False):
            result = replace(result, synthetic=True)
        self.summary.results.append(result)
        self.done += 1
        self.rows_done += self.rows.get(result.pair_year, 0)
        error = None
        if result.status == run_ledger.FAILED:
            error = {"type": result.error_type, "message": result.message, "traceback": result.traceback}
        run_ledger.append_event(self.run_logs.ledger_path if self.run_logs else None, "end", result.pair_year,
                                result.job, result.status, ok=result.ok, seconds=result.seconds,
                                message=result.message, error=error,
                                fingerprint=self.fingerprints.get(result.pair_year, ""),
                                peak_memory_bytes=result.peak_memory_bytes)
        if result.ok:
            detail = f": {result.message}" if result.message else ""
            marker = " [synthetic data]" if result.synthetic else ""
            line = (f"{self.ok_mark} [{self.done}/{self.total}] {result.pair_year} - {result.job} complete "
                    f"({result.seconds:.1f}s){detail}{marker}")
        elif result.status == run_ledger.FAILED:
            line = (f"{self.fail_mark} [{self.done}/{self.total}] {result.pair_year} - {result.job} failed: "
                    f"{result.message}")
        else:
            line = f"-- [{self.done}/{self.total}] {result.pair_year} - {result.job} {result.status}: {result.message}"
        self._write(line)


def _executor_failure_reason(exc: BaseException) -> str:
    """Return a one-line reason for a pair whose future raised outside ``run_pair``."""
    if isinstance(exc, PairProcessDied):
        return f"{exc}; its outputs are not marked complete, so a rerun computes the pair again"
    if isinstance(exc, CancelledError):
        return ("cancelled before it finished: the executor was shut down (with Dask: the cluster closed "
                "or the client lost its scheduler connection)")
    if isinstance(exc, BrokenExecutor):
        return f"the executor broke before this pair finished ({_one_line_reason(exc)})"
    if type(exc).__name__ == "KilledWorker":
        # Dask's first sentence names the task and the number of workers tried; the rest is general advice.
        first_sentence = str(exc).strip().split(". ", 1)[0]
        return (f"Dask worker process died while running this pair (KilledWorker: {first_sentence}); "
                "the worker's log says why, often an out-of-memory kill")
    return _one_line_reason(exc)


def _result_of(future: Future, pair_file: PairFile, job: str) -> PairResult:
    """Return the pair's result, turning an exception raised outside ``run_pair`` into a failure."""
    try:
        return future.result()
    except Exception as exc:  # outside run_pair: a dead pair process, unpickling, a Dask worker that died
        logger.error("%s %s failed in its worker (file %s)", pair_file.pair_year, job, pair_file.path,
                     exc_info=exc, extra={FILE_ONLY: True})
        text = "".join(traceback.format_exception(exc))
        return PairResult(pair_file.pair_year, job, False, 0.0, _executor_failure_reason(exc),
                          error_type=type(exc).__name__, traceback=text)


@dataclass
class _Fanout:
    """The futures of one run and the pairs whose results are recorded."""

    futures: dict[Future, PairFile] = field(default_factory=dict)
    recorded: set[Future] = field(default_factory=set)

    def unfinished(self) -> list[str]:
        return [pair_file.pair_year for future, pair_file in self.futures.items() if future not in self.recorded]

    def counts(self) -> tuple[int, int]:
        """Return the running and queued pairs; futures that never report running count as queued."""
        open_futures = [future for future in self.futures if future not in self.recorded]
        running = sum(future.running() for future in open_futures)
        return running, len(open_futures) - running


def _stop_after_interrupt(executor: Executor, own_executor: bool, fanout: _Fanout, progress: _Progress,
                          output_dir: Path, job: str) -> None:
    """Cancel the queued pairs, stop the running ones, remove their temporary files, record each."""
    by = "SIGTERM" if progress.summary.signal_name == "SIGTERM" else "Ctrl-C"
    progress._write(f"Interrupted by {by}: cancelling queued pairs and stopping running ones ...")
    for future in fanout.futures:
        future.cancel()
    stopped: list[int] = []
    if isinstance(executor, PairProcessExecutor):
        stopped = executor.terminate_running(STOP_GRACE_SECONDS)
    if stopped and output_dir.is_dir():
        from fxresearch.artifacts import remove_temp_files

        removed = remove_temp_files(output_dir, set(stopped))
        logger.info("Removed %d temporary files of stopped pair processes %s", len(removed), stopped)

    for future, pair_file in fanout.futures.items():
        if future in fanout.recorded:
            continue
        fanout.recorded.add(future)
        if future.cancelled():
            progress.record(PairResult(pair_file.pair_year, job, False, 0.0, f"cancelled by {by} before it started",
                                       status=run_ledger.NOT_STARTED))
        elif future.done() and not isinstance(future.exception(), PairProcessDied):
            progress.record(_result_of(future, pair_file, job))
        elif future.done():
            progress.record(PairResult(pair_file.pair_year, job, False, 0.0,
                                       f"stopped by {by} while running; its temporary files were removed",
                                       status=run_ledger.INTERRUPTED))
        else:
            # NOTE: a caller's executor (Dask) cannot stop a running call, so it may still finish there.
            progress.record(PairResult(pair_file.pair_year, job, False, 0.0,
                                       "still running in the executor when the run was interrupted",
                                       status=run_ledger.INTERRUPTED))
    if not own_executor:
        executor.shutdown(wait=False, cancel_futures=True)


def load_admission(max_load: float, max_memory_percent: float,
                   measure: Callable[[], tuple[float, float]] = system_load) -> Callable[[], str | None]:
    """Return an ``admission`` check for ``--adaptive``: the reason to hold new pairs, or None.

    ``max_load`` is the 1-minute load average per usable core and ``max_memory_percent`` the
    share of the machine's memory in use; ``measure`` returns both (tests pass a fake).
    """
    def check() -> str | None:
        load, memory_percent = measure()
        if load > max_load:
            return f"load {load:.2f} per core is above --max-load {max_load:g}"
        if memory_percent > max_memory_percent:
            return f"memory use {memory_percent:.0f} % is above --max-memory-percent {max_memory_percent:g}"
        return None

    return check


def run_vast_mode(files: Sequence[PairFile | str | Path], job: str, output_dir: str | Path, config: Config,
                  parallel_pairs: int, workers_per_pair: int, force_rerun: bool = False,
                  executor: Executor | None = None, stream: TextIO | None = None, *,
                  invalid: Sequence[InvalidFile] = (), job_function: JobFunction | None = None,
                  run_logs: RunLogs | None = None, synthetic: dict[str, bool] | None = None,
                  plan: RunPlan | None = None, admission: Callable[[], str | None] | None = None,
                  initializer: Callable[..., Any] | None = None, initargs: tuple = (),
                  cost_per_hour: float | None = None) -> VastSummary:
    """Run ``job`` on every pair, ``parallel_pairs`` at a time, and print a line as each ends.

    Parameters
    ----------
    files
        PairFiles from the folder scan, or paths; a bad name or a pair given twice fails.
        Pairs listed in ``plan.skipped`` are not run: they get a ``skipped`` ledger line.
    job
        ``"generate-base"`` or ``"search-light"``.
    executor
        Any ``concurrent.futures.Executor``, such as ``fxresearch.cluster.open_dask_executor``'s.
        By default a ``PairProcessExecutor`` runs each pair in a new spawned process, so a
        process that dies fails only its pair. A future that raises fails its own pair only;
        a caller's executor that breaks (``BrokenExecutor``) fails every pair it had not finished.
    invalid
        Files the scan rejected (the selected ones); each is listed in ``summary.invalid``,
        apart from the pairs.
    job_function
        The per-pair function ``(path, output_dir, config, force_rerun, workers) -> dict``;
        defaults to the job's function in ``JOBS``. It must be importable by name
        (a module-level function) to reach a spawned process.
    synthetic
        Pair-year -> True for inputs marked synthetic, so a failed pair is marked too.
    plan
        The run plan: tick counts (largest files start first), memory estimates and budget,
        skipped pairs, input fingerprints and the estimated time. Without it, pairs start in
        the given order and no memory budget applies.
    admission
        Asked before a pair starts while others run: None to start, or the reason to wait
        (``--adaptive``). Applies to the default executor only.
    initializer, initargs
        Called in each pair process before its job (default executor only), e.g. to set limits.

    Returns
    -------
    VastSummary
        Every pair's result, in the order they ended. After Ctrl-C or SIGTERM (SIGTERM is
        handled like Ctrl-C while this runs in the main thread), ``interrupted`` is True and
        the stopped and never-started pairs are in the results with those statuses.
    """
    stream = stream or sys.stdout
    if job_function is None:
        if job not in JOBS:
            raise ValueError(f"Unknown job {job!r}; expected one of {', '.join(JOBS)}")
        job_function = JOBS[job]
    started = time.perf_counter()
    # An fsspec URL stays text; its measurements live in the local run folder.
    output_dir = UrlPath(output_dir) if is_url(output_dir) else Path(output_dir)
    state_dir = run_state_dir(output_dir)
    ledger_path = run_logs.ledger_path if run_logs else None
    summary = VastSummary(job, estimated_seconds=plan.estimated_seconds if plan else None,
                          cost_per_hour=cost_per_hour, force_rerun=force_rerun)
    synthetic = dict(synthetic or {})
    synthetic.update((pair_year, True) for pair_year in (plan.skipped_synthetic if plan else ()))
    fingerprints = plan.fingerprints if plan else {}
    rows = {pair_year: info.rows for pair_year, info in plan.infos.items()} if plan else {}
    skipped = set(plan.skipped) if plan else set()

    if isinstance(output_dir, Path) and output_dir.is_dir():
        from fxresearch.artifacts import remove_temp_files

        # Temporary files of processes that no longer exist: a run killed before it could clean up.
        remove_temp_files(output_dir)

    pair_files, rejected = _resolve_files(files, invalid)
    for bad in rejected:
        summary.invalid.append(PairResult(bad.path.name, job, False, 0.0, bad.reason))
        run_ledger.append_event(ledger_path, "end", bad.path.name, job, run_ledger.FAILED, ok=False, seconds=0.0,
                                message=bad.reason, error={"type": "InvalidFile", "message": bad.reason,
                                                           "traceback": ""})
    for pair_year in sorted(skipped):
        summary.skipped.append(pair_year)
        summary.skipped_synthetic += bool(synthetic.get(pair_year))
        run_ledger.append_event(ledger_path, "end", pair_year, job, run_ledger.SKIPPED, ok=True, seconds=0.0,
                                message="outputs current", fingerprint=fingerprints.get(pair_year, ""))
    to_run = _largest_first((f for f in pair_files if f.pair_year not in skipped), rows)

    progress = _Progress(summary, len(to_run), stream, run_logs, synthetic, rows,
                         plan.estimated_seconds if plan else None, fingerprints)
    measurements = Measurements.load(state_dir) if plan else None
    own_executor = executor is None
    if executor is None:
        executor = PairProcessExecutor(parallel_pairs, initializer=initializer, initargs=initargs,
                                       memory_budget_bytes=plan.memory_budget_bytes if plan else None,
                                       admission=admission, on_hold=progress.hold)
    fanout = _Fanout()
    previous_handler = _handle_sigterm()
    try:
        for pair_file in to_run:
            _submit(executor, pair_file, fanout, progress, job_function, job, output_dir, config, force_rerun,
                    workers_per_pair, run_logs, plan)
        _collect(fanout, progress, job, measurements, state_dir, rows, workers_per_pair)
    except KeyboardInterrupt as exc:
        summary.interrupted = True
        summary.signal_name = "SIGTERM" if isinstance(exc, RunTerminated) else "SIGINT"
        # A second SIGTERM while the pairs are being stopped would cut the summary short.
        _ignore_sigterm(previous_handler)
        _stop_after_interrupt(executor, own_executor, fanout, progress, state_dir, job)
    finally:
        _restore_sigterm(previous_handler)
        if own_executor:
            executor.shutdown(wait=True, cancel_futures=True)

    summary.seconds = time.perf_counter() - started
    logger.info("%s run finished: %d pairs, %d failed, %d skipped, %.1fs%s", job, summary.total, summary.failed,
                len(summary.skipped), summary.seconds, " (interrupted)" if summary.interrupted else "")
    return summary


def _raise_terminated(signum: int, frame: object) -> None:
    raise RunTerminated()


def _handle_sigterm() -> Any:
    """Make SIGTERM raise RunTerminated while a run is on; return the handler to restore (None off the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_terminated)


def _ignore_sigterm(previous_handler: Any) -> None:
    if previous_handler is not None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _restore_sigterm(previous_handler: Any) -> None:
    if previous_handler is not None:
        signal.signal(signal.SIGTERM, previous_handler)


def _submit(executor: Executor, pair_file: PairFile, fanout: _Fanout, progress: _Progress,
            job_function: JobFunction, job: str, output_dir: Path | UrlPath, config: Config, force_rerun: bool,
            workers_per_pair: int, run_logs: RunLogs | None, plan: RunPlan | None) -> None:
    """Submit one pair; a submission that fails becomes that pair's failure."""
    weight = plan.pair_bytes(pair_file.pair_year) if plan else 0
    budget = None
    if plan is not None and plan.memory_budget_bytes is not None:
        budget = int(max(weight, plan.memory_budget_bytes / max(1, plan.parallel_pairs)))
    args = (run_pair, job_function, job, pair_file.path, output_dir, config, force_rerun, workers_per_pair, run_logs)
    kwargs = {"fingerprint": plan.fingerprints.get(pair_file.pair_year, "") if plan else "",
              "memory_budget_bytes": budget}
    try:
        if isinstance(executor, PairProcessExecutor):
            future = executor.submit_weighted(weight, *args, **kwargs)
        else:
            future = executor.submit(*args, **kwargs)
    except Exception as exc:  # e.g. arguments that cannot be pickled for a remote worker, or a broken executor
        logger.error("%s %s could not be submitted", pair_file.pair_year, job, exc_info=exc, extra={FILE_ONLY: True})
        future = Future()
        future.set_exception(RuntimeError(f"not submitted: {_one_line_reason(exc)}"))
        fanout.futures[future] = pair_file
        fanout.recorded.add(future)
        progress.record(PairResult(pair_file.pair_year, job, False, 0.0, f"not submitted: {_one_line_reason(exc)}",
                                   error_type=type(exc).__name__, traceback="".join(traceback.format_exception(exc))))
        return
    fanout.futures[future] = pair_file


def _collect(fanout: _Fanout, progress: _Progress, job: str, measurements: Measurements | None,
             output_dir: Path, rows: dict[str, int], workers_per_pair: int) -> None:
    """Record each pair's result as it ends, with a progress line, and a heartbeat while none ends."""
    pending = {future for future in fanout.futures if future not in fanout.recorded}
    while pending:
        # A pair can run for many minutes, so a line every HEARTBEAT_SECONDS shows the run is alive.
        finished, pending = wait(pending, timeout=HEARTBEAT_SECONDS, return_when=FIRST_COMPLETED)
        if not finished:
            running = [fanout.futures[future].pair_year for future in pending if future.running()]
            if running:
                progress.heartbeat(running)
            else:
                # Dask's executor never marks its futures as running, so list every unfinished pair.
                progress.heartbeat((fanout.futures[future].pair_year for future in pending), "unfinished")
            progress.progress(*fanout.counts(), fanout.unfinished())
            continue
        for future in finished:
            pair_file = fanout.futures[future]
            result = _result_of(future, pair_file, job)
            fanout.recorded.add(future)
            progress.record(result)
            if measurements is not None and result.ok and result.measured and pair_file.pair_year in rows:
                measurements.record(job, rows[pair_file.pair_year], result.seconds, workers_per_pair,
                                    result.peak_memory_bytes)
                measurements.save(output_dir)
        progress.progress(*fanout.counts(), fanout.unfinished())


def run_single_pair(path: str | Path, job: str, output_dir: str | Path, config: Config, force_rerun: bool,
                    workers: int, run_logs: RunLogs | None = None, stream: TextIO | None = None) -> VastSummary:
    """Run one pair in this process, printing the same line as a VAST run with one pair."""
    stream = stream or sys.stdout
    if job not in JOBS:
        raise ValueError(f"Unknown job {job!r}; expected one of {', '.join(JOBS)}")
    summary = VastSummary(job)
    synthetic = tick_file_info(path).synthetic
    progress = _Progress(summary, 1, stream, run_logs, {_pair_year_of(Path(path)): synthetic})
    result = run_pair(JOBS[job], job, path, output_dir, config, force_rerun, workers, run_logs)
    progress.record(result)
    summary.seconds = result.seconds
    return summary


def print_summary(summary: VastSummary, run_logs: RunLogs | None = None, stream: TextIO | None = None) -> None:
    """Print the totals (``Failed: N`` exactly in that form), the failed pairs and the run files.

    After Ctrl-C it lists the finished, failed, stopped and never-started pairs. With an
    estimate it prints the estimated time (and cost) beside the actual.
    """
    stream = stream or sys.stdout
    lines = [
        "-" * 72,
        f"Summary: {summary.job}" + (" (INTERRUPTED)" if summary.interrupted else ""),
        f"  Total pairs: {summary.total + len(summary.skipped)}",
        f"  Successful: {summary.successful}",
        f"  Failed: {summary.failed}",
    ]
    if summary.invalid:
        lines.append(f"  Invalid files: {len(summary.invalid)} (not pairs; listed below)")
    if summary.skipped:
        shown = ", ".join(summary.skipped[:10]) + (" ..." if len(summary.skipped) > 10 else "")
        lines.append(f"  Skipped (outputs current): {len(summary.skipped)} ({shown})")
    time_line = f"  Total time: {summary.seconds:.1f}s"
    if summary.estimated_seconds is not None:
        time_line += f" (estimated ~{_format_duration(summary.estimated_seconds)})"
    lines.append(time_line)
    if summary.cost_per_hour is not None:
        cost_line = f"  Cost: ~{format_cost(summary.seconds, summary.cost_per_hour)}"
        if summary.estimated_seconds is not None:
            cost_line += f" (estimated ~{format_cost(summary.estimated_seconds, summary.cost_per_hour)})"
        lines.append(cost_line + f" at {summary.cost_per_hour:g} per hour")
    if summary.interrupted:
        finished = summary.with_status(run_ledger.OK)
        lines.append(f"  Finished ({len(finished)}): {', '.join(finished) or 'none'}")
    failed = [r for r in summary.results if r.status == run_ledger.FAILED]
    if failed:
        lines.append("  Failed pairs:")
        lines.extend(f"    {r.pair_year}: {r.message}" for r in failed)
    if summary.invalid:
        lines.append("  Invalid files:")
        lines.extend(f"    {r.pair_year}: {r.message}" for r in summary.invalid)
    if summary.unselected_invalid:
        lines.append(f"  Note: {_count(len(summary.unselected_invalid), 'invalid file')} not selected by --pairs "
                     f"(not counted): {', '.join(summary.unselected_invalid)}")
    if summary.interrupted:
        stopped = summary.with_status(run_ledger.INTERRUPTED)
        not_started = summary.with_status(run_ledger.NOT_STARTED)
        lines.append(f"  Stopped while running ({len(stopped)}): {', '.join(stopped) or 'none'}")
        lines.append(f"  Not started ({len(not_started)}): {', '.join(not_started) or 'none'}")
        if summary.force_rerun:
            # The same command would compute the finished pairs again.
            lines.append("  Rerun without --force-rerun to compute the stopped and not started pairs; "
                         "finished ones are then skipped.")
        else:
            lines.append("  Rerun the same command to compute the stopped and not started pairs; "
                         "finished ones are skipped.")
    synthetic = sum(r.synthetic for r in summary.results) + summary.skipped_synthetic
    if synthetic:
        lines.append(f"  Results of {synthetic} of {summary.total + len(summary.skipped)} pairs are on SYNTHETIC "
                     f"data, not market data.")
    if run_logs is not None and run_logs.log_path is not None:
        lines.append(f"  Log: {run_logs.log_path}")
        lines.append(f"  Ledger: {run_logs.ledger_path}")
    stream.write("\n".join(lines) + "\n")
    stream.flush()

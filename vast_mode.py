"""VAST mode: run one job (generate-base or search-light) over every tick file of a folder.

Data flow::

    input folder of PAIR_YEAR.parquet files
        -> names      naming.scan_input_dir: valid PairFiles, invalid files with reasons
        -> plan       resources: cores x memory -> parallel_pairs x workers_per_pair,
                      tick counts and the synthetic marker from each parquet footer
        -> executor   concurrent.futures.Executor (default: spawn-context process pool;
                      with --dask-*, fxresearch.cluster's executor on Dask workers)
        -> pair workers   run_pair in its own process, threads capped at workers_per_pair
        -> stages     fxresearch.base.generate_base / fxresearch.search.search_light
        -> artifacts  output/PAIR_YEAR/...
        -> summary    one line per pair as it ends, then totals; the ledger
                      output/runs/<run id>.jsonl and the log output/logs/run-<run id>.log

A pair's failure never stops the others. A pair job's exception becomes a failed
PairResult inside its worker. A crashed worker process (segfault, out-of-memory kill,
``os._exit``) breaks only the current pool, and the unfinished pairs then run again in a
new one. On Dask, a worker that dies affects only the pairs it was running: the scheduler
reruns them on other workers and fails a pair with KilledWorker once its retries are spent.
Tracebacks of failed pairs go to the log file, not to the screen.

The orchestrator prints progress to a stream because it is the program's user interface;
the pair jobs below it only log.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import sys
import time
from concurrent.futures import (
    FIRST_COMPLETED, BrokenExecutor, CancelledError, Executor, Future, ProcessPoolExecutor, wait,
)
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Sequence, TextIO

from fxresearch import __version__
from fxresearch.config import Config
from fxresearch.naming import EXPECTED_FORM, InvalidFile, InvalidFileNameError, PairFile, ScanResult, parse_pair_filename
from fxresearch.resources import (
    BYTES_PER_TICK_ESTIMATE, GB, PAIR_SECONDS_ESTIMATE, PROCESS_STARTUP_SECONDS_ESTIMATE, TICKS_PER_SECOND_ESTIMATE, Resources,
    TickFileInfo, WorkerPlan, detect_resources, estimate_pair_bytes, estimate_run_seconds,
    max_pairs_for_memory, plan_workers, read_tick_file_info,
)

__all__ = [
    "JOBS", "PairResult", "PairSelectionError", "Resources", "RunLogs", "RunPlan", "VastSummary",
    "configure_run_logging", "detect_resources", "make_plan", "new_run_logs", "print_plan",
    "make_cluster_plan", "print_resources_banner", "print_summary", "run_generate_base_single", "run_pair",
    "run_search_light_single", "run_single_pair", "run_vast_mode", "select_pairs",
]

logger = logging.getLogger(__name__)

# Log records carrying this attribute go to the log file only (tracebacks of failed pairs).
FILE_ONLY = "file_only"
THREAD_ENV_VARS = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
# A failure reason longer than this is cut at a word boundary on screen, and the run log keeps it whole.
MAX_REASON_CHARS = 1000

JobFunction = Callable[[Path, Path, Config, bool, int], dict]


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
    """Outcome of one pair's job: ``message`` is the job's one-line summary or the failure reason."""

    pair_year: str
    job: str
    ok: bool
    seconds: float
    message: str
    synthetic: bool = False


@dataclass
class VastSummary:
    """All pair results of one run, invalid input files included as failed pairs."""

    job: str
    results: list[PairResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return len(self.results)

    @property
    def successful(self) -> int:
        return sum(r.ok for r in self.results)

    @property
    def failed(self) -> int:
        return self.total - self.successful

    @property
    def synthetic(self) -> bool:
        return any(r.synthetic for r in self.results)


@dataclass(frozen=True)
class RunLogs:
    """Paths of a run's log file and JSONL ledger, passed to every pair process."""

    run_id: str
    log_path: Path | None
    ledger_path: Path | None
    # Level of the console handler. The log file always records INFO and above.
    console_level: int = logging.WARNING


def new_run_logs(output_dir: str | Path, console_level: int = logging.WARNING) -> RunLogs:
    """Name a new run (UTC time and process id) and its files under ``output_dir``."""
    run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + f"-{os.getpid()}"
    output_dir = Path(output_dir)
    return RunLogs(run_id, output_dir / "logs" / f"run-{run_id}.log",
                   output_dir / "runs" / f"{run_id}.jsonl", console_level)


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
        handler._fxresearch = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(min(logging.INFO, console_level))


def _append_ledger(ledger_path: Path | None, event: str, pair_year: str, job: str,
                   ok: bool | None = None, seconds: float | None = None, message: str = "") -> None:
    """Append one JSON line to the run ledger with a single write, so processes do not interleave."""
    if ledger_path is None:
        return
    line = json.dumps({
        "event": event, "pair": pair_year, "job": job,
        "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        "ok": ok, "seconds": None if seconds is None else round(seconds, 3), "message": message,
    }, ensure_ascii=False) + "\n"
    ledger_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(ledger_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode("utf-8"))
    finally:
        os.close(fd)


def _ledger_size(ledger_path: Path | None) -> int:
    try:
        return ledger_path.stat().st_size if ledger_path is not None else 0
    except FileNotFoundError:
        return 0


def _pairs_started_since(ledger_path: Path | None, offset: int) -> set[str] | None:
    """Return the pairs with a ``start`` line after byte ``offset``, or None without a ledger."""
    if ledger_path is None or not ledger_path.exists():
        return None
    with ledger_path.open("rb") as handle:
        handle.seek(offset)
        started = set()
        for raw in handle:
            try:
                event = json.loads(raw)
            except json.JSONDecodeError:
                continue
            if event.get("event") == "start":
                started.add(event["pair"])
    return started


# --------------------------------------------------------------------------- the pair worker


def _setup_worker_environment(workers: int) -> None:
    """Cap every thread pool of this process at ``workers`` threads.

    The environment variables only take effect for libraries loaded after this call (and
    for child processes). numba, threadpoolctl and pyarrow are also capped at run time, so
    the cap applies even where numpy was already imported.
    """
    workers = max(1, int(workers))
    for name in THREAD_ENV_VARS:
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
    """In a pair process, send log records to the run's log file (once per process)."""
    global _worker_logging_for
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


def run_pair(job_function: JobFunction, job: str, path: str | Path, output_dir: str | Path, config: Config,
             force_rerun: bool = False, workers: int = 1, run_logs: RunLogs | None = None) -> PairResult:
    """Run one pair's job in this process and return its result.

    An ``Exception`` from the job or from the thread set-up is not raised. It is logged
    with its traceback (to the run log file only) and returned as ``ok=False`` with a
    one-line reason: the exception type and its message's first line. KeyboardInterrupt
    and SystemExit propagate.
    """
    path, output_dir = Path(path), Path(output_dir)
    pair_year = _pair_year_of(path)
    _setup_worker_logging(run_logs)
    _append_ledger(run_logs.ledger_path if run_logs else None, "start", pair_year, job)
    logger.info("%s %s started on %s with %d workers", pair_year, job, path, workers)

    started = time.perf_counter()
    try:
        _setup_worker_environment(workers)
        summary = job_function(path, output_dir, config, force_rerun, workers)
    except Exception as exc:
        seconds = time.perf_counter() - started
        logger.error("%s %s failed after %.1fs on %s", pair_year, job, seconds, path,
                     exc_info=True, extra={FILE_ONLY: True})
        return PairResult(pair_year, job, False, seconds, _one_line_reason(exc))

    seconds = time.perf_counter() - started
    summary = summary or {}
    message = str(summary.get("message", "")).strip().replace("\n", " ")
    logger.info("%s %s complete in %.1fs: %s", pair_year, job, seconds, message)
    return PairResult(summary.get("pair_year", pair_year), job, True, seconds, message,
                      bool(summary.get("synthetic", False)))


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
    missing = [r for r in requested_ids if not any(r in (f.symbol, f.pair_year) for f in files)]
    if missing:
        available = ", ".join(f.pair_year for f in files) or "none"
        raise PairSelectionError(
            f"--pairs: no tick file for {', '.join(missing)} in the input folder (available: {available})")
    return [f for f in files if f.symbol in requested_ids or f.pair_year in requested_ids]


@dataclass(frozen=True)
class RunPlan:
    """The pairs to run, with their tick counts, and how the cores are split between them."""

    files: tuple[PairFile, ...]
    infos: dict[str, TickFileInfo]
    workers: WorkerPlan
    bytes_per_pair: int
    estimated_seconds: float

    @property
    def parallel_pairs(self) -> int:
        return self.workers.parallel_pairs

    @property
    def workers_per_pair(self) -> int:
        return self.workers.workers_per_pair

    @property
    def total_ticks(self) -> int:
        return sum(info.rows for info in self.infos.values())

    @property
    def synthetic_count(self) -> int:
        return sum(info.synthetic for info in self.infos.values())


def make_plan(resources: Resources, files: Sequence[PairFile], job: str,
              parallel_pairs: int | None = None, max_workers: int | None = None) -> RunPlan:
    """Read each file's footer and split the cores, lowering parallel pairs to fit the memory.

    Memory per pair is estimated from the largest file, so any set of pairs running at once
    fits (see ``fxresearch.resources.BYTES_PER_TICK_ESTIMATE``).
    """
    infos = {f.pair_year: read_tick_file_info(f.path) for f in files}
    bytes_per_pair = max((estimate_pair_bytes(i.rows) for i in infos.values()), default=0)
    memory_cap = max_pairs_for_memory(resources.ram_available_gb * GB, bytes_per_pair)
    workers = plan_workers(resources.cores, len(files), parallel_pairs, max_workers, memory_cap)
    seconds = estimate_run_seconds((i.rows for i in infos.values()), job, workers.parallel_pairs)
    return RunPlan(tuple(files), infos, workers, bytes_per_pair, seconds)


def make_cluster_plan(files: Sequence[PairFile], job: str, dask_workers: int, threads_per_worker: int,
                      max_workers: int | None = None) -> RunPlan:
    """Plan a run on a Dask cluster: one pair per Dask worker, its threads for the pair.

    ``parallel_pairs`` is the number of Dask workers (or of pairs, if fewer), and
    ``workers_per_pair`` is ``max_workers`` or else the threads of the smallest Dask worker.
    This machine's cores and memory do not limit the plan, because the pairs run on the
    workers. The memory estimate is still shown, for sizing the workers.
    """
    if dask_workers < 1:
        raise ValueError(f"dask_workers must be at least 1, got {dask_workers}")
    infos = {f.pair_year: read_tick_file_info(f.path) for f in files}
    bytes_per_pair = max((estimate_pair_bytes(i.rows) for i in infos.values()), default=0)
    pairs, limited_by = dask_workers, "dask"
    if 1 <= len(files) < pairs:
        pairs, limited_by = len(files), "pairs"
    workers = WorkerPlan(pairs, max_workers or max(1, threads_per_worker), limited_by)
    seconds = estimate_run_seconds((i.rows for i in infos.values()), job, pairs)
    return RunPlan(tuple(files), infos, workers, bytes_per_pair, seconds)


def _format_bytes(size: float) -> str:
    return f"{size / GB:.2f} GB" if size >= GB / 10 else f"{size / 1024 ** 2:.1f} MB"


def _format_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def print_resources_banner(resources: Resources, scan: ScanResult, plan: RunPlan, job_name: str,
                           stream: TextIO = sys.stdout, *, input_dir: str | Path | None = None,
                           output_dir: str | Path | None = None, cluster: str | None = None) -> None:
    """Print the machine, the input files (each invalid one with its reason) and the plan.

    ``cluster`` is a one-line description of the Dask cluster the pairs run on, or None
    when they run in processes on this machine.
    """
    rule = "=" * 72
    quota = "none" if resources.cpu_quota is None else f"{resources.cpu_quota:g} cores"
    cgroup_note = " (cgroup memory limit)" if resources.memory_limited_by_cgroup else ""
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
        lines.insert(3, f"Runs on:            {cluster}")
    for bad in scan.invalid:
        reason = bad.reason if "Expected" in bad.reason else f"{bad.reason} Expected {EXPECTED_FORM}."
        lines.append(f"  INVALID {bad.path.name}: {reason}")
    if len(plan.files) != len(scan.valid):
        lines.append(f"Selected by --pairs: {len(plan.files)} of {len(scan.valid)} valid files")

    limits = {"cores": "limited by cores", "pairs": "one per pair", "requested": "as requested",
              "memory": "limited by memory, not cores", "dask": "one per Dask worker"}
    lines.append(f"Parallel pairs:     {plan.parallel_pairs} ({limits.get(plan.workers.limited_by, '')})")
    lines.append(f"Workers per pair:   {plan.workers_per_pair}")
    for note in plan.workers.notes:
        lines.append(f"  NOTE: {note}")
    lines.append(f"Ticks:              {plan.total_ticks:,} in {len(plan.files)} files")
    unreadable = [pair_year for pair_year, info in plan.infos.items() if info.error]
    if unreadable:
        lines.append(f"  Unreadable parquet footer (these pairs will fail): {', '.join(unreadable)}")
    lines.append(f"Memory per pair:    {_format_bytes(plan.bytes_per_pair)} "
                 f"(estimate: {BYTES_PER_TICK_ESTIMATE} bytes per tick of the largest file)")
    if plan.workers.limited_by == "memory":
        lines.append(f"  Memory, not cores, limits parallel pairs: {plan.parallel_pairs} x "
                     f"{_format_bytes(plan.bytes_per_pair)} fit in {resources.ram_available_gb:.1f} GB available")
    throughput = TICKS_PER_SECOND_ESTIMATE.get(job_name, min(TICKS_PER_SECOND_ESTIMATE.values()))
    lines.append(f"Estimated time:     ~{_format_duration(plan.estimated_seconds)} (estimate: {throughput:,} "
                 f"ticks/s and {PAIR_SECONDS_ESTIMATE:g} s per pair job, {PROCESS_STARTUP_SECONDS_ESTIMATE:g} s "
                 f"process start-up)")
    if plan.synthetic_count:
        lines.append(f"Input:              SYNTHETIC sample data ({plan.synthetic_count} of {len(plan.files)} "
                     f"files); results on it are synthetic, not market results")
    if input_dir is not None:
        lines.append(f"Input folder:       {input_dir}")
    if output_dir is not None:
        lines.append(f"Output folder:      {output_dir}")
    lines.append(rule)
    stream.write("\n".join(lines) + "\n")
    stream.flush()


def print_plan(plan: RunPlan, output_dir: str | Path, stream: TextIO = sys.stdout) -> None:
    """Print each pair to run with its tick count and output folder (the ``--dry-run`` output)."""
    stream.write(f"Plan: {len(plan.files)} pairs, {plan.parallel_pairs} at a time, "
                 f"{plan.workers_per_pair} workers each\n")
    for pair_file in plan.files:
        info = plan.infos[pair_file.pair_year]
        detail = f"unreadable footer: {info.error}" if info.error else f"{info.rows:,} ticks"
        marker = " [synthetic]" if info.synthetic else ""
        stream.write(f"  {pair_file.pair_year:<12} {detail}{marker} -> {Path(output_dir) / pair_file.pair_year}\n")
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


def _new_pool(parallel_pairs: int, workers_per_pair: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(max_workers=parallel_pairs, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_setup_worker_environment, initargs=(workers_per_pair,))


# Seconds without a finished pair after which the console gets a line on the pairs still running.
HEARTBEAT_SECONDS = 60.0


class _Progress:
    """Prints one line per finished pair and appends its ledger line."""

    def __init__(self, summary: VastSummary, total: int, stream: TextIO, run_logs: RunLogs | None,
                 synthetic: dict[str, bool]) -> None:
        self.summary, self.total, self.stream, self.run_logs = summary, total, stream, run_logs
        self.synthetic = synthetic
        self.done = 0
        self.ok_mark, self.fail_mark = _status_symbols(stream)
        self.started = time.perf_counter()

    def heartbeat(self, running: Iterable[str], state: str = "running") -> None:
        """Print a line saying which pairs are still ``state`` (running, or unfinished), for long pairs."""
        names = sorted(running)
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        elapsed = time.perf_counter() - self.started
        self.stream.write(f"... [{self.done}/{self.total}] done, {len(names)} {state} ({shown}), "
                          f"elapsed {elapsed / 60:.0f}m{elapsed % 60:02.0f}s\n")
        self.stream.flush()

    def record(self, result: PairResult) -> None:
        if not result.synthetic and self.synthetic.get(result.pair_year, False):
            result = replace(result, synthetic=True)
        self.summary.results.append(result)
        self.done += 1
        _append_ledger(self.run_logs.ledger_path if self.run_logs else None, "end", result.pair_year,
                       result.job, result.ok, result.seconds, result.message)
        if result.ok:
            detail = f": {result.message}" if result.message else ""
            marker = " [synthetic data]" if result.synthetic else ""
            line = (f"{self.ok_mark} [{self.done}/{self.total}] {result.pair_year} - {result.job} complete "
                    f"({result.seconds:.1f}s){detail}{marker}")
        else:
            line = f"{self.fail_mark} [{self.done}/{self.total}] {result.pair_year} - {result.job} failed: {result.message}"
        self.stream.write(line + "\n")
        self.stream.flush()


def _run_batch(executor: Executor, pairs: Sequence[PairFile], submit: Callable[[PairFile], Future],
               progress: _Progress) -> list[PairFile]:
    """Submit ``pairs`` and record each result as it ends.

    Returns the pairs left without a result because the executor broke (a worker process
    died); the executor is unusable afterwards.
    """
    futures: dict[Future, PairFile] = {}
    unfinished: list[PairFile] = []
    for index, pair_file in enumerate(pairs):
        try:
            futures[submit(pair_file)] = pair_file
        except BrokenExecutor:
            unfinished.extend(pairs[index:])
            break
        except Exception as exc:  # e.g. arguments that cannot be pickled for a remote worker
            logger.error("%s %s could not be submitted", pair_file.pair_year, progress.summary.job,
                         exc_info=exc, extra={FILE_ONLY: True})
            progress.record(PairResult(pair_file.pair_year, progress.summary.job, False, 0.0,
                                       f"not submitted: {_one_line_reason(exc)}"))

    pending = set(futures)
    while pending:
        # A pair can run for many minutes, so a line every HEARTBEAT_SECONDS shows the run is alive.
        finished, pending = wait(pending, timeout=HEARTBEAT_SECONDS, return_when=FIRST_COMPLETED)
        if not finished:
            running = [futures[future].pair_year for future in pending if future.running()]
            if running:
                progress.heartbeat(running)
            else:
                # Dask's executor never marks its futures as running, so list every unfinished pair.
                progress.heartbeat((futures[future].pair_year for future in pending), "unfinished")
            continue
        for future in finished:
            pair_file = futures[future]
            try:
                result = future.result()
            except BrokenExecutor:
                unfinished.append(pair_file)
                continue
            except Exception as exc:  # outside run_pair: unpickling, or a Dask worker that died
                logger.error("%s %s failed in its worker", pair_file.pair_year, progress.summary.job,
                             exc_info=exc, extra={FILE_ONLY: True})
                result = PairResult(pair_file.pair_year, progress.summary.job, False, 0.0,
                                    _executor_failure_reason(exc))
            progress.record(result)
    return sorted(unfinished, key=lambda p: p.path.name)


def _executor_failure_reason(exc: BaseException) -> str:
    """Return a one-line reason for a pair whose future raised outside ``run_pair``."""
    if isinstance(exc, CancelledError):
        return ("cancelled before it finished: the executor was shut down (with Dask: the cluster closed "
                "or the client lost its scheduler connection)")
    if type(exc).__name__ == "KilledWorker":
        # Dask's first sentence names the task and the number of workers tried; the rest is general advice.
        first_sentence = str(exc).strip().split(". ", 1)[0]
        return (f"Dask worker process died while running this pair (KilledWorker: {first_sentence}); "
                "the worker's log says why, often an out-of-memory kill")
    return _one_line_reason(exc)


def _crash_result(pair_file: PairFile, job: str) -> PairResult:
    logger.error("%s %s: its worker process was terminated abruptly (file %s)", pair_file.pair_year, job,
                 pair_file.path, extra={FILE_ONLY: True})
    return PairResult(pair_file.pair_year, job, False, 0.0,
                      "worker process crashed (terminated abruptly: segfault, out-of-memory kill or os._exit)")


def run_vast_mode(files: Sequence[PairFile | str | Path], job: str, output_dir: str | Path, config: Config,
                  parallel_pairs: int, workers_per_pair: int, force_rerun: bool = False,
                  executor: Executor | None = None, stream: TextIO = sys.stdout, *,
                  invalid: Sequence[InvalidFile] = (), job_function: JobFunction | None = None,
                  run_logs: RunLogs | None = None, synthetic: dict[str, bool] | None = None) -> VastSummary:
    """Run ``job`` on every pair, ``parallel_pairs`` at a time, and print a line as each ends.

    Parameters
    ----------
    files
        PairFiles from the folder scan, or paths; a bad name or a pair given twice fails.
    job
        ``"generate-base"`` or ``"search-light"``.
    executor
        Any ``concurrent.futures.Executor``, such as ``fxresearch.cluster.open_dask_executor``'s.
        By default a spawn-context process pool of ``parallel_pairs`` processes is made, and
        made again after a worker crash. A future that raises fails its own pair only. A
        caller's executor that breaks (``BrokenExecutor``) fails every pair it had not finished.
    invalid
        Files the scan rejected; each is counted as a failed pair.
    job_function
        The per-pair function ``(path, output_dir, config, force_rerun, workers) -> dict``;
        defaults to the job's function in ``JOBS``. It must be importable by name
        (a module-level function) to reach a spawned process.
    synthetic
        Pair-year -> True for inputs marked synthetic, so a failed pair is marked too.

    Returns
    -------
    VastSummary
        Every pair's result (invalid files first), in the order they ended.
    """
    if job_function is None:
        if job not in JOBS:
            raise ValueError(f"Unknown job {job!r}; expected one of {', '.join(JOBS)}")
        job_function = JOBS[job]
    started = time.perf_counter()
    output_dir = Path(output_dir)
    ledger_path = run_logs.ledger_path if run_logs else None
    summary = VastSummary(job)

    pair_files, rejected = _resolve_files(files, invalid)
    for bad in rejected:
        summary.results.append(PairResult(bad.path.name, job, False, 0.0, bad.reason))
        _append_ledger(ledger_path, "end", bad.path.name, job, False, 0.0, bad.reason)
    progress = _Progress(summary, len(pair_files), stream, run_logs, synthetic or {})

    def submit_to(pool: Executor) -> Callable[[PairFile], Future]:
        return lambda p: pool.submit(run_pair, job_function, job, p.path, output_dir, config,
                                     force_rerun, workers_per_pair, run_logs)

    pending = list(pair_files)
    while pending:
        pool = executor or _new_pool(parallel_pairs, workers_per_pair)
        offset = _ledger_size(ledger_path)
        try:
            unfinished = _run_batch(pool, pending, submit_to(pool), progress)
        finally:
            if executor is None:
                pool.shutdown(wait=True, cancel_futures=True)
        if not unfinished:
            break
        logger.warning("A worker process died; %d unfinished pairs: %s", len(unfinished),
                       ", ".join(p.pair_year for p in unfinished))

        if executor is not None:
            # NOTE: a caller's executor cannot be rebuilt here, so its unfinished pairs fail.
            for pair_file in unfinished:
                progress.record(_crash_result(pair_file, job))
            break

        # The pairs that had started may have crashed the pool; the others did not run yet.
        started_pairs = _pairs_started_since(ledger_path, offset)
        suspects = [p for p in unfinished if started_pairs is None or p.pair_year in started_pairs]
        if not suspects:
            # The pool died before any pair started (e.g. in the initializer): suspect them all.
            suspects = unfinished
        pending = [p for p in unfinished if p not in suspects]
        if len(suspects) == 1:
            progress.record(_crash_result(suspects[0], job))
            continue

        # Several pairs were running: rerun each alone so that only the one that crashes fails.
        for suspect in suspects:
            solo = _new_pool(1, workers_per_pair)
            try:
                if _run_batch(solo, [suspect], submit_to(solo), progress):
                    progress.record(_crash_result(suspect, job))
            finally:
                solo.shutdown(wait=True, cancel_futures=True)

    summary.seconds = time.perf_counter() - started
    logger.info("%s run finished: %d pairs, %d failed, %.1fs", job, summary.total, summary.failed, summary.seconds)
    return summary


def run_single_pair(path: str | Path, job: str, output_dir: str | Path, config: Config, force_rerun: bool,
                    workers: int, run_logs: RunLogs | None = None, stream: TextIO = sys.stdout) -> VastSummary:
    """Run one pair in this process, printing the same line as a VAST run with one pair."""
    if job not in JOBS:
        raise ValueError(f"Unknown job {job!r}; expected one of {', '.join(JOBS)}")
    summary = VastSummary(job)
    synthetic = read_tick_file_info(path).synthetic
    progress = _Progress(summary, 1, stream, run_logs, {_pair_year_of(Path(path)): synthetic})
    result = run_pair(JOBS[job], job, path, output_dir, config, force_rerun, workers, run_logs)
    progress.record(result)
    summary.seconds = result.seconds
    return summary


def print_summary(summary: VastSummary, run_logs: RunLogs | None = None, stream: TextIO = sys.stdout) -> None:
    """Print the totals (``Failed: N`` exactly in that form), the failed pairs and the run files."""
    lines = [
        "-" * 72,
        f"Summary: {summary.job}",
        f"  Total pairs: {summary.total}",
        f"  Successful: {summary.successful}",
        f"  Failed: {summary.failed}",
        f"  Total time: {summary.seconds:.1f}s",
    ]
    failed = [r for r in summary.results if not r.ok]
    if failed:
        lines.append("  Failed pairs:")
        lines.extend(f"    {r.pair_year}: {r.message}" for r in failed)
    synthetic = sum(r.synthetic for r in summary.results)
    if synthetic:
        lines.append(f"  Results of {synthetic} of {summary.total} pairs are on SYNTHETIC data, not market data.")
    if run_logs is not None and run_logs.log_path is not None:
        lines.append(f"  Log: {run_logs.log_path}")
        lines.append(f"  Ledger: {run_logs.ledger_path}")
    stream.write("\n".join(lines) + "\n")
    stream.flush()

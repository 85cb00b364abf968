"""Machine resources and the run plan: how many pairs run at once and with how many threads.

A VAST run places ``parallel_pairs`` pair processes side by side, each with
``workers_per_pair`` threads (numba, BLAS, Arrow), so that ``parallel_pairs *
workers_per_pair`` never exceeds the usable cores. Usable cores respect the process's CPU
affinity and a cgroup CPU quota, as containers and batch schedulers set them. Memory can
lower ``parallel_pairs`` further: each pair's peak memory is estimated from its tick count.

This module imports no numpy, numba or pyarrow at import time, so a spawned pair process
can set its thread limits before those libraries start their thread pools.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

logger = logging.getLogger(__name__)

GB = 1024 ** 3

# Cap on pairs run at once, so that many pairs reading and writing parquet do not swamp
# the disk. NOTE: a judgment, not a measured limit.
MAX_PARALLEL_PAIRS = 30
# Threads per pair beyond this gain little: most stages are per-timeframe or per-strategy loops.
MAX_WORKERS_PER_PAIR = 4
# Cores given to each pair when the plan is recommended, before the caps above.
CORES_PER_PAIR = 4

# Built-in estimate of a pair job's peak memory per input tick, used until a run in the
# output folder has measured it: the tick arrays, bar tables, labels and the pandas copies
# between them. Measured peaks on a 14.6-million-tick synthetic year with the default
# configuration: 117 bytes per tick for generate-base and 188 for search-light.
BYTES_PER_TICK_ESTIMATE = 200
# Built-in estimate of a pair process's memory before its ticks: Python, numpy, pandas,
# pyarrow, numba and the job modules. NOTE: a rounded-up judgment; runs replace it with the
# smallest peak they measure.
PROCESS_BYTES_ESTIMATE = 300 * 1024 ** 2
# Share of available RAM the plan may fill, leaving room for the OS and the page cache.
MEMORY_HEADROOM = 0.8

# Built-in throughput estimates for the banner's run time, used until a run in the output
# folder has measured them: input ticks per second per worker thread of a pair job. On a
# 14.6-million-tick synthetic year in one 2-thread pair process, generate-base ran at about
# 670,000 ticks/s and search-light (2,646 strategies, patterns and regimes refitted per
# walk-forward block) at about 240,000; the figures below are those halved per thread and
# rounded down. Small files are dominated by the fixed costs below.
TICKS_PER_SECOND_ESTIMATE = {"generate-base": 300_000, "search-light": 100_000}
# Fixed seconds of each pair job, and of starting its process (spawn, imports, numba cache load).
PAIR_SECONDS_ESTIMATE = 0.5
PROCESS_STARTUP_SECONDS_ESTIMATE = 2.0

# Stored measurements of earlier runs: output/runs/measurements.json.
MEASUREMENTS_NAME = "measurements.json"
# Pairs below this many ticks are dominated by fixed costs, so they set no per-tick rate.
MIN_TICKS_FOR_RATES = 100_000
# Measurements kept per job, newest last.
MAX_MEASUREMENTS = 50
# Environment variable through which a pair process learns its memory budget in bytes.
# The labels stage sizes its grid chunks from it (``chunk_rows_for_budget``).
PAIR_MEMORY_ENV = "FXRESEARCH_PAIR_MEMORY_BYTES"
# Share of a pair's memory budget one chunk of a chunked stage may take; the ticks, bars
# and the chunk being written hold the rest.
CHUNK_BUDGET_SHARE = 0.25


@dataclass(frozen=True)
class Resources:
    """Usable cores and memory of this process, with the recommended split into pairs and threads."""

    cores: int
    # Cores the process may run on (CPU affinity), before the cgroup quota.
    affinity_cores: int
    # CPU quota from the cgroup in cores (e.g. 1.5), or None when there is none.
    cpu_quota: float | None
    ram_total_gb: float
    ram_available_gb: float
    # True when a cgroup memory limit is lower than the machine's RAM.
    memory_limited_by_cgroup: bool
    recommended_parallel_pairs: int
    recommended_workers_per_pair: int


@dataclass(frozen=True)
class WorkerPlan:
    """Pairs run at once and threads per pair, with the reason the pair count is what it is."""

    parallel_pairs: int
    workers_per_pair: int
    # One of "cores", "pairs" (fewer pairs than slots), "memory" or "requested".
    limited_by: str
    # Requests that were lowered to fit the cores, in words, for the banner.
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class TickFileInfo:
    """Row count and synthetic marker of one tick file, read from its parquet footer only."""

    path: Path
    rows: int
    synthetic: bool
    # Why the footer could not be read, or None. The pair job then fails with the full error.
    error: str | None = None


def plan_workers(cores: int, n_pairs: int, parallel_pairs: int | None = None,
                 max_workers: int | None = None, max_pairs_by_memory: int | None = None) -> WorkerPlan:
    """Split ``cores`` into pairs run at once and threads per pair.

    Without requests, ``parallel_pairs = min(30, max(1, cores // 4))`` and
    ``workers_per_pair = max(1, min(4, cores // parallel_pairs))``, so 128 cores give 30 x 4
    and 2 cores give 1 x 2. Requested values are honoured up to the cores:
    ``parallel_pairs * workers_per_pair <= cores`` holds for every input.

    Parameters
    ----------
    cores
        Usable cores, at least 1.
    n_pairs
        Pairs to run; more slots than pairs would sit idle.
    parallel_pairs, max_workers
        The user's ``--parallel-pairs`` and ``--max-workers``, or None for the recommendation.
    max_pairs_by_memory
        Pairs that fit in memory at once, or None when memory is not a limit.
    """
    if cores < 1:
        raise ValueError(f"cores must be at least 1, got {cores}")
    notes: list[str] = []

    if parallel_pairs is None:
        pairs = min(MAX_PARALLEL_PAIRS, max(1, cores // CORES_PER_PAIR))
        limited_by = "cores"
    else:
        if parallel_pairs < 1:
            raise ValueError(f"parallel_pairs must be at least 1, got {parallel_pairs}")
        pairs = min(parallel_pairs, cores)
        limited_by = "requested"
        if pairs < parallel_pairs:
            notes.append(f"--parallel-pairs {parallel_pairs} lowered to {pairs}, the usable cores")
            limited_by = "cores"

    if n_pairs >= 1 and n_pairs < pairs:
        pairs = n_pairs
        limited_by = "pairs"
    if max_pairs_by_memory is not None and max_pairs_by_memory < pairs:
        pairs = max(1, max_pairs_by_memory)
        limited_by = "memory"

    cores_each = max(1, cores // pairs)
    if max_workers is None:
        workers = min(MAX_WORKERS_PER_PAIR, cores_each)
    else:
        if max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, got {max_workers}")
        workers = min(max_workers, cores_each)
        if workers < max_workers:
            notes.append(f"--max-workers {max_workers} lowered to {workers} so that "
                         f"{pairs} pairs x {workers} workers fit in {cores} cores")
    return WorkerPlan(pairs, workers, limited_by, tuple(notes))


def max_pairs_for_memory(available_bytes: float, bytes_per_pair: float) -> int | None:
    """Return how many pairs of ``bytes_per_pair`` fit in the headroom of ``available_bytes``.

    Returns None when the per-pair estimate is zero (no tick counts known).
    """
    if bytes_per_pair <= 0:
        return None
    return max(1, int(available_bytes * MEMORY_HEADROOM // bytes_per_pair))


def estimate_pair_bytes(rows: int) -> int:
    """Return the built-in estimate of one pair job's peak memory in bytes, ticks only.

    ``JobEstimate.pair_bytes`` adds the process's fixed memory and uses measured rates.
    """
    return rows * BYTES_PER_TICK_ESTIMATE


def estimate_run_seconds(rows: Iterable[int], job: str, parallel_pairs: int, workers_per_pair: int = 1,
                         estimate: "JobEstimate | None" = None) -> float:
    """Return an estimate of a run's wall time from its tick counts.

    Pairs start largest first, each on the slot that frees up first, as the scheduler runs
    them; every pair pays its process start-up and fixed cost.
    """
    estimate = estimate or JobEstimate.builtin(job)
    slots = [0.0] * max(1, parallel_pairs)
    for count in sorted(rows, reverse=True):
        index = slots.index(min(slots))
        slots[index] += estimate.pair_seconds(count, workers_per_pair)
    return max(slots)


@dataclass(frozen=True)
class JobEstimate:
    """Per-tick memory and throughput of one job, measured in this output folder or built in."""

    job: str
    bytes_per_tick: float
    process_bytes: float
    ticks_per_second_per_worker: float
    # Source of the figures in words, for the banner.
    memory_source: str
    throughput_source: str

    @classmethod
    def builtin(cls, job: str) -> "JobEstimate":
        throughput = TICKS_PER_SECOND_ESTIMATE.get(job, min(TICKS_PER_SECOND_ESTIMATE.values()))
        return cls(job, BYTES_PER_TICK_ESTIMATE, PROCESS_BYTES_ESTIMATE, throughput,
                   "built-in default", "built-in default")

    def pair_bytes(self, rows: int) -> int:
        """Return the estimated peak memory of one pair process in bytes."""
        return int(self.process_bytes + rows * self.bytes_per_tick)

    def pair_seconds(self, rows: int, workers: int) -> float:
        """Return the estimated wall time of one pair, its process start-up included."""
        return (PROCESS_STARTUP_SECONDS_ESTIMATE + PAIR_SECONDS_ESTIMATE
                + rows / (self.ticks_per_second_per_worker * max(1, workers)))


class Measurements:
    """Peak memory and run time of earlier pair jobs, stored in ``output/runs/measurements.json``.

    Each job keeps its last ``MAX_MEASUREMENTS`` samples of ``rows``, ``seconds`` (the job,
    without process start-up), ``workers`` and ``peak_bytes`` (the pair process's maximum
    resident memory). Only jobs that built their outputs are recorded, because a reused
    result measures no cost.
    """

    def __init__(self, document: dict | None = None) -> None:
        self.document: dict = document if isinstance(document, dict) else {}
        self.document.setdefault("jobs", {})

    @classmethod
    def load(cls, output_dir: str | Path) -> "Measurements":
        """Read the stored measurements, or start empty when there are none or they are unreadable."""
        import json

        path = Path(output_dir) / "runs" / MEASUREMENTS_NAME
        try:
            return cls(json.loads(path.read_text()))
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError) as exc:
            logger.warning("Ignoring unreadable measurements %s (%s); built-in estimates are used", path, exc)
            return cls()

    def save(self, output_dir: str | Path) -> None:
        """Write the measurements atomically. An OS error is logged as a warning, not raised."""
        from fxresearch.artifacts import write_json_atomic

        try:
            write_json_atomic(Path(output_dir) / "runs" / MEASUREMENTS_NAME, self.document)
        except OSError as exc:
            logger.warning("Cannot store run measurements in %s: %s", output_dir, exc)

    def record(self, job: str, rows: int, seconds: float, workers: int, peak_bytes: int | None) -> None:
        """Add one finished pair job's sample."""
        samples = self.document["jobs"].setdefault(job, [])
        samples.append({"rows": int(rows), "seconds": round(float(seconds), 3), "workers": int(workers),
                        "peak_bytes": None if peak_bytes is None else int(peak_bytes)})
        del samples[:-MAX_MEASUREMENTS]

    def estimate(self, job: str) -> JobEstimate:
        """Return the job's estimate: measured figures where samples allow, built-in ones elsewhere.

        The fixed process memory is the smallest measured peak. The per-tick memory is the
        largest of the large pairs' ``(peak - fixed) / rows``, so the estimate leans high.
        The throughput is the median over large pairs of ticks per second per worker.
        """
        builtin = JobEstimate.builtin(job)
        samples = self.document["jobs"].get(job, [])
        peaks = [s for s in samples if s.get("peak_bytes")]
        large = [s for s in samples if s.get("rows", 0) >= MIN_TICKS_FOR_RATES and s.get("seconds", 0) > 0]

        process_bytes, memory_source = builtin.process_bytes, builtin.memory_source
        bytes_per_tick = builtin.bytes_per_tick
        if peaks:
            process_bytes = min(s["peak_bytes"] for s in peaks)
            large_peaks = [s for s in peaks if s["rows"] >= MIN_TICKS_FOR_RATES]
            if large_peaks:
                bytes_per_tick = max((s["peak_bytes"] - process_bytes) / s["rows"] for s in large_peaks)
                memory_source = f"measured on {len(large_peaks)} earlier pairs"
            else:
                memory_source = (f"process memory measured on {len(peaks)} earlier pairs, "
                                 f"{BYTES_PER_TICK_ESTIMATE} bytes per tick built in")

        throughput, throughput_source = builtin.ticks_per_second_per_worker, builtin.throughput_source
        if large:
            rates = sorted(s["rows"] / max(s["seconds"] - PAIR_SECONDS_ESTIMATE, 1e-3) / max(1, s["workers"])
                           for s in large)
            throughput = rates[len(rates) // 2]
            throughput_source = f"measured on {len(large)} earlier pairs"
        return JobEstimate(job, bytes_per_tick, process_bytes, throughput, memory_source, throughput_source)


def pair_memory_budget() -> int | None:
    """Return this pair process's memory budget in bytes, set by the VAST run, or None."""
    text = os.environ.get(PAIR_MEMORY_ENV, "")
    return int(text) if text.isdigit() and int(text) > 0 else None


def chunk_rows_for_budget(configured_rows: int, bytes_per_row: int, budget_bytes: int | None = None) -> int:
    """Return the rows per chunk of a chunked stage: the configured cap, lowered to fit the budget.

    Parameters
    ----------
    configured_rows : int
        The stage's configured maximum rows per chunk.
    bytes_per_row : int
        Estimated peak bytes one row takes while its chunk is built and written.
    budget_bytes : int or None
        The pair's memory budget; None reads it from the environment of a VAST pair process,
        and without one (a single-pair run) the configured cap is returned.

    Returns
    -------
    int
        At least 1. A chunk takes at most ``CHUNK_BUDGET_SHARE`` of the budget.
    """
    if budget_bytes is None:
        budget_bytes = pair_memory_budget()
    if budget_bytes is None:
        return max(1, configured_rows)
    fitting = int(budget_bytes * CHUNK_BUDGET_SHARE) // max(1, bytes_per_row)
    return max(1, min(configured_rows, fitting))


def system_load() -> tuple[float, float]:
    """Return the 1-minute load average per usable core and the share of memory in use (percent)."""
    import psutil

    cores = max(1, _affinity_cores())
    return os.getloadavg()[0] / cores, float(psutil.virtual_memory().percent)


def read_tick_file_info(path: str | Path) -> TickFileInfo:
    """Read a tick file's row count and ``synthetic`` marker from its parquet footer.

    A file that cannot be read is returned with ``rows=0`` and the error. It is not raised
    here because the pair's own job reports it as that pair's failure.
    """
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        metadata = pq.ParquetFile(path).metadata
    except (OSError, ValueError) as exc:
        logger.info("Cannot read the parquet footer of %s: %s", path, exc)
        return TickFileInfo(path, 0, False, f"{type(exc).__name__}: {exc}")
    key_values = metadata.metadata or {}
    synthetic = key_values.get(b"synthetic", b"").decode(errors="replace").lower() == "true"
    return TickFileInfo(path, metadata.num_rows, synthetic)


def detect_resources(cpu_count: int | None = None, cgroup_root: str | Path = "/sys/fs/cgroup",
                     memory_total_bytes: int | None = None,
                     memory_available_bytes: int | None = None) -> Resources:
    """Detect usable cores and memory, honouring CPU affinity and cgroup v1/v2 limits.

    Parameters
    ----------
    cpu_count
        Cores to assume instead of detecting them (tests, or a scheduler's own allocation).
    cgroup_root
        Mount point of the cgroup file system; tests pass a folder of fake cgroup files.
    memory_total_bytes, memory_available_bytes
        Memory to assume instead of asking psutil.
    """
    cgroup_root = Path(cgroup_root)
    if cpu_count is None:
        affinity = _affinity_cores()
        quota = read_cgroup_cpu_quota(cgroup_root)
        cores = affinity if quota is None else max(1, min(affinity, math.floor(quota)))
    else:
        if cpu_count < 1:
            raise ValueError(f"cpu_count must be at least 1, got {cpu_count}")
        affinity, quota, cores = cpu_count, None, cpu_count

    if memory_total_bytes is None or memory_available_bytes is None:
        import psutil

        memory = psutil.virtual_memory()
        total = memory.total if memory_total_bytes is None else memory_total_bytes
        available = memory.available if memory_available_bytes is None else memory_available_bytes
    else:
        total, available = memory_total_bytes, memory_available_bytes

    limit, usage = read_cgroup_memory(cgroup_root)
    limited = limit is not None and limit < total
    if limit is not None and limited:
        total = limit
        available = min(available, max(0, limit - (usage or 0)))

    plan = plan_workers(cores, n_pairs=0)
    resources = Resources(
        cores=cores, affinity_cores=affinity, cpu_quota=quota,
        ram_total_gb=total / GB, ram_available_gb=available / GB, memory_limited_by_cgroup=limited,
        recommended_parallel_pairs=plan.parallel_pairs, recommended_workers_per_pair=plan.workers_per_pair,
    )
    logger.info("Resources: %s", resources)
    return resources


def _affinity_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS and Windows have no sched_getaffinity
        return os.cpu_count() or 1


def read_cgroup_cpu_quota(cgroup_root: str | Path = "/sys/fs/cgroup") -> float | None:
    """Return the cgroup CPU quota in cores, or None when there is no quota.

    Reads cgroup v2 ``cpu.max`` ("max 100000" or "150000 100000") first, then cgroup v1
    ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (quota -1 means none).
    """
    for folder in _cgroup_folders(Path(cgroup_root), v1_controller="cpu"):
        cpu_max = folder / "cpu.max"
        if cpu_max.is_file():
            fields = _read_text(cpu_max).split()
            if len(fields) == 2 and fields[0] != "max":
                return _quota_cores(fields[0], fields[1], cpu_max)
            return None
        quota_file, period_file = folder / "cpu.cfs_quota_us", folder / "cpu.cfs_period_us"
        if quota_file.is_file() and period_file.is_file():
            return _quota_cores(_read_text(quota_file), _read_text(period_file), quota_file)
    return None


def _quota_cores(quota: str, period: str, source: Path) -> float | None:
    try:
        quota_us, period_us = int(quota), int(period)
    except ValueError:
        logger.warning("Ignoring unreadable CPU quota %r/%r in %s", quota, period, source)
        return None
    if quota_us <= 0 or period_us <= 0:
        return None
    return quota_us / period_us


def read_cgroup_memory(cgroup_root: str | Path = "/sys/fs/cgroup") -> tuple[int | None, int | None]:
    """Return the cgroup memory limit and current usage in bytes; None where unset or absent.

    cgroup v2: ``memory.max`` and ``memory.current``. cgroup v1: ``memory.limit_in_bytes``
    and ``memory.usage_in_bytes``, where "no limit" is a huge number near 2**63.
    """
    for folder in _cgroup_folders(Path(cgroup_root), v1_controller="memory"):
        for limit_name, usage_name in (("memory.max", "memory.current"),
                                       ("memory.limit_in_bytes", "memory.usage_in_bytes")):
            limit_file = folder / limit_name
            if not limit_file.is_file():
                continue
            text = _read_text(limit_file)
            limit = int(text) if text.isdigit() else None
            if limit is not None and limit >= 2 ** 60:
                limit = None
            usage_text = _read_text(folder / usage_name)
            usage = int(usage_text) if usage_text.isdigit() else None
            return limit, usage
    return None, None


def _cgroup_folders(root: Path, v1_controller: str) -> list[Path]:
    """Return the folders that may hold this process's cgroup files, most specific first.

    Inside a container the cgroup namespace usually makes the process's own group the
    mount's root, so the root is always tried after the path from ``/proc/self/cgroup``.
    """
    own_v2, own_v1 = "", ""
    for line in _read_text(Path("/proc/self/cgroup")).splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, group = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            own_v2 = group.lstrip("/")
        elif v1_controller in controllers.split(","):
            own_v1 = group.lstrip("/")

    v1_mounts = [root / v1_controller, root / "cpu,cpuacct"] if v1_controller == "cpu" else [root / v1_controller]
    folders = []
    if own_v2:
        folders.append(root / own_v2)
    folders.append(root)
    for mount in v1_mounts:
        if own_v1:
            folders.append(mount / own_v1)
        folders.append(mount)
    return folders


def _read_text(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""

"""Dask cluster access for VAST mode: an executor whose pair jobs run on Dask workers.

``open_cluster("local")`` starts a ``LocalCluster`` of worker processes on this machine and
``open_cluster("tcp://host:8786")`` connects to a running scheduler. Both yield a
``concurrent.futures.Executor`` built on ``distributed.Client.get_executor`` and a
``DaskCluster`` with the cluster's size; ``vast_mode.run_vast_mode`` takes that executor
like its own process pool, so progress, manifests, ledger and resume work the same.

Each pair job runs in a Dask worker process. Inside it, the pair's stages use threads
(``--max-workers`` of them), because a Dask worker cannot start child processes. The
workers read the input and write the outputs themselves: on a cluster of several machines
both folders are on shared storage mounted at the same path, or fsspec URLs
(``s3://bucket/ticks``) that every worker can reach. The ledger and the run log stay on
the machine that runs the command: a worker announces each pair's start as a Dask event
(``START_TOPIC``) and its log records are forwarded to the client.

Dask settings the tool sets:

- ``distributed.scheduler.allowed-failures`` (local cluster: ``LOCAL_ALLOWED_FAILURES``):
  how many times the scheduler reruns a pair whose worker died before failing it with
  ``KilledWorker``. A remote scheduler reads its own setting.
- the worker memory limit (local cluster: available memory split between the workers);
  the memory-aware plan uses each worker's limit, read from ``Client.scheduler_info()``.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
import threading
from collections import deque
from concurrent.futures import CancelledError, Executor, Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

__all__ = [
    "CONNECT_TIMEOUT_SECONDS", "FORWARDED_LOGGERS", "INSTALL_HINT", "LOCAL_ALLOWED_FAILURES", "PAIR_RESOURCE",
    "START_TOPIC", "ClusterError", "DaskCluster", "WindowedExecutor", "announce_start", "describe_cluster",
    "import_distributed", "open_cluster", "open_dask_executor",
]

logger = logging.getLogger(__name__)

# Seconds to wait for the scheduler (and a local cluster's workers) before giving up.
CONNECT_TIMEOUT_SECONDS = 10.0
INSTALL_HINT = "pip install -r requirements-cluster.txt (or: pip install \"dask[distributed]>=2024.1\")"
# A worker resource name: when every worker declares it (``dask worker ... --resources pair=1``),
# each pair job takes one unit, so a worker with several threads runs one pair at a time.
PAIR_RESOURCE = "pair"
# Dask event topic on which a worker announces that a pair started; the client writes the ledger line.
START_TOPIC = "fxresearch-pair-start"
# Loggers whose records the workers send to the client's log file and console.
FORWARDED_LOGGERS = ("fxresearch", "vast_mode")
# Times a local cluster's scheduler reruns a pair whose worker died, before it fails the pair
# with KilledWorker. Dask's default is 3. A pair that kills every worker it runs on (a crash in
# native code, memory beyond the worker's limit) should fail sooner than that; 2 still lets a
# pair whose rerun landed on a worker that another pair took down finish.
LOCAL_ALLOWED_FAILURES = 2
# Share of the available memory that a local cluster's workers may use together.
LOCAL_MEMORY_SHARE = 0.8


class ClusterError(RuntimeError):
    """The Dask cluster cannot be used: ``distributed`` is missing or the scheduler is unreachable."""


@dataclass(frozen=True)
class DaskCluster:
    """Address, dashboard and size of the connected cluster, read from the scheduler at connect time."""

    address: str
    # Dashboard URL, or None for a local cluster without bokeh, which serves no dashboard pages.
    dashboard_link: str | None
    n_workers: int
    # Threads of the smallest worker, so a plan based on it fits every worker.
    threads_per_worker: int
    total_threads: int
    # True when every worker declares the PAIR_RESOURCE, so each worker runs one pair at a time.
    one_pair_per_worker: bool
    local: bool
    # Memory limit of the smallest worker in bytes, or None when a worker has no limit.
    memory_limit_bytes: int | None = None

    @property
    def description(self) -> str:
        """One line for the banner: where the cluster is, its dashboard, its size and memory."""
        where = f"local Dask cluster at {self.address}" if self.local else f"Dask scheduler {self.address}"
        dashboard = f", dashboard {self.dashboard_link}" if self.dashboard_link else ""
        threads = "1 thread" if self.threads_per_worker == 1 else f"{self.threads_per_worker} threads"
        memory = ("no memory limit" if self.memory_limit_bytes is None
                  else f"{self.memory_limit_bytes / 1024 ** 3:.1f} GB memory limit")
        return f"{where}{dashboard}: {self.n_workers} workers x {threads}, {memory} each"


def describe_cluster(scheduler_info: dict[str, Any], address: str, dashboard_link: str | None,
                     local: bool) -> DaskCluster:
    """Build a DaskCluster from ``Client.scheduler_info()`` (its ``"workers"`` mapping)."""
    workers = list(scheduler_info.get("workers", {}).values())
    threads = [int(worker.get("nthreads", 1)) for worker in workers]
    one_pair = bool(workers) and all(PAIR_RESOURCE in (worker.get("resources") or {}) for worker in workers)
    limits = [int(worker.get("memory_limit") or 0) for worker in workers]
    memory_limit = min(limits) if limits and all(limits) else None
    return DaskCluster(address, dashboard_link, len(workers), min(threads, default=1), sum(threads),
                       one_pair, local, memory_limit)


def import_distributed() -> Any:
    """Return the ``distributed`` module, or raise ClusterError saying how to install it."""
    try:
        import distributed
    except ImportError as exc:
        raise ClusterError(f"--cluster needs Dask's distributed package, which is not installed ({exc}). "
                           f"Install it with: {INSTALL_HINT}") from None
    return distributed


def announce_start(message: dict[str, Any]) -> bool:
    """On a Dask worker, send a pair's start to the client as a ``START_TOPIC`` event.

    Returns False outside a Dask worker (nothing is sent).
    """
    try:
        from distributed import get_worker
        worker = get_worker()
    except (ImportError, ValueError):
        return False
    worker.log_event(START_TOPIC, message)
    return True


def _write_start_line(event: tuple[float, dict[str, Any]]) -> None:
    """Client side of ``announce_start``: append the pair's start line to the local ledger."""
    from fxresearch import ledger as run_ledger

    _, message = event
    fields = dict(message)
    ledger_path = fields.pop("ledger", None)
    pair, job = fields.pop("pair", "?"), fields.pop("job", "?")
    if ledger_path:
        run_ledger.append_event(Path(ledger_path), "start", pair, job, run_ledger.STARTED, **fields)


def _start_local_cluster(distributed: Any, local_workers: int, processes: bool) -> Any:
    """Start ``local_workers`` single-threaded workers listening on 127.0.0.1 only."""
    if local_workers < 1:
        raise ClusterError(f"--cluster-workers must be at least 1, got {local_workers}")
    import dask

    from fxresearch.resources import detect_resources

    available = detect_resources().ram_available_gb * 1024 ** 3
    memory_limit = int(available * LOCAL_MEMORY_SHARE / local_workers)
    try:
        with dask.config.set({"distributed.scheduler.allowed-failures": LOCAL_ALLOWED_FAILURES}):
            # dashboard_address ":0" takes a free port, so another program on port 8787 does not clash.
            # Worker processes listen on 127.0.0.1 only; workers in this process talk over inproc://.
            where = {"host": "127.0.0.1"} if processes else {}
            return distributed.LocalCluster(n_workers=local_workers, threads_per_worker=1, processes=processes,
                                            dashboard_address=":0", memory_limit=memory_limit, **where)
    except (OSError, RuntimeError, TimeoutError) as exc:
        raise ClusterError(f"Cannot start a local Dask cluster with {local_workers} workers ({exc}). "
                           f"Try a smaller --cluster-workers, or run without --cluster") from None


@contextlib.contextmanager
def open_cluster(target: str, local_workers: int = 2, connect_timeout: float | None = None, *,
                 processes: bool = True) -> Iterator[tuple[Executor, DaskCluster]]:
    """Start a local cluster (``target == "local"``) or connect to a scheduler address.

    ``local_workers`` is the size of a local cluster (single-threaded worker processes, or
    threads in this process with ``processes=False``, where ``memory://`` URLs are shared).
    See ``open_dask_executor`` for the rest.
    """
    if target == "local":
        with open_dask_executor(local_workers=local_workers, connect_timeout=connect_timeout,
                                processes=processes) as opened:
            yield opened
    else:
        with open_dask_executor(address=target, connect_timeout=connect_timeout) as opened:
            yield opened


@contextlib.contextmanager
def open_dask_executor(address: str | None = None, local_workers: int | None = None,
                       connect_timeout: float | None = None, *,
                       processes: bool = True) -> Iterator[tuple[Executor, DaskCluster]]:
    """Connect to a Dask scheduler, or start a local cluster, and yield ``(executor, cluster)``.

    The executor is ``Client.get_executor(pure=False)``: a ``concurrent.futures.Executor``
    whose ``submit`` runs the function on a worker and whose futures carry the function's
    result or exception. ``pure=False`` gives every submission its own task, so two
    submissions with equal arguments both run. When every worker declares the
    ``PAIR_RESOURCE``, each task takes one unit of it. The client writes the ledger's start
    lines that workers announce (``START_TOPIC``) and receives the workers' log records.
    On exit the client closes, and so does a cluster started here; a remote scheduler and
    its workers keep running.

    Parameters
    ----------
    address
        Scheduler address such as ``tcp://10.0.0.5:8786``.
    local_workers
        Start a ``distributed.LocalCluster`` with this many single-threaded workers on this
        machine. Exactly one of ``address`` and ``local_workers`` is given.
    connect_timeout
        Seconds to wait for the scheduler; ``CONNECT_TIMEOUT_SECONDS`` by default.
    processes
        With ``local_workers``: worker processes (True) or threads of this process (False).

    Raises
    ------
    ClusterError
        ``distributed`` is not installed, the scheduler cannot be reached within the
        timeout, or it has no workers. The message names the address and the fix.
    """
    if (address is None) == (local_workers is None):
        raise ValueError("Pass exactly one of address (a running scheduler) and local_workers")
    timeout = CONNECT_TIMEOUT_SECONDS if connect_timeout is None else connect_timeout
    distributed = import_distributed()

    with contextlib.ExitStack() as stack:
        stack.enter_context(_quiet_distributed_logs())
        if local_workers is not None:
            cluster = stack.enter_context(_start_local_cluster(distributed, local_workers, processes))
            target: Any = cluster
            shown_address = cluster.scheduler_address
        else:
            target = shown_address = address
        try:
            client = distributed.Client(target, timeout=timeout, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as exc:
            raise ClusterError(f"Cannot connect to the Dask scheduler at {shown_address} within {timeout:g} s "
                               f"({exc}). Check the address and that the scheduler is running and reachable "
                               f"from this machine") from None
        stack.enter_context(client)

        if local_workers is not None:
            try:
                client.wait_for_workers(local_workers, timeout=timeout)
            except TimeoutError:
                raise ClusterError(f"The local Dask cluster started fewer than {local_workers} workers within "
                                   f"{timeout:g} s. Try a smaller --cluster-workers") from None
        info = client.scheduler_info()
        if not info.get("workers"):
            raise ClusterError(f"The Dask scheduler at {shown_address} has no workers. Start workers with "
                               f"`dask worker {shown_address}` and run again")
        cluster_info = describe_cluster(info, shown_address, _dashboard_link(client, local_workers is not None),
                                        local=local_workers is not None)

        client.subscribe_topic(START_TOPIC, _write_start_line)
        if processes:
            # Workers in this process already log through this process's handlers.
            for name in FORWARDED_LOGGERS:
                client.forward_logging(name, level=logging.INFO)

        executor_options: dict[str, Any] = {"pure": False}
        if cluster_info.one_pair_per_worker:
            executor_options["resources"] = {PAIR_RESOURCE: 1}
        elif cluster_info.threads_per_worker > 1 or cluster_info.total_threads > cluster_info.n_workers:
            logger.warning("Dask workers at %s have several threads and do not declare the %r resource, so one "
                           "worker may run as many pairs at once as it has threads. Start workers with "
                           "`dask worker %s --resources %s=1` to run one pair per worker",
                           shown_address, PAIR_RESOURCE, shown_address, PAIR_RESOURCE)
        executor = client.get_executor(**executor_options)
        logger.info("Connected to %s", cluster_info.description)
        try:
            yield executor, cluster_info
        finally:
            # Cancel what is still queued, e.g. after Ctrl-C, so the client closes at once.
            executor.shutdown(wait=False)
            client.unsubscribe_topic(START_TOPIC)
            logger.info("Closing the Dask client for %s", shown_address)


class WindowedExecutor(Executor):
    """Pass at most ``limit`` calls at once to an inner executor and queue the rest here.

    On Dask this is the memory-aware cap: a worker's pairs must fit its memory limit,
    which the scheduler does not know about. A call counts as running from the moment it
    is passed on, so progress lines show the pairs on the cluster as running.
    """

    def __init__(self, inner: Executor, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        self.inner, self.limit = inner, limit
        self._queue: deque[tuple[Future, Callable[..., Any], tuple, dict]] = deque()
        self._in_flight = 0
        self._lock = threading.Lock()
        self._shutdown = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        """Queue ``fn(*args, **kwargs)``; it goes to the inner executor when a slot is free."""
        future: Future = Future()
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot submit after shutdown")
            self._queue.append((future, fn, args, kwargs))
        self._pump()
        return future

    def _pump(self) -> None:
        while True:
            with self._lock:
                if self._in_flight >= self.limit or not self._queue:
                    return
                future, fn, args, kwargs = self._queue.popleft()
                if not future.set_running_or_notify_cancel():
                    continue
                self._in_flight += 1
            try:
                inner_future = self.inner.submit(fn, *args, **kwargs)
            except Exception as exc:  # e.g. the client closed: this call fails, the next may not
                future.set_exception(exc)
                self._release()
                continue
            inner_future.add_done_callback(functools.partial(self._settle, future))

    def _settle(self, outer: Future, done: Future) -> None:
        if done.cancelled():
            outer.set_exception(CancelledError())
        elif done.exception() is not None:
            outer.set_exception(done.exception())
        else:
            outer.set_result(done.result())
        self._release()

    def _release(self) -> None:
        with self._lock:
            self._in_flight -= 1
        self._pump()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking calls; with ``cancel_futures``, cancel the queued ones and those on the cluster."""
        with self._lock:
            self._shutdown = True
            if cancel_futures:
                while self._queue:
                    self._queue.popleft()[0].cancel()
        # Dask's executor takes no cancel_futures: shutdown(wait=False) cancels its futures.
        self.inner.shutdown(wait=wait and not cancel_futures)


@contextlib.contextmanager
def _quiet_distributed_logs() -> Iterator[None]:
    """Keep distributed's INFO records (connections, shutdown steps) out of the run log.

    A local cluster's scheduler runs in this process, and its routine shutdown logs a
    closed-connection traceback at INFO. Warnings and errors still get through.
    """
    distributed_logger = logging.getLogger("distributed")
    previous = distributed_logger.level
    distributed_logger.setLevel(max(previous, logging.WARNING))
    try:
        yield
    finally:
        distributed_logger.setLevel(previous)


def _dashboard_link(client: Any, local: bool) -> str | None:
    """Return the dashboard URL, or None when a local scheduler cannot serve its pages.

    The pages need bokeh on the scheduler's machine. The scheduler opens its HTTP port
    even without it, so for a remote scheduler the link is shown and may lead nowhere.
    """
    if local and importlib.util.find_spec("bokeh") is None:
        return None
    return client.dashboard_link

"""Dask cluster access for VAST mode: an executor whose pair jobs run on Dask workers.

``open_dask_executor`` connects to a running scheduler, or starts a ``LocalCluster`` on this
machine, and yields a ``concurrent.futures.Executor`` from ``distributed.Client.get_executor``
with the cluster's size. ``vast_mode.run_vast_mode`` takes that executor like any other.

Each pair job runs in a Dask worker process and writes its artifacts, log lines and ledger
lines to the output folder itself. On a cluster of several machines, the input and output
folders must therefore be on a filesystem that every worker mounts at the same path, and each
worker needs the same Python packages and this project on its ``PYTHONPATH``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Iterator

__all__ = [
    "CONNECT_TIMEOUT_SECONDS", "INSTALL_HINT", "PAIR_RESOURCE", "ClusterError", "DaskCluster",
    "describe_cluster", "open_dask_executor",
]

logger = logging.getLogger(__name__)

# Seconds to wait for the scheduler (and a local cluster's workers) before giving up.
CONNECT_TIMEOUT_SECONDS = 10.0
INSTALL_HINT = 'pip install "distributed>=2024.1"'
# A worker resource name: when every worker declares it (``dask worker ... --resources pair=1``),
# each pair job takes one unit, so a worker with several threads runs one pair at a time.
PAIR_RESOURCE = "pair"


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

    @property
    def description(self) -> str:
        """One line for the banner: where the cluster is, its dashboard and its size."""
        where = f"local Dask cluster at {self.address}" if self.local else f"Dask scheduler {self.address}"
        dashboard = f", dashboard {self.dashboard_link}" if self.dashboard_link else ""
        threads = "1 thread" if self.threads_per_worker == 1 else f"{self.threads_per_worker} threads"
        return f"{where}{dashboard}: {self.n_workers} workers x {threads}"


def describe_cluster(scheduler_info: dict[str, Any], address: str, dashboard_link: str | None,
                     local: bool) -> DaskCluster:
    """Build a DaskCluster from ``Client.scheduler_info()`` (its ``"workers"`` mapping)."""
    workers = list(scheduler_info.get("workers", {}).values())
    threads = [int(worker.get("nthreads", 1)) for worker in workers]
    one_pair = bool(workers) and all(PAIR_RESOURCE in (worker.get("resources") or {}) for worker in workers)
    return DaskCluster(address, dashboard_link, len(workers), min(threads, default=1), sum(threads),
                       one_pair, local)


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:
        raise ClusterError(f"Running on Dask needs the distributed package, which is not installed "
                           f"({exc}). Install it with: {INSTALL_HINT}") from None
    return distributed


# Times a local cluster's scheduler reruns a pair whose worker died, before it fails the pair
# with KilledWorker. Dask's default is 3, but single-threaded local workers run no other pair
# that a death could have interrupted, so one retry is enough to tell a crash from bad luck.
LOCAL_ALLOWED_FAILURES = 1


def _start_local_cluster(distributed: Any, local_workers: int) -> Any:
    """Start ``local_workers`` single-threaded worker processes listening on 127.0.0.1 only."""
    if local_workers < 1:
        raise ClusterError(f"--dask-local-workers must be at least 1, got {local_workers}")
    import dask

    try:
        with dask.config.set({"distributed.scheduler.allowed-failures": LOCAL_ALLOWED_FAILURES}):
            # dashboard_address ":0" takes a free port, so another program on port 8787 does not clash.
            return distributed.LocalCluster(n_workers=local_workers, threads_per_worker=1, processes=True,
                                            host="127.0.0.1", dashboard_address=":0")
    except (OSError, RuntimeError, TimeoutError) as exc:
        raise ClusterError(f"Cannot start a local Dask cluster with {local_workers} workers ({exc}). "
                           f"Try fewer --dask-local-workers or run without --dask-local-workers") from None


@contextlib.contextmanager
def open_dask_executor(address: str | None = None, local_workers: int | None = None,
                       connect_timeout: float | None = None) -> Iterator[tuple[Executor, DaskCluster]]:
    """Connect to a Dask scheduler, or start a local cluster, and yield ``(executor, cluster)``.

    The executor is ``Client.get_executor(pure=False)``: a ``concurrent.futures.Executor``
    whose ``submit`` runs the function on a worker and whose futures carry the function's
    result or exception. ``pure=False`` gives every submission its own task, so two
    submissions with equal arguments both run. When every worker declares the
    ``PAIR_RESOURCE``, each task takes one unit of it. On exit the client closes, and so
    does a cluster started here; a remote scheduler and its workers keep running.

    Parameters
    ----------
    address
        Scheduler address such as ``tcp://10.0.0.5:8786``.
    local_workers
        Start a ``distributed.LocalCluster`` with this many single-threaded worker processes
        on this machine. Exactly one of ``address`` and ``local_workers`` is given.
    connect_timeout
        Seconds to wait for the scheduler; ``CONNECT_TIMEOUT_SECONDS`` by default.

    Raises
    ------
    ClusterError
        ``distributed`` is not installed, the scheduler cannot be reached within the
        timeout, or it has no workers. The message names the address and the fix.
    """
    if (address is None) == (local_workers is None):
        raise ValueError("Pass exactly one of address (a running scheduler) and local_workers")
    timeout = CONNECT_TIMEOUT_SECONDS if connect_timeout is None else connect_timeout
    distributed = _import_distributed()

    with contextlib.ExitStack() as stack:
        stack.enter_context(_quiet_distributed_logs())
        if local_workers is not None:
            cluster = stack.enter_context(_start_local_cluster(distributed, local_workers))
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
                                   f"{timeout:g} s. Try fewer --dask-local-workers") from None
        info = client.scheduler_info()
        if not info.get("workers"):
            raise ClusterError(f"The Dask scheduler at {shown_address} has no workers. Start workers with "
                               f"`dask worker {shown_address}` and run again")
        cluster_info = describe_cluster(info, shown_address, _dashboard_link(client, local_workers is not None),
                                        local=local_workers is not None)

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
            logger.info("Closing the Dask client for %s", shown_address)


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

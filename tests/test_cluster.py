"""VAST mode on a Dask cluster: a LocalCluster on 127.0.0.1, the CLI options and their errors.

The fake pair jobs are module-level so that Dask workers, spawned with this process's
``sys.path``, import them by name.
"""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import main
import vast_mode
from fxresearch import cluster
from fxresearch.cluster import ClusterError, describe_cluster, open_dask_executor
from fxresearch.config import Config, SampleConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
HAS_DISTRIBUTED = importlib.util.find_spec("distributed") is not None
needs_distributed = pytest.mark.skipif(
    not HAS_DISTRIBUTED, reason='distributed is not installed (pip install "distributed>=2024.1")')
# A closed port on this machine: connecting to it is refused, so no packet leaves the host.
UNREACHABLE_SCHEDULER = "tcp://127.0.0.1:1"


# ----------------------------------------------------------------------------- fake pair jobs


def pid_job(path: Path, output_dir: Path, config: Config, force_rerun: bool, workers: int) -> dict:
    """Report the worker's process id and thread cap."""
    time.sleep(0.2)
    report = {"pid": os.getpid(), "workers": workers, "numba_env": os.environ.get("NUMBA_NUM_THREADS")}
    return {"message": json.dumps(report)}


def flaky_job(path: Path, output_dir: Path, config: Config, force_rerun: bool, workers: int) -> dict:
    """Raise for GBPUSD, kill the Dask worker process for USDJPY, succeed for the rest."""
    if path.name.startswith("GBPUSD"):
        raise ValueError("bid column has 3 NaN rows\nsecond line that must not reach the screen")
    if path.name.startswith("USDJPY"):
        os._exit(3)
    time.sleep(0.2)
    return {"message": "fake job done"}


def timed_job(path: Path, output_dir: Path, config: Config, force_rerun: bool, workers: int) -> dict:
    """Report when the job started and ended, in seconds since the epoch."""
    started = time.time()
    time.sleep(0.5)
    return {"message": json.dumps({"start": started, "end": time.time(), "workers": workers})}


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def local_dask():
    """One two-worker LocalCluster shared by the executor tests of this module."""
    if not HAS_DISTRIBUTED:
        pytest.skip('distributed is not installed (pip install "distributed>=2024.1")')
    with open_dask_executor(local_workers=2) as (executor, dask_cluster):
        yield executor, dask_cluster


@pytest.fixture
def restore_logging():
    """Remove the console handler that ``main.main`` installs, so it outlives no captured stream."""
    yield
    vast_mode.configure_run_logging(None)
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_fxresearch", False):
            root.removeHandler(handler)


def run_main_in_process(argv: list[str], capsys) -> tuple[int, str]:
    """Run ``main.main`` here and return its exit code and stderr (usage errors exit via SystemExit)."""
    try:
        code = main.main(argv)
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def fake_pair_paths(tmp_path: Path, symbols: tuple[str, ...]) -> list[Path]:
    # The fake jobs never open their file, so the paths need not exist.
    return [tmp_path / f"{symbol}_2024.parquet" for symbol in symbols]


# ----------------------------------------------------------------------------- the executor


@needs_distributed
def test_local_cluster_description(local_dask):
    _, dask_cluster = local_dask
    assert dask_cluster.n_workers == 2
    assert dask_cluster.threads_per_worker == 1
    assert dask_cluster.local
    assert dask_cluster.address.startswith("tcp://127.0.0.1:")
    assert dask_cluster.description.endswith("2 workers x 1 thread")


@needs_distributed
def test_local_cluster_runs_three_pairs(local_dask, tmp_path):
    executor, _ = local_dask
    run_logs = vast_mode.new_run_logs(tmp_path / "out")
    out = io.StringIO()
    summary = vast_mode.run_vast_mode(fake_pair_paths(tmp_path, ("EURUSD", "GBPUSD", "USDJPY")), "generate-base",
                                      tmp_path / "out", Config(), 2, 1, executor=executor, stream=out,
                                      job_function=pid_job, run_logs=run_logs)

    assert summary.total == 3
    assert summary.failed == 0
    reports = [json.loads(result.message) for result in summary.results]
    pids = {report["pid"] for report in reports}
    assert os.getpid() not in pids
    assert len(pids) <= 2
    assert {report["numba_env"] for report in reports} == {"1"}
    assert sorted(result.pair_year for result in summary.results) == ["EURUSD_2024", "GBPUSD_2024", "USDJPY_2024"]
    assert out.getvalue().count("generate-base complete") == 3

    # The workers wrote the ledger's start lines themselves.
    events = [json.loads(line) for line in run_logs.ledger_path.read_text().splitlines()]
    assert sorted(e["pair"] for e in events if e["event"] == "start") == ["EURUSD_2024", "GBPUSD_2024", "USDJPY_2024"]
    assert sum(e["event"] == "end" for e in events) == 3


@needs_distributed
def test_local_cluster_isolates_failing_pairs(local_dask, tmp_path):
    executor, _ = local_dask
    out = io.StringIO()
    summary = vast_mode.run_vast_mode(fake_pair_paths(tmp_path, ("EURUSD", "GBPUSD", "USDJPY", "AUDUSD")),
                                      "generate-base", tmp_path / "out", Config(), 2, 1, executor=executor,
                                      stream=out, job_function=flaky_job)

    by_pair = {result.pair_year: result for result in summary.results}
    assert summary.total == 4
    assert summary.failed == 2
    assert by_pair["EURUSD_2024"].ok
    assert by_pair["AUDUSD_2024"].ok
    assert by_pair["GBPUSD_2024"].message == "ValueError: bid column has 3 NaN rows"
    assert by_pair["USDJPY_2024"].message.startswith("Dask worker process died while running this pair (KilledWorker")
    assert "\n" not in by_pair["USDJPY_2024"].message
    assert "second line" not in out.getvalue()


@needs_distributed
def test_pair_resource_serializes_worker_pairs(tmp_path):
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=True, host="127.0.0.1", dashboard_address=":0",
                      resources={"pair": 1}) as running:
        with open_dask_executor(address=running.scheduler_address) as (executor, dask_cluster):
            assert not dask_cluster.local
            assert dask_cluster.one_pair_per_worker
            assert dask_cluster.threads_per_worker == 2
            summary = vast_mode.run_vast_mode(fake_pair_paths(tmp_path, ("EURUSD", "GBPUSD")), "generate-base",
                                              tmp_path / "out", Config(), 1, 2, executor=executor,
                                              stream=io.StringIO(), job_function=timed_job)

    assert summary.failed == 0
    first, second = sorted((json.loads(result.message) for result in summary.results), key=lambda r: r["start"])
    # Both threads of the worker were free, so only the resource kept the pairs from overlapping.
    assert second["start"] >= first["end"]
    assert first["workers"] == 2


@needs_distributed
def test_missing_pair_resource_warns(caplog):
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=True, host="127.0.0.1",
                      dashboard_address=":0") as running:
        with caplog.at_level(logging.WARNING, logger="fxresearch.cluster"):
            with open_dask_executor(address=running.scheduler_address) as (_, dask_cluster):
                assert not dask_cluster.one_pair_per_worker
    warnings = [record.getMessage() for record in caplog.records if record.name == "fxresearch.cluster"]
    assert len(warnings) == 1
    assert "--resources pair=1" in warnings[0]
    assert running.scheduler_address in warnings[0]


def test_describe_cluster_with_pair_resource():
    info = {"workers": {
        "tcp://127.0.0.1:1001": {"nthreads": 4, "resources": {"pair": 1}},
        "tcp://127.0.0.1:1002": {"nthreads": 2, "resources": {"pair": 1}},
    }}
    described = describe_cluster(info, "tcp://127.0.0.1:8786", None, local=False)
    assert described.n_workers == 2
    assert described.threads_per_worker == 2
    assert described.total_threads == 6
    assert described.one_pair_per_worker
    assert described.description == "Dask scheduler tcp://127.0.0.1:8786: 2 workers x 2 threads"


def test_describe_cluster_without_pair_resource():
    info = {"workers": {"a": {"nthreads": 1, "resources": {"pair": 1}}, "b": {"nthreads": 1, "resources": {}}}}
    assert not describe_cluster(info, "tcp://127.0.0.1:8786", None, local=False).one_pair_per_worker


def test_missing_distributed_names_the_install(monkeypatch):
    # A None entry in sys.modules makes ``import distributed`` raise ImportError.
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(ClusterError, match=r'pip install "distributed>=2024\.1"'):
        with open_dask_executor(address=UNREACHABLE_SCHEDULER):
            pass


# ----------------------------------------------------------------------------- the CLI


@needs_distributed
def test_cli_generate_base_on_local_dask(tmp_path):
    from fxresearch.sample import write_sample_set

    folder = tmp_path / "in"
    folder.mkdir()
    write_sample_set(folder, SampleConfig(weeks=1, ticks_per_hour=300, pairs=("EURUSD", "USDJPY")))
    output_dir = tmp_path / "out"
    result = subprocess.run([sys.executable, str(REPO_ROOT / "main.py"), "--vast-mode", "--generate-base",
                             "--dask-local-workers", "2", "--input-dir", str(folder), "--output-dir", str(output_dir)],
                            capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "Failed: 0" in result.stdout
    assert "Runs on:            local Dask cluster at tcp://127.0.0.1:" in result.stdout
    assert "2 workers x 1 thread" in result.stdout
    assert "Parallel pairs:     2 (one per Dask worker)" in result.stdout
    for pair_year in ("EURUSD_2025", "USDJPY_2025"):
        assert (output_dir / pair_year / "manifest.json").is_file()
        assert (output_dir / pair_year / "bars" / "M5.parquet").is_file()


@pytest.mark.parametrize("argv, message", [
    (["--vast-mode", "--generate-base", "--dask-scheduler", UNREACHABLE_SCHEDULER, "--dask-local-workers", "2"],
     "error: argument --dask-local-workers: not allowed with argument --dask-scheduler"),
    (["--parquet", "EURUSD_2024.parquet", "--generate-base", "--dask-local-workers", "2"],
     "error: --dask-local-workers only applies with --vast-mode"),
    (["--parquet", "EURUSD_2024.parquet", "--generate-base", "--dask-scheduler", UNREACHABLE_SCHEDULER],
     "error: --dask-scheduler only applies with --vast-mode"),
    (["--vast-mode", "--generate-base", "--dask-local-workers", "2", "--parallel-pairs", "2"],
     "error: --parallel-pairs does not apply on Dask: each Dask worker runs one pair at a time"),
    (["--vast-mode", "--generate-base", "--dask-local-workers", "0"],
     "error: argument --dask-local-workers: expected a whole number of at least 1, got 0"),
])
def test_cli_dask_usage_errors(argv, message, capsys, restore_logging):
    code, stderr = run_main_in_process(argv, capsys)
    assert code == 2
    assert stderr.startswith(message)
    assert stderr.count("\n") == 1


@needs_distributed
def test_cli_unreachable_scheduler_exits_2_quickly(tmp_path, monkeypatch, capsys, restore_logging):
    from fxresearch.sample import write_sample_set

    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT_SECONDS", 2.0)
    folder = tmp_path / "in"
    folder.mkdir()
    write_sample_set(folder, SampleConfig(weeks=1, ticks_per_hour=300, pairs=("EURUSD",)))

    started = time.perf_counter()
    code, stderr = run_main_in_process(["--vast-mode", "--generate-base", "--input-dir", str(folder),
                                        "--output-dir", str(tmp_path / "out"),
                                        "--dask-scheduler", UNREACHABLE_SCHEDULER], capsys)
    seconds = time.perf_counter() - started

    assert code == 2
    assert stderr.startswith(f"error: Cannot connect to the Dask scheduler at {UNREACHABLE_SCHEDULER} within 2 s")
    assert "Check the address" in stderr
    assert stderr.count("\n") == 1
    assert seconds < 8
    assert not (tmp_path / "out" / "EURUSD_2025").exists()

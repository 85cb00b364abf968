"""VAST mode on a Dask cluster: equal outputs to a local run, a lost worker, fsspec folders and the CLI.

The clusters listen on 127.0.0.1 only. The fake pair jobs are module-level so that Dask
workers, started with this process's ``sys.path``, import them by name.
"""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest

import main
import vast_mode
from fxresearch import cluster
from fxresearch.cluster import ClusterError, WindowedExecutor, describe_cluster, open_cluster
from fxresearch.config import Config, SampleConfig
from fxresearch.naming import scan_input_dir

REPO_ROOT = Path(__file__).resolve().parents[1]
HAS_DISTRIBUTED = importlib.util.find_spec("distributed") is not None
needs_distributed = pytest.mark.skipif(
    not HAS_DISTRIBUTED, reason="distributed is not installed (pip install -r requirements-cluster.txt)")
# A closed port on this machine: connecting to it is refused, so no packet leaves the host.
UNREACHABLE_SCHEDULER = "tcp://127.0.0.1:1"
SAMPLE = SampleConfig(weeks=1, ticks_per_hour=300, pairs=("EURUSD", "USDJPY"))
# Parquet outputs compared between a local and a cluster run: bars, features, labels and results.
COMPARED = ("bars/*.parquet", "features/*.parquet", "labels/*.parquet", "*_backtest_results.parquet",
            "*_top_trades.parquet", "*_regimes.parquet")


# ----------------------------------------------------------------------------- fake pair jobs


def die_once_job(path: Path, output_dir: Path, config: Config, force_rerun: bool, workers: int) -> dict:
    """End the worker running EURUSD the first time (a marker file remembers it); other pairs take 1 s."""
    marker = Path(output_dir) / f"{Path(path).stem}.died"
    if not Path(path).name.startswith("EURUSD"):
        time.sleep(1.0)
        return {"message": json.dumps({"pid": os.getpid(), "died_in": None})}
    if not marker.exists():
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(str(os.getpid()))
        time.sleep(0.3)
        os._exit(9)
    time.sleep(0.2)
    return {"message": json.dumps({"pid": os.getpid(), "died_in": int(marker.read_text())})}


def always_die_job(path: Path, output_dir: Path, config: Config, force_rerun: bool, workers: int) -> dict:
    """End the worker process every time, so the scheduler gives up on the pair."""
    os._exit(3)


def raising_job(path: Path, output_dir: Path, config: Config, force_rerun: bool, workers: int) -> dict:
    raise ValueError("bid column has 3 NaN rows\nsecond line that must not reach the screen")


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def local_dask():
    """One two-worker, one-thread-each LocalCluster of processes shared by this module."""
    if not HAS_DISTRIBUTED:
        pytest.skip("distributed is not installed (pip install -r requirements-cluster.txt)")
    with open_cluster("local", local_workers=2) as opened:
        yield opened


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory) -> Path:
    from fxresearch.sample import write_sample_set

    folder = tmp_path_factory.mktemp("ticks")
    write_sample_set(folder, SAMPLE)
    return folder


@pytest.fixture
def restore_logging():
    """Remove the console handler that ``main.main`` installs, so it outlives no captured stream."""
    yield
    vast_mode.configure_run_logging(None)
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_fxresearch", False):
            root.removeHandler(handler)


def run_jobs(files, output_dir, executor=None, on_cluster=False, jobs=("generate-base", "search-light")):
    """Run each job over ``files`` as the CLI does and return the summaries."""
    summaries = []
    for job in jobs:
        run_logs = vast_mode.new_run_logs(output_dir, on_cluster=on_cluster)
        plan = vast_mode.make_cluster_plan(files, job, 2, 1) if executor else None
        window = WindowedExecutor(executor, 2) if executor else None
        summaries.append(vast_mode.run_vast_mode(files, job, output_dir, Config(), 2, 1, executor=window,
                                                 stream=io.StringIO(), run_logs=run_logs, plan=plan))
    return summaries


def assert_same_outputs(expected_dir: Path, actual_dir: Path, pair_years: list[str]) -> int:
    """Assert every compared parquet file of each pair has equal contents; return how many were compared."""
    compared = 0
    for pair_year in pair_years:
        for pattern in COMPARED:
            expected_files = sorted((expected_dir / pair_year).glob(pattern))
            assert expected_files, f"{pair_year}: no {pattern} in the local run"
            for expected in expected_files:
                actual = actual_dir / pair_year / expected.relative_to(expected_dir / pair_year)
                pd.testing.assert_frame_equal(pd.read_parquet(actual), pd.read_parquet(expected))
                compared += 1
    return compared


# ----------------------------------------------------------------------------- equal outputs


@needs_distributed
def test_cluster_run_equals_local_run(local_dask, sample_dir, tmp_path):
    executor, dask_cluster = local_dask
    files = scan_input_dir(sample_dir).valid
    local = run_jobs(files, tmp_path / "local")
    # The cluster run writes through a file:// URL, so the workers use the fsspec staging path.
    cluster_out = tmp_path / "cluster"
    on_cluster = run_jobs(files, "file://" + str(cluster_out), executor, on_cluster=True)

    for summary in local + on_cluster:
        assert (summary.total, summary.failed) == (2, 0), [r.message for r in summary.results]
    assert dask_cluster.n_workers == 2
    assert assert_same_outputs(tmp_path / "local", cluster_out, ["EURUSD_2025", "USDJPY_2025"]) >= 20
    manifest = json.loads((cluster_out / "EURUSD_2025" / "manifest.json").read_text())
    assert {"bars", "features", "labels"} <= set(manifest["artifacts"])
    # The ledger stays on this machine: starts announced by the workers, ends written here.
    run_dir = vast_mode.run_state_dir("file://" + str(cluster_out))
    ledgers = sorted((run_dir / "runs").glob("*.jsonl"))
    events = [json.loads(line) for line in ledgers[-1].read_text().splitlines()]
    starts = [e for e in events if e["event"] == "start"]
    assert sorted(e["pair"] for e in starts) == ["EURUSD_2025", "USDJPY_2025"]
    assert {e["pid"] for e in starts}.isdisjoint({os.getpid()})
    assert all(e["worker"].startswith("tcp://127.0.0.1:") for e in starts)
    # Resume: a second cluster run finds both pairs current from the URL's manifests.
    from fxresearch import resume

    check = resume.check_current(files, "search-light", "file://" + str(cluster_out), Config())
    assert check.current == {"EURUSD_2025", "USDJPY_2025"}


@needs_distributed
def test_memory_url_on_in_process_cluster(sample_dir, tmp_path):
    """memory:// lives in one process, so it is tested on a cluster of threads in this process."""
    import fsspec

    memory = fsspec.filesystem("memory")
    memory.put(str(sample_dir / "EURUSD_2025.parquet"), "/h7test/in/EURUSD_2025.parquet")
    try:
        files = scan_input_dir("memory://h7test/in").valid
        assert [f.path for f in files] == ["memory://h7test/in/EURUSD_2025.parquet"]
        with open_cluster("local", local_workers=1, processes=False) as (executor, _):
            [summary] = run_jobs(files, "memory://h7test/out", executor, on_cluster=True, jobs=("generate-base",))
        assert summary.failed == 0, [r.message for r in summary.results]
        local = run_jobs(scan_input_dir(sample_dir).valid[:1], tmp_path / "local", jobs=("generate-base",))
        assert local[0].failed == 0
        stored = memory.find("/h7test/out/EURUSD_2025")
        assert "/h7test/out/EURUSD_2025/manifest.json" in stored
        with memory.open("/h7test/out/EURUSD_2025/bars/M5.parquet", "rb") as handle:
            bars = pd.read_parquet(handle)
        pd.testing.assert_frame_equal(bars, pd.read_parquet(tmp_path / "local" / "EURUSD_2025" / "bars" / "M5.parquet"))
    finally:
        memory.rm("/h7test", recursive=True)


# ----------------------------------------------------------------------------- lost workers


@needs_distributed
def test_killed_worker_pair_is_rerun_and_every_pair_finishes(local_dask, tmp_path):
    executor, _ = local_dask
    files = [tmp_path / f"{symbol}_2024.parquet" for symbol in ("EURUSD", "GBPUSD", "USDJPY")]
    out = io.StringIO()
    summary = vast_mode.run_vast_mode(files, "generate-base", tmp_path / "out", Config(), 2, 1,
                                      executor=WindowedExecutor(executor, 2), stream=out, job_function=die_once_job)

    assert (summary.total, summary.failed) == (3, 0), out.getvalue()
    reports = {result.pair_year: json.loads(result.message) for result in summary.results}
    # EURUSD's first worker process died mid-pair; Dask reran the pair in another worker process.
    assert reports["EURUSD_2024"]["died_in"] is not None
    assert reports["EURUSD_2024"]["pid"] != reports["EURUSD_2024"]["died_in"]
    assert out.getvalue().count("generate-base complete") == 3


@needs_distributed
def test_pair_that_always_kills_its_worker_fails_alone(local_dask, tmp_path):
    executor, _ = local_dask
    files = [tmp_path / "GBPUSD_2024.parquet", tmp_path / "USDJPY_2024.parquet"]
    summary = vast_mode.run_vast_mode(files[:1], "generate-base", tmp_path / "out", Config(), 2, 1,
                                      executor=WindowedExecutor(executor, 2), stream=io.StringIO(),
                                      job_function=always_die_job)
    [result] = summary.results
    assert result.message.startswith("Dask worker process died while running this pair (KilledWorker")
    assert "\n" not in result.message
    raised = vast_mode.run_vast_mode(files[1:], "generate-base", tmp_path / "out", Config(), 2, 1,
                                     executor=WindowedExecutor(executor, 2), stream=io.StringIO(),
                                     job_function=raising_job)
    assert raised.results[0].message == "ValueError: bid column has 3 NaN rows"


# ----------------------------------------------------------------------------- pieces


def test_windowed_executor_keeps_at_most_limit_in_flight():
    lock, running, peak = threading.Lock(), [0], [0]

    def work(value: int) -> int:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        return value * 2

    with ThreadPoolExecutor(max_workers=8) as pool:
        windowed = WindowedExecutor(pool, 3)
        futures = [windowed.submit(work, value) for value in range(10)]
        assert [future.result(timeout=5) for future in futures] == [value * 2 for value in range(10)]
    assert peak[0] == 3


def test_describe_cluster_reads_threads_and_memory_limits():
    info = {"workers": {
        "tcp://127.0.0.1:1001": {"nthreads": 4, "resources": {"pair": 1}, "memory_limit": 8 * 1024 ** 3},
        "tcp://127.0.0.1:1002": {"nthreads": 2, "resources": {"pair": 1}, "memory_limit": 4 * 1024 ** 3},
    }}
    described = describe_cluster(info, "tcp://127.0.0.1:8786", None, local=False)
    assert (described.n_workers, described.threads_per_worker, described.total_threads) == (2, 2, 6)
    assert described.memory_limit_bytes == 4 * 1024 ** 3
    assert described.one_pair_per_worker
    assert described.description == ("Dask scheduler tcp://127.0.0.1:8786: 2 workers x 2 threads, "
                                     "4.0 GB memory limit each")
    unlimited = describe_cluster({"workers": {"a": {"nthreads": 1, "memory_limit": 0}}}, "x", None, local=True)
    assert unlimited.memory_limit_bytes is None


def test_cluster_plan_notes_a_pair_larger_than_worker_memory(sample_dir):
    files = scan_input_dir(sample_dir).valid
    roomy = vast_mode.make_cluster_plan(files, "generate-base", 4, 1, worker_memory_bytes=64 * 1024 ** 3)
    assert roomy.parallel_pairs == 2
    assert roomy.workers.notes == ()
    assert roomy.memory_budget_bytes == pytest.approx(64 * 1024 ** 3 * vast_mode.MEMORY_HEADROOM * 2)
    tight = vast_mode.make_cluster_plan(files, "generate-base", 2, 1, worker_memory_bytes=64 * 1024 ** 2)
    assert len(tight.workers.notes) == 1
    assert "--memory-limit" in tight.workers.notes[0]


def test_missing_distributed_names_the_install(monkeypatch):
    # A None entry in sys.modules makes ``import distributed`` raise ImportError.
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(ClusterError, match=r"pip install -r requirements-cluster\.txt"):
        with open_cluster(UNREACHABLE_SCHEDULER):
            pass


def test_cli_cluster_without_distributed_exits_2(monkeypatch, sample_dir, tmp_path, capsys, restore_logging):
    monkeypatch.setitem(sys.modules, "distributed", None)
    code, stderr = run_main_in_process(["--vast-mode", "--generate-base", "--input-dir", str(sample_dir),
                                        "--output-dir", str(tmp_path / "out"), "--cluster", "local"], capsys)
    assert code == 2
    assert stderr.startswith("error: --cluster needs Dask's distributed package")
    assert "pip install -r requirements-cluster.txt" in stderr


# ----------------------------------------------------------------------------- the CLI


def run_main_in_process(argv: list[str], capsys) -> tuple[int, str]:
    """Run ``main.main`` here and return its exit code and stderr (usage errors exit via SystemExit)."""
    try:
        code = main.main(argv)
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


@needs_distributed
def test_cli_generate_base_on_local_cluster(sample_dir, tmp_path):
    output_dir = tmp_path / "out"
    result = subprocess.run([sys.executable, str(REPO_ROOT / "main.py"), "--vast-mode", "--generate-base",
                             "--cluster", "local", "--cluster-workers", "2", "--input-dir", str(sample_dir),
                             "--output-dir", str(output_dir)],
                            capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "Failed: 0" in result.stdout
    assert "Runs on:            local Dask cluster at tcp://127.0.0.1:" in result.stdout
    assert "2 workers x 1 thread, " in result.stdout
    assert "GB memory limit each" in result.stdout
    assert "CPU cores:" not in result.stdout
    assert "Parallel pairs:     2 (one per Dask worker)" in result.stdout
    for pair_year in ("EURUSD_2025", "USDJPY_2025"):
        assert (output_dir / pair_year / "manifest.json").is_file()
        assert (output_dir / pair_year / "bars" / "M5.parquet").is_file()
    # Run log lines of the pairs reached this machine's log file through Dask's log forwarding.
    [log] = (output_dir / "logs").glob("run-*.log")
    assert "EURUSD_2025 generate-base started on" in log.read_text()


@pytest.mark.parametrize("argv, message", [
    (["--parquet", "EURUSD_2024.parquet", "--generate-base", "--cluster", "local"],
     "error: --cluster only applies with --vast-mode"),
    (["--parquet", "EURUSD_2024.parquet", "--generate-base", "--dask-local-workers", "2"],
     "error: --cluster, --cluster-workers only applies with --vast-mode"),
    (["--vast-mode", "--generate-base", "--cluster", "local", "--parallel-pairs", "2"],
     "error: --parallel-pairs does not apply on Dask: each Dask worker runs one pair at a time"),
    (["--vast-mode", "--generate-base", "--cluster", UNREACHABLE_SCHEDULER, "--cluster-workers", "2"],
     "error: --cluster-workers sets the size of --cluster local"),
    (["--vast-mode", "--generate-base", "--cluster-workers", "0"],
     "error: argument --cluster-workers: expected a whole number of at least 1, got 0"),
    (["--vast-mode", "--generate-base", "--output-dir", "memory://x", "--cluster", "local"],
     "error: memory:// folders live inside one process"),
])
def test_cli_cluster_usage_errors(argv, message, capsys, restore_logging):
    code, stderr = run_main_in_process(argv, capsys)
    assert code == 2
    assert stderr.startswith(message)
    assert stderr.count("\n") == 1


def test_old_dask_options_map_to_cluster():
    parser = main.build_parser()
    local = parser.parse_args(["--vast-mode", "--generate-base", "--dask-local-workers", "3"])
    assert (local.cluster, local.cluster_workers) == ("local", 3)
    remote = parser.parse_args(["--vast-mode", "--generate-base", "--dask-scheduler", "tcp://10.0.0.5:8786"])
    assert (remote.cluster, remote.cluster_workers) == ("tcp://10.0.0.5:8786", None)
    assert "--dask-scheduler" not in parser.format_help()


@needs_distributed
def test_cli_unreachable_scheduler_exits_2_quickly(sample_dir, tmp_path, monkeypatch, capsys, restore_logging):
    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT_SECONDS", 2.0)
    started = time.perf_counter()
    code, stderr = run_main_in_process(["--vast-mode", "--generate-base", "--input-dir", str(sample_dir),
                                        "--output-dir", str(tmp_path / "out"),
                                        "--cluster", UNREACHABLE_SCHEDULER], capsys)
    seconds = time.perf_counter() - started

    assert code == 2
    assert stderr.startswith(f"error: Cannot connect to the Dask scheduler at {UNREACHABLE_SCHEDULER} within 2 s")
    assert stderr.count("\n") == 1
    assert seconds < 8
    assert not (tmp_path / "out" / "EURUSD_2025").exists()


def test_interrupted_upload_leaves_no_manifest(tmp_path, monkeypatch):
    """A pair killed while its files are copied up leaves no manifest listing replaced files."""
    from fxresearch.storage import StagedPair

    remote = tmp_path / "remote" / "EURUSD_2025"
    remote.mkdir(parents=True)
    (remote / "manifest.json").write_text('{"artifacts": {"bars": {"files": ["bars/M1.parquet"]}}}')
    (remote / "bars").mkdir()
    (remote / "bars" / "M1.parquet").write_bytes(b"old bars")

    staged = StagedPair(tmp_path / "stage", tmp_path / "in.parquet", tmp_path / "stage" / "out", "EURUSD_2025",
                        f"file://{tmp_path / 'remote'}")
    local = staged.local_pair_dir
    (local / "bars").mkdir(parents=True)
    (local / "bars" / "M1.parquet").write_bytes(b"new bars")
    (local / "bars" / "M5.parquet").write_bytes(b"new bars")
    (local / "manifest.json").write_text('{"artifacts": {}}')

    import fsspec.implementations.local as fsspec_local

    real_put = fsspec_local.LocalFileSystem.put_file
    copied: list[str] = []

    def put_then_die(self, source, target, *args, **kwargs):
        if copied:
            raise OSError("killed during the upload")
        copied.append(target)
        return real_put(self, source, target, *args, **kwargs)

    monkeypatch.setattr(fsspec_local.LocalFileSystem, "put_file", put_then_die)
    with pytest.raises(OSError, match="killed during the upload"):
        staged.upload()
    assert (remote / "bars" / "M1.parquet").read_bytes() == b"new bars"
    assert not (remote / "manifest.json").exists()

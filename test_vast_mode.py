"""Fast tests of the CLI and the VAST orchestrator: no real pair jobs run here.

Pair jobs are replaced by the small module-level functions below, which spawned pair
processes import by name from this module.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import vast_mode
from fxresearch.config import Config
from fxresearch.naming import PairFile, scan_input_dir
from fxresearch.resources import (
    GB, PROCESS_BYTES_ESTIMATE, Resources, detect_resources, max_pairs_for_memory, plan_workers, read_cgroup_cpu_quota,
    read_cgroup_memory, read_tick_file_info,
)

REPO_ROOT = Path(__file__).resolve().parent
MAIN = REPO_ROOT / "main.py"


# ----------------------------------------------------------------------------- fake pair jobs


def probe_threads_job(path: Path, output_dir: Path, config: Config, force_rerun: bool, workers: int) -> dict:
    """Report the thread caps seen inside the pair process."""
    import numba
    import pyarrow
    from threadpoolctl import threadpool_info

    blas_threads = sorted({pool["num_threads"] for pool in threadpool_info()})
    report = {
        "numba": numba.get_num_threads(),
        "arrow_cpu": pyarrow.cpu_count(),
        "arrow_io": pyarrow.io_thread_count(),
        "omp_env": os.environ.get("OMP_NUM_THREADS"),
        "blas": blas_threads,
        "pid": os.getpid(),
    }
    return {"message": json.dumps(report)}


def flaky_job(path: Path, output_dir: Path, config: Config, force_rerun: bool, workers: int) -> dict:
    """Raise for GBPUSD, kill the process for USDJPY, succeed for the rest."""
    if path.name.startswith("GBPUSD"):
        raise ValueError("bid column has 3 NaN rows\nsecond line that must not reach the screen")
    if path.name.startswith("USDJPY"):
        time.sleep(0.3)
        os._exit(3)
    time.sleep(0.2)
    return {"message": "fake job done", "synthetic": False}


def crash_job(path: Path, output_dir: Path, config: Config, force_rerun: bool, workers: int) -> dict:
    os._exit(7)


def dying_job(path: Path, output_dir: Path, config: Config, force_rerun: bool, workers: int) -> dict:
    """Die by SIGKILL for GBPUSD, by os._exit(9) for USDJPY, run out of memory for AUDUSD, else succeed."""
    import signal

    if path.name.startswith("GBPUSD"):
        os.kill(os.getpid(), signal.SIGKILL)
    if path.name.startswith("USDJPY"):
        os._exit(9)
    if path.name.startswith("AUDUSD"):
        import resource

        # An address-space limit 256 MiB above what the process maps now, then a 2 GiB request.
        mapped = int(Path("/proc/self/statm").read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        resource.setrlimit(resource.RLIMIT_AS, (mapped + 256 * 1024 ** 2, resource.RLIM_INFINITY))
        np.ones(2 * 1024 ** 3 // 8)
    time.sleep(0.5)
    return {"message": "survived", "synthetic": False}


def ok_job(path: Path, output_dir: Path, config: Config, force_rerun: bool, workers: int) -> dict:
    return {"message": f"done {path.stem}", "synthetic": path.stem.startswith("EUR")}


def slow_job(path: Path, output_dir: Path, config: Config, force_rerun: bool, workers: int) -> dict:
    time.sleep(1.0)
    return {"message": "slow job done", "synthetic": False}


def load_ticks_job(path: Path, output_dir: Path, config: Config, force_rerun: bool, workers: int) -> dict:
    """Load the pair's ticks the way the real jobs' first stage does, and nothing more."""
    from fxresearch.ticks import load_ticks

    ticks = load_ticks(path, config)
    return {"message": f"{ticks.n} ticks"}


# ----------------------------------------------------------------------------- helpers


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(MAIN), *args], capture_output=True, text=True,
                          cwd=cwd or REPO_ROOT, timeout=120)


def write_ticks(path: Path, rows: int = 1000, synthetic: bool = False) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    timestamps = pd.date_range("2020-01-06 08:00", periods=rows, freq="1s", tz="UTC").as_unit("ns")
    bid = 1.1 + np.arange(rows) * 1e-5
    table = pa.table({"timestamp": timestamps, "bid": bid, "ask": bid + 2e-5})
    if synthetic:
        table = table.replace_schema_metadata({b"synthetic": b"true"})
    pq.write_table(table, path)
    return path


def fake_resources(cores: int, ram_available_gb: float = 64.0) -> Resources:
    plan = plan_workers(cores, 0)
    return Resources(cores, cores, None, ram_available_gb, ram_available_gb, False,
                     plan.parallel_pairs, plan.workers_per_pair)


def pair_files(folder: Path, names: list[str]) -> list[PairFile]:
    files = []
    for name in names:
        symbol, year = name.split("_")
        files.append(PairFile(folder / f"{name}.parquet", symbol, int(year), name))
    return files


# ----------------------------------------------------------------------------- resources


def test_detect_resources_uses_affinity_without_cgroup(tmp_path):
    resources = detect_resources(cgroup_root=tmp_path)
    assert resources.cores == len(os.sched_getaffinity(0))
    assert resources.cpu_quota is None
    assert resources.ram_total_gb > 0
    assert 0 < resources.ram_available_gb <= resources.ram_total_gb


def test_detect_resources_respects_narrower_affinity(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    resources = detect_resources(cgroup_root=tmp_path)
    assert resources.cores == 1
    assert resources.recommended_parallel_pairs == 1
    assert resources.recommended_workers_per_pair == 1


def test_cgroup_v2_quota_limits_cores(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    (tmp_path / "cpu.max").write_text("250000 100000\n")
    assert read_cgroup_cpu_quota(tmp_path) == pytest.approx(2.5)
    resources = detect_resources(cgroup_root=tmp_path)
    assert resources.affinity_cores == 16
    assert resources.cpu_quota == pytest.approx(2.5)
    assert resources.cores == 2


def test_cgroup_v2_without_quota(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert read_cgroup_cpu_quota(tmp_path) is None
    assert detect_resources(cgroup_root=tmp_path).cores == 8


def test_cgroup_v1_quota_limits_cores(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("400000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    resources = detect_resources(cgroup_root=tmp_path)
    assert resources.cores == 4
    assert resources.recommended_parallel_pairs == 1
    assert resources.recommended_workers_per_pair == 4


def test_cgroup_v1_unlimited_quota(tmp_path):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert read_cgroup_cpu_quota(tmp_path) is None


def test_cgroup_quota_below_one_core_gives_one(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    (tmp_path / "cpu.max").write_text("50000 100000\n")
    assert detect_resources(cgroup_root=tmp_path).cores == 1


def test_cgroup_v2_memory_limit_lowers_ram(tmp_path):
    (tmp_path / "memory.max").write_text(str(2 * GB))
    (tmp_path / "memory.current").write_text(str(GB // 2))
    resources = detect_resources(cpu_count=4, cgroup_root=tmp_path,
                                 memory_total_bytes=16 * GB, memory_available_bytes=12 * GB)
    assert resources.memory_limited_by_cgroup
    assert resources.ram_total_gb == pytest.approx(2.0)
    assert resources.ram_available_gb == pytest.approx(1.5)


def test_cgroup_v1_memory_without_limit(tmp_path):
    (tmp_path / "memory").mkdir()
    (tmp_path / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712")
    (tmp_path / "memory" / "memory.usage_in_bytes").write_text(str(GB))
    assert read_cgroup_memory(tmp_path) == (None, GB)
    resources = detect_resources(cpu_count=4, cgroup_root=tmp_path,
                                 memory_total_bytes=16 * GB, memory_available_bytes=12 * GB)
    assert not resources.memory_limited_by_cgroup
    assert resources.ram_total_gb == pytest.approx(16.0)
    assert resources.ram_available_gb == pytest.approx(12.0)


def test_injected_cpu_count_overrides_detection(tmp_path):
    resources = detect_resources(cpu_count=128, cgroup_root=tmp_path)
    assert resources.cores == 128
    assert resources.recommended_parallel_pairs == 30
    assert resources.recommended_workers_per_pair == 4


# ----------------------------------------------------------------------------- the worker formula


@pytest.mark.parametrize("cores, pairs, workers", [
    (1, 1, 1), (2, 1, 2), (3, 1, 3), (4, 1, 4), (7, 1, 4), (8, 2, 4), (16, 4, 4), (64, 16, 4),
    (120, 30, 4), (128, 30, 4), (256, 30, 4),
])
def test_plan_workers_recommendation(cores, pairs, workers):
    plan = plan_workers(cores, n_pairs=1000)
    assert (plan.parallel_pairs, plan.workers_per_pair) == (pairs, workers)


def test_plan_workers_formula_over_all_core_counts():
    for cores in range(1, 257):
        plan = plan_workers(cores, n_pairs=1000)
        expected_pairs = min(30, max(1, cores // 4))
        assert plan.parallel_pairs == expected_pairs, cores
        assert plan.workers_per_pair == max(1, min(4, cores // expected_pairs)), cores
        assert plan.parallel_pairs * plan.workers_per_pair <= cores, cores


def test_plan_workers_never_exceeds_cores_with_requests():
    for cores in range(1, 257, 3):
        for n_pairs in (1, 2, 7, 40):
            for requested_pairs in (None, 1, 3, 16, 64, 300):
                for requested_workers in (None, 1, 2, 5, 32):
                    for memory_cap in (None, 1, 5):
                        plan = plan_workers(cores, n_pairs, requested_pairs, requested_workers, memory_cap)
                        case = (cores, n_pairs, requested_pairs, requested_workers, memory_cap)
                        assert plan.parallel_pairs >= 1, case
                        assert plan.workers_per_pair >= 1, case
                        assert plan.parallel_pairs * plan.workers_per_pair <= cores, case
                        assert plan.parallel_pairs <= n_pairs, case
                        if requested_workers is not None:
                            assert plan.workers_per_pair <= requested_workers, case


def test_plan_workers_fewer_pairs_than_slots():
    plan = plan_workers(128, n_pairs=2)
    assert (plan.parallel_pairs, plan.workers_per_pair, plan.limited_by) == (2, 4, "pairs")


def test_plan_workers_max_workers_sets_threads():
    assert plan_workers(2, 1, max_workers=1).workers_per_pair == 1
    assert plan_workers(2, 1, max_workers=2).workers_per_pair == 2
    assert plan_workers(64, 1, parallel_pairs=1, max_workers=8).workers_per_pair == 8


def test_plan_workers_lowers_oversized_requests_with_note():
    plan = plan_workers(2, 10, parallel_pairs=8, max_workers=4)
    assert (plan.parallel_pairs, plan.workers_per_pair) == (2, 1)
    assert any("--parallel-pairs 8 lowered to 2" in note for note in plan.notes)
    assert any("--max-workers 4 lowered to 1" in note for note in plan.notes)


def test_plan_workers_memory_cap():
    plan = plan_workers(128, n_pairs=100, max_pairs_by_memory=3)
    assert (plan.parallel_pairs, plan.workers_per_pair, plan.limited_by) == (3, 4, "memory")
    assert max_pairs_for_memory(10 * GB, 2 * GB) == 4
    assert max_pairs_for_memory(GB, 4 * GB) == 1
    assert max_pairs_for_memory(GB, 0) is None


def test_plan_workers_rejects_zero_cores():
    with pytest.raises(ValueError, match="cores must be at least 1"):
        plan_workers(0, 1)


def test_make_plan_memory_limits_parallel_pairs(tmp_path):
    names = ["EURUSD_2020", "GBPUSD_2020", "USDJPY_2020"]
    files = pair_files(tmp_path, names)
    for pair_file in files:
        write_ticks(pair_file.path, rows=5000)
    # Built-in estimate: 300 MiB per process + 5,000 ticks x 200 bytes per pair; 2.6 pairs'
    # worth available x 0.8 headroom fits two.
    per_pair = PROCESS_BYTES_ESTIMATE + 5000 * 200
    resources = fake_resources(cores=64, ram_available_gb=2.6 * per_pair / GB)
    plan = vast_mode.make_plan(resources, files, "generate-base")
    assert plan.bytes_per_pair == per_pair
    assert plan.memory_budget_bytes == pytest.approx(2.6 * per_pair * 0.8)
    assert plan.total_ticks == 15_000
    assert plan.parallel_pairs == 2
    assert plan.workers.limited_by == "memory"

    out = io.StringIO()
    vast_mode.print_resources_banner(resources, scan_input_dir(tmp_path), plan, "generate-base", out)
    assert "Memory, not cores, limits parallel pairs" in out.getvalue()
    assert "Parallel pairs:     2 (limited by memory, not cores)" in out.getvalue()


def test_read_tick_file_info_reads_footer(tmp_path):
    real = read_tick_file_info(write_ticks(tmp_path / "EURUSD_2020.parquet", rows=321))
    marked = read_tick_file_info(write_ticks(tmp_path / "GBPUSD_2020.parquet", rows=5, synthetic=True))
    (tmp_path / "AUDUSD_2020.parquet").write_bytes(b"not a parquet file")
    broken = read_tick_file_info(tmp_path / "AUDUSD_2020.parquet")
    assert (real.rows, real.synthetic, real.error) == (321, False, None)
    assert (marked.rows, marked.synthetic) == (5, True)
    assert broken.rows == 0
    assert broken.error is not None


# ----------------------------------------------------------------------------- scan, banner, selection


def test_banner_lists_invalid_and_duplicate_files(tmp_path):
    write_ticks(tmp_path / "EURUSD_2020.parquet", rows=100, synthetic=True)
    write_ticks(tmp_path / "GBPUSD_2013.parquet", rows=50)
    write_ticks(tmp_path / "GBPUSD_2013.PARQUET", rows=50)
    write_ticks(tmp_path / "eurusd-2021.parquet", rows=10)
    scan = scan_input_dir(tmp_path)
    assert [f.pair_year for f in scan.valid] == ["EURUSD_2020"]
    assert len(scan.invalid) == 3

    resources = fake_resources(cores=2)
    plan = vast_mode.make_plan(resources, scan.valid, "generate-base")
    out = io.StringIO()
    vast_mode.print_resources_banner(resources, scan, plan, "generate-base", out)
    banner = out.getvalue()
    assert "Parquet files:      1 valid, 3 invalid" in banner
    assert "INVALID eurusd-2021.parquet:" in banner
    assert "INVALID GBPUSD_2013.PARQUET: Conflicting tick files for GBPUSD_2013" in banner
    assert "INVALID GBPUSD_2013.parquet: Conflicting tick files for GBPUSD_2013" in banner
    for line in banner.splitlines():
        if line.startswith("  INVALID"):
            # The naming hint once where the name is wrong, never on two valid names that conflict.
            assert line.count("Expected PAIR_YEAR.parquet") == ("Conflicting" not in line), line
    assert "CPU cores:          2" in banner
    assert "Parallel pairs:     1" in banner
    assert "Workers per pair:   2" in banner
    assert "Estimated time:     ~" in banner
    assert "(estimate:" in banner
    assert "SYNTHETIC sample data (1 of 1 files)" in banner


def test_run_vast_mode_counts_invalid_and_duplicate_paths(tmp_path):
    paths = [tmp_path / "EURUSD_2020.parquet", tmp_path / "EURUSD_2020.PARQUET", tmp_path / "eur_2020.parquet",
             tmp_path / "GBPUSD_2013.parquet"]
    out = io.StringIO()
    summary = vast_mode.run_vast_mode(paths, "generate-base", tmp_path / "out", Config(), 1, 1,
                                      stream=out, job_function=ok_job)
    by_file = {r.pair_year: r for r in summary.invalid}
    # Three invalid files are not three failed pairs: one pair ran and succeeded.
    assert summary.total == 1 and summary.failed == 0 and summary.results[0].pair_year == "GBPUSD_2013"
    assert sorted(by_file) == ["EURUSD_2020.PARQUET", "EURUSD_2020.parquet", "eur_2020.parquet"]
    assert not summary.all_ok
    assert "Conflicting tick files" in by_file["EURUSD_2020.PARQUET"].message
    assert "Expected PAIR_YEAR.parquet" in by_file["eur_2020.parquet"].message
    assert "[1/1] GBPUSD_2013 - generate-base complete" in out.getvalue()
    assert "Progress: 1/1 pairs done (0 failed)" in out.getvalue()
    printed = io.StringIO()
    vast_mode.print_summary(summary, stream=printed)
    assert "  Total pairs: 1\n  Successful: 1\n  Failed: 0\n  Invalid files: 3 " in printed.getvalue()


def test_select_pairs_ignores_case(tmp_path):
    files = pair_files(tmp_path, ["EURUSD_2019", "EURUSD_2020", "GBPJPY_2020", "USDJPY_2013"])
    chosen = vast_mode.select_pairs(files, ["eurusd", "GbpJpy_2020"])
    assert [f.pair_year for f in chosen] == ["EURUSD_2019", "EURUSD_2020", "GBPJPY_2020"]
    assert vast_mode.select_pairs(files, None) == files
    with pytest.raises(vast_mode.PairSelectionError, match="no tick file for XAUUSD, EURUSD_2021"):
        vast_mode.select_pairs(files, ["XAUUSD", "EURUSD_2021", "USDJPY"])


# ----------------------------------------------------------------------------- command-line errors


def test_version_flag():
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"fxresearch {__import__('fxresearch').__version__}"


def assert_usage_error(result: subprocess.CompletedProcess, message: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    assert message in lines[0], lines[0]
    assert result.stdout == ""


def test_cli_no_mode():
    result = run_cli("--vast-mode", "--input-dir", str(REPO_ROOT))
    assert_usage_error(result, "Must specify a job: --generate-base, --search-light, --convert or --report")


def test_cli_no_mode_message_is_exact():
    result = run_cli("--parquet", "x.parquet")
    assert result.stderr.strip() == ("error: Must specify a job: --generate-base, --search-light, --convert or "
                                     "--report (run with --help for usage)")


def test_cli_two_modes():
    result = run_cli("--vast-mode", "--generate-base", "--search-light")
    assert_usage_error(result, "Only one job per run: --generate-base and --search-light cannot be combined")


def test_cli_neither_parquet_nor_vast_mode():
    result = run_cli("--generate-base")
    assert_usage_error(result, "Must specify either --parquet FILE (one pair) or --vast-mode")


def test_cli_parquet_and_vast_mode_together(tmp_path):
    result = run_cli("--vast-mode", "--parquet", str(tmp_path / "EURUSD_2020.parquet"), "--generate-base")
    assert_usage_error(result, "Use either --parquet FILE (one pair) or --vast-mode (a folder), not both")


def test_cli_missing_input_dir(tmp_path):
    missing = tmp_path / "nowhere"
    result = run_cli("--vast-mode", "--generate-base", "--input-dir", str(missing))
    assert_usage_error(result, f"Input folder not found: {missing}. --input-dir must be a folder of "
                               "PAIR_YEAR.parquet files")


def test_cli_input_dir_is_a_file(tmp_path):
    parquet = write_ticks(tmp_path / "EURUSD_2020.parquet", rows=10)
    result = run_cli("--vast-mode", "--generate-base", "--input-dir", str(parquet))
    assert_usage_error(result, f"Input path {parquet} is not a folder. --input-dir must be a folder of "
                               "PAIR_YEAR.parquet files")


def test_cli_input_dir_without_parquet_files(tmp_path):
    (tmp_path / "notes.txt").write_text("no ticks here")
    result = run_cli("--vast-mode", "--generate-base", "--input-dir", str(tmp_path))
    assert_usage_error(result, f"no valid PAIR_YEAR.parquet file in {tmp_path}")
    assert result.stderr.strip() == f"error: no valid PAIR_YEAR.parquet file in {tmp_path}"


def run_main_in_process(capfd, *args: str) -> tuple[int, str, str]:
    """Run main.main in this process (faster than a subprocess); return the exit code, stdout and stderr."""
    import main as cli

    try:
        code = cli.main(list(args))
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capfd.readouterr()
    return code, captured.out, captured.err


def test_cli_folder_of_invalid_files_only_is_usage_error(tmp_path, capfd):
    write_ticks(tmp_path / "eurusd_2020.parquet", rows=10)
    code, out, err = run_main_in_process(capfd, "--vast-mode", "--generate-base", "--input-dir", str(tmp_path),
                                         "--output-dir", str(tmp_path / "out"))
    assert code == 2, out + err
    assert err.startswith(f"error: no valid PAIR_YEAR.parquet file in {tmp_path} (eurusd_2020.parquet: ")


@pytest.mark.parametrize("pairs", [",", "", " , "])
def test_cli_empty_pairs_selects_nothing(tmp_path, capfd, pairs):
    write_ticks(tmp_path / "EURUSD_2020.parquet", rows=10)
    code, out, err = run_main_in_process(capfd, "--vast-mode", "--generate-base", "--input-dir", str(tmp_path),
                                         "--output-dir", str(tmp_path / "out"), "--pairs", pairs, "--dry-run")
    assert code == 2, out + err
    assert err.startswith("error: --pairs: no pair selected;"), err
    assert "Plan:" not in out


def test_cli_report_without_search_results_is_usage_error(tmp_path, capfd):
    (tmp_path / "EURUSD_2020").mkdir()  # a generate-base output folder, no search results
    code, out, err = run_main_in_process(capfd, "--report", "--output-dir", str(tmp_path))
    assert code == 2, out + err
    assert err.strip() == f"error: no search-light results in {tmp_path}; run --search-light first"
    assert not (tmp_path / "report.html").exists()


def test_cli_pairs_limits_summary_and_exit_code(tmp_path, capfd, monkeypatch):
    inputs = tmp_path / "in"
    inputs.mkdir()
    write_ticks(inputs / "USDJPY_2013.parquet", rows=10)
    for name in ("EURUSD_13.parquet", "eurusd_2013.parquet", "EURUSDm_2013.parquet", "._USDJPY_2013.parquet"):
        write_ticks(inputs / name, rows=10)
    (inputs / "GBPUSD_2013.parquet").mkdir()
    monkeypatch.setitem(vast_mode.JOBS, "generate-base", ok_job)
    code, out, err = run_main_in_process(capfd, "--vast-mode", "--generate-base", "--input-dir", str(inputs),
                                         "--output-dir", str(tmp_path / "out"), "--pairs", "USDJPY")
    assert code == 0, out + err
    assert "  Total pairs: 1\n  Successful: 1\n  Failed: 0\n" in out
    assert "Invalid files:" not in out
    assert ("  Note: 4 invalid files not selected by --pairs (not counted): EURUSD_13.parquet, "
            "EURUSDm_2013.parquet, GBPUSD_2013.parquet, eurusd_2013.parquet") in out
    # The folder hint is printed once, and the macOS metadata file is not a tick file at all.
    assert out.count("expected a single parquet file named PAIR_YEAR.parquet") == 1
    assert "Expected PAIR_YEAR" not in out.split("INVALID GBPUSD_2013.parquet:")[1].splitlines()[0]
    assert "._USDJPY" not in out
    assert "Parquet files:      1 valid, 4 invalid" in out


def test_print_plan_lists_largest_first_with_plurals(tmp_path):
    files = pair_files(tmp_path, ["AUDUSD_2020", "EURUSD_2020", "GBPUSD_2020"])
    for pair_file, rows in zip(files, (100, 300, 200), strict=True):
        write_ticks(pair_file.path, rows=rows)
    plan = vast_mode.make_plan(fake_resources(cores=2), files, "generate-base", parallel_pairs=1, max_workers=1)
    out = io.StringIO()
    vast_mode.print_plan(plan, tmp_path / "out", out)
    lines = out.getvalue().splitlines()
    assert lines[0] == "Plan: 3 pairs, 1 at a time, 1 worker each; largest files first"
    assert [line.split()[0] for line in lines[1:]] == ["EURUSD_2020", "GBPUSD_2020", "AUDUSD_2020"]
    one = vast_mode.make_plan(fake_resources(cores=2), files[:1], "generate-base", max_workers=2)
    out = io.StringIO()
    vast_mode.print_plan(one, tmp_path / "out", out)
    assert out.getvalue().startswith("Plan: 1 pair, 1 at a time, 2 workers each;")


def test_skip_only_rerun_keeps_synthetic_notice(tmp_path):
    files = pair_files(tmp_path, ["EURUSD_2020"])
    write_ticks(files[0].path, rows=50, synthetic=True)
    resources = fake_resources(cores=2)
    plan = vast_mode.make_plan(resources, files, "generate-base", skipped=["EURUSD_2020"])
    banner = io.StringIO()
    vast_mode.print_resources_banner(resources, scan_input_dir(tmp_path), plan, "generate-base", banner)
    assert "SYNTHETIC sample data (1 of 1 files)" in banner.getvalue()
    out = io.StringIO()
    summary = vast_mode.run_vast_mode(files, "generate-base", tmp_path / "out", Config(), 1, 1, stream=out,
                                      job_function=ok_job, plan=plan)
    assert summary.skipped == ["EURUSD_2020"] and summary.synthetic
    vast_mode.print_summary(summary, stream=out)
    assert "Results of 1 of 1 pairs are on SYNTHETIC data, not market data." in out.getvalue()


@pytest.mark.parametrize("force_rerun", [False, True])
def test_interrupted_summary_advice_depends_on_force_rerun(force_rerun):
    summary = vast_mode.VastSummary("generate-base", interrupted=True, force_rerun=force_rerun, results=[
        vast_mode.PairResult("EURUSD_2020", "generate-base", True, 1.0, ""),
        vast_mode.PairResult("GBPUSD_2020", "generate-base", False, 0.0, "stopped", status="interrupted")])
    out = io.StringIO()
    vast_mode.print_summary(summary, stream=out)
    text = out.getvalue()
    if force_rerun:
        assert "Rerun without --force-rerun to compute the stopped and not started pairs" in text
        assert "Rerun the same command" not in text
    else:
        assert "Rerun the same command to compute the stopped and not started pairs" in text


def sigterm_parent_job(path: Path, output_dir: Path, config: Config, force_rerun: bool, workers: int) -> dict:
    import signal

    os.kill(os.getppid(), signal.SIGTERM)
    time.sleep(20)
    return {"message": "not stopped"}


def test_sigterm_stops_run_like_ctrl_c(tmp_path):
    import signal

    files = pair_files(tmp_path, ["EURUSD_2020", "GBPUSD_2020"])
    logs = vast_mode.new_run_logs(tmp_path / "out")
    # Before the run's own handler existed, SIGTERM would have ended pytest; this guard keeps the test alive.
    guard = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        out = io.StringIO()
        started = time.monotonic()
        summary = vast_mode.run_vast_mode(files, "generate-base", tmp_path / "out", Config(), 1, 1, stream=out,
                                          job_function=sigterm_parent_job, run_logs=logs)
        assert signal.getsignal(signal.SIGTERM) is not vast_mode._raise_terminated
    finally:
        signal.signal(signal.SIGTERM, guard)
    assert time.monotonic() - started < 15, "the pair was not stopped"
    assert summary.interrupted and summary.signal_name == "SIGTERM"
    assert "Interrupted by SIGTERM: cancelling queued pairs and stopping running ones ..." in out.getvalue()
    assert sorted(r.status for r in summary.results) == ["interrupted", "not started"]
    events = [json.loads(line) for line in logs.ledger_path.read_text().splitlines()]
    assert sorted(e["status"] for e in events if e["event"] == "end") == ["interrupted", "not started"]
    stopped = next(r for r in summary.results if r.status == "interrupted")
    assert stopped.message == "stopped by SIGTERM while running; its temporary files were removed"


def test_pair_process_without_parent_exits_quietly(capfd):
    import multiprocessing
    import signal

    from fxresearch.pair_executor import _child_main

    receiver, sender = multiprocessing.Pipe(duplex=False)
    receiver.close()  # the parent is gone: nobody reads the result
    sigint = signal.getsignal(signal.SIGINT)
    try:
        _child_main(sender, os.getppid(), None, (), sum, ([1, 2],), {})
    finally:
        signal.signal(signal.SIGINT, sigint)
    assert "Traceback" not in capfd.readouterr().err


def test_cli_bad_config(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text("[bars]\nlookback = 3\n")
    write_ticks(tmp_path / "EURUSD_2020.parquet", rows=10)
    result = run_cli("--vast-mode", "--generate-base", "--input-dir", str(tmp_path), "--config", str(config))
    assert_usage_error(result, f"Unknown key 'lookback' in [bars] of {config}; known keys: timeframes_min")


def test_cli_missing_config_file(tmp_path):
    write_ticks(tmp_path / "EURUSD_2020.parquet", rows=10)
    result = run_cli("--vast-mode", "--generate-base", "--input-dir", str(tmp_path),
                     "--config", str(tmp_path / "absent.toml"))
    assert_usage_error(result, f"Config file not found: {tmp_path / 'absent.toml'}")


def test_cli_pairs_not_found(tmp_path):
    write_ticks(tmp_path / "EURUSD_2020.parquet", rows=10)
    result = run_cli("--vast-mode", "--generate-base", "--input-dir", str(tmp_path), "--pairs", "xauusd")
    assert_usage_error(result, "--pairs: no tick file for XAUUSD in the input folder (available: EURUSD_2020)")


def test_cli_invalid_parallel_pairs(tmp_path):
    result = run_cli("--vast-mode", "--generate-base", "--parallel-pairs", "0")
    assert_usage_error(result, "argument --parallel-pairs: expected a whole number of at least 1, got 0")


def test_cli_vast_only_option_without_vast_mode(tmp_path):
    parquet = write_ticks(tmp_path / "EURUSD_2020.parquet", rows=10)
    result = run_cli("--parquet", str(parquet), "--generate-base", "--dry-run")
    assert_usage_error(result, "--dry-run only applies with --vast-mode")


def test_cli_single_pair_bad_name(tmp_path):
    parquet = write_ticks(tmp_path / "eurusd2020.parquet", rows=10)
    result = run_cli("--parquet", str(parquet), "--generate-base", "--output-dir", str(tmp_path / "out"))
    assert_usage_error(result, "Invalid tick file name 'eurusd2020.parquet'")


def test_cli_dry_run_writes_nothing(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    write_ticks(folder / "EURUSD_2020.parquet", rows=100)
    result = run_cli("--vast-mode", "--generate-base", "--input-dir", str(folder), "--dry-run",
                     "--output-dir", str(tmp_path / "out"), "--max-workers", "1")
    assert result.returncode == 0, result.stderr
    assert "Workers per pair:   1" in result.stdout
    assert "EURUSD_2020  100 ticks" in result.stdout
    assert "Dry run: nothing was run." in result.stdout
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- worker processes


@pytest.mark.parametrize("workers", [1, 2])
def test_max_workers_caps_threads_in_pair_process(tmp_path, workers):
    files = pair_files(tmp_path, ["EURUSD_2020"])
    summary = vast_mode.run_vast_mode(files, "generate-base", tmp_path / "out", Config(), parallel_pairs=1,
                                      workers_per_pair=workers, stream=io.StringIO(),
                                      job_function=probe_threads_job)
    result = summary.results[0]
    assert result.ok, result.message
    report = json.loads(result.message)
    assert report["pid"] != os.getpid()
    assert report["numba"] == workers
    assert report["arrow_cpu"] == workers
    assert report["arrow_io"] == workers
    assert report["omp_env"] == str(workers)
    assert all(threads <= workers for threads in report["blas"]), report["blas"]


def test_failing_and_crashing_pairs_do_not_stop_others(tmp_path, capfd):
    names = ["AUDUSD_2020", "EURUSD_2020", "GBPUSD_2013", "NZDUSD_2014", "USDJPY_2013"]
    run_logs = vast_mode.new_run_logs(tmp_path / "out")
    out = io.StringIO()
    summary = vast_mode.run_vast_mode(pair_files(tmp_path, names), "generate-base", tmp_path / "out", Config(),
                                      parallel_pairs=2, workers_per_pair=1, stream=out,
                                      job_function=flaky_job, run_logs=run_logs)
    by_pair = {r.pair_year: r for r in summary.results}
    assert sorted(by_pair) == names
    assert summary.total == 5
    assert summary.failed == 2
    for name in ("AUDUSD_2020", "EURUSD_2020", "NZDUSD_2014"):
        assert by_pair[name].ok, by_pair[name].message
    assert by_pair["GBPUSD_2013"].message == "ValueError: bid column has 3 NaN rows"
    assert re.fullmatch(r"pair process \d+ exited with code 3; its outputs are not marked complete, "
                        r"so a rerun computes the pair again", by_pair["USDJPY_2013"].message)

    lines = [line for line in out.getvalue().splitlines() if not line.startswith("Progress: ")]
    assert len(lines) == 5
    assert "\u274c" in next(line for line in lines if "GBPUSD_2013" in line)
    assert "GBPUSD_2013 - generate-base failed: ValueError: bid column has 3 NaN rows" in out.getvalue()
    assert "USDJPY_2013 - generate-base failed: pair process " in out.getvalue()
    assert [line.split("]")[0].split("[")[1] for line in lines] == [f"{i}/5" for i in range(1, 6)]

    # Tracebacks go to the log file only.
    log_text = run_logs.log_path.read_text()
    assert "Traceback" in log_text
    assert "second line that must not reach the screen" in log_text
    captured = capfd.readouterr()
    assert "Traceback" not in captured.err
    assert "second line that must not reach the screen" not in captured.err

    events = [json.loads(line) for line in run_logs.ledger_path.read_text().splitlines()]
    ends = {e["pair"]: e for e in events if e["event"] == "end"}
    assert sorted(ends) == names
    assert ends["USDJPY_2013"]["ok"] is False
    assert ends["AUDUSD_2020"]["ok"] is True
    assert {e["pair"] for e in events if e["event"] == "start"} == set(names)


def test_crash_without_ledger_fails_only_crashing_pair(tmp_path):
    names = ["EURUSD_2020", "USDJPY_2013", "AUDUSD_2020"]
    summary = vast_mode.run_vast_mode(pair_files(tmp_path, names), "generate-base", tmp_path / "out", Config(),
                                      parallel_pairs=2, workers_per_pair=1, stream=io.StringIO(),
                                      job_function=flaky_job)
    failed = [r.pair_year for r in summary.results if not r.ok]
    assert failed == ["USDJPY_2013"]
    assert summary.successful == 2


def test_every_pair_crashing_ends(tmp_path):
    names = ["EURUSD_2020", "GBPUSD_2013", "USDJPY_2013"]
    run_logs = vast_mode.new_run_logs(tmp_path / "out")
    summary = vast_mode.run_vast_mode(pair_files(tmp_path, names), "generate-base", tmp_path / "out", Config(),
                                      parallel_pairs=2, workers_per_pair=1, stream=io.StringIO(),
                                      job_function=crash_job, run_logs=run_logs)
    assert sorted(r.pair_year for r in summary.results) == names
    assert summary.failed == 3
    for result in summary.results:
        assert re.match(r"pair process \d+ exited with code 7;", result.message), result.message


def test_pair_lines_fall_back_to_ascii(tmp_path):
    stream = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    names = ["EURUSD_2020", "GBPUSD_2013"]
    summary = vast_mode.run_vast_mode(pair_files(tmp_path, names), "generate-base", tmp_path / "out", Config(),
                                      parallel_pairs=1, workers_per_pair=1, stream=stream, job_function=flaky_job)
    vast_mode.print_summary(summary, stream=stream)
    stream.seek(0)
    text = stream.read()
    assert "OK [1/2] EURUSD_2020 - generate-base complete (" in text
    assert "FAIL [2/2] GBPUSD_2013 - generate-base failed: ValueError: bid column has 3 NaN rows" in text
    assert "  Failed: 1\n" in text


def test_run_pair_returns_failure_instead_of_raising(tmp_path, monkeypatch):
    # In this process the thread caps would leak into the tests that run after this one.
    monkeypatch.setattr(vast_mode, "_setup_worker_environment", lambda workers: None)
    result = vast_mode.run_pair(flaky_job, "search-light", tmp_path / "GBPUSD_2013.parquet", tmp_path, Config())
    assert not result.ok
    assert result.pair_year == "GBPUSD_2013"
    assert result.job == "search-light"
    assert result.message == "ValueError: bid column has 3 NaN rows"


def test_synthetic_marker_reaches_results(tmp_path):
    out = io.StringIO()
    summary = vast_mode.run_vast_mode(pair_files(tmp_path, ["EURUSD_2020", "GBPUSD_2013"]), "generate-base",
                                      tmp_path / "out", Config(), 1, 1, stream=out, job_function=ok_job,
                                      synthetic={"GBPUSD_2013": True})
    assert all(r.synthetic for r in summary.results)
    assert out.getvalue().count("[synthetic data]") == 2
    summary_text = io.StringIO()
    vast_mode.print_summary(summary, stream=summary_text)
    assert "Results of 2 of 2 pairs are on SYNTHETIC data" in summary_text.getvalue()


def test_one_line_reason_keeps_long_first_line():
    first_line = ("Tick file /data/EURUSD_2024.parquet: 5000 of 5000 rows (100.00 %) are invalid, above the "
                  "limit of 1.00 %: 0 with a missing price, 0 with a zero or negative price, 5000 with the "
                  "bid above the ask, 0 with a missing timestamp. Fix the source file, or raise [ticks] "
                  "max_invalid_fraction in the configuration if these rows may be dropped.")
    assert len(first_line) > 300
    reason = vast_mode._one_line_reason(ValueError(first_line + "\nsecond line"))
    assert reason == "ValueError: " + first_line


def test_one_line_reason_cuts_huge_line_at_word():
    words = " ".join(f"word{i:04d}" for i in range(500))
    reason = vast_mode._one_line_reason(ValueError(words))
    assert len(reason) <= vast_mode.MAX_REASON_CHARS
    assert reason.endswith(" ... (cut, the run log has the full message)")
    kept_words = reason.removeprefix("ValueError: ").removesuffix(" ... (cut, the run log has the full message)")
    assert words.startswith(kept_words + " ")


def test_unreadable_files_listed_in_summary(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    # Crossed quotes fail validation, and a cut-off file fails to open although its name is valid.
    crossed = tmp_path / "EURUSD_2020.parquet"
    timestamps = pd.date_range("2020-01-06 08:00", periods=200, freq="1s", tz="UTC").as_unit("ns")
    pq.write_table(pa.table({"timestamp": timestamps, "bid": np.full(200, 1.1001), "ask": np.full(200, 1.1)}),
                   crossed)
    good = write_ticks(tmp_path / "AUDUSD_2020.parquet")
    cut_off = tmp_path / "GBPUSD_2020.parquet"
    cut_off.write_bytes(good.read_bytes()[:-20])

    files = pair_files(tmp_path, ["AUDUSD_2020", "EURUSD_2020", "GBPUSD_2020"])
    summary = vast_mode.run_vast_mode(files, "generate-base", tmp_path / "out", Config(), 1, 1,
                                      stream=io.StringIO(), job_function=load_ticks_job)
    text = io.StringIO()
    vast_mode.print_summary(summary, stream=text)
    lines = text.getvalue().splitlines()

    assert "  Failed: 2" in lines
    failed_at = lines.index("  Failed pairs:")
    failed = {line.split(":")[0].strip(): line for line in lines[failed_at + 1:failed_at + 3]}
    assert sorted(failed) == ["EURUSD_2020", "GBPUSD_2020"]
    assert failed["EURUSD_2020"].endswith("if these rows may be dropped.")
    assert "200 with the bid above the ask" in failed["EURUSD_2020"]
    assert "TickDataError: Cannot read tick file" in failed["GBPUSD_2020"]
    assert failed["GBPUSD_2020"].endswith("Write the ticks as a parquet file with timestamp, bid and ask columns.")
    assert ".." not in failed["GBPUSD_2020"]
    assert "AUDUSD_2020" not in text.getvalue()


def test_output_dir_that_is_a_file_is_usage_error(tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    result = subprocess.run([sys.executable, str(MAIN), "--vast-mode", "--input-dir", str(tmp_path),
                             "--generate-base", "--output-dir", str(blocker)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert f"Output path {blocker} is a file, not a folder" in result.stderr


def test_long_pair_prints_heartbeat(tmp_path, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setattr(vast_mode, "HEARTBEAT_SECONDS", 0.2)
    out = io.StringIO()
    with ThreadPoolExecutor(max_workers=1) as executor:
        summary = vast_mode.run_vast_mode([tmp_path / "EURUSD_2020.parquet"], "generate-base", tmp_path / "out",
                                          Config(), 1, 1, executor=executor, stream=out, job_function=slow_job)
    assert summary.failed == 0
    heartbeats = [line for line in out.getvalue().splitlines() if line.startswith("... [0/1] done")]
    assert heartbeats
    assert "1 running (EURUSD_2020)" in heartbeats[0]


# ----------------------------------------------------------------------------- executors other than the pool


def test_make_cluster_plan_one_pair_per_dask_worker(tmp_path):
    files = pair_files(tmp_path, ["EURUSD_2020", "GBPUSD_2020", "USDJPY_2020"])
    for pair_file in files:
        write_ticks(pair_file.path, rows=1000)

    plan = vast_mode.make_cluster_plan(files, "generate-base", dask_workers=2, threads_per_worker=8)
    assert plan.parallel_pairs == 2
    assert plan.workers_per_pair == 8
    assert plan.workers.limited_by == "dask"
    assert plan.total_ticks == 3000

    requested = vast_mode.make_cluster_plan(files, "generate-base", dask_workers=2, threads_per_worker=8,
                                            max_workers=3)
    assert requested.workers_per_pair == 3
    more_workers_than_pairs = vast_mode.make_cluster_plan(files, "generate-base", dask_workers=40,
                                                          threads_per_worker=1)
    assert more_workers_than_pairs.parallel_pairs == 3
    assert more_workers_than_pairs.workers.limited_by == "pairs"


def test_banner_names_the_cluster(tmp_path):
    write_ticks(tmp_path / "EURUSD_2020.parquet", rows=100)
    scan = scan_input_dir(tmp_path)
    plan = vast_mode.make_cluster_plan(scan.valid, "generate-base", dask_workers=4, threads_per_worker=2)
    out = io.StringIO()
    vast_mode.print_resources_banner(fake_resources(cores=2), scan, plan, "generate-base", out,
                                     cluster="Dask scheduler tcp://127.0.0.1:8786: 4 workers x 2 threads")
    lines = out.getvalue().splitlines()
    assert lines[3] == "Runs on:            Dask scheduler tcp://127.0.0.1:8786: 4 workers x 2 threads"
    assert "Parallel pairs:     1 (one per pair)" in lines


def test_submit_error_fails_only_its_pair(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    class RejectingGBPUSD(ThreadPoolExecutor):
        def submit(self, fn, *args, **kwargs):
            if Path(args[2]).name.startswith("GBPUSD"):
                raise TypeError("cannot pickle '_thread.lock' object")
            return super().submit(fn, *args, **kwargs)

    paths = [tmp_path / f"{symbol}_2020.parquet" for symbol in ("EURUSD", "GBPUSD", "USDJPY")]
    with RejectingGBPUSD(max_workers=2) as executor:
        summary = vast_mode.run_vast_mode(paths, "generate-base", tmp_path / "out", Config(), 2, 1,
                                          executor=executor, stream=io.StringIO(), job_function=ok_job)
    by_pair = {result.pair_year: result for result in summary.results}
    assert summary.failed == 1
    assert by_pair["GBPUSD_2020"].message == "not submitted: TypeError: cannot pickle '_thread.lock' object"
    assert by_pair["EURUSD_2020"].ok
    assert by_pair["USDJPY_2020"].ok


def test_executor_failure_reasons():
    from concurrent.futures import CancelledError

    class KilledWorker(Exception):
        """Stand-in with the name and message form of distributed.scheduler.KilledWorker."""

    killed = KilledWorker("Attempted to run task 'run_pair-1' on 4 different workers, but all those workers died "
                          "while running it. The last worker that attempt to run the task was tcp://127.0.0.1:5. "
                          "Inspecting worker logs is often a good next step.")
    reason = vast_mode._executor_failure_reason(killed)
    assert reason.startswith("Dask worker process died while running this pair (KilledWorker: Attempted to run "
                             "task 'run_pair-1' on 4 different workers, but all those workers died while running it)")
    assert "Inspecting" not in reason
    assert vast_mode._executor_failure_reason(CancelledError()).startswith("cancelled before it finished")
    assert vast_mode._executor_failure_reason(OSError("disk full")) == "OSError: disk full"


def test_heartbeat_lists_unfinished_when_no_future_runs(tmp_path, monkeypatch):
    from concurrent.futures import Future, ThreadPoolExecutor

    class NeverRunningFutures(ThreadPoolExecutor):
        """Returns futures that never report running(), as Dask's executor does."""

        def submit(self, fn, *args, **kwargs):
            inner = super().submit(fn, *args, **kwargs)
            outer: Future = Future()
            inner.add_done_callback(lambda done: outer.set_result(done.result()))
            return outer

    monkeypatch.setattr(vast_mode, "HEARTBEAT_SECONDS", 0.2)
    out = io.StringIO()
    with NeverRunningFutures(max_workers=1) as executor:
        summary = vast_mode.run_vast_mode([tmp_path / "EURUSD_2020.parquet"], "generate-base", tmp_path / "out",
                                          Config(), 1, 1, executor=executor, stream=out, job_function=slow_job)
    assert summary.failed == 0
    heartbeats = [line for line in out.getvalue().splitlines() if line.startswith("... [0/1] done")]
    assert heartbeats
    assert "1 unfinished (EURUSD_2020)" in heartbeats[0]


def test_each_kind_of_pair_death_fails_only_its_pair(tmp_path):
    names = ["AUDUSD_2020", "EURUSD_2020", "GBPUSD_2020", "NZDUSD_2020", "USDJPY_2020"]
    run_logs = vast_mode.new_run_logs(tmp_path / "out")
    out = io.StringIO()
    summary = vast_mode.run_vast_mode(pair_files(tmp_path, names), "generate-base", tmp_path / "out", Config(),
                                      parallel_pairs=2, workers_per_pair=1, stream=out, job_function=dying_job,
                                      run_logs=run_logs)
    by_pair = {r.pair_year: r for r in summary.results}
    assert summary.failed == 3
    assert by_pair["EURUSD_2020"].message == "survived"
    assert by_pair["NZDUSD_2020"].message == "survived"
    assert re.match(r"pair process \d+ killed by signal SIGKILL \(often the kernel's out-of-memory killer\);",
                    by_pair["GBPUSD_2020"].message), by_pair["GBPUSD_2020"].message
    assert re.match(r"pair process \d+ exited with code 9;", by_pair["USDJPY_2020"].message)
    assert by_pair["AUDUSD_2020"].message.startswith("out of memory (MemoryError: Unable to allocate 2.00 GiB")
    assert by_pair["AUDUSD_2020"].message.endswith("lower --parallel-pairs, or run this pair alone on a machine "
                                                   "with more memory")

    events = [json.loads(line) for line in run_logs.ledger_path.read_text().splitlines()]
    ends = {e["pair"]: e for e in events if e["event"] == "end"}
    assert ends["GBPUSD_2020"]["status"] == "failed"
    assert ends["GBPUSD_2020"]["error"]["type"] == "PairProcessDied"
    assert ends["AUDUSD_2020"]["error"]["type"] == "MemoryError"
    assert "Traceback" in ends["AUDUSD_2020"]["error"]["traceback"]
    assert ends["EURUSD_2020"]["status"] == "ok"
    starts = {e["pair"]: e["pid"] for e in events if e["event"] == "start"}
    assert len(set(starts.values())) == 5, "each pair runs in its own process"


def test_progress_line_counts_pairs(tmp_path):
    out = io.StringIO()
    vast_mode.run_vast_mode(pair_files(tmp_path, ["EURUSD_2020", "GBPUSD_2013", "USDJPY_2020"]), "generate-base",
                            tmp_path / "out", Config(), 1, 1, stream=out, job_function=ok_job)
    progress = [line for line in out.getvalue().splitlines() if line.startswith("Progress: ")]
    assert len(progress) == 3
    assert re.fullmatch(r"Progress: 1/3 pairs done \(0 failed\), [01] running, [12] queued; elapsed \d+s, "
                        r"estimate unknown", progress[0]), progress[0]
    assert progress[-1].startswith("Progress: 3/3 pairs done (0 failed), 0 running, 0 queued; elapsed ")


def test_memory_budget_holds_second_pair(tmp_path):
    from fxresearch.pair_executor import PairProcessExecutor

    holds = []
    executor = PairProcessExecutor(2, memory_budget_bytes=3 * GB, on_hold=holds.append)
    try:
        first = executor.submit_weighted(2 * GB, time.sleep, 0.5)
        second = executor.submit_weighted(2 * GB, time.sleep, 0.1)
        first.result(timeout=60)
        second.result(timeout=60)
    finally:
        executor.shutdown()
    assert holds and holds[0].startswith("memory: 1 running pairs need an estimated 2.00 GB and the next one "
                                         "2.00 GB, above the 3.00 GB budget")


def test_load_admission_reasons():
    readings = iter([(2.5, 40.0), (0.5, 95.0), (0.5, 40.0)])
    check = vast_mode.load_admission(1.0, 85.0, measure=lambda: next(readings))
    assert check() == "load 2.50 per core is above --max-load 1"
    assert check() == "memory use 95 % is above --max-memory-percent 85"
    assert check() is None


def test_measurements_replace_builtin_estimates(tmp_path):
    from fxresearch.resources import JobEstimate, Measurements

    measurements = Measurements()
    measurements.record("generate-base", 1_000, 1.0, 2, 300_000_000)
    measurements.record("generate-base", 2_000_000, 4.5, 2, 700_000_000)
    measurements.save(tmp_path)
    estimate = Measurements.load(tmp_path).estimate("generate-base")
    assert estimate.process_bytes == 300_000_000
    assert estimate.bytes_per_tick == pytest.approx(200.0)
    assert estimate.ticks_per_second_per_worker == pytest.approx(2_000_000 / 4.0 / 2)
    assert estimate.throughput_source == "measured on 1 earlier pairs"
    assert Measurements.load(tmp_path / "none").estimate("search-light") == JobEstimate.builtin("search-light")

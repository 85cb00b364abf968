"""Resume after a killed run, Ctrl-C, --retry-failed and orphan pair processes, through main.py.

Each test starts ``main.py`` in a subprocess on a small synthetic sample, as a user would,
and watches the run ledger to act at a known point of the run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from fxresearch.config import load_config
from fxresearch.sample import write_sample_set

REPO_ROOT = Path(__file__).resolve().parents[1]
MAIN = REPO_ROOT / "main.py"
PAIRS = ["AUDUSD_2025", "EURUSD_2025", "GBPUSD_2025"]
SMALL_CONFIG = """\
[sample]
weeks = 1
ticks_per_hour = 150
year = 2025
pairs = ["EURUSD", "GBPUSD", "AUDUSD"]
"""


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> tuple[Path, Path]:
    """Return (folder with three small sample pairs, config TOML path)."""
    root = tmp_path_factory.mktemp("resume")
    config_path = root / "small.toml"
    config_path.write_text(SMALL_CONFIG)
    folder = root / "in"
    folder.mkdir()
    write_sample_set(folder, load_config(config_path).sample)
    return folder, config_path


def main_args(folder: Path, config: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, str(MAIN), "--vast-mode", "--input-dir", str(folder), "--generate-base",
            "--config", str(config), "--output-dir", str(out), *extra]


def run_main(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, encoding="utf-8", errors="replace",
                          timeout=300, cwd=REPO_ROOT)


def ledger_events(out: Path, index: int = -1) -> list[dict]:
    ledgers = sorted((out / "runs").glob("*.jsonl"))
    if not ledgers:
        return []
    return [json.loads(line) for line in ledgers[index].read_text().splitlines() if line.strip()]


def wait_for_finished_and_running(out: Path, process: subprocess.Popen, timeout: float = 120.0) -> list[dict]:
    """Poll the ledger until one pair has ended well and another has started after it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the run ended before it could be stopped mid-run"
        try:
            events = ledger_events(out)
        except (json.JSONDecodeError, OSError):
            events = []
        ends = [i for i, e in enumerate(events) if e["event"] == "end" and e["status"] == "ok"]
        if ends and any(e["event"] == "start" for e in events[ends[0] + 1:]):
            return events
        time.sleep(0.05)
    raise AssertionError("no pair finished while another ran within the timeout")


def process_gone(pid: int, timeout: float) -> bool:
    """Return True once ``pid`` no longer runs; a zombie waiting for its reaper counts as gone."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.1)
    return False


def parquet_tables(out: Path, pair: str) -> dict[str, pd.DataFrame]:
    return {str(path.relative_to(out)): pd.read_parquet(path) for path in sorted((out / pair).rglob("*.parquet"))}


def test_killed_run_resumes_unfinished_pairs_only(sample, tmp_path):
    folder, config = sample
    out = tmp_path / "out"
    process = subprocess.Popen(main_args(folder, config, out, "--parallel-pairs", "1"), cwd=REPO_ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    events = wait_for_finished_and_running(out, process)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)

    events = ledger_events(out)
    finished = {e["pair"] for e in events if e["event"] == "end" and e["status"] == "ok"}
    started = {e["pair"]: e["pid"] for e in events if e["event"] == "start"}
    running = set(started) - finished
    assert len(finished) >= 1
    assert len(running) == 1

    # The orphaned pair process notices its parent is gone and exits on its own.
    [orphan_pid] = [started[pair] for pair in running]
    assert process_gone(orphan_pid, timeout=10.0), f"pair process {orphan_pid} still runs after its parent died"

    rerun = run_main(*main_args(folder, config, out, "--parallel-pairs", "2"))
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert (f"Resume:             {len(finished)} of 3 pairs are current and will be skipped"
            in rerun.stdout), rerun.stdout
    second = ledger_events(out)
    assert {e["pair"] for e in second if e["event"] == "start"} == set(PAIRS) - finished
    assert {e["pair"] for e in second if e["status"] == "skipped"} == finished
    [skipped_line] = [line for line in rerun.stdout.splitlines() if "Skipped (outputs current)" in line]
    assert skipped_line.startswith(f"  Skipped (outputs current): {len(finished)} (")
    assert set(skipped_line.split("(")[-1].rstrip(")").split(", ")) == finished
    assert not list(out.rglob("*.tmp"))

    reference_out = tmp_path / "reference"
    reference = run_main(*main_args(folder, config, reference_out, "--parallel-pairs", "2"))
    assert reference.returncode == 0, reference.stdout + reference.stderr
    for pair in PAIRS:
        resumed, uninterrupted = parquet_tables(out, pair), parquet_tables(reference_out, pair)
        assert sorted(resumed) == sorted(uninterrupted), pair
        assert len(resumed) >= 10, pair
        for name, table in uninterrupted.items():
            pd.testing.assert_frame_equal(resumed[name], table, check_exact=True, obj=name)


@pytest.mark.parametrize("signum, exit_code, by", [(signal.SIGINT, 130, "Ctrl-C"), (signal.SIGTERM, 143, "SIGTERM")])
def test_ctrl_c_stops_run_with_summary(sample, tmp_path, signum, exit_code, by):
    """Ctrl-C and SIGTERM (docker stop, timeout, a host shutting down) end the run the same way."""
    folder, config = sample
    out = tmp_path / "out"
    process = subprocess.Popen(main_args(folder, config, out, "--parallel-pairs", "1"), cwd=REPO_ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8",
                               errors="replace")
    wait_for_finished_and_running(out, process)
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=60)

    assert process.returncode == exit_code, stdout + stderr
    assert f"Interrupted by {by}: cancelling queued pairs and stopping running ones ..." in stdout
    assert "Summary: generate-base (INTERRUPTED)" in stdout
    assert "  Finished (1): " in stdout
    assert "  Stopped while running (1): " in stdout
    assert "  Not started (1): " in stdout
    assert "KeyboardInterrupt" not in stderr
    assert not list(out.rglob("*.tmp"))

    events = ledger_events(out)
    statuses = sorted(e["status"] for e in events if e["event"] == "end")
    assert statuses == ["interrupted", "not started", "ok"]
    stopped_pid = next(e["pid"] for e in events if e["event"] == "start"
                       and e["pair"] == next(x["pair"] for x in events if x.get("status") == "interrupted"))
    assert process_gone(stopped_pid, timeout=5.0)


def test_retry_failed_reruns_only_failed_pairs(sample, tmp_path):
    folder, config = sample
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(folder / "EURUSD_2025.parquet", inputs)
    (inputs / "GBPUSD_2025.parquet").write_bytes(b"PAR1 truncated")
    out = tmp_path / "out"

    first = run_main(*main_args(inputs, config, out, "--parallel-pairs", "2"))
    assert first.returncode == 1, first.stdout + first.stderr
    assert "GBPUSD_2025 - generate-base failed: StageError: GBPUSD_2025: stage ticks_report failed: Cannot read " \
        "tick file" in first.stdout

    # The user replaces the broken file and retries the failures only.
    shutil.copy(folder / "GBPUSD_2025.parquet", inputs)
    retry = run_main(*main_args(inputs, config, out, "--retry-failed"))
    assert retry.returncode == 0, retry.stdout + retry.stderr
    assert "Retry failed:       1 pair failed or unfinished in " in retry.stdout
    assert ": GBPUSD_2025 (failed)" in retry.stdout
    assert "Selected by --retry-failed: 1 of 2 valid files" in retry.stdout
    events = ledger_events(out)
    assert [e["pair"] for e in events if e["event"] == "start"] == ["GBPUSD_2025"]
    assert "EURUSD_2025" not in retry.stdout.split("=" * 72)[-1]

    nothing = run_main(*main_args(inputs, config, out, "--retry-failed"))
    assert nothing.returncode == 0, nothing.stdout + nothing.stderr
    assert "Nothing to retry" in nothing.stdout


def test_pair_process_exits_when_parent_dies(tmp_path):
    script = (
        "import sys, time\n"
        "from fxresearch.pair_executor import PairProcessExecutor\n"
        "executor = PairProcessExecutor(1)\n"
        "executor.submit(time.sleep, 120)\n"
        "while not executor.running_pids():\n"
        "    time.sleep(0.05)\n"
        "print(executor.running_pids()[0], flush=True)\n"
        "time.sleep(120)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    child_pid = int(parent.stdout.readline())
    parent.kill()
    parent.wait(timeout=10)
    assert process_gone(child_pid, timeout=10.0), f"pair process {child_pid} outlived its parent"
    if not process_gone(child_pid, timeout=0.1):
        os.kill(child_pid, signal.SIGKILL)


def test_retry_failed_takes_failed_stopped_and_unfinished_pairs(tmp_path):
    from fxresearch import ledger, resume

    path = ledger.runs_dir(tmp_path) / "20260101T000000Z-1.jsonl"
    events = [("start", "AUDUSD_2025", "started"), ("end", "AUDUSD_2025", "ok"),
              ("start", "EURUSD_2025", "started"), ("end", "EURUSD_2025", "failed"),
              ("start", "GBPUSD_2025", "started"), ("end", "GBPUSD_2025", "interrupted"),
              ("end", "NZDUSD_2025", "not started"), ("end", "USDCAD_2025", "skipped"),
              # Killed with SIGKILL: a start line and no end line.
              ("start", "USDJPY_2025", "started")]
    for event, pair, status in events:
        ledger.append_event(path, event, pair, "generate-base", status)
    found, to_retry = resume.pairs_to_retry(tmp_path)
    assert found == path
    assert to_retry == {"EURUSD_2025": "failed", "GBPUSD_2025": "interrupted", "USDJPY_2025": "started"}


def test_report_describes_run_that_computed_results_after_skip_only_rerun(tmp_path):
    from fxresearch import ledger
    from fxresearch.leaderboard import build_leaderboard
    from fxresearch.report import _summary_section

    computing = ledger.runs_dir(tmp_path) / "20260101T000000Z-1.jsonl"
    ledger.append_event(computing, "start", "EURUSD_2025", "search-light", "started")
    ledger.append_event(computing, "end", "EURUSD_2025", "search-light", "ok", seconds=42.0, message="searched")
    rerun = ledger.runs_dir(tmp_path) / "20260102T000000Z-2.jsonl"
    ledger.append_event(rerun, "end", "EURUSD_2025", "search-light", "skipped", message="outputs current")

    board = build_leaderboard(tmp_path)
    assert board.run is not None and board.run.run_id == "20260101T000000Z-1"
    assert board.later_current_run is not None and board.later_current_run.run_id == "20260102T000000Z-2"
    section = _summary_section(board, tmp_path)
    assert "Run <code>20260101T000000Z-1</code>" in section
    assert "A later run, 20260102T000000Z-2 (started " in section
    assert "found the outputs of its 1 pair current and computed nothing." in section

"""Bad input through a VAST run: each kind is either fixed and counted, or fails its own pair only.

One run contains every kind of bad file beside good ones. The pair jobs below load the ticks and
write the ticks report, the first stage of every real job, in their own pair processes; the
output faults patch a write inside the pair process only, because CI runs as root and a
real unwritable folder or full disk cannot be made there.
"""

from __future__ import annotations

import errno
import io
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import vast_mode
from fxresearch.config import Config
from fxresearch.naming import scan_input_dir

NS_PER_SECOND = 1_000_000_000
# 2024-03-04 10:00:00 UTC in ns since the epoch.
START_NS = 1_709_546_400_000_000_000
ROWS = 400


def ticks_report_job(path: Path, output_dir: Path, config: Config, force_rerun: bool, workers: int) -> dict:
    """Load the ticks and write the pair's ticks report, as the first stage of every job does."""
    from fxresearch import artifacts
    from fxresearch.ticks import load_ticks, write_ticks_report

    ticks = load_ticks(path, config)
    write_ticks_report(ticks, artifacts.pair_dir(output_dir, ticks.pair_year))
    return {"message": f"{ticks.n} ticks kept", "pair_year": ticks.pair_year}


def unwritable_folder_job(path: Path, output_dir: Path, config: Config, force_rerun: bool, workers: int) -> dict:
    """Act as if the pair's output folder denies writing: opening any new file raises EACCES."""
    real_open = os.open

    def denied(file, flags, *args, **kwargs):
        if flags & os.O_CREAT and str(output_dir) in str(file):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(file))
        return real_open(file, flags, *args, **kwargs)

    os.open = denied
    return ticks_report_job(path, output_dir, config, force_rerun, workers)


def disk_full_job(path: Path, output_dir: Path, config: Config, force_rerun: bool, workers: int) -> dict:
    """Run the real generate-base while the disk fills: every parquet write stops half-way with ENOSPC."""
    import pyarrow.parquet as parquet

    from fxresearch.base import generate_base

    def fill_disk(table, where, *args, **kwargs):
        Path(where).write_bytes(b"PAR1 half a file")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(where))

    parquet.write_table = fill_disk
    return generate_base(path, output_dir, config, force_rerun=force_rerun)


def good_columns(rows: int = ROWS) -> dict:
    timestamp_ns = START_NS + np.arange(rows, dtype=np.int64) * NS_PER_SECOND
    bid = 1.1 + (np.arange(rows) % 7) * 1e-5
    return {"timestamp": pa.array(timestamp_ns, pa.timestamp("ns", tz="UTC")), "bid": bid, "ask": bid + 2e-5}


def write(folder: Path, name: str, columns: dict) -> Path:
    pq.write_table(pa.table(columns), folder / name)
    return folder / name


@pytest.fixture(scope="module")
def bad_input_run(tmp_path_factory) -> tuple[Path, dict, str, dict]:
    """Run one VAST job over a folder holding every kind of bad file; return the folder, results, output and ends."""
    folder = tmp_path_factory.mktemp("bad_input")
    inputs = folder / "in"
    inputs.mkdir()

    # Fixed and counted: duplicates, rows out of order and a small share of invalid rows.
    columns = good_columns()
    timestamp_ns = START_NS + np.arange(ROWS, dtype=np.int64) * NS_PER_SECOND
    timestamp_ns[[10, 11]] = timestamp_ns[[11, 10]]
    bid = np.array(columns["bid"])
    bid[50] = np.nan
    stamps = np.concatenate([timestamp_ns, timestamp_ns[:3]])
    bids = np.concatenate([bid, bid[:3]])
    write(inputs, "EURUSD_2024.parquet", {"timestamp": pa.array(stamps, pa.timestamp("ns", tz="UTC")),
                                          "bid": bids, "ask": np.concatenate([bid, bid[:3]]) + 2e-5})
    # Integer epochs in ms, µs and ns, and times without a zone.
    for symbol, per_unit in (("GBPUSD", 1_000_000), ("USDJPY", 1_000), ("AUDUSD", 1)):
        columns = good_columns()
        stored = (START_NS + np.arange(ROWS, dtype=np.int64) * NS_PER_SECOND) // per_unit
        price = 150.0 if symbol == "USDJPY" else 1.1
        write(inputs, f"{symbol}_2024.parquet", {"timestamp": pa.array(stored, pa.int64()),
                                                  "bid": np.full(ROWS, price), "ask": np.full(ROWS, price + 0.0002)})
    naive = good_columns()
    naive["timestamp"] = naive["timestamp"].cast(pa.timestamp("ns"))
    write(inputs, "NZDUSD_2024.parquet", naive)

    # Fail their own pair: an empty file, a zero-row file, a truncated file, a text file,
    # missing columns, too many invalid rows, a bad name and two files for one pair and year.
    (inputs / "USDCAD_2024.parquet").write_bytes(b"")
    write(inputs, "USDCHF_2024.parquet", {name: column[:0] for name, column in good_columns().items()})
    whole = write(inputs, "EURGBP_2024.parquet", good_columns()).read_bytes()
    (inputs / "EURGBP_2024.parquet").write_bytes(whole[: len(whole) // 2])
    (inputs / "EURJPY_2024.parquet").write_text("timestamp,bid,ask\n2024-03-04 10:00:00,1.1,1.1002\n")
    write(inputs, "GBPJPY_2024.parquet", {"time": good_columns()["timestamp"], "price": np.full(ROWS, 190.0)})
    crossed = good_columns()
    crossed["ask"] = np.where(np.arange(ROWS) < 40, crossed["bid"] - 1e-4, crossed["ask"])
    write(inputs, "AUDJPY_2024.parquet", crossed)
    write(inputs, "eurusd-2024.parquet", good_columns())
    write(inputs, "EURCHF_2024.parquet", good_columns())
    write(inputs, "EURCHF_2024.PARQUET", good_columns())

    output_dir = folder / "out"
    run_logs = vast_mode.new_run_logs(output_dir)
    scan = scan_input_dir(inputs)
    stream = io.StringIO()
    summary = vast_mode.run_vast_mode(scan.valid, "generate-base", output_dir, Config(), 2, 1, stream=stream,
                                      invalid=scan.invalid, job_function=ticks_report_job, run_logs=run_logs)
    vast_mode.print_summary(summary, run_logs, stream=stream)
    events = [json.loads(line) for line in run_logs.ledger_path.read_text().splitlines()]
    ends = {e["pair"]: e for e in events if e["event"] == "end"}
    # Invalid files are listed apart from the pairs, by file name.
    return output_dir, {r.pair_year: r for r in summary.results + summary.invalid}, stream.getvalue(), ends


def report(output_dir: Path, pair: str) -> dict:
    return json.loads((output_dir / pair / f"{pair}_ticks_report.json").read_text())


def test_duplicates_order_and_invalid_rows_are_fixed_and_counted(bad_input_run):
    output_dir, results, _, _ = bad_input_run
    assert results["EURUSD_2024"].ok, results["EURUSD_2024"].message
    counts = report(output_dir, "EURUSD_2024")
    assert counts["rows_read"] == ROWS + 3
    assert counts["duplicates_dropped"] == 3
    assert counts["out_of_order"] == 2
    assert counts["missing_price"] == 1
    assert counts["rows_kept"] == ROWS - 1


@pytest.mark.parametrize(("pair", "unit"), [("GBPUSD_2024", "milliseconds"), ("USDJPY_2024", "microseconds"),
                                            ("AUDUSD_2024", "nanoseconds")])
def test_integer_epochs_are_read_in_their_unit(bad_input_run, pair, unit):
    output_dir, results, _, _ = bad_input_run
    assert results[pair].ok, results[pair].message
    counts = report(output_dir, pair)
    assert counts["source_timestamp_type"] == f"int64 epoch {unit}"
    assert counts["first_timestamp"] == "2024-03-04T10:00:00+00:00"


def test_times_without_zone_read_as_utc_with_warning(bad_input_run):
    output_dir, results, _, _ = bad_input_run
    assert results["NZDUSD_2024"].ok
    counts = report(output_dir, "NZDUSD_2024")
    assert counts["first_timestamp"] == "2024-03-04T10:00:00+00:00"
    assert counts["warnings"] == ["column 'timestamp' (timestamp[ns]) has no time zone; its times were read as UTC"]


@pytest.mark.parametrize(("pair", "expected"), [
    ("USDCAD_2024", ["USDCAD_2024.parquet as parquet: Parquet file size is 0 bytes",
                     "Write the ticks as a parquet file"]),
    ("USDCHF_2024", ["USDCHF_2024.parquet contains no valid tick (0 rows read)",
                     "Supply a file with at least one row"]),
    ("EURGBP_2024", ["EURGBP_2024.parquet as parquet", "Write the ticks as a parquet file"]),
    ("EURJPY_2024", ["EURJPY_2024.parquet as parquet", "Write the ticks as a parquet file"]),
    ("GBPJPY_2024", ["GBPJPY_2024.parquet has no bid column. Columns found: ['time', 'price']",
                     "Rename the column"]),
    ("AUDJPY_2024", ["AUDJPY_2024.parquet: 40 of 400 rows (10.00 %) are invalid",
                     "raise [ticks] max_invalid_fraction"]),
    ("eurusd-2024.parquet", ["Invalid tick file name 'eurusd-2024.parquet'", "Expected PAIR_YEAR.parquet"]),
    ("EURCHF_2024.parquet", ["Conflicting tick files for EURCHF_2024", "Remove or rename all but one"]),
    ("EURCHF_2024.PARQUET", ["Conflicting tick files for EURCHF_2024", "Remove or rename all but one"]),
])
def test_bad_file_fails_its_pair_with_fix(bad_input_run, pair, expected):
    _, results, output, ends = bad_input_run
    assert not results[pair].ok
    for part in expected:
        assert part in results[pair].message
    assert ends[pair]["status"] == "failed"
    assert f"{pair}: {results[pair].message}" in output


def test_other_pairs_finish_beside_bad_files(bad_input_run):
    _, results, output, _ = bad_input_run
    assert sorted(pair for pair, result in results.items() if result.ok) == [
        "AUDUSD_2024", "EURUSD_2024", "GBPUSD_2024", "NZDUSD_2024", "USDJPY_2024"]
    assert "  Failed: 6\n  Invalid files: 3 " in output


def test_output_faults_fail_their_pair_only(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for symbol in ("EURUSD", "GBPUSD", "USDJPY", "AUDUSD"):
        write(inputs, f"{symbol}_2024.parquet", good_columns(2000))
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    # A file where AUDUSD's output folder should be: a real fault, even for root.
    (output_dir / "AUDUSD_2024").write_text("not a folder")
    files = scan_input_dir(inputs).valid
    jobs = {"EURUSD_2024": ticks_report_job, "GBPUSD_2024": unwritable_folder_job, "USDJPY_2024": disk_full_job,
            "AUDUSD_2024": ticks_report_job}

    results = {}
    for pair_file in files:
        summary = vast_mode.run_vast_mode([pair_file], "generate-base", output_dir, Config(), 1, 1,
                                          stream=io.StringIO(), job_function=jobs[pair_file.pair_year])
        results[pair_file.pair_year] = summary.results[0]

    assert results["EURUSD_2024"].ok
    unwritable = results["GBPUSD_2024"].message
    assert unwritable.startswith("OutputWriteError: Cannot write ")
    assert "GBPUSD_2024_ticks_report.json: Permission denied. The folder " in unwritable
    assert unwritable.endswith("is not writable. Fix its permissions or pass a writable --output-dir.")
    disk_full = results["USDJPY_2024"].message
    assert disk_full.startswith("StageError: USDJPY_2024: stage bars failed: Cannot write ")
    assert "No space left on device. The disk holding " in disk_full
    assert disk_full.endswith("is full. Free space there (or pass another --output-dir) and rerun: finished "
                              "pairs are kept and skipped.")
    blocked = results["AUDUSD_2024"].message
    assert blocked.startswith("OutputWriteError: ")
    assert "A file is in the way of the output folder" in blocked

    # Nothing half-written is left, and the manifest does not list the stage that hit the full disk.
    assert not list(output_dir.rglob("*.tmp"))
    manifest = json.loads((output_dir / "USDJPY_2024" / "manifest.json").read_text())
    assert "ticks_report" in manifest["artifacts"]
    assert "bars" not in manifest["artifacts"]

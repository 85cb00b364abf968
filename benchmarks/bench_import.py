"""Rows per second and peak memory of --convert on a large generated tick CSV.

Writes ``benchmarks/data/EURUSD_ticks_import.csv`` (generic layout, ISO times with ``Z``)
when missing, converts it with ``fxresearch.importing.convert_files`` in this process, and
prints the rows, seconds, rows per second and peak resident memory (``ru_maxrss``).

    PYTHONPATH=. python benchmarks/bench_import.py --rows 10000000
"""

from __future__ import annotations

import argparse
import logging
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from fxresearch.importing import ImportOptions, convert_files

CHUNK_ROWS = 1_000_000


def write_csv(path: Path, rows: int, seed: int = 1) -> None:
    """Write ``rows`` EURUSD ticks of 2024 in time order, about 200 ms apart, as ``timestamp,bid,ask``."""
    rng = np.random.default_rng(seed)
    start = np.datetime64("2024-01-02T00:00:00", "ms")
    time_ms = 0
    price_points = 110_000
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        handle.write("timestamp,bid,ask\n")
        for first in range(0, rows, CHUNK_ROWS):
            n = min(CHUNK_ROWS, rows - first)
            steps_ms = time_ms + np.cumsum(rng.integers(1, 400, n))
            time_ms = int(steps_ms[-1])
            bid_points = price_points + np.cumsum(rng.integers(-2, 3, n))
            price_points = int(bid_points[-1])
            spread = rng.integers(0, 4, n)
            times = np.datetime_as_string(start + steps_ms.astype("timedelta64[ms]"), unit="ms")
            lines = [f"{t}Z,{b / 1e5:.5f},{(b + s) / 1e5:.5f}"
                     for t, b, s in zip(times, bid_points, spread, strict=True)]
            handle.write("\n".join(lines) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="rows of the generated CSV (default 10,000,000)")
    parser.add_argument("--csv", type=Path, default=Path("benchmarks/data/EURUSD_ticks_import.csv"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    if not args.csv.exists():
        started = time.perf_counter()
        write_csv(args.csv, args.rows)
        print(f"wrote {args.csv} ({args.csv.stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - started:.0f} s")
    rss_before_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with tempfile.TemporaryDirectory() as output_dir:
        started = time.perf_counter()
        reports = convert_files([args.csv], output_dir, ImportOptions())
        seconds = time.perf_counter() - started
    rows = sum(report["rows_read"] for report in reports)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"input       {args.csv} ({args.csv.stat().st_size / 1e9:.2f} GB)")
    print(f"rows        {rows:,} read, {sum(r['rows_written'] for r in reports):,} written")
    print(f"time        {seconds:.1f} s, {rows / seconds:,.0f} rows/s")
    print(f"peak RSS    {peak_mb:,.0f} MB (before the conversion: {rss_before_mb:,.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

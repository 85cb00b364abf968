"""Time and peak memory of every generate-base stage on a synthetic year, against a floor.

Usage, from the repository root::

    python benchmarks/make_benchmark_data.py --out benchmarks/data/EURUSD_2025.parquet
    python benchmarks/bench_base.py --data benchmarks/data/EURUSD_2025.parquet

The script first builds the base of a two-week sample pair, which loads (or compiles) every
numba kernel; that time is printed as the compile time. Then it builds the whole base of the
benchmark year into a new folder, stage by stage, recording each stage's wall time and the
peak resident memory of the process during it (sampled every 20 ms). The floor is the least
work any base needs: read the parquet's three columns and build one-minute bid/ask OHLC bars
with plain numpy. The ratio printed is the whole base over the floor.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow.parquet as pq

# Run from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fxresearch import base  # noqa: E402
from fxresearch.config import Config, SampleConfig  # noqa: E402
from fxresearch.sample import write_sample_set  # noqa: E402
from fxresearch.timeutil import datetime_to_ns  # noqa: E402

NS_PER_MINUTE = 60_000_000_000


class PeakMemory:
    """Sample the process's resident memory in a thread and keep the peak since the last reset."""

    def __init__(self, interval_s: float = 0.02) -> None:
        self._process = psutil.Process()
        self._interval_s = interval_s
        self._peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, self._process.memory_info().rss)
            time.sleep(self._interval_s)

    def reset(self) -> None:
        self._peak = self._process.memory_info().rss

    @property
    def peak(self) -> int:
        return max(self._peak, self._process.memory_info().rss)


def floor_seconds(path: Path) -> tuple[float, int, int]:
    """Read the three tick columns and build one-minute bid/ask OHLC bars with plain numpy.

    Returns the seconds taken, the tick count and the bar count.
    """
    started = time.perf_counter()
    table = pq.read_table(path, columns=["timestamp", "bid", "ask"])
    timestamp_ns = datetime_to_ns(table.column("timestamp").to_pandas())
    minute = timestamp_ns // NS_PER_MINUTE
    starts = np.flatnonzero(np.r_[True, minute[1:] != minute[:-1]])
    ends = np.r_[starts[1:], len(minute)] - 1
    bars = {}
    for side in ("bid", "ask"):
        price = table.column(side).to_numpy()
        bars[f"{side}_open"] = price[starts]
        bars[f"{side}_high"] = np.maximum.reduceat(price, starts)
        bars[f"{side}_low"] = np.minimum.reduceat(price, starts)
        bars[f"{side}_close"] = price[ends]
    seconds = time.perf_counter() - started
    return seconds, len(timestamp_ns), len(starts)


def warm_up(config: Config) -> float:
    """Build a two-week sample base in a temporary folder; return the seconds (numba load or compile)."""
    with tempfile.TemporaryDirectory() as folder:
        sample = write_sample_set(Path(folder) / "in", SampleConfig(weeks=2, pairs=("EURUSD",)))[0]
        started = time.perf_counter()
        base.generate_base(sample, Path(folder) / "out", config)
        return time.perf_counter() - started


def run_stages(path: Path, output_dir: Path, config: Config, memory: PeakMemory) -> list[tuple[str, float, int]]:
    """Build every stage of ``path`` into ``output_dir``; return (stage, seconds, peak bytes) rows."""
    rows = []
    memory.reset()
    started = time.perf_counter()
    ctx = base.open_pair(path, output_dir, config, force_rerun=True)
    ctx.ticks  # noqa: B018  load the ticks here, so the load is its own row
    rows.append(("open and load ticks", time.perf_counter() - started, memory.peak))
    for name, (config_hash, depends) in base._stage_specs(config).items():
        memory.reset()
        started = time.perf_counter()
        base._run_stage(ctx, name, config_hash, depends, base._BUILDERS[name])
        rows.append((name, time.perf_counter() - started, memory.peak))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("benchmarks/data/EURUSD_2025.parquet"),
                        help="a PAIR_YEAR.parquet tick file (default benchmarks/data/EURUSD_2025.parquet)")
    args = parser.parse_args(argv)
    if not args.data.exists():
        parser.error(f"{args.data} does not exist; write it first with "
                     f"python benchmarks/make_benchmark_data.py --out {args.data}")

    config = Config()
    print(f"machine: {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.1f} GiB; "
          f"NUMBA_CACHE_DIR={os.environ.get('NUMBA_CACHE_DIR', '(numba default)')}")
    compile_s = warm_up(config)
    print(f"warm-up (numba cache load or compile, two-week sample base): {compile_s:.1f} s")

    floor_s, n_ticks, n_minutes = floor_seconds(args.data)
    floor_s = min(floor_s, floor_seconds(args.data)[0])
    print(f"floor: read {n_ticks:,} ticks and build {n_minutes:,} one-minute bars with numpy: {floor_s:.2f} s")

    with tempfile.TemporaryDirectory() as output_dir, PeakMemory() as memory:
        started = time.perf_counter()
        rows = run_stages(args.data, Path(output_dir), config, memory)
        total_s = time.perf_counter() - started
        total_peak = max(peak for _, _, peak in rows)
        print(f"\n{'stage':<22}{'seconds':>10}{'peak RSS':>12}")
        for name, seconds, peak in rows:
            print(f"{name:<22}{seconds:>10.2f}{peak / 2**30:>10.2f} GiB")
        print(f"{'whole base':<22}{total_s:>10.2f}{total_peak / 2**30:>10.2f} GiB")
        print(f"\nwhole base / floor: {total_s / floor_s:.1f}x "
              f"({n_ticks / total_s:,.0f} ticks/s; goals: < 180 s, < 4 GiB, < 20x the floor)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

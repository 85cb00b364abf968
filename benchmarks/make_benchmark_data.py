"""Write a synthetic year of ticks for benchmarks and print its size and generation speed.

Usage::

    python benchmarks/make_benchmark_data.py --out benchmarks/data/EURUSD_2025.parquet

The file is labelled synthetic in its parquet metadata (see ``fxresearch.sample``).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

# Run from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fxresearch.config import SampleConfig  # noqa: E402
from fxresearch.sample import write_benchmark_year  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True,
                        help="output parquet path, e.g. benchmarks/data/EURUSD_2025.parquet")
    parser.add_argument("--symbol", default="EURUSD", help="pair to simulate (default EURUSD)")
    parser.add_argument("--year", type=int, default=2025, help="calendar year to cover, UTC (default 2025)")
    parser.add_argument("--seed", type=int, default=SampleConfig.seed,
                        help=f"base random seed (default {SampleConfig.seed})")
    parser.add_argument("--ticks", type=int, default=15_000_000,
                        help="target number of ticks; the actual count is within a few percent (default 15000000)")
    parser.add_argument("--no-edge", action="store_true",
                        help="simulate the mid as independent identically distributed increments")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    started = time.perf_counter()
    rows = write_benchmark_year(args.out, symbol=args.symbol, year=args.year, seed=args.seed,
                                target_ticks=args.ticks, no_edge=args.no_edge)
    elapsed = time.perf_counter() - started
    size_mb = args.out.stat().st_size / 1e6
    print(f"{args.out}: {rows:,} rows, {size_mb:.1f} MB, {elapsed:.1f} s, {rows / elapsed:,.0f} ticks/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Command line: run generate-base or search-light on one tick file or on a folder (VAST mode).

Examples::

    python main.py --parquet data/parquet/EURUSD_2025.parquet --generate-base
    python main.py --vast-mode --input-dir data/parquet --generate-base --dry-run
    python main.py --vast-mode --search-light --pairs EURUSD,GBPJPY --parallel-pairs 4
    python main.py --vast-mode --generate-base --cluster tcp://10.0.0.5:8786
    python main.py --vast-mode --search-light --cluster local --cluster-workers 2
    python main.py --report --output-dir output

Exit codes: 0 when every pair succeeded, 1 when any pair failed, 2 for a usage error
(printed as one line on stderr), 130 when interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import re
import sys
import tempfile
from concurrent.futures import Executor
from pathlib import Path
from typing import NoReturn, Sequence

import vast_mode
from fxresearch import __version__, resume
from fxresearch.config import Config, ConfigError, load_config
from fxresearch.importing import FORMATS as IMPORT_FORMATS
from fxresearch.importing import ImportDataError, ImportOptions, convert_files, format_report
from fxresearch.naming import InvalidFileNameError, ScanResult, parse_pair_filename, scan_input_dir
from fxresearch.resources import Measurements
from fxresearch.storage import UrlPath, is_url, url_filesystem

DEFAULT_INPUT_DIR = Path("data/parquet")
DEFAULT_OUTPUT_DIR = Path("output")
JOB_FLAGS = ("--generate-base", "--search-light", "--report")
NO_MODE_MESSAGE = "Must specify a job: --generate-base, --search-light, --convert or --report"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
# Exit code of a VAST run stopped by SIGTERM (128 + 15), after its summary.
EXIT_TERMINATED = 143


class UsageError(Exception):
    """A command-line mistake: printed as one line, exit code 2.

    ``hint`` adds "run with --help"; it is off for errors about a file's content.
    """

    def __init__(self, message: str, hint: bool = True) -> None:
        super().__init__(message)
        self.hint = hint


class _Parser(argparse.ArgumentParser):
    """Argument parser whose errors are one line on stderr and exit code 2, without the usage dump."""

    def error(self, message: str) -> NoReturn:
        conflict = re.fullmatch(r"argument (\S+): not allowed with argument (\S+)", message)
        if conflict and conflict[1] in JOB_FLAGS and conflict[2] in JOB_FLAGS:
            message = f"Only one job per run: {conflict[2]} and {conflict[1]} cannot be combined"
        _exit_usage(message)


def _exit_usage(message: str, hint: bool = True) -> NoReturn:
    suffix = " (run with --help for usage)" if hint else ""
    sys.stderr.write(f"error: {message}{suffix}\n")
    sys.exit(EXIT_USAGE)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {value:g}")
    return value


def _location(text: str) -> Path | UrlPath:
    """Return a local folder as a Path, or an fsspec URL (``s3://bucket/ticks``) as text."""
    return UrlPath(text) if is_url(text) else Path(text)


class _ClusterAlias(argparse.Action):
    """The old ``--dask-scheduler ADDRESS`` and ``--dask-local-workers N`` options, mapped to ``--cluster``."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        if option_string == "--dask-local-workers":
            namespace.cluster = "local"
            namespace.cluster_workers = values
        else:
            namespace.cluster = values


def _percent(text: str) -> float:
    value = _positive_float(text)
    if value > 100:
        raise argparse.ArgumentTypeError(f"expected a percentage up to 100, got {value:g}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Return the parser: an input (one file or a folder), exactly one job, and run options."""
    parser = _Parser(
        prog="main.py",
        description="FX tick research: build a pair's research base or search strategies on it.",
    )
    parser.add_argument("--version", action="version", version=f"fxresearch {__version__}")

    inputs = parser.add_argument_group("input")
    inputs.add_argument("--parquet", type=Path, metavar="FILE",
                        help="one tick file named PAIR_YEAR.parquet, run in this process")
    inputs.add_argument("--vast-mode", action="store_true",
                        help="run every PAIR_YEAR.parquet file of --input-dir, several pairs at once")
    inputs.add_argument("--input-dir", type=_location, metavar="DIR",
                        help=f"folder of PAIR_YEAR.parquet files for --vast-mode (default {DEFAULT_INPUT_DIR}/; "
                             "when that is empty, the built-in synthetic sample is written there); "
                             "an fsspec URL such as s3://bucket/ticks also works")
    inputs.add_argument("--csv", type=Path, metavar="FILE",
                        help="one vendor tick file to convert with --convert-only (the same as --convert FILE)")

    modes = parser.add_argument_group("job (exactly one)").add_mutually_exclusive_group()
    modes.add_argument("--generate-base", dest="job", action="store_const", const="generate-base",
                       help="build ticks report, bars, features, labels, patterns and regimes")
    modes.add_argument("--search-light", dest="job", action="store_const", const="search-light",
                       help="run the light strategy search on the research base")
    modes.add_argument("--report", dest="job", action="store_const", const="report",
                       help="rebuild the leaderboard and report.html of --output-dir from existing search "
                            "outputs, without recomputing")
    modes.add_argument("--convert", nargs="+", type=Path, metavar="INPUT",
                       help="convert vendor tick files, folders or zip archives into PAIR_YEAR.parquet files in "
                            f"--output-dir (default {DEFAULT_INPUT_DIR}/), one per pair and UTC year")
    modes.add_argument("--convert-only", dest="job", action="store_const", const="convert",
                       help="convert the --csv file, as --convert FILE does")

    conversion = parser.add_argument_group("conversion (--convert)")
    conversion.add_argument("--format", choices=sorted(IMPORT_FORMATS), dest="import_format",
                            help="input format, instead of detecting it from the content")
    conversion.add_argument("--server-tz", metavar="ZONE",
                            help="MetaTrader server time zone, an IANA name (Europe/Athens) or an offset (UTC+2); "
                                 "default: inferred from the weekly open")
    conversion.add_argument("--source-tz", metavar="ZONE",
                            help="zone of times without one in a generic CSV, or of a LEAN or re-encoded parquet "
                                 "file of an unknown vendor: an IANA name or an offset such as UTC-5")
    conversion.add_argument("--overwrite", action="store_true",
                            help="replace an existing PAIR_YEAR.parquet of --output-dir instead of merging the new "
                                 "ticks into it")

    vast = parser.add_argument_group("VAST mode")
    vast.add_argument("--parallel-pairs", type=_positive_int, metavar="N",
                      help="pairs run at once (default: cores // 4, at most 30, lowered to fit memory)")
    vast.add_argument("--max-workers", type=_positive_int, metavar="N",
                      help="threads per pair for numba, BLAS and Arrow (default: cores // parallel pairs, "
                           "at most 4)")
    vast.add_argument("--pairs", metavar="LIST",
                      help="comma-separated symbols or PAIR_YEAR ids to run, e.g. EURUSD,GBPJPY_2020")
    vast.add_argument("--dry-run", action="store_true", help="print the resources and the plan, then stop")
    vast.add_argument("--retry-failed", action="store_true",
                      help="run only the pairs that the last run's ledger (DIR/runs/) marks failed, stopped, or "
                           "started and never ended; a plain rerun runs the failed and the unfinished pairs")
    vast.add_argument("--adaptive", action="store_true",
                      help="hold new pairs while the machine's load or memory use is above --max-load or "
                           "--max-memory-percent")
    vast.add_argument("--max-load", type=_positive_float, default=1.0, metavar="LOAD",
                      help="with --adaptive: 1-minute load average per usable core above which new pairs wait "
                           "(default 1.0)")
    vast.add_argument("--max-memory-percent", type=_percent, default=85.0, metavar="PERCENT",
                      help="with --adaptive: share of the machine's memory in use above which new pairs wait "
                           "(default 85)")
    vast.add_argument("--cost-per-hour", type=_positive_float, metavar="PRICE",
                      help="price of one hour of this machine; the banner prints the estimated cost and the "
                           "summary the actual one, in the price's currency")
    vast.add_argument("--cluster", metavar="ADDRESS|local",
                      help="run the pairs on a Dask cluster: a scheduler address such as tcp://10.0.0.5:8786, or "
                           "'local' for a cluster of worker processes on this machine (needs "
                           "requirements-cluster.txt; input and output folders must be reachable from every worker)")
    vast.add_argument("--cluster-workers", type=_positive_int, metavar="N",
                      help="with --cluster local: the number of single-threaded worker processes (default: cores)")
    # Earlier names of --cluster, kept working but not listed.
    vast.add_argument("--dask-scheduler", action=_ClusterAlias, metavar="ADDRESS", help=argparse.SUPPRESS)
    vast.add_argument("--dask-local-workers", action=_ClusterAlias, type=_positive_int, metavar="N",
                      help=argparse.SUPPRESS)

    options = parser.add_argument_group("run options")
    options.add_argument("--force-rerun", action="store_true", help="rebuild every artifact, even when current")
    options.add_argument("--output-dir", type=_location, metavar="DIR",
                         help=f"results folder; each pair writes under DIR/PAIR_YEAR/ (default {DEFAULT_OUTPUT_DIR}/; "
                              f"for --convert, the folder of the converted files, default {DEFAULT_INPUT_DIR}/); "
                              "with --vast-mode an fsspec URL also works, its ledger and logs kept in "
                              "output/remote/ on this machine")
    options.add_argument("--config", type=Path, metavar="FILE", help="TOML file overriding configuration defaults")
    options.add_argument("--log-level", default="WARNING", type=str.upper,
                         choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                         help="console log level (default WARNING); the run log file records INFO and above")
    return parser


def validate_args(args: argparse.Namespace) -> None:
    """Raise UsageError for combinations argparse cannot check."""
    if args.job is None:
        raise UsageError(NO_MODE_MESSAGE)
    if args.job == "report":
        if args.parquet is not None or args.vast_mode:
            raise UsageError("--report rebuilds the report from --output-dir alone; drop --parquet and --vast-mode")
        return
    if args.parquet is not None and args.vast_mode:
        raise UsageError("Use either --parquet FILE (one pair) or --vast-mode (a folder), not both")
    if args.parquet is None and not args.vast_mode:
        raise UsageError("Must specify either --parquet FILE (one pair) or --vast-mode (a folder of "
                         "PAIR_YEAR.parquet files)")
    if not args.vast_mode:
        vast_only = {"--input-dir": args.input_dir is not None, "--parallel-pairs": args.parallel_pairs is not None,
                     "--max-workers": args.max_workers is not None, "--pairs": args.pairs is not None,
                     "--dry-run": args.dry_run, "--cluster": args.cluster is not None,
                     "--cluster-workers": args.cluster_workers is not None,
                     "--retry-failed": args.retry_failed, "--adaptive": args.adaptive,
                     "--cost-per-hour": args.cost_per_hour is not None}
        present_options = [name for name, present in vast_only.items() if present]
        if present_options:
            raise UsageError(f"{', '.join(present_options)} only applies with --vast-mode")
    if args.parallel_pairs is not None and args.cluster is not None:
        raise UsageError("--parallel-pairs does not apply on Dask: each Dask worker runs one pair at a time")
    if args.cluster_workers is not None and args.cluster != "local":
        raise UsageError("--cluster-workers sets the size of --cluster local; a remote cluster has the workers "
                         "started with `dask worker`")
    if args.cluster == "":
        raise UsageError("--cluster needs a scheduler address such as tcp://10.0.0.5:8786, or 'local'")
    urls = [str(folder) for folder in (args.input_dir, args.output_dir) if is_url(folder)]
    if urls and args.parquet is not None:
        raise UsageError("fsspec URLs work with --vast-mode only; copy the file to a local folder for --parquet")
    if any(url.startswith("memory://") for url in urls):
        raise UsageError("memory:// folders live inside one process, so pair processes and Dask worker "
                         "processes cannot share them; use file:// or an object store URL", hint=False)
    if isinstance(args.input_dir, UrlPath):
        return
    if args.parquet is not None and not args.parquet.is_file():
        raise UsageError(f"Parquet file not found: {args.parquet}", hint=False)
    if args.input_dir is not None and not args.input_dir.exists():
        raise UsageError(f"Input folder not found: {args.input_dir}. --input-dir must be a folder of "
                         "PAIR_YEAR.parquet files", hint=False)
    if args.input_dir is not None and not args.input_dir.is_dir():
        raise UsageError(f"Input path {args.input_dir} is not a folder. --input-dir must be a folder of "
                         "PAIR_YEAR.parquet files", hint=False)


def check_output_dir(output_dir: Path | UrlPath) -> None:
    """Raise UsageError unless the output folder exists or can be made, and is writable.

    Checked before any work starts, so a bad folder costs a second, not a finished search.
    An fsspec URL is only made (object stores have no folders to check).
    """
    if isinstance(output_dir, UrlPath):
        try:
            filesystem, path = url_filesystem(output_dir)
            filesystem.makedirs(path, exist_ok=True)
        except (OSError, ValueError) as exc:
            raise UsageError(f"Output folder {output_dir} cannot be used ({exc}). Pass a reachable --output-dir",
                             hint=False) from None
        return
    if output_dir.exists() and not output_dir.is_dir():
        raise UsageError(f"Output path {output_dir} is a file, not a folder. Pass a folder to --output-dir",
                         hint=False)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=output_dir):
            pass
    except OSError as exc:
        raise UsageError(f"Output folder {output_dir} cannot be written ({exc.strerror or exc}). "
                         f"Pass a writable folder to --output-dir", hint=False) from None


def _load_config(path: Path | None) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        raise UsageError(str(exc), hint=False) from None


def run_single(args: argparse.Namespace, config: Config) -> int:
    """Run one pair in this process and print the same line and summary as VAST mode."""
    try:
        parse_pair_filename(args.parquet)
    except InvalidFileNameError as exc:
        raise UsageError(str(exc), hint=False) from None

    resources = vast_mode.detect_resources()
    workers = vast_mode.plan_workers(resources.cores, n_pairs=1).workers_per_pair
    run_logs = _start_run_logs(args)
    print(f"fxresearch {__version__} - {args.job} on {args.parquet} ({workers} workers)")
    print(f"Run log: {run_logs.log_path}")

    summary = vast_mode.run_single_pair(args.parquet, args.job, args.output_dir, config, args.force_rerun,
                                        workers, run_logs)
    vast_mode.print_summary(summary, run_logs)
    return EXIT_OK if summary.failed == 0 else EXIT_FAILED


def _start_run_logs(args: argparse.Namespace, on_cluster: bool = False) -> vast_mode.RunLogs:
    run_logs = vast_mode.new_run_logs(args.output_dir, getattr(logging, args.log_level), on_cluster)
    vast_mode.configure_run_logging(run_logs, run_logs.console_level)
    logging.getLogger(__name__).info("fxresearch %s: %s", __version__, " ".join(sys.argv))
    return run_logs


def _prepare_input_dir(args: argparse.Namespace, config: Config) -> tuple[Path | UrlPath, bool]:
    """Return the input folder, writing the built-in sample into the default one when it is empty.

    The second value is True when the sample was (or, on a dry run, would be) written.
    """
    if args.input_dir is not None:
        return args.input_dir, False
    folder = DEFAULT_INPUT_DIR
    if folder.is_dir():
        scan = scan_input_dir(folder)
        if scan.valid or scan.invalid:
            return folder, False

    sample = config.sample
    state = "empty" if folder.is_dir() else "missing"
    print(f"{folder}/ is {state}: no --input-dir was given, so the built-in SYNTHETIC sample is used "
          f"({len(sample.pairs)} pairs, {sample.weeks} week{'s' if sample.weeks != 1 else ''} of {sample.year}, "
          f"seed {sample.seed}).")
    if args.dry_run:
        print("Dry run: the sample is not written; a real run writes it to "
              f"{folder}/ and runs on it. Results on it are synthetic, not market results.")
        return folder, True

    from fxresearch.sample import write_sample_set

    print(f"Generating the synthetic sample in {folder}/ (files marked synthetic in their parquet metadata).")
    folder.mkdir(parents=True, exist_ok=True)
    try:
        written = write_sample_set(folder, sample)
    except ValueError as exc:  # an invalid [sample] section
        raise UsageError(f"Cannot write the synthetic sample: {exc}", hint=False) from None
    print(f"Wrote {len(written)} synthetic files. Results on them are SYNTHETIC, not market results.")
    return folder, True


def run_vast(args: argparse.Namespace, config: Config) -> int:
    """Scan the folder, print the banner and plan, then fan the pairs out."""
    folder, sample_pending = _prepare_input_dir(args, config)
    if sample_pending and args.dry_run:
        return EXIT_OK
    on_dask = args.cluster is not None
    if on_dask:
        # Dask workers may run in another working directory, so they get absolute paths.
        folder = folder.resolve() if isinstance(folder, Path) else folder
        if isinstance(args.output_dir, Path):
            args.output_dir = args.output_dir.resolve()
    try:
        scan = scan_input_dir(folder)
    except (OSError, ValueError) as exc:  # an fsspec URL that is missing or cannot be reached
        raise UsageError(str(exc), hint=False) from None
    if not scan.valid:
        shown = "; ".join(f"{bad.path.name}: {bad.reason}" for bad in scan.invalid[:3])
        more = f" and {len(scan.invalid) - 3} more" if len(scan.invalid) > 3 else ""
        raise UsageError(f"no valid PAIR_YEAR.parquet file in {folder}" + (f" ({shown}{more})" if shown else ""),
                         hint=False)

    requested = args.pairs.split(",") if args.pairs is not None else None
    try:
        selected = vast_mode.select_pairs(scan.valid, requested)
    except vast_mode.PairSelectionError as exc:
        raise UsageError(str(exc), hint=False) from None

    if args.retry_failed:
        selected = _select_failed(args, selected)
        if not selected:
            return EXIT_OK
    # A pair whose manifest marks its outputs current is skipped, unless --force-rerun or --retry-failed is given.
    check = resume.check_current(selected, args.job, args.output_dir, config)
    skipped = [] if args.force_rerun or args.retry_failed else sorted(check.current)
    plan_options = {"estimate": Measurements.load(vast_mode.run_state_dir(args.output_dir)).estimate(args.job),
                    "skipped": skipped, "fingerprints": check.fingerprints}

    resources = vast_mode.detect_resources()
    if not on_dask:
        plan = vast_mode.make_plan(resources, selected, args.job, args.parallel_pairs, args.max_workers,
                                   **plan_options)
        return _run_plan(args, config, resources, scan, folder, plan)

    from fxresearch.cluster import ClusterError, WindowedExecutor, open_cluster

    with contextlib.ExitStack() as stack:
        try:
            executor, cluster = stack.enter_context(open_cluster(args.cluster, args.cluster_workers or resources.cores))
        except ClusterError as exc:
            raise UsageError(str(exc), hint=False) from None
        plan = vast_mode.make_cluster_plan(selected, args.job, cluster.n_workers, cluster.threads_per_worker,
                                           args.max_workers, worker_memory_bytes=cluster.memory_limit_bytes,
                                           **plan_options)
        # At most the plan's parallel pairs are on the cluster at once: the memory-aware cap.
        windowed = WindowedExecutor(executor, plan.parallel_pairs)
        return _run_plan(args, config, resources, scan, folder, plan, windowed, cluster.description)


def _select_failed(args: argparse.Namespace, selected: list) -> list:
    """Keep the selected pairs that the last run's ledger marks failed, stopped or unfinished (``--retry-failed``)."""
    ledger, to_retry = resume.pairs_to_retry(args.output_dir)
    if ledger is None:
        runs = vast_mode.run_state_dir(args.output_dir) / "runs"
        raise UsageError(f"--retry-failed: no run ledger in {runs}; run without it first",
                         hint=False)
    retry = [pair_file for pair_file in selected if pair_file.pair_year in to_retry]
    words = {"failed": "failed", "interrupted": "stopped by Ctrl-C or SIGTERM",
             "started": "started and never ended (the run was killed)"}
    detail = ", ".join(f"{f.pair_year} ({words.get(to_retry[f.pair_year], to_retry[f.pair_year])})" for f in retry)
    print(f"Retry failed:       {len(retry)} pair{'' if len(retry) == 1 else 's'} failed or unfinished in {ledger}"
          + (f": {detail}" if retry else ""))
    if not retry:
        print("Nothing to retry: the last run has no failed, stopped or unfinished pair among the selected ones.")
    return retry


def _run_plan(args: argparse.Namespace, config: Config, resources: vast_mode.Resources, scan: ScanResult,
              folder: Path | UrlPath, plan: vast_mode.RunPlan, executor: Executor | None = None,
              cluster: str | None = None) -> int:
    """Print the banner, then run the plan (or print it, on a dry run) and the summary."""
    admission, adaptive = None, None
    if args.adaptive:
        admission = vast_mode.load_admission(args.max_load, args.max_memory_percent)
        adaptive = (f"new pairs wait while the load is above {args.max_load:g} per core or memory use above "
                    f"{args.max_memory_percent:g} %")
    vast_mode.print_resources_banner(resources, scan, plan, args.job, input_dir=folder, output_dir=args.output_dir,
                                     cluster=cluster, cost_per_hour=args.cost_per_hour, adaptive=adaptive,
                                     force_rerun=args.force_rerun,
                                     selection="--retry-failed" if args.retry_failed else "--pairs")
    if args.dry_run:
        vast_mode.print_plan(plan, args.output_dir)
        print("Dry run: nothing was run.")
        return EXIT_OK

    run_logs = _start_run_logs(args, on_cluster=executor is not None)
    print(f"Run log:            {run_logs.log_path}")
    # Invalid files that --pairs does not select neither run nor count; the summary lists them as a note.
    invalid, unselected = vast_mode.select_invalid(scan.invalid, args.pairs.split(",") if args.pairs else None)
    synthetic = {pair_year: info.synthetic for pair_year, info in plan.infos.items()}
    summary = vast_mode.run_vast_mode(
        list(plan.files), args.job, args.output_dir, config, plan.parallel_pairs, plan.workers_per_pair,
        args.force_rerun, executor, invalid=invalid, run_logs=run_logs, synthetic=synthetic, plan=plan,
        admission=admission, cost_per_hour=args.cost_per_hour,
    )
    summary.unselected_invalid = [bad.path.name for bad in unselected]
    vast_mode.print_summary(summary, run_logs)
    if summary.interrupted:
        return EXIT_TERMINATED if summary.signal_name == "SIGTERM" else EXIT_INTERRUPTED
    if args.job == "search-light" and isinstance(args.output_dir, UrlPath):
        print(f"Report: not built for the URL output {args.output_dir}; copy it to a local folder and run "
              "--report --output-dir on that folder")
    elif args.job == "search-light":
        _write_report(args.output_dir)
    return EXIT_OK if summary.all_ok else EXIT_FAILED


def _write_report(output_dir: Path) -> bool:
    """Write the leaderboard and report.html of ``output_dir`` and print their paths.

    A failure is printed and logged but does not fail the run: the search outputs are written.
    """
    from fxresearch.report import write_report_outputs

    try:
        files = write_report_outputs(output_dir)
    except Exception as exc:  # the report is built from finished outputs; a bug in it must not hide them
        logging.getLogger(__name__).error("Report not written for %s", output_dir, exc_info=True)
        print(f"Report not written: {type(exc).__name__}: {exc} (the run log has the traceback)")
        return False
    print(f"Leaderboard: {files.leaderboard[0]} (and .csv)")
    print(f"Report: {files.report} ({files.size_bytes / 2**20:.1f} MB)")
    return True


def run_report(args: argparse.Namespace) -> int:
    """Rebuild the leaderboard and report.html from the outputs already in ``--output-dir``."""
    if not args.output_dir.is_dir():
        raise UsageError(f"Output folder not found: {args.output_dir}. Pass the --output-dir of a search-light run",
                         hint=False)
    from fxresearch.leaderboard import pairs_with_results

    if not pairs_with_results(args.output_dir):
        raise UsageError(f"no search-light results in {args.output_dir}; run --search-light first", hint=False)
    return EXIT_OK if _write_report(args.output_dir) else EXIT_FAILED


def run_convert(args: argparse.Namespace) -> int:
    """Convert vendor tick files into PAIR_YEAR.parquet files and print each output's report."""
    if args.job == "convert" and args.csv is None:
        raise UsageError("--convert-only needs --csv FILE, the vendor tick file to convert")
    if args.csv is not None and args.job != "convert":
        raise UsageError("--csv FILE only applies with --convert-only; or use --convert FILE")
    if args.parquet is not None or args.vast_mode or args.input_dir is not None:
        raise UsageError("--convert reads vendor files and takes no --parquet, --vast-mode or --input-dir")
    inputs = args.convert if args.convert is not None else [args.csv]
    config = _load_config(args.config)
    check_output_dir(args.output_dir)
    options = ImportOptions(file_format=args.import_format, server_tz=args.server_tz, source_tz=args.source_tz,
                            config=config, overwrite=args.overwrite)
    try:
        reports = convert_files(inputs, args.output_dir, options)
    except ImportDataError as exc:
        raise UsageError(str(exc), hint=False) from None
    for report in reports:
        print(format_report(report))
    print(f"Converted {len(inputs)} input{'s' if len(inputs) != 1 else ''} into {len(reports)} "
          f"file{'s' if len(reports) != 1 else ''} in {args.output_dir}/")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments, run, and return the exit code."""
    # A console that cannot show a character gets "?" rather than a crash mid-run.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="replace")

    args = build_parser().parse_args(argv)
    # Console logging from the start; the run log file is added when a run begins.
    vast_mode.configure_run_logging(None, getattr(logging, args.log_level))
    converting = args.convert is not None or args.job == "convert"
    if args.output_dir is None:
        args.output_dir = DEFAULT_INPUT_DIR if converting else DEFAULT_OUTPUT_DIR
    try:
        if converting:
            return run_convert(args)
        if args.csv is not None or args.import_format or args.server_tz or args.source_tz or args.overwrite:
            raise UsageError("--csv, --format, --server-tz, --source-tz and --overwrite only apply with --convert or "
                             "--convert-only")
        validate_args(args)
        config = _load_config(args.config)
        if args.job == "report":
            return run_report(args)
        if not getattr(args, "dry_run", False):
            check_output_dir(args.output_dir)
        return run_vast(args, config) if args.vast_mode else run_single(args, config)
    except UsageError as exc:
        _exit_usage(str(exc), exc.hint)
    except KeyboardInterrupt:
        if converting:
            sys.stderr.write("Interrupted; no output file was replaced and the temporary files were removed. "
                             "Rerun the same command to convert the inputs.\n")
        else:
            sys.stderr.write("Interrupted; artifacts already written are kept and reused by the next run.\n")
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())

"""The generate-base job: one pair's research base, stage by stage, reused while current.

Stages and what each reads::

    ticks ─► ticks_report, split ─► bars ─► features ─► regimes
                                      └──► labels ──┴──► patterns

Each stage is recorded in ``output/PAIR_YEAR/manifest.json`` with the input file's
fingerprint, the hash of the configuration sections it reads, the code version and the
build ids of the stages it reads. A stage is rebuilt when any of these changed (and so
everything downstream, whose recorded build ids then differ), or with ``force_rerun``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import pandas as pd

from fxresearch import artifacts, naming
from fxresearch.artifacts import Manifest
from fxresearch.codeversion import code_version
from fxresearch.config import Config, section_hash
from fxresearch.instruments import Instrument, get_instrument
from fxresearch.timeutil import ns_to_datetime, trading_day_ns

if TYPE_CHECKING:
    from fxresearch.ticks import Ticks

logger = logging.getLogger(__name__)

BASE_STAGES = ("ticks_report", "split", "bars", "features", "labels", "patterns", "regimes")


class StageError(RuntimeError):
    """A stage failed; the message names the pair and the stage."""


@dataclass
class PairContext:
    """Shared state of one pair's stages: paths, config, manifest and lazily loaded data."""

    parquet_path: Path
    out_dir: Path
    pair_year: str
    config: Config
    instrument: Instrument
    fingerprint: str
    manifest: Manifest
    force_rerun: bool
    _ticks: Any = None
    _bars: dict[int, pd.DataFrame] = field(default_factory=dict)
    _features: dict[int, pd.DataFrame] = field(default_factory=dict)
    built: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)

    @property
    def ticks(self) -> Ticks:
        if self._ticks is None:
            from fxresearch.ticks import load_ticks

            self._ticks = load_ticks(self.parquet_path, self.config)
        return self._ticks

    @property
    def metadata(self) -> dict[str, str]:
        """Parquet metadata written with every table: what it is of and which pip size it used."""
        return {
            "pair_year": self.pair_year,
            "symbol": self.instrument.symbol,
            "pip_size": repr(self.instrument.pip_size),
            "synthetic": "true" if self.is_synthetic else "false",
        }

    @property
    def is_synthetic(self) -> bool:
        return artifacts.read_metadata(self.parquet_path).get("synthetic") == "true"

    def split_ns(self) -> int:
        entry = self.manifest.entry("split")
        if entry is None:
            raise StageError(f"{self.pair_year}: the split stage has not run, so there is no split time")
        return int(entry["split_ns"])

    def bars(self, timeframe_min: int) -> pd.DataFrame:
        if timeframe_min not in self._bars:
            from fxresearch.bars import timeframe_name

            path = self.out_dir / "bars" / f"{timeframe_name(timeframe_min)}.parquet"
            self._bars[timeframe_min] = artifacts.read_frame(path)
        return self._bars[timeframe_min]

    def features(self, timeframe_min: int) -> pd.DataFrame:
        if timeframe_min not in self._features:
            from fxresearch.bars import timeframe_name

            path = self.out_dir / "features" / f"{timeframe_name(timeframe_min)}.parquet"
            self._features[timeframe_min] = artifacts.read_frame(path)
        return self._features[timeframe_min]


def open_pair(parquet_path: str | Path, output_dir: str | Path, config: Config,
              force_rerun: bool = False) -> PairContext:
    """Parse the file name, look up the instrument and load the pair's manifest."""
    parquet_path = Path(parquet_path)
    symbol, year = naming.parse_pair_filename(parquet_path)
    pair_year = f"{symbol}_{year}"
    instrument = get_instrument(symbol, config)
    out_dir = artifacts.pair_dir(output_dir, pair_year)
    return PairContext(
        parquet_path=parquet_path,
        out_dir=out_dir,
        pair_year=pair_year,
        config=config,
        instrument=instrument,
        fingerprint=artifacts.file_fingerprint(parquet_path),
        manifest=Manifest.load(out_dir),
        force_rerun=force_rerun,
    )


def feature_timeframes(config: Config) -> tuple[int, ...]:
    """Timeframes that need feature tables: the configured ones plus those later stages read."""
    wanted = set(config.features.timeframes_min)
    wanted |= {config.patterns.timeframe_min, config.regimes.timeframe_min, config.search.timeframe_min}
    return tuple(sorted(wanted))


def label_timeframes(config: Config) -> tuple[int, ...]:
    """Timeframes that need labels: the configured ones, the pattern one and the search one (meta-labels)."""
    wanted = set(config.labels.timeframes_min) | {config.patterns.timeframe_min, config.search.timeframe_min}
    return tuple(sorted(wanted))


def bar_timeframes(config: Config) -> tuple[int, ...]:
    """Bar timeframes: the configured ones, one minute (the fill kernel's index) and every one read later."""
    wanted = set(config.bars.timeframes_min) | {1} | set(feature_timeframes(config)) | set(label_timeframes(config))
    return tuple(sorted(wanted))


def _stage_specs(config: Config) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Return each stage's config hash and the stages it reads, in build order."""
    instrument_part = {"instruments": config.instruments}
    return {
        "ticks_report": (section_hash(config.ticks, instrument_part), ()),
        "split": (section_hash(config.split), ("ticks_report",)),
        "bars": (section_hash(bar_timeframes(config)), ("ticks_report",)),
        "features": (section_hash(config.features, feature_timeframes(config)), ("bars",)),
        "labels": (section_hash(config.labels, config.fills, label_timeframes(config)), ("bars",)),
        "patterns": (section_hash(config.patterns), ("features", "labels", "split")),
        "regimes": (section_hash(config.regimes), ("features", "split")),
    }


def _depends(ctx: PairContext, names: tuple[str, ...]) -> dict[str, str]:
    return {name: ctx.manifest.build_id(name) for name in names}


def stage_stale_reason(ctx: PairContext, name: str, config_hash: str, depends: tuple[str, ...]) -> str | None:
    """Return why the stage must be rebuilt (input, config, code or an input stage changed), or None."""
    return ctx.manifest.stale_reason(name, ctx.fingerprint, config_hash, _depends(ctx, depends),
                                     code_version(name))


def stage_is_current(ctx: PairContext, name: str, config_hash: str, depends: tuple[str, ...]) -> bool:
    """Return True when the stage's recorded build matches the input, config, code and inputs."""
    return stage_stale_reason(ctx, name, config_hash, depends) is None


def base_is_current(ctx: PairContext) -> bool:
    """Return True when every generate-base stage of the pair is current."""
    return all(stage_is_current(ctx, name, *spec) for name, spec in _stage_specs(ctx.config).items())


def _run_stage(ctx: PairContext, name: str, config_hash: str, depends: tuple[str, ...],
               build: Callable[[PairContext], tuple[list[str], dict[str, Any]]]) -> None:
    reason = "forced" if ctx.force_rerun else stage_stale_reason(ctx, name, config_hash, depends)
    if reason is None:
        ctx.reused.append(name)
        logger.info("%s: %s is current, reused", ctx.pair_year, name)
        return
    logger.info("%s: building %s (%s)", ctx.pair_year, name, reason)
    # The manifest must never list files that are being replaced, so a stale entry goes first.
    if ctx.manifest.forget(name):
        ctx.manifest.save()
    started = time.perf_counter()
    try:
        files, extra = build(ctx)
    except Exception as exc:
        raise StageError(f"{ctx.pair_year}: stage {name} failed: {exc}") from exc
    seconds = time.perf_counter() - started
    ctx.manifest.record(name, files, ctx.fingerprint, config_hash, _depends(ctx, depends),
                        code_version(name), seconds=round(seconds, 3), **extra)
    # Saved after each stage, so a killed run keeps the stages it finished.
    ctx.manifest.save()
    ctx.built.append(name)
    logger.info("%s: built %s in %.2fs", ctx.pair_year, name, seconds)


# ---------------------------------------------------------------------------- stages


def _build_ticks_report(ctx: PairContext) -> tuple[list[str], dict[str, Any]]:
    from fxresearch.ticks import write_ticks_report

    path = write_ticks_report(ctx.ticks, ctx.out_dir)
    report = ctx.ticks.report
    return [path.name], {"rows_kept": int(report["rows_kept"]), "pip_size": ctx.instrument.pip_size}


# A day-count split whose share of ticks misses the train fraction by more than this is
# replaced, because partial trading days (short files) make day counts a poor measure.
SPLIT_TICK_SHARE_TOLERANCE = 0.15


def compute_split_ns(timestamp_ns: np.ndarray, train_fraction: float) -> tuple[int, dict[str, Any]]:
    """Return the train/holdout split time and how it was chosen.

    The split falls at the start of the first holdout trading day (17:00 New York to 17:00),
    after ``train_fraction`` of the days that have ticks. Short files often hold partial
    days, so a day count can put 98 % of the ticks in training. When the training share of
    ticks misses ``train_fraction`` by more than ``SPLIT_TICK_SHARE_TOLERANCE``, the split
    moves to the day start closest to that share of ticks. When no day start is close enough
    (one or two trading days), it moves to the tick at that share, inside a day.
    """
    timestamp_ns = np.asarray(timestamp_ns, dtype=np.int64)
    n_ticks = len(timestamp_ns)
    days = trading_day_ns(timestamp_ns)
    unique_days, first_index = np.unique(days, return_index=True)
    n_days = len(unique_days)

    split_index, rule = None, ""
    if n_days >= 2:
        train_days = min(n_days - 1, max(1, int(round(train_fraction * n_days))))
        if abs(first_index[train_days] / n_ticks - train_fraction) <= SPLIT_TICK_SHARE_TOLERANCE:
            split_index = int(first_index[train_days])
            rule = f"start of trading day {train_days + 1} of {n_days}"
        else:
            shares = first_index[1:] / n_ticks
            closest = int(np.argmin(np.abs(shares - train_fraction)))
            if abs(shares[closest] - train_fraction) <= SPLIT_TICK_SHARE_TOLERANCE:
                split_index = int(first_index[closest + 1])
                rule = (f"start of trading day {closest + 2} of {n_days}, the day start closest to "
                        f"{train_fraction:.0%} of the ticks (the file has partial days)")
    if split_index is None:
        split_index = min(n_ticks - 1, max(1, int(train_fraction * n_ticks)))
        rule = f"the tick at {train_fraction:.0%} of the ticks, inside a trading day (no day start is near it)"
    split_ns = int(timestamp_ns[split_index])

    return split_ns, {
        "split_ns": split_ns,
        "split_time": ns_to_datetime(np.array([split_ns]))[0].isoformat(),
        "trading_days": int(n_days),
        "train_days": int(len(np.unique(days[:split_index]))),
        "holdout_days": int(len(np.unique(days[split_index:]))),
        "train_tick_share": round(split_index / n_ticks, 4),
        # A split inside a trading day counts that day in both train_days and holdout_days.
        "split_inside_day": bool(days[split_index - 1] == days[split_index]),
        "rule": rule,
    }


def _build_split(ctx: PairContext) -> tuple[list[str], dict[str, Any]]:
    _, details = compute_split_ns(ctx.ticks.timestamp_ns, ctx.config.split.train_fraction)
    log = logger.warning if details["split_inside_day"] else logger.info
    log("%s: train/holdout split at %s, %s", ctx.pair_year, details["split_time"], details["rule"])
    return [], details


def _build_bars(ctx: PairContext) -> tuple[list[str], dict[str, Any]]:
    from fxresearch.bars import build_bars, timeframe_name

    ticks = ctx.ticks
    files, counts = [], {}
    for timeframe_min in bar_timeframes(ctx.config):
        bars = build_bars(ticks.timestamp_ns, ticks.bid, ticks.ask, timeframe_min)
        name = f"bars/{timeframe_name(timeframe_min)}.parquet"
        artifacts.write_frame(ctx.out_dir / name, bars, ctx.metadata | {"timeframe_min": str(timeframe_min)})
        ctx._bars[timeframe_min] = bars
        files.append(name)
        counts[timeframe_name(timeframe_min)] = len(bars)
    return files, {"bar_counts": counts}


def _build_features(ctx: PairContext) -> tuple[list[str], dict[str, Any]]:
    from fxresearch.bars import timeframe_name
    from fxresearch.features import build_features, insufficient_reason

    files, notes = [], {}
    for timeframe_min in feature_timeframes(ctx.config):
        bars = ctx.bars(timeframe_min)
        table = build_features(bars, timeframe_min, ctx.config.features, ctx.instrument)
        reason = insufficient_reason(len(bars), ctx.config.features)
        if reason:
            notes[timeframe_name(timeframe_min)] = reason
        name = f"features/{timeframe_name(timeframe_min)}.parquet"
        artifacts.write_frame(ctx.out_dir / name, table, ctx.metadata | {"timeframe_min": str(timeframe_min)})
        ctx._features[timeframe_min] = table
        files.append(name)
    return files, {"insufficient_data": notes}


def _build_labels(ctx: PairContext) -> tuple[list[str], dict[str, Any]]:
    from fxresearch.bars import timeframe_name
    from fxresearch.fills import prepare_tick_arrays
    from fxresearch.labels import insufficient_reason, write_labels

    ticks = ctx.ticks
    # One set of tick arrays for every timeframe; each timeframe is streamed to its own file.
    arrays = prepare_tick_arrays(ticks.timestamp_ns, ticks.bid, ticks.ask, ctx.instrument,
                                 ctx.config.fills.max_gap_minutes)
    files, notes, counts = [], {}, {}
    timeframes = label_timeframes(ctx.config)
    for position, timeframe_min in enumerate(timeframes, start=1):
        bars = ctx.bars(timeframe_min)
        reason = insufficient_reason(len(bars), ctx.config.labels)
        if reason:
            notes[timeframe_name(timeframe_min)] = reason
        name = f"labels/{timeframe_name(timeframe_min)}.parquet"
        summary = write_labels(ctx.out_dir / name, ticks.timestamp_ns, ticks.bid, ticks.ask, bars, timeframe_min,
                               ctx.config, ctx.instrument, ctx.metadata | {"timeframe_min": str(timeframe_min)},
                               arrays=arrays)
        files.append(name)
        counts[timeframe_name(timeframe_min)] = summary["outcome_counts"]
        logger.info("%s: labels of %s written, %d rows (timeframe %d of %d)", ctx.pair_year,
                    timeframe_name(timeframe_min), summary["rows"], position, len(timeframes))
    return files, {"insufficient_data": notes, "outcome_counts": counts}


def _build_patterns(ctx: PairContext) -> tuple[list[str], dict[str, Any]]:
    from fxresearch.bars import timeframe_name
    from fxresearch.patterns import mine_patterns

    # Every labelled timeframe with a features table is mined; labels are read from their
    # files one grid entry at a time.
    with_features = set(feature_timeframes(ctx.config))
    labels = {tf: ctx.out_dir / "labels" / f"{timeframe_name(tf)}.parquet" for tf in label_timeframes(ctx.config)}
    features = {tf: ctx.features(tf) for tf in labels if tf in with_features}
    document = mine_patterns(features, labels, ctx.split_ns(), ctx.config.patterns, ctx.instrument.pip_size,
                             pair_year=ctx.pair_year)
    document["synthetic"] = ctx.is_synthetic
    name = f"{ctx.pair_year}_patterns.json"
    artifacts.write_json_atomic(ctx.out_dir / name, document)
    return [name], {
        "insufficient_data": document.get("insufficient_data"),
        "conditions_tested": document.get("conditions_tested", 0),
        "n_significant": document.get("significant", 0),
        "n_patterns": len(document.get("patterns", [])),
        "n_kept": len(document.get("kept", [])),
    }


def _build_regimes(ctx: PairContext) -> tuple[list[str], dict[str, Any]]:
    from fxresearch.regimes import build_regimes

    timeframe_min = ctx.config.regimes.timeframe_min
    table, model = build_regimes(ctx.features(timeframe_min), ctx.split_ns(), ctx.config.regimes)
    name = f"{ctx.pair_year}_regimes.parquet"
    artifacts.write_frame(ctx.out_dir / name, table, ctx.metadata | {"timeframe_min": str(timeframe_min)})
    model_name = f"{ctx.pair_year}_regimes_model.json"
    artifacts.write_json_atomic(ctx.out_dir / model_name, model)
    return [name, model_name], {"insufficient_data": model.get("insufficient_data")}


_BUILDERS: dict[str, Callable[[PairContext], tuple[list[str], dict[str, Any]]]] = {
    "ticks_report": _build_ticks_report,
    "split": _build_split,
    "bars": _build_bars,
    "features": _build_features,
    "labels": _build_labels,
    "patterns": _build_patterns,
    "regimes": _build_regimes,
}


def run_base_stages(ctx: PairContext) -> None:
    """Build or reuse every generate-base stage of one pair, in dependency order."""
    for name, (config_hash, depends) in _stage_specs(ctx.config).items():
        _run_stage(ctx, name, config_hash, depends, _BUILDERS[name])


def generate_base(parquet_path: str | Path, output_dir: str | Path, config: Config,
                  force_rerun: bool = False) -> dict[str, Any]:
    """Build one pair's research base under ``output_dir/PAIR_YEAR`` and return a summary.

    Raises on invalid input (file name, unknown symbol, tick validation) and on a failed
    stage, with a one-line message naming the pair. Stages finished before the failure
    stay recorded in the manifest.
    """
    started = time.perf_counter()
    ctx = open_pair(parquet_path, output_dir, config, force_rerun)
    run_base_stages(ctx)
    seconds = time.perf_counter() - started
    message = f"{len(ctx.built)} stages built, {len(ctx.reused)} reused"
    logger.info("%s: generate-base done in %.1fs (%s)", ctx.pair_year, seconds, message)
    return {
        "pair_year": ctx.pair_year,
        "synthetic": ctx.is_synthetic,
        "built": ctx.built,
        "reused": ctx.reused,
        "seconds": seconds,
        "message": message,
    }

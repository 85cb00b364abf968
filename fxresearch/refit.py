"""Patterns re-mined and regimes refitted per walk-forward block, so in-sample signals never look ahead.

The research base mines patterns and fits regimes on the whole training part (everything
before the pair's split). A strategy that trades those patterns or regimes on the training
part would be measured on the data used to choose them. Here the in-sample part is cut into
the test blocks of the walk-forward layout the search validates with, and each block gets
patterns and a regime model of its own, chosen on data before the block starts:

    in-sample trading days ─► walk_forward_folds ─► test blocks [start_ns, end_ns)
    per block: labels known before start ─► mine_patterns(split_ns=start) ─► pattern document
               features of bars closing by start ─► fit_regime_model(split_ns=start) ─► regime model
    per block: its own document and model ─► signals of the bars that open inside the block

Market and data assumptions:

- A block starts at 17:00 New York time, the start of its first trading day
  (``timeutil.trading_day_ns``). It ends where the next block starts, and the last one ends
  at the pair's split.
- A block is fitted on the span from the start of its fold's first training day (day 0 of the
  in-sample part for the ``anchored`` scheme, the rolling window's first day for ``rolling``)
  to the block's start. A label is used only when its ``exit_time`` is before the block's
  start, so its outcome was known then, and a feature row only when its bar opened before it.
  ``mine_patterns`` and ``fit_regime_model`` themselves keep only bars that close by the cut.
- A block's pattern document carries no holdout figures, because it is mined only on labels
  that exit before the block starts.
- Bars before the first block are warm-up and get no pattern or regime signal. When the
  in-sample days are too few for one fold, no block exists and pattern and regime families
  get no in-sample signal at all. The report gives the reason.
- The holdout, from the split on, uses the patterns and regimes of the research base,
  chosen on the whole training part. The holdout never chooses them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fxresearch.config import Config
from fxresearch.features import timestamp_column_ns
from fxresearch.patterns import LABEL_COLUMNS, NAT_NS, mine_patterns
from fxresearch.regimes import WARMUP_NAME, apply_regime_model, fit_regime_model
from fxresearch.strategies import SignalSegment
from fxresearch.timeutil import NEW_YORK, NS_PER_DAY, index_to_ns, ns_to_datetime, trading_day_ns
from fxresearch.validation import horizon_days, walk_forward_folds

logger = logging.getLogger(__name__)

# The FX trading day starts at 17:00 New York time (see ``timeutil.trading_day_ns``).
TRADING_DAY_START_HOUR = 17
# End of the holdout segment, later than any bar.
_END_OF_TIME_NS = int(np.iinfo(np.int64).max)


@dataclass(frozen=True)
class RefitBlock:
    """One walk-forward test block with the patterns and regimes chosen before it.

    Bars whose open lies in ``[start_ns, end_ns)`` trade this block's pattern document and
    regime table, both fitted on data in ``[train_start_ns, start_ns)``.
    """

    index: int
    start_ns: int
    end_ns: int
    train_start_ns: int
    patterns_doc: dict[str, Any] | None
    regime_model: dict[str, Any] | None
    regimes: pd.DataFrame | None


@dataclass(frozen=True)
class RefitResult:
    """Signal segments (blocks, then the holdout) and the ``refit`` section of the search report."""

    blocks: tuple[RefitBlock, ...]
    segments: tuple[SignalSegment, ...]
    report: dict[str, Any]


def in_sample_day_numbers(tick_timestamp_ns: np.ndarray, split_ns: int) -> np.ndarray:
    """Return the trading day numbers that have ticks before ``split_ns``, ascending.

    These are the day columns of the search's in-sample daily P&L matrix, so blocks built on
    them line up with its walk-forward folds.
    """
    timestamp_ns = np.asarray(tick_timestamp_ns, dtype=np.int64)
    before = timestamp_ns[: int(np.searchsorted(timestamp_ns, int(split_ns), side="left"))]
    if len(before) == 0:
        return np.empty(0, dtype=np.int64)
    days = trading_day_ns(before)
    # Ticks are in time order, so their days are too.
    return days[np.r_[True, days[1:] != days[:-1]]]


def trading_day_start_ns(day_numbers: np.ndarray) -> np.ndarray:
    """Return the first nanosecond (17:00 New York, as UTC ns) of each trading day number.

    Trading day D runs from 17:00 New York on the calendar date before D to 17:00 on D. Daylight
    saving changes at 02:00 local time, so 17:00 always exists and is never ambiguous.
    """
    days = np.asarray(day_numbers, dtype=np.int64)
    previous_dates = pd.DatetimeIndex(((days - 1) * NS_PER_DAY).astype("datetime64[ns]"))
    local = (previous_dates + pd.Timedelta(hours=TRADING_DAY_START_HOUR)).tz_localize(NEW_YORK)
    return index_to_ns(local)


def block_bounds(day_numbers: np.ndarray, split_ns: int, config: Config) -> tuple[list[tuple[int, int, int]], str]:
    """Return each test block's (start_ns, end_ns, train_start_ns) and why blocks are missing.

    The blocks are the test blocks of ``validation.walk_forward_folds`` on the in-sample days,
    called as the search's validation calls it: ``validation.n_folds``, ``scheme``,
    ``min_train_days`` and ``min_test_days``, a purge of ``horizon_days(search.horizon_minutes)``,
    ``validation.embargo_days`` and no lockbox. The reason is empty when every requested fold fits.
    """
    validation = config.validation
    plan = walk_forward_folds(np.asarray(day_numbers, dtype=np.int64), validation.n_folds,
                              horizon_days(config.search.horizon_minutes), validation.embargo_days, 0.0,
                              scheme=validation.scheme, min_train_days=validation.min_train_days,
                              min_test_days=validation.min_test_days)
    bounds: list[tuple[int, int, int]] = []
    for position, fold in enumerate(plan):
        start_ns, train_start_ns = (int(value) for value in
                                    trading_day_start_ns(np.array([fold.test_days[0], fold.train_days[0]])))
        if position + 1 < len(plan):
            end_ns = int(trading_day_start_ns(plan[position + 1].test_days[:1])[0])
        else:
            end_ns = int(split_ns)
        bounds.append((start_ns, min(end_ns, int(split_ns)), train_start_ns))
    return bounds, plan.reason


def read_labels_known_before(path: str | Path, before_ns: int) -> pd.DataFrame:
    """Read the miner's label columns of the rows whose ``exit_time`` is before ``before_ns``.

    Time columns come back as int64 ns UTC. Rows without an exit (``NAT_NS``) are left out,
    since their outcome is never known.
    """
    path = Path(path)
    schema = pq.read_schema(path)
    missing = [name for name in LABEL_COLUMNS if name not in schema.names]
    if missing:
        raise ValueError(f"The labels file {path} is missing columns {missing}; rebuild it with generate-base.")
    exit_type = schema.field("exit_time").type
    cut = pa.scalar(int(before_ns), type=pa.int64())
    if pa.types.is_timestamp(exit_type):
        cut = cut.cast(exit_type)
    table = pq.read_table(path, columns=list(LABEL_COLUMNS), filters=[("exit_time", "<", cut)])
    for name in ("timestamp", "exit_time"):
        if pa.types.is_timestamp(table.schema.field(name).type):
            index = table.column_names.index(name)
            table = table.set_column(index, name, table.column(name).cast(pa.int64()))
    frame = table.to_pandas()
    return frame[frame["exit_time"].to_numpy() != NAT_NS].reset_index(drop=True)


def refit_per_block(features_by_timeframe: Mapping[int, pd.DataFrame],
                    labels_by_timeframe: Mapping[int, pd.DataFrame | str | Path],
                    regime_features: pd.DataFrame | None, day_numbers: np.ndarray, split_ns: int,
                    config: Config, pip_size: float, holdout_patterns_doc: Mapping[str, Any] | None,
                    holdout_regimes: pd.DataFrame | None, pair_year: str | None = None) -> RefitResult:
    """Mine patterns and fit regimes per in-sample test block and return the signal segments.

    Parameters
    ----------
    features_by_timeframe
        Timeframe in minutes to its causal feature table (``timestamp`` = bar open), as the
        patterns stage reads them.
    labels_by_timeframe
        Timeframe in minutes to its labels, a DataFrame or a labels parquet file. As in the
        patterns stage, every timeframe is mined together, so the false-discovery correction
        covers every condition tested.
    regime_features
        Feature table of ``config.regimes.timeframe_min``, or None to fit no regimes.
    day_numbers
        In-sample trading day numbers (``in_sample_day_numbers``).
    split_ns
        The pair's train/holdout split, int64 ns UTC.
    config
        Reads ``patterns``, ``regimes``, ``validation`` and ``search.horizon_minutes``.
    pip_size
        Pip size in price units, recorded in the pattern documents.
    holdout_patterns_doc, holdout_regimes
        The research base's pattern document and regime table, chosen on the whole training
        part, for the holdout segment. Either may be None.
    pair_year
        ``PAIR_YEAR`` name for the documents and logs.

    Returns
    -------
    RefitResult
        The blocks, the segments for ``SignalContext.segments`` (blocks in time order, then
        the holdout from ``split_ns`` on) and the report section. With no block, the only
        segment is the holdout and ``report["reason"]`` gives the cause.
    """
    started = time.perf_counter()
    split_ns = int(split_ns)
    bounds, reason = block_bounds(day_numbers, split_ns, config)
    if not bounds:
        reason = (f"no walk-forward test block fits the {len(day_numbers)} in-sample trading days ({reason}), so "
                  f"pattern and regime families get no in-sample signal, only holdout signals from the patterns "
                  f"and regimes of the whole training part")
        logger.warning("%s: %s", pair_year, reason)

    # Labels are read once, up to the last block's start, and each block then takes its own rows.
    labels = _labels_before(labels_by_timeframe, max(start for start, _, _ in bounds)) if bounds else {}
    blocks = []
    for index, (start_ns, end_ns, train_start_ns) in enumerate(bounds):
        blocks.append(_fit_block(index, start_ns, end_ns, train_start_ns, features_by_timeframe, labels,
                                 regime_features, config, pip_size, pair_year))

    segments = [SignalSegment(block.start_ns, block.end_ns, block.patterns_doc, block.regimes) for block in blocks]
    segments.append(SignalSegment(split_ns, _END_OF_TIME_NS, holdout_patterns_doc, holdout_regimes))
    seconds = time.perf_counter() - started
    report = _report(blocks, reason, day_numbers, split_ns, config, holdout_patterns_doc, holdout_regimes, seconds)
    logger.info("%s: patterns and regimes refitted for %d walk-forward blocks in %.1fs", pair_year, len(blocks),
                seconds)
    return RefitResult(blocks=tuple(blocks), segments=tuple(segments), report=report)


def disabled_report(reason: str) -> dict[str, Any]:
    """Return the ``refit`` report section of a search that did not refit per block."""
    return {"enabled": False, "reason": reason, "blocks": []}


def _labels_before(labels_by_timeframe: Mapping[int, pd.DataFrame | str | Path],
                   before_ns: int) -> dict[int, pd.DataFrame]:
    """Return, per timeframe, the label rows known before ``before_ns`` with int64 time columns."""
    known: dict[int, pd.DataFrame] = {}
    for timeframe_min, labels in labels_by_timeframe.items():
        if isinstance(labels, pd.DataFrame):
            frame = labels.copy()
            for name in ("timestamp", "exit_time"):
                frame[name] = _time_ns(frame[name], name)
            known[timeframe_min] = frame[(frame["exit_time"].to_numpy() != NAT_NS)
                                         & (frame["exit_time"].to_numpy() < before_ns)]
        else:
            known[timeframe_min] = read_labels_known_before(labels, before_ns)
    return known


def _time_ns(column: pd.Series, name: str) -> np.ndarray:
    """Return a label time column as int64 ns, ``NAT_NS`` where missing."""
    if pd.api.types.is_integer_dtype(column.dtype):
        return column.to_numpy(dtype=np.int64, na_value=NAT_NS)
    if pd.api.types.is_datetime64_any_dtype(column.dtype):
        values = np.full(len(column), NAT_NS, dtype=np.int64)
        valid = column.notna().to_numpy()
        values[valid] = index_to_ns(pd.DatetimeIndex(column[valid]))
        return values
    raise ValueError(f"Label column {name!r} has dtype {column.dtype}; expected int64 ns UTC or datetime64.")


def _fit_block(index: int, start_ns: int, end_ns: int, train_start_ns: int,
               features_by_timeframe: Mapping[int, pd.DataFrame], labels: Mapping[int, pd.DataFrame],
               regime_features: pd.DataFrame | None, config: Config, pip_size: float,
               pair_year: str | None) -> RefitBlock:
    """Mine the patterns and fit the regime model of one block on data in [train_start_ns, start_ns)."""
    features_before = {timeframe_min: _rows_between(features, train_start_ns, start_ns)
                       for timeframe_min, features in features_by_timeframe.items()}
    labels_before = {}
    for timeframe_min, frame in labels.items():
        exit_ns = frame["exit_time"].to_numpy()
        keep = (exit_ns < start_ns) & (frame["timestamp"].to_numpy() >= train_start_ns)
        labels_before[timeframe_min] = frame[keep]
    patterns_doc = mine_patterns(features_before, labels_before, start_ns, config.patterns, pip_size,
                                 pair_year=pair_year)
    patterns_doc["refit_block"] = index

    regime_model = regimes = None
    if regime_features is not None:
        regime_model = fit_regime_model(_rows_between(regime_features, train_start_ns, start_ns), start_ns,
                                        config.regimes)
        # The forward filter runs from the first bar and each bar's probability uses bars up to it
        # only, so the rows after the block can be left out.
        regimes = apply_regime_model(regime_model, _rows_between(regime_features, None, end_ns))
    return RefitBlock(index=index, start_ns=start_ns, end_ns=end_ns, train_start_ns=train_start_ns,
                      patterns_doc=patterns_doc, regime_model=regime_model, regimes=regimes)


def _rows_between(features: pd.DataFrame, first_ns: int | None, stop_ns: int) -> pd.DataFrame:
    """Return the rows whose bar opens in [first_ns, stop_ns), with no lower bound when first_ns is None."""
    timestamp_ns = timestamp_column_ns(features, "feature table")
    first = 0 if first_ns is None else int(np.searchsorted(timestamp_ns, first_ns, side="left"))
    stop = int(np.searchsorted(timestamp_ns, stop_ns, side="left"))
    return features.iloc[first:stop].reset_index(drop=True)


def _iso(timestamp_ns: int) -> str:
    return ns_to_datetime(np.array([timestamp_ns]))[0].isoformat()


def _regime_names(regimes: pd.DataFrame | None) -> list[str]:
    if regimes is None or len(regimes) == 0:
        return []
    return sorted(name for name in set(regimes["regime_name"].astype(str)) if name != WARMUP_NAME)


def _report(blocks: list[RefitBlock], reason: str, day_numbers: np.ndarray, split_ns: int, config: Config,
            holdout_patterns_doc: Mapping[str, Any] | None, holdout_regimes: pd.DataFrame | None,
            seconds: float) -> dict[str, Any]:
    """Return the ``refit`` section of the search report."""
    validation = config.validation
    rows = []
    for block in blocks:
        patterns_doc = block.patterns_doc or {}
        model = block.regime_model or {}
        rows.append({
            "index": block.index,
            "start": _iso(block.start_ns), "end": _iso(block.end_ns),
            "start_ns": block.start_ns, "end_ns": block.end_ns,
            "fitted_from": _iso(block.train_start_ns),
            "conditions_tested": int(patterns_doc.get("conditions_tested", 0)),
            "patterns": len(patterns_doc.get("patterns", [])),
            "patterns_insufficient_data": patterns_doc.get("insufficient_data"),
            "regimes": list(model.get("names", [])),
            "regimes_insufficient_data": model.get("insufficient_data") if block.regime_model is not None
            else "no regime features",
        })
    first_day = _iso(int(trading_day_start_ns(np.asarray(day_numbers[:1]))[0])) if len(day_numbers) else None
    warmup_end = _iso(blocks[0].start_ns) if blocks else _iso(split_ns)
    return {
        "enabled": True,
        "reason": reason,
        "scheme": validation.scheme,
        "folds_requested": validation.n_folds,
        "purge_days": horizon_days(config.search.horizon_minutes),
        "embargo_days": validation.embargo_days,
        "warmup": {"start": first_day, "end": warmup_end,
                   "note": "bars opening before the first block get no pattern or regime signal"},
        "blocks": rows,
        "holdout": {"start": _iso(split_ns), "fitted_on": "the whole training part (the research base)",
                    "patterns": len((holdout_patterns_doc or {}).get("patterns", [])),
                    "regimes": _regime_names(holdout_regimes)},
        "seconds": seconds,
    }

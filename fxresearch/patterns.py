"""Pattern mining: feature conditions under which one side's labels earn a positive net expectancy.

A condition is one feature bin ("``rsi_14`` in bin 0") or two bins of different features
("``rsi_14`` in bin 0 and ``session_london`` = 1"). Every condition is tested for every
labelled timeframe, grid entry and side, on the training part only, and the p-values of all
of them together go through one Benjamini-Yekutieli false-discovery correction.

Market and data assumptions:

- A label row is a trade that enters at the first tick after its signal bar closes; its
  ``pips`` are net of the bid/ask spread (a long enters at the ask and exits on the bid).
- A label belongs to training when its ``exit_time`` is before ``split_ns`` (the outcome was
  known before the split), and to the holdout when its signal bar closes at or after
  ``split_ns``. Rows in between entered before the split and exited after it, so they are
  purged from both parts. Rows without an exit time are purged too.
- Censored labels (no entry, or the data ended or had a hole first) are counted but left out
  of win rates, expectancy and support.
- Labels overlap in time, so each one is weighted by its ``uniqueness`` (see
  ``fxresearch.labels``). Win rate and expectancy are uniqueness-weighted means, and the sum
  of the weights is the effective number of independent labels used for the confidence
  intervals and the p-value.
- The test of a condition is one-sided: H0 is that its weighted mean net pips is at most 0.
  The statistic is ``mean / (sd / sqrt(n_eff))`` against Student's t with ``n_eff - 1``
  degrees of freedom. Conditions with fewer than ``min_support_train`` known training
  labels get p = 1 and still count as tested.
- Bin edges come from feature rows of bars that close before the split. Base rates
  and selection use training labels only. The holdout figures of the selected conditions
  are reported and never used to choose them.
- ``apply_patterns`` places a bar in a bin with the stored edges and its own feature values,
  so signals are causal when the features are.

The document layout is described in ``docs/patterns_schema.md``.
"""

from __future__ import annotations

import logging
import math
import numbers
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from scipy import stats

from fxresearch._pattern_kernels import condition_sums_nb
from fxresearch.config import PatternsConfig
from fxresearch.timeutil import NS_PER_MINUTE, datetime_to_ns, ns_to_datetime

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 2
SIDES: tuple[int, ...] = (1, -1)
SIDE_NAMES: dict[int, str] = {1: "long", -1: "short"}
OUTCOMES: tuple[str, ...] = ("stop_loss", "take_profit", "horizon", "censored")
# Label columns the miner reads.
LABEL_COLUMNS: tuple[str, ...] = (
    "timestamp", "side", "grid_id", "take_profit_pips", "stop_loss_pips", "horizon_minutes",
    "outcome", "exit_time", "pips", "uniqueness",
)
APPLY_USES: tuple[str, ...] = ("train_selected", "kept")
FDR_METHOD = "benjamini_yekutieli"
# Marker of a missing time in int64 time columns. pandas reads int64 min as NaT.
NAT_NS = np.iinfo(np.int64).min
# Two-sided 95 % intervals.
CONFIDENCE = 0.95


@dataclass(frozen=True)
class BinSpec:
    """Bins of one feature, fitted on training rows.

    ``kind`` is ``"quantile"`` or ``"category"``. For quantile bins ``edges`` are the unique
    train quantiles from the minimum to the maximum, and bin k covers
    ``edges[k] <= x < edges[k+1]``. The first bin has no lower bound and the last no upper
    bound, so values outside the train range fall in the end bins. For category bins ``edges``
    are the distinct train values and bin k contains ``x == edges[k]``. Any other value is in
    no bin.
    """

    kind: str
    edges: np.ndarray

    @property
    def n_bins(self) -> int:
        """Number of bins."""
        if self.kind == "category":
            return len(self.edges)
        return len(self.edges) - 1

    def assign(self, values: np.ndarray) -> np.ndarray:
        """Return the bin index of each value as int16, with -1 for NaN or no matching bin."""
        values = np.asarray(values, dtype=np.float64)
        bins = np.full(len(values), -1, dtype=np.int16)
        finite = np.isfinite(values)
        if self.kind == "category":
            position = np.searchsorted(self.edges, values[finite])
            position = np.minimum(position, len(self.edges) - 1)
            matched = self.edges[position] == values[finite]
            bins[np.flatnonzero(finite)[matched]] = position[matched]
        else:
            bins[finite] = np.searchsorted(self.edges[1:-1], values[finite], side="right")
        return bins

    def bounds(self, k: int) -> tuple[float | None, float | None]:
        """Return (lower, upper) of bin k. None means unbounded, and a category bin has lower == upper."""
        if self.kind == "category":
            value = float(self.edges[k])
            return value, value
        lower = None if k == 0 else float(self.edges[k])
        upper = None if k == self.n_bins - 1 else float(self.edges[k + 1])
        return lower, upper

    def to_json(self) -> dict[str, Any]:
        """Return the document form ``{"kind": ..., "edges": [...]}``."""
        return {"kind": self.kind, "edges": [float(e) for e in self.edges]}

    @classmethod
    def from_json(cls, feature: str, entry: Any) -> "BinSpec":
        """Build a BinSpec from its document form, raising on a malformed entry."""
        if not isinstance(entry, dict) or entry.get("kind") not in ("quantile", "category"):
            raise ValueError(
                f"Invalid bins entry for feature {feature!r} in the patterns document: {entry!r}; "
                f"expected {{'kind': 'quantile' or 'category', 'edges': [...]}}. "
                f"Rebuild the document with mine_patterns.")
        edges = np.asarray(entry.get("edges", []), dtype=np.float64)
        return cls(entry["kind"], edges)


def fit_bins(values: np.ndarray, n_bins: int, max_categories: int) -> BinSpec | str:
    """Fit bins on training values, or return the reason the feature cannot be binned.

    Parameters
    ----------
    values
        Feature values of the training bars; NaN and infinities are ignored.
    n_bins
        Number of quantile bins requested; duplicate edges are merged, so ties give fewer.
    max_categories
        A feature with at most this many distinct values gets one bin per value.

    Returns
    -------
    BinSpec or str
        The bins, or a short reason (no finite value, constant, one bin after merging ties).
    """
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return "no finite value on the training rows"
    distinct = np.unique(values)
    if len(distinct) < 2:
        return "constant on the training rows"
    if len(distinct) <= max_categories:
        return BinSpec("category", distinct)
    edges = np.unique(np.quantile(values, np.linspace(0.0, 1.0, n_bins + 1)))
    if len(edges) < 3:
        return "one bin after merging tied quantile edges"
    return BinSpec("quantile", edges)


@dataclass
class _LabelRows:
    """Label rows of one timeframe, grid entry and side, joined to their feature rows."""

    feature_row: np.ndarray  # int64 index into the features table
    is_train: np.ndarray
    is_holdout: np.ndarray
    known: np.ndarray  # outcome known (not censored)
    win: np.ndarray  # float64 1.0 for take-profit
    pips: np.ndarray  # net pips, 0 where censored
    weight: np.ndarray  # uniqueness, 0 where censored


@dataclass
class _Layout:
    """Condition cells of one timeframe: singles first, then pairs of two features."""

    names: list[str]
    n_bins: np.ndarray
    single_offset: np.ndarray
    pair_offset: np.ndarray
    n_cells: int
    # Per cell: feature index and bin of the first and second condition (-1 for singles).
    feature_a: np.ndarray
    bin_a: np.ndarray
    feature_b: np.ndarray
    bin_b: np.ndarray


@dataclass
class _Candidate:
    """A condition whose training p-value is small enough that the correction could keep it."""

    timeframe_min: int
    grid: dict[str, Any]
    side: int
    conditions: tuple[tuple[str, int], ...]
    train: dict[str, Any]
    holdout: dict[str, Any]

    @property
    def p_value(self) -> float:
        return float(self.train["p_value"])

    @property
    def pattern_id(self) -> str:
        """Readable stable id such as ``M5:g0:long:rsi_14[0]&session_london[1]``."""
        conditions = "&".join(f"{name}[{k}]" for name, k in self.conditions)
        return f"M{self.timeframe_min}:g{self.grid['grid_id']}:{SIDE_NAMES[self.side]}:{conditions}"


def mine_patterns(features_by_timeframe: Mapping[int, pd.DataFrame],
                  labels_by_timeframe: Mapping[int, pd.DataFrame | str | Path],
                  split_ns: int, config: PatternsConfig, pip_size: float,
                  pair_year: str | None = None) -> dict[str, Any]:
    """Test feature conditions against the labels of every timeframe, grid entry and side.

    Parameters
    ----------
    features_by_timeframe
        Timeframe in minutes to its feature table: ``timestamp`` (bar open, int64 ns UTC or
        ``datetime64[ns, UTC]``) and numeric feature columns, NaN during warm-up. Row t must
        use bars up to t only.
    labels_by_timeframe
        Timeframe in minutes to its labels, a DataFrame or the path of a labels parquet file
        (read one grid entry at a time, so memory stays bounded). Columns ``LABEL_COLUMNS``
        at least (see ``fxresearch.labels``). Timeframes without a features table are noted
        and skipped.
    split_ns
        Train/holdout split time, int ns UTC.
    config
        Bins, support floors, the false-discovery rate and the cap on written patterns.
    pip_size
        Pip size in price units, recorded in the document (label ``pips`` are already in pips).
    pair_year
        ``PAIR_YEAR`` name recorded in the document.

    Returns
    -------
    dict
        The JSON-safe patterns document described in ``docs/patterns_schema.md``.

    Raises
    ------
    ValueError
        A missing column, a bad time column, an unknown outcome or side, duplicate bars, or
        an invalid argument.
    """
    started = time.perf_counter()
    split_ns = _check_int("split_ns", split_ns)
    if not (isinstance(pip_size, numbers.Real) and math.isfinite(pip_size) and pip_size > 0):
        raise ValueError(f"pip_size must be a positive price step, got {pip_size!r}")
    document = _new_document(split_ns, config, pip_size, pair_year)

    p_values: list[np.ndarray] = []
    candidates: list[_Candidate] = []
    for timeframe_min in sorted(labels_by_timeframe):
        timeframe_min = _check_int("timeframe_min", timeframe_min)
        if timeframe_min <= 0:
            raise ValueError(f"timeframe_min must be a positive number of minutes, got {timeframe_min}")
        key = str(timeframe_min)
        if timeframe_min not in features_by_timeframe:
            document["timeframe_notes"][key] = "no features table for this timeframe"
            continue
        note = _mine_timeframe(features_by_timeframe[timeframe_min], labels_by_timeframe[timeframe_min],
                               timeframe_min, split_ns, config, document, p_values, candidates)
        if note is not None:
            document["timeframe_notes"][key] = note
        else:
            document["timeframes_min"].append(timeframe_min)
    # One warning per fact: each skipped timeframe when others were mined, else one for the pair below.
    if document["timeframes_min"]:
        for key, note in document["timeframe_notes"].items():
            logger.warning("No patterns mined for %s M%s: %s", pair_year, key, note)

    if not document["timeframes_min"]:
        reasons = "; ".join(f"M{k}: {v}" for k, v in document["timeframe_notes"].items())
        return _insufficient(document, reasons or "no labelled timeframe")

    all_p = np.concatenate(p_values) if p_values else np.empty(0)
    threshold = benjamini_yekutieli_threshold(all_p, config.fdr)
    n_tested = int(len(all_p))
    significant = [c for c in candidates if threshold is not None and c.p_value <= threshold]
    q_values = benjamini_yekutieli_q(np.array([c.p_value for c in significant]), all_p)
    for candidate, q in zip(significant, q_values, strict=True):
        candidate.train["q_value"] = float(q)
    significant.sort(key=lambda c: (c.p_value, c.pattern_id))

    document["conditions_tested"] = n_tested
    document["raw_significant"] = int((all_p <= config.fdr).sum())
    document["significant"] = len(significant)
    document["significant_share"] = len(significant) / n_tested if n_tested else 0.0
    document["p_value_threshold"] = threshold
    document["patterns"] = [_pattern_entry(c, document["bins"][str(c.timeframe_min)], config)
                            for c in significant[:config.max_patterns]]
    document["kept"] = [p["id"] for p in document["patterns"] if p["holds_on_holdout"]]
    logger.info("Mined patterns for %s on M%s: %d conditions tested, %d below p %.3g uncorrected, %d significant "
                "at false-discovery rate %.3g, %d written, %d hold on the holdout (%.2f s)",
                pair_year, ",M".join(str(t) for t in document["timeframes_min"]), n_tested,
                document["raw_significant"], config.fdr, len(significant), config.fdr, len(document["patterns"]),
                len(document["kept"]), time.perf_counter() - started)
    return document


def benjamini_yekutieli_threshold(p_values: np.ndarray, fdr: float) -> float | None:
    """Return the largest p-value rejected by Benjamini-Yekutieli at ``fdr``, or None.

    The procedure controls the false-discovery rate under any dependence between the tests.
    With m p-values sorted ascending, it rejects the k smallest for the largest k with
    ``p_(k) <= k * fdr / (m * sum_{i<=m} 1/i)``.
    """
    p_values = np.sort(np.asarray(p_values, dtype=np.float64))
    m = len(p_values)
    if m == 0:
        return None
    harmonic = float(np.sum(1.0 / np.arange(1, m + 1)))
    limits = np.arange(1, m + 1) * fdr / (m * harmonic)
    passing = np.flatnonzero(p_values <= limits)
    if len(passing) == 0:
        return None
    return float(p_values[passing[-1]])


def benjamini_yekutieli_q(selected: np.ndarray, p_values: np.ndarray) -> np.ndarray:
    """Return Benjamini-Yekutieli adjusted p-values (q-values) of ``selected`` among all ``p_values``.

    The q-value of the k-th smallest p-value is ``min over j >= k of m * c(m) * p_(j) / j``,
    capped at 1, with ``c(m) = sum_{i<=m} 1/i``. A condition is significant at rate q when
    its q-value is at most q.
    """
    ordered = np.sort(np.asarray(p_values, dtype=np.float64))
    m = len(ordered)
    if m == 0 or len(selected) == 0:
        return np.empty(0)
    harmonic = float(np.sum(1.0 / np.arange(1, m + 1)))
    adjusted = ordered * m * harmonic / np.arange(1, m + 1)
    adjusted = np.minimum.accumulate(adjusted[::-1])[::-1]
    rank = np.searchsorted(ordered, np.asarray(selected, dtype=np.float64), side="left")
    return np.minimum(adjusted[np.minimum(rank, m - 1)], 1.0)


def _mine_timeframe(features: pd.DataFrame, labels: pd.DataFrame | str | Path, timeframe_min: int,
                    split_ns: int, config: PatternsConfig, document: dict[str, Any],
                    p_values: list[np.ndarray], candidates: list[_Candidate]) -> str | None:
    """Test every condition of one timeframe; return why it was skipped, or None."""
    key = str(timeframe_min)
    feature_ns, feature_columns = _check_features(features)
    if not feature_columns:
        return "the features table has no numeric feature column"

    # Bins from bars whose features are known before the split.
    train_bars = np.flatnonzero(feature_ns + timeframe_min * NS_PER_MINUTE < split_ns)
    if len(train_bars) < config.min_bars:
        return (f"{len(train_bars)} feature rows of bars closing before the split, fewer than "
                f"patterns.min_bars = {config.min_bars}")
    bins, skipped = _fit_feature_bins(features, feature_columns, train_bars, config)
    document["bins"][key] = {name: spec.to_json() for name, spec in bins.items()}
    document["skipped_features"][key] = skipped
    if not bins:
        return "no feature column varies on the training rows"
    layout = _layout(bins, config.pairs)
    codes = np.stack([spec.assign(features[name].to_numpy(dtype=np.float64, na_value=np.nan))
                      for name, spec in bins.items()], axis=1).astype(np.int16)

    counts = {"label_rows": 0, "without_feature_row": 0, "train": 0, "holdout": 0, "purged": 0}
    document["row_counts"][key] = counts
    document["base_rates"][key] = {}
    document["grid"][key] = []
    n_tested = 0
    for grid_rows in _grid_tables(labels):
        if len(grid_rows) == 0:
            continue
        _check_labels(grid_rows)
        grid = _grid_entry(grid_rows)
        document["grid"][key].append(grid)
        sides = _split_label_rows(grid_rows, feature_ns, split_ns, timeframe_min, counts)
        base_rates: dict[str, Any] = {}
        for side, rows in sides.items():
            base_train = _stats_from_sums(_base_sums(rows, rows.is_train), with_test=True)
            base_holdout = _stats_from_sums(_base_sums(rows, rows.is_holdout), with_test=False)
            base_rates[SIDE_NAMES[side]] = {"train": _record(base_train, 0), "holdout": _record(base_holdout, 0)}
            train = _condition_stats(codes, layout, rows, rows.is_train, config, with_test=True)
            holdout = _condition_stats(codes, layout, rows, rows.is_holdout, config, with_test=False)
            p_values.append(train["p_value"])
            n_tested += layout.n_cells
            for cell in np.flatnonzero(train["p_value"] <= config.fdr):
                candidates.append(_Candidate(
                    timeframe_min=timeframe_min, grid=grid, side=side, conditions=_conditions(layout, cell),
                    train=_with_edges(_record(train, cell), base_rates[SIDE_NAMES[side]]["train"]),
                    holdout=_with_edges(_record(holdout, cell), base_rates[SIDE_NAMES[side]]["holdout"]),
                ))
        document["base_rates"][key][str(grid["grid_id"])] = base_rates
    document["conditions_tested_by_timeframe"][key] = n_tested
    if counts["label_rows"] == 0:
        return "the labels table is empty"
    return None


def _grid_tables(labels: pd.DataFrame | str | Path):
    """Yield the label rows of one grid entry at a time, in grid id order."""
    if isinstance(labels, pd.DataFrame):
        missing = [c for c in LABEL_COLUMNS if c not in labels.columns]
        if missing:
            raise ValueError(f"The labels table is missing columns {missing}; expected {list(LABEL_COLUMNS)}. "
                             f"Rebuild the labels with fxresearch.labels.")
        if len(labels) == 0:
            return
        grid_ids = labels["grid_id"].to_numpy()
        for grid_id in np.unique(grid_ids):
            yield labels[grid_ids == grid_id]
        return
    path = Path(labels)
    names = pq.read_schema(path).names
    missing = [c for c in LABEL_COLUMNS if c not in names]
    if missing:
        raise ValueError(f"The labels file {path} is missing columns {missing}; rebuild it with generate-base.")
    grid_ids = np.unique(pq.read_table(path, columns=["grid_id"]).column("grid_id").to_numpy())
    for grid_id in grid_ids:
        table = pq.read_table(path, columns=list(LABEL_COLUMNS), filters=[("grid_id", "=", int(grid_id))])
        frame = table.to_pandas()
        for name in ("timestamp", "exit_time"):
            if pd.api.types.is_datetime64_any_dtype(frame[name].dtype):
                frame[name] = _datetimes_to_ns(frame[name])
        yield frame


def _datetimes_to_ns(column: pd.Series) -> np.ndarray:
    """Return int64 ns with ``NAT_NS`` where the time is missing."""
    values = np.full(len(column), NAT_NS, dtype=np.int64)
    valid = column.notna().to_numpy()
    if valid.any():
        values[valid] = datetime_to_ns(column[valid])
    return values


def _layout(bins: dict[str, BinSpec], with_pairs: bool) -> _Layout:
    names = list(bins)
    n_bins = np.array([bins[name].n_bins for name in names], dtype=np.int64)
    n_features = len(names)
    single_offset = np.concatenate([[0], np.cumsum(n_bins)[:-1]]).astype(np.int64)
    n_cells = int(n_bins.sum())
    pair_offset = np.full((n_features, n_features), -1, dtype=np.int64)
    feature_a = [np.repeat(np.arange(n_features), n_bins)]
    bin_a = [np.concatenate([np.arange(n) for n in n_bins])]
    feature_b = [np.full(n_cells, -1)]
    bin_b = [np.full(n_cells, -1)]
    if with_pairs:
        for f in range(n_features):
            for g in range(f + 1, n_features):
                pair_offset[f, g] = n_cells
                size = int(n_bins[f] * n_bins[g])
                n_cells += size
                feature_a.append(np.full(size, f))
                bin_a.append(np.repeat(np.arange(n_bins[f]), n_bins[g]))
                feature_b.append(np.full(size, g))
                bin_b.append(np.tile(np.arange(n_bins[g]), n_bins[f]))
    return _Layout(names, n_bins, single_offset, pair_offset, n_cells,
                   *(np.concatenate(parts).astype(np.int64) for parts in (feature_a, bin_a, feature_b, bin_b)))


def _conditions(layout: _Layout, cell: int) -> tuple[tuple[str, int], ...]:
    first = (layout.names[layout.feature_a[cell]], int(layout.bin_a[cell]))
    if layout.feature_b[cell] < 0:
        return (first,)
    second = (layout.names[layout.feature_b[cell]], int(layout.bin_b[cell]))
    return tuple(sorted((first, second)))


def _base_sums(rows: _LabelRows, part: np.ndarray) -> tuple[np.ndarray, ...]:
    """Return the sums of ``condition_sums_nb`` for one cell holding every row of the part."""
    known = part & rows.known
    weight, pips = rows.weight[known], rows.pips[known]
    return (np.array([known.sum()]), np.array([(part & ~rows.known).sum()]), np.array([weight.sum()]),
            np.array([(weight * rows.win[known]).sum()]), np.array([(weight * pips).sum()]),
            np.array([(weight * pips * pips).sum()]))


def _condition_stats(codes: np.ndarray, layout: _Layout, rows: _LabelRows, part: np.ndarray,
                     config: PatternsConfig, with_test: bool) -> dict[str, np.ndarray]:
    chosen = np.flatnonzero(part)
    sums = condition_sums_nb(
        codes, rows.feature_row[chosen], rows.weight[chosen], rows.win[chosen], rows.pips[chosen],
        rows.known[chosen], layout.single_offset, layout.pair_offset, layout.n_bins, layout.n_cells,
        bool(config.pairs),
    )
    result = _stats_from_sums(sums, with_test=with_test)
    if with_test:
        result["p_value"] = np.where(result["support"] >= config.min_support_train, result["p_value"], 1.0)
    return result


def _stats_from_sums(sums: tuple[np.ndarray, ...], with_test: bool) -> dict[str, np.ndarray]:
    """Turn per-cell sums of ``condition_sums_nb`` into uniqueness-weighted statistics.

    Rates are NaN where a cell has no weight. The effective count is the sum of the
    uniqueness weights. The variance is the weighted variance of net pips with the
    n / (n - 1) correction of the raw count n.
    """
    count, censored, w, w_win, w_pips, w_pips2 = sums
    with np.errstate(invalid="ignore", divide="ignore"):
        win_rate = w_win / w
        mean = w_pips / w
        variance = np.maximum(w_pips2 / w - mean * mean, 0.0) * count / (count - 1)
        result: dict[str, np.ndarray] = {
            "support": count, "censored": censored, "weighted_support": w,
            "win_rate": win_rate, "expectancy_pips": mean,
        }
        if not with_test:
            return result
        n_eff = w
        df = np.maximum(n_eff - 1.0, 1.0)
        standard_error = np.sqrt(variance / n_eff)
        t_critical = stats.t.ppf(0.5 + CONFIDENCE / 2.0, df)
        result["expectancy_ci_pips"] = np.stack([mean - t_critical * standard_error,
                                                 mean + t_critical * standard_error], axis=1)
        result["win_rate_ci"] = _wilson_interval(win_rate, n_eff)
        t_value = mean / standard_error
        p_value = stats.t.sf(t_value, df)
        # A cell whose known labels all have the same pips has no spread to test against.
        p_value = np.where(standard_error > 0, p_value, np.where(mean > 0, 0.0, 1.0))
        result["p_value"] = np.where(count >= 2, p_value, 1.0)
    return result


def _wilson_interval(rate: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Return the Wilson score interval of a rate over an effective count, as (n, 2)."""
    z = stats.norm.ppf(0.5 + CONFIDENCE / 2.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        centre = (rate + z * z / (2 * n)) / (1 + z * z / n)
        half = z * np.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return np.stack([centre - half, centre + half], axis=1)


def _record(stats_arrays: dict[str, np.ndarray], cell: int) -> dict[str, Any]:
    """Return one cell's statistics as JSON-safe values (None for NaN)."""
    record: dict[str, Any] = {}
    for name, values in stats_arrays.items():
        value = values[cell]
        if np.ndim(value):
            record[name] = [_json_number(v) for v in value]
        elif name in ("support", "censored"):
            record[name] = int(value)
        else:
            record[name] = _json_number(value)
    return record


def _json_number(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _with_edges(record: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """Add the expectancy and win-rate differences from the base of the same part."""
    for name, edge in (("expectancy_pips", "expectancy_edge_pips"), ("win_rate", "win_rate_edge")):
        if record[name] is None or base[name] is None:
            record[edge] = None
        else:
            record[edge] = float(record[name] - base[name])
    return record


def _holds_on_holdout(candidate: _Candidate, config: PatternsConfig) -> bool:
    """Return True when the holdout also shows a positive net expectancy on enough labels."""
    holdout = candidate.holdout
    return (holdout["support"] >= config.min_support_holdout
            and holdout["expectancy_pips"] is not None
            and holdout["expectancy_pips"] > 0)


def _pattern_entry(candidate: _Candidate, bins_json: dict[str, Any], config: PatternsConfig) -> dict[str, Any]:
    conditions = []
    for name, k in candidate.conditions:
        lower, upper = BinSpec.from_json(name, bins_json[name]).bounds(k)
        conditions.append({"feature": name, "bin": int(k), "lower": lower, "upper": upper})
    return {
        "id": candidate.pattern_id,
        "timeframe_min": candidate.timeframe_min,
        **{name: candidate.grid[name] for name in ("grid_id", "take_profit_pips", "stop_loss_pips",
                                                   "horizon_minutes")},
        "side": int(candidate.side),
        "conditions": conditions,
        "train": candidate.train,
        "holdout": candidate.holdout,
        "holds_on_holdout": bool(_holds_on_holdout(candidate, config)),
    }
def _check_int(name: str, value: object) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return int(value)


def _time_column_ns(frame: pd.DataFrame, column: str, table: str) -> tuple[np.ndarray, np.ndarray]:
    """Return (int64 ns, valid mask) of a time column held as int64 ns, float ns or datetimes.

    A missing time is NaT, NaN, a null in a nullable integer column, or ``NAT_NS`` (int64 min,
    the labels stage's marker).
    """
    series = frame[column]
    n_rows = len(series)
    if pd.api.types.is_integer_dtype(series.dtype):
        valid = series.notna().to_numpy()
        values = series.to_numpy(dtype=np.int64, na_value=NAT_NS)
        return values, valid & (values != NAT_NS)
    if pd.api.types.is_datetime64_any_dtype(series.dtype):
        valid = series.notna().to_numpy()
        values = np.zeros(n_rows, dtype=np.int64)
        if valid.any():
            values[valid] = datetime_to_ns(series[valid])
        return values, valid
    if pd.api.types.is_float_dtype(series.dtype):
        raw = series.to_numpy(dtype=np.float64, na_value=np.nan)
        valid = np.isfinite(raw)
        values = np.zeros(n_rows, dtype=np.int64)
        values[valid] = raw[valid].astype(np.int64)
        return values, valid
    raise ValueError(f"Column {column!r} of the {table} table has dtype {series.dtype}; expected int64 "
                     f"nanoseconds UTC or datetime64[ns, UTC].")




def apply_patterns(features: pd.DataFrame, patterns_doc: Mapping[str, Any], use: str = "train_selected",
                   timeframe_min: int | None = None) -> np.ndarray:
    """Return a per-bar signal from a patterns document: +1 long, -1 short, 0 none.

    A bar gets a side when at least one pattern of that side fires on it and no pattern of the
    other side does. Bins come from the edges stored in the document for the timeframe, so
    the signal on bar t uses only bar t's feature values.

    Parameters
    ----------
    features
        A feature table of ``timeframe_min`` bars with every column the used patterns name.
    patterns_doc
        A document from ``mine_patterns`` (or read back from its JSON file).
    use
        ``"train_selected"`` (default) uses every written pattern, all chosen on training
        labels only, so backtest figures on the holdout stay out-of-sample. ``"kept"`` uses
        only the patterns that also held on the holdout. That choice looked at the holdout,
        so holdout results of a strategy built on it are not an out-of-sample test. It is
        for research only.
    timeframe_min
        Timeframe of ``features``; patterns of other timeframes are ignored. Defaults to the
        document's ``timeframe_min``.

    Returns
    -------
    np.ndarray
        int8 array with one entry per row of ``features``.

    Raises
    ------
    ValueError
        An unknown ``use``, a malformed document, or a feature column the patterns need is missing.
    """
    if use not in APPLY_USES:
        raise ValueError(f"use must be one of {APPLY_USES}, got {use!r}")
    for key in ("patterns", "bins", "kept", "timeframe_min"):
        if key not in patterns_doc:
            raise ValueError(f"The patterns document has no {key!r} key; rebuild it with mine_patterns.")
    if timeframe_min is None:
        timeframe_min = int(patterns_doc["timeframe_min"])
    patterns = [p for p in patterns_doc["patterns"] if int(p["timeframe_min"]) == timeframe_min]
    if use == "kept":
        kept = set(patterns_doc["kept"])
        patterns = [p for p in patterns if p["id"] in kept]
        logger.warning("apply_patterns(use='kept') trades patterns confirmed on the holdout; holdout "
                       "results built on it are not out-of-sample")
    bins = patterns_doc["bins"].get(str(timeframe_min), {})

    n_rows = len(features)
    long_fires = np.zeros(n_rows, dtype=bool)
    short_fires = np.zeros(n_rows, dtype=bool)
    bin_cache: dict[str, np.ndarray] = {}
    for pattern in patterns:
        fires = np.ones(n_rows, dtype=bool)
        for condition in pattern["conditions"]:
            name = condition["feature"]
            if name not in bin_cache:
                if name not in features.columns:
                    raise ValueError(
                        f"Pattern {pattern['id']} needs feature column {name!r}, which the features "
                        f"table lacks; build the features with the same settings as the patterns.")
                if name not in bins:
                    raise ValueError(f"Pattern {pattern['id']} names feature {name!r} with no bins "
                                     f"entry for M{timeframe_min} in the document; rebuild it with mine_patterns.")
                spec = BinSpec.from_json(name, bins[name])
                bin_cache[name] = spec.assign(features[name].to_numpy(dtype=np.float64, na_value=np.nan))
            fires &= bin_cache[name] == int(condition["bin"])
        if pattern["side"] == 1:
            long_fires |= fires
        elif pattern["side"] == -1:
            short_fires |= fires
        else:
            raise ValueError(f"Pattern {pattern['id']} has side {pattern['side']!r}; expected 1 or -1.")

    signal = np.zeros(n_rows, dtype=np.int8)
    signal[long_fires & ~short_fires] = 1
    signal[short_fires & ~long_fires] = -1
    return signal


def _fit_feature_bins(features: pd.DataFrame, feature_columns: list[str], train_bars: np.ndarray,
                      config: PatternsConfig) -> tuple[dict[str, BinSpec], dict[str, str]]:
    """Fit bins of every feature on the training bars; return the bins and the reasons for skipped ones."""
    bins: dict[str, BinSpec] = {}
    skipped: dict[str, str] = {}
    for name in feature_columns:
        values = features[name].to_numpy(dtype=np.float64, na_value=np.nan)
        spec = fit_bins(values[train_bars], config.n_bins, config.max_categories)
        if isinstance(spec, str):
            skipped[name] = spec
        else:
            bins[name] = spec
    return bins, skipped


def _check_features(features: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """Return the bar-open times and the numeric feature column names, or raise on a bad table."""
    if not isinstance(features, pd.DataFrame) or "timestamp" not in features.columns:
        raise ValueError("The features table must be a DataFrame with a 'timestamp' column (bar open).")
    feature_ns, valid = _time_column_ns(features, "timestamp", "features")
    if not valid.all():
        raise ValueError(f"The features table has {int((~valid).sum())} rows without a timestamp.")
    if len(feature_ns) > 1 and not (np.diff(feature_ns) > 0).all():
        raise ValueError("The features table timestamps must be strictly increasing (one row per bar); "
                         "sort the table and drop duplicate bars.")
    columns = []
    for name in features.columns:
        if name == "timestamp":
            continue
        dtype = features[name].dtype
        if pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_numeric_dtype(dtype):
            columns.append(str(name))
        else:
            logger.debug("Skipping non-numeric feature column %r (%s)", name, dtype)
    return feature_ns, columns


def _check_labels(labels: pd.DataFrame) -> None:
    outcomes = set(pd.unique(labels["outcome"].astype(str)))
    unknown = sorted(outcomes - set(OUTCOMES))
    if unknown:
        raise ValueError(f"The labels table has unknown outcome values {unknown}; expected {list(OUTCOMES)}.")
    sides = set(int(s) for s in pd.unique(labels["side"]))
    if not sides <= set(SIDES):
        raise ValueError(f"The labels table has side values {sorted(sides)}; expected 1 (long) and -1 (short).")


def _grid_entry(grid_rows: pd.DataFrame) -> dict[str, Any]:
    """Return the grid entry's id, barriers and horizon; a barrier that varies by row (ATR mode) is None."""
    entry: dict[str, Any] = {"grid_id": int(grid_rows["grid_id"].iloc[0])}
    for column in ("take_profit_pips", "stop_loss_pips", "horizon_minutes"):
        values = pd.unique(grid_rows[column].dropna())
        entry[column] = float(values[0]) if len(values) == 1 else None
    return entry


def _split_label_rows(grid_rows: pd.DataFrame, feature_ns: np.ndarray, split_ns: int, timeframe_min: int,
                      counts: dict[str, int]) -> dict[int, _LabelRows]:
    """Join one grid entry's label rows to feature rows, mark each as train, holdout or purged, and count them."""
    label_ns, label_valid = _time_column_ns(grid_rows, "timestamp", "labels")
    if not label_valid.all():
        raise ValueError(f"The labels table has {int((~label_valid).sum())} rows without a timestamp.")
    exit_ns, exit_known = _time_column_ns(grid_rows, "exit_time", "labels")
    side = grid_rows["side"].to_numpy(dtype=np.int64)
    outcome = grid_rows["outcome"].astype(str).to_numpy()
    pips = grid_rows["pips"].to_numpy(dtype=np.float64, na_value=np.nan)
    weight = grid_rows["uniqueness"].to_numpy(dtype=np.float64, na_value=np.nan)
    known = outcome != "censored"
    bad_pips = known & ~np.isfinite(pips)
    if bad_pips.any():
        raise ValueError(f"The labels table has {int(bad_pips.sum())} non-censored rows without pips; "
                         f"only censored rows may have NaN pips.")
    bad_weight = known & ~(weight > 0)
    if bad_weight.any():
        raise ValueError(f"The labels table has {int(bad_weight.sum())} non-censored rows without a positive "
                         f"uniqueness; rebuild the labels with fxresearch.labels.")

    # A label row without a feature row for its bar cannot be placed in a bin, so it is left out
    # and counted.
    position = np.minimum(np.searchsorted(feature_ns, label_ns), max(len(feature_ns) - 1, 0))
    if len(feature_ns):
        has_features = feature_ns[position] == label_ns
    else:
        has_features = np.zeros(len(label_ns), dtype=bool)

    # The outcome must be known before the split for training, and the whole trade must start
    # after it for the holdout: the signal bar closes at open + timeframe.
    is_train = exit_known & (exit_ns < split_ns)
    is_holdout = label_ns + timeframe_min * NS_PER_MINUTE >= split_ns
    is_purged = ~is_train & ~is_holdout

    sides: dict[int, _LabelRows] = {}
    for value in SIDES:
        keep = (side == value) & has_features
        if pd.Index(label_ns[keep]).has_duplicates:
            raise ValueError(f"The labels table has several rows for one bar, side {value} and grid_id "
                             f"{int(grid_rows['grid_id'].iloc[0])}; expected one per bar, grid entry and side.")
        sides[value] = _LabelRows(
            feature_row=position[keep].astype(np.int64),
            is_train=is_train[keep],
            is_holdout=is_holdout[keep],
            known=known[keep],
            win=(outcome[keep] == "take_profit").astype(np.float64),
            pips=np.where(known[keep], pips[keep], 0.0),
            weight=np.where(known[keep], weight[keep], 0.0),
        )
    counts["label_rows"] += int(len(grid_rows))
    counts["without_feature_row"] += int((~has_features).sum())
    counts["train"] += int((is_train & has_features).sum())
    counts["holdout"] += int((is_holdout & has_features).sum())
    counts["purged"] += int((is_purged & has_features).sum())
    return sides


def _new_document(split_ns: int, config: PatternsConfig, pip_size: float, pair_year: str | None) -> dict[str, Any]:
    """Return a document with every key present and no patterns yet."""
    return {
        "schema_version": SCHEMA_VERSION,
        "pair_year": pair_year,
        "timeframe_min": int(config.timeframe_min),
        "timeframes_min": [],
        "split_ns": int(split_ns),
        "split_time": ns_to_datetime(np.array([split_ns]))[0].isoformat(),
        "pip_size": float(pip_size),
        "selection": {
            "n_bins": config.n_bins,
            "max_categories": config.max_categories,
            "pairs": bool(config.pairs),
            "min_support_train": config.min_support_train,
            "min_support_holdout": config.min_support_holdout,
            "max_patterns": config.max_patterns,
            "min_bars": config.min_bars,
            "fdr": config.fdr,
            "fdr_method": FDR_METHOD,
            "test": ("one-sided Student t of the uniqueness-weighted mean net pips > 0, "
                     "effective count = sum of uniqueness"),
        },
        "conditions_tested": 0,
        "conditions_tested_by_timeframe": {},
        "raw_significant": 0,
        "significant": 0,
        "significant_share": 0.0,
        "p_value_threshold": None,
        "grid": {},
        "row_counts": {},
        "base_rates": {},
        "bins": {},
        "skipped_features": {},
        "timeframe_notes": {},
        "patterns": [],
        "kept": [],
        "insufficient_data": None,
    }


def _insufficient(document: dict[str, Any], reason: str) -> dict[str, Any]:
    logger.warning("No patterns mined for %s: %s", document["pair_year"], reason)
    document["insufficient_data"] = reason
    document["patterns"] = []
    document["kept"] = []
    return document

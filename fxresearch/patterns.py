"""Conditional pattern mining: feature bins whose label win rate beats the base rate.

A pattern is one condition ("``rsi_14`` in bin 0") or two joined ("``rsi_14`` in bin 0 and
``session_london`` = 1") plus a side. For one label grid entry (take-profit, stop-loss,
horizon) and each side, the stage compares the share of take-profit outcomes inside the
condition with the share over all bars, on the training rows, then reports the same figures
on the holdout.

Market and data assumptions:

- A label row is a trade that enters at the first tick after its signal bar closes. It belongs
  to training when its ``exit_time`` is before ``split_ns`` (the outcome was known before the
  split), and to the holdout when its signal bar closes at or after ``split_ns``. Rows in
  between entered before the split and exited after it, so they are purged from both parts.
- Censored labels (the data ended or had a hole before take-profit, stop-loss or horizon) are
  counted but left out of win rates and expectancy.
- Bin edges and the selection use training rows only. ``apply_patterns`` places a bar in a bin
  with the stored edges and its own feature values, so signals are causal when the features are.

The document layout is described in ``docs/patterns_schema.md``.
"""

from __future__ import annotations

import itertools
import logging
import math
import numbers
import time
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd

from fxresearch.config import PatternsConfig
from fxresearch.timeutil import NS_PER_MINUTE, datetime_to_ns, ns_to_datetime

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
SIDES: tuple[int, ...] = (1, -1)
SIDE_NAMES: dict[int, str] = {1: "long", -1: "short"}
OUTCOMES: tuple[str, ...] = ("take_profit", "stop_loss", "horizon", "censored")
LABEL_COLUMNS: tuple[str, ...] = (
    "timestamp", "grid_id", "take_profit_pips", "stop_loss_pips", "horizon_minutes", "side",
    "entry_time", "entry_price", "outcome", "exit_time", "exit_price", "pips",
)
APPLY_USES: tuple[str, ...] = ("train_selected", "kept")
# Marker of a missing time in int64 time columns. pandas reads int64 min as NaT.
NAT_NS = np.iinfo(np.int64).min


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
class _SideRows:
    """Label rows of one side for the mined grid entry, joined to their feature rows."""

    feature_row: np.ndarray  # int64 index into the features table
    is_train: np.ndarray
    is_holdout: np.ndarray
    censored: np.ndarray
    win: np.ndarray
    pips: np.ndarray  # NaN when censored


@dataclass
class _Candidate:
    """One condition set on one side, with its train and holdout figures."""

    side: int
    conditions: tuple[tuple[str, int], ...]
    train: dict[str, Any]
    holdout: dict[str, Any]
    train_rows: int  # matching training rows, censored included


def mine_patterns(features: pd.DataFrame, labels: pd.DataFrame, split_ns: int, timeframe_min: int,
                  config: PatternsConfig, pip_size: float, pair_year: str | None = None
                  ) -> dict[str, Any]:
    """Mine feature conditions that raise one side's take-profit rate, and check them on the holdout.

    Parameters
    ----------
    features
        One timeframe's feature table: ``timestamp`` (bar open, int64 ns UTC or
        ``datetime64[ns, UTC]``) and numeric feature columns, NaN during warm-up. Row t must use
        bars up to t only.
    labels
        The labels table in long format (see ``docs/architecture.md``) for the same timeframe.
        Rows of grid entry ``config.label_index`` (matched on ``grid_id``) are mined.
    split_ns
        Train/holdout split time, int ns UTC.
    timeframe_min
        Bar length in minutes; a signal bar closes at ``timestamp + timeframe_min``.
    config
        Bin count, support and edge thresholds, the caps on candidates and patterns.
    pip_size
        Pip size in price units, recorded in the document (label ``pips`` are already in pips).
    pair_year
        ``PAIR_YEAR`` name recorded in the document.

    Returns
    -------
    dict
        The JSON-safe patterns document described in ``docs/patterns_schema.md``. With fewer
        than ``config.min_bars`` usable training bars, ``patterns`` is empty and
        ``insufficient_data`` gives the reason.

    Raises
    ------
    ValueError
        A missing column, a bad time column, an unknown outcome, duplicate bars, a grid entry
        absent from a non-empty labels table, or an invalid argument.
    """
    started = time.perf_counter()
    split_ns = _check_int("split_ns", split_ns)
    timeframe_min = _check_int("timeframe_min", timeframe_min)
    if timeframe_min <= 0:
        raise ValueError(f"timeframe_min must be a positive number of minutes, got {timeframe_min}")
    if not (isinstance(pip_size, numbers.Real) and math.isfinite(pip_size) and pip_size > 0):
        raise ValueError(f"pip_size must be a positive price step, got {pip_size!r}")
    if config.n_bins < 2:
        raise ValueError(f"patterns.n_bins must be at least 2, got {config.n_bins}")

    document = _new_document(split_ns, timeframe_min, config, pip_size, pair_year)
    feature_ns, feature_columns = _check_features(features)
    _check_labels(labels)

    if len(labels) == 0:
        return _insufficient(document, "the labels table is empty")
    grid_rows = labels[labels["grid_id"].to_numpy() == config.label_index]
    if len(grid_rows) == 0:
        available = sorted(int(g) for g in pd.unique(labels["grid_id"]))
        raise ValueError(
            f"No label rows for grid_id {config.label_index} (patterns.label_index); the labels "
            f"table has grid ids {available}. Set patterns.label_index to one of them.")
    document["label"] = _label_entry(grid_rows)

    sides, row_counts = _split_label_rows(grid_rows, feature_ns, split_ns, timeframe_min)
    document["row_counts"] = row_counts
    document["base_rates"] = {
        SIDE_NAMES[side]: {
            "train": _outcome_stats(rows, rows.is_train, None),
            "holdout": _outcome_stats(rows, rows.is_holdout, None),
        }
        for side, rows in sides.items()
    }

    usable = _usable_training_bars(sides)
    if len(feature_columns) == 0:
        return _insufficient(document, "the features table has no numeric feature column")
    if usable < config.min_bars:
        return _insufficient(
            document, f"{usable} usable training bars (non-censored labels before the split, "
                      f"with a feature row), fewer than patterns.min_bars = {config.min_bars}")

    bins, skipped = _fit_feature_bins(features, feature_columns, sides, config)
    document["bins"] = {name: spec.to_json() for name, spec in bins.items()}
    document["skipped_features"] = skipped
    if not bins:
        return _insufficient(document, "no feature column varies on the training rows")

    feature_bins = {name: spec.assign(features[name].to_numpy(dtype=np.float64, na_value=np.nan))
                    for name, spec in bins.items()}

    z_floor, family_size = _train_z_floor(bins, config)
    document["selection"]["family_size"] = family_size
    document["selection"]["z_floor"] = z_floor

    selected: list[_Candidate] = []
    tested: dict[str, int] = {}
    for side, rows in sides.items():
        base_train = document["base_rates"][SIDE_NAMES[side]]["train"]
        base_holdout = document["base_rates"][SIDE_NAMES[side]]["holdout"]
        candidates, tested[SIDE_NAMES[side]] = _side_candidates(
            side, rows, feature_bins, base_train, base_holdout, z_floor, config)
        selected.extend(c for c in candidates if _passes_train_selection(c, base_train, z_floor, config))
    document["candidates_tested"] = tested

    selected.sort(key=lambda c: (-c.train["z"], _pattern_id(c)))
    selected = selected[:config.max_patterns]
    document["patterns"] = [
        _pattern_entry(c, bins, _holds_on_holdout(c, document["base_rates"][SIDE_NAMES[c.side]]["holdout"], config))
        for c in selected
    ]
    document["kept"] = [p["id"] for p in document["patterns"] if p["holds_on_holdout"]]

    logger.info("Mined patterns for %s M%d: %d candidates, %d train-selected, %d hold on the holdout "
                "(%.2f s)", pair_year, timeframe_min, sum(tested.values()), len(document["patterns"]),
                len(document["kept"]), time.perf_counter() - started)
    return document


def apply_patterns(features: pd.DataFrame, patterns_doc: dict[str, Any],
                   use: str = "train_selected") -> np.ndarray:
    """Return a per-bar signal from a patterns document: +1 long, -1 short, 0 none.

    A bar gets a side when at least one pattern of that side fires on it and no pattern of the
    other side does. Bins come from the edges stored in the document, so the signal on bar t
    uses only bar t's feature values.

    Parameters
    ----------
    features
        A feature table with every column the used patterns name; other columns are ignored.
    patterns_doc
        A document from ``mine_patterns`` (or read back from its JSON file).
    use
        ``"train_selected"`` (default) uses every pattern in the document, all of which were
        selected on training rows only, so backtest figures on the holdout stay out-of-sample.
        ``"kept"`` uses only the patterns that also held on the holdout. That choice looked at
        the holdout, so holdout results of a strategy built on it are contaminated and are
        not an out-of-sample test. It is for research only.

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
    for key in ("patterns", "bins", "kept"):
        if key not in patterns_doc:
            raise ValueError(f"The patterns document has no {key!r} key; rebuild it with mine_patterns.")
    patterns = patterns_doc["patterns"]
    if use == "kept":
        kept = set(patterns_doc["kept"])
        patterns = [p for p in patterns if p["id"] in kept]
        logger.warning("apply_patterns(use='kept') trades patterns confirmed on the holdout; holdout "
                       "results built on it are not out-of-sample")

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
                if name not in patterns_doc["bins"]:
                    raise ValueError(f"Pattern {pattern['id']} names feature {name!r} with no bins "
                                     f"entry in the document; rebuild it with mine_patterns.")
                spec = BinSpec.from_json(name, patterns_doc["bins"][name])
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


def _fit_feature_bins(features: pd.DataFrame, feature_columns: list[str], sides: dict[int, _SideRows],
                      config: PatternsConfig) -> tuple[dict[str, BinSpec], dict[str, str]]:
    """Fit bins of every feature on the bars with a training label on either side.

    Returns the bins and, for each feature that cannot be binned, the reason.
    """
    train_bars = np.unique(np.concatenate([rows.feature_row[rows.is_train] for rows in sides.values()]))
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
    if not isinstance(labels, pd.DataFrame):
        raise ValueError(f"The labels table must be a DataFrame, got {type(labels).__name__}.")
    missing = [c for c in LABEL_COLUMNS if c not in labels.columns]
    if missing:
        raise ValueError(f"The labels table is missing columns {missing}; expected {list(LABEL_COLUMNS)}.")
    outcomes = set(pd.unique(labels["outcome"].astype(str)))
    unknown = sorted(outcomes - set(OUTCOMES))
    if unknown:
        raise ValueError(f"The labels table has unknown outcome values {unknown}; expected {list(OUTCOMES)}.")
    sides = set(int(s) for s in pd.unique(labels["side"]))
    if not sides <= set(SIDES):
        raise ValueError(f"The labels table has side values {sorted(sides)}; expected 1 (long) and -1 (short).")


def _label_entry(grid_rows: pd.DataFrame) -> dict[str, Any]:
    entry: dict[str, Any] = {"grid_id": int(grid_rows["grid_id"].iloc[0])}
    for column in ("take_profit_pips", "stop_loss_pips", "horizon_minutes"):
        values = pd.unique(grid_rows[column])
        if len(values) != 1:
            raise ValueError(f"Label rows of grid_id {entry['grid_id']} have several {column} values "
                             f"{sorted(values)}; each grid entry needs one value.")
        entry[column] = float(values[0])
    return entry


def _split_label_rows(grid_rows: pd.DataFrame, feature_ns: np.ndarray, split_ns: int,
                      timeframe_min: int) -> tuple[dict[int, _SideRows], dict[str, int]]:
    """Join label rows to feature rows and mark each as training, holdout or purged."""
    label_ns, label_valid = _time_column_ns(grid_rows, "timestamp", "labels")
    if not label_valid.all():
        raise ValueError(f"The labels table has {int((~label_valid).sum())} rows without a timestamp.")
    exit_ns, exit_known = _time_column_ns(grid_rows, "exit_time", "labels")
    side = grid_rows["side"].to_numpy(dtype=np.int64)
    outcome = grid_rows["outcome"].astype(str).to_numpy()
    pips = grid_rows["pips"].to_numpy(dtype=np.float64, na_value=np.nan)
    censored = outcome == "censored"
    bad_pips = ~censored & ~np.isfinite(pips)
    if bad_pips.any():
        raise ValueError(f"The labels table has {int(bad_pips.sum())} non-censored rows without pips; "
                         f"only censored rows may have NaN pips.")

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

    sides: dict[int, _SideRows] = {}
    for value in SIDES:
        keep = (side == value) & has_features
        key = pd.Index(label_ns[keep])
        if key.has_duplicates:
            raise ValueError(f"The labels table has several rows for one bar, side {value} and grid_id "
                             f"{int(grid_rows['grid_id'].iloc[0])}; expected one per bar, grid entry and side.")
        sides[value] = _SideRows(
            feature_row=position[keep].astype(np.int64),
            is_train=is_train[keep],
            is_holdout=is_holdout[keep],
            censored=censored[keep],
            win=(outcome[keep] == "take_profit"),
            pips=pips[keep],
        )
    row_counts = {
        "label_rows": int(len(grid_rows)),
        "without_feature_row": int((~has_features).sum()),
        "train": int((is_train & has_features).sum()),
        "holdout": int((is_holdout & has_features).sum()),
        "purged": int((is_purged & has_features).sum()),
    }
    return sides, row_counts


def _usable_training_bars(sides: dict[int, _SideRows]) -> int:
    rows = [r.feature_row[r.is_train & ~r.censored] for r in sides.values()]
    return int(len(np.unique(np.concatenate(rows)))) if rows else 0


def _outcome_stats(rows: _SideRows, part: np.ndarray, match: np.ndarray | None,
                   base: dict[str, Any] | None = None) -> dict[str, Any]:
    """Return support, censored count, win rate and expectancy of matching rows in one part.

    With ``base`` (the part's base rates) the result also has the expectancy edge over the base
    and the binomial z-score of the win rate against the base win rate.
    """
    chosen = part if match is None else part & match
    outcome_known = chosen & ~rows.censored
    support = int(outcome_known.sum())
    stats: dict[str, Any] = {
        "support": support,
        "censored": int((chosen & rows.censored).sum()),
        "win_rate": float(rows.win[outcome_known].mean()) if support else None,
        "expectancy_pips": float(rows.pips[outcome_known].mean()) if support else None,
    }
    if base is not None:
        stats["expectancy_edge_pips"] = _difference(stats["expectancy_pips"], base["expectancy_pips"])
        stats["z"] = _binomial_z(stats["win_rate"], base["win_rate"], support)
    return stats


def _difference(value: float | None, reference: float | None) -> float | None:
    if value is None or reference is None:
        return None
    return float(value - reference)


def _binomial_z(win_rate: float | None, base_rate: float | None, support: int) -> float | None:
    """Return (p - p0) / sqrt(p0 (1 - p0) / n), or None when it is undefined.

    NOTE: labels of nearby bars overlap in time, so the rows are not independent and this
    z-score overstates significance on real data. It ranks candidates and is not a calibrated
    test there.
    """
    if win_rate is None or base_rate is None or support == 0 or not 0.0 < base_rate < 1.0:
        return None
    return float((win_rate - base_rate) / math.sqrt(base_rate * (1.0 - base_rate) / support))


def _side_candidates(side: int, rows: _SideRows, feature_bins: dict[str, np.ndarray],
                     base_train: dict[str, Any], base_holdout: dict[str, Any], z_floor: float,
                     config: PatternsConfig) -> tuple[list[_Candidate], int]:
    """Evaluate every single condition of one side, then pairs of the best singles.

    Returns the singles and the pairs that add edge over their parts, and the number of
    candidates evaluated.
    """
    row_bins = {name: bins[rows.feature_row] for name, bins in feature_bins.items()}

    def evaluate(conditions: tuple[tuple[str, int], ...], match: np.ndarray) -> _Candidate:
        return _Candidate(
            side=side,
            conditions=conditions,
            train=_outcome_stats(rows, rows.is_train, match, base_train),
            holdout=_outcome_stats(rows, rows.is_holdout, match, base_holdout),
            train_rows=int((rows.is_train & match).sum()),
        )

    singles: list[_Candidate] = []
    for name, bins in row_bins.items():
        for k in range(int(bins.max(initial=-1)) + 1):
            singles.append(evaluate(((name, k),), bins == k))

    # Pair up the best singles that have enough support and beat the base rate on train.
    leaders = [c for c in singles
               if c.train["support"] >= config.min_support_train and c.train["z"] is not None and c.train["z"] > 0]
    leaders.sort(key=lambda c: (-c.train["z"], _pattern_id(c)))
    leaders = leaders[:config.max_conjunction_conditions]
    pairs: list[_Candidate] = []
    evaluated = len(singles)
    for first, second in itertools.combinations(leaders, 2):
        (name_a, bin_a), (name_b, bin_b) = first.conditions[0], second.conditions[0]
        if name_a == name_b:
            continue
        match = (row_bins[name_a] == bin_a) & (row_bins[name_b] == bin_b)
        candidate = evaluate(tuple(sorted((first.conditions[0], second.conditions[0]))), match)
        evaluated += 1
        if _pair_adds_edge(candidate, first, second, config.min_win_rate_edge, z_floor):
            pairs.append(candidate)
    return singles + pairs, evaluated


def _pair_adds_edge(pair: _Candidate, first: _Candidate, second: _Candidate, min_edge: float,
                    z_floor: float) -> bool:
    """Return True when a pair narrows both parts and clearly beats the better part on train.

    The pair's train win rate must exceed the better part's by ``min_edge`` with a binomial
    z-score against that part of at least ``z_floor``. Without this rule a strong condition
    joined with any unrelated one would fill the list.
    """
    if pair.train_rows in (first.train_rows, second.train_rows) or pair.train["win_rate"] is None:
        return False
    best_part = max(first.train["win_rate"], second.train["win_rate"])
    z_over_part = _binomial_z(pair.train["win_rate"], best_part, pair.train["support"])
    return pair.train["win_rate"] - best_part >= min_edge and z_over_part is not None and z_over_part >= z_floor


def _train_z_floor(bins: dict[str, BinSpec], config: PatternsConfig) -> tuple[float, int]:
    """Return the train z floor of one side and the size of the candidate family it covers.

    The family is every single condition plus, when pairs are mined, every pair of conditions
    on two different features, because the pairs tried are picked by looking at the train
    figures of all singles. The floor is ``max(min_z_train, z)`` where z is the one-sided
    Bonferroni critical value ``Phi^-1(1 - familywise_alpha / family_size)``.
    """
    per_feature = np.array([spec.n_bins for spec in bins.values()], dtype=np.int64)
    singles = int(per_feature.sum())
    pairs = int((singles ** 2 - int((per_feature ** 2).sum())) // 2) if config.max_conjunction_conditions >= 2 else 0
    family_size = singles + pairs
    if config.familywise_alpha >= 1.0 or family_size == 0:
        return float(config.min_z_train), family_size
    if config.familywise_alpha <= 0.0:
        raise ValueError(f"patterns.familywise_alpha must be above 0, got {config.familywise_alpha}")
    bonferroni = NormalDist().inv_cdf(1.0 - config.familywise_alpha / family_size)
    return float(max(config.min_z_train, bonferroni)), family_size


def _passes_train_selection(candidate: _Candidate, base_train: dict[str, Any], z_floor: float,
                            config: PatternsConfig) -> bool:
    """Apply the train-only rule: support, win-rate edge, z floor and a positive expectancy edge."""
    train = candidate.train
    if train["support"] < config.min_support_train or train["z"] is None:
        return False
    win_rate_edge = train["win_rate"] - base_train["win_rate"]
    return (win_rate_edge >= config.min_win_rate_edge
            and train["z"] >= z_floor
            and train["expectancy_edge_pips"] is not None
            and train["expectancy_edge_pips"] > 0)


def _holds_on_holdout(candidate: _Candidate, base_holdout: dict[str, Any], config: PatternsConfig) -> bool:
    """Return True when the holdout moves the same way as train: higher win rate and expectancy."""
    holdout = candidate.holdout
    if holdout["support"] < config.min_support_holdout or holdout["win_rate"] is None:
        return False
    if base_holdout["win_rate"] is None or holdout["expectancy_edge_pips"] is None:
        return False
    return holdout["win_rate"] > base_holdout["win_rate"] and holdout["expectancy_edge_pips"] > 0


def _pattern_id(candidate: _Candidate) -> str:
    """Return a readable stable id such as ``long:rsi_14[0]&session_london[1]``."""
    conditions = "&".join(f"{name}[{k}]" for name, k in candidate.conditions)
    return f"{SIDE_NAMES[candidate.side]}:{conditions}"


def _pattern_entry(candidate: _Candidate, bins: dict[str, BinSpec], holds_on_holdout: bool) -> dict[str, Any]:
    conditions = []
    for name, k in candidate.conditions:
        lower, upper = bins[name].bounds(k)
        conditions.append({"feature": name, "bin": int(k), "lower": lower, "upper": upper})
    return {
        "id": _pattern_id(candidate),
        "conditions": conditions,
        "side": int(candidate.side),
        "train": candidate.train,
        "holdout": candidate.holdout,
        "holds_on_holdout": bool(holds_on_holdout),
    }


def _new_document(split_ns: int, timeframe_min: int, config: PatternsConfig, pip_size: float,
                  pair_year: str | None) -> dict[str, Any]:
    """Return a document with every key present and no patterns yet."""
    return {
        "schema_version": SCHEMA_VERSION,
        "pair_year": pair_year,
        "timeframe_min": int(timeframe_min),
        "split_ns": int(split_ns),
        "split_time": ns_to_datetime(np.array([split_ns]))[0].isoformat(),
        "label": {"grid_id": int(config.label_index), "take_profit_pips": None,
                  "stop_loss_pips": None, "horizon_minutes": None},
        "pip_size": float(pip_size),
        "selection": {
            "n_bins": config.n_bins,
            "max_categories": config.max_categories,
            "min_support_train": config.min_support_train,
            "min_support_holdout": config.min_support_holdout,
            "min_win_rate_edge": config.min_win_rate_edge,
            "min_z_train": config.min_z_train,
            "familywise_alpha": config.familywise_alpha,
            "family_size": 0,
            "z_floor": None,
            "max_conjunction_conditions": config.max_conjunction_conditions,
            "max_patterns": config.max_patterns,
            "min_bars": config.min_bars,
        },
        "row_counts": {"label_rows": 0, "without_feature_row": 0, "train": 0, "holdout": 0, "purged": 0},
        "base_rates": {name: {"train": None, "holdout": None} for name in SIDE_NAMES.values()},
        "bins": {},
        "skipped_features": {},
        "candidates_tested": {name: 0 for name in SIDE_NAMES.values()},
        "patterns": [],
        "kept": [],
        "insufficient_data": None,
    }


def _insufficient(document: dict[str, Any], reason: str) -> dict[str, Any]:
    logger.warning("No patterns mined for %s M%d: %s", document["pair_year"], document["timeframe_min"], reason)
    document["insufficient_data"] = reason
    document["patterns"] = []
    document["kept"] = []
    return document

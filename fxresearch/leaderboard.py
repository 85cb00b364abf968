"""The cross-pair leaderboard of a search-light run: the top strategies of every pair in one table.

Flow::

    output/runs/<run id>.jsonl (latest search-light ledger) -> the run's pairs
    output/PAIR_YEAR/PAIR_YEAR_backtest_results.parquet + _search_report.json
        -> top N strategies of each pair by the pair's own rank, _is and _oos side by side
        -> the score deflated again with the trials of the whole run (score_run)
        -> output/leaderboard.parquet / .csv
    every strategy of every pair
        -> (family, params) rows: on how many pairs a parameter set reaches the top decile
        -> output/leaderboard_families.parquet / .csv

Nothing is recomputed from ticks: every figure comes from the per-pair search outputs.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from fxresearch import artifacts
from fxresearch.daily import TRADING_DAYS_PER_YEAR
from fxresearch.validation import deflated_sharpe_ratio, expected_max_sharpe

logger = logging.getLogger(__name__)

LEADERBOARD_STEM = "leaderboard"
FAMILIES_STEM = "leaderboard_families"
DEFAULT_TOP_N = 10
# A (family, params) is "top decile" on a pair when one of its SL/TP variants ranks in the
# first tenth of that pair's strategies.
TOP_FRACTION = 0.1
# The per-pair ranking falls back through these keys, as ``search.rank_results`` does.
RANKING_KEYS = ("score", "sharpe_is", "total_pips_is")
# Metrics shown with their in-sample and out-of-sample columns next to each other.
SIDE_BY_SIDE = ("n_trades", "total_pips", "sharpe", "sortino", "calmar", "win_rate", "profit_factor",
                "expectancy_pips", "max_drawdown_pips", "pnl_usd", "n_days")
IDENTITY_COLUMNS = ("strategy_id", "family", "params", "stop_loss_pips", "take_profit_pips", "timeframe_min")


# --------------------------------------------------------------------------- run ledger


@dataclass(frozen=True)
class PairRun:
    """One pair's line in a run ledger: its last status, seconds and message."""

    pair_year: str
    status: str
    seconds: float | None
    message: str
    started: str | None
    ended: str | None


@dataclass(frozen=True)
class RunRecord:
    """A run as its ledger records it; times are the ledger's UTC ISO 8601 strings."""

    run_id: str
    ledger_path: Path
    job: str
    pairs: dict[str, PairRun]
    started: str | None
    ended: str | None

    @property
    def ok_pairs(self) -> list[str]:
        # A pair skipped because its outputs were current has results as good as a finished one.
        return sorted(p for p, run in self.pairs.items() if run.status in ("ok", "skipped"))

    @property
    def failed_pairs(self) -> list[str]:
        return sorted(p for p, run in self.pairs.items() if run.status not in ("ok", "skipped"))

    @property
    def computed(self) -> bool:
        """True when the run computed a pair, rather than finding every pair's outputs current."""
        return any(run.status != "skipped" for run in self.pairs.values())


def read_run_ledger(ledger_path: str | Path) -> RunRecord:
    """Read a run ledger (``output/runs/<run id>.jsonl``) into a RunRecord.

    Both ledger forms are read: lines with a ``status`` field, and older lines with an
    ``ok`` flag (``true`` is ``ok``, ``false`` is ``failed``). A line cut short by a killed
    writer is skipped with a warning. A pair with a start line and no end line has status
    ``started``.
    """
    ledger_path = Path(ledger_path)
    pairs: dict[str, dict[str, Any]] = {}
    jobs: list[str] = []
    times: list[str] = []
    with ledger_path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                event = json.loads(raw)
            except json.JSONDecodeError:
                logger.warning("Ignoring unreadable line %d of ledger %s", number, ledger_path)
                continue
            if not isinstance(event, dict) or "pair" not in event:
                continue
            if event.get("job"):
                jobs.append(str(event["job"]))
            if event.get("time"):
                times.append(str(event["time"]))
            entry = pairs.setdefault(str(event["pair"]), {"status": "started", "seconds": None, "message": "",
                                                          "started": None, "ended": None})
            if event.get("event") == "start":
                entry["started"] = event.get("time")
                entry["status"] = "started"
                continue
            status = event.get("status")
            if status is None:
                status = "ok" if event.get("ok") else "failed"
            entry.update(status=str(status), seconds=event.get("seconds"), ended=event.get("time"),
                         message=str(event.get("message") or ""))

    runs = {pair: PairRun(pair, **entry) for pair, entry in pairs.items()}
    job = max(set(jobs), key=jobs.count) if jobs else ""
    return RunRecord(ledger_path.stem, ledger_path, job, runs, min(times, default=None), max(times, default=None))


def latest_run(output_dir: str | Path, job: str | None = "search-light") -> RunRecord | None:
    """Return the newest run under ``output_dir/runs`` of ``job`` (any job for None), or None.

    Run ids start with the UTC start time, so the newest ledger sorts last by name.
    """
    folder = Path(output_dir) / "runs"
    if not folder.is_dir():
        return None
    for ledger_path in sorted(folder.glob("*.jsonl"), reverse=True):
        record = read_run_ledger(ledger_path)
        if job is None or record.job == job:
            return record
    return None


def latest_computing_run(output_dir: str | Path, job: str = "search-light") -> RunRecord | None:
    """Return the newest run of ``job`` that computed a pair (not a rerun that skipped every pair), or None."""
    folder = Path(output_dir) / "runs"
    if not folder.is_dir():
        return None
    for ledger_path in sorted(folder.glob("*.jsonl"), reverse=True):
        record = read_run_ledger(ledger_path)
        if record.job == job and record.computed:
            return record
    return None


def results_path(output_dir: str | Path, pair_year: str) -> Path:
    """Return the path of a pair's search results table."""
    return Path(output_dir) / pair_year / f"{pair_year}_backtest_results.parquet"


def pairs_with_results(output_dir: str | Path) -> list[str]:
    """Return the pair-years under ``output_dir`` that have a search results table, sorted."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    return sorted(p.name for p in output_dir.iterdir() if p.is_dir() and results_path(output_dir, p.name).is_file())


def run_pairs(output_dir: str | Path) -> tuple[list[str], RunRecord | None]:
    """Return the pairs of the latest search-light run that succeeded, and that run.

    Without a search-light ledger, every pair folder with a results table is taken.
    """
    record = latest_run(output_dir)
    if record is None:
        return pairs_with_results(output_dir), None
    return record.ok_pairs, record


# --------------------------------------------------------------------------- per-pair outputs


@dataclass
class PairOutputs:
    """A pair's search results and report, with ``reason`` set when there is nothing to rank."""

    pair_year: str
    results: pd.DataFrame
    report: dict[str, Any]
    ranked_by: str
    reason: str = ""
    synthetic: bool = False


def load_pair_outputs(output_dir: str | Path, pair_year: str) -> PairOutputs:
    """Read one pair's ``_backtest_results.parquet`` and ``_search_report.json``.

    A missing or empty table gives empty results and a ``reason`` rather than an error, so
    one pair without a search does not stop the leaderboard of the others.
    """
    path = results_path(output_dir, pair_year)
    report_path = path.with_name(f"{pair_year}_search_report.json")
    report: dict[str, Any] = {}
    if report_path.is_file():
        try:
            report = json.loads(report_path.read_text())
        except (json.JSONDecodeError, OSError) as exc:
            logger.warning("%s: unreadable search report %s (%s); its trial counts are unknown",
                           pair_year, report_path, exc)
    if not path.is_file():
        return PairOutputs(pair_year, pd.DataFrame(), report, "", f"no results file {path.name}")

    results = artifacts.read_frame(path)
    synthetic = artifacts.read_metadata(path).get("synthetic", "false") == "true"
    if results.empty:
        reason = report.get("insufficient_data") or "the search tested no strategy"
        return PairOutputs(pair_year, results, report, "", str(reason), synthetic)
    ranked_by = str((report.get("ranking") or {}).get("by") or _ranking_key(results))
    return PairOutputs(pair_year, results, report, ranked_by, "", synthetic)


def _ranking_key(results: pd.DataFrame) -> str:
    for key in RANKING_KEYS:
        if key in results and np.isfinite(results[key].to_numpy(np.float64)).any():
            return key
    return RANKING_KEYS[-1]


# --------------------------------------------------------------------------- run-wide deflation


@dataclass(frozen=True)
class RunTrials:
    """Trial counts of the run, behind ``score_run``."""

    # Every strategy variant tested on every pair of the run.
    n_trials: int
    # Sum of the pairs' effective trials (clusters of correlated variants).
    effective_trials: int
    # Variance of per-day Sharpe ratios across trials, pooled over pairs (NaN when unknown).
    sharpe_variance: float
    # Pair -> where its variance came from: "search report" or "estimated from results".
    variance_source: dict[str, str] = field(default_factory=dict)


def pair_sharpe_variance(outputs: PairOutputs) -> tuple[float, str]:
    """Return the variance V behind a pair's score and where it came from.

    The search report stores V (``sharpe_variance_is``). For reports written before that
    field existed, V is estimated as the variance of the per-day Sharpe ratios across the
    pair's strategies, which is what ``validation.cluster_sharpe_variance`` falls back to
    with fewer than two clusters.
    """
    value = outputs.report.get("sharpe_variance_is")
    if "sharpe_variance_is" in outputs.report:
        return (float(value) if value is not None else math.nan), "search report"
    per_day = outputs.results["sharpe_is"].to_numpy(np.float64) / math.sqrt(TRADING_DAYS_PER_YEAR)
    per_day = per_day[np.isfinite(per_day)]
    return (float(np.var(per_day, ddof=1)) if len(per_day) >= 2 else math.nan), "estimated from results"


def count_run_trials(pairs: list[PairOutputs]) -> RunTrials:
    """Add up the trials of every pair of the run and pool their Sharpe variances.

    NOTE: variants on different pairs are counted as independent trials, because the
    pairs' daily P&L is not stored and so cannot be clustered across pairs. Correlated
    pairs (EURUSD and GBPUSD) make this count, and the deflation, an upper bound.
    """
    n_trials = sum(int(p.report.get("n_strategies", len(p.results))) for p in pairs)
    effective = 0
    weighted, weights = 0.0, 0
    sources: dict[str, str] = {}
    for outputs in pairs:
        if outputs.results.empty:
            continue
        n_effective = int(outputs.report.get("effective_trials") or 0)
        effective += n_effective
        variance, sources[outputs.pair_year] = pair_sharpe_variance(outputs)
        if np.isfinite(variance) and n_effective > 0:
            weighted += variance * n_effective
            weights += n_effective
    pooled = weighted / weights if weights else math.nan
    return RunTrials(n_trials, effective, pooled, sources)


def run_scores(rows: pd.DataFrame, outputs: PairOutputs, trials: RunTrials) -> tuple[np.ndarray, list[str]]:
    """Deflate each row's in-sample Sharpe ratio again with the run's trials.

    The pair's score is ``Phi((SR - SR0_pair) * sqrt(T - 1) / sqrt(v))`` with ``v`` the
    skewness and kurtosis term of the strategy's daily P&L, which the results do not store.
    ``v`` is solved from the stored score, then the ratio is computed again with
    ``SR0_run = expected_max_sharpe(V_run, N_run)``. Where the score cannot be inverted
    (``z = Phi^-1(score)`` infinite or 0, ``(SR - SR0_pair) / z`` not positive, or
    ``SR = 0``), ``v`` is that of normal daily returns, ``1 + SR^2 / 2``. A run of one pair gives back the pair's score.

    Returns the run scores and, per row, how ``v`` was found.
    """
    n = len(rows)
    scores = np.full(n, np.nan)
    basis = ["no score"] * n
    if n == 0 or not trials.effective_trials:
        return scores, basis

    pair_variance, _ = pair_sharpe_variance(outputs)
    pair_variance = pair_variance if np.isfinite(pair_variance) else 0.0
    run_variance = trials.sharpe_variance if np.isfinite(trials.sharpe_variance) else 0.0
    pair_sr0 = expected_max_sharpe(pair_variance, max(int(outputs.report.get("effective_trials") or 1), 1))
    sharpe = rows["sharpe_is"].to_numpy(np.float64) / math.sqrt(TRADING_DAYS_PER_YEAR)
    n_days = rows["n_days_is"].to_numpy(np.float64)
    score = rows["score"].to_numpy(np.float64)

    for i in range(n):
        if not (np.isfinite(score[i]) and np.isfinite(sharpe[i]) and n_days[i] >= 2):
            continue
        z = stats.norm.ppf(score[i])
        spread = (sharpe[i] - pair_sr0) * math.sqrt(n_days[i] - 1.0)
        if np.isfinite(z) and z != 0 and spread / z > 0 and sharpe[i] != 0:
            variance_term = (spread / z) ** 2
            basis[i] = "from pair score"
        else:
            variance_term = 1.0 + sharpe[i] ** 2 / 2.0
            basis[i] = "normal returns"
        # deflated_sharpe_ratio takes skewness and kurtosis, and skewness 0 with this kurtosis
        # gives the same variance term.
        kurtosis = 1.0 + 4.0 * (variance_term - 1.0) / sharpe[i] ** 2 if sharpe[i] != 0 else 3.0
        scores[i] = deflated_sharpe_ratio(sharpe[i], n_days[i], 0.0, kurtosis, run_variance, trials.effective_trials)
    return scores, basis


# --------------------------------------------------------------------------- the tables


@dataclass
class Leaderboard:
    """The leaderboard tables and what went into them."""

    table: pd.DataFrame
    families: pd.DataFrame
    pairs: list[str]
    # Pair -> why it has no row (no results, no strategy tested).
    skipped: dict[str, str]
    trials: RunTrials
    run: RunRecord | None
    # Pair -> its loaded results and search report, for the HTML report.
    outputs: dict[str, PairOutputs] = field(default_factory=dict)
    # The latest run, when it found every output current and ``run`` is the earlier run that computed them.
    later_current_run: RunRecord | None = None


def leaderboard_columns() -> list[str]:
    """Return the leaderboard's columns in order: identity, rank and scores, then metrics side by side."""
    columns = ["pair_year", "synthetic", "pair_rank", "ranked_by", *IDENTITY_COLUMNS, "score", "score_run",
               "score_run_basis", "n_trials_pair", "effective_trials_pair", "n_trials_run", "effective_trials_run"]
    for name in SIDE_BY_SIDE:
        columns += [f"{name}_is", f"{name}_oos"]
    return columns


def _top_rows(outputs: PairOutputs, top_n: int, trials: RunTrials) -> pd.DataFrame:
    results = outputs.results
    top = results[results["rank"] <= top_n].sort_values("rank", kind="stable").reset_index(drop=True)
    table = pd.DataFrame({
        "pair_year": outputs.pair_year,
        "synthetic": outputs.synthetic,
        "pair_rank": top["rank"].astype(np.int64),
        "ranked_by": outputs.ranked_by,
    })
    for name in IDENTITY_COLUMNS:
        table[name] = top[name].to_numpy()
    table["score"] = top["score"].to_numpy(np.float64)
    table["score_run"], table["score_run_basis"] = run_scores(top, outputs, trials)
    table["n_trials_pair"] = int(outputs.report.get("n_strategies", len(results)))
    table["effective_trials_pair"] = int(outputs.report.get("effective_trials") or 0)
    table["n_trials_run"] = trials.n_trials
    table["effective_trials_run"] = trials.effective_trials
    for name in SIDE_BY_SIDE:
        for suffix in ("_is", "_oos"):
            column = f"{name}{suffix}"
            table[column] = top[column].to_numpy() if column in top else np.nan
    return table


def family_summary(pairs: list[PairOutputs]) -> pd.DataFrame:
    """Summarise each (family, params) over the pairs: top-decile count and median figures.

    On each pair the best-ranked SL/TP variant of a parameter set represents it. A pair
    counts towards ``n_pairs_top_decile`` when that variant ranks within the first
    ``TOP_FRACTION`` of the pair's strategies (at least rank 1). Medians are over pairs.
    """
    frames = []
    for outputs in pairs:
        results = outputs.results
        if results.empty:
            continue
        cutoff = max(1, math.ceil(TOP_FRACTION * len(results)))
        best = results.sort_values("rank", kind="stable").drop_duplicates(["family", "params"])
        frames.append(pd.DataFrame({
            "family": best["family"].to_numpy(), "params": best["params"].to_numpy(),
            "pair_year": outputs.pair_year, "best_rank": best["rank"].to_numpy(np.int64),
            "rank_fraction": best["rank"].to_numpy(np.float64) / len(results),
            "top_decile": best["rank"].to_numpy() <= cutoff,
            "score": best["score"].to_numpy(np.float64), "sharpe_is": best["sharpe_is"].to_numpy(np.float64),
            "sharpe_oos": best["sharpe_oos"].to_numpy(np.float64),
            "total_pips_is": best["total_pips_is"].to_numpy(np.float64),
            "total_pips_oos": best["total_pips_oos"].to_numpy(np.float64),
        }))
    columns = ["family", "params", "n_pairs_tried", "n_pairs_top_decile", "pairs_top_decile", "median_best_score",
               "median_rank_fraction", "median_sharpe_is", "median_sharpe_oos", "median_total_pips_is",
               "median_total_pips_oos"]
    if not frames:
        return pd.DataFrame({name: pd.Series(dtype="object") for name in columns})

    rows = pd.concat(frames, ignore_index=True)
    grouped = rows.groupby(["family", "params"], sort=False)
    top_pairs = rows[rows["top_decile"]].groupby(["family", "params"])["pair_year"].agg(
        lambda names: ",".join(sorted(names)))
    summary = pd.DataFrame({
        "n_pairs_tried": grouped["pair_year"].nunique(),
        "n_pairs_top_decile": grouped["top_decile"].sum().astype(np.int64),
        "pairs_top_decile": top_pairs.reindex(grouped.size().index, fill_value=""),
        "median_best_score": grouped["score"].median(),
        "median_rank_fraction": grouped["rank_fraction"].median(),
        "median_sharpe_is": grouped["sharpe_is"].median(),
        "median_sharpe_oos": grouped["sharpe_oos"].median(),
        "median_total_pips_is": grouped["total_pips_is"].median(),
        "median_total_pips_oos": grouped["total_pips_oos"].median(),
    }).reset_index()
    summary = summary.sort_values(["n_pairs_top_decile", "median_rank_fraction", "family", "params"],
                                  ascending=[False, True, True, True], kind="stable").reset_index(drop=True)
    return summary[columns]


def build_leaderboard(output_dir: str | Path, pairs: list[str] | None = None,
                      top_n: int = DEFAULT_TOP_N) -> Leaderboard:
    """Build the cross-pair leaderboard from the search outputs under ``output_dir``.

    Parameters
    ----------
    pairs
        Pair-years to include. By default, the pairs that succeeded in the latest
        search-light run of the ledger, or every pair folder with results when there is no
        ledger.
    top_n
        Strategies per pair, by the pair's own rank (score, or its fallback: the
        ``ranked_by`` column names the key the pair was ranked on).

    Returns
    -------
    Leaderboard
        ``table`` sorted by ``score_run``, then by pair and pair rank for pairs without
        scores; ``families`` sorted by the number of pairs where a parameter set reaches the
        top decile.
    """
    if top_n < 1:
        raise ValueError(f"top_n = {top_n} must be 1 or more strategies per pair")
    output_dir = Path(output_dir)
    record = latest_run(output_dir)
    if pairs is None:
        pairs, record = run_pairs(output_dir)
    later_current_run = None
    if record is not None and not record.computed:
        # The latest run skipped every pair, so the times and messages come from the run that
        # computed the results.
        computing = latest_computing_run(output_dir, record.job)
        if computing is not None:
            later_current_run, record = record, computing

    loaded = [load_pair_outputs(output_dir, pair_year) for pair_year in pairs]
    skipped = {p.pair_year: p.reason for p in loaded if p.reason}
    ranked = [p for p in loaded if not p.reason]
    trials = count_run_trials(loaded)

    frames = [_top_rows(outputs, top_n, trials) for outputs in ranked]
    columns = leaderboard_columns()
    if frames:
        table = pd.concat(frames, ignore_index=True)[columns]
        has_score = np.isfinite(table["score_run"].to_numpy(np.float64))
        table = table.assign(_has_score=has_score).sort_values(
            ["_has_score", "score_run", "pair_year", "pair_rank"], ascending=[False, False, True, True],
            kind="stable").drop(columns="_has_score").reset_index(drop=True)
    else:
        table = pd.DataFrame({name: pd.Series(dtype="object") for name in columns})

    for pair_year, reason in skipped.items():
        logger.info("Leaderboard: %s has no rows: %s", pair_year, reason)
    logger.info("Leaderboard: %d rows from %d pairs; %d trials in the run (%d effective)",
                len(table), len(ranked), trials.n_trials, trials.effective_trials)
    return Leaderboard(table, family_summary(ranked), list(pairs), skipped, trials, record,
                       {p.pair_year: p for p in loaded}, later_current_run)


def write_leaderboard(output_dir: str | Path, board: Leaderboard) -> list[Path]:
    """Write the leaderboard and the family summary as parquet and CSV, each atomically."""
    output_dir = Path(output_dir)
    metadata = {"n_trials_run": str(board.trials.n_trials),
                "effective_trials_run": str(board.trials.effective_trials),
                "pairs": ",".join(board.pairs)}
    written = []
    for stem, frame in ((LEADERBOARD_STEM, board.table), (FAMILIES_STEM, board.families)):
        parquet_path = output_dir / f"{stem}.parquet"
        csv_path = output_dir / f"{stem}.csv"
        artifacts.write_parquet_atomic(parquet_path, frame, metadata)
        artifacts.write_bytes_atomic(csv_path, frame.to_csv(index=False).encode("utf-8"))
        written += [parquet_path, csv_path]
    return written

"""The HTML report of a search-light run: one self-contained file that opens offline.

Flow::

    leaderboard.build_leaderboard (per-pair results, search reports, the latest ledger)
        -> output/leaderboard.parquet / .csv and leaderboard_families.parquet / .csv
    PAIR_YEAR_top_trades.parquet     -> equity curve and drawdown of each pair's top strategies
    every pair's results             -> in-sample against out-of-sample scatter, one template's heatmap
    PAIR_YEAR_regimes.parquet + bars -> regime timeline over the price
        -> output/report.html (matplotlib figures embedded as base64 PNG, no script or
           stylesheet from elsewhere)

Every section handles a pair without a score, without trades or without regimes by saying
so in place of its figure. Nothing is recomputed from ticks.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd

from fxresearch import artifacts
from fxresearch.leaderboard import (
    DEFAULT_TOP_N, Leaderboard, PairOutputs, RunRecord, build_leaderboard, write_leaderboard,
)
from fxresearch.timeutil import ns_to_datetime

matplotlib.use("Agg")  # no display: figures are only rendered to PNG

import matplotlib.pyplot as plt  # noqa: E402  the backend must be chosen before pyplot is imported
from matplotlib.figure import Figure  # noqa: E402  imported with pyplot, after the backend choice

logger = logging.getLogger(__name__)

REPORT_NAME = "report.html"
# Strategies per pair whose equity curve and drawdown are drawn.
CURVES_PER_PAIR = 3
# The report is meant to stay small enough to mail and open quickly.
MAX_REPORT_BYTES = 15 * 1024 * 1024
FIGURE_DPI = 80
# Leaderboard columns shown in the HTML table; the parquet and CSV files have them all.
TABLE_COLUMNS = ("pair_year", "pair_rank", "ranked_by", "family", "params", "stop_loss_pips", "take_profit_pips",
                 "score", "score_run", "n_trades_is", "n_trades_oos", "total_pips_is", "total_pips_oos",
                 "sharpe_is", "sharpe_oos", "max_drawdown_pips_is", "max_drawdown_pips_oos")
FAMILY_ROWS = 25
REGIME_COLORS = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7",
                 "#9c755f", "#bab0ac")


@dataclass(frozen=True)
class ReportFiles:
    """Paths written by ``write_report_outputs``."""

    report: Path
    leaderboard: list[Path]
    size_bytes: int


# --------------------------------------------------------------------------- figure helpers


def _figure_html(figure: Figure, alt: str) -> str:
    """Render a figure to a PNG ``img`` element with the image inline as base64, and close it."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=FIGURE_DPI, bbox_inches="tight")
    plt.close(figure)
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{encoded}">'


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def _times(values_ns: np.ndarray) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(ns_to_datetime(np.asarray(values_ns, dtype=np.int64)))


def _format_number(value: float) -> str:
    if pd.isna(value):
        return ""
    return f"{value:,.4g}" if abs(value) < 1 else f"{value:,.2f}"


def _table_html(frame: pd.DataFrame, css_class: str) -> str:
    """Render a table with numbers rounded for reading; cell text is escaped."""
    shown = frame.copy()
    for column in shown.columns:
        if pd.api.types.is_float_dtype(shown[column]):
            shown[column] = shown[column].map(_format_number)
    return shown.to_html(index=False, classes=css_class, border=0, escape=True, na_rep="")


def _compact_leaderboard(table: pd.DataFrame) -> pd.DataFrame:
    """Return the leaderboard shaped to fit a page: parameters as ``k=v``, SL/TP in one column.

    The ranking key moves out of the table when every pair used the same one, because the
    text above the table names it. The leaderboard files keep every column.
    """
    shown = table.copy()
    shown["params"] = [" ".join(f"{k}={v}" for k, v in json.loads(text).items()) if text else ""
                       for text in shown["params"]]
    shown.insert(list(shown.columns).index("stop_loss_pips"), "sl/tp pips",
                 [f"{sl:g}/{tp:g}" for sl, tp in zip(shown["stop_loss_pips"], shown["take_profit_pips"], strict=True)])
    shown = shown.drop(columns=["stop_loss_pips", "take_profit_pips"])
    if shown["ranked_by"].nunique() <= 1:
        shown = shown.drop(columns=["ranked_by"])
    return shown.drop(columns=_empty_columns(shown))


def _empty_columns(table: pd.DataFrame) -> list[str]:
    """Return the columns with no value on any row (a score or Sharpe that no strategy has)."""
    return [column for column in table.columns if table[column].isna().all()]


# --------------------------------------------------------------------------- sections


def _summary_section(board: Leaderboard, output_dir: Path) -> str:
    run: RunRecord | None = board.run
    parts = ["<h2>Run summary</h2>"]
    if run is None:
        parts.append(_note(f"No search-light run ledger under {output_dir / 'runs'}: the pairs are every folder "
                           "with a results file, and run times are unknown."))
    else:
        ok, failed = run.ok_pairs, run.failed_pairs
        parts.append(f"<p>Run <code>{html.escape(run.run_id)}</code> ({html.escape(run.job)}): "
                     f"{len(run.pairs)} pairs, {len(ok)} succeeded, {len(failed)} failed or unfinished; "
                     f"started {html.escape(run.started or '?')}, last event {html.escape(run.ended or '?')}.</p>")
        rows = pd.DataFrame([{"pair": p.pair_year, "status": p.status, "seconds": p.seconds,
                              "message": p.message} for p in sorted(run.pairs.values(), key=lambda r: r.pair_year)])
        parts.append(_table_html(rows, "summary"))
    later = board.later_current_run
    if later is not None:
        count = f"{len(later.pairs)} pair{'' if len(later.pairs) == 1 else 's'}"
        parts.append(_note(f"A later run, {later.run_id} (started {later.started or '?'}), found the outputs of "
                           f"its {count} current and computed nothing."))
    trials = board.trials
    parts.append(f"<p>{trials.n_trials:,} strategies tested over {len(board.pairs)} pairs "
                 f"({trials.effective_trials:,} effective trials after clustering within each pair). "
                 "<code>score_run</code> is each strategy's deflated Sharpe ratio against all of them.</p>")
    if any(p.synthetic for p in board.outputs.values()):
        parts.append('<p class="warning">Some pairs are SYNTHETIC sample data: their results are not market '
                     "results.</p>")
    for pair_year, reason in sorted(board.skipped.items()):
        parts.append(_note(f"{pair_year}: not on the leaderboard: {reason}."))
    return "\n".join(parts)


def _leaderboard_section(board: Leaderboard) -> str:
    parts = ["<h2>Leaderboard</h2>",
             "<p>Top strategies of every pair by the pair's own rank (<code>ranked_by</code> names its key: "
             "the deflated Sharpe score, or in-sample Sharpe or pips where no strategy has a score). "
             "In-sample (<code>_is</code>) and holdout (<code>_oos</code>) figures side by side; pips are net "
             "of slippage and swap.</p>"]
    if board.table.empty:
        parts.append(_note("No pair has ranked strategies, so the leaderboard is empty."))
    else:
        if board.table["ranked_by"].nunique() == 1:
            parts.append(f"<p>Every pair is ranked by <code>{html.escape(str(board.table['ranked_by'].iloc[0]))}"
                         "</code>.</p>")
        empty = _empty_columns(board.table[list(TABLE_COLUMNS)])
        if empty:
            parts.append(f"<p>Left out, with no value on any row: <code>{html.escape(', '.join(empty))}</code> "
                         "(the notes above say why; the leaderboard files keep them).</p>")
        parts.append(_table_html(_compact_leaderboard(board.table[list(TABLE_COLUMNS)]), "leaderboard"))
    parts.append("<h3>Parameter sets that rank well on several pairs</h3>")
    if board.families.empty:
        parts.append(_note("No parameter set was tested."))
    else:
        parts.append(f"<p>Top-decile count: pairs where the parameter set's best SL/TP variant ranks in the first "
                     f"tenth of the pair's strategies. First {FAMILY_ROWS} rows; "
                     "<code>leaderboard_families.csv</code> has all.</p>")
        parts.append(_table_html(board.families.head(FAMILY_ROWS), "families"))
    return "\n".join(parts)


def _equity_figure(pair_year: str, trades: pd.DataFrame, split_ns: int | None) -> Figure:
    figure, (equity_axis, drawdown_axis) = plt.subplots(2, 1, figsize=(11, 4.2), sharex=True,
                                                        gridspec_kw={"height_ratios": [2, 1]})
    for rank, group in trades.groupby("rank", sort=True):
        group = group.sort_values("exit_time", kind="stable")
        equity = np.concatenate([[0.0], np.cumsum(group["pips_net"].to_numpy(np.float64))])
        drawdown = equity - np.maximum.accumulate(equity)
        times = _times(np.concatenate([[group["entry_time"].iloc[0]], group["exit_time"].to_numpy()]))
        label = f"#{rank} {group['label'].iloc[0]}"
        equity_axis.step(times, equity, where="post", label=label, linewidth=1.2)
        drawdown_axis.step(times, drawdown, where="post", linewidth=1.0)
    if split_ns is not None:
        for axis in (equity_axis, drawdown_axis):
            axis.axvline(_times(np.array([split_ns]))[0], color="black", linestyle="--", linewidth=0.8)
    equity_axis.set_title(f"{pair_year}: equity of the top strategies (net pips; dashed line: train/holdout split)",
                          fontsize=10)
    equity_axis.set_ylabel("cumulative pips")
    drawdown_axis.set_ylabel("drawdown pips")
    equity_axis.legend(fontsize=7, loc="upper left")
    equity_axis.grid(alpha=0.3)
    drawdown_axis.grid(alpha=0.3)
    figure.autofmt_xdate()
    return figure


def _equity_section(board: Leaderboard, pairs: dict[str, PairOutputs], output_dir: Path) -> str:
    parts = ["<h2>Equity and drawdown of the top strategies</h2>",
             f"<p>The {CURVES_PER_PAIR} best-ranked strategies of each pair, from "
             "<code>PAIR_YEAR_top_trades.parquet</code>: net pips added up at each trade's exit.</p>"]
    for pair_year, outputs in pairs.items():
        if outputs.reason:
            parts.append(_note(f"{pair_year}: no equity curve: {outputs.reason}."))
            continue
        path = output_dir / pair_year / f"{pair_year}_top_trades.parquet"
        if not path.is_file():
            parts.append(_note(f"{pair_year}: no equity curve: {path.name} is missing."))
            continue
        trades = artifacts.read_frame(path)
        trades = trades[trades["rank"] <= CURVES_PER_PAIR]
        if trades.empty:
            parts.append(_note(f"{pair_year}: no equity curve: its top {CURVES_PER_PAIR} strategies made no trade."))
            continue
        names = outputs.results.set_index("strategy_id")
        trades = trades.assign(label=[
            f"{names.at[sid, 'family']} {names.at[sid, 'params']} SL {names.at[sid, 'stop_loss_pips']:g} "
            f"TP {names.at[sid, 'take_profit_pips']:g}" if sid in names.index else sid
            for sid in trades["strategy_id"]])
        split = outputs.report.get("split_ns")
        figure = _equity_figure(pair_year, trades, int(split) if split is not None else None)
        parts.append(_figure_html(figure, f"{pair_year} equity and drawdown"))
    return "\n".join(parts)


def _scatter_metric(frames: list[pd.DataFrame]) -> str:
    """Return "sharpe" when enough strategies have a daily Sharpe in both periods, else "total_pips"."""
    both = sum(int((np.isfinite(f["sharpe_is"].to_numpy(np.float64))
                    & np.isfinite(f["sharpe_oos"].to_numpy(np.float64))).sum()) for f in frames)
    return "sharpe" if both >= 10 else "total_pips"


def _scatter_section(pairs: dict[str, PairOutputs]) -> str:
    parts = ["<h2>In-sample against holdout</h2>"]
    frames = {p: o.results for p, o in pairs.items() if not o.reason}
    if not frames:
        parts.append(_note("No pair has strategy results to plot."))
        return "\n".join(parts)
    metric = _scatter_metric(list(frames.values()))
    unit = "annualised daily Sharpe" if metric == "sharpe" else "net pips"
    reason = "" if metric == "sharpe" else (" Daily Sharpe ratios need 20+ days in each period, which fewer than "
                                            "10 strategies have, so total pips are shown.")
    parts.append(f"<p>Every strategy of every pair, {unit} in-sample (x) against holdout (y). Points far below the "
                 f"diagonal did well in-sample only: the mark of overfitting.{reason}</p>")
    figure, axis = plt.subplots(figsize=(7.5, 6.5))
    low, high = np.inf, -np.inf
    for pair_year, results in frames.items():
        x = results[f"{metric}_is"].to_numpy(np.float64)
        y = results[f"{metric}_oos"].to_numpy(np.float64)
        keep = np.isfinite(x) & np.isfinite(y)
        if keep.any():
            axis.scatter(x[keep], y[keep], s=5, alpha=0.35, label=f"{pair_year} ({int(keep.sum())})", rasterized=True)
            low, high = min(low, x[keep].min(), y[keep].min()), max(high, x[keep].max(), y[keep].max())
    if np.isfinite(low):
        axis.plot([low, high], [low, high], color="black", linewidth=0.8, linestyle="--", label="in-sample = holdout")
    axis.axhline(0, color="grey", linewidth=0.5)
    axis.axvline(0, color="grey", linewidth=0.5)
    axis.set_xlabel(f"{metric}_is ({unit})")
    axis.set_ylabel(f"{metric}_oos ({unit})")
    axis.legend(fontsize=7, markerscale=3)
    axis.grid(alpha=0.3)
    parts.append(_figure_html(figure, f"{metric} in-sample against holdout"))
    return "\n".join(parts)


def choose_heatmap_family(results: pd.DataFrame) -> tuple[str, str, str] | None:
    """Return ``(family, x_param, y_param)`` for a template whose grid has exactly two numeric parameters.

    ``ma_cross`` is preferred when present; otherwise the family with the most grid cells.
    None when no family qualifies.
    """
    candidates: dict[str, tuple[int, str, str]] = {}
    for family, group in results.groupby("family", sort=True):
        params = [json.loads(text) for text in group["params"].unique()]
        keys = set().union(*(p.keys() for p in params)) if params else set()
        numeric = sorted(k for k in keys if all(isinstance(p.get(k), (int, float)) and not isinstance(p.get(k), bool)
                                                for p in params))
        if len(keys) != 2 or len(numeric) != 2:
            continue
        if min(len({p[k] for p in params}) for k in numeric) < 2:
            continue
        candidates[str(family)] = (len(params), numeric[0], numeric[1])
    if not candidates:
        return None
    family = "ma_cross" if "ma_cross" in candidates else max(candidates, key=lambda f: candidates[f][0])
    _, x_param, y_param = candidates[family]
    return family, x_param, y_param


def _heatmap_section(pairs: dict[str, PairOutputs]) -> str:
    parts = ["<h2>Parameter grid heatmap</h2>"]
    frames = [o.results.assign(pair_year=p) for p, o in pairs.items() if not o.reason]
    if not frames:
        parts.append(_note("No pair has strategy results, so there is no grid to show."))
        return "\n".join(parts)
    results = pd.concat(frames, ignore_index=True)
    chosen = choose_heatmap_family(results)
    if chosen is None:
        parts.append(_note("No template has a grid of exactly two numeric parameters."))
        return "\n".join(parts)
    family, x_param, y_param = chosen
    metric = next((m for m in ("score", "sharpe_is", "total_pips_is")
                   if np.isfinite(results[m].to_numpy(np.float64)).any()), "total_pips_is")

    # Each cell: the best SL/TP variant on each pair, then the median over pairs.
    grid = results[results["family"] == family]
    params = grid["params"].map(json.loads)
    grid = grid.assign(x=params.map(lambda p: p[x_param]), y=params.map(lambda p: p[y_param]))
    best = grid.groupby(["pair_year", "x", "y"])[metric].max().groupby(["x", "y"]).median().unstack("x")
    parts.append(f"<p>Template <code>{html.escape(family)}</code>: <code>{html.escape(metric)}</code> of the best "
                 f"SL/TP variant per pair, median over {grid['pair_year'].nunique()} pairs. All in-sample. "
                 "Blank cells were not tested or have no value.</p>")
    figure, axis = plt.subplots(figsize=(1.0 + 0.8 * best.shape[1], 1.0 + 0.55 * best.shape[0]))
    values = best.to_numpy(np.float64)
    image = axis.imshow(np.ma.masked_invalid(values), origin="lower", aspect="auto", cmap="RdYlGn")
    axis.set_xticks(range(best.shape[1]), [f"{v:g}" for v in best.columns])
    axis.set_yticks(range(best.shape[0]), [f"{v:g}" for v in best.index])
    axis.set_xlabel(x_param)
    axis.set_ylabel(y_param)
    for (row, column), value in np.ndenumerate(values):
        if np.isfinite(value):
            axis.text(column, row, f"{value:.3g}", ha="center", va="center", fontsize=7)
    figure.colorbar(image, ax=axis, label=metric)
    axis.set_title(f"{family}: {metric}", fontsize=10)
    parts.append(_figure_html(figure, f"{family} {metric} heatmap"))
    return "\n".join(parts)


def _regime_figure(pair_year: str, regimes: pd.DataFrame, bars: pd.DataFrame) -> Figure:
    figure, axis = plt.subplots(figsize=(11, 3.2))
    mid = (bars["bid_close"].to_numpy(np.float64) + bars["ask_close"].to_numpy(np.float64)) / 2.0
    bar_times = bars["timestamp"].to_numpy(np.int64)
    axis.plot(_times(bar_times), mid, color="black", linewidth=0.7)
    low, high = np.nanmin(mid), np.nanmax(mid)

    # Each regime bar is shaded with its regime's colour until the next regime bar.
    order = np.argsort(regimes["timestamp"].to_numpy(np.int64), kind="stable")
    regime_times = regimes["timestamp"].to_numpy(np.int64)[order]
    names = regimes["regime_name"].astype(str).to_numpy()[order]
    x = _times(regime_times)
    for index, name in enumerate(sorted(set(names))):
        color = "#dddddd" if name == "warmup" else REGIME_COLORS[index % len(REGIME_COLORS)]
        axis.fill_between(x, low, high, where=names == name, step="post", color=color, alpha=0.35, linewidth=0,
                          label=name)
    axis.set_ylim(low, high)
    axis.set_title(f"{pair_year}: regimes over the mid close", fontsize=10)
    # Beside the plot, so the legend never covers the price line.
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    figure.autofmt_xdate()
    figure.tight_layout()
    return figure


def _regime_section(pairs: dict[str, PairOutputs], output_dir: Path) -> str:
    parts = ["<h2>Regimes over price</h2>",
             "<p>Each pair's regimes, fitted on its training part and filtered forward in time. A name "
             "says the regime's volatility (below or above the median) and trend; when two regimes share "
             "a name, the one with the higher volatility gets a <code>_2</code> suffix (<code>_3</code> "
             "for a third). <code>warmup</code> marks bars before the inputs exist.</p>"]
    for pair_year in pairs:
        folder = output_dir / pair_year
        regimes_path = folder / f"{pair_year}_regimes.parquet"
        if not regimes_path.is_file():
            parts.append(_note(f"{pair_year}: no regime timeline: {regimes_path.name} is missing."))
            continue
        regimes = artifacts.read_frame(regimes_path)
        if regimes.empty:
            parts.append(_note(f"{pair_year}: no regime timeline: the regimes table has no rows."))
            continue
        timeframe = artifacts.read_metadata(regimes_path).get("timeframe_min", "")
        bars_path = folder / "bars" / f"M{timeframe}.parquet"
        if not bars_path.is_file():
            parts.append(_note(f"{pair_year}: no regime timeline: bars/{bars_path.name} is missing."))
            continue
        bars = artifacts.read_frame(bars_path)
        if bars.empty:
            parts.append(_note(f"{pair_year}: no regime timeline: bars/{bars_path.name} has no bar."))
            continue
        parts.append(_figure_html(_regime_figure(pair_year, regimes, bars), f"{pair_year} regimes"))
    if len(parts) == 1:
        parts.append(_note("No pair in this run."))
    return "\n".join(parts)


# --------------------------------------------------------------------------- the page


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.8em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 12px; margin: 0.5em 0; }
th, td { padding: 2px 6px; border-bottom: 1px solid #eee; text-align: right; white-space: nowrap; }
th { background: #f3f3f3; position: sticky; top: 0; }
td:nth-child(-n+5) { text-align: left; }
.note { color: #8a5a00; } .warning { color: #b00020; font-weight: bold; }
img { display: block; max-width: 100%; margin: 0.5em 0; }
"""

# Records each image's decoded width, so a headless browser's DOM dump shows which rendered.
_SCRIPT = """
window.addEventListener("load", function () {
  var images = document.querySelectorAll("img");
  var decoded = 0;
  images.forEach(function (img) {
    img.setAttribute("data-natural-width", String(img.naturalWidth));
    if (img.complete && img.naturalWidth > 0) { decoded += 1; }
  });
  document.body.setAttribute("data-images-decoded", String(decoded));
});
"""


def render_report(output_dir: str | Path, board: Leaderboard) -> str:
    """Return the report page as HTML text for ``board`` and the pair outputs under ``output_dir``."""
    output_dir = Path(output_dir)
    pairs = board.outputs
    title = f"fxresearch search-light report: {len(board.pairs)} pairs"
    sections = [
        _summary_section(board, output_dir),
        _leaderboard_section(board),
        _equity_section(board, pairs, output_dir),
        _scatter_section(pairs),
        _heatmap_section(pairs),
        _regime_section(pairs, output_dir),
    ]
    created = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    return (f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n<h1>{html.escape(title)}</h1>\n"
            f"<p>Built {created} from {html.escape(str(output_dir))}.</p>\n"
            + "\n".join(sections) + f"\n<script>{_SCRIPT}</script>\n</body>\n</html>\n")


def write_report(output_dir: str | Path, board: Leaderboard) -> Path:
    """Write ``output_dir/report.html`` atomically and return its path.

    A report over ``MAX_REPORT_BYTES`` is still written, with a warning in the log.
    """
    started = time.perf_counter()
    path = Path(output_dir) / REPORT_NAME
    data = render_report(output_dir, board).encode("utf-8")
    artifacts.write_bytes_atomic(path, data)
    if len(data) > MAX_REPORT_BYTES:
        # NOTE: nothing trims the figures yet; a run of many pairs could pass the limit.
        logger.warning("Report %s is %.1f MB, above the %.0f MB meant to open quickly", path, len(data) / 2**20,
                       MAX_REPORT_BYTES / 2**20)
    logger.info("Wrote %s (%.1f MB) in %.1fs", path, len(data) / 2**20, time.perf_counter() - started)
    return path


def write_report_outputs(output_dir: str | Path, pairs: list[str] | None = None,
                         top_n: int = DEFAULT_TOP_N) -> ReportFiles:
    """Build and write the leaderboard and the HTML report from the outputs under ``output_dir``.

    ``pairs`` defaults to the pairs that succeeded in the latest search-light run (see
    ``leaderboard.build_leaderboard``). Raises FileNotFoundError when ``output_dir`` is missing.
    """
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        raise FileNotFoundError(f"Output folder {output_dir} not found; pass the --output-dir of a search-light run")
    board = build_leaderboard(output_dir, pairs, top_n)
    written = write_leaderboard(output_dir, board)
    report = write_report(output_dir, board)
    return ReportFiles(report, written, report.stat().st_size)

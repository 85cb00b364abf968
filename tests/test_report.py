"""The HTML report: built after a VAST search, rebuilt by --report, rendered in headless Chromium."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from search_outputs import REAL_PAIRS, REAL_PARQUET, run_search_light, sample_run

import main
from fxresearch.leaderboard import build_leaderboard
from fxresearch.report import MAX_REPORT_BYTES, REPORT_NAME, choose_heatmap_family, write_report

CHROMIUM = Path("/usr/bin/chromium")
# The screenshot of the sample report is also kept here, for people to look at after a test run.
SCREENSHOT_COPY = Path(__file__).resolve().parents[1] / "output" / "report_screenshot.png"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def sample_output(tmp_path_factory):
    return sample_run(tmp_path_factory.mktemp("report_sample"))


@pytest.fixture(scope="module")
def real_output(tmp_path_factory):
    if not REAL_PARQUET.is_dir():
        pytest.skip(f"real tick files not found at {REAL_PARQUET}")
    output_dir, _ = run_search_light(REAL_PARQUET, tmp_path_factory.mktemp("report_real"), REAL_PAIRS)
    return output_dir


def embedded_images(page: str) -> list[bytes]:
    return [base64.b64decode(data) for data in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]


def test_search_run_writes_report_and_leaderboard(sample_output):
    report = sample_output / REPORT_NAME
    assert report.is_file()
    assert report.stat().st_size < MAX_REPORT_BYTES
    assert (sample_output / "leaderboard.parquet").is_file()
    assert (sample_output / "leaderboard.csv").is_file()
    page = report.read_text()
    for heading in ("Run summary", "Leaderboard", "Equity and drawdown", "In-sample against holdout",
                    "Parameter grid heatmap", "Regimes over price"):
        assert f"<h2>{heading}" in page
    # Two equity figures, one scatter, one heatmap, two regime timelines.
    images = embedded_images(page)
    assert len(images) == 6
    assert all(image.startswith(PNG_SIGNATURE) for image in images)


def test_report_is_offline(sample_output):
    page = (sample_output / REPORT_NAME).read_text()
    assert not re.search(r'(src|href)="(https?:)?//', page)
    assert "<link" not in page


def test_report_table_lists_every_leaderboard_row(sample_output):
    page = (sample_output / REPORT_NAME).read_text()
    table = page.split('class="dataframe leaderboard"', 1)[1].split("</table>", 1)[0]
    rows = table.count("<tr")
    assert rows - 1 == len(build_leaderboard(sample_output).table)


def test_report_command_rebuilds_without_search(sample_output, capsys):
    results = sample_output / "EURUSD_2025" / "EURUSD_2025_backtest_results.parquet"
    results_mtime = results.stat().st_mtime_ns
    (sample_output / REPORT_NAME).unlink()
    (sample_output / "leaderboard.csv").unlink()
    assert main.main(["--report", "--output-dir", str(sample_output)]) == 0
    assert (sample_output / REPORT_NAME).is_file()
    assert (sample_output / "leaderboard.csv").is_file()
    assert results.stat().st_mtime_ns == results_mtime
    assert "Report:" in capsys.readouterr().out


def test_report_command_without_output_folder(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main.main(["--report", "--output-dir", str(tmp_path / "missing")])
    assert exit_info.value.code == 2
    assert "Output folder not found" in capsys.readouterr().err


def test_missing_outputs_give_reasons(sample_output, tmp_path):
    copy = tmp_path / "output"
    shutil.copytree(sample_output, copy)
    (copy / "USDJPY_2025" / "USDJPY_2025_top_trades.parquet").unlink()
    (copy / "USDJPY_2025" / "USDJPY_2025_regimes.parquet").unlink()
    page = write_report(copy, build_leaderboard(copy)).read_text()
    assert "USDJPY_2025: no equity curve: USDJPY_2025_top_trades.parquet is missing." in page
    assert "USDJPY_2025: no regime timeline: USDJPY_2025_regimes.parquet is missing." in page
    assert len(embedded_images(page)) == 4


def test_heatmap_family_has_two_numeric_params(sample_output):
    board = build_leaderboard(sample_output)
    results = board.outputs["EURUSD_2025"].results
    assert choose_heatmap_family(results) == ("ma_cross", "fast", "slow")
    assert choose_heatmap_family(results[results["family"] == "zscore_reversion"]) == (
        "zscore_reversion", "entry_z", "window")
    assert choose_heatmap_family(results[results["family"] == "donchian_breakout"]) is None


def test_report_on_real_files(real_output):
    page = (real_output / REPORT_NAME).read_text()
    assert "USDJPY_2013: not on the leaderboard: 8 bars of 5 minutes is fewer than search.min_bars = 100." in page
    assert "USDJPY_2013: no regime timeline: the regimes table has no rows." in page
    assert "so total pips are shown" in page
    assert "SYNTHETIC" not in page
    assert len(embedded_images(page)) >= 4


def render_in_chromium(report: Path, profile: Path, screenshot: Path) -> str:
    """Screenshot the report and return its DOM after the page's load script ran."""
    common = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              f"--user-data-dir={profile}"]
    url = report.resolve().as_uri()
    subprocess.run([*common, f"--screenshot={screenshot}", "--window-size=1400,4000", url],
                   check=True, capture_output=True, timeout=60)
    dom = subprocess.run([*common, "--dump-dom", url], check=True, capture_output=True, timeout=60, text=True)
    return dom.stdout


@pytest.mark.parametrize("which", ["sample", "real"])
def test_report_renders_in_chromium(which, request, tmp_path):
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} not found; install Debian's chromium package (apt-get install -y chromium)")
    output_dir = request.getfixturevalue(f"{which}_output")
    report = output_dir / REPORT_NAME
    screenshot = output_dir / "report_screenshot.png"
    dom = render_in_chromium(report, tmp_path / "profile", screenshot)

    images = re.findall(r"<img [^>]*>", dom)
    widths = [int(w) for w in re.findall(r'data-natural-width="(\d+)"', dom)]
    assert len(images) == len(embedded_images(report.read_text()))
    assert len(widths) == len(images)
    assert min(widths) > 100
    assert f'data-images-decoded="{len(images)}"' in dom
    table = dom.split('class="dataframe leaderboard"', 1)[1].split("</table>", 1)[0]
    assert table.count("<tr") - 1 == len(build_leaderboard(output_dir).table)

    assert screenshot.read_bytes().startswith(PNG_SIGNATURE)
    assert screenshot.stat().st_size > 10_000
    if which == "sample":
        SCREENSHOT_COPY.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(screenshot, SCREENSHOT_COPY)


def test_leaderboard_table_fits_page():
    """The page's table shows parameters as k=v, SL/TP in one column, and leaves empty columns out."""
    import pandas as pd

    from fxresearch.report import TABLE_COLUMNS, _compact_leaderboard

    row = {name: [float("nan")] for name in TABLE_COLUMNS}
    row.update({"pair_year": ["EURUSD_2014"], "pair_rank": [1], "ranked_by": ["total_pips_is"], "family": ["ma_cross"],
                "params": ['{"fast":30,"slow":200}'], "stop_loss_pips": [30.0], "take_profit_pips": [60.0],
                "n_trades_is": [14], "n_trades_oos": [11], "total_pips_is": [167.6], "total_pips_oos": [-44.4]})
    shown = _compact_leaderboard(pd.DataFrame(row))
    assert shown["params"].tolist() == ["fast=30 slow=200"]
    assert shown["sl/tp pips"].tolist() == ["30/60"]
    assert "ranked_by" not in shown
    assert "score" not in shown
    assert "sharpe_oos" not in shown
    assert shown["total_pips_oos"].tolist() == [-44.4]

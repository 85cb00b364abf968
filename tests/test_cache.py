"""The manifest decides what is current: input, configuration and code versions per stage."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import pytest

from fxresearch import codeversion
from fxresearch.base import generate_base
from fxresearch.config import Config, SampleConfig, SearchConfig
from fxresearch.sample import write_sample_set
from fxresearch.search import search_light

SMALL_SEARCH = SearchConfig(families=("ma_cross",), sl_tp_sets=((10.0, 10.0),))


@pytest.fixture(scope="module")
def sample_file(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sample")
    return write_sample_set(folder, SampleConfig(weeks=2, pairs=("EURUSD",), ticks_per_hour=600))[0]


def manifest_entries(output_dir: Path) -> dict[str, dict]:
    return json.loads((output_dir / "EURUSD_2025" / "manifest.json").read_text())["artifacts"]


def test_code_version_changes_with_module_source(monkeypatch):
    before = codeversion.code_version("labels")
    assert before.startswith("0.")
    assert len(before.split("+")[1]) == 16
    # Another fills.py source is another labels version, and leaves the bars version alone.
    bars_before = codeversion.code_version("bars")
    real = codeversion._module_digest
    monkeypatch.setattr(codeversion, "_module_digest",
                        lambda module: "edited" if module == "fills" else real(module))
    assert codeversion.code_version("labels") != before
    assert codeversion.code_version("bars") == bars_before


def test_unknown_stage_is_named():
    with pytest.raises(ValueError, match="Unknown stage 'bogus'"):
        codeversion.code_version("bogus")


def test_code_change_rebuilds_stage_and_what_reads_it(sample_file, tmp_path, monkeypatch):
    config = replace(Config(), search=SMALL_SEARCH)
    search_light(sample_file, tmp_path, config)
    before = manifest_entries(tmp_path)
    assert all(entry["code_version"] == codeversion.code_version(name) for name, entry in before.items())

    real = codeversion.code_version
    monkeypatch.setattr("fxresearch.base.code_version",
                        lambda stage: real(stage) + "-edited" if stage == "labels" else real(stage))
    summary = generate_base(sample_file, tmp_path, config)
    assert summary["built"] == ["labels", "patterns"]
    assert set(summary["reused"]) == {"ticks_report", "split", "bars", "features", "regimes"}

    # The search results read the rebuilt labels and patterns, so they are rebuilt too.
    result = search_light(sample_file, tmp_path, config)
    assert "strategies" in result["message"]
    assert "reused" not in result["message"]
    after = manifest_entries(tmp_path)
    assert after["backtest_results"]["build_id"] != before["backtest_results"]["build_id"]
    assert after["bars"]["build_id"] == before["bars"]["build_id"]


def test_second_run_with_nothing_changed_only_checks(sample_file, tmp_path, caplog):
    config = replace(Config(), search=SMALL_SEARCH)
    search_light(sample_file, tmp_path, config)
    caplog.set_level("INFO", logger="fxresearch")
    # Records of the first run are dropped: an earlier test may have left INFO enabled already.
    caplog.clear()
    started = time.perf_counter()
    base = generate_base(sample_file, tmp_path, config)
    result = search_light(sample_file, tmp_path, config)
    seconds = time.perf_counter() - started
    assert base["built"] == []
    assert "results reused" in result["message"]
    assert not [r for r in caplog.records if r.getMessage().startswith("EURUSD_2025: building")]
    assert seconds < 2.0


def test_stale_reason_names_what_changed(sample_file, tmp_path, caplog):
    config = replace(Config(), search=SMALL_SEARCH)
    generate_base(sample_file, tmp_path, config)
    caplog.set_level("INFO", logger="fxresearch.base")
    changed = replace(config, regimes=replace(config.regimes, random_state=config.regimes.random_state + 1))
    generate_base(sample_file, tmp_path, changed)
    messages = [r.getMessage() for r in caplog.records]
    assert "EURUSD_2025: building regimes (configuration changed)" in messages

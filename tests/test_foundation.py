"""Configuration loading, the instrument table, atomic writes and time helpers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from fxresearch import artifacts
from fxresearch.artifacts import Manifest
from fxresearch.config import Config, ConfigError, load_config, section_hash
from fxresearch.instruments import UnknownInstrumentError, get_instrument
from fxresearch.timeutil import (
    NEW_YORK, data_hole_after, datetime_to_ns, in_weekend_close, to_local, trading_day_ns, weekend_gap_mask,
)


def test_config_defaults_without_file():
    assert load_config(None) == Config()


def test_config_toml_overrides_and_coerces(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("""
[labels]
timeframes_min = [5]
grid = [[10, 10, 60]]

[instruments.xaueur]
pip_size = 0.01
price_precision = 2
base = "XAU"
quote = "EUR"
""")
    config = load_config(path)
    assert config.labels.timeframes_min == (5,)
    assert config.labels.grid == ((10.0, 10.0, 60.0),)
    assert config.features == Config().features
    assert get_instrument("XAUEUR", config).pip_size == 0.01


@pytest.mark.parametrize("text, message", [
    ("[nonsense]\nx = 1\n", "Unknown config section [nonsense]"),
    ("[labels]\nmin_barz = 3\n", "Unknown key 'min_barz' in [labels]"),
    ("[labels]\nmin_bars = 'many'\n", "must be an integer"),
    ("[split]\ntrain_fraction = [0.7]\n", "must be a number"),
    ("[labels]\ngrid = [[10, 10]]\n", "needs 3 values"),
    ("[labels\n", "Invalid TOML"),
    ("[split]\ntrain_fraction = 1.5\n", "must be between 0 and 1"),
    ("[split]\ntrain_fraction = 0\n", "must be between 0 and 1"),
])
def test_config_errors_name_file_and_key(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert message in str(error.value)


def test_config_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="Config file not found"):
        load_config(tmp_path / "none.toml")


def test_section_hash_changes_with_value():
    config = Config()
    assert section_hash(config.labels) == section_hash(Config().labels)
    changed = Config(labels=type(config.labels)(min_bars=51))
    assert section_hash(changed.labels) != section_hash(config.labels)


@pytest.mark.parametrize("symbol, pip, points_per_pip", [
    ("EURUSD", 0.0001, 10), ("USDJPY", 0.01, 10), ("GBPJPY", 0.01, 10), ("XAUUSD", 0.01, 1), ("XAGUSD", 0.001, 1),
])
def test_instrument_pip_sizes(symbol, pip, points_per_pip):
    instrument = get_instrument(symbol)
    assert instrument.pip_size == pip
    assert instrument.points_per_pip == points_per_pip


def test_unknown_symbol_says_how_to_add_it():
    with pytest.raises(UnknownInstrumentError, match=r"\[instruments.ABCDEF\]"):
        get_instrument("ABCDEF")


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    target = tmp_path / "out.parquet"
    frame = pd.DataFrame({"timestamp": np.arange(5, dtype=np.int64), "x": np.arange(5.0)})

    def broken_write(table, where, **kwargs):
        with open(where, "wb") as handle:
            handle.write(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(artifacts.pq, "write_table", broken_write)
    with pytest.raises(OSError, match="disk full"):
        artifacts.write_frame(target, frame)
    assert list(tmp_path.iterdir()) == []


def test_write_frame_round_trip_keeps_ns_and_metadata(tmp_path):
    target = tmp_path / "t.parquet"
    frame = pd.DataFrame({"timestamp": np.array([1, 2], dtype=np.int64) + 1_600_000_000_000_000_000,
                          "exit_time": np.array([3, 4], dtype=np.int64) + 1_600_000_000_000_000_000})
    artifacts.write_frame(target, frame, {"pip_size": "0.0001"})
    schema = pq.read_schema(target)
    assert str(schema.field("timestamp").type) == "timestamp[ns, tz=UTC]"
    assert artifacts.read_metadata(target) == {"pip_size": "0.0001"}
    pd.testing.assert_frame_equal(artifacts.read_frame(target), frame)


def test_json_writes_nan_as_null(tmp_path):
    target = tmp_path / "d.json"
    artifacts.write_json_atomic(target, {"a": float("nan"), "b": np.float64(1.5), "c": [np.int64(2)]})
    assert json.loads(target.read_text()) == {"a": None, "b": 1.5, "c": [2]}


def test_manifest_current_only_when_inputs_match(tmp_path):
    (tmp_path / "f.parquet").write_bytes(b"x")
    manifest = Manifest.load(tmp_path)
    manifest.record("bars", ["f.parquet"], "fp1", "cfg1", {"ticks_report": "b1"})
    manifest.save()
    loaded = Manifest.load(tmp_path)
    assert loaded.is_current("bars", "fp1", "cfg1", {"ticks_report": "b1"})
    assert not loaded.is_current("bars", "fp2", "cfg1", {"ticks_report": "b1"})
    assert not loaded.is_current("bars", "fp1", "cfg2", {"ticks_report": "b1"})
    assert not loaded.is_current("bars", "fp1", "cfg1", {"ticks_report": "b2"})
    (tmp_path / "f.parquet").unlink()
    assert not loaded.is_current("bars", "fp1", "cfg1", {"ticks_report": "b1"})


def test_unreadable_manifest_is_rebuilt(tmp_path):
    (tmp_path / "manifest.json").write_text("{half")
    assert Manifest.load(tmp_path).entry("bars") is None


def test_trading_day_follows_new_york_rollover_across_dst():
    # 17:00 New York is 22:00 UTC in January and 21:00 UTC in July.
    winter = datetime_to_ns(["2025-01-07 21:59:59", "2025-01-07 22:00:00"])
    summer = datetime_to_ns(["2025-07-08 20:59:59", "2025-07-08 21:00:00"])
    assert np.diff(trading_day_ns(winter))[0] == 1
    assert np.diff(trading_day_ns(summer))[0] == 1


def test_weekend_close_is_not_a_data_hole():
    times = datetime_to_ns([
        "2014-05-02 20:59:58",  # Friday, 16:59 New York
        "2014-05-04 21:00:00",  # Sunday reopen
        "2014-05-05 10:00:00",  # 13-hour hole on a Monday
        "2014-05-05 10:20:00",  # 20 minutes later: not a hole at 30 minutes
    ])
    assert list(data_hole_after(times, 30.0)) == [0, 1, 0, 0]
    assert bool(weekend_gap_mask(times[:1], times[1:2])[0])
    # A week-long outage that starts on a Friday is a hole, not the weekend.
    long_gap = datetime_to_ns(["2014-05-02 20:59:58", "2014-05-11 21:00:00"])
    assert list(data_hole_after(long_gap, 30.0)) == [1, 0]


def test_hourly_conversion_equals_per_tick_conversion():
    # Random times over both 2024 daylight-saving changes, unsorted and sorted.
    rng = np.random.default_rng(2)
    start = int(datetime_to_ns(["2024-03-01"])[0])
    timestamp_ns = start + rng.integers(0, 260 * 86_400_000_000_000, 20_000)
    local = to_local(timestamp_ns, NEW_YORK)
    expected_day = ((local + pd.Timedelta(hours=7)).tz_localize(None).normalize().as_unit("ns").asi8
                    // 86_400_000_000_000)
    weekday, hour = local.dayofweek, local.hour
    expected_closed = ((weekday == 4) & (hour >= 17)) | (weekday == 5) | ((weekday == 6) & (hour < 17))
    for values, order in ((timestamp_ns, slice(None)), (np.sort(timestamp_ns), np.argsort(timestamp_ns))):
        np.testing.assert_array_equal(trading_day_ns(values), expected_day[order])
        np.testing.assert_array_equal(in_weekend_close(values), np.asarray(expected_closed)[order])


def test_temp_file_of_zombie_writer_is_removed(tmp_path):
    """A killed writer that stays a zombie (nobody reaped it) counts as gone."""
    import subprocess
    import sys
    import time

    from fxresearch.artifacts import remove_temp_files, temp_path_for

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    # Not waited for, so it stays a zombie once it exits.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            break
        time.sleep(0.05)
    target = tmp_path / "bars" / "M1.parquet"
    target.parent.mkdir()
    leftover = temp_path_for(target).with_name(f".M1.parquet.{child.pid}.{'0' * 32}.tmp")
    leftover.write_bytes(b"half")
    mine = temp_path_for(target)
    mine.write_bytes(b"running")

    removed = remove_temp_files(tmp_path)
    child.wait()
    assert removed == [leftover]
    assert mine.exists()

"""Tests for user-defined templates: the example, every load and output check, causality."""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

import numpy as np
import pytest

from fxresearch.backtest import run_backtests
from fxresearch.bars import build_bars
from fxresearch.config import SearchConfig
from fxresearch.fills import prepare_tick_arrays
from fxresearch.instruments import get_instrument
from fxresearch.strategies import INPUT_BARS, INPUT_FEATURES, SignalContext, compute_signals, generate_strategies
from fxresearch.timeutil import datetime_to_ns
from fxresearch.user_templates import (
    UserTemplateError,
    check_template_causality,
    load_user_templates,
    templates_fingerprint,
)

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples" / "templates"
EURUSD = get_instrument("EURUSD")
NS_PER_SECOND = 1_000_000_000

VALID_BODY = '''
import numpy as np

NAME = "{name}"
PARAMETERS = {{"window": [3, 5]}}

def signals(context, window):
    close = context.mid("close")
    signal = np.zeros(len(close), dtype=np.int8)
    signal[window::window] = 1
    return signal
'''


@pytest.fixture(scope="module")
def market():
    """Random-walk EURUSD ticks over 30 hours, 1-4 s apart, with their 5-minute bars."""
    rng = np.random.default_rng(17)
    n_ticks = 40_000
    start = int(datetime_to_ns(["2024-01-09 00:00:00"])[0])
    timestamp_ns = start + np.cumsum(rng.integers(1, 5, n_ticks)).astype(np.int64) * NS_PER_SECOND
    mid = 1.10 + np.cumsum(rng.normal(0.0, 0.00005, n_ticks))
    bid = np.round(mid - 0.00005, 5)
    ask = np.round(bid + 0.0001, 5)
    arrays = prepare_tick_arrays(timestamp_ns, bid, ask, EURUSD, 30.0)
    return arrays, build_bars(timestamp_ns, bid, ask, 5)


def _write(folder: Path, file_name: str, source: str) -> Path:
    path = folder / file_name
    path.write_text(textwrap.dedent(source))
    return path


class TestExample:
    def test_loads_with_grid(self):
        templates = load_user_templates(EXAMPLES)
        assert list(templates) == ["momentum_breakout"]
        template = templates["momentum_breakout"]
        assert len(template.grid) == 6
        assert template.grid[0] == {"lookback": 12, "min_move_pips": 5.0}
        assert template.requires == frozenset({INPUT_BARS})
        assert template.source.endswith("momentum_breakout.py")

    def test_strategies_follow_builtins_with_stable_ids(self):
        search = SearchConfig(families=("ma_cross",), sl_tp_sets=((10.0, 20.0), (15.0, 15.0)))
        strategies = generate_strategies(search, {INPUT_BARS}, load_user_templates(EXAMPLES))
        families = [s.family for s in strategies]
        n_ma = families.count("ma_cross")
        assert families[:n_ma] == ["ma_cross"] * n_ma
        assert families[n_ma:] == ["momentum_breakout"] * 12
        first = strategies[n_ma]
        payload = ('{"family":"momentum_breakout","params":{"lookback":12,"min_move_pips":5.0},'
                   '"stop_loss_pips":10.0,"take_profit_pips":20.0}')
        assert first.strategy_id == hashlib.sha1(payload.encode(), usedforsecurity=False).hexdigest()[:16]
        again = generate_strategies(search, {INPUT_BARS}, load_user_templates(EXAMPLES))
        assert [s.strategy_id for s in again] == [s.strategy_id for s in strategies]

    def test_listed_user_family_keeps_its_place(self):
        search = SearchConfig(families=("momentum_breakout", "ma_cross"), sl_tp_sets=((10.0, 10.0),))
        strategies = generate_strategies(search, {INPUT_BARS}, load_user_templates(EXAMPLES))
        assert strategies[0].family == "momentum_breakout"
        assert sum(s.family == "momentum_breakout" for s in strategies) == 6

    def test_signals_backtest_and_are_causal(self, market):
        arrays, bars = market
        templates = load_user_templates(EXAMPLES)
        context = SignalContext(bars, 5, EURUSD)
        check_template_causality(templates["momentum_breakout"], context)
        strategies = generate_strategies(SearchConfig(families=(), sl_tp_sets=((10.0, 10.0),)),
                                         context.available(), templates)
        signals = {s.signal_key: compute_signals(s.family, s.params, context, templates) for s in strategies}
        first = signals[strategies[0].signal_key]
        assert first.dtype == np.int8
        assert (first == 1).any()
        assert (first == -1).any()
        trades = run_backtests(arrays, bars, 5, strategies, signals, EURUSD, 240.0)
        assert len(trades) > 10
        assert set(trades.strategy_index.tolist()) <= set(range(len(strategies)))


class TestLoadErrors:
    @pytest.mark.parametrize(("source", "message"), [
        ("import numpy as np\ndef signals(context):\n    return np.zeros(1)\n", "NAME is missing"),
        ('NAME = "no_signals"\nPARAMETERS = {}\n', "signals is missing"),
        (VALID_BODY.format(name="ma_cross"), "built-in family"),
        (VALID_BODY.format(name="Bad-Name"), "NAME 'Bad-Name' is invalid"),
        ('NAME = "x"\nPARAMETERS = [3, 5]\ndef signals(context, window):\n    pass\n', "PARAMETERS is list"),
        ('NAME = "x"\nPARAMETERS = {"window": 5}\ndef signals(context, window):\n    pass\n',
         r"PARAMETERS\['window'\] is 5"),
        ('NAME = "x"\nPARAMETERS = {"window": []}\ndef signals(context, window):\n    pass\n', "non-empty list"),
        ('NAME = "x"\nPARAMETERS = {"window": [object()]}\ndef signals(context, window):\n    pass\n',
         "not a JSON"),
        ('NAME = "x"\nREQUIRES = {"bars", "news"}\ndef signals(context):\n    pass\n', r"unknown inputs \['news'\]"),
        ('NAME = "x"\nREQUIRES = "bars"\ndef signals(context):\n    pass\n', "REQUIRES is 'bars'"),
        ('NAME = "x"\nPARAMETERS = {"span": [3]}\ndef signals(context, window):\n    pass\n',
         "does not accept the PARAMETERS names"),
        ("import not_a_module_anywhere\n", "import failed with ModuleNotFoundError"),
    ], ids=["no_name", "no_signals", "builtin_clash", "bad_name", "grid_not_dict", "grid_value_not_list",
            "grid_empty_list", "grid_value_not_json", "unknown_input", "requires_string", "signature",
            "import_error"])
    def test_error_names_file(self, tmp_path, source, message):
        path = _write(tmp_path, "broken.py", source)
        with pytest.raises(UserTemplateError, match=message) as caught:
            load_user_templates(tmp_path)
        assert str(path) in str(caught.value)

    def test_duplicate_name_across_files(self, tmp_path):
        _write(tmp_path, "a.py", VALID_BODY.format(name="twice"))
        second = _write(tmp_path, "b.py", VALID_BODY.format(name="twice"))
        with pytest.raises(UserTemplateError, match="already used by") as caught:
            load_user_templates(tmp_path)
        assert str(second) in str(caught.value)

    def test_missing_folder(self, tmp_path):
        with pytest.raises(UserTemplateError, match="does not exist"):
            load_user_templates(tmp_path / "absent")

    def test_file_name_order_and_private_files_skipped(self, tmp_path):
        _write(tmp_path, "b_second.py", VALID_BODY.format(name="alpha"))
        _write(tmp_path, "a_first.py", VALID_BODY.format(name="zulu"))
        _write(tmp_path, "_helpers.py", "raise RuntimeError('not a template')\n")
        assert list(load_user_templates(tmp_path)) == ["zulu", "alpha"]


class TestOutputChecks:
    @pytest.mark.parametrize(("body", "message"), [
        ("return np.zeros(len(close) - 1, dtype=np.int8)", r"shape \(\d+,\) for \d+ bars"),
        ("return np.zeros(len(close))", "dtype float64"),
        ("return np.full(len(close), 2, dtype=np.int8)", "returned 2 at bar 0"),
        ("return [0] * len(close)", "returned list"),
    ], ids=["shape", "dtype", "value", "not_array"])
    def test_bad_output_raises_at_first_use(self, tmp_path, market, body, message):
        path = _write(tmp_path, "bad_output.py", f'''
            import numpy as np
            NAME = "bad_output"
            def signals(context):
                close = context.mid("close")
                {body}
            ''')
        templates = load_user_templates(tmp_path)
        context = SignalContext(market[1], 5, EURUSD)
        with pytest.raises(ValueError, match=message) as caught:
            compute_signals("bad_output", {}, context, templates)
        assert str(path) in str(caught.value)

    def test_missing_input_skips_family(self, tmp_path):
        _write(tmp_path, "needs_features.py", '''
            NAME = "needs_features"
            REQUIRES = {"features"}
            def signals(context):
                return context.features_on_bars()["x"].to_numpy()
            ''')
        templates = load_user_templates(tmp_path)
        assert templates["needs_features"].requires == frozenset({INPUT_BARS, INPUT_FEATURES})
        assert generate_strategies(SearchConfig(families=()), {INPUT_BARS}, templates) == []


class TestCausality:
    def test_peeking_template_detected(self, tmp_path, market):
        _write(tmp_path, "peek.py", '''
            import numpy as np
            NAME = "peek"
            PARAMETERS = {"shift": [1]}
            def signals(context, shift):
                close = context.mid("close")
                # Looks at the next bar's close: a look-ahead.
                rising = np.r_[close[shift:] > close[:-shift], np.zeros(shift, dtype=bool)]
                return np.where(rising, 1, -1).astype(np.int8)
            ''')
        template = load_user_templates(tmp_path)["peek"]
        with pytest.raises(ValueError, match="is not causal"):
            check_template_causality(template, SignalContext(market[1], 5, EURUSD))

    def test_causal_template_passes(self, tmp_path, market):
        _write(tmp_path, "steady.py", VALID_BODY.format(name="steady"))
        template = load_user_templates(tmp_path)["steady"]
        check_template_causality(template, SignalContext(market[1], 5, EURUSD))


def test_fingerprint_changes_with_file_content(tmp_path):
    path = _write(tmp_path, "one.py", VALID_BODY.format(name="one"))
    before = templates_fingerprint(tmp_path)
    assert templates_fingerprint(tmp_path) == before
    path.write_text(path.read_text().replace("[3, 5]", "[3, 6]"))
    assert templates_fingerprint(tmp_path) != before


"""User-defined strategy templates: one Python file per family, loaded from a folder.

A template file defines:

- ``NAME`` (str): the family name, unique and different from every built-in family.
- ``PARAMETERS`` (dict of parameter name -> list of values): the grid. The search runs every
  combination, in the dict's order, each with every (stop-loss, take-profit) pair.
- ``REQUIRES`` (optional, set of "bars", "features", "regimes", "patterns"): the inputs it
  reads. A pair without one of them skips the family. Default: {"bars"}.
- ``signals(context, **params) -> np.ndarray``: one integer per bar, +1 long, -1 short, 0
  none, from ``fxresearch.strategies.SignalContext``. It must be causal: the value of bar t
  may use bars 0..t only, because the backtest acts on it at bar t's close.

``docs/user_templates.md`` describes the context and gives an example. Loading checks the
names, the grid and the function's parameters. The output is checked the first time
``strategies.compute_signals`` runs it. A look-ahead cannot be detected in general, but
``check_template_causality`` catches one that changes the signals when later bars are cut off.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import itertools
import json
import logging
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

from fxresearch.strategies import (
    INPUT_BARS,
    INPUT_FEATURES,
    INPUT_PATTERNS,
    INPUT_REGIMES,
    TEMPLATES,
    SignalContext,
    Template,
    check_signal_output,
)
from fxresearch.timeutil import NS_PER_MINUTE

logger = logging.getLogger(__name__)

KNOWN_INPUTS = frozenset({INPUT_BARS, INPUT_FEATURES, INPUT_REGIMES, INPUT_PATTERNS})
_NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]*")
# Loaded template modules live under this prefix in sys.modules, so that two files with the
# same stem in different folders do not replace each other.
_MODULE_PREFIX = "fxresearch_user_template_"


class UserTemplateError(ValueError):
    """A user template file that cannot be loaded or breaks the template interface."""


def load_user_templates(folder: str | Path) -> dict[str, Template]:
    """Load every template file of ``folder``, in file-name order.

    Files are the folder's ``*.py`` files whose names do not start with ``_``. Each runs as a
    module, so only load folders you trust.

    Returns
    -------
    dict
        Family name -> ``Template`` with ``source`` set to the file path, in file-name order.

    Raises
    ------
    UserTemplateError
        Naming the folder or file. It is raised when the folder is missing or a file fails to
        import, when ``NAME`` or ``signals`` is missing or invalid, or when a name repeats a
        built-in or another file's name. It is also raised when ``PARAMETERS`` is not a dict
        of non-empty lists of JSON values, when ``REQUIRES`` names an unknown input, and when
        ``signals`` does not accept a grid parameter.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UserTemplateError(
            f"User template folder {folder} does not exist; create it or set search.user_templates_dir = \"\"."
        )
    templates: dict[str, Template] = {}
    sources: dict[str, Path] = {}
    for path in sorted(folder.glob("*.py")):
        if path.name.startswith("_"):
            continue
        name, template = _load_file(path)
        if name in templates:
            raise UserTemplateError(f"{path}: NAME {name!r} is already used by {sources[name]}; rename one of them.")
        templates[name] = template
        sources[name] = path
    logger.info("Loaded %d user templates from %s: %s", len(templates), folder, list(templates))
    return templates


def templates_fingerprint(folder: str | Path) -> str:
    """Return a short hash of the names and contents of the template files in ``folder``.

    A change to any template file changes the hash, so a cache keyed on it detects the edit.
    """
    digest = hashlib.sha256()
    folder = Path(folder)
    for path in sorted(folder.glob("*.py")) if folder.is_dir() else []:
        if path.name.startswith("_"):
            continue
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _load_file(path: Path) -> tuple[str, Template]:
    module_name = _MODULE_PREFIX + hashlib.sha1(str(path.resolve()).encode(), usedforsecurity=False).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise UserTemplateError(f"{path}: cannot be loaded as a Python module.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(module_name, None)
        raise UserTemplateError(f"{path}: import failed with {type(exc).__name__}: {exc}") from exc

    name = getattr(module, "NAME", None)
    if name is None:
        raise UserTemplateError(f"{path}: NAME is missing; define NAME = \"my_family\" (lowercase, digits, _).")
    if not (isinstance(name, str) and _NAME_PATTERN.fullmatch(name)):
        raise UserTemplateError(
            f"{path}: NAME {name!r} is invalid; use lowercase letters, digits and _, starting with a letter."
        )
    if name in TEMPLATES:
        raise UserTemplateError(f"{path}: NAME {name!r} is a built-in family; choose another name.")
    signal = getattr(module, "signals", None)
    if signal is None or not callable(signal):
        raise UserTemplateError(f"{path}: signals is missing; define def signals(context, **params) -> np.ndarray.")
    grid = _grid(path, getattr(module, "PARAMETERS", {}))
    requires = _requires(path, getattr(module, "REQUIRES", {INPUT_BARS}))
    _check_signature(path, signal, grid)
    return name, Template(signal, grid, requires, str(path))


def _grid(path: Path, parameters: Any) -> tuple[dict[str, Any], ...]:
    if not isinstance(parameters, dict):
        raise UserTemplateError(
            f"{path}: PARAMETERS is {type(parameters).__name__}; define a dict of name -> list of values."
        )
    for key, values in parameters.items():
        if not (isinstance(key, str) and key.isidentifier()):
            raise UserTemplateError(f"{path}: PARAMETERS key {key!r} is not a Python identifier.")
        if not isinstance(values, (list, tuple)) or not values:
            raise UserTemplateError(f"{path}: PARAMETERS[{key!r}] is {values!r}; give a non-empty list of values.")
        for value in values:
            try:
                json.dumps(value)
            except (TypeError, ValueError):
                raise UserTemplateError(
                    f"{path}: PARAMETERS[{key!r}] value {value!r} is not a JSON number, string, bool or list; "
                    f"strategy ids are built from the JSON of the parameters."
                ) from None
    names = list(parameters)
    return tuple(dict(zip(names, combo, strict=True)) for combo in itertools.product(*parameters.values()))


def _requires(path: Path, requires: Any) -> frozenset[str]:
    if isinstance(requires, str) or not isinstance(requires, (set, frozenset, list, tuple)):
        raise UserTemplateError(f"{path}: REQUIRES is {requires!r}; give a set such as {{\"bars\", \"features\"}}.")
    unknown = sorted(set(requires) - KNOWN_INPUTS)
    if unknown:
        raise UserTemplateError(f"{path}: REQUIRES has unknown inputs {unknown}; known: {sorted(KNOWN_INPUTS)}.")
    return frozenset(requires) | {INPUT_BARS}


def _check_signature(path: Path, signal: Any, grid: tuple[dict[str, Any], ...]) -> None:
    try:
        signature = inspect.signature(signal)
    except (TypeError, ValueError):
        return
    for params in grid[:1]:
        try:
            signature.bind(None, **params)
        except TypeError as exc:
            raise UserTemplateError(
                f"{path}: signals{signature} does not accept the PARAMETERS names {sorted(params)}: {exc}."
            ) from None


def check_template_causality(template: Template, context: SignalContext,
                             n_cuts: int = 3, max_param_sets: int = 4) -> None:
    """Raise when a template's signals on bars cut short differ from the full run's first bars.

    For up to ``max_param_sets`` parameter sets of the grid, the signals of the full context
    are compared with those of ``n_cuts`` contexts whose bars, features and regimes stop at
    evenly spaced bars. A causal template gives the same values on every bar that both runs
    have. Passing this check does not prove causality: a look-ahead that only shows on other
    data passes it.

    Raises
    ------
    ValueError
        Naming the template's file, the parameters, the cut and the first differing bar.
    """
    n_bars = len(context.bars)
    cuts = sorted({int(n_bars * (k + 1) / (n_cuts + 1)) for k in range(n_cuts)} - {0, n_bars})
    label = f"Template in {template.source or template.signal.__module__}"
    for params in template.grid[:max_param_sets]:
        full = check_signal_output(template.signal(context, **params), n_bars, label)
        for cut in cuts:
            part_context = _cut_context(context, cut)
            part = check_signal_output(template.signal(part_context, **params), cut, label)
            different = np.flatnonzero(part != full[:cut])
            if len(different):
                bar = int(different[0])
                raise ValueError(
                    f"{label} is not causal: with parameters {params}, bar {bar} gets {part[bar]} on the first "
                    f"{cut} bars but {full[bar]} on all {n_bars}; its signals use later bars."
                )


def _cut_context(context: SignalContext, n_bars: int) -> SignalContext:
    """Return a fresh context that holds only label is known at the close of bar ``n_bars - 1``."""
    bars = context.bars.iloc[:n_bars].reset_index(drop=True)
    last_open_ns = int(bars["timestamp"].iloc[-1])
    last_close_ns = last_open_ns + context.timeframe_min * NS_PER_MINUTE
    features = context.features
    if features is not None:
        features = features[features["timestamp"].to_numpy() <= last_open_ns].reset_index(drop=True)
    regimes = context.regimes
    if regimes is not None:
        regime_close = regimes["timestamp"].to_numpy() + (context.regimes_timeframe_min or 0) * NS_PER_MINUTE
        regimes = regimes[regime_close <= last_close_ns].reset_index(drop=True)
    return SignalContext(
        bars=bars,
        timeframe_min=context.timeframe_min,
        instrument=context.instrument,
        features=features,
        regimes=regimes,
        regimes_timeframe_min=context.regimes_timeframe_min,
        patterns_doc=context.patterns_doc,
    )


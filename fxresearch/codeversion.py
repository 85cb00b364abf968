"""Code versions of the pipeline stages, so that a code change rebuilds what it affects.

A stage's code version is a hash of the package version and the source of every module that
computes its output. Editing ``labels.py`` rebuilds the labels of every pair on the next run
(and, through the manifest's build ids, the patterns and search results that read them),
while an edit to the report code rebuilds nothing. The version never depends on file times,
so a fresh clone of the same commit reuses an existing output folder.
"""

from __future__ import annotations

import hashlib
import importlib.util
from functools import lru_cache

from fxresearch import __version__

# Modules whose code decides each stage's output. Shared helpers (timestamps, instruments) are
# listed where their behaviour changes the numbers written. Configuration enters through the config hash.
STAGE_MODULES: dict[str, tuple[str, ...]] = {
    "ticks_report": ("ticks", "naming", "instruments", "timeutil"),
    "split": ("base", "timeutil"),
    "bars": ("bars", "_bar_kernels"),
    "features": ("features", "_feature_kernels"),
    "labels": ("labels", "_label_kernels", "fills", "_fill_kernels", "timeutil"),
    "patterns": ("patterns", "_pattern_kernels"),
    "regimes": ("regimes", "_regime_kernels"),
    "backtest_results": (
        "search", "strategies", "user_templates", "backtest", "_backtest_kernels", "fills",
        "_fill_kernels", "costs", "conversion", "metrics", "_metrics_kernels", "daily",
        "_daily_kernels", "validation", "timeutil", "refit",
    ),
}


@lru_cache(maxsize=None)
def _module_digest(module: str) -> str:
    """Return a hash of one ``fxresearch`` module's source, or ``absent`` when there is none."""
    spec = importlib.util.find_spec(f"fxresearch.{module}")
    if spec is None or spec.origin is None:
        return "absent"
    with open(spec.origin, "rb") as handle:
        return hashlib.blake2b(handle.read(), digest_size=8).hexdigest()


def code_version(stage: str) -> str:
    """Return the code version recorded for ``stage``: package version plus a source hash.

    Parameters
    ----------
    stage : str
        A key of ``STAGE_MODULES``.

    Returns
    -------
    str
        ``"<package version>+<16 hex digits>"``. It changes when any module of the stage changes.
    """
    try:
        modules = STAGE_MODULES[stage]
    except KeyError:
        raise ValueError(f"Unknown stage {stage!r}; known stages: {', '.join(STAGE_MODULES)}") from None
    digest = hashlib.blake2b(digest_size=8)
    for module in modules:
        digest.update(f"{module}={_module_digest(module)};".encode())
    return f"{__version__}+{digest.hexdigest()}"

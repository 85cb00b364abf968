"""Compiled pattern kernel: weighted label sums for every single-bin and two-bin condition.

Takes and returns numpy arrays and plain numbers only; ``fxresearch.patterns`` lays out the
conditions and turns the sums into statistics.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def condition_sums_nb(
    codes: np.ndarray, feature_row: np.ndarray, weight: np.ndarray, win: np.ndarray, pips: np.ndarray,
    known: np.ndarray, single_offset: np.ndarray, pair_offset: np.ndarray, n_bins: np.ndarray,
    n_cells: int, with_pairs: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sum label figures per condition cell in one pass over the label rows.

    ``codes[i, f]`` is the bin of feature f on feature row i (-1: no bin). Label row r reads
    feature row ``feature_row[r]``. Feature f's bin b is cell ``single_offset[f] + b``, and
    the pair (f < g) with bins (b, c) is cell ``pair_offset[f, g] + b * n_bins[g] + c``.

    Returns
    -------
    (count, censored, w, w_win, w_pips, w_pips2)
        Per cell: int64 counts of known-outcome and censored rows, and float64 sums over
        known-outcome rows of ``weight``, ``weight * win``, ``weight * pips`` and
        ``weight * pips**2``.
    """
    n_features = codes.shape[1]
    count = np.zeros(n_cells, dtype=np.int64)
    censored = np.zeros(n_cells, dtype=np.int64)
    w = np.zeros(n_cells)
    w_win = np.zeros(n_cells)
    w_pips = np.zeros(n_cells)
    w_pips2 = np.zeros(n_cells)
    for r in range(len(feature_row)):
        i = feature_row[r]
        u = weight[r]
        is_known = known[r]
        win_u = u * win[r]
        pips_u = u * pips[r] if is_known else 0.0
        pips2_u = pips_u * pips[r] if is_known else 0.0
        for f in range(n_features):
            b = codes[i, f]
            if b < 0:
                continue
            cell = single_offset[f] + b
            if is_known:
                count[cell] += 1
                w[cell] += u
                w_win[cell] += win_u
                w_pips[cell] += pips_u
                w_pips2[cell] += pips2_u
            else:
                censored[cell] += 1
            if not with_pairs:
                continue
            for g in range(f + 1, n_features):
                c = codes[i, g]
                if c < 0:
                    continue
                cell = pair_offset[f, g] + b * n_bins[g] + c
                if is_known:
                    count[cell] += 1
                    w[cell] += u
                    w_win[cell] += win_u
                    w_pips[cell] += pips_u
                    w_pips2[cell] += pips2_u
                else:
                    censored[cell] += 1
    return count, censored, w, w_win, w_pips, w_pips2

"""Compiled kernels for ``fxresearch.metrics``.

The kernels take and return numpy arrays and plain numbers only. ``fxresearch.metrics``
validates the trades, sorts them and builds the tables.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def held_time_nb(group: np.ndarray, entry_time_ns: np.ndarray, exit_time_ns: np.ndarray, n_groups: int) -> np.ndarray:
    """Return the length in ns of the union of each group's [entry, exit] holding intervals.

    The trades must be sorted by group, then by entry time. Overlapping or touching
    intervals count once, so the result never exceeds the time from the group's first entry
    to its last exit. Groups without trades get 0.
    """
    held_ns = np.zeros(n_groups, dtype=np.int64)
    n = group.shape[0]
    k = 0
    while k < n:
        g = group[k]
        start = entry_time_ns[k]
        end = exit_time_ns[k]
        k += 1
        while k < n and group[k] == g:
            if entry_time_ns[k] > end:
                held_ns[g] += end - start
                start = entry_time_ns[k]
                end = exit_time_ns[k]
            elif exit_time_ns[k] > end:
                end = exit_time_ns[k]
            k += 1
        held_ns[g] += end - start
    return held_ns

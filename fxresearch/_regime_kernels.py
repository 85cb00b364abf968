"""Compiled kernels for ``fxresearch.regimes``: Gaussian log densities and the forward filter.

Both work row by row with explicit loops, so a row's result depends on that row (and, for the
filter, the rows before it) and never on how many rows the arrays contain.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True)
def gaussian_log_density_nb(values: np.ndarray, means: np.ndarray, inverse_cholesky: np.ndarray,
                            log_determinant: np.ndarray) -> np.ndarray:
    """Compute the log density of each row under each multivariate normal component.

    ``inverse_cholesky[k]`` is the inverse of the lower Cholesky factor of component ``k``'s
    covariance and ``log_determinant[k]`` the log determinant of that covariance. A row with a
    NaN value gives NaN for every component.
    """
    n, dimension = values.shape
    n_components = means.shape[0]
    out = np.full((n, n_components), np.nan)
    constant = dimension * math.log(2.0 * math.pi)
    for t in range(n):
        complete = True
        for j in range(dimension):
            if not math.isfinite(values[t, j]):
                complete = False
        if not complete:
            continue
        for k in range(n_components):
            squared_distance = 0.0
            for i in range(dimension):
                total = 0.0
                for j in range(i + 1):
                    total += inverse_cholesky[k, i, j] * (values[t, j] - means[k, j])
                squared_distance += total * total
            out[t, k] = -0.5 * (constant + log_determinant[k] + squared_distance)
    return out


@njit(cache=True)
def forward_filter_nb(log_emission: np.ndarray, transition: np.ndarray,
                      initial: np.ndarray) -> np.ndarray:
    """Compute the filtered state probabilities ``P(state_t | rows <= t)`` of a hidden Markov model.

    The state before the first row has distribution ``initial``. Each row first moves it one
    step through ``transition`` (rows sum to 1), then weighs it by the row's emission
    likelihood. A row whose emissions are NaN (no complete features) only takes the step, and
    its output row is NaN.
    """
    n, n_states = log_emission.shape
    out = np.full((n, n_states), np.nan)
    state = initial.copy()
    predicted = np.empty(n_states)
    for t in range(n):
        for k in range(n_states):
            total = 0.0
            for j in range(n_states):
                total += state[j] * transition[j, k]
            predicted[k] = total
        if not math.isfinite(log_emission[t, 0]):
            for k in range(n_states):
                state[k] = predicted[k]
            continue
        largest = log_emission[t, 0]
        for k in range(1, n_states):
            largest = max(largest, log_emission[t, k])
        norm = 0.0
        for k in range(n_states):
            state[k] = predicted[k] * math.exp(log_emission[t, k] - largest)
            norm += state[k]
        if norm > 0.0:
            for k in range(n_states):
                state[k] /= norm
                out[t, k] = state[k]
        else:
            # Every likely state had zero prediction weight, so fall back to the prediction.
            for k in range(n_states):
                state[k] = predicted[k]
                out[t, k] = predicted[k]
    return out

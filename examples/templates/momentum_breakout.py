"""Momentum breakout: a close beyond the recent range after a strong move in the same direction.

Long on a bar whose mid close is above the highest mid high of the previous ``lookback`` bars
while the close has risen at least ``min_move_pips`` over those bars. Short mirrors it below
the lowest mid low. Every value uses bars up to and including the signal bar only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from fxresearch.strategies import SignalContext

NAME = "momentum_breakout"
PARAMETERS = {
    "lookback": [12, 24, 48],
    "min_move_pips": [5.0, 10.0],
}
REQUIRES = {"bars"}


def signals(context: SignalContext, lookback: int, min_move_pips: float) -> np.ndarray:
    close = context.mid("close")
    # shift(1) keeps the signal bar out of its own channel.
    channel_high = pd.Series(context.mid("high")).shift(1).rolling(lookback).max().to_numpy()
    channel_low = pd.Series(context.mid("low")).shift(1).rolling(lookback).min().to_numpy()
    move_pips = (close - pd.Series(close).shift(lookback).to_numpy()) / context.instrument.pip_size

    long_entry = (close > channel_high) & (move_pips >= min_move_pips)
    short_entry = (close < channel_low) & (move_pips <= -min_move_pips)
    signal = np.zeros(len(close), dtype=np.int8)
    signal[long_entry] = 1
    signal[short_entry] = -1
    return signal

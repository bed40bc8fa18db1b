"""Argument checks the public functions share, as keras.applications keeps
`obtain_input_shape` and `validate_activation` apart from its builders: one
wording for one mistake, naming the argument and the value received.

A wrong type is a TypeError, a value of the right type out of range a
ValueError.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def check_bool(value: Any, argument: str) -> bool:
    """`value` as a bool; TypeError naming `argument` for anything else
    (a string such as "yes" is truthy, and would silently mean True)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{argument}` must be True or False. Received: "
                        f"{argument}={value!r} ({type(value).__name__})")
    return bool(value)


def check_positive_int(value: Any, argument: str) -> int:
    """`value` as an int >= 1; TypeError naming `argument` for a non-integer
    (a bool included), ValueError for zero or a negative number."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(
            value, (int, np.integer)):
        raise TypeError(f"`{argument}` must be a positive integer. "
                        f"Received: {argument}={value!r} "
                        f"({type(value).__name__})")
    if value < 1:
        raise ValueError(f"`{argument}` must be a positive integer. "
                         f"Received: {argument}={value!r}")
    return int(value)

"""The one exception type panda raises for bad input.

Every message says what was wrong *and* how to fix it, so the CLI can print it as is
and exit non-zero.
"""

import operator

import numpy as np
import torch


class PandaError(Exception):
    """Bad input or state that the user can fix; the message names the fix."""


def check_whole(value, what: str) -> int:
    """``value`` as a Python int where it is a whole number: an int, a numpy integer or a one-element integer tensor.
    A float (1.5; also 2.0, which indexes in some places and fails in others) or a bool is refused, naming ``what``."""
    if not isinstance(value, (bool, np.bool_)) and not (isinstance(value, torch.Tensor) and value.dtype == torch.bool):
        try:
            return operator.index(value)
        except TypeError:
            pass
    raise PandaError(f"{what} must be a whole number, got {value!r}.")


def plain_int(value):
    """A numpy integer as a Python int (so that it checks as a whole number and serialises to JSON); anything else
    as given, for the caller's own check to judge."""
    return int(value) if isinstance(value, np.integer) else value

"""Type checks of plain config and data values, shared by every layer. Imports nothing of
rlvr_jax."""

from __future__ import annotations

import math


def is_int(x) -> bool:
    """A real int (not a bool)."""
    return isinstance(x, int) and not isinstance(x, bool)


def is_num(x) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)

"""Report values as strict JSON, and back to numbers.

``json.dumps`` would write non-finite floats as the non-standard ``Infinity`` and
``NaN``; reports write them as the strings ``"inf"``, ``"-inf"`` and ``"nan"``.
"""
from __future__ import annotations

import math

from torch import Tensor


def jsonable(obj):
    """Tensors to lists, non-finite floats to strings, dict keys to strings,
    tuples to lists: what ``json.dumps(..., allow_nan=False)`` accepts."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Tensor):
        return jsonable(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)  # "inf", "-inf", "nan"
    return obj


def reported_float(v) -> float:
    """A reported number back to a float (None and "nan" -> nan, "-inf" -> -inf)."""
    return float("nan") if v is None else float(v)

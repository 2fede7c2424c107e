"""Row-wise L2 normalisation of feature matrices (the one helper for NumPy arrays) and a stable
log-sum-exp.

Torch tensors use :func:`torch.nn.functional.normalize` directly (same rule: ``x / max(||x||, eps)``).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def l2_normalize(x: ArrayLike) -> np.ndarray:
    """Rows of ``x`` [N, D] scaled to unit L2 norm, as float32 [N, D]; all-zero rows stay zero.

    scikit-learn's :func:`sklearn.preprocessing.normalize` (``norm="l2"``) on a float32 copy; the
    input is never modified.
    """
    from sklearn.preprocessing import normalize

    return normalize(np.array(x, dtype=np.float32, copy=True), norm="l2", copy=False)


def logsumexp(x: ArrayLike, axis: int = -1) -> np.ndarray:
    """log(sum(exp(x))) along ``axis``, computed stably (the maximum shifted out first); float64.
    Rows that are all -inf give -inf. The same values as ``scipy.special.logsumexp`` without
    importing SciPy (about a second of start-up on a loaded 2-core machine)."""
    a = np.asarray(x, dtype=np.float64)
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        out = np.log(np.sum(np.exp(a - m), axis=axis, keepdims=True)) + m
    return np.squeeze(out, axis=axis)

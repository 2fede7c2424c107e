"""Row-wise L2 normalisation of feature matrices: the one helper for NumPy arrays.

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

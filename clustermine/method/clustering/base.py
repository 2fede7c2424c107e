"""What both clusterers share: scikit-learn's estimator base classes, input checks and seeds."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.exceptions import NotFittedError
from sklearn.utils import check_random_state

from clustermine.core.errors import ClusterMineError


class InvalidClusteringInput(ClusterMineError, ValueError):
    """Bad features or parameters given to a clusterer (a ValueError, as scikit-learn expects)."""


class NotFittedClusterer(ClusterMineError, NotFittedError):
    """``predict`` called before ``fit`` (scikit-learn's NotFittedError)."""


def random_state_from(cls_name: str, random_state: Any, legacy: dict[str, Any]) -> Any:
    """``random_state``, or the value of the deprecated ``seed`` keyword (with a DeprecationWarning).

    ``legacy`` holds the constructor's extra keywords; anything but ``seed`` is a TypeError, as for
    any unknown keyword.
    """
    unknown = sorted(set(legacy) - {"seed"})
    if unknown:
        raise TypeError(f"{cls_name}() got an unexpected keyword argument {unknown[0]!r}")
    if "seed" not in legacy:
        return random_state
    seed = legacy["seed"]
    if random_state not in (0, seed):
        raise TypeError(f"{cls_name}() got both seed={seed!r} and random_state={random_state!r}; pass random_state only")
    warnings.warn(
        f"{cls_name}(seed=...) is deprecated; use random_state=... (the same value gives the same result)",
        DeprecationWarning,
        stacklevel=3,
    )
    return seed


class ClustererBase(ClusterMixin, BaseEstimator):
    """scikit-learn estimator base for the clusterers (``get_params`` / ``set_params`` / ``clone``,
    ``fit_predict`` = ``fit(X).labels_``).

    Subclasses list every parameter in ``__init__`` and store them unchanged; what ``fit`` learns
    ends in ``_``. ``progress`` / ``cancel`` callbacks are parameters too, but a pickled model
    drops them.
    """

    random_state: Any
    n_clusters: int
    n_features_in_: int
    _model_attribute = "labels_"  # the fitted attribute that predict needs

    @property
    def seed(self) -> Any:
        """Deprecated alias of ``random_state``."""
        warnings.warn("`seed` is deprecated; use `random_state`", DeprecationWarning, stacklevel=2)
        return self.random_state

    def _seed(self) -> int:
        """The integer seed of one fit: ``random_state`` itself when it is an int (so int seeds give
        the same results as before ``random_state`` existed), else a draw from it."""
        rs = self.random_state
        if isinstance(rs, (int, np.integer)) and not isinstance(rs, bool):
            return int(rs)
        return int(check_random_state(rs).randint(np.iinfo(np.int32).max))

    def _check_n_clusters(self, n_samples: int) -> int:
        c = self.n_clusters
        if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or c < 1:
            raise InvalidClusteringInput(f"n_clusters must be a positive integer, got {c!r}")
        if c > n_samples:
            raise InvalidClusteringInput(f"n_clusters={c} exceeds the number of samples ({n_samples})")
        return int(c)

    def _features(self, X: np.ndarray, *, fit: bool) -> np.ndarray:
        """X [N, D] as C-contiguous float32, checked by scikit-learn (2-D, non-empty, finite, dense).

        ``fit=True`` records ``n_features_in_``; otherwise the model must be fitted and D must match.
        Raises :class:`InvalidClusteringInput` / :class:`NotFittedClusterer` (scikit-learn's messages).
        """
        from sklearn.utils.validation import validate_data

        if not fit and not self.__sklearn_is_fitted__():
            raise NotFittedClusterer(f"this {type(self).__name__} is not fitted yet: call fit(X) first")
        try:
            return validate_data(self, X, reset=fit, dtype=np.float32, order="C")
        except ValueError as exc:  # a TypeError (e.g. objects that are not numbers) passes unchanged
            raise InvalidClusteringInput(f"{type(self).__name__}: {exc}") from None

    def __sklearn_is_fitted__(self) -> bool:
        """Whether ``predict`` can run (subclasses name the attribute their model lives in)."""
        return hasattr(self, self._model_attribute)

    def __getstate__(self) -> dict:
        # callbacks (often lambdas or closures over a UI) are not part of a saved model
        return {**super().__getstate__(), "progress": None, "cancel": None}

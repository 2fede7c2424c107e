"""One home for clustering a run's images with the run's own settings: mining, re-mining without
excluded images and the seed-stability analysis all build their clusterer here (the run's stored
clusterer, its options, seed and device), so none of them can fall back to another algorithm."""

from __future__ import annotations

from typing import Callable

import numpy as np

from clustermine.core.config import MineConfig
from clustermine.core.errors import EncoderError
from clustermine.method.clustering import make_clusterer
from clustermine.method.encoders.base import resolve_device

ProgressFn = Callable[[int, int], None]

__all__ = ["clusterer_device", "run_clusterer", "fit_rows"]


def clusterer_device(config: MineConfig, device: str | None = None) -> str:
    """Where the clusterer runs: ``device`` when given; else TEMI on the run's device (``config.device``,
    resolved on this machine, CPU when that device is not here), k-means on the CPU."""
    if device is not None:
        return device
    if config.clusterer != "temi":
        return "cpu"
    try:
        return resolve_device(config.device or "auto")
    except EncoderError:  # a run mined on a GPU, re-clustered on a machine without it
        return "cpu"


def run_clusterer(config: MineConfig | dict, n_clusters: int, *, seed: int | None = None, device: str | None = None,
                  progress: ProgressFn | None = None, cancel: Callable[[], bool] | None = None):
    """The clusterer of a run's settings (``config``: a MineConfig or a run's stored config dict)
    with ``n_clusters`` clusters; ``seed`` overrides the run's seed (stability uses seed + s)."""
    cfg = config if isinstance(config, MineConfig) else MineConfig.from_dict(config)
    return make_clusterer(cfg.clusterer, int(n_clusters), seed=cfg.seed if seed is None else int(seed),
                          device=clusterer_device(cfg, device), progress=progress, cancel=cancel,
                          **(cfg.clusterer_params or {}))


def fit_rows(clusterer, features: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Fit ``clusterer`` on ``features[rows]`` (float16/32 [N, D]) and return the labels int64 [len(rows)]."""
    return np.asarray(clusterer.fit_predict(np.asarray(features[rows], dtype=np.float32)), dtype=np.int64)

"""ClusterMine: label-free OOD detection by mining concepts from clusters of ID images.

Data flows one way: images → features → clusters → votes → concepts → scores. The public API:

- :func:`load_encoder` (``"offline"`` ConSE encoder or ``"openclip:..."``)
- :func:`load_corpus`, :func:`corpus_embeddings`
- :class:`TEMI`, :class:`KMeansClusterer`
- :func:`zero_shot_topk`, :func:`cluster_statistics`, :func:`mine_positive_concepts`
- :class:`Detector`, :func:`log_scores`
- :func:`mine`, :func:`score_images`, :func:`evaluate`, :class:`MineConfig`, :class:`Run`
- :mod:`clustermine.metrics`

Heavy modules are imported lazily so that ``import clustermine`` is quick and never pulls in a UI.
"""

from __future__ import annotations

import importlib

from .errors import ClusterMineError

__version__ = "0.1.0"

_LAZY = {
    "load_encoder": "encoders", "Encoder": "encoders",
    "load_corpus": "corpus", "corpus_embeddings": "corpus", "Corpus": "corpus",
    "TEMI": "clustering", "KMeansClusterer": "clustering", "make_clusterer": "clustering",
    "zero_shot_topk": "mining", "cluster_statistics": "mining", "mine_positive_concepts": "mining",
    "cluster_alerts": "mining", "posmine": "mining",
    "Detector": "scoring", "log_scores": "scoring", "WhatIfScorer": "scoring",
    "mine": "pipeline", "score_images": "pipeline", "evaluate": "pipeline", "MineConfig": "pipeline",
    "Run": "runs", "list_runs": "runs", "export_run": "export",
}

__all__ = ["ClusterMineError", "__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module 'clustermine' has no attribute {name!r}")

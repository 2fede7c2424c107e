"""ClusterMine: label-free OOD detection by mining concepts from clusters of ID images.

Data flows one way: images → features → clusters → votes → concepts → scores. The public API:

- :func:`load_encoder` (``"offline"`` ConSE encoder or ``"openclip:..."``)
- :func:`load_corpus`, :func:`corpus_embeddings`
- :class:`TEMI`, :class:`KMeansClusterer`
- :func:`zero_shot_topk`, :func:`cluster_statistics`, :func:`mine_positive_concepts`
- :class:`Detector`, :func:`log_scores`
- :func:`mine`, :func:`score_images`, :func:`evaluate`, :class:`MineConfig`, :class:`Run`
- :mod:`clustermine.method.metrics`

Heavy modules are imported lazily so that ``import clustermine`` is quick and never pulls in a UI.
"""

from __future__ import annotations

import importlib

from clustermine.core.errors import ClusterMineError

__version__ = "0.1.0"

_LAZY = {
    "load_encoder": "method.encoders", "Encoder": "method.encoders",
    "load_corpus": "method.corpus", "corpus_embeddings": "method.corpus", "Corpus": "method.corpus",
    "TEMI": "method.clustering", "KMeansClusterer": "method.clustering", "make_clusterer": "method.clustering",
    "zero_shot_topk": "method.mining", "cluster_statistics": "method.mining", "mine_positive_concepts": "method.mining",
    "cluster_alerts": "method.mining", "posmine": "method.mining",
    "Detector": "method.scoring", "log_scores": "method.scoring", "WhatIfScorer": "method.scoring",
    "mine": "workflows.pipeline", "score_images": "workflows.pipeline", "evaluate": "workflows.pipeline", "MineConfig": "workflows.pipeline",
    "Run": "store", "list_runs": "store", "export_run": "workflows.export",
}

__all__ = ["ClusterMineError", "__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module 'clustermine' has no attribute {name!r}")

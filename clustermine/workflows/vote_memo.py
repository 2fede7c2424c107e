"""The zero-shot vote of one feature matrix, kept for the next run mined from the same features.

The vote (every image's top-k corpus concepts and its corpus log-sum-exp, :func:`zero_shot_topk`) is the
costly pass over the corpus (≈ 21 min for 1.28M images on 2 cores) and depends only on the features, the
corpus embeddings, k and τ, not on the clustering. A sweep's cells that differ only in C, the clusterer
or the seed therefore share one vote (and, keyed the same way, the corpus denominators of the
sets they score). Keys are content hashes, so a stale entry can never be served.
"""

from __future__ import annotations

import numpy as np

from clustermine.core.hashing import array_hash


class VoteMemo:
    """In-memory votes by (features, corpus embeddings, k, τ); one per process (e.g. one sweep).

    Entries are read-only ``(top_idx int32 [N, k], top_sim float32 [N, k], lse float64 [N])``.
    ``hits`` / ``misses`` count lookups.
    """

    def __init__(self) -> None:
        self._votes: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(image_features: np.ndarray, text_embeddings: np.ndarray, k: int, tau: float) -> str:
        """``image_features`` [N, D] (may be a memmap), ``text_embeddings`` [M, D]."""
        return f"{array_hash(image_features)}-{array_hash(text_embeddings)}-k{int(k)}-tau{float(tau)!r}"

    def get(self, key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        found = self._votes.get(key)
        if found is None:
            self.misses += 1
        else:
            self.hits += 1
        return found

    def put(self, key: str, top_idx: np.ndarray, top_sim: np.ndarray, lse: np.ndarray) -> None:
        kept = tuple(np.array(a, copy=True) for a in (top_idx, top_sim, lse))
        for a in kept:
            a.setflags(write=False)
        self._votes[key] = kept  # type: ignore[assignment]

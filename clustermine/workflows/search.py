"""Find images in a run: text -> images and image -> images by cosine similarity over the run's
stored features (pure numpy; the L2-normalised feature matrix is cached per run and features
version, so a warm query is one [N, D] @ [D] product and a partial sort).

Text queries are embedded with the run's own encoder text tower and prompt template, so a
concept outside the corpus works as well as one inside it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from clustermine.workflows import clusterview
from clustermine.core.errors import ClusterMineError
from clustermine.core.linalg import l2_normalize
from clustermine.store import layout
from clustermine.method.corpus import embed_concepts
from clustermine.method.encoders import load_encoder

if TYPE_CHECKING:
    from clustermine.store.run import Run

__all__ = ["Hit", "FeatureIndex", "feature_index", "embed_query", "search_text", "search_image", "top_k"]


def top_k(similarities: np.ndarray, k: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """Rows (int64 [min(k, N)]) of the ``k`` largest ``similarities`` (float [N]), best first;
    ties broken by the lower row. ``exclude``: rows never returned."""
    sims = np.asarray(similarities, dtype=np.float64).copy()
    if exclude is not None and len(exclude):
        sims[np.asarray(exclude, dtype=np.int64)] = -np.inf
    n_valid = int(np.isfinite(sims).sum())
    k = max(0, min(int(k), n_valid))
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    cand = np.argpartition(-sims, k - 1)[:k] if k < len(sims) else np.arange(len(sims))
    # keep every row tied with the k-th value so the tie rule (lower row first) is exact
    kth = sims[cand].min()
    cand = np.flatnonzero(sims >= kth)
    order = np.lexsort((cand, -sims[cand]))
    return cand[order][:k].astype(np.int64)


class FeatureIndex:
    """L2-normalised image features float32 [N, D] of one run, for cosine nearest-neighbour queries."""

    def __init__(self, features: np.ndarray) -> None:
        feats = np.asarray(features, dtype=np.float32)
        if feats.ndim != 2:
            raise ValueError("features must be a [N, D] matrix")
        self.unit = l2_normalize(feats)

    def __len__(self) -> int:
        return self.unit.shape[0]

    def similarities(self, query: np.ndarray) -> np.ndarray:
        """Cosine similarity float32 [N] of every image with ``query`` (float [D], any norm)."""
        q = np.asarray(query, dtype=np.float32).ravel()
        if q.shape[0] != self.unit.shape[1]:
            raise ClusterMineError(f"query has dimension {q.shape[0]}, the run's features {self.unit.shape[1]}")
        return self.unit @ l2_normalize(q)

    def nearest(self, query: np.ndarray, k: int, exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(rows int64 [k], cosine float32 [k]) of the ``k`` images nearest ``query``, best first."""
        sims = self.similarities(query)
        rows = top_k(sims, k, exclude)
        return rows, sims[rows]


_INDEX_CACHE: OrderedDict[tuple, FeatureIndex] = OrderedDict()
_INDEX_LOCK = threading.Lock()
_INDEX_MAX = 4
_QUERY_CACHE: OrderedDict[tuple, np.ndarray] = OrderedDict()  # (encoder fingerprint, template, text) -> [D]
_QUERY_MAX = 256


def feature_index(run: Run) -> FeatureIndex:
    """The run's :class:`FeatureIndex`, cached per (run folder, ``features.npy`` version)."""
    key = (str(run.path.resolve()), layout.file_stamp(run.file(layout.FEATURES)))
    with _INDEX_LOCK:
        if key in _INDEX_CACHE:
            _INDEX_CACHE.move_to_end(key)
            return _INDEX_CACHE[key]
    index = FeatureIndex(run.features())
    with _INDEX_LOCK:
        _INDEX_CACHE[key] = index
        while len(_INDEX_CACHE) > _INDEX_MAX:
            _INDEX_CACHE.popitem(last=False)
    return index


def embed_query(run: Run, text: str, encoder=None) -> np.ndarray:
    """Text embedding float32 [D] of ``text`` with the run's encoder and prompt template (the same
    recipe as the corpus, so scores are comparable to the concepts'). Refuses another encoder."""
    text = (text or "").strip()
    if not text:
        raise ClusterMineError("empty search text: type a concept, e.g. 'church'")
    if len(text) > 200:
        raise ClusterMineError("search text is longer than 200 characters")
    enc_meta = run.meta.get("encoder") or {}
    if encoder is None:
        encoder = load_encoder(run.encoder_spec)
    if enc_meta.get("fingerprint_id") and encoder.fingerprint_id != enc_meta["fingerprint_id"]:
        raise ClusterMineError("the given encoder is not the one this run was mined with")
    template = run.config.get("template") or encoder.text_template
    key = (encoder.fingerprint_id, template, text)
    with _INDEX_LOCK:
        if key in _QUERY_CACHE:
            _QUERY_CACHE.move_to_end(key)
            return _QUERY_CACHE[key]

    emb = embed_concepts(encoder, [text], template)[0]
    with _INDEX_LOCK:
        _QUERY_CACHE[key] = emb
        while len(_QUERY_CACHE) > _QUERY_MAX:
            _QUERY_CACHE.popitem(last=False)
    return emb


@dataclass
class Hit:
    """One search result: a usable image of the run."""

    rank: int
    row: int  # feature row
    name: str  # display name (Run.image_names: the user's own file name for an upload)
    path: str  # path as scanned (relative to the images folder)
    abs_path: str
    similarity: float  # cosine with the query
    cluster: int  # -1 = held out of mining
    # the cluster's name label ("tench", "tench (rejected)"; clusterview.cluster_names), None for
    # held-out images; "excluded (not ID)" for images the user marked not ID
    cluster_concept: str | None
    excluded: bool = False  # marked not ID by the user

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def place(self) -> str:
        """Where the image stands: 'held out', 'excluded (not ID)' or 'cluster 3 (tench)'."""
        if self.excluded:
            return clusterview.EXCLUDED
        return clusterview.HELD_OUT if self.cluster < 0 else f"cluster {self.cluster} ({self.cluster_concept})"


def _hits(run: Run, rows: np.ndarray, sims: np.ndarray) -> list[Hit]:
    records = {r["row"]: r for r in run.image_records(ok_only=True)}
    cids, excluded = run.cluster_ids(), run.excluded_mask()
    places = clusterview.place_labels(run, rows)
    names = run.image_names(rows)
    out = []
    for rank, (row, sim, name, place) in enumerate(zip(rows.tolist(), sims.tolist(), names, places), start=1):
        rec = records.get(row, {})
        cid = int(cids[row])
        concept = None if place == clusterview.HELD_OUT else place
        out.append(Hit(rank, row, name, str(rec.get("path", "")), str(rec.get("abs_path", "")), float(sim), cid,
                       concept, bool(excluded[row])))
    return out


def search_text(run: Run, text: str, k: int = 12, *, encoder=None) -> list[Hit]:
    """The ``k`` images of the run nearest the text ``text`` (best first)."""
    query = embed_query(run, text, encoder)
    rows, sims = feature_index(run).nearest(query, _check_k(k))
    return _hits(run, rows, sims)


def search_image(run: Run, row: int, k: int = 12) -> list[Hit]:
    """The ``k`` images nearest image ``row`` of the run (itself excluded), best first."""
    index = feature_index(run)
    if not 0 <= int(row) < len(index):
        raise ClusterMineError(f"image row {row} out of range: the run has {len(index)} usable images")
    rows, sims = index.nearest(index.unit[int(row)], _check_k(k), exclude=np.array([int(row)]))
    return _hits(run, rows, sims)


PICKER_MAX = 2_000
"""Up to this many images a picker lists them all; above, it lists the matches of a typed filter."""

def row_of_path(run: Run, path: str) -> int:
    """Feature row of a run image given its scanned (relative) or absolute path (columnar lookup: no
    per-image Python objects, so it stays fast on 1M+ image runs)."""
    import pyarrow.compute as pc

    table = run.ok_rows_table()
    for column in ("path", "abs_path"):
        i = pc.index(table[column], str(path)).as_py()
        if i >= 0:
            return int(table["row"][i].as_py())
    raise ClusterMineError(f"{path}: not a usable image of run {run.run_id}")


def find_image_paths(run: Run, query: str = "", limit: int = 200) -> tuple[list[str], int]:
    """Scanned paths of the run's usable images containing ``query`` (case-insensitive; all when
    empty), in feature-row order: (the first ``limit`` of them, how many match in all)."""
    import pyarrow.compute as pc

    paths = run.ok_rows_table()["path"]
    if query.strip():
        paths = paths.filter(pc.match_substring(paths, query.strip(), ignore_case=True))
    return paths.slice(0, max(0, int(limit))).to_pylist(), len(paths)


def _check_k(k: int) -> int:
    if int(k) < 1:
        raise ClusterMineError(f"k must be at least 1, got {k}")
    return min(int(k), 1000)

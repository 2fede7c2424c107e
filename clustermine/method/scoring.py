"""The ClusterMine OOD score, the oracle baselines (MCM, NegLabel + NegMining) and the Detector.

Score (METHOD.md §4.1), computed in log space: with z_w(x) = cos(x, w) / τ,

    log S(x) = LSE_{w ∈ Y_pos} z_w(x) − LSE_{w ∈ V} z_w(x)          (V = Y_pos ∪ Y_neg)

S(x) ∈ (0, 1] is the softmax mass on the positive concepts; **higher = more in-distribution**.
Y_neg = V minus Y_pos, so a rejected concept becomes a negative. τ is the run's (stored in its config;
the default depends on the encoder: :func:`clustermine.core.config.default_tau`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clustermine.core.config import default_tau
from clustermine.core.linalg import logsumexp
from clustermine.core.errors import ClusterMineError, RunError
from clustermine.method.metrics import threshold_at_tpr
from clustermine.core.storage import atomic_save_npy, atomic_write_json
from clustermine.core.config import DEFAULT_TPR
from clustermine.method.mining import corpus_lse_rows

DETECTOR_FORMAT = 1


def _lse_rows(logits: np.ndarray) -> np.ndarray:
    return logsumexp(logits.astype(np.float64), axis=1)


def corpus_logsumexp(image_features: np.ndarray, text_embeddings: np.ndarray, tau: float,
                     chunk_size: int = 16384, image_chunk_size: int = 4096) -> np.ndarray:
    """LSE over all rows of ``text_embeddings`` of cos/τ, per image, chunked. float64 [N].

    ``image_features`` may be float16 or memory-mapped (rows are cast ``image_chunk_size`` at a
    time); the same arithmetic as the vote's fused LSE (:func:`clustermine.method.mining.corpus_lse_rows`)."""
    import torch


    texts = torch.from_numpy(np.ascontiguousarray(text_embeddings, dtype=np.float32))
    n = image_features.shape[0]
    out = np.full(n, -np.inf)
    for lo in range(0, n, image_chunk_size):
        feats = torch.from_numpy(np.ascontiguousarray(image_features[lo:lo + image_chunk_size], dtype=np.float32))
        part = np.full(feats.shape[0], -np.inf)
        for start in range(0, texts.shape[0], chunk_size):
            part = np.logaddexp(part, corpus_lse_rows(feats @ texts[start:start + chunk_size].T, tau))
        out[lo:lo + image_chunk_size] = part
    return out


def log_scores(image_features: np.ndarray, text_embeddings: np.ndarray, positive_idx: np.ndarray,
               tau: float, n_groups: int = 1, seed: int = 0, *, corpus_lse: np.ndarray | None = None) -> np.ndarray:
    """log S(x) for every image (float64 [N]); ``positive_idx`` are rows of ``text_embeddings``.

    ``corpus_lse`` float64 [N]: the images' :func:`corpus_logsumexp` over ``text_embeddings`` at ``tau``,
    when the caller already has it (it depends on the corpus, not on Y_pos); ignored with ``n_groups > 1``.

    ``n_groups > 1`` is NegLabel's grouping: the negatives are permuted with ``seed``, split into
    equal groups, each group is scored against the positives, and the scores S_g are averaged.
    """
    positive_idx = np.unique(np.asarray(positive_idx, dtype=np.int64))
    if positive_idx.size == 0:
        raise ClusterMineError("no positive concepts: accept or add at least one concept before scoring")
    feats = np.asarray(image_features, dtype=np.float32)
    pos_lse = _lse_rows(feats @ text_embeddings[positive_idx].T / tau)
    if n_groups <= 1:
        # Y_pos ⊆ V, so log S ≤ 0 exactly; the two separate float32 products can overshoot by ~1e-6.
        if corpus_lse is None:
            corpus_lse = corpus_logsumexp(feats, text_embeddings, tau)
        elif np.shape(corpus_lse) != (feats.shape[0],):
            raise ValueError("corpus_lse must hold one value per image")
        return np.minimum(pos_lse - corpus_lse, 0.0)
    neg_idx = np.setdiff1d(np.arange(text_embeddings.shape[0]), positive_idx)
    neg_idx = np.random.default_rng(seed).permutation(neg_idx)
    usable = (neg_idx.size // n_groups) * n_groups
    groups = neg_idx[:usable].reshape(n_groups, -1)
    group_scores = []
    for g in groups:
        neg_lse = _lse_rows(feats @ text_embeddings[g].T / tau)
        group_scores.append(np.exp(pos_lse - np.logaddexp(pos_lse, neg_lse)))
    return np.log(np.mean(group_scores, axis=0))


def mcm_scores(image_features: np.ndarray, class_embeddings: np.ndarray, tau: float = 1.0) -> np.ndarray:
    """MCM (oracle baseline): max softmax over the true class names' similarities / τ."""
    logits = np.asarray(image_features, dtype=np.float64) @ np.asarray(class_embeddings, dtype=np.float64).T / tau
    return np.exp(logits.max(axis=1) - logsumexp(logits, axis=1))


def neg_mining(positive_embeddings: np.ndarray, candidate_embeddings: np.ndarray,
               percentile: float = 0.95, fraction: float = 0.15, chunk_size: int = 8192) -> np.ndarray:
    """NegLabel's NegMining: keep the ``fraction`` of candidates least similar to the positives,
    similarity measured as the ``percentile`` over positives of cos(candidate, positive).
    Returns candidate row indices (ascending similarity)."""
    pos = np.asarray(positive_embeddings, dtype=np.float32)
    d = np.empty(candidate_embeddings.shape[0], dtype=np.float32)
    for start in range(0, candidate_embeddings.shape[0], chunk_size):
        sims = np.asarray(candidate_embeddings[start:start + chunk_size], dtype=np.float32) @ pos.T
        d[start:start + sims.shape[0]] = np.quantile(sims, percentile, axis=1)
    n_keep = max(1, int(round(fraction * d.size)))
    return np.argsort(d, kind="stable")[:n_keep]


def neglabel_scores(image_features: np.ndarray, positive_embeddings: np.ndarray,
                    negative_embeddings: np.ndarray, tau: float, n_groups: int = 1) -> np.ndarray:
    """NegLabel score (oracle baseline when the positives are true class names): log S over
    positives ∪ negatives."""
    text = np.concatenate([positive_embeddings, negative_embeddings]).astype(np.float32)
    return log_scores(image_features, text, np.arange(len(positive_embeddings)), tau=tau, n_groups=n_groups)


def threshold_rule(tpr: float, n: int, held_out: bool = True) -> str:
    """How a threshold was set, in words: the one text for the detector, the CLI and the app.
    ``held_out`` False: the run held no image out, so the ``n`` mining images were used."""
    if held_out:
        return f"log-score at {tpr:.0%} TPR on {n} held-out ID images"
    return f"log-score at {tpr:.0%} TPR on the {n} mining images (this run has no held-out images)"


@dataclass
class Detector:
    """Everything production scoring needs: the vocabulary V with text embeddings, which rows are
    positive (Y_pos), τ, and the fingerprint of the encoder that made the embeddings.

    ``text_embeddings`` float32 [M, D] (L2-normalised); ``positive_idx`` int [P] rows of it.
    Features from an encoder with another fingerprint are refused (:meth:`check_encoder`).
    """

    concepts: list[str]
    text_embeddings: np.ndarray
    positive_idx: np.ndarray
    tau: float | None = None  # None: the encoder's default (config.default_tau(encoder_spec))
    encoder_spec: str = "offline"
    encoder_fingerprint: dict = field(default_factory=dict)
    encoder_fingerprint_id: str = ""
    template: str = "{}"
    threshold: float | None = None  # log-score threshold; None = not calibrated
    threshold_rule: str = ""
    _corpus_lse_cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.tau = default_tau(self.encoder_spec) if self.tau is None else float(self.tau)
        self.positive_idx = np.unique(np.asarray(self.positive_idx, dtype=np.int64))
        if self.text_embeddings.shape[0] != len(self.concepts):
            raise ValueError("one text embedding per concept is required")

    @property
    def positive_concepts(self) -> list[str]:
        return [self.concepts[i] for i in self.positive_idx]

    def check_encoder(self, encoder) -> None:
        """Raise if ``encoder`` is not the one the text embeddings were made with."""
        if self.encoder_fingerprint_id and encoder.fingerprint_id != self.encoder_fingerprint_id:
            raise ClusterMineError(
                f"encoder mismatch: this detector was built with {self.encoder_spec} "
                f"(fingerprint {self.encoder_fingerprint_id}), got {encoder.spec} ({encoder.fingerprint_id}); "
                "features from different encoders are never mixed")

    def log_scores(self, image_features: np.ndarray, corpus_lse: np.ndarray | None = None) -> np.ndarray:
        """log S for each row of ``image_features`` (float32 [N, D]) → float64 [N]; ``corpus_lse``: the
        rows' precomputed denominator (:func:`corpus_logsumexp` over this detector's embeddings and τ)."""
        return log_scores(image_features, self.text_embeddings, self.positive_idx, self.tau, corpus_lse=corpus_lse)

    def scores(self, image_features: np.ndarray) -> np.ndarray:
        """S = exp(log S) ∈ (0, 1]."""
        return np.exp(self.log_scores(image_features))

    def is_id(self, image_features: np.ndarray) -> np.ndarray:
        if self.threshold is None:
            raise ClusterMineError("the detector has no calibrated threshold")
        return self.log_scores(image_features) >= self.threshold

    def explain(self, image_features: np.ndarray, top: int = 5) -> list[dict]:
        """Per image: log score, and the ``top`` most similar positive and negative concepts."""
        feats = np.asarray(image_features, dtype=np.float32)
        ls = self.log_scores(feats)
        pos_mask = np.zeros(len(self.concepts), dtype=bool)
        pos_mask[self.positive_idx] = True
        out = []
        for i, f in enumerate(feats):
            sims = self.text_embeddings @ f
            pos_rows = self.positive_idx[np.argsort(-sims[self.positive_idx], kind="stable")[:top]]
            neg_sims = np.where(pos_mask, -np.inf, sims)
            k = min(top, int((~pos_mask).sum()))
            neg_rows = np.argpartition(-neg_sims, k - 1)[:k] if k else np.array([], dtype=int)
            neg_rows = neg_rows[np.argsort(-neg_sims[neg_rows], kind="stable")]
            out.append({
                "log_score": float(ls[i]),
                "score": float(np.exp(ls[i])),
                "top_positive": [(self.concepts[r], float(sims[r])) for r in pos_rows],
                "top_negative": [(self.concepts[r], float(sims[r])) for r in neg_rows],
            })
        return out

    def calibrate(self, id_features: np.ndarray, tpr: float = DEFAULT_TPR) -> float:
        """Set the threshold so that ``tpr`` of the given (held-out ID) images are accepted."""
        ls = self.log_scores(id_features)
        self.threshold = threshold_at_tpr(ls, tpr)
        self.threshold_rule = threshold_rule(tpr, ls.size)
        return self.threshold

    # ------------------------------------------------------------------ persistence
    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``detector.json`` + ``text_embeddings.npy`` (float16) + ``positive_concepts.txt``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_save_npy(folder / "text_embeddings.npy", self.text_embeddings.astype(np.float16))
        (folder / "positive_concepts.txt").write_text("\n".join(self.positive_concepts) + "\n", encoding="utf-8")
        atomic_write_json(folder / "detector.json", {
            "format": DETECTOR_FORMAT, "tau": self.tau, "concepts": self.concepts,
            "positive_idx": self.positive_idx.tolist(), "encoder_spec": self.encoder_spec,
            "encoder_fingerprint": self.encoder_fingerprint, "encoder_fingerprint_id": self.encoder_fingerprint_id,
            "template": self.template, "threshold": self.threshold, "threshold_rule": self.threshold_rule,
        })
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "Detector":
        folder = Path(folder)
        meta_path, emb_path = folder / "detector.json", folder / "text_embeddings.npy"
        for p in (meta_path, emb_path):
            if not p.is_file():
                raise RunError(f"{p}: missing; not a detector bundle")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            emb = np.load(emb_path, allow_pickle=False).astype(np.float32)
        except (ValueError, OSError) as exc:
            raise RunError(f"{folder}: detector bundle is corrupt ({exc})") from exc
        if meta.get("format") != DETECTOR_FORMAT:
            raise RunError(f"{meta_path}: unsupported detector format {meta.get('format')!r}")
        return cls(concepts=list(meta["concepts"]), text_embeddings=emb, positive_idx=np.array(meta["positive_idx"]),
                   tau=float(meta["tau"]), encoder_spec=meta.get("encoder_spec", ""),
                   encoder_fingerprint=meta.get("encoder_fingerprint", {}),
                   encoder_fingerprint_id=meta.get("encoder_fingerprint_id", ""), template=meta.get("template", "{}"),
                   threshold=meta.get("threshold"), threshold_rule=meta.get("threshold_rule", ""))


class WhatIfScorer:
    """Fast re-scoring of a fixed image set under changing concept sets (concept edits).

    The LSE over the base vocabulary (the corpus) does not depend on which concepts are positive,
    so it is computed once; a re-score then costs N × (|Y_pos| + |added|) dot products. User-added
    concepts (``extra_embeddings``, rows M.. of the vocabulary) join the denominator on the fly.
    """

    #: Images per block of a re-score: the float64 logits of a block of 8,192 images x 1,000 positives take
    #: 64 MB (memory independent of N).
    BLOCK = 8192

    def __init__(self, image_features: np.ndarray, base_embeddings: np.ndarray, tau: float,
                 base_lse: np.ndarray | None = None) -> None:
        """``image_features`` [N, D]: float32, or float16 (e.g. a run's memory-mapped features, kept as
        they are and cast block by block). ``base_lse`` float64 [N]: a precomputed
        ``corpus_logsumexp`` of these features (e.g. from disk)."""
        self.image_features = (image_features if np.asarray(image_features[:0]).dtype == np.float16
                               else np.asarray(image_features, dtype=np.float32))
        self.base_embeddings = base_embeddings
        self.tau = tau
        if base_lse is not None and np.shape(base_lse) != (self.image_features.shape[0],):
            raise ValueError("base_lse must hold one value per image")
        self.base_lse = (np.asarray(base_lse, dtype=np.float64) if base_lse is not None
                         else corpus_logsumexp(self.image_features, base_embeddings, tau))

    def log_scores(self, positive_idx: np.ndarray, extra_embeddings: np.ndarray | None = None,
                   rows: np.ndarray | None = None) -> np.ndarray:
        """log S with ``positive_idx`` indexing the base rows followed by ``extra_embeddings``;
        ``rows``: score only these images (int [R]; default all) → float64 [R]."""
        positive_idx = np.unique(np.asarray(positive_idx, dtype=np.int64))
        n_base = self.base_embeddings.shape[0]
        index = np.arange(self.image_features.shape[0]) if rows is None else np.asarray(rows, dtype=np.int64)
        if positive_idx.size == 0:
            return np.full(len(index), -np.inf)
        extra = None
        if extra_embeddings is not None and len(extra_embeddings):
            extra = np.asarray(extra_embeddings, dtype=np.float32)
        parts = [np.asarray(self.base_embeddings[positive_idx[positive_idx < n_base]], dtype=np.float32)]
        if extra is not None:
            parts.append(extra[positive_idx[positive_idx >= n_base] - n_base])
        pos_emb = np.concatenate(parts)
        out = np.empty(len(index), dtype=np.float64)
        contiguous = rows is None
        for lo in range(0, len(index), self.BLOCK):
            sel = index[lo:lo + self.BLOCK]
            block = self.image_features[lo:lo + len(sel)] if contiguous else self.image_features[sel]
            feats = np.asarray(block, dtype=np.float32)
            all_lse = self.base_lse[sel]
            if extra is not None:
                all_lse = np.logaddexp(all_lse, _lse_rows(feats @ extra.T / self.tau))
            out[lo:lo + len(sel)] = np.minimum(_lse_rows(feats @ pos_emb.T / self.tau) - all_lse, 0.0)
        return out

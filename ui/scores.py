"""Scores under the current concept edits, for the what-if panel, the map and the scoring page.

The expensive part of the ClusterMine score is the log-sum-exp over the whole corpus (118K
concepts); it does not depend on which concepts are positive, so it is computed once per image
and cached on disk in ``<run>/projections/corpus_lse.npy`` (keyed by the versions of
``features.npy`` / ``text_embeddings.npy`` and τ). After that, re-scoring any image set under a new
concept set is a few hundred dot products per image (:class:`clustermine.scoring.WhatIfScorer`).
Convention everywhere: higher score = more in-distribution.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import streamlit as st

from clustermine.metrics import ood_metrics, threshold_at_tpr
from clustermine.runs import Run
from clustermine.scoring import WhatIfScorer, corpus_logsumexp
from clustermine.storage import atomic_save_npy, atomic_write_json

from . import cache

ProgressFn = Callable[[int, int], None]


# ------------------------------------------------------------------------------------ corpus LSE cache
def _lse_files(run: Run) -> tuple[Path, Path]:
    folder = run.path / "projections"
    return folder / "corpus_lse.npy", folder / "corpus_lse.json"


def _lse_stamp(run: Run) -> dict:
    s = {n: list(cache._stat_key(run.path / n)) for n in ("features.npy", "text_embeddings.npy")}
    s["tau"] = run.tau
    return s


def corpus_lse(run: Run, rows: np.ndarray, progress: ProgressFn | None = None, chunk: int = 256) -> np.ndarray:
    """log-sum-exp over the corpus of cos/τ for feature ``rows`` (float64), cached on disk."""
    feats, text = run.features(), run.text_embeddings()
    npy, meta = _lse_files(run)
    stamp = _lse_stamp(run)
    lse = None
    try:
        if json.loads(meta.read_text()) == stamp:
            lse = np.load(npy, allow_pickle=False)
            if lse.shape != (feats.shape[0],):
                lse = None
    except (OSError, ValueError):
        lse = None
    if lse is None:
        lse = np.full(feats.shape[0], np.nan)
    rows = np.asarray(rows, dtype=np.int64)
    missing = rows[np.isnan(lse[rows])]
    for start in range(0, len(missing), chunk):
        part = missing[start:start + chunk]
        lse[part] = corpus_logsumexp(feats[part], text, run.tau)
        if progress:
            progress(min(start + chunk, len(missing)), len(missing))
    if len(missing):
        try:
            atomic_save_npy(npy, lse)
            atomic_write_json(meta, stamp)
        except OSError:
            pass
    return lse[rows]


def lse_ready(run: Run, rows: np.ndarray) -> bool:
    """True when the corpus LSE of all ``rows`` is cached (scoring them is instant)."""
    npy, meta = _lse_files(run)
    try:
        if json.loads(meta.read_text()) != _lse_stamp(run):
            return False
        lse = np.load(npy, allow_pickle=False)
        return bool(np.isfinite(lse[np.asarray(rows, dtype=np.int64)]).all())
    except (OSError, ValueError, IndexError):
        return False


def scorer_from_lse(features: np.ndarray, text_embeddings: np.ndarray, tau: float, base_lse: np.ndarray) -> WhatIfScorer:
    """A WhatIfScorer whose corpus LSE comes from the cache instead of being recomputed.
    (Engine wish: a ``base_lse=`` argument to ``WhatIfScorer``.)"""
    s = WhatIfScorer.__new__(WhatIfScorer)
    s.image_features = np.asarray(features, dtype=np.float32)
    s.base_embeddings = text_embeddings
    s.tau = tau
    s.base_lse = np.asarray(base_lse, dtype=np.float64)
    return s


# ------------------------------------------------------------------------------------ held-out ID
@dataclass
class HeldOut:
    scorer: WhatIfScorer
    rows: np.ndarray  # feature rows
    is_holdout: bool  # False: tiny run without held-out images, mining images used instead


def heldout_rows(run: Run) -> tuple[np.ndarray, bool]:
    mask = run.holdout_mask()
    if mask.any():
        return np.flatnonzero(mask), True
    return np.arange(len(mask)), False


@st.cache_resource(max_entries=4, show_spinner=False)
def _heldout(path: str, stamp: str) -> HeldOut:
    run = cache.load_run(path)
    rows, is_hold = heldout_rows(run)
    lse = corpus_lse(run, rows)
    return HeldOut(scorer_from_lse(run.features()[rows], run.text_embeddings(), run.tau, lse), rows, is_hold)


def heldout(run: Run) -> HeldOut:
    """The what-if scorer over the run's held-out ID images (cached per run; first call computes
    the corpus LSE of those images, later ones read it from disk)."""
    return _heldout(str(run.path), json.dumps(_lse_stamp(run)))


def mined_positive_rows(run: Run) -> np.ndarray:
    """Vocabulary rows of the concepts as mined (before any edit)."""
    return np.array(sorted({m.index for m in run.mined_concepts()}), dtype=np.int64)


def threshold_rule(tpr: float, n: int, is_holdout: bool) -> str:
    if is_holdout:
        return f"log-score at {tpr:.0%} TPR on {n} held-out ID images"
    return f"log-score at {tpr:.0%} TPR on the {n} mining images (this run has no held-out images)"


@dataclass
class WhatIf:
    n: int
    tpr: float
    before: np.ndarray  # held-out log scores with the mined concepts
    after: np.ndarray  # ... with the current concepts
    threshold: float  # calibrated on ``before`` at ``tpr`` (the mined detector's operating point)
    threshold_after: float  # re-calibrated on ``after``
    far_before: float
    far_after: float
    rule: str
    n_pos_before: int
    n_pos_after: int


def what_if(run: Run, tpr: float = 0.95) -> WhatIf:
    """Held-out ID scores before (mined set) and after (current set) the concept edits, and the
    false-alarm rate (ID flagged OOD) of each at the mined detector's threshold."""
    h = heldout(run)
    _, extra, pos_now = run.vocabulary()
    mined = mined_positive_rows(run)
    before = h.scorer.log_scores(mined)
    after = h.scorer.log_scores(pos_now, extra)
    thr = threshold_at_tpr(before, tpr) if np.isfinite(before).any() else float("-inf")
    thr_after = threshold_at_tpr(after, tpr) if np.isfinite(after).any() else float("-inf")
    return WhatIf(len(h.rows), tpr, before, after, thr, thr_after, float(np.mean(before < thr)),
                  float(np.mean(after < thr)), threshold_rule(tpr, len(h.rows), h.is_holdout),
                  len(mined), len(pos_now))


def current_threshold(run: Run, tpr: float) -> tuple[float | None, str]:
    """Threshold of the current concept set at ``tpr`` on held-out ID images, and its rule."""
    h = heldout(run)
    _, extra, pos_now = run.vocabulary()
    if len(pos_now) == 0:
        return None, "no positive concepts: accept or add at least one"
    ls = h.scorer.log_scores(pos_now, extra)
    return threshold_at_tpr(ls, tpr), threshold_rule(tpr, len(h.rows), h.is_holdout)


# ------------------------------------------------------------------------------------ other image sets
def encode_folder(folder: str | Path, encoder, *, limit: int = 500, progress: ProgressFn | None = None):
    """Scan and encode up to ``limit`` images of ``folder`` (features cached on disk by content).

    Returns ``(records of the encoded images, features float32 [n, D], skipped [(path, reason)])``.
    """
    from clustermine.images import scan_images
    from clustermine.pipeline import FeatureCache, ProgressTracker, encode_records

    records = scan_images(folder)
    ok = [r for r in records if r.ok]
    skipped = [(r.path, r.reason) for r in records if not r.ok]
    if len(ok) > limit:
        skipped += [(r.path, f"over the limit of {limit} images per sample") for r in ok[limit:]]
        ok = ok[:limit]
    tracker = ProgressTracker(None, (lambda _s, d, t: progress(d, t)) if progress else None)
    feats, errors = encode_records(encoder, ok, cache=FeatureCache(encoder.fingerprint_id), tracker=tracker)
    skipped += list(errors.items())
    return [r for r in ok if r.status == "ok"], feats, skipped


@st.cache_resource(max_entries=4, show_spinner=False)
def _scorer_for(key: str, _features: np.ndarray, _text: np.ndarray, tau: float) -> WhatIfScorer:
    return WhatIfScorer(_features, _text, tau)


def sample_scorer(run: Run, features: np.ndarray) -> WhatIfScorer:
    """A what-if scorer over an arbitrary image sample (e.g. OOD images), cached by content."""
    from clustermine.projection import features_key

    return _scorer_for(f"{run.path}|{features_key(features)}", features, run.text_embeddings(), run.tau)


def ood_comparison(run: Run, ood: WhatIfScorer) -> dict:
    """AUROC / FPR95 of held-out ID vs the OOD sample, with the mined and the current concepts."""
    h = heldout(run)
    _, extra, pos_now = run.vocabulary()
    mined = mined_positive_rows(run)
    out = {}
    for name, rows, ex in (("before", mined, None), ("after", pos_now, extra)):
        id_s, ood_s = h.scorer.log_scores(rows, ex), ood.log_scores(rows, ex)
        if not (np.isfinite(id_s).all() and np.isfinite(ood_s).all()):
            out[name] = None
            continue
        out[name] = ood_metrics(id_s, ood_s)
    return out


# ------------------------------------------------------------------------------------ new images
@st.cache_resource(max_entries=2, show_spinner=False)
def _detector(path: str, edits: tuple, meta: tuple):
    return cache.load_run(path).detector(calibrate=False)


def detector_now(run: Run):
    """``run.detector()`` for the current edits (never reused across edits), uncalibrated."""
    return _detector(str(run.path), cache.edits_key(run), cache._stat_key(run.path / "run.json"))


def score_features(run: Run, features: np.ndarray, tpr: float, top: int = 3) -> tuple[list[dict], float | None, str]:
    """Per image: log score, score, ID/OOD verdict at the threshold for ``tpr``, top positive and
    negative concepts. Returns ``(rows, threshold, rule)``."""
    thr, rule = current_threshold(run, tpr)
    if thr is None or not len(features):
        return [], thr, rule
    det = detector_now(run)
    out = det.explain(features, top=top)
    for e in out:
        e["is_id"] = bool(e["log_score"] >= thr)
    return out, thr, rule


def all_scores(run: Run, progress: ProgressFn | None = None) -> np.ndarray:
    """Log scores of every image of the run with the current concepts (LSE cached on disk)."""
    rows = np.arange(run.features().shape[0])
    lse = corpus_lse(run, rows, progress)
    _, extra, pos_now = run.vocabulary()
    return scorer_from_lse(run.features(), run.text_embeddings(), run.tau, lse).log_scores(pos_now, extra)

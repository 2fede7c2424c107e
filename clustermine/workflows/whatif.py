"""Scores under the current concept edits: what-if on held-out ID images, OOD comparison, the
calibrated threshold, and the corpus-LSE cache that makes them fast.

The expensive part of the ClusterMine score is the log-sum-exp over the whole corpus V (118K
concepts for WordNet); it does not depend on which concepts are positive, so it is computed once
per image and cached in the run (``projections/corpus_lse.npy``, with a stamp of the
``features.npy`` / ``text_embeddings.npy`` versions and τ it was computed from). Re-scoring then
costs N × (|Y_pos| + |added|) dot products (:class:`~clustermine.method.scoring.WhatIfScorer`).

The default threshold (:func:`current_threshold`, used by ``Run.detector``, the CLI and the app) is
:func:`calibration`: the order-statistic rule of :mod:`clustermine.method.calibration` on cross-fitted
mining scores pooled with the held-out scores (:func:`calibration_set`, cached in the run as
``projections/calibration.npz``).
Convention everywhere: higher score = more in-distribution. Nothing here imports a UI.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from clustermine.method import calibration as _cal
from clustermine.method.metrics import ood_metrics, threshold_at_tpr
from clustermine.store import layout
from clustermine.method.scoring import Detector, WhatIfScorer, corpus_logsumexp, threshold_rule
from clustermine.core.config import DEFAULT_TPR
from clustermine.core.storage import atomic_save_npy, atomic_save_npz, atomic_write_json
from clustermine.workflows.encoding import FeatureCache, ProgressTracker, encode_records
from clustermine.method.images import scan_images

if TYPE_CHECKING:
    from clustermine.store.run import Run

ProgressFn = Callable[[int, int], None]

__all__ = ["Calibration", "CalibrationSet", "HeldOut", "WhatIf", "all_scores", "calibration", "calibration_set",
           "calibration_warning", "corpus_lse", "current_threshold", "encode_folder", "heldout", "heldout_rows",
           "lse_ready", "lse_stamp", "not_drawn", "store_corpus_lse", "ood_comparison", "sample_scorer",
           "sampling_note", "score_features", "stratified_sample", "threshold_rule", "what_if", "SAMPLE_LIMIT",
           "SAMPLE_SEED"]


# ------------------------------------------------------------------------------------ corpus LSE cache
def lse_stamp(run: Run) -> dict:
    """What the cached corpus LSE depends on: the versions of the features and text embeddings, τ."""
    stamp: dict = {n: list(layout.file_stamp(run.file(n))) for n in (layout.FEATURES, layout.TEXT_EMBEDDINGS)}
    stamp["tau"] = run.tau
    return stamp


def _read_lse_cache(run: Run, n_rows: int, stamp: dict) -> np.ndarray | None:
    npy, meta = layout.corpus_lse_files(run.path)
    try:
        if json.loads(meta.read_text(encoding="utf-8")) != stamp:
            return None
        lse = np.load(npy, allow_pickle=False)
    except (OSError, ValueError):
        return None
    return lse.astype(np.float64) if lse.shape == (n_rows,) else None


def corpus_lse(run: Run, rows: np.ndarray, progress: ProgressFn | None = None, chunk: int = 256) -> np.ndarray:
    """LSE over the corpus of cos/τ for feature ``rows`` (int [R]) → float64 [R].

    Rows already in the run's cache are read; the others are computed ``chunk`` images at a time
    (``progress(done, total)`` after each) and added to the cache. The cache is discarded when the
    features, the text embeddings or τ change; an unwritable run folder only loses the cache.
    """
    feats, text = run.feature_matrix(), run.text_embeddings()
    stamp = lse_stamp(run)
    lse = _read_lse_cache(run, feats.shape[0], stamp)
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
        npy, meta = layout.corpus_lse_files(run.path)
        try:
            atomic_save_npy(npy, lse)
            atomic_write_json(meta, stamp)
        except OSError:
            pass
    return lse[rows]


def store_corpus_lse(run: Run, lse: np.ndarray) -> None:
    """Cache the corpus LSE float64 [N_ok] of every image (computed by the vote's fused pass)."""
    npy, meta = layout.corpus_lse_files(run.path)
    atomic_save_npy(npy, np.asarray(lse, dtype=np.float64))
    atomic_write_json(meta, lse_stamp(run))


def lse_ready(run: Run, rows: np.ndarray) -> bool:
    """True when the corpus LSE of all ``rows`` is cached (scoring them is instant)."""
    lse = _read_lse_cache(run, run.n_images(), lse_stamp(run))
    try:
        return lse is not None and bool(np.isfinite(lse[np.asarray(rows, dtype=np.int64)]).all())
    except IndexError:
        return False


# ------------------------------------------------------------------------------------ held-out ID
@dataclass
class HeldOut:
    """The held-out ID images of a run, ready to be re-scored under any concept set."""

    scorer: WhatIfScorer
    rows: np.ndarray  # int64 feature rows
    is_holdout: bool  # False: tiny run without held-out images, mining images used instead


def run_detector(run: Run, *, calibrate: bool = True, tpr: float = DEFAULT_TPR) -> Detector:
    """The :class:`Detector` of ``run``'s current concepts (edits applied). With ``calibrate`` its
    threshold is the calibrated one for target ``tpr`` (cross-fitted + held-out ID images,
    order-statistic rule: :func:`current_threshold`). The one scoring path: score, evaluate,
    what-if, calibration, compare, report and export all build their detector here."""
    vocab, extra_emb, pos_rows = run.vocabulary()
    emb = run.text_embeddings()
    if len(extra_emb):
        emb = np.concatenate([emb, extra_emb])
    enc = run.meta.get("encoder") or {}
    det = Detector(concepts=vocab, text_embeddings=emb, positive_idx=pos_rows, tau=run.tau,
                   encoder_spec=enc.get("spec", ""), encoder_fingerprint=enc.get("fingerprint", {}),
                   encoder_fingerprint_id=enc.get("fingerprint_id", ""),
                   template=run.config.get("template") or "{}")
    if calibrate and len(pos_rows):
        det.threshold, det.threshold_rule = current_threshold(run, tpr)
    return det


def what_if_scorer(run: Run, features: np.ndarray | None = None) -> WhatIfScorer:
    """A :class:`WhatIfScorer` over ``features`` float32 [N, D] (default: the held-out ID images,
    whose corpus LSE is cached in the run: :func:`heldout`)."""
    if features is None:
        return heldout(run).scorer
    return WhatIfScorer(features, run.text_embeddings(), run.tau)


def export_detector(run: Run, folder: str | Path | None = None) -> Path:
    """Save the calibrated detector of ``run`` (default: ``<run>/detector/``); returns the folder."""
    return run_detector(run).save(Path(folder) if folder else layout.detector_dir(run.path))


def heldout_rows(run: Run) -> tuple[np.ndarray, bool]:
    """Feature rows of the held-out images, or of all images when the run holds none out."""
    mask = run.holdout_mask()
    if mask.any():
        return np.flatnonzero(mask), True
    return np.arange(len(mask)), False


#: The what-if re-scores at most this many held-out images (a fixed random sample above it): the
#: share of them flagged is then known to within ~±0.3 points (binomial, 95 %), and a re-score
#: after each concept edit stays well under a second on a paper-scale run (128K held-out images
#: x 1,000 positives take ~3.7 s on 2 cores). The threshold itself is calibrated on every image.
WHATIF_MAX_ROWS = 20_000


def heldout(run: Run, max_rows: int | None = None) -> HeldOut:
    """The what-if scorer over the run's held-out ID images (their corpus LSE from the run's cache),
    or a fixed random sample (seeded by the run's seed, sorted) of ``max_rows`` of them
    (default :data:`WHATIF_MAX_ROWS`)."""
    rows, is_hold = heldout_rows(run)
    limit = WHATIF_MAX_ROWS if max_rows is None else int(max_rows)
    if len(rows) > limit:
        rng = np.random.default_rng(int(run.config.get("seed", 0) or 0))
        rows = np.sort(rng.choice(rows, size=limit, replace=False))
    lse = corpus_lse(run, rows)
    return HeldOut(WhatIfScorer(run.feature_matrix()[rows], run.text_embeddings(), run.tau, base_lse=lse), rows, is_hold)


@dataclass
class WhatIf:
    n: int
    tpr: float
    before: np.ndarray  # held-out log scores with the mined concepts
    after: np.ndarray  # ... with the current concepts
    threshold: float  # calibrated on ``before`` at ``tpr`` (the mined detector's operating point)
    threshold_after: float  # re-calibrated on ``after``
    far_before: float  # share of held-out ID images below ``threshold`` (false alarms), mined concepts
    far_after: float  # ... current concepts, same threshold
    rule: str
    n_pos_before: int
    n_pos_after: int
    # The calibrated operating point (clustermine.method.calibration): threshold of the mined concepts by the
    # order-statistic rule on the cross-fitted + held-out calibration scores, and the ID false alarms
    # of each concept set judged by thresholds their own fold did not set (see ``Calibration``).
    cal_threshold: float = float("nan")
    cal_far_before: float = float("nan")
    cal_far_after: float = float("nan")
    cal_rule: str = ""
    cal_warning: str | None = None
    n_cal: int = 0


def _threshold(log_scores: np.ndarray, tpr: float) -> float:
    return threshold_at_tpr(log_scores, tpr) if np.isfinite(log_scores).any() else float("-inf")


def what_if(run: Run, tpr: float = DEFAULT_TPR, held: HeldOut | None = None) -> WhatIf:
    """Held-out ID scores before (mined set) and after (current set) the concept edits, and the
    false-alarm rate (ID flagged OOD) of each at the mined detector's threshold."""
    h = held if held is not None else heldout(run)
    _, extra, pos_now = run.vocabulary()
    mined = run.mined_positive_rows()
    before = h.scorer.log_scores(mined)
    after = h.scorer.log_scores(pos_now, extra)
    thr = _threshold(before, tpr)
    wi = WhatIf(len(h.rows), tpr, before, after, thr, _threshold(after, tpr), float(np.mean(before < thr)),
                float(np.mean(after < thr)), threshold_rule(tpr, len(h.rows), h.is_holdout),
                len(mined), len(pos_now))
    cs = calibration_set(run)
    if np.isfinite(cs.mined).any():
        cal = calibration(run, tpr, concepts="mined", cal_set=cs)
        wi.cal_threshold, wi.cal_rule, wi.cal_warning, wi.n_cal = cal.threshold, cal.rule, cal.warning, cal.n
        wi.cal_far_before = cal.false_alarms
        wi.cal_far_after = _cal.crossval_false_alarms(cs.mined, cs.folds, tpr, cal.confidence, judged=cs.current)
    return wi


def current_threshold(run: Run, tpr: float, held: HeldOut | None = None) -> tuple[float | None, str]:
    """Log-score threshold of the current concept set for target ``tpr`` and its rule text
    (:func:`calibration`: order statistic at :data:`~clustermine.method.calibration.DEFAULT_CONFIDENCE` on
    the cross-fitted + held-out calibration scores); ``(None, reason)`` without positive concepts.
    ``held`` is accepted for compatibility and not needed."""
    _, _, pos_now = run.vocabulary()
    if len(pos_now) == 0:
        return None, "no positive concepts: accept or add at least one"
    cal = calibration(run, tpr)
    return cal.threshold, cal.rule


# ------------------------------------------------------------------------------------ calibration
@dataclass
class CalibrationSet:
    """Calibration log scores of a run (clustermine.method.calibration): one per usable image row.

    Mining rows are cross-fitted (scored against the concepts elected without their fold's votes);
    held-out rows are scored against the full concept set. ``mined``: the concepts as mined;
    ``current``: with the user's edits applied by :func:`clustermine.method.calibration.apply_edits`."""

    rows: np.ndarray  # int64 [n]
    folds: np.ndarray  # int64 [n]
    is_holdout: np.ndarray  # bool [n]
    mined: np.ndarray  # float64 [n]
    current: np.ndarray  # float64 [n]
    n_folds: int  # folds actually used: min(requested, number of images)


def _calibration_stamp(run: Run, n_folds: int) -> dict:
    names = (layout.FEATURES, layout.CLUSTER_IDS, layout.VOTES, layout.TEXT_EMBEDDINGS, layout.MINED, layout.EDITS,
             layout.EXCLUSIONS)
    stamp: dict = {n: list(layout.file_stamp(run.file(n))) for n in names}
    stamp.update(tau=run.tau, n_folds=n_folds, seed=int(run.config.get("seed", 0)), format=1)
    return stamp


def _edit_rows(run: Run) -> tuple[np.ndarray, np.ndarray]:
    """Vocabulary rows of the rejected concepts and of the user-added (positive) ones, numbered as
    in :meth:`Run.vocabulary` (corpus rows, then user concepts outside the corpus)."""
    concepts = run.concepts()
    n_base = len(run.vocabulary_base())
    extra_row = {c.text: n_base + j for j, c in enumerate(c for c in concepts if c.corpus_index is None)}

    def row(c):
        return c.corpus_index if c.corpus_index is not None else extra_row[c.text]

    rejected = [row(c) for c in concepts if c.status == "rejected"]
    added = [row(c) for c in concepts if c.source == "user" and c.is_positive]
    return np.array(rejected, dtype=np.int64), np.array(added, dtype=np.int64)


def calibration_set(run: Run, n_folds: int = _cal.N_FOLDS, progress: ProgressFn | None = None) -> CalibrationSet:
    """The run's calibration scores, read from ``projections/calibration.npz`` when its stamp matches
    (features, clusters, votes, embeddings, mined concepts, edit log, exclusions, τ, folds, seed), else computed
    (corpus LSE from the run's cache, then N × |Y_pos| dot products per fold) and stored."""
    npy, meta = layout.calibration_files(run.path)
    stamp = _calibration_stamp(run, n_folds)
    try:
        if json.loads(meta.read_text(encoding="utf-8")) == stamp:
            with np.load(npy, allow_pickle=False) as z:
                return CalibrationSet(z["rows"], z["folds"], z["is_holdout"], z["mined"], z["current"],
                                      len(np.unique(z["folds"])))
    except (OSError, ValueError, KeyError, EOFError):
        pass
    feats = run.feature_matrix()
    n = feats.shape[0]
    lse = corpus_lse(run, np.arange(n), progress)
    scorer = WhatIfScorer(feats, run.text_embeddings(), run.tau, base_lse=lse)
    excluded = run.excluded_mask()
    cids = np.where(excluded, -1, run.cluster_ids())  # images marked "not ID" never vote ...
    top_idx, top_sim = run.votes()
    folds = _cal.fold_ids(n, n_folds, int(run.config.get("seed", 0)))
    voted = _cal.crossfit_positive_rows(cids, top_idx[:, 0], top_sim[:, 0], folds, len(run.vocabulary_base()))
    mined = _cal.crossfit_scores(scorer, cids, folds, voted, run.mined_positive_rows())
    _, extra, pos_now = run.vocabulary()
    rejected, added = _edit_rows(run)
    edited = {f: _cal.apply_edits(v, rejected, added) for f, v in voted.items()}
    current = _cal.crossfit_scores(scorer, cids, folds, edited, pos_now, extra)
    keep = ~excluded[mined.rows]  # ... and never calibrate the threshold
    out = CalibrationSet(mined.rows[keep], mined.folds[keep], mined.is_holdout[keep], mined.scores[keep],
                         current.scores[keep], len(np.unique(mined.folds[keep])))
    try:
        atomic_save_npz(npy, rows=out.rows, folds=out.folds, is_holdout=out.is_holdout, mined=out.mined,
                        current=out.current)
        atomic_write_json(meta, stamp)
    except OSError:
        pass  # a read-only run only loses the cache
    return out


@dataclass
class Calibration:
    """The calibrated threshold of one concept set and what it rests on."""

    tpr: float
    confidence: float
    threshold: float  # log-score units; ID when log score >= threshold
    k: int  # rank of the threshold among the n calibration scores
    n: int  # calibration images (cross-fitted mining + held-out)
    n_mining: int
    n_holdout: int
    n_folds: int
    guaranteed: bool
    min_n: int  # calibration images needed to guarantee ``tpr`` at ``confidence``
    false_alarms: float  # share of calibration ID images below a threshold set without their fold
    rule: str
    warning: str | None
    scores: np.ndarray  # float64 [n] calibration log scores

    def kept_share(self, threshold: float) -> float:
        """Share of the calibration ID images kept as ID (log score >= ``threshold``)."""
        return float(np.mean(self.scores >= threshold)) if self.n else float("nan")


def calibration(run: Run, tpr: float = DEFAULT_TPR, confidence: float = _cal.DEFAULT_CONFIDENCE, *, concepts: str = "current",
                cal_set: CalibrationSet | None = None) -> Calibration:
    """The order-statistic threshold (clustermine.method.calibration) on the run's calibration scores of
    the ``"current"`` (edited) or ``"mined"`` concept set, its rule text, warning and the
    cross-validated ID false-alarm rate."""
    cs = cal_set if cal_set is not None else calibration_set(run)
    scores = cs.current if concepts == "current" else cs.mined
    choice = _cal.choose_threshold(scores, tpr, confidence)
    n_hold = int(cs.is_holdout.sum())
    n_mine = int(scores.size - n_hold)
    rule = (f"order statistic k = {choice.k} of {choice.n} calibration ID images ({n_mine} mining images "
            f"cross-fitted over {cs.n_folds} folds + {n_hold} held-out): {tpr:.0%} TPR with "
            f"{confidence:.0%} confidence" + ("" if choice.guaranteed else " NOT guaranteed (too few images)"))
    far = _cal.crossval_false_alarms(scores, cs.folds, tpr, confidence)
    return Calibration(float(tpr), float(confidence), choice.threshold, choice.k, choice.n, n_mine, n_hold, cs.n_folds,
                       choice.guaranteed, choice.min_n, far, rule, choice.warning, scores)


def calibration_warning(run: Run, tpr: float = DEFAULT_TPR, confidence: float = _cal.DEFAULT_CONFIDENCE) -> str | None:
    """The too-few-calibration-images warning of the current concepts at ``tpr`` (None when fine)."""
    return calibration(run, tpr, confidence).warning


# ------------------------------------------------------------------------------------ other image sets
SAMPLE_LIMIT = 500
"""An image sample (OOD folder of the what-if, the report and compare) is at most this many images."""
SAMPLE_SEED = 0
"""Fixed, so the same folder gives the same sample on every page, in the report and in compare."""
_NOT_DRAWN = "not drawn into the sample of {limit} images"


def _folder_of(path: str) -> str:
    return path.replace("\\", "/").rpartition("/")[0]


def stratified_sample(paths: list[str], limit: int, seed: int = SAMPLE_SEED) -> np.ndarray:
    """Indices (int64, ascending) of a seeded random sample of at most ``limit`` of ``paths``
    (relative paths), stratified over their folders (the images directly in one folder form one
    stratum). Each folder gets a share proportional to its size (largest remainders), and at least
    one image whenever ``limit`` covers every folder, so no folder (e.g. one texture class) is lost.
    All of ``paths`` when there are at most ``limit``; the same seed gives the same sample."""
    n = len(paths)
    if n <= limit:
        return np.arange(n, dtype=np.int64)
    if limit <= 0:
        return np.zeros(0, dtype=np.int64)
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(paths):
        groups.setdefault(_folder_of(p), []).append(i)
    names = sorted(groups)
    sizes = np.array([len(groups[g]) for g in names], dtype=np.int64)
    rng = np.random.default_rng(seed)
    ideal = limit * sizes / n
    floor = 1 if len(names) <= limit else 0
    alloc = np.minimum(np.maximum(np.floor(ideal).astype(np.int64), floor), sizes)
    tiebreak = rng.random(len(names))  # ties between equal remainders go to a seeded random folder
    while alloc.sum() > limit:  # the minimum of one pushed the total over: take from the most over-served
        over = np.where(alloc > floor, alloc - ideal, -np.inf)
        alloc[np.lexsort((tiebreak, over))[-1]] -= 1
    while alloc.sum() < limit:  # hand the rest to the largest remainders (never beyond a folder's size)
        short = np.where(alloc < sizes, ideal - alloc, -np.inf)
        alloc[np.lexsort((tiebreak, short))[-1]] += 1
    picked = [np.asarray(groups[g])[rng.choice(len(groups[g]), size=int(k), replace=False)]
              for g, k in zip(names, alloc) if k]
    return np.sort(np.concatenate(picked)).astype(np.int64)


def not_drawn(skipped: list[tuple[str, str]]) -> tuple[list[str], int | None]:
    """(the paths of ``skipped`` that were only left out of the sample, the sample limit or None)."""
    prefix = _NOT_DRAWN.split("{")[0]
    hits = [(p, int(str(r)[len(prefix):].split()[0])) for p, r in skipped if str(r).startswith(prefix)]
    return [p for p, _ in hits], (max(k for _, k in hits) if hits else None)


def sampling_note(drawn: list[str], skipped: list[tuple[str, str]], seed: int = SAMPLE_SEED) -> str:
    """How the sample of a folder was drawn, in one sentence every page shows: ``drawn`` are the
    sampled paths, ``skipped`` the (path, reason) pairs of :func:`encode_folder`."""
    left_out, limit = not_drawn(skipped)
    if not left_out:
        return f"all {len(drawn):,} usable image(s) of the folder are used"
    n_usable = limit + len(left_out)  # the scan's usable images: the sample plus those left out
    n_folders = len({_folder_of(p) for p in [*drawn, *left_out]})
    spread = (f"stratified over its {n_folders:,} subfolders (each in proportion to its size, at least one image "
              "each)" if n_folders > 1 else "drawn at random")
    return (f"{limit:,} of the folder's {n_usable:,} usable images are used: a seeded random sample (seed {seed}), "
            f"{spread}")


def encode_folder(folder: str | Path, encoder, *, limit: int = SAMPLE_LIMIT, seed: int = SAMPLE_SEED,
                  progress: ProgressFn | None = None):
    """Scan ``folder`` and encode its usable images, or a :func:`stratified_sample` of ``limit`` of
    them (features cached on disk by content).

    Returns ``(records of the encoded images, features float32 [n, D], skipped [(path, reason)])``;
    images left out of the sample are in ``skipped`` with the reason "not drawn into the sample of
    ``limit`` images" (:func:`not_drawn`, :func:`sampling_note`).
    """

    records = scan_images(folder)
    ok = [r for r in records if r.ok]
    skipped = [(r.path, r.reason) for r in records if not r.ok]
    if len(ok) > limit:
        keep = stratified_sample([r.path for r in ok], limit, seed)
        drawn = np.zeros(len(ok), dtype=bool)
        drawn[keep] = True
        skipped += [(r.path, _NOT_DRAWN.format(limit=limit)) for r, d in zip(ok, drawn) if not d]
        ok = [ok[i] for i in keep]
    tracker = ProgressTracker(None, (lambda _s, d, t: progress(d, t)) if progress else None)
    feats, errors = encode_records(encoder, ok, cache=FeatureCache(encoder.fingerprint_id), tracker=tracker)
    skipped += list(errors.items())
    return [r for r in ok if r.status == "ok"], feats, skipped


def sample_scorer(run: Run, features: np.ndarray) -> WhatIfScorer:
    """A what-if scorer over an image sample float32 [n, D] (e.g. OOD images) against the run's corpus."""
    return WhatIfScorer(features, run.text_embeddings(), run.tau)


def ood_comparison(run: Run, ood: WhatIfScorer, held: HeldOut | None = None) -> dict:
    """``ood_metrics`` (AUROC, FPR95, ...) of held-out ID vs the OOD sample scored by ``ood``, with
    the mined (``"before"``) and the current (``"after"``) concepts; None where scores are undefined."""
    h = held if held is not None else heldout(run)
    _, extra, pos_now = run.vocabulary()
    out = {}
    for name, rows, ex in (("before", run.mined_positive_rows(), None), ("after", pos_now, extra)):
        id_s, ood_s = h.scorer.log_scores(rows, ex), ood.log_scores(rows, ex)
        if not (np.isfinite(id_s).all() and np.isfinite(ood_s).all()):
            out[name] = None
            continue
        out[name] = ood_metrics(id_s, ood_s)
    return out


def score_features(run: Run, features: np.ndarray, tpr: float, top: int = 3, *, detector: Detector | None = None,
                   held: HeldOut | None = None) -> tuple[list[dict], float | None, str]:
    """Per image of ``features`` float32 [n, D]: log score, score, ``is_id`` at the current
    threshold for ``tpr``, top positive and negative concepts. Returns ``(rows, threshold, rule)``.
    ``detector``: ``run_detector(run, calibrate=False)`` if already at hand."""
    thr, rule = current_threshold(run, tpr, held)
    if thr is None or not len(features):
        return [], thr, rule
    det = detector if detector is not None else run_detector(run, calibrate=False)
    out = det.explain(features, top=top)
    for e in out:
        e["is_id"] = bool(e["log_score"] >= thr)
    return out, thr, rule


def all_scores(run: Run, progress: ProgressFn | None = None) -> np.ndarray:
    """Log scores float64 [N_ok] of every image of the run with the current concepts (LSE cached)."""
    rows = np.arange(run.n_images())
    lse = corpus_lse(run, rows, progress)
    _, extra, pos_now = run.vocabulary()
    return WhatIfScorer(run.feature_matrix(), run.text_embeddings(), run.tau, base_lse=lse).log_scores(pos_now, extra)

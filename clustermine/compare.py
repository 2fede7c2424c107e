"""Compare two runs: Y_pos, cluster agreement on shared images, score shift, settings.

Images are matched by content (sha1 of the file, from ``images.jsonl``), so two runs over copies of
one folder, or over overlapping folders, compare on what they share. Scores are each run's current
log-score (concept edits applied) of its own features of the shared image.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

if TYPE_CHECKING:
    from .rundir.run import Run

ProgressFn = Callable[[int, int], None]
__all__ = ["diff_runs", "matched_clusters", "shared_rows"]

_IGNORED_SETTINGS = ("created", "user")


def shared_rows(run_a: Run, run_b: Run) -> tuple[np.ndarray, np.ndarray]:
    """Feature rows (int64 [S] each, aligned) of the images both runs hold, by file content."""
    def first_row_by_sha(run: Run) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in sorted(run.image_records(ok_only=True), key=lambda r: r["row"]):
            out.setdefault(r.get("sha1") or r["abs_path"], r["row"])
        return out

    a, b = first_row_by_sha(run_a), first_row_by_sha(run_b)
    keys = [k for k in a if k in b]
    return (np.array([a[k] for k in keys], dtype=np.int64), np.array([b[k] for k in keys], dtype=np.int64))


def matched_clusters(labels_a: np.ndarray, labels_b: np.ndarray) -> list[tuple[int, int, int]]:
    """One-to-one matching of A's and B's clusters maximising the shared images (Hungarian method
    on the contingency table). Returns [(cluster_a, cluster_b, images in both)], by overlap."""
    from scipy.optimize import linear_sum_assignment

    ua, ia = np.unique(labels_a, return_inverse=True)
    ub, ib = np.unique(labels_b, return_inverse=True)
    table = np.zeros((len(ua), len(ub)), dtype=np.int64)
    np.add.at(table, (ia, ib), 1)
    ra, rb = linear_sum_assignment(table, maximize=True)
    pairs = [(int(ua[i]), int(ub[j]), int(table[i, j])) for i, j in zip(ra, rb) if table[i, j] > 0]
    return sorted(pairs, key=lambda t: (-t[2], t[0]))


def _current_scores(run: Run, rows: np.ndarray) -> np.ndarray:
    """float64 [len(rows)] current log-scores of feature ``rows`` (corpus LSE from the run's cache)."""
    from .scoring import WhatIfScorer
    from .whatif import corpus_lse

    _, extra, pos = run.vocabulary()
    if len(rows) == 0:
        return np.zeros(0)
    scorer = WhatIfScorer(run.features()[rows], run.text_embeddings(), run.tau, base_lse=corpus_lse(run, rows))
    return scorer.log_scores(pos, extra)


def _shift(a: np.ndarray, b: np.ndarray) -> dict:
    d = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    if d.size == 0:
        return {"n": 0, "mean": None, "median": None, "max_abs": None}
    return {"n": int(d.size), "mean": float(d.mean()), "median": float(np.median(d)),
            "max_abs": float(np.abs(d).max())}


def _settings_diff(a: dict, b: dict) -> dict:
    keys = sorted((set(a) | set(b)) - set(_IGNORED_SETTINGS))
    return {k: [a.get(k), b.get(k)] for k in keys if a.get(k) != b.get(k)}


def diff_runs(run_a: Run, run_b: Run, *, ood_folder: str | Path | None = None, ood_limit: int = 500,
              progress: ProgressFn | None = None) -> dict:
    """What differs from run A to run B (a JSON-able dict):

    - ``y_pos``: ``added`` (in B only), ``removed`` (in A only), ``kept`` (concept texts, current edits)
    - ``clusters``: ``n_shared`` (images mined in both: not held out, not excluded), ``ari`` (adjusted
      Rand index of the two assignments on them; 1 = same partition), ``matched`` ([cluster_a,
      cluster_b, overlap] Hungarian matching), ``matched_fraction`` (overlap sum / n_shared)
    - ``heldout_shift``: B − A log-score of the images held out in both (``n``, ``mean``, ``median``,
      ``max_abs``), and ``verdict_changes`` (images whose ID / OOD verdict at each run's threshold differs)
    - ``ood_shift``: the same for the images of ``ood_folder`` (None when not given)
    - ``settings``: {setting: [A, B]} for the config values that differ
    """
    from sklearn.metrics import adjusted_rand_score

    ra, rb = shared_rows(run_a, run_b)
    pos_a, pos_b = set(run_a.positive_concepts()), set(run_b.positive_concepts())
    ca, cb = run_a.cluster_ids(), run_b.cluster_ids()
    ex_a, ex_b = run_a.excluded_mask(), run_b.excluded_mask()
    mined = (ca[ra] >= 0) & (cb[rb] >= 0) & ~ex_a[ra] & ~ex_b[rb]
    la, lb = ca[ra][mined], cb[rb][mined]
    matched = matched_clusters(la, lb) if len(la) else []
    ari = float(adjusted_rand_score(la, lb)) if len(la) else None

    hold = run_a.holdout_mask()[ra] & run_b.holdout_mask()[rb]
    ha, hb = ra[hold], rb[hold]
    sa, sb = _current_scores(run_a, ha), _current_scores(run_b, hb)
    det_a, det_b = run_a.detector(), run_b.detector()
    verdict_changes = None
    if det_a.threshold is not None and det_b.threshold is not None and len(sa):
        verdict_changes = int(((sa >= det_a.threshold) != (sb >= det_b.threshold)).sum())
    heldout_shift = {**_shift(sa, sb), "verdict_changes": verdict_changes,
                     "threshold_a": det_a.threshold, "threshold_b": det_b.threshold}

    ood_shift = None
    if ood_folder is not None:
        ood_shift = _ood_shift(det_a, det_b, ood_folder, ood_limit, progress)
    return {
        "run_a": str(run_a.path), "run_b": str(run_b.path),
        "y_pos": {"added": sorted(pos_b - pos_a), "removed": sorted(pos_a - pos_b), "kept": sorted(pos_a & pos_b)},
        "clusters": {"n_shared": int(mined.sum()), "ari": ari, "matched": [list(m) for m in matched],
                     "matched_fraction": (sum(m[2] for m in matched) / len(la)) if len(la) else None,
                     "n_clusters_a": len(run_a.cluster_stats()), "n_clusters_b": len(run_b.cluster_stats())},
        "n_shared_images": int(len(ra)),
        "heldout_shift": heldout_shift,
        "ood_shift": ood_shift,
        "settings": _settings_diff(run_a.config, run_b.config),
    }


def _ood_shift(det_a, det_b, folder: str | Path, limit: int, progress: ProgressFn | None) -> dict:
    from .encoders import load_encoder
    from .errors import NoImagesError
    from .whatif import encode_folder

    if not Path(folder).is_dir():
        raise NoImagesError(f"{folder}: OOD folder not found")
    scores = []
    feats_by_encoder: dict[str, np.ndarray] = {}
    for det in (det_a, det_b):
        key = det.encoder_fingerprint_id or det.encoder_spec
        if key not in feats_by_encoder:
            encoder = load_encoder(det.encoder_spec or "offline")
            det.check_encoder(encoder)
            _, feats, _ = encode_folder(folder, encoder, limit=limit, progress=progress)
            if len(feats) == 0:
                raise NoImagesError(f"{folder}: no readable image")
            feats_by_encoder[key] = feats.astype(np.float16).astype(np.float32)
        scores.append(det.log_scores(feats_by_encoder[key]))
    out = _shift(scores[0], scores[1])
    if det_a.threshold is not None and det_b.threshold is not None:
        out["verdict_changes"] = int(((scores[0] >= det_a.threshold) != (scores[1] >= det_b.threshold)).sum())
    return out

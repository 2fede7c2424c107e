"""Compare two runs: Y_pos, cluster agreement on shared images, score shift, which run detects an
OOD sample better (AUROC / FPR95 of each on the same images), and the settings and images that differ.

Images are matched by content (sha1 of the file, from ``images.jsonl``), so two runs over copies of
one folder, or over overlapping folders, compare on what they share. Scores are each run's current
log-score (concept edits applied) of its own features of the shared image.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from clustermine.workflows.clusterview import cluster_count, cluster_count_text
from clustermine.workflows.whatif import run_detector
from clustermine.core.errors import NoImagesError
from clustermine.method.metrics import ood_metrics
from clustermine.method.scoring import WhatIfScorer
from clustermine.workflows.whatif import corpus_lse, encode_folder, heldout
from clustermine.method.encoders import load_encoder

if TYPE_CHECKING:
    from clustermine.store.run import Run

ProgressFn = Callable[[int, int], None]
__all__ = ["better_run", "compare_images", "diff_runs", "matched_clusters", "run_ood_metrics", "shared_rows",
           "verdict_changes", "verdict_text"]

# ``images_dir`` is compared by content instead (:func:`compare_images`): each upload is copied
# into its own run folder, so two runs of one upload differ in it while holding the same images.
_IGNORED_SETTINGS = ("created", "user", "images_dir")


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


def _content_keys(run: Run) -> Counter:
    """Multiset of the run's usable images by content (sha1; the path when a record has none)."""
    return Counter(r.get("sha1") or r["abs_path"] for r in run.image_records(ok_only=True))


def compare_images(run_a: Run, run_b: Run) -> dict:
    """The two runs' usable images compared by content: ``n_a``, ``n_b``, ``only_a`` (A's images
    that B lacks, duplicates counted), ``only_b``, ``same`` (True when both hold the same images,
    wherever their folders are) and ``text`` ("same 160 images" / "B has 12 images A lacks")."""
    ka, kb = _content_keys(run_a), _content_keys(run_b)
    only_a, only_b = sum((ka - kb).values()), sum((kb - ka).values())
    n_a, n_b = sum(ka.values()), sum(kb.values())
    parts = ([f"B has {only_b} image{'' if only_b == 1 else 's'} A lacks"] if only_b else []) + \
            ([f"A has {only_a} image{'' if only_a == 1 else 's'} B lacks"] if only_a else [])
    same = not parts
    return {"n_a": n_a, "n_b": n_b, "only_a": only_a, "only_b": only_b, "same": same,
            "text": f"same {n_a} images" if same else "; ".join(parts)}


def verdict_changes(scores_a: np.ndarray, scores_b: np.ndarray, threshold_a: float | None,
                    threshold_b: float | None) -> dict | None:
    """Images (aligned float [n] log scores under A and B) whose verdict differs, each run judging at
    its own threshold (ID when log score >= threshold): ``total``, ``id_to_ood`` (ID under A, OOD
    under B), ``ood_to_id``. None without both thresholds."""
    if threshold_a is None or threshold_b is None:
        return None
    id_a = np.asarray(scores_a, dtype=np.float64) >= threshold_a
    id_b = np.asarray(scores_b, dtype=np.float64) >= threshold_b
    to_ood, to_id = int((id_a & ~id_b).sum()), int((~id_a & id_b).sum())
    return {"total": to_ood + to_id, "id_to_ood": to_ood, "ood_to_id": to_id}


def run_ood_metrics(id_scores: np.ndarray, ood_scores: np.ndarray) -> dict | None:
    """:func:`clustermine.method.metrics.ood_metrics` of one run (AUROC, FPR95, AUPR, n_id, n_ood); None
    when a score is undefined (no positive concept) or a side is empty."""

    try:
        return ood_metrics(id_scores, ood_scores)
    except ValueError:
        return None


def better_run(ma: dict | None, mb: dict | None) -> str | None:
    """Which run detects the OOD sample better: "A" or "B" when it is at least as good on both AUROC
    (higher) and FPR95 (lower) and better on one, "tie" when equal on both, "mixed" when each wins
    one; None when a run's metrics are undefined. No margin: the numbers are shown beside it."""
    if ma is None or mb is None:
        return None
    d_auroc, d_fpr = mb["auroc"] - ma["auroc"], ma["fpr95"] - mb["fpr95"]  # > 0: B better
    if d_auroc == 0 and d_fpr == 0:
        return "tie"
    if d_auroc >= 0 and d_fpr >= 0:
        return "B"
    if d_auroc <= 0 and d_fpr <= 0:
        return "A"
    return "mixed"


def verdict_text(d: dict) -> str:
    """One sentence saying which run is better on the OOD sample of a :func:`diff_runs` result
    (and how the verdicts moved), or how to find out when no OOD sample was given."""
    om, sh = d.get("ood_metrics"), d.get("ood_shift")
    if not om:
        return "Give an OOD folder to see which run detects OOD images better (AUROC / FPR95 of each)."
    a, b, better = om["a"], om["b"], om["better"]
    if a is None or b is None:
        return "AUROC / FPR95 undefined: a run has no positive concept."
    nums = (f"AUROC {a['auroc']:.3f} (A) vs {b['auroc']:.3f} (B), FPR95 {a['fpr95']:.1%} vs {b['fpr95']:.1%} "
            f"on the same {b['n_ood']} OOD images vs {om['n_id_text']}")
    head = {"A": "A is better", "B": "B is better", "tie": "A and B are equal",
            "mixed": "Neither run is better on both"}[better]
    moves = ""
    if sh and sh.get("verdict_changes") is not None:
        moves = (f"; verdicts on the OOD images: {sh['id_to_ood']} ID→OOD (caught by B, not by A), "
                 f"{sh['ood_to_id']} OOD→ID (caught by A, not by B)")
    return f"{head}: {nums}{moves}."


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

    _, extra, pos = run.vocabulary()
    if len(rows) == 0:
        return np.zeros(0)
    scorer = WhatIfScorer(run.features()[rows], run.text_embeddings(), run.tau, base_lse=corpus_lse(run, rows))
    return scorer.log_scores(pos, extra)


def _heldout_scores(run: Run) -> np.ndarray:
    """float64 current log-scores of the run's held-out ID images (:func:`clustermine.workflows.whatif.heldout`:
    the images the what-if panel and the report score; all images when none is held out)."""

    _, extra, pos = run.vocabulary()
    return heldout(run).scorer.log_scores(pos, extra)


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
      cluster_b, overlap] Hungarian matching), ``matched_fraction`` (overlap sum / n_shared),
      ``n_clusters_a`` / ``_b`` (clusters holding images), ``clusters_text_a`` / ``_b`` ("6 clusters (2 left empty)")
    - ``heldout_shift``: B − A log-score of the images held out in both (``n``, ``mean``, ``median``,
      ``max_abs``), and the images whose ID / OOD verdict at each run's threshold differs:
      ``verdict_changes`` (total), ``id_to_ood`` (ID under A, OOD under B: new false alarms), ``ood_to_id``
    - ``ood_shift``: the same for the images of ``ood_folder`` (None when not given); there
      ``id_to_ood`` are OOD images B catches and A missed
    - ``ood_metrics``: ``a`` / ``b`` (:func:`clustermine.method.metrics.ood_metrics` of each run: its own
      held-out ID images, as its what-if panel scores them, vs the same OOD images), ``n_id_text``,
      ``better`` (:func:`better_run`); None without ``ood_folder``
    - ``verdict``: one sentence, which run is better (:func:`verdict_text`)
    - ``images``: the image sets compared by content (:func:`compare_images`)
    - ``settings``: {setting: [A, B]} for the config values that differ; ``images_dir`` only when
      the images differ too, with an ``images`` row saying how
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
    det_a, det_b = run_detector(run_a), run_detector(run_b)
    changes = verdict_changes(sa, sb, det_a.threshold, det_b.threshold) if len(sa) else None
    heldout_shift = {**_shift(sa, sb), **_changes_fields(changes),
                     "threshold_a": det_a.threshold, "threshold_b": det_b.threshold}

    ood_shift = ood_metrics = None
    if ood_folder is not None:
        oa, ob = _ood_scores(det_a, det_b, ood_folder, ood_limit, progress)
        ood_shift = {**_shift(oa, ob), **_changes_fields(verdict_changes(oa, ob, det_a.threshold, det_b.threshold))}
        # ID side: each run's own held-out images, never seen by its mining (images held out in both
        # runs are too few to rank: ~ holdout_fraction² of them), as the run's what-if panel scores them
        id_a, id_b = _heldout_scores(run_a), _heldout_scores(run_b)
        n_id_text = (f"{len(id_a)} held-out ID images" if len(id_a) == len(id_b)
                     else f"{len(id_a)} (A) / {len(id_b)} (B) held-out ID images")
        ma, mb = run_ood_metrics(id_a, oa), run_ood_metrics(id_b, ob)
        ood_metrics = {"a": ma, "b": mb, "n_id_text": n_id_text, "better": better_run(ma, mb)}
    images = compare_images(run_a, run_b)
    settings = _settings_diff(run_a.config, run_b.config)
    if not images["same"]:
        da, db = run_a.config.get("images_dir"), run_b.config.get("images_dir")
        if da != db:
            settings["images_dir"] = [da, db]
        settings["images"] = [f"{images['n_a']} images" + (f", {images['only_a']} that B lacks" if images["only_a"] else ""),
                              f"{images['n_b']} images" + (f", {images['only_b']} that A lacks" if images["only_b"] else "")]
    out = {
        "run_a": str(run_a.path), "run_b": str(run_b.path),
        "y_pos": {"added": sorted(pos_b - pos_a), "removed": sorted(pos_a - pos_b), "kept": sorted(pos_a & pos_b)},
        "clusters": {"n_shared": int(mined.sum()), "ari": ari, "matched": [list(m) for m in matched],
                     "matched_fraction": (sum(m[2] for m in matched) / len(la)) if len(la) else None,
                     "n_clusters_a": _occupied(run_a), "n_clusters_b": _occupied(run_b),
                     "clusters_text_a": cluster_count_text(run_a.meta.get("summary") or {}),
                     "clusters_text_b": cluster_count_text(run_b.meta.get("summary") or {})},
        "n_shared_images": int(len(ra)),
        "heldout_shift": heldout_shift,
        "ood_shift": ood_shift,
        "ood_metrics": ood_metrics,
        "images": images,
        "settings": settings,
    }
    out["verdict"] = verdict_text(out)
    return out


def _occupied(run: Run) -> int | None:
    """Clusters holding images (empty ones are not counted: :func:`clustermine.workflows.clusterview.cluster_count`)."""
    return cluster_count(run.meta.get("summary") or {})[0]


def _changes_fields(changes: dict | None) -> dict:
    if changes is None:
        return {"verdict_changes": None, "id_to_ood": None, "ood_to_id": None}
    return {"verdict_changes": changes["total"], "id_to_ood": changes["id_to_ood"], "ood_to_id": changes["ood_to_id"]}


def _ood_scores(det_a, det_b, folder: str | Path, limit: int, progress: ProgressFn | None
                ) -> tuple[np.ndarray, np.ndarray]:
    """Log scores float64 [n] of the same ``folder`` images (at most ``limit``) under A's and B's
    detectors (encoded once per encoder)."""
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
        scores.append(np.asarray(det.log_scores(feats_by_encoder[key]), dtype=np.float64))
    return scores[0], scores[1]

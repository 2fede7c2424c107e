"""Evaluations of a run kept in its folder (ID images vs one or more named OOD sets), and the data of
the figures that show them: the Evaluate page and the HTML report draw from these same functions.

An evaluation is a result dict — ``{"rows": [{"name": set name or "mean", "method", "auroc",
"fpr95", "aupr_in", "aupr_out", "n_id", "n_ood", optional "auroc_ci" / "fpr95_ci" [low, high]},
...], ...}`` — and the label-free log scores (higher = more ID) it was computed from: ``"id"`` and
``"ood/<set name>"``, float64 [n] each. :func:`save_evaluation` writes both atomically into
``evaluations/<UTC stamp>.json`` / ``.npz`` and points ``latest.json`` at them (names:
:mod:`clustermine.store.layout`); :func:`latest_evaluation` reads the latest back and says whether
the run's detector (its concepts, τ, vocabulary, encoder) changed since.

:func:`evaluate_folders` is what the app's form calls: the CLI's evaluation
(:func:`clustermine.workflows.evaluation.evaluate_sets`) of an ID folder and named OOD folders, kept
in the run; ``clustermine evaluate`` keeps its result the same way (:func:`store_evaluation`).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from clustermine.core.config import DEFAULT_TPR
from clustermine.core.errors import ClusterMineError
from clustermine.core.identity import Actor
from clustermine.core.roles import require
from clustermine.core.storage import atomic_save_npz, atomic_write_json
from clustermine.method import metrics
from clustermine.store import layout
from clustermine.workflows.evaluation import Evaluation as SetsEvaluation
from clustermine.workflows.evaluation import LABEL_FREE, MEAN, display_table, evaluate_sets, parse_ood_specs
from clustermine.workflows.whatif import run_detector

if TYPE_CHECKING:
    from clustermine.store.run import Run

__all__ = ["Evaluation", "SetFigure", "detector_stamp", "evaluate_folders", "figure_data", "is_label_based",
           "latest_evaluation", "load_evaluation", "parse_named_folders", "roc_curve", "save_evaluation",
           "score_histogram", "store_evaluation", "table_rows"]

EVAL_FORMAT = 1
ID_KEY = "id"
OOD_PREFIX = "ood/"
MEAN_NAME = MEAN
ROC_MAX_POINTS = 400  # drawn points per ROC curve; the metrics use every point
HIST_BINS = 40
_LABEL_BASED = ("mcm", "neglabel", "true names", "label-based", "label based")


@dataclass(frozen=True)
class Evaluation:
    """One stored evaluation: ``result`` (rows ...), ``scores`` (``"id"``, ``"ood/<name>"`` → float64 [n]),
    ``measured`` (UTC ISO time), ``stale`` (the run's detector changed since), ``path`` (its .json)."""

    result: dict
    scores: dict[str, np.ndarray]
    measured: str
    stale: bool
    path: Path

    @property
    def ood_names(self) -> list[str]:
        """The OOD sets whose scores are kept, in the order they were given."""
        return [k[len(OOD_PREFIX):] for k in self.scores if k.startswith(OOD_PREFIX)]

    @property
    def rows(self) -> list[dict]:
        return list(self.result.get("rows") or [])


@dataclass(frozen=True)
class SetFigure:
    """What the figures of one OOD set show: the ROC curve (``fpr``, ``tpr`` float64 [K], thinned for
    drawing), its ``auroc`` (from every point), the ID / OOD score histograms on shared ``edges``
    [B + 1] as shares of each set (``id_share``, ``ood_share`` [B], each summing to 1), and the
    threshold keeping at least ``tpr_target`` of ID (``id_kept`` of ID and ``ood_passed`` of OOD
    score ≥ it)."""

    name: str
    fpr: np.ndarray
    tpr: np.ndarray
    auroc: float
    edges: np.ndarray
    id_share: np.ndarray
    ood_share: np.ndarray
    threshold: float
    tpr_target: float
    id_kept: float
    ood_passed: float
    n_id: int
    n_ood: int


# ------------------------------------------------------------------------------------ the record
def detector_stamp(run: Run) -> dict:
    """What the run's scores depend on, by content (a copied or moved run stays current; an edit,
    a re-mine, another τ or encoder does not): positive concepts, a hash of the vocabulary, τ, encoder."""
    vocab, _, pos_rows = run.vocabulary()
    digest = hashlib.sha256("\n".join(vocab).encode("utf-8")).hexdigest()
    return {"positive": sorted(vocab[int(i)] for i in pos_rows), "vocabulary_sha256": digest,
            "tau": float(run.tau), "encoder": str((run.meta.get("encoder") or {}).get("fingerprint_id", ""))}


def _checked_scores(scores: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for key, values in scores.items():
        if key != ID_KEY and not (key.startswith(OOD_PREFIX) and key[len(OOD_PREFIX):].strip()):
            raise ClusterMineError(f"scores: unknown key {key!r} (expected 'id' and 'ood/<set name>')")
        arr = np.asarray(values, dtype=np.float64).ravel()
        if arr.size == 0 or not np.isfinite(arr).all():
            raise ClusterMineError(f"scores[{key!r}]: need at least one score, all finite")
        out[key] = arr
    if ID_KEY not in out or len(out) < 2:
        raise ClusterMineError("scores: need the ID scores ('id') and at least one OOD set ('ood/<set name>')")
    return out


def _stem(now: _dt.datetime, folder: Path) -> str:
    stem = now.strftime("%Y%m%dT%H%M%S%fZ")
    n = 1
    while layout.evaluation_files(folder.parent, stem)[0].exists():  # two saves within a microsecond
        n += 1
        stem = f"{now:%Y%m%dT%H%M%S%fZ}-{n}"
    return stem


def save_evaluation(run: Run, result: dict, scores: Mapping[str, np.ndarray]) -> Path:
    """Store ``result`` and its ``scores`` as the run's latest evaluation; returns the record (.json).

    Written atomically: the scores first, then the record, then the ``latest.json`` pointer, so a
    reader never sees a record whose scores are missing."""
    if not isinstance(result, dict) or not isinstance(result.get("rows"), list):
        raise ClusterMineError("evaluation result: needs a list of rows ('rows')")
    checked = _checked_scores(scores)
    folder = layout.evaluations_dir(run.path)
    folder.mkdir(parents=True, exist_ok=True)
    now = _dt.datetime.now(_dt.timezone.utc)
    stem = _stem(now, folder)
    record_path, scores_path = layout.evaluation_files(run.path, stem)
    keys = list(checked)
    atomic_save_npz(scores_path, **{f"s{i}": checked[k] for i, k in enumerate(keys)})
    atomic_write_json(record_path, {"format": EVAL_FORMAT, "measured": now.isoformat(timespec="seconds"),
                                    "result": result, "score_keys": keys, "detector": detector_stamp(run)})
    atomic_write_json(layout.evaluation_latest(run.path), {"name": stem})
    return record_path


def load_evaluation(run: Run, record_path: str | os.PathLike) -> Evaluation:
    """The evaluation stored in ``record_path`` (and the .npz beside it); ClusterMineError naming the
    file when it cannot be read."""
    record_path = Path(record_path)
    scores_path = record_path.with_suffix(".npz")
    try:
        rec = json.loads(record_path.read_text(encoding="utf-8"))
        keys = [str(k) for k in rec["score_keys"]]
        result = dict(rec["result"])
        measured = str(rec.get("measured", ""))
        stamp = rec.get("detector")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ClusterMineError(f"{record_path}: unreadable evaluation record ({exc})") from exc
    try:
        with np.load(scores_path, allow_pickle=False) as z:
            scores = {k: np.asarray(z[f"s{i}"], dtype=np.float64) for i, k in enumerate(keys)}
    except (OSError, ValueError, KeyError) as exc:
        raise ClusterMineError(f"{scores_path}: unreadable evaluation scores ({exc})") from exc
    stale = stamp != json.loads(json.dumps(detector_stamp(run)))
    return Evaluation(result=result, scores=scores, measured=measured, stale=stale, path=record_path)


def latest_evaluation(run: Run) -> Evaluation | None:
    """The run's latest stored evaluation, None when it has none; ClusterMineError naming the file
    when the record is unreadable."""
    pointer = layout.evaluation_latest(run.path)
    if not pointer.exists():
        return None
    try:
        stem = str(json.loads(pointer.read_text(encoding="utf-8"))["name"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ClusterMineError(f"{pointer}: unreadable pointer to the latest evaluation ({exc})") from exc
    if not stem or "/" in stem or "\\" in stem or stem.startswith("."):
        raise ClusterMineError(f"{pointer}: names no evaluation of this run ({stem!r})")
    return load_evaluation(run, layout.evaluation_files(run.path, stem)[0])


# ------------------------------------------------------------------------------------ figures and table
def roc_curve(id_scores: np.ndarray, ood_scores: np.ndarray,
              max_points: int = ROC_MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) of :func:`clustermine.method.metrics.roc_points`, thinned to at most ``max_points``
    evenly spaced points (both ends kept) for drawing; ID positive."""
    fpr, tpr = metrics.roc_points(id_scores, ood_scores)
    if fpr.size > max_points:
        keep = np.unique(np.round(np.linspace(0, fpr.size - 1, max_points)).astype(np.int64))
        fpr, tpr = fpr[keep], tpr[keep]
    return fpr, tpr


def score_histogram(id_scores: np.ndarray, ood_scores: np.ndarray, threshold: float | None = None,
                    bins: int = HIST_BINS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(edges float64 [bins + 1], ID share [bins], OOD share [bins]): both sets on the same bins,
    spanning the threshold too; each share sums to 1 (sets of different sizes compare)."""
    id_scores = np.asarray(id_scores, dtype=np.float64).ravel()
    ood_scores = np.asarray(ood_scores, dtype=np.float64).ravel()
    pooled = np.concatenate([id_scores, ood_scores] + ([[threshold]] if threshold is not None else []))
    lo, hi = float(pooled.min()), float(pooled.max())
    if hi <= lo:  # one value only: a bin of width 1 around it
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    shares = [np.histogram(v, bins=edges)[0] / max(v.size, 1) for v in (id_scores, ood_scores)]
    return edges, shares[0], shares[1]


def figure_data(evaluation: Evaluation, tpr: float = DEFAULT_TPR) -> list[SetFigure]:
    """The ROC curve and the score histograms of every OOD set of ``evaluation``, with the threshold
    that keeps at least ``tpr`` of the ID images (:func:`clustermine.method.metrics.threshold_at_tpr`)."""
    id_scores = evaluation.scores[ID_KEY]
    lam = metrics.threshold_at_tpr(id_scores, tpr)
    out = []
    for name in evaluation.ood_names:
        ood = evaluation.scores[OOD_PREFIX + name]
        fpr, tpr_pts = roc_curve(id_scores, ood)
        edges, id_share, ood_share = score_histogram(id_scores, ood, lam)
        out.append(SetFigure(name=name, fpr=fpr, tpr=tpr_pts, auroc=metrics.auroc(id_scores, ood), edges=edges,
                             id_share=id_share, ood_share=ood_share, threshold=lam, tpr_target=float(tpr),
                             id_kept=float(np.mean(id_scores >= lam)), ood_passed=float(np.mean(ood >= lam)),
                             n_id=int(id_scores.size), n_ood=int(ood.size)))
    return out


def is_label_based(row: dict) -> bool:
    """A baseline that needs the true class names (MCM, NegLabel, ClusterMine with the true names):
    the row says so (``label_based``) or its method is one of them."""
    if "label_based" in row:
        return bool(row["label_based"])
    method = str(row.get("method") or "").lower()
    return any(word in method for word in _LABEL_BASED)


def table_rows(evaluation: Evaluation | dict) -> list[dict[str, str]]:
    """The evaluation table as text cells, the CLI's table (:func:`clustermine.workflows.evaluation.display_table`:
    metrics in %, ``[low, high]`` 95 % intervals and ``± sd`` over runs when present, label-based
    baselines marked, a run column for several runs, the OpenOOD FPR column when measured), one dict
    per row; the page and the report show these."""
    result = evaluation.result if isinstance(evaluation, Evaluation) else evaluation
    rows = [{**r, "method": str(r.get("method") or LABEL_FREE), "label_based": is_label_based(r),
             "name": str(r.get("name", "")), "n_id": r.get("n_id", "–"), "n_ood": r.get("n_ood", "–")}
            for r in result.get("rows") or []]
    openood = "fpr95_openood_variant" in result or any("fpr95_openood" in r for r in rows)
    runs = [str(x) for x in result.get("runs") or []]
    shown = SetsEvaluation(rows=rows, scores={}, scores_by_run={}, runs=runs, n_positive={},
                           ood_names=[], fpr_convention="openood" if openood else "hendrycks")
    header, body = display_table(shown)
    return [dict(zip(header, cells)) for cells in body]


# ------------------------------------------------------------------------------------ evaluate folders
def _checked_sets(ood_dirs: Mapping[str, str | os.PathLike]) -> dict[str, Path]:
    sets: dict[str, Path] = {}
    for name, folder in ood_dirs.items():
        clean = str(name).strip()
        if not clean:
            raise ClusterMineError(f"{folder}: give the OOD set a name")
        if clean == MEAN_NAME:
            raise ClusterMineError(f"{folder}: {MEAN_NAME!r} names the mean row; choose another set name")
        if clean in sets:
            raise ClusterMineError(f"OOD set name {clean!r} is given twice")
        sets[clean] = Path(folder)
    if not sets:
        raise ClusterMineError("give at least one OOD folder")
    return sets


def store_evaluation(ev: SetsEvaluation, runs: Sequence[Run], id_source: str | os.PathLike,
                     ood_sources: Mapping[str, str | os.PathLike]) -> list[Path]:
    """Keep an :func:`clustermine.workflows.evaluation.evaluate_sets` result in each of its ``runs``
    (all rows; that run's own label-free scores) as its latest evaluation. Returns the records."""
    result = {**ev.to_json(), "id": str(id_source), "ood": {n: str(p) for n, p in ood_sources.items()}}
    return [save_evaluation(run, result, ev.scores_by_run[name]) for run, name in zip(runs, ev.runs)]


def evaluate_folders(run: Run, id_dir: str | os.PathLike, ood_dirs: Mapping[str, str | os.PathLike], encoder, *,
                     cache_dir: str | os.PathLike | None = None, actor: Actor | None = None) -> Evaluation:
    """Encode ``id_dir`` and each named OOD folder of ``ood_dirs`` with ``encoder`` (the run's;
    features cached), score them with the run's current detector, measure AUROC / FPR95 / AUPR per
    set and their mean (:func:`clustermine.workflows.evaluation.evaluate_sets`, the CLI's path), and
    keep it all as the run's latest evaluation. ``actor``: who asks (its role must allow scoring)."""
    require(actor, "score")
    sets = _checked_sets(ood_dirs)
    for folder in [Path(id_dir), *sets.values()]:
        if not folder.is_dir():
            raise ClusterMineError(f"{folder}: folder not found")
    det = run_detector(run)
    if not len(det.positive_idx):
        raise ClusterMineError(f"{run.run_id}: no positive concept, scores are undefined (accept or add one)")
    ev = evaluate_sets([run], id_dir, sets, encoder=encoder, cache_dir=cache_dir, purity=False)  # the audit shows it
    return load_evaluation(run, store_evaluation(ev, [run], id_dir, sets)[0])


def parse_named_folders(text: str) -> dict[str, str]:
    """OOD sets typed one per line as ``NAME=FOLDER`` (or just ``FOLDER``: named after its last part),
    blank lines skipped → {name: folder}; the CLI's rules (:func:`clustermine.workflows.evaluation.parse_ood_specs`)."""
    return parse_ood_specs([line.strip() for line in str(text or "").splitlines() if line.strip()])[0]

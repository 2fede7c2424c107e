"""The latest OOD-sample evaluation of a run: AUROC / FPR95 / AUPR of its held-out ID images vs an
OOD image sample, with the mined and the current concepts (:func:`clustermine.workflows.whatif.ood_comparison`).

Every evaluation — the app's what-if panel on a server folder or on uploaded images, ``clustermine
report --ood`` — goes through :func:`evaluate_sample`, which records it in the run
(``projections/ood_eval.json``) with the versions of the inputs its numbers depend on. The report
(:func:`for_report`) then shows the latest one whichever source it came from: as recorded while those
inputs are unchanged, re-measured on the same folder after later concept edits or a re-mine.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from clustermine.core.errors import ClusterMineError
from clustermine.store import layout
from clustermine.core.storage import atomic_write_json
from clustermine.workflows.whatif import SAMPLE_LIMIT, encode_folder, ood_comparison, sample_scorer, sampling_note
from clustermine.workflows.uploads import UploadReport, save_uploads
from clustermine.method.encoders import load_encoder

if TYPE_CHECKING:
    from clustermine.store.run import Run
    from clustermine.method.scoring import WhatIfScorer
    from clustermine.workflows.whatif import HeldOut

ProgressFn = Callable[[int, int], None]

__all__ = ["evaluate_sample", "for_report", "inputs_stamp", "latest", "record", "save_uploaded_sample",
           "uploaded_sample"]

#: What an evaluation's numbers depend on besides the OOD images: features and held-out flags
#: (images table), text embeddings and τ, the mined concepts, the edit log and the exclusions.
_INPUTS = (layout.FEATURES, layout.TEXT_EMBEDDINGS, layout.MINED, layout.EDITS, layout.EXCLUSIONS)


def inputs_stamp(run: Run) -> dict:
    """Versions (mtime, size, inode) of the run files an OOD evaluation depends on, and τ."""
    stamp: dict = {n: list(layout.file_stamp(run.file(n))) for n in _INPUTS}
    stamp["images"] = list(layout.file_stamp(layout.images_table_path(run.path)))
    stamp["tau"] = run.tau
    return stamp


def evaluate_sample(run: Run, folder: str | os.PathLike, encoder=None, *, limit: int | None = None,
                    progress: ProgressFn | None = None, held: HeldOut | None = None,
                    scorer: Callable[[np.ndarray], WhatIfScorer] | None = None, source: str = "what-if") -> dict:
    """Encode up to ``limit`` images of ``folder``, compare them with the held-out ID images and
    record the result as the run's latest OOD evaluation (an unwritable run only loses the record).

    Returns :func:`~clustermine.workflows.whatif.ood_comparison`'s ``before`` / ``after`` metrics plus
    ``folder``, ``n_ood``, ``skipped`` (count), ``skipped_files`` ([path, reason]), ``limit``
    (default :data:`~clustermine.workflows.whatif.SAMPLE_LIMIT`), ``sampling`` (how the images were drawn:
    :func:`~clustermine.workflows.whatif.sampling_note`), ``source`` and ``measured`` (UTC ISO time). ``held`` / ``scorer``: cached helpers of the caller
    (the app), same numbers as without them.
    """

    folder = Path(folder)
    if not folder.is_dir():
        raise ClusterMineError(f"{folder}: OOD folder not found")
    encoder = encoder if encoder is not None else load_encoder(run.encoder_spec)
    limit = SAMPLE_LIMIT if limit is None else int(limit)
    records, feats, skipped = encode_folder(folder, encoder, limit=limit, progress=progress)
    if not len(feats):
        raise ClusterMineError(f"{folder}: no usable OOD image")
    out = ood_comparison(run, scorer(feats) if scorer is not None else sample_scorer(run, feats), held)
    out.update(folder=str(folder), n_ood=int(len(feats)), skipped=len(skipped),
               skipped_files=[[str(p), str(r)] for p, r in skipped], limit=int(limit), source=source,
               sampling=sampling_note([r.path for r in records], skipped),
               measured=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    record(run, out)
    return out


def record(run: Run, result: dict) -> None:
    """Store ``result`` (an :func:`evaluate_sample` dict) as the run's latest OOD evaluation."""
    kept = {k: v for k, v in result.items() if k != "skipped_files"}
    try:
        atomic_write_json(layout.ood_eval_file(run.path), {"result": kept, "stamp": inputs_stamp(run)})
    except OSError:
        pass  # a read-only run only loses the record


def latest(run: Run) -> dict | None:
    """The run's latest OOD evaluation: the recorded result with ``current`` (True while the inputs
    it was measured on are unchanged); None when none was recorded or the record is unreadable."""
    try:
        rec = json.loads(layout.ood_eval_file(run.path).read_text(encoding="utf-8"))
        result = dict(rec["result"])
        stamp = rec["stamp"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    result["current"] = stamp == json.loads(json.dumps(inputs_stamp(run)))
    return result


def uploaded_sample(run: Run) -> Path | None:
    """The OOD images uploaded in the app's what-if panel (``ood_sample/``), None when there are none."""
    folder = layout.ood_sample_dir(run.path)
    try:
        return folder if folder.is_dir() and any(folder.iterdir()) else None
    except OSError:
        return None


def save_uploaded_sample(run: Run, files) -> UploadReport:
    """Replace the run's uploaded OOD sample (``ood_sample/``) with ``files`` (upload objects with
    ``.name`` and ``.read``; saved under sanitised names with the upload limits). Returns the report;
    :func:`uploaded_sample` is None afterwards when none could be saved."""
    dest = layout.ood_sample_dir(run.path)
    shutil.rmtree(dest, ignore_errors=True)
    return save_uploads(files, dest)


def for_report(run: Run, encoder=None) -> dict | None:
    """The OOD metrics the report shows: the latest evaluation when still current; re-measured on
    its folder when the concepts changed since (the stale numbers, flagged ``current=False``, when
    the folder is gone or unreadable); a run's uploaded sample with no record is measured. None
    when the run has never been evaluated on an OOD sample."""
    rec = latest(run)
    if rec is not None and rec["current"]:
        return rec
    folder = rec.get("folder") if rec is not None else uploaded_sample(run)
    if folder:
        try:
            limit = int(rec["limit"]) if rec is not None and rec.get("limit") else None
            source = rec.get("source", "what-if") if rec is not None else "what-if"
            return {**evaluate_sample(run, folder, encoder, limit=limit, source=source), "current": True}
        except ClusterMineError:
            pass
    return rec

"""The per-image results table of a run (one row per usable image) as CSV and parquet.

Columns (:data:`IMAGE_FIELDS`): ``row`` (feature row), ``name`` (the image's display name,
``Run.image_names``: the user's own file name for an upload), ``path`` (as scanned, relative to the
images folder), ``cluster`` (-1 = held out of mining), ``top1_concept`` / ``top1_similarity``
(the zero-shot vote over the corpus), ``log_score`` / ``score`` (ClusterMine score with the
current concepts, higher = more in-distribution), ``verdict`` (``ID`` / ``OOD`` at the current
calibrated threshold, empty when there is none), ``held_out`` and ``excluded``.
"""

from __future__ import annotations

import csv
import io
from typing import TYPE_CHECKING

import numpy as np
from clustermine.workflows.whatif import run_detector
from clustermine.core.units import csv_safe
from clustermine.workflows.whatif import all_scores

if TYPE_CHECKING:
    from clustermine.store.run import Run

IMAGE_FIELDS = ("row", "name", "path", "cluster", "top1_concept", "top1_similarity", "log_score", "score", "verdict",
                "held_out", "excluded")


def excluded_mask(run: Run) -> np.ndarray:
    """bool [N_ok]: images the user marked "not ID" (all False while the run records no exclusion)."""
    n = run.n_images()
    getter = getattr(run, "excluded_mask", None)  # provided by the exclusion feature once it exists
    if callable(getter):
        mask = np.asarray(getter(), dtype=bool)
        if mask.shape == (n,):
            return mask
    return np.zeros(n, dtype=bool)


def image_table(run: Run) -> tuple[dict[str, list], float | None]:
    """The per-image columns (dict of equal-length lists, rows ordered by feature row) and the
    log-score threshold the verdicts use (None: no positive concept, so no verdict)."""

    records = sorted(run.image_records(ok_only=True), key=lambda r: r["row"])
    top_idx, top_sim = run.votes()
    vocab = run.vocabulary_base()
    cids = run.cluster_ids()
    log_s = all_scores(run)
    threshold = run_detector(run).threshold
    excluded = excluded_mask(run)
    names = run.image_names([int(r["row"]) for r in records])
    cols: dict[str, list] = {f: [] for f in IMAGE_FIELDS}
    for r, name in zip(records, names):
        i = int(r["row"])
        ls = float(log_s[i])
        cols["row"].append(i)
        cols["name"].append(name)
        cols["path"].append(str(r["path"]))
        cols["cluster"].append(int(cids[i]))
        cols["top1_concept"].append(vocab[int(top_idx[i, 0])])
        cols["top1_similarity"].append(float(top_sim[i, 0]))
        cols["log_score"].append(ls)
        cols["score"].append(float(np.exp(ls)))
        cols["verdict"].append("" if threshold is None else ("ID" if ls >= threshold else "OOD"))
        cols["held_out"].append(bool(cids[i] < 0))
        cols["excluded"].append(bool(excluded[i]))
    return cols, threshold


def image_table_csv(run: Run, table: dict[str, list] | None = None) -> str:
    """The per-image table as CSV text (text cells guarded against spreadsheet formulas)."""

    cols = table if table is not None else image_table(run)[0]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(IMAGE_FIELDS)
    for values in zip(*(cols[f] for f in IMAGE_FIELDS)):
        w.writerow([csv_safe(v) if isinstance(v, str) else (repr(v) if isinstance(v, float) else v)
                    for v in values])
    return buf.getvalue()


def image_table_parquet(run: Run, table: dict[str, list] | None = None) -> bytes:
    """The per-image table as parquet bytes (typed columns; paths verbatim)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = table if table is not None else image_table(run)[0]
    types = {"row": pa.int64(), "name": pa.string(), "path": pa.string(), "cluster": pa.int64(), "top1_concept": pa.string(),
             "top1_similarity": pa.float64(), "log_score": pa.float64(), "score": pa.float64(),
             "verdict": pa.string(), "held_out": pa.bool_(), "excluded": pa.bool_()}
    arrow = pa.table({f: pa.array(cols[f], type=types[f]) for f in IMAGE_FIELDS})
    buf = io.BytesIO()
    pq.write_table(arrow, buf)
    return buf.getvalue()

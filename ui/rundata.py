"""Per-run tables the pages display: image names, cluster winners, typical / atypical members,
the concept table. Pure reads of the run."""

from __future__ import annotations

import numpy as np
import pandas as pd

from clustermine.workflows import clusterview
from clustermine.store import Run


def upload_names(run: Run) -> dict[str, str]:
    """For uploaded images: stored path (relative to uploads/) -> the user's file name (``Run.upload_names``)."""
    return run.upload_names()


def image_names(run: Run, rows: np.ndarray | None = None) -> list[str]:
    """Display names of feature ``rows`` (default: every row): ``Run.image_names``, the single source."""
    return run.image_names(rows)


def winner_texts(run: Run) -> dict[int, str]:
    """cluster id -> the cluster's name label ('tench', 'tench (rejected)', '– (empty)'), see
    :func:`clustermine.workflows.clusterview.cluster_names`."""
    return {c: name.label for c, name in clusterview.cluster_names(run).items()}


def names_for_rows(run: Run, rows: np.ndarray) -> list[str]:
    """Display names (see :func:`image_names`) of feature ``rows`` only."""
    return image_names(run, rows)


def paths_for_rows(run: Run, rows: np.ndarray) -> list[str]:
    """Absolute paths of feature ``rows`` only."""
    return run.ok_rows_table().column("abs_path").take(np.asarray(rows, dtype=np.int64).ravel()).to_pylist()


def cluster_purity(run: Run) -> np.ndarray:
    """Purity by cluster id: float64 [max id + 1] (NaN for ids without statistics)."""
    stats = run.cluster_stats()
    out = np.full(max([s.cluster for s in stats], default=-1) + 1, np.nan)
    for s in stats:
        out[s.cluster] = s.purity
    return out


def point_table(run: Run, rows: np.ndarray) -> dict[str, list | np.ndarray]:
    """Aligned with ``rows``: names, cluster ids (-1 held out), whether the image is excluded (not
    ID), its place label (cluster name, 'held out' or 'excluded (not ID)') and cluster purity.
    Builds Python objects for ``rows`` only (the points drawn), never for every image of a run."""
    rows = np.asarray(rows, dtype=np.int64)
    cids = run.cluster_ids()[rows]
    excluded = run.excluded_mask()[rows]
    purity = {s.cluster: s.purity for s in run.cluster_stats()}
    return {
        "names": names_for_rows(run, rows),
        "cluster": cids,
        "excluded": excluded,
        "concept": clusterview.place_labels(run, rows),
        "purity": np.array([np.nan if (c < 0 or x) else purity.get(int(c), np.nan) for c, x in zip(cids, excluded)],
                           dtype=float),
    }


def typical_atypical(run: Run, cluster: int, n: int = 6) -> tuple[list[int], list[int]]:
    """The cluster's most typical and most atypical members, excluded images left out (see
    :func:`clustermine.workflows.clusterview.typical_atypical`)."""
    return clusterview.typical_atypical(run, cluster, n)


def concept_table(run: Run) -> pd.DataFrame:
    """The concept table indexed by the stable concept id (rebuilt from the run on every call)."""
    rows = []
    for c in run.concepts():
        rows.append({"id": c.id, "concept": c.text, "status": c.status, "source": c.source,
                     "clusters": ", ".join(map(str, c.clusters)) if c.clusters else "–",
                     "votes": int(c.votes), "purity": c.purity, "updated": (c.updated or "")[:19].replace("T", " "),
                     "by": c.user or ""})
    df = pd.DataFrame(rows, columns=["id", "concept", "status", "source", "clusters", "votes", "purity", "updated", "by"])
    return df.set_index("id")


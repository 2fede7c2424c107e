"""Purity diagnostics against known labels: how a run's clusters line up with the class subfolders of
its images folder (the researcher's "purity failure" view; the audit page, ``clustermine purity`` and
``evaluate`` show this one function's result).

Labels: an image's label is the first folder below the images root (``<root>/<class>/.../file.jpg``);
an image directly in the root has none. The run's clustered images (mining rows not marked "not ID",
:func:`clustermine.workflows.clusterview.voting_cluster_ids`) that carry a label are compared with
their cluster ids: Hungarian accuracy, NMI and ARI (:func:`clustermine.method.metrics.clustering_scores`)
and, per cluster, how many images of each class it holds. No labels (a flat folder, or all images
in one class) → None: a score against a single class says nothing.
"""

from __future__ import annotations

from pathlib import PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING

import numpy as np

from clustermine.method.metrics import clustering_scores
from clustermine.workflows.clusterview import cluster_names, voting_cluster_ids

if TYPE_CHECKING:
    from clustermine.store.run import Run

LABEL_RULE = "label = the first folder below the images folder (class subfolders)"

__all__ = ["LABEL_RULE", "folder_label", "run_labels", "purity_diagnostics"]


def folder_label(path: str | None, roots: tuple[str, ...] = ()) -> str | None:
    """The class of an image path: its first folder below the images root, or None.

    ``path`` is the path as the run stored it (relative to the images folder); an absolute one
    (``mine --features`` with absolute paths) is first made relative to the first of ``roots``
    that contains it. A file directly in the root, or outside every root, has no label.
    """
    if not path:
        return None
    p = PurePosixPath(str(path).replace("\\", "/"))
    if p.is_absolute() or PureWindowsPath(str(path)).drive:
        for root in roots:
            try:
                p = p.relative_to(PurePosixPath(str(root).replace("\\", "/")))
                break
            except ValueError:
                continue
        else:
            return None
    parts = [s for s in p.parts if s not in ("", ".")]
    return parts[0] if len(parts) >= 2 else None


def run_labels(run: Run) -> list[str | None]:
    """The folder label of every usable image of ``run`` (by feature row; None where there is none)."""
    cfg = run.config
    roots = tuple(str(cfg[k]) for k in ("images_dir", "image_root") if cfg.get(k))
    paths = run.ok_rows_table().column("path").to_pylist()
    return [folder_label(p, roots) for p in paths]


def purity_diagnostics(run: Run) -> dict | None:
    """Clustering scores and per-cluster class counts of ``run`` against its folder labels, or None.

    Returns ``{"acc", "nmi", "ari"}`` (floats over the clustered, labelled images), ``n_images``
    (those images), ``n_unlabelled`` (clustered images without a label, left out), ``classes``
    (sorted names), ``n_clusters`` (occupied clusters), ``label_rule``, and ``clusters``: one dict per
    occupied cluster, by id: ``cluster``, ``name`` (its winning concept, "" when none), ``size``,
    ``counts`` {class: n} (classes with n > 0, most first), ``majority`` (its largest class; ties:
    first by name), ``share`` (majority / size) and ``n_classes`` (classes present: > 1 = it merges
    classes). None when fewer than two classes are present among the clustered images.
    """
    clusters = voting_cluster_ids(run)
    labels = run_labels(run)
    rows = [i for i in np.flatnonzero(clusters >= 0).tolist() if labels[i] is not None]
    n_clustered = int(np.count_nonzero(clusters >= 0))
    if not rows:
        return None
    y = [labels[i] for i in rows]
    classes = sorted(set(y))
    if len(classes) < 2:
        return None
    c = clusters[rows]
    scores = clustering_scores(np.asarray(y), c)
    class_index = {name: j for j, name in enumerate(classes)}
    ids = np.unique(c)
    table = np.zeros((ids.size, len(classes)), dtype=np.int64)
    np.add.at(table, (np.searchsorted(ids, c), [class_index[v] for v in y]), 1)
    names = cluster_names(run)
    per_cluster = []
    for k, cid in enumerate(ids.tolist()):
        counts = table[k]
        order = sorted(np.flatnonzero(counts).tolist(), key=lambda j: (-counts[j], classes[j]))
        size = int(counts.sum())
        name = names.get(int(cid))
        per_cluster.append({
            "cluster": int(cid), "name": name.label if name is not None else "", "size": size,
            "counts": {classes[j]: int(counts[j]) for j in order},
            "majority": classes[order[0]], "share": float(counts[order[0]] / size),
            "n_classes": len(order),
        })
    return {**scores, "n_images": len(rows), "n_unlabelled": n_clustered - len(rows), "classes": classes,
            "n_clusters": int(ids.size), "label_rule": LABEL_RULE, "clusters": per_cluster}

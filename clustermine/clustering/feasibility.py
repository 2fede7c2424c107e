"""Whether a clustering of N samples is sensible on the device asked for, before anyone waits for it."""

from __future__ import annotations

from typing import Any

import torch

from clustermine.clustering.knn import estimate_knn_seconds, resolve_knn_method

#: TEMI on a CPU is flagged when its estimated time (kNN + training) exceeds this (s): the whole
#: `mine` at ImageNet size should take under 30 minutes (issue 10), so a clusterer that alone takes
#: longer is not what a user expects from a CPU run.
TEMI_CPU_MAX_S = 1800.0


class SlowClusteringWarning(UserWarning):
    """A clusterer was started where :func:`check_clusterer_feasible` says it takes too long."""


def estimate_temi_cpu_seconds(n_samples: int, n_clusters: int | None = None, params: dict | None = None,
                              runs: list[dict] | None = None) -> tuple[float, float, dict[str, int]]:
    """(training s, kNN s, resolved schedule) of TEMI on ``n_samples`` mining samples on this CPU.

    Training follows ``clustermine.estimate``: the reference cost of the schedule (heads x batch x
    steps, plus C beyond 100), scaled by how fast finished TEMI runs in ``runs`` were here.
    """
    from clustermine.clustering import default_n_clusters
    from clustermine.estimate import _measured_rates, temi_reference_seconds, temi_schedule

    c = default_n_clusters(n_samples) if n_clusters is None else int(n_clusters)
    sched = temi_schedule(n_samples, params, c)
    rate = _measured_rates(runs or [])[0].get("cluster:temi", 1.0)
    method = resolve_knn_method(str((params or {}).get("knn_method") or "auto"), n_samples, "cpu")
    return rate * temi_reference_seconds(sched, c), estimate_knn_seconds(n_samples, method), sched


def check_clusterer_feasible(clusterer: str, n_samples: int, device: str | torch.device = "cpu", *,
                             n_clusters: int | None = None, params: dict[str, Any] | None = None,
                             runs: list[dict] | None = None) -> str | None:
    """None when ``clusterer`` on ``n_samples`` samples is fine on ``device``; otherwise one message
    for the user (why, the estimated time, what to do instead).

    Today only TEMI on a CPU is flagged, when its estimate exceeds :data:`TEMI_CPU_MAX_S` (e.g. 1.28M
    images with C = 1,000: ~20,000 steps at ~0.26 s). ``params``: the clusterer's options (schedule
    overrides, ``knn_method``); ``runs``: finished runs (``clustermine.runs.list_runs``) whose
    measured TEMI speed replaces the reference rate.
    """
    from clustermine.estimate import fmt_duration

    if str(clusterer).strip().lower() != "temi" or torch.device(device).type != "cpu" or n_samples < 4:
        return None
    train_s, knn_s, sched = estimate_temi_cpu_seconds(n_samples, n_clusters, params, runs)
    total = train_s + knn_s
    if total <= TEMI_CPU_MAX_S:
        return None
    return (f"TEMI on {n_samples:,} images would take about {fmt_duration(total)} on this CPU "
            f"({sched['n_heads']} heads x {sched['steps']:,} steps of batch {sched['batch_size']}, "
            f"~{fmt_duration(train_s)}, plus ~{fmt_duration(knn_s)} of nearest neighbours). "
            f"TEMI at this size wants a GPU (--device cuda); on a CPU use --clusterer kmeans "
            f"(mini-batch spherical k-means, minutes at this size).")

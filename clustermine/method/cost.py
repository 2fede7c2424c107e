"""What the method's stages cost: reference rates measured on the reference machine (2 CPU cores,
BENCHMARKS.md), TEMI's schedule and its cost, rates measured from finished runs, and whether TEMI is
sensible on a device at a size. Pure functions over numbers and run summaries (no machine probe, no
run folder): :mod:`clustermine.workflows.estimate` composes them with this machine's measured speed.
"""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING, Any

from clustermine.core.units import fmt_duration
from clustermine.method.schedule import default_n_clusters, default_schedule

if TYPE_CHECKING:
    import torch

# BENCHMARKS.md, section "Scaling", N = 1,000 on 2 CPU cores (seconds per image):
# encode 30 s (33.8 img/s), vote 1.4 s; k-means 1.0 s. The first use of the WordNet corpus embeds
# 117,798 nouns once (728 s on 2 cores, issue 12), cached on disk afterwards.
REFERENCE_S_PER_IMAGE = {"scan": 0.0001, "encode": 0.030, "cluster:kmeans": 0.001, "vote": 0.0014}
# TEMI, BENCHMARKS "Clustering: TEMI vs k-means" (N = 1,000, batch 64, 2,010 steps, 2 cores): 16 heads
# 73-80 s, 4 heads 19 s, i.e. ~36 us per head x batch sample per step, plus a small fixed cost a step.
REFERENCE_TEMI_S_PER_HEAD_SAMPLE = 36e-6
REFERENCE_TEMI_S_PER_STEP = 1e-3
# Above ~100 clusters the last layer and the loss grow with C (BENCHMARKS "Performance and scaling",
# 16 heads x batch 256: 123 ms a step at C = 100, 256 ms at C = 1,000): +36 ns per head x sample x
# cluster beyond REFERENCE_TEMI_FLAT_CLUSTERS.
REFERENCE_TEMI_S_PER_HEAD_SAMPLE_CLUSTER = 3.6e-8
REFERENCE_TEMI_FLAT_CLUSTERS = 100

def temi_schedule(n_mining: int, params: dict | None = None, n_clusters: int | None = None) -> dict[str, int]:
    """TEMI's resolved schedule for ``n_mining`` images, C clusters (None: the default rule
    ``clustermine.method.clustering.default_n_clusters``) and the run's clusterer options."""
    p = params or {}
    c = default_n_clusters(n_mining) if n_clusters is None else int(n_clusters)
    keys = ("n_heads", "batch_size", "epochs", "min_steps")
    try:
        return default_schedule(n_mining, c, **{k: (None if p.get(k) is None else int(p[k])) for k in keys})
    except (TypeError, ValueError):  # options the run will refuse anyway: estimate the defaults
        return default_schedule(n_mining, c)


def temi_reference_seconds(schedule: dict[str, int], n_clusters: int | None = None) -> float:
    """TEMI training time of ``schedule`` with ``n_clusters`` clusters (None: <= 100, where C does
    not matter) on the reference machine (s)."""
    per_sample = REFERENCE_TEMI_S_PER_HEAD_SAMPLE + REFERENCE_TEMI_S_PER_HEAD_SAMPLE_CLUSTER * max(
        0, int(n_clusters or 0) - REFERENCE_TEMI_FLAT_CLUSTERS)
    per_step = REFERENCE_TEMI_S_PER_STEP + per_sample * schedule["n_heads"] * schedule["batch_size"]
    return schedule["steps"] * per_step


def measured_rates(runs: list[dict]) -> tuple[dict[str, float], int]:
    """Median seconds per image of every stage over the finished runs that timed it; for TEMI
    (``cluster:temi``) the median ratio of measured to reference time of the run's schedule."""
    per_stage: dict[str, list[float]] = {}
    used = 0
    for r in runs:
        summary, cfg = r.get("summary") or {}, r.get("config") or {}
        timings, n = summary.get("timings_s") or {}, summary.get("n_images") or 0
        if r.get("status") != "done" or not timings or n <= 0:
            continue
        used += 1
        for stage, secs in timings.items():
            if stage == "corpus":  # depends on the cache, not on N
                continue
            key = f"cluster:{cfg.get('clusterer', '')}" if stage == "cluster" else stage
            try:
                if key == "cluster:temi":
                    sched = summary.get("temi_schedule")
                    if not sched:  # a run from before the N-scaled schedule: its steps are unknown
                        continue
                    per_stage.setdefault(key, []).append(float(secs) / max(temi_reference_seconds(sched), 1e-9))
                else:
                    per_stage.setdefault(key, []).append(float(secs) / n)
            except (TypeError, ValueError, KeyError):
                continue
    rates = {k: statistics.median(v) for k, v in per_stage.items() if v}
    return rates, used




#: TEMI on a CPU is flagged when its estimated time (kNN + training) exceeds this (s): the whole
#: `mine` at ImageNet size should take under 30 minutes (issue 10), so a clusterer that alone takes
#: longer is not what a user expects from a CPU run.
TEMI_CPU_MAX_S = 1800.0


class SlowClusteringWarning(UserWarning):
    """A clusterer was started where :func:`check_clusterer_feasible` says it takes too long."""

def estimate_temi_cpu_seconds(n_samples: int, n_clusters: int | None = None, params: dict | None = None,
                              runs: list[dict] | None = None) -> tuple[float, float, dict[str, int]]:
    """(training s, kNN s, resolved schedule) of TEMI on ``n_samples`` mining samples on this CPU.

    Training follows ``clustermine.workflows.estimate``: the reference cost of the schedule (heads x batch x
    steps, plus C beyond 100), scaled by how fast finished TEMI runs in ``runs`` were here.
    """
    from clustermine.method.clustering.knn import estimate_knn_seconds, resolve_knn_method  # imports torch (seconds): cost lines stay light

    c = default_n_clusters(n_samples) if n_clusters is None else int(n_clusters)
    sched = temi_schedule(n_samples, params, c)
    rate = measured_rates(runs or [])[0].get("cluster:temi", 1.0)
    method = resolve_knn_method(str((params or {}).get("knn_method") or "auto"), n_samples, "cpu")
    return rate * temi_reference_seconds(sched, c), estimate_knn_seconds(n_samples, method), sched


def check_clusterer_feasible(clusterer: str, n_samples: int, device: "str | torch.device" = "cpu", *,
                             n_clusters: int | None = None, params: dict[str, Any] | None = None,
                             runs: list[dict] | None = None) -> str | None:
    """None when ``clusterer`` on ``n_samples`` samples is fine on ``device``; otherwise one message
    for the user (why, the estimated time, what to do instead).

    Today only TEMI on a CPU is flagged, when its estimate exceeds :data:`TEMI_CPU_MAX_S` (e.g. 1.28M
    images with C = 1,000: ~20,000 steps at ~0.26 s). ``params``: the clusterer's options (schedule
    overrides, ``knn_method``); ``runs``: finished runs (``clustermine.store.list_runs``) whose
    measured TEMI speed replaces the reference rate.
    """
    import torch

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

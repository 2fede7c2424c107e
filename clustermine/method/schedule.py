"""Training-schedule rules that need no torch: the default number of clusters and TEMI's default
schedule (heads, batch, steps) for N samples and C clusters.

They live outside ``clustermine.method.clustering`` (whose package imports torch) so that the cost estimate
of the first page (``clustermine.workflows.estimate``) is drawn without importing torch, which takes 3-20 s on a
busy 2-core machine (issue 18, point 13). ``clustermine.method.clustering`` and ``clustermine.method.clustering.temi``
re-export every name here.
"""

from __future__ import annotations

import functools
import math

import numpy as np

#: Fewest members a cluster should have on average. A cluster names itself by a plurality vote of
#: its members, and TEMI's default k = round(0.5 N / C) >= 5 neighbours should stay within one
#: cluster; both need about 5+ members (METHOD 2.9 recommends 10+ where N allows).
MIN_CLUSTER_SIZE = 5


def clamp_n_clusters(n_clusters: int, n_samples: int) -> tuple[int, str | None]:
    """Clamp C to [1, max(1, N // MIN_CLUSTER_SIZE)].

    Returns (C used, None) or (clamped C, a one-line message for the user saying why).
    """
    hi = max(1, n_samples // MIN_CLUSTER_SIZE)
    c = int(n_clusters)
    if c < 1:
        return 1, f"{n_clusters} clusters requested; using 1 (the number of clusters must be at least 1)"
    if c > hi:
        return hi, (
            f"{c} clusters requested for {n_samples} images; using {hi} so that each cluster has "
            f"about {MIN_CLUSTER_SIZE}+ members to vote on its concept"
        )
    return c, None


def default_n_clusters(n_samples: int) -> int:
    """Data-independent default C = round(sqrt(N / 2)), clipped to [2, 200], then clamped.

    sqrt(N/2) is the classical rule of thumb for the number of clusters (Mardia et al., 1979): the
    count and the mean size (sqrt(2N)) both grow with N, so small folders get few clusters with
    enough voters each, and larger ones get the mild over-clustering ClusterMine relies on (several
    clusters may vote for the same concept; an unsplit class loses concepts). The cap of 200 keeps
    CPU training cheap; pass C explicitly for ImageNet-scale sets (the paper uses 4000).
    """
    c = int(min(200, max(2, round(math.sqrt(max(n_samples, 0) / 2)))))
    return clamp_n_clusters(c, n_samples)[0]


#: Optimiser steps a default schedule runs at least from N >= 1000 on (METHOD 2.9b: ~300 steps is
#: under-trained, ~1.5k+ ties or beats k-means).
MIN_STEPS = 2000
#: The floor of the step count for small N (METHOD 2.9b: below ~1.5k steps seeds disagree).
MIN_STEPS_SMALL_N = 1500
#: Heads of a default schedule: clip(round(N / HEADS_PER_SAMPLES), MIN_HEADS, MAX_HEADS), but
#: more within a cost budget when clusters are small (N / C < SMALL_CLUSTERS, see default_schedule).
MIN_HEADS, MAX_HEADS, HEADS_PER_SAMPLES, SMALL_CLUSTERS = 4, 16, 250, 15
#: Heads x batch up to which a step runs on one thread when ``n_threads`` is None (issue 12: 300
#: steps of 4 heads x 16 took 5.7 s on one thread, 27 s on two, on a loaded 2-core machine).
SMALL_STEP_WORK = 256
#: A step's fixed cost (optimiser, loss bookkeeping) in head x batch-sample units: ~1 ms against
#: ~36 us per head-sample on the reference machine (clustermine.workflows.estimate's reference TEMI figures).
STEP_OVERHEAD = 28
#: Upper bound on the number of epochs a default schedule picks (only reached for tiny N).
MAX_EPOCHS = 1000
#: Above this N the large-N rule of :func:`default_schedule` applies (N <= LARGE_N keeps the
#: step-floor schedule measured in BENCHMARKS "First run" / "Clustering: TEMI vs k-means").
LARGE_N = 20_000
#: Samples a large-N schedule routes per cluster (steps x batch / C): the official ImageNet-1K
#: recipe trains 100 epochs x 1,281,167 images over 25,000 clusters = 5,125 per cluster.
VISITS_PER_CLUSTER = 5_000
#: The official recipe's epochs (TEMI README, CIFAR and ImageNet-1K): the large-N rule never asks more.
OFFICIAL_EPOCHS = 100


def default_n_heads(n_samples: int, n_clusters: int | None = None) -> int:
    """H = clip(round(N / 250), 4, 16): 4 heads up to N ~ 1.1k, 16 from N = 3,875 on. When clusters are
    small (N / C < 15) :func:`default_schedule` adds heads within a cost budget (see there); this
    function gives the N-only count.

    A step costs about H x batch; with clusters of 15+ samples the heads agree (4 heads gave the
    ACC / NMI of 16 at N = 1000, BENCHMARKS "Clustering: TEMI vs k-means", and at N = 160, C = 4,
    "First run (issue 12)").
    """
    return int(np.clip(round(max(n_samples, 0) / HEADS_PER_SAMPLES), MIN_HEADS, MAX_HEADS))


def schedule_work(schedule: dict[str, int]) -> float:
    """A schedule's CPU cost in head-sample units: steps x (``STEP_OVERHEAD`` + heads x batch).

    Proportional to its training time on one thread (BENCHMARKS "Clustering: TEMI vs k-means": ~36 us
    per head x batch sample a step, plus ~1 ms a step for the optimiser and the loss bookkeeping)."""
    return float(schedule["steps"]) * (STEP_OVERHEAD + schedule["n_heads"] * schedule["batch_size"])


def default_min_steps(n_samples: int) -> int:
    """Step floor clip(1000 + N, 1500, 2000): 1,500 steps up to N = 500, 2,000 from N = 1000 on.

    Never below METHOD 2.9b's ~1.5k steps (fewer leave seeds disagreeing); small N saves time by
    fewer heads and a smaller batch instead of fewer steps.
    """
    return int(np.clip(1000 + max(n_samples, 0), MIN_STEPS_SMALL_N, MIN_STEPS))


def default_batch_size(n_samples: int) -> int:
    """Power of two nearest to N / 16, clipped to [16, 256], and at most N / 4 (METHOD 2.9).

    N = 1000 gives 64, the batch size measured to work in METHOD 2.9b; small batches buy more
    optimiser steps per second of CPU time (N < ~360 gets 16).
    """
    b = 2 ** int(round(math.log2(max(n_samples, 1) / 16))) if n_samples >= 16 else 1
    b = int(np.clip(b, 16, 256))
    return max(2, min(b, n_samples // 4))


def default_epochs(n_samples: int, batch_size: int, min_steps: int = MIN_STEPS) -> int:
    """Epochs so that training runs >= ``min_steps`` optimiser steps (drop_last), in [1, 1000]."""
    steps_per_epoch = max(1, n_samples // batch_size)
    return int(np.clip(math.ceil(min_steps / steps_per_epoch), 1, MAX_EPOCHS))


def default_schedule(
    n_samples: int,
    n_clusters: int | None = None,
    *,
    n_heads: int | None = None,
    batch_size: int | None = None,
    epochs: int | None = None,
    min_steps: int | None = None,
) -> dict[str, int]:
    """The training schedule TEMI runs on N samples and C clusters (None: unknown, heads from N
    only): ``n_heads``, ``batch_size``, ``epochs``, ``min_steps`` (the step floor the epochs were
    chosen for) and ``steps`` (optimiser steps, drop_last). Values given win; ``None`` resolves from
    N by the default_* rules above. Used by TEMI.fit and by the run-cost estimate.

    N <= ``LARGE_N`` (20,000): epochs reach the step floor (1,500-2,000 steps; METHOD 2.9b: steps,
    not epochs, decide; that is already far fewer than 100 epochs from N ~ 5k on).

    Cost never falls as N grows (issue 18): with default settings a schedule for N costs no more
    than one for 2N, in steps and in steps x heads x batch (so whatever a step's fixed and per-sample
    costs are), and needs no more threads. Heads and batch never fall with N; the steps are whole
    epochs reaching the floor *and* at least the steps of N // 2 (rounding up to whole epochs alone
    could give N // 2 up to an epoch more); small clusters (N / C < 15) get extra heads only within
    the cost of the N-only rule at 2N (:func:`_small_cluster_heads`).
    N > ``LARGE_N``: a floor of 2,000 steps alone would shrink training to ~1 epoch at 1.28M, where
    the official recipe trains 100 epochs. What that recipe gives each cluster is the signal to
    keep: at ImageNet-1K (batch 128, 100 epochs, 25,000 clusters) every cluster receives ~5,100
    samples over training. So the step floor becomes max(2,000, ``VISITS_PER_CLUSTER`` x C / batch),
    with the epochs it implies capped at ``OFFICIAL_EPOCHS`` (100) -- unless ``epochs`` or
    ``min_steps`` is given. At N = 1,281,167, batch 256 (5,004 steps an epoch):

    ====== ========================= ===========================================
    C      this rule                 official recipe (100 epochs)
    ====== ========================= ===========================================
    200    1 epoch, 5,004 steps      100 epochs; 25,600 samples / cluster here
    1,000  4 epochs, 20,016 steps    100 epochs, 500,400 steps
    4,000  16 epochs, 80,064 steps   (the paper's C) 100 epochs, 500,400 steps
    25,000 98 epochs, 490,392 steps  ~ the same (the recipe's own C)
    ====== ========================= ===========================================

    ``epochs=100`` reproduces the recipe literally. C unknown (None) uses ``default_n_clusters(N)``.
    """
    n = max(int(n_samples), 0)
    small = bool(n_clusters) and n / max(int(n_clusters or 1), 1) < SMALL_CLUSTERS
    if batch_size is None and epochs is None and min_steps is None:
        bs = default_batch_size(n)
        floor, ep, _ = _default_steps(n, None if not n_clusters else int(n_clusters))
    else:
        bs = max(1, default_batch_size(n) if batch_size is None else int(batch_size))
        floor = default_min_steps(n) if min_steps is None else int(min_steps)
        if epochs is None and min_steps is None and n > LARGE_N:
            floor = _large_n_floor(n, bs, n_clusters)
        ep = default_epochs(n, bs, floor) if epochs is None else int(epochs)
    if n_heads is not None:
        heads = int(n_heads)
    elif small and epochs is None and n <= LARGE_N:
        heads = _small_cluster_heads(n, bs, (n // bs) * ep)
    else:
        heads = default_n_heads(n)
    return {"n_heads": heads, "batch_size": bs, "epochs": ep, "min_steps": floor, "steps": (n // bs) * ep}


def _large_n_floor(n: int, batch: int, n_clusters: int | None) -> int:
    """The step floor above ``LARGE_N``: ~``VISITS_PER_CLUSTER`` samples a cluster, <= 100 epochs."""
    c = int(n_clusters) if n_clusters else default_n_clusters(n)
    return max(MIN_STEPS, min(math.ceil(VISITS_PER_CLUSTER * c / batch), OFFICIAL_EPOCHS * max(1, n // batch)))


@functools.lru_cache(maxsize=4096)
def _default_steps(n: int, n_clusters: int | None) -> tuple[int, int, int]:
    """(step floor, epochs, steps) of the default batch for N = ``n``: whole epochs reaching the floor
    and at least the steps of N // 2 (rounding up to whole epochs would otherwise let N // 2 run up
    to an epoch more than N; with heads and batch never falling as N grows, no collection then costs
    more than one twice its size)."""
    bs = default_batch_size(n)
    spe = max(1, n // bs)
    floor = _large_n_floor(n, bs, n_clusters) if n > LARGE_N else default_min_steps(n)
    need = max(floor, _default_steps(n // 2, n_clusters)[2]) if n >= 32 else floor
    ep = int(np.clip(math.ceil(need / spe), 1, MAX_EPOCHS))
    return floor, ep, spe * ep


def _small_cluster_heads(n: int, batch: int, steps: int) -> int:
    """Heads for small clusters (N / C < 15): as many as the cost budget allows, up to ``MAX_HEADS``.

    With ~10 samples a cluster picking the lowest-loss of many heads is what makes runs stable
    (caltech101_sub, 21 classes x 10: 4 heads lost 6-15 ACC points to 16, BENCHMARKS "First run").
    But heads cost time, and a collection must never cost more than one twice its size (issue 18: 80
    images ran 16 heads x batch 18 x 2,000 steps on two threads, 986 s, while 160 images took 21 s).
    So the heads are the most whose schedule costs (:func:`schedule_work`) no more than the N-only rule
    at 2N -- which any schedule of 2N costs at least, since small-cluster schedules only add heads to
    it -- and whose step (heads x batch) stays within ``SMALL_STEP_WORK``, i.e. runs on one thread.
    Never fewer than the N-only rule's heads.
    """
    base = default_n_heads(n)
    n2 = 2 * n
    budget = schedule_work({"steps": _default_steps(n2, None)[2], "n_heads": default_n_heads(n2),
                            "batch_size": default_batch_size(n2)})
    by_cost = int((budget / max(steps, 1) - STEP_OVERHEAD) // max(batch, 1))
    return int(max(base, min(MAX_HEADS, by_cost, SMALL_STEP_WORK // max(batch, 1))))

"""What a mining run costs on this machine, before it starts and while it runs: an estimate, never a
promise. One function, :func:`estimate_run_cost`, serves the first page, the Data page's pre-launch
line and the running job's whole-job ETA (:func:`job_eta`).

Per-image stage rates come from the stage timings (``summary.timings_s``) of the finished runs
under a runs root, i.e. measured on this machine; without any, from documented constants measured
on the reference machine (2 CPU cores, BENCHMARKS.md "Scaling": N = 1,000 images). TEMI's cost
follows its N-scaled schedule (``clustermine.clustering.temi.default_schedule``): optimiser steps x
(a fixed per-step cost + a cost per head and batch sample).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

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
REFERENCE_CORPUS_S = 728.0
REFERENCE_CORPUS_SIZE = 117_798  # texts embedded in REFERENCE_CORPUS_S
REFERENCE_SOURCE = "reference figures (BENCHMARKS.md, 2 CPU cores)"
STAGE_ORDER = ("scan", "encode", "corpus", "cluster", "vote")
DEFAULT_HOLDOUT = 0.1


@dataclass
class CostEstimate:
    """Estimated wall time of one run of ``n_images`` images with ``clusterer``.

    ``seconds``: all stages except embedding an uncached corpus; ``corpus_first_use_s``: added once,
    the first time a corpus is embedded; ``corpus_cached``: True / False / None (unknown);
    ``stages``: seconds per stage of ``STAGE_ORDER`` (``corpus`` = 0 when cached, the first-use cost
    when not or unknown); ``schedule``: TEMI's resolved schedule (heads, batch, steps) or {};
    ``source``: where the rates come from (for the label)."""

    n_images: int
    clusterer: str
    seconds: float
    corpus_first_use_s: float
    source: str
    stages: dict[str, float] = field(default_factory=dict)
    corpus_cached: bool | None = None
    schedule: dict[str, int] = field(default_factory=dict)

    @property
    def total_s(self) -> float:
        """The whole job: ``seconds`` plus the corpus embedding unless it is known to be cached."""
        return self.seconds + (0.0 if self.corpus_cached else self.corpus_first_use_s)

    @property
    def detail(self) -> str:
        """What the estimate assumes, e.g. 'corpus cached, TEMI 4 heads x 1,500 steps'."""
        corpus = {True: "corpus cached", False: "corpus not cached yet (embedded once)",
                  None: "corpus cache unknown"}[self.corpus_cached]
        if self.clusterer == "temi" and self.schedule:
            algo = f"TEMI {self.schedule['n_heads']} heads x {self.schedule['steps']:,} steps"
        else:
            algo = "k-means" if self.clusterer == "kmeans" else self.clusterer
        return f"{corpus}, {algo}"

    def line(self) -> str:
        """One line for people: '~40 s on this machine: corpus cached, TEMI 4 heads x 1,500 steps'."""
        return f"~{fmt_duration(self.total_s)} on this machine: {self.detail}"


def temi_schedule(n_mining: int, params: dict | None = None, n_clusters: int | None = None) -> dict[str, int]:
    """TEMI's resolved schedule for ``n_mining`` images, C clusters (None: the default rule
    ``clustermine.clustering.default_n_clusters``) and the run's clusterer options."""
    from .clustering import default_n_clusters
    from .clustering.temi import default_schedule

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


def _n_mining(n_images: int, holdout: float) -> int:
    return max(n_images - int(math.ceil(n_images * holdout)), 0)


def _measured_rates(runs: list[dict]) -> tuple[dict[str, float], int]:
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


def estimate_run_cost(n_images: int, clusterer: str = "temi", runs: list[dict] | None = None, *,
                      clusterer_params: dict | None = None, n_clusters: int | None = None,
                      corpus_cached: bool | None = None, corpus_size: int | None = None, holdout_fraction: float = DEFAULT_HOLDOUT) -> CostEstimate:
    """Estimate a run's wall time from finished runs on this machine, else from reference figures.

    ``runs``: dicts as returned by ``clustermine.runs.list_runs`` (``status``, ``summary``, ``config``).
    A stage never measured here (e.g. the other clusterer) uses its reference rate. Linear in N,
    except TEMI, which follows its schedule for the ``n_images x (1 - holdout_fraction)`` mining images
    and ``n_clusters`` (None: the default rule).
    ``corpus_cached`` (see :func:`corpus_cache_state`) decides whether the corpus stage costs anything;
    ``corpus_size`` (texts; None = the WordNet nouns) scales its first-use cost.
    """
    rates, used = _measured_rates(runs or [])
    n = max(int(n_images), 0)
    stages: dict[str, float] = {}
    schedule: dict[str, int] = {}
    measured_any = False
    for stage in ("scan", "encode", f"cluster:{clusterer}", "vote"):
        rate = rates.get(stage)
        measured_any |= rate is not None
        if stage == "cluster:temi":
            schedule = temi_schedule(_n_mining(n, holdout_fraction), clusterer_params, n_clusters)
            stages["cluster"] = (1.0 if rate is None else rate) * temi_reference_seconds(
                schedule, n_clusters) if n else 0.0
            continue
        if rate is None:
            rate = REFERENCE_S_PER_IMAGE.get(stage, REFERENCE_S_PER_IMAGE["cluster:kmeans"])
        stages[stage.split(":")[0]] = rate * n
    seconds = sum(stages.values())
    first_use = REFERENCE_CORPUS_S * (1.0 if corpus_size is None else max(int(corpus_size), 0) / REFERENCE_CORPUS_SIZE)
    stages["corpus"] = 0.0 if corpus_cached else first_use
    stages = {s: stages[s] for s in STAGE_ORDER}
    source = (f"measured on this machine ({used} finished run{'s' if used != 1 else ''})" if measured_any
              else REFERENCE_SOURCE)
    return CostEstimate(n, clusterer, seconds, first_use, source, stages, corpus_cached, schedule)


def job_eta(stage_estimates: dict[str, float], stage: str, done: int, total: int, stage_elapsed: float) -> float:
    """Seconds left for the whole job: the rest of ``stage`` plus every later stage of STAGE_ORDER.

    The current stage's rest is extrapolated from its own progress once it has some
    (``stage_elapsed / done x (total - done)``), else its estimate minus the time already spent
    (never below 0). Later stages use ``stage_estimates`` (``CostEstimate.stages``), scaled by how
    much slower or faster than estimated the finished part of the current stage ran (clipped to
    [0.5, 4]) so that a busy machine lengthens the whole ETA, not just the current stage's.
    """
    est_now = float(stage_estimates.get(stage, 0.0))
    if done > 0 and total > 0:
        rest = stage_elapsed / done * max(total - done, 0)
        projected = stage_elapsed + rest
        speed = min(max(projected / est_now, 0.5), 4.0) if est_now > 1.0 and stage_elapsed > 2.0 else 1.0
    else:
        rest, speed = max(est_now - stage_elapsed, 0.0), 1.0
    later = STAGE_ORDER[STAGE_ORDER.index(stage) + 1:] if stage in STAGE_ORDER else ()
    return rest + speed * sum(float(stage_estimates.get(s, 0.0)) for s in later)


def corpus_cache_state(encoder, corpus_spec, template: str | None = None,
                       cache_dir: str | Path | None = None) -> bool | None:
    """True when the corpus embedding for (encoder, corpus, template) is in the text cache, False
    when not, None when it cannot be told (e.g. an unreadable corpus file). ``encoder``: a loaded
    encoder (its fingerprint names the cache entry); ``corpus_spec``: a corpus name / file or a loaded
    ``clustermine.corpus.Corpus``."""
    from .corpus import embedding_cache_key, load_corpus
    from .errors import ClusterMineError
    from .storage import cache_root

    try:
        corpus = corpus_spec if hasattr(corpus_spec, "digest") else load_corpus(corpus_spec)
        key = embedding_cache_key(encoder.fingerprint_id, corpus, template or encoder.text_template)
    except (ClusterMineError, OSError, ValueError):
        return None
    root = Path(cache_dir) if cache_dir else cache_root() / "text"
    return (root / f"{key}.npy").is_file()


def fmt_duration(seconds: float) -> str:
    """``seconds`` as a rounded human duration: '40 s', '3 min', '1 h 05 min'."""
    s = max(float(seconds), 0.0)
    if s < 60:
        return f"{max(1, round(s))} s"
    if s < 3600:
        return f"{round(s / 60)} min"
    h, m = divmod(round(s / 60), 60)
    return f"{h} h {m:02d} min"

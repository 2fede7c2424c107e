"""What a mining run costs on this machine, before it starts: an estimate, never a promise.

Per-image stage rates come from the stage timings (``summary.timings_s``) of the finished runs
under a runs root, i.e. measured on this machine; without any, from documented constants measured
on the reference machine (2 CPU cores, BENCHMARKS.md "Scaling": N = 1,000 images).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

# BENCHMARKS.md, section "Scaling", N = 1,000 on 2 CPU cores (seconds per image):
# encode 30 s (33.8 img/s), TEMI 70 s, vote 1.4 s; k-means 1.0 s. The first use of the WordNet
# corpus embeds 117,798 nouns once (728 s on 2 cores, issue 12), cached on disk afterwards.
REFERENCE_S_PER_IMAGE = {"scan": 0.0001, "encode": 0.030, "cluster:temi": 0.070, "cluster:kmeans": 0.001,
                         "vote": 0.0014}
REFERENCE_CORPUS_S = 728.0
REFERENCE_SOURCE = "reference figures (BENCHMARKS.md, 2 CPU cores)"


@dataclass
class CostEstimate:
    """Estimated wall time of one run of ``n_images`` images with ``clusterer``.

    ``seconds``: all stages except embedding an uncached corpus; ``corpus_first_use_s``: added once,
    the first time a corpus is embedded; ``source``: where the rates come from (for the label)."""

    n_images: int
    clusterer: str
    seconds: float
    corpus_first_use_s: float
    source: str
    stages: dict[str, float] = field(default_factory=dict)


def _measured_rates(runs: list[dict], clusterer: str) -> tuple[dict[str, float], int]:
    """Median seconds per image of every stage over the finished runs that timed it."""
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
                per_stage.setdefault(key, []).append(float(secs) / n)
            except (TypeError, ValueError):
                continue
    rates = {k: statistics.median(v) for k, v in per_stage.items() if v}
    return rates, used


def estimate_run_cost(n_images: int, clusterer: str = "temi", runs: list[dict] | None = None) -> CostEstimate:
    """Estimate a run's wall time from finished runs on this machine, else from reference figures.

    ``runs``: dicts as returned by ``clustermine.runs.list_runs`` (``status``, ``summary``, ``config``).
    A stage never measured here (e.g. the other clusterer) uses its reference rate. Linear in N.
    """
    rates, used = _measured_rates(runs or [], clusterer)
    n = max(int(n_images), 0)
    stages: dict[str, float] = {}
    measured_any = False
    for stage in ("scan", "encode", f"cluster:{clusterer}", "vote"):
        rate = rates.get(stage)
        measured_any |= rate is not None
        if rate is None:
            rate = REFERENCE_S_PER_IMAGE.get(stage, REFERENCE_S_PER_IMAGE["cluster:temi"])
        stages[stage.split(":")[0]] = rate * n
    source = (f"measured on this machine ({used} finished run{'s' if used != 1 else ''})" if measured_any
              else REFERENCE_SOURCE)
    return CostEstimate(n, clusterer, sum(stages.values()), REFERENCE_CORPUS_S, source, stages)


def fmt_duration(seconds: float) -> str:
    """``seconds`` as a rounded human duration: '40 s', '3 min', '1 h 05 min'."""
    s = max(float(seconds), 0.0)
    if s < 60:
        return f"{max(1, round(s))} s"
    if s < 3600:
        return f"{round(s / 60)} min"
    h, m = divmod(round(s / 60), 60)
    return f"{h} h {m:02d} min"

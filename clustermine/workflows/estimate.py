"""What a mining run costs on this machine, before it starts and while it runs: an estimate, never a
promise. One function, :func:`estimate_run_cost` (with :func:`estimate_now` around it), serves the
first page, the Data page's pre-launch line and the running job's whole-job ETA (:func:`job_eta`).

With a :class:`MachineSpeed` (:func:`measure_speed`: ~0.3-2 s of real TEMI steps of the run's heads x
batch and of a multi-threaded convolution, reused for ``SPEED_TTL_S`` by this process and, through
the cache root's ``speed.json``, by the job launched next), every stage follows this machine's speed
*now*: the reference figures below times the measured slowdowns, and TEMI's steps at their measured
time. That keeps an estimate within 2x on a loaded machine, where the rates of earlier runs
(measured under another load, or with cached features) were off by 5-10x (issue 18).

Without one, per-image stage rates come from the stage timings (``summary.timings_s``) of the
finished runs under a runs root, i.e. measured on this machine; without any, from documented
constants measured on the reference machine (2 CPU cores, BENCHMARKS.md "Scaling": N = 1,000
images). TEMI's cost follows its N-scaled schedule (``clustermine.method.schedule.default_schedule``):
optimiser steps x (a fixed per-step cost + a cost per head and batch sample).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from clustermine.core.units import fmt_duration  # noqa: F401  (re-exported: pages import it from here)
from clustermine.method.cost import (  # noqa: F401  (re-exported)
    REFERENCE_S_PER_IMAGE, REFERENCE_TEMI_FLAT_CLUSTERS, REFERENCE_TEMI_S_PER_HEAD_SAMPLE,
    REFERENCE_TEMI_S_PER_HEAD_SAMPLE_CLUSTER, REFERENCE_TEMI_S_PER_STEP, measured_rates, temi_reference_seconds,
    temi_schedule)
from clustermine.core.config import STAGES
from clustermine.core.errors import CancelledError, ClusterMineError
from clustermine.core.storage import atomic_write_json, cache_root
from clustermine.method.corpus import embedding_cache_key, load_corpus

REFERENCE_CORPUS_S = 728.0
REFERENCE_CORPUS_SIZE = 117_798  # texts embedded in REFERENCE_CORPUS_S
REFERENCE_SOURCE = "reference figures (BENCHMARKS.md, 2 CPU cores)"
# Fixed costs of a job on the reference machine (s), BENCHMARKS "Estimates": "start" = the worker's
# Python start, imports and encoder load before the first stage; per stage, what does not grow with N
# (encode: decode pool and first batch; corpus: loading the cached embedding; vote: the corpus matrix,
# writing the results). And the encoder's forward pass alone (s / image), the rest of "encode" being
# decoding. All scale with MachineSpeed.slowdown.
REFERENCE_FIXED_S = {"start": 1.3, "scan": 0.1, "encode": 3.0, "corpus": 0.15, "cluster": 0.3, "vote": 0.8}
REFERENCE_FORWARD_S_PER_IMAGE = 0.015
REFERENCE_CONV_S = 0.012  # _probe_conv on the reference machine
STAGE_ORDER = ("start", *STAGES)  # the job's stages (core.config.STAGES) after the worker's start
#: How long a speed probe is reused (s): the load of a shared machine changes within minutes.
SPEED_TTL_S = 60.0
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
    speed: "MachineSpeed | None" = None

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


@dataclass
class MachineSpeed:
    """This machine's speed now, from :func:`measure_speed`.

    ``slowdown``: a small TEMI step's time on one thread / the reference machine's (1: as fast as
    the reference machine when quiet; 3: three times slower, e.g. other jobs running);
    ``temi_work``: heads x batch of the probed step and ``temi_step_s`` its measured seconds per
    step (TEMI's own thread rule); ``parallel_slowdown``: the same ratio for a multi-threaded
    convolution (an encoder's forward pass slows down more than one thread does when other jobs
    compete for the cores); ``measured_at``: time.time() of the probe."""

    slowdown: float
    temi_work: int
    temi_step_s: float
    parallel_slowdown: float
    measured_at: float = 0.0

    def describe(self) -> str:
        """'this machine's speed now (2.3x slower than the reference)' (for the label)."""
        if self.slowdown >= 1.15:
            rel = f"{self.slowdown:.1f}x slower than"
        elif self.slowdown <= 0.87:
            rel = f"{1 / self.slowdown:.1f}x faster than"
        else:
            rel = "as fast as"
        return f"this machine's speed measured now ({rel} the reference machine)"


_SPEED_CACHE: dict[tuple, MachineSpeed] = {}


def _speed_key(schedule: dict[str, int] | None) -> tuple[int, int]:
    """(heads, heads x batch) of the step a probe runs for ``schedule`` (None: 4 x 16)."""
    if not schedule:
        return 4, 64
    return int(schedule["n_heads"]), int(schedule["n_heads"] * schedule["batch_size"])


def _speed_file() -> Path:
    return cache_root() / "speed.json"


def cached_speed(schedule: dict[str, int] | None = None, max_age_s: float = SPEED_TTL_S) -> MachineSpeed | None:
    """The newest probe for ``schedule``'s step (see :func:`measure_speed`) if under ``max_age_s`` old,
    from this process or, through ``<cache root>/speed.json``, from another one (the web app's
    pre-launch estimate, for the job it launches); None otherwise. Never probes."""
    import json
    import time

    key = _speed_key(schedule)
    hit = _SPEED_CACHE.get(key)
    if hit is None:
        try:
            rec = json.loads(_speed_file().read_text()).get(f"{key[0]}x{key[1]}")
            hit = MachineSpeed(**rec) if isinstance(rec, dict) else None
        except (OSError, ValueError, TypeError):
            hit = None
    return hit if hit is not None and time.time() - hit.measured_at < max_age_s else None


def measure_speed(schedule: dict[str, int] | None = None, *, budget_s: float = 0.75,
                  max_age_s: float = SPEED_TTL_S) -> MachineSpeed:
    """Probe this machine's current speed: real TEMI steps of ``schedule``'s heads x batch (default 4
    x 16, TEMI's own thread rule) on random features for about ``budget_s`` in all, and a fixed
    multi-threaded convolution, in three rounds (the fastest counts). Reused for ``max_age_s`` per heads x batch (:func:`cached_speed`),
    so pages that redraw do not probe each time and the job launched next needs no probe of its
    own. ~0.3 s on a quiet 2-core machine, ~1-2 s on a busy one; no model is loaded."""
    import dataclasses
    import json
    import time


    hit = cached_speed(schedule, max_age_s)
    if hit is not None:
        return hit
    heads, work = _speed_key(schedule)
    # The fastest of 3 short rounds: a burst of another process (an import, a test starting) that
    # lasts a second read 2-4x too slow in a single probe; a steady load slows every round alike.
    rounds = [(_probe_temi(heads, max(2, work // heads), budget_s / 3), _probe_conv(3)) for _ in range(3)]
    step_s = min(r[0] for r in rounds)
    ref_step = REFERENCE_TEMI_S_PER_STEP + REFERENCE_TEMI_S_PER_HEAD_SAMPLE * work
    slowdown = max(step_s / ref_step, 0.05)
    if work > 64:  # the general slowdown is that of a small step on one thread
        slowdown = measure_speed(None, budget_s=budget_s, max_age_s=max_age_s).slowdown
    parallel = max(min(r[1] for r in rounds) / REFERENCE_CONV_S, 0.05)
    speed = MachineSpeed(slowdown, work, step_s, parallel, time.time())
    _SPEED_CACHE[(heads, work)] = speed
    try:
        try:
            shared = json.loads(_speed_file().read_text())
        except (OSError, ValueError):
            shared = {}
        shared = {k: v for k, v in shared.items() if isinstance(v, dict) and time.time() - v.get("measured_at", 0) < 3600}
        shared[f"{heads}x{work}"] = dataclasses.asdict(speed)
        _speed_file().parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(_speed_file(), shared)
    except OSError:
        pass  # a read-only cache: this process still reuses it
    return speed


def _probe_temi(heads: int, batch: int, budget_s: float) -> float:
    """Seconds per TEMI optimiser step of ``heads`` x ``batch`` (median of the steps after the first
    epoch, which pays for allocations), stopping after ``budget_s``."""
    import time

    import numpy as np

    from clustermine.method.clustering.temi import TEMI  # imports pandas (seconds): only when this runs

    spe = 8
    X = np.random.default_rng(0).normal(size=(batch * spe, 384)).astype(np.float32)
    marks: list[tuple[int, float]] = []
    start = time.perf_counter()

    def progress(step: int, total: int) -> None:
        marks.append((step, time.perf_counter()))

    def cancel() -> bool:
        return time.perf_counter() - start > budget_s and len(marks) > spe + 2

    m = TEMI(min(10, batch * spe // 4), n_heads=heads, batch_size=batch, epochs=12, knn=5,
             random_state=0, progress=progress, cancel=cancel)
    try:
        m.fit(X)
    except CancelledError:
        pass
    marks = [mk for mk in marks if mk[0] > spe] or marks  # skip the first epoch
    if len(marks) < 2:
        return time.perf_counter() - start
    return (marks[-1][1] - marks[0][1]) / max(marks[-1][0] - marks[0][0], 1)


def _probe_conv(repeats: int = 5) -> float:
    """Seconds of a fixed multi-threaded convolution (8 x 32 x 56 x 56 -> 64 channels, 3 x 3; torch's
    thread setting), the median of ``repeats``: how fast an encoder's forward pass runs now."""
    import time

    import torch

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(8, 32, 56, 56, generator=gen)
    w = torch.randn(64, 32, 3, 3, generator=gen)
    times = []
    with torch.inference_mode():
        torch.nn.functional.conv2d(x, w, padding=1)  # first call: allocations
        for _ in range(repeats):
            t = time.perf_counter()
            torch.nn.functional.conv2d(x, w, padding=1)
            times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def _n_mining(n_images: int, holdout: float) -> int:
    return max(n_images - int(math.ceil(n_images * holdout)), 0)


def estimate_run_cost(n_images: int, clusterer: str = "temi", runs: list[dict] | None = None, *,
                      clusterer_params: dict | None = None, n_clusters: int | None = None,
                      corpus_cached: bool | None = None, corpus_size: int | None = None,
                      holdout_fraction: float = DEFAULT_HOLDOUT, speed: MachineSpeed | None = None,
                      n_encode: int | None = None) -> CostEstimate:
    """Estimate a run's wall time, from the worker's start to the end of the vote.

    ``speed`` (:func:`measure_speed`): every stage follows this machine's speed now: the reference
    figures x ``speed.slowdown``, TEMI's steps at the probed step time, the encoder's forward pass
    at the probed time; finished runs are then not used (their load is unknown).
    Without it, ``runs`` (dicts as returned by ``clustermine.store.list_runs``: ``status``,
    ``summary``, ``config``) give per-image rates measured here; a stage never measured here
    (e.g. the other clusterer) uses its reference rate.
    Linear in N plus fixed costs (``REFERENCE_FIXED_S``), except TEMI, which follows its schedule
    for the ``n_images x (1 - holdout_fraction)`` mining images and ``n_clusters`` (None: the
    default rule). ``n_encode``: images not yet in the feature cache (None: all).
    ``corpus_cached`` (see :func:`corpus_cache_state`) decides whether the corpus stage costs more
    than loading it; ``corpus_size`` (texts; None = the WordNet nouns) scales its first-use cost.
    """
    n = max(int(n_images), 0)
    n_enc = n if n_encode is None else min(max(int(n_encode), 0), n)
    schedule = temi_schedule(_n_mining(n, holdout_fraction), clusterer_params, n_clusters) if clusterer == "temi" else {}
    first_use = REFERENCE_CORPUS_S * (1.0 if corpus_size is None else max(int(corpus_size), 0) / REFERENCE_CORPUS_SIZE)
    if speed is not None:
        k = speed.slowdown
        rate = {s: REFERENCE_S_PER_IMAGE[s] * k for s in ("scan", "vote")}
        decode = max(REFERENCE_S_PER_IMAGE["encode"] - REFERENCE_FORWARD_S_PER_IMAGE, 0.0)
        rate["encode"] = decode * k + REFERENCE_FORWARD_S_PER_IMAGE * speed.parallel_slowdown
        if clusterer == "temi":
            cluster = temi_reference_seconds(schedule, n_clusters) * k if n else 0.0
            if speed.temi_work == schedule["n_heads"] * schedule["batch_size"] and not (n_clusters or 0) > REFERENCE_TEMI_FLAT_CLUSTERS:
                cluster = schedule["steps"] * speed.temi_step_s if n else 0.0
        else:
            cluster = REFERENCE_S_PER_IMAGE.get(f"cluster:{clusterer}", REFERENCE_S_PER_IMAGE["cluster:kmeans"]) * k * n
        fixed = {s: v * (speed.parallel_slowdown if s == "encode" else k) for s, v in REFERENCE_FIXED_S.items()}
        stages = {"start": fixed["start"], "scan": fixed["scan"] + rate["scan"] * n,
                  "encode": (fixed["encode"] + rate["encode"] * n_enc) if n_enc else 0.0,
                  "cluster": fixed["cluster"] + cluster, "vote": fixed["vote"] + rate["vote"] * n}
        corpus = fixed["corpus"] if corpus_cached else first_use * k
        source = speed.describe()
    else:
        rates, used = measured_rates(runs or [])
        stages = {s: REFERENCE_FIXED_S[s] for s in ("start", "scan", "encode", "cluster", "vote")}
        measured_any = False
        for stage in ("scan", "encode", f"cluster:{clusterer}", "vote"):
            r = rates.get(stage)
            measured_any |= r is not None
            name = stage.split(":")[0]
            if stage == "cluster:temi":
                stages[name] += (1.0 if r is None else r) * temi_reference_seconds(schedule, n_clusters) if n else 0.0
                continue
            if r is None:
                r = REFERENCE_S_PER_IMAGE.get(stage, REFERENCE_S_PER_IMAGE["cluster:kmeans"])
            stages[name] += r * (n_enc if name == "encode" else n)
        if not n_enc:
            stages["encode"] = 0.0
        corpus = REFERENCE_FIXED_S["corpus"] if corpus_cached else first_use
        source = (f"measured on this machine ({used} finished run{'s' if used != 1 else ''})" if measured_any
                  else REFERENCE_SOURCE)
    # ``seconds`` leaves out a first-use corpus embedding (``total_s`` adds it unless cached)
    seconds = sum(stages.values()) + (corpus if corpus_cached else 0.0)
    stages["corpus"] = corpus
    stages = {s: stages[s] for s in STAGE_ORDER}
    return CostEstimate(n, clusterer, seconds, first_use * (speed.slowdown if speed else 1.0), source, stages,
                        corpus_cached, schedule, speed)


def estimate_now(n_images: int, clusterer: str = "temi", *, clusterer_params: dict | None = None,
                 n_clusters: int | None = None, corpus_cached: bool | None = None, corpus_size: int | None = None,
                 holdout_fraction: float = DEFAULT_HOLDOUT, n_encode: int | None = None,
                 max_age_s: float = SPEED_TTL_S, probe: bool = True,
                 runs: list[dict] | None = None) -> CostEstimate:
    """:func:`estimate_run_cost` at this machine's speed now (:func:`measure_speed` of the TEMI step
    the run will train with, reused for ``max_age_s``): the estimate the Data page shows before
    launch and the job's plan for its whole-job ETA. ``probe=False`` (the job itself, which must not
    spend its time probing): a recent probe if there is one (:func:`cached_speed`, e.g. the Data
    page's), else the rates of ``runs`` / the reference figures."""
    schedule = (temi_schedule(_n_mining(max(int(n_images), 0), holdout_fraction), clusterer_params, n_clusters)
                if clusterer == "temi" else None)
    speed = measure_speed(schedule, max_age_s=max_age_s) if probe else cached_speed(schedule, max_age_s)
    return estimate_run_cost(n_images, clusterer, runs, clusterer_params=clusterer_params, n_clusters=n_clusters,
                             corpus_cached=corpus_cached, corpus_size=corpus_size, holdout_fraction=holdout_fraction,
                             speed=speed, n_encode=n_encode)


def job_eta(stage_estimates: dict[str, float], stage: str, done: int, total: int,
            stage_elapsed: float, first: tuple[float, int] | None = None) -> float | None:
    """Seconds left for the whole job: the rest of ``stage`` plus every later stage of STAGE_ORDER;
    None while ``stage`` has no rate yet (nothing done), where any number would be a guess that
    sits still (issue 18: "about 10 s left" for 25 s at 0 / 161 images).

    The current stage's rest is extrapolated from its own progress
    (``stage_elapsed / done x (total - done)``); with ``first`` = (elapsed, done) of the stage's
    first progress, from the progress since then, which leaves out a first batch's start-up (model
    load, decode workers: 2x too long an ETA at 80 images), and None until there is progress after
    it. Later stages use ``stage_estimates``
    (``CostEstimate.stages``), scaled by how much slower or faster than estimated the current stage
    runs (clipped to [0.5, 10]: a plan from reference figures, without a probe, may be 7x too
    quick on a busy machine) so that a busy machine lengthens the whole ETA, not just the current
    stage's.
    """
    if done <= 0 or total <= 0:
        return None
    est_now = float(stage_estimates.get(stage, 0.0))
    if first is not None and done < total:
        if done <= first[1] or stage_elapsed <= first[0]:
            return None
        rest = (stage_elapsed - first[0]) / (done - first[1]) * max(total - done, 0)
    else:
        rest = stage_elapsed / done * max(total - done, 0)
    projected = stage_elapsed + rest
    speed = min(max(projected / est_now, 0.5), 10.0) if est_now > 1.0 and stage_elapsed > 2.0 else 1.0
    later = STAGE_ORDER[STAGE_ORDER.index(stage) + 1:] if stage in STAGE_ORDER else ()
    return rest + speed * sum(float(stage_estimates.get(s, 0.0)) for s in later)


def corpus_cache_state(encoder, corpus_spec, template: str | None = None,
                       cache_dir: str | Path | None = None) -> bool | None:
    """True when the corpus embedding for (encoder, corpus, template) is in the text cache, False
    when not, None when it cannot be told (e.g. an unreadable corpus file). ``encoder``: a loaded
    encoder (its fingerprint names the cache entry); ``corpus_spec``: a corpus name / file or a loaded
    ``clustermine.method.corpus.Corpus``."""

    try:
        corpus = corpus_spec if hasattr(corpus_spec, "digest") else load_corpus(corpus_spec)
        key = embedding_cache_key(encoder.fingerprint_id, corpus, template or encoder.text_template)
    except (ClusterMineError, OSError, ValueError):
        return None
    root = Path(cache_dir) if cache_dir else cache_root() / "text"
    return (root / f"{key}.npy").is_file()

"""Issue 12, section 1: TEMI's schedule scaled to N, one whole-job ETA, the pre-launch cost line."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from clustermine.method.clustering import temi as temi_mod
from clustermine.method.clustering.temi import TEMI, default_schedule
from test_app import app_env, no_exception, open_app  # noqa: F401  (app_env is a fixture)


# ====================================================================== TEMI schedule rule
# Epochs and steps worked out by hand: whole epochs of N // batch steps reaching max(floor, steps of N // 2),
# e.g. N = 144: 9 steps an epoch, N // 2 = 72 runs 4 x 375 = 1,500, so ceil(1500 / 9) = 167 epochs, 1,503 steps.
@pytest.mark.parametrize("n, c, heads, min_steps, batch, epochs, steps", [
    (40, 2, 4, 1500, 10, 375, 1500),         # batch capped at N / 4
    (144, 8, 4, 1500, 16, 167, 1503),        # a 160-image first run (10 % held out, default C = 8): 18 per cluster
    (144, None, 4, 1500, 16, 167, 1503),     # C unknown: heads from N only
    (210, 21, 8, 1500, 16, 116, 1508),       # 10 images per cluster: more heads, within the cost of N = 420 (issue 18)
    (72, 6, 4, 1500, 16, 375, 1500),         # an 80-image first run (C = 6): the budget of N = 144 allows no more heads
    (500, 4, 4, 1500, 32, 101, 1515),        # 15 steps/epoch; N // 2 = 250 runs 15 x 101 = 1,515
    (700, 19, 4, 1700, 32, 81, 1701),        # 1000 + N steps: 21 steps/epoch, ceil(1700 / 21) = 81
    (1000, 22, 4, 2000, 64, 134, 2010),      # METHOD 2.9b's batch 64 at N = 1000
    (2000, 32, 8, 2000, 128, 134, 2010),     # 15 steps/epoch; N // 2 = 1000 runs 2,010
    (3000, 39, 12, 2000, 256, 182, 2002),    # 3000/16 = 187.5 -> 2^8; 11 steps/epoch, ceil(2000 / 11) = 182
    (100_000, 200, 16, 3907, 256, 11, 4290),  # N > 20,000: >= 5,000 samples per cluster: ceil(5000 x 200 / 256);
                                              # 390 steps/epoch, N // 2 = 50,000 runs 195 x 21 = 4,095
])
def test_default_schedule_known_answers(n, c, heads, min_steps, batch, epochs, steps):
    s = default_schedule(n, c)
    assert (s["n_heads"], s["min_steps"], s["batch_size"]) == (heads, min_steps, batch)
    assert (s["epochs"], s["steps"]) == (epochs, steps)
    assert s["steps"] == (n // batch) * s["epochs"] >= min_steps


@pytest.mark.parametrize("c_rule", ["default", 2, 5, 21, 100])
def test_no_collection_costs_more_than_one_twice_its_size(c_rule):
    """Issue 18: 80 images ran 16 heads x batch 18 x 2,000 steps (986 s), 160 images 4 x 16 x 1,503 (21 s).
    A step costs a fixed part plus a part per head x batch sample: with steps and steps x heads x batch
    both never falling from N to 2N, no weighting of the two can make N cost more than 2N."""
    from clustermine.method.clustering import default_n_clusters

    ns = list(range(4, 3000)) + list(range(3000, 60_000, 173)) + [100_000, 640_583]
    for n in ns:
        c1, c2 = (default_n_clusters(n), default_n_clusters(2 * n)) if c_rule == "default" else (c_rule, c_rule)
        if c1 > n // 2:
            continue
        a, b = default_schedule(n, c1), default_schedule(2 * n, c2)
        assert a["steps"] <= b["steps"], (n, a, b)
        assert a["steps"] * a["n_heads"] * a["batch_size"] <= b["steps"] * b["n_heads"] * b["batch_size"], (n, a, b)
        # and one step never needs more threads than at 2N (two threads on a busy 2-core machine: 5-25x slower)
        # (heads x batch up to 256 runs on one thread)
        assert (a["n_heads"] * a["batch_size"] > 256) <= (b["n_heads"] * b["batch_size"] > 256)


def test_predicted_cost_never_falls_as_n_doubles():
    from clustermine.workflows.estimate import MachineSpeed, estimate_run_cost

    for clusterer in ("temi", "kmeans"):
        for speed in (None, MachineSpeed(3.0, 1, 0.01, 5.0)):
            costs = {n: estimate_run_cost(n, clusterer, corpus_cached=True, speed=speed).total_s
                     for n in range(10, 2500, 7)}
            for n in costs:
                if 2 * n in costs:
                    assert costs[n] <= costs[2 * n], (clusterer, n)


def test_small_clusters_get_more_heads_only_within_the_budget():
    # 10 samples a cluster: more heads than the N-only rule (4), on one thread
    s = default_schedule(210, 21)
    assert s["n_heads"] > 4 and s["n_heads"] * s["batch_size"] <= 256  # one thread's step
    # never more than 16 heads, never fewer than the N-only rule
    for n in range(8, 400):
        for c in (2, n // 8 or 1, n // 4 or 1):
            h = default_schedule(n, c)["n_heads"]
            assert temi_mod.default_n_heads(n) <= h <= 16


def test_small_n_never_trains_under_the_step_floor():
    # METHOD 2.9b: under ~1.5k steps seeds disagree; cheaper runs come from heads and batch, not steps
    for n in range(40, 4000, 37):
        assert default_schedule(n)["steps"] >= 1500


def test_explicit_schedule_parameters_win():
    s = default_schedule(144, n_heads=16, batch_size=32, min_steps=2000)
    assert (s["n_heads"], s["batch_size"], s["steps"]) == (16, 32, 4 * 500)
    assert default_schedule(144, epochs=3)["steps"] == (144 // 16) * 3


def test_temi_resolves_none_from_n_and_keeps_explicit_values():
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(m, 0.3, size=(20, 8)) for m in (-2, 2)]).astype(np.float32)
    small = dict(hidden_dim=16, bottleneck_dim=8, n_threads=1)
    m = TEMI(2, random_state=0, **small).fit(X)
    assert m.n_heads is None and m.min_steps is None  # sklearn: __init__ params stay as given
    assert (m.n_heads_, m.min_steps_, m.batch_size_) == (4, 1500, 10)
    assert m.head_losses_.shape == (4,)
    assert m.n_iter_ == (40 // 10) * math.ceil(1500 / 4)
    e = TEMI(2, random_state=0, n_heads=3, batch_size=8, epochs=2, **small).fit(X)
    assert (e.n_heads_, e.batch_size_, e.n_iter_) == (3, 8, (40 // 8) * 2)
    assert e.head_losses_.shape == (3,)


# ====================================================================== the estimate
def test_estimate_follows_temi_schedule_and_measured_speed():
    from clustermine.workflows.estimate import estimate_run_cost

    # The reference machine (BENCHMARKS "Clustering: TEMI vs k-means" and "Estimates"): a TEMI step costs
    # 1 ms + 36 us per head x sample; fixed costs 0.3 s (cluster), 3.0 s (encode), 0.15 s (loading a
    # cached corpus); embedding the 117,798 WordNet nouns 728 s.
    # 160 images, 10 % held out -> 144 mining images: 4 heads, batch 16, 9 steps/epoch x 167 epochs
    by_hand = 1503 * (0.001 + 36e-6 * 4 * 16)  # = 4.966 s
    ref = estimate_run_cost(160, "temi", [], corpus_cached=True)
    assert ref.stages["cluster"] == pytest.approx(4.965912 + 0.3)
    assert ref.stages["start"] > 0  # the worker's start and the encoder load are part of the job
    assert ref.stages["corpus"] == pytest.approx(0.15)  # loading the cached embedding
    assert ref.total_s == pytest.approx(ref.seconds) == pytest.approx(sum(ref.stages.values()))
    assert ref.line().startswith("~") and "corpus cached, TEMI 4 heads x 1,503 steps" in ref.line()
    # a finished run here whose TEMI took twice its schedule's reference time: this machine is 2x slower
    sched = {"n_heads": 8, "batch_size": 128, "steps": 2000}
    ref_run = 2000 * (0.001 + 36e-6 * 8 * 128)  # = 75.728 s
    runs = [{"status": "done", "config": {"clusterer": "temi"},
             "summary": {"n_images": 2200, "timings_s": {"encode": 44.0, "cluster": 2 * ref_run, "vote": 2.2},
                         "temi_schedule": sched}}]
    est = estimate_run_cost(160, "temi", runs, corpus_cached=False)
    assert est.stages["cluster"] == pytest.approx(2 * by_hand + 0.3)
    assert est.stages["encode"] == pytest.approx(160 * 44.0 / 2200 + 3.0)  # 3.2 s measured rate + fixed
    assert est.total_s == pytest.approx(est.seconds + 728.0)
    assert "not cached" in est.detail
    # images already in the feature cache are not encoded again
    assert estimate_run_cost(160, "temi", runs, n_encode=0).stages["encode"] == 0.0
    # an explicit head count in the run's options changes the estimate (8 heads: 1 + 36e-6 * 128 ms/step)
    eight = estimate_run_cost(160, "temi", [], clusterer_params={"n_heads": 8})
    assert eight.schedule["n_heads"] == 8 and eight.stages["cluster"] > ref.stages["cluster"]
    # a smaller custom corpus costs proportionally less to embed
    assert estimate_run_cost(10, "kmeans", corpus_size=117_798 // 2).stages["corpus"] == pytest.approx(728.0 / 2)


def test_estimate_follows_the_measured_speed_of_this_machine_now():
    from clustermine.workflows.estimate import MachineSpeed, estimate_run_cost

    runs = [{"status": "done", "config": {"clusterer": "kmeans"},  # measured under another load: not used
             "summary": {"n_images": 100, "timings_s": {"encode": 0.1, "cluster": 0.01, "vote": 0.01}}}]
    for clusterer in ("temi", "kmeans"):
        one = estimate_run_cost(400, clusterer, runs, corpus_cached=True, speed=MachineSpeed(1.0, 1, 0.004, 1.0))
        # twice as slow (one thread and several): every stage takes twice as long
        two = estimate_run_cost(400, clusterer, runs, corpus_cached=True, speed=MachineSpeed(2.0, 1, 0.008, 2.0))
        assert "measured now" in one.source and "2.0x slower" in two.source
        for stage, secs in one.stages.items():
            assert two.stages[stage] == pytest.approx(2 * secs), stage
        assert two.total_s == pytest.approx(2 * one.total_s)
        # only the encoder's forward pass follows the multi-threaded probe
        par = estimate_run_cost(400, clusterer, runs, corpus_cached=True, speed=MachineSpeed(1.0, 1, 0.004, 3.0))
        assert par.stages["encode"] > 2 * one.stages["encode"] and par.stages["vote"] == one.stages["vote"]
    # TEMI's probed step time is used when the probe ran the schedule's heads x batch
    temi = estimate_run_cost(160, "temi", speed=MachineSpeed(1.0, 4 * 16, 0.010, 1.0))
    slow_step = estimate_run_cost(160, "temi", speed=MachineSpeed(1.0, 4 * 16, 0.030, 1.0))
    assert temi.schedule["steps"] == 1503
    assert slow_step.stages["cluster"] - temi.stages["cluster"] == pytest.approx(1503 * 0.020)
    other = estimate_run_cost(160, "temi", speed=MachineSpeed(1.0, 16 * 16, 0.030, 1.0))
    assert other.stages["cluster"] < slow_step.stages["cluster"]  # another step size: the reference formula


def test_speed_probe_runs_real_temi_steps_and_is_reused_briefly():
    from clustermine.workflows.estimate import measure_speed

    small = measure_speed({"n_heads": 4, "batch_size": 16}, budget_s=0.3, max_age_s=0)
    assert small.temi_work == 64 and small.temi_step_s > 0 and small.slowdown > 0 and small.parallel_slowdown > 0
    assert measure_speed({"n_heads": 4, "batch_size": 16}, max_age_s=60) is small  # reused within the TTL
    again = measure_speed({"n_heads": 4, "batch_size": 16}, budget_s=0.3, max_age_s=0)
    assert again is not small and again.measured_at >= small.measured_at
    big = measure_speed({"n_heads": 16, "batch_size": 16}, budget_s=0.3, max_age_s=0)
    assert big.temi_work == 256


def test_job_eta_covers_every_remaining_stage():
    from clustermine.workflows.estimate import job_eta

    plan = {"scan": 1.0, "encode": 10.0, "corpus": 0.0, "cluster": 20.0, "vote": 2.0}
    # stage without a rate yet: no number ("starting…"), however long it has run
    assert job_eta(plan, "encode", 0, 10, 3.0) is None
    assert job_eta(plan, "vote", 0, 100, 30.0) is None
    # half done in 4 s: 4 s left of it; it runs at 8/10 of its estimate, so later stages scale by 0.8
    assert job_eta(plan, "encode", 5, 10, 4.0) == pytest.approx(4.0 + 0.8 * 22.0)
    # a slow first batch (model load: 3 s for the first image) is left out of the rate: 0.25 s an image
    # (and the stage, projected to 4 + 1.25 s, runs at 0.525 of its estimate) ...
    assert job_eta(plan, "encode", 5, 10, 4.0, first=(3.0, 1)) == pytest.approx(5 * 0.25 + 0.525 * 22.0)
    # ... and until progress follows that first batch there is no rate
    assert job_eta(plan, "encode", 1, 10, 3.0, first=(3.0, 1)) is None
    # the stage done in 3 s of its 10 s estimate: later stages scale down, by at most half
    assert job_eta(plan, "encode", 10, 10, 3.0, first=(3.0, 10)) == pytest.approx(0.5 * 22.0)
    # the last stage: only its own rest
    assert job_eta(plan, "vote", 1, 2, 1.0) == pytest.approx(1.0)
    # a stage far slower than estimated: later stages lengthen by at most 10x
    assert job_eta(plan, "encode", 1, 10, 100.0) == pytest.approx(900.0 + 10.0 * 22.0)


def test_progress_json_mid_job_has_a_whole_job_eta(tmp_path):
    from conftest import copy_subset, shared

    from clustermine.workflows.pipeline import MineConfig, mine

    images = copy_subset(shared("imagenette_train100"), tmp_path / "images", ["n01440764", "n02102040"], 6)
    words = ["fish", "dog", "cassette", "church", "truck", "parachute", "golf ball", "chainsaw"]
    corpus = tmp_path / "concepts.txt"
    corpus.write_text("\n".join(words) + "\n", encoding="utf-8")
    cache = tmp_path / "cache"  # empty: this small corpus is not cached yet
    seen: dict[str, list[dict]] = {}
    run_dir = tmp_path / "run"

    def progress(stage: str, done: int, total: int) -> None:
        p = run_dir / "progress.json"
        if p.is_file():
            prog = json.loads(p.read_text())
            if prog.get("stage") == stage and prog.get("plan_s"):
                seen.setdefault(stage, []).append(prog)

    from clustermine.workflows.estimate import measure_speed

    probe = measure_speed(max_age_s=0)  # as the Data page does before launch: the job reuses it
    run = mine(images, run_dir, MineConfig(clusterer="kmeans", n_clusters=2, corpus=str(corpus), batch_size=4),
               progress=progress, cache_dir=cache)
    assert {"encode", "corpus", "cluster"} <= set(seen)
    plan = seen["encode"][0]["plan_s"]
    slowdown = run.meta["summary"]["speed_slowdown"]  # this machine's speed, probed before launch
    assert slowdown == pytest.approx(probe.slowdown, abs=1e-3)
    # the reference machine embeds 117,798 texts in 728 s; 8 texts at this machine's slowdown
    assert plan["corpus"] == pytest.approx(728.0 * 8 / 117_798 * slowdown, rel=0.01)
    assert "corpus not cached" in seen["encode"][0]["plan_detail"] and "k-means" in seen["encode"][0]["plan_detail"]
    # as a stage starts (nothing done) there is no rate: no number, the page says "starting…"
    for stage in ("encode", "corpus", "cluster"):
        assert seen[stage][0]["done"] == 0 and seen[stage][0]["job_eta_s"] is None, stage
    # once encoding has a rate (progress after its first batch): its rest + every later stage, at least
    # the later stages' half
    # (progress.json is read as the job wrote it last: the first batch's own entry may already be
    # overwritten, so the rule is checked by batch size, batch_size = 4, not by the first entry read)
    first_batch = 4
    assert all(p["job_eta_s"] is None for p in seen["encode"] if 0 < p["done"] <= first_batch)
    enc = [p for p in seen["encode"] if p["done"] > first_batch]
    later = plan["corpus"] + plan["cluster"] + plan["vote"]
    assert enc and all(p["job_eta_s"] is not None and p["job_eta_s"] >= 0.5 * later - 1e-3 for p in enc)


# ====================================================================== Data page: pre-launch line
def _cost_info(at) -> str:
    found = [i.value.replace("\\", "") for i in at.info if "Estimated cost" in i.value]  # markdown escapes
    assert len(found) == 1, [i.value for i in at.info]
    return found[0]


def test_data_page_shows_the_cost_before_launch(app_env):
    from conftest import shared

    files = sorted((shared("imagenette_train100") / "n01440764").iterdir())[:3]
    at = open_app(None, "pages/data.py")
    no_exception(at)
    assert not [i for i in at.info if "Estimated cost" in i.value]  # nothing chosen yet
    at.file_uploader(key="up_files").set_value([(f.name, f.read_bytes(), "image/jpeg") for f in files]).run()
    no_exception(at)
    temi_line = _cost_info(at)
    # 3 images: 2 mining images in 2 clusters, clusters far under 15 images -> more than the 4 heads of N
    assert "3 images" in temi_line and "TEMI 13 heads" in temi_line and "on this machine" in temi_line
    assert "speed measured now" in temi_line  # a probe of this machine, not rates of earlier runs
    assert "corpus" in temi_line
    at.radio(key="clusterer").set_value("kmeans").run()
    no_exception(at)
    km_line = _cost_info(at)
    assert "k-means" in km_line and "TEMI" not in km_line


def test_data_page_shows_the_whole_job_eta_of_a_running_job(app_env):
    import time

    from clustermine.store import Run

    run = Run.open(app_env)
    run.set_status("running")  # no job.json: a CLI job, left alone by the app's reconcile
    now = time.time()
    run.write_progress({"stage": "encode", "stage_index": 1, "stages": ["scan", "encode", "corpus", "cluster", "vote"],
                        "done": 10, "total": 40, "started": now - 5, "stage_started": now - 4, "updated": now,
                        "eta_s": 12.0, "status": "running", "job_eta_s": 75.0,
                        "plan_s": {"scan": 0.0, "encode": 16.0, "corpus": 0.0, "cluster": 55.0, "vote": 0.1},
                        "plan_detail": "corpus cached, TEMI 4 heads x 1,503 steps"})
    at = open_app(app_env.name, "pages/data.py")
    no_exception(at)
    shown = "\n".join(m.value for m in at.markdown).replace("\\", "")
    assert "Whole job: about 1 min 15 s left" in shown and "TEMI 4 heads x 1,503 steps" in shown
    assert any("stage ETA 12 s" in p.proto.text for p in at.get("progress"))


def test_first_page_says_whether_the_corpus_is_cached(app_env, tmp_path, monkeypatch):
    import streamlit as st

    at = open_app(None, "pages/runs.py")
    no_exception(at)
    shown = "\n".join(m.value for m in at.markdown).replace("\\", "")
    assert "already embedded on this machine (cached)" in shown  # the test cache holds the WordNet embedding
    assert "TEMI (4 heads)" in shown  # 200 images: clip(round(180 / 250), 4, 16) heads
    monkeypatch.setenv("CLUSTERMINE_CACHE", str(tmp_path / "empty-cache"))
    st.cache_data.clear()  # the cache state is memoised for 30 s
    at = open_app(None, "pages/runs.py")
    shown = "\n".join(m.value for m in at.markdown).replace("\\", "")
    assert "not cached yet" in shown and "clustermine prepare" in shown


# ====================================================================== issue 18: first paint, job panel
def test_runs_page_first_paint_needs_no_torch_and_no_model():
    """Point 13: the cost lines and the New-run button come before anything that imports torch or
    loads the encoder (3-20 s on a busy machine); those only refine the lines afterwards."""
    import subprocess
    import sys

    code = ("import sys; from ui import home; lines = home.first_paint_lines([]); "
            "print('torch' in sys.modules, 'clustermine.method.encoders' in sys.modules); print('\\n'.join(lines))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    assert out.returncode == 0, out.stderr
    first, *lines = out.stdout.splitlines()
    assert first == "False False"
    assert any("200 images: about" in ln and "with TEMI" in ln for ln in lines)
    assert any("checking whether it is already embedded" in ln for ln in lines)


def test_runs_page_draws_new_run_before_the_costs_and_refines_them(app_env):
    import streamlit as st

    st.cache_data.clear()  # the corpus cache state is memoised for 30 s (another test empties the cache)
    at = open_app(None, "pages/runs.py")
    no_exception(at)
    # the button is the page's first element after the header: nothing slow is drawn before it
    labels = [b.label for b in at.button]
    assert labels and labels[0] == "New run"
    shown = "\n".join(m.value for m in at.markdown).replace("\\", "")
    assert "What a run costs on this machine" in shown
    assert "measured now" in shown  # refined with this machine's speed at the end of the script run
    assert "checking whether" not in shown and "already embedded on this machine (cached)" in shown
    from ui import home
    assert home._KNOWN_CORPUS_STATE.get("default") is True  # the next first paint needs no lookup


def _write_running(run, stage: str, done: int, total: int, job_eta_s):
    import time

    now = time.time()
    run.write_progress({"stage": stage, "stage_index": ["scan", "encode", "corpus", "cluster", "vote"].index(stage),
                        "stages": ["scan", "encode", "corpus", "cluster", "vote"], "done": done, "total": total,
                        "started": now - 5, "stage_started": now - 4, "updated": now,
                        "eta_s": None if not done else 3.0, "status": "running", "job_eta_s": job_eta_s,
                        "plan_s": {"start": 3.0, "scan": 0.0, "encode": 16.0, "corpus": 0.0, "cluster": 55.0,
                                   "vote": 0.4},
                        "plan_detail": "corpus cached, TEMI 4 heads x 1,503 steps"})


def test_job_panel_says_starting_without_a_rate_and_never_zero_seconds(app_env):
    from clustermine.store import Run

    run = Run.open(app_env)
    run.set_status("running")  # no job.json: a CLI job, left alone by the app's reconcile
    _write_running(run, "encode", 0, 161, None)  # encoding, no image done yet
    at = open_app(app_env.name, "pages/data.py")
    no_exception(at)
    shown = "\n".join(m.value for m in at.markdown).replace("\\", "")
    assert "Whole job: starting…" in shown and "left" not in shown.split("Whole job:")[1].split("\n")[0]
    assert any("stage ETA starting…" in p.proto.text for p in at.get("progress"))
    _write_running(run, "vote", 3, 4, 0.3)  # the vote's last moments
    at = open_app(app_env.name, "pages/data.py")
    shown = "\n".join(m.value for m in at.markdown).replace("\\", "")
    assert "Whole job: finishing…" in shown and "0 s left" not in shown

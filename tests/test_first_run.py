"""Issue 12, section 1: TEMI's schedule scaled to N, one whole-job ETA, the pre-launch cost line."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from clustermine.clustering import temi as temi_mod
from clustermine.clustering.temi import TEMI, default_schedule
from test_app import app_env, no_exception, open_app  # noqa: F401  (app_env is a fixture)


# ====================================================================== TEMI schedule rule
@pytest.mark.parametrize("n, c, heads, min_steps, batch", [
    (40, 2, 4, 1500, 10),        # batch capped at N / 4
    (144, 8, 4, 1500, 16),       # a 160-image first run (10 % held out, default C = 8): 18 per cluster
    (144, None, 4, 1500, 16),    # C unknown: heads from N only
    (210, 21, 16, 2000, 32),     # 10 images per cluster: small clusters keep the former schedule
    (500, 4, 4, 1500, 32),
    (700, 19, 4, 1700, 32),      # 1000 + N steps
    (1000, 22, 4, 2000, 64),     # METHOD 2.9b's batch 64 at N = 1000
    (2000, 32, 8, 2000, 128),
    (3000, 39, 12, 2000, 256),   # 3000/16 = 187.5 -> 2^8
    (100_000, 200, 16, 3907, 256),  # N > 20,000: >= 5,000 samples per cluster (temi.VISITS_PER_CLUSTER)
])
def test_default_schedule_known_answers(n, c, heads, min_steps, batch):
    s = default_schedule(n, c)
    assert (s["n_heads"], s["min_steps"], s["batch_size"]) == (heads, min_steps, batch)
    spe = n // batch
    assert s["epochs"] == min(math.ceil(min_steps / spe), temi_mod.MAX_EPOCHS)
    assert s["steps"] == spe * s["epochs"]
    assert s["steps"] >= min(min_steps, spe * temi_mod.MAX_EPOCHS)


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
    from clustermine.estimate import (REFERENCE_CORPUS_S, REFERENCE_TEMI_S_PER_HEAD_SAMPLE,
                                      REFERENCE_TEMI_S_PER_STEP, estimate_run_cost)

    # 160 images, 10 % held out -> 144 mining images: 4 heads, batch 16, 9 steps/epoch x 167 epochs
    by_hand = 1503 * (REFERENCE_TEMI_S_PER_STEP + REFERENCE_TEMI_S_PER_HEAD_SAMPLE * 4 * 16)
    ref = estimate_run_cost(160, "temi", [], corpus_cached=True)
    assert ref.stages["cluster"] == pytest.approx(by_hand)
    assert ref.stages["corpus"] == 0.0 and ref.total_s == pytest.approx(ref.seconds)
    assert ref.line().startswith("~") and "corpus cached, TEMI 4 heads x 1,503 steps" in ref.line()
    # a finished run here whose TEMI took twice its schedule's reference time: this machine is 2x slower
    sched = {"n_heads": 8, "batch_size": 128, "steps": 2000}
    ref_run = 2000 * (REFERENCE_TEMI_S_PER_STEP + REFERENCE_TEMI_S_PER_HEAD_SAMPLE * 8 * 128)
    runs = [{"status": "done", "config": {"clusterer": "temi"},
             "summary": {"n_images": 2200, "timings_s": {"encode": 44.0, "cluster": 2 * ref_run, "vote": 2.2},
                         "temi_schedule": sched}}]
    est = estimate_run_cost(160, "temi", runs, corpus_cached=False)
    assert est.stages["cluster"] == pytest.approx(2 * by_hand)
    assert est.stages["encode"] == pytest.approx(160 * 44.0 / 2200)
    assert est.total_s == pytest.approx(est.seconds + REFERENCE_CORPUS_S)
    assert "not cached" in est.detail
    # an explicit head count in the run's options changes the estimate (8 heads: 1 + 36e-6 * 128 ms/step)
    eight = estimate_run_cost(160, "temi", [], clusterer_params={"n_heads": 8})
    assert eight.schedule["n_heads"] == 8 and eight.stages["cluster"] > ref.stages["cluster"]
    # a smaller custom corpus costs proportionally less to embed
    assert estimate_run_cost(10, "kmeans", corpus_size=117_798 // 2).stages["corpus"] == pytest.approx(
        REFERENCE_CORPUS_S * (117_798 // 2) / 117_798)


def test_job_eta_covers_every_remaining_stage():
    from clustermine.estimate import job_eta

    plan = {"scan": 1.0, "encode": 10.0, "corpus": 0.0, "cluster": 20.0, "vote": 2.0}
    # stage not started yet: its estimate minus the time spent, plus all later stages
    assert job_eta(plan, "encode", 0, 10, 3.0) == pytest.approx(7.0 + 22.0)
    # half done in 4 s: 4 s left of it; it runs at 8/10 of its estimate, so later stages scale by 0.8
    assert job_eta(plan, "encode", 5, 10, 4.0) == pytest.approx(4.0 + 0.8 * 22.0)
    # the last stage: only its own rest
    assert job_eta(plan, "vote", 1, 2, 1.0) == pytest.approx(1.0)
    # a stage far slower than estimated: later stages lengthen by at most 4x
    assert job_eta(plan, "encode", 1, 10, 100.0) == pytest.approx(900.0 + 4.0 * 22.0)


def test_progress_json_mid_job_has_a_whole_job_eta(tmp_path):
    from conftest import copy_subset, shared

    from clustermine.estimate import REFERENCE_CORPUS_S, REFERENCE_CORPUS_SIZE
    from clustermine.pipeline import MineConfig, mine

    images = copy_subset(shared("imagenette_train100"), tmp_path / "images", ["n01440764", "n02102040"], 6)
    words = ["fish", "dog", "cassette", "church", "truck", "parachute", "golf ball", "chainsaw"]
    corpus = tmp_path / "concepts.txt"
    corpus.write_text("\n".join(words) + "\n", encoding="utf-8")
    cache = tmp_path / "cache"  # empty: this small corpus is not cached yet
    seen: dict[str, dict] = {}
    run_dir = tmp_path / "run"

    def progress(stage: str, done: int, total: int) -> None:
        p = run_dir / "progress.json"
        if p.is_file() and stage not in seen:
            prog = json.loads(p.read_text())
            if prog.get("stage") == stage and prog.get("job_eta_s") is not None:
                seen[stage] = prog

    mine(images, run_dir, MineConfig(clusterer="kmeans", n_clusters=2, corpus=str(corpus)),
         progress=progress, cache_dir=cache)
    assert {"encode", "corpus", "cluster"} <= set(seen)
    plan = seen["encode"]["plan_s"]
    assert plan["corpus"] == pytest.approx(REFERENCE_CORPUS_S * len(words) / REFERENCE_CORPUS_SIZE, abs=1e-3)
    assert "corpus not cached" in seen["encode"]["plan_detail"] and "k-means" in seen["encode"]["plan_detail"]
    # written as a stage starts (done = 0): the stage's estimate (less a moment) + every later stage
    enc = seen["encode"]
    later = plan["corpus"] + plan["cluster"] + plan["vote"]
    assert later - 2e-3 <= enc["job_eta_s"] <= plan["encode"] + later + 2e-3
    assert enc["job_eta_s"] > later + 0.5 * plan["encode"]  # encoding 12 images is most of what is left
    clu = seen["cluster"]
    assert plan["vote"] - 2e-3 <= clu["job_eta_s"] <= plan["cluster"] + plan["vote"] + 2e-3


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
    # 3 images: 2 mining images in 2 clusters, clusters far under 15 images -> the former 16 heads
    assert "3 images" in temi_line and "TEMI 16 heads" in temi_line and "on this machine" in temi_line
    assert "corpus" in temi_line
    at.radio(key="clusterer").set_value("kmeans").run()
    no_exception(at)
    km_line = _cost_info(at)
    assert "k-means" in km_line and "TEMI" not in km_line


def test_data_page_shows_the_whole_job_eta_of_a_running_job(app_env):
    import time

    from clustermine.runs import Run

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

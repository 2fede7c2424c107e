"""One home per workflow and per default (issue 19, point 4): the run's encoder, its clusterer for
mine / re-mine / stability, the TPR default, the stage names and who signs a decision."""

from __future__ import annotations

import inspect

from clustermine.core import config
from clustermine.core.config import DEFAULT_TPR, STAGES, MineConfig, user_identity
from clustermine.method.clustering import TEMI, KMeansClusterer
from clustermine.store import Run
from clustermine.workflows import estimate, remine, stability, whatif
from clustermine.workflows.recluster import clusterer_device, run_clusterer


def test_the_runs_encoder_is_read_in_one_place(small_run):
    run = Run.open(small_run)
    assert run.encoder_spec == run.meta["encoder"]["spec"] == "offline"
    run.meta.pop("encoder")
    assert run.encoder_spec == run.config["encoder"]
    run.config.pop("encoder", None)
    assert run.encoder_spec == MineConfig.encoder


def test_the_runs_clusterer_has_one_home(small_run):
    cfg = Run.open(small_run).config
    est = run_clusterer(cfg, 3)
    assert isinstance(est, KMeansClusterer) and est.random_state == cfg["seed"] and est.n_clusters == 3
    assert run_clusterer(cfg, 3, seed=7).random_state == 7
    # a stored config without a clusterer gets MineConfig's default (TEMI), never a silent k-means
    bare = {k: v for k, v in cfg.items() if k not in ("clusterer", "clusterer_params")}
    assert isinstance(run_clusterer(bare, 3), TEMI)
    assert clusterer_device(MineConfig(clusterer="kmeans", device="auto")) == "cpu"
    assert clusterer_device(MineConfig(clusterer="temi", device="cuda:7")) == "cpu"  # not here: this CPU
    for module in (remine, stability):
        src = inspect.getsource(module)
        assert "make_clusterer(" not in src and "run_clusterer(" in src


def test_defaults_are_stated_once(monkeypatch):
    assert DEFAULT_TPR == 0.95
    assert inspect.signature(whatif.run_detector).parameters["tpr"].default == DEFAULT_TPR
    assert inspect.signature(whatif.calibration).parameters["tpr"].default == DEFAULT_TPR
    assert estimate.STAGE_ORDER[1:] == STAGES
    monkeypatch.setenv("USER", "ann")
    assert user_identity(None) == "ann" and user_identity("  bo ") == "bo"
    monkeypatch.delenv("USER")
    assert user_identity("") == "unknown"
    assert "USER" not in inspect.getsource(remine) and "os.environ" not in inspect.getsource(config.MineConfig)

"""Mining settings live in one place (issue 9 §3): MineConfig's defaults, the CLI flags derived from
it, the run's stored config read back by ``clustermine resume``, and the per-encoder default τ."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from clustermine.cli import _parser, config_from_args
from clustermine.core.config import MineConfig, default_tau
from clustermine.core.errors import ClusterMineError
from clustermine.workflows.whatif import run_detector


def _parse(*flags: str) -> MineConfig:
    return config_from_args(_parser().parse_args(["mine", "imgs", "--out", "run", *flags]))


def test_no_flags_give_exactly_mineconfig_defaults():
    assert _parse() == MineConfig()
    assert _parse().tau is None  # "the encoder's default", resolved when the run is created


def test_known_command_line_gives_the_expected_config():
    cfg = _parse("--encoder", "openclip:ViT-B-32:openai", "--clusters", "7", "--clusterer", "kmeans",
                 "--clusterer-param", "n_init=3", "--clusterer-param", "algorithm=lloyd",
                 "--clusterer-param", "tol=1e-5", "--corpus", "my.txt", "--template", "a photo of a {}.",
                 "--tau", "0.02", "--seed", "4", "--holdout", "0.2", "--topk", "3", "--batch-size", "8",
                 "--device", "cpu", "--max-pixels", "1000000")
    assert cfg == MineConfig(encoder="openclip:ViT-B-32:openai", n_clusters=7, clusterer="kmeans",
                             clusterer_params={"n_init": 3, "algorithm": "lloyd", "tol": 1e-5}, corpus="my.txt",
                             template="a photo of a {}.", tau=0.02, seed=4, holdout_fraction=0.2, topk=3,
                             batch_size=8, device="cpu", max_pixels=1_000_000)


# The flag and a valid value different from the default, per field: every field must be settable.
NON_DEFAULT = {"encoder": ("--encoder", "openclip:RN50:openai"), "n_clusters": ("--clusters", "12"),
               "clusterer": ("--clusterer", "kmeans"), "clusterer_params": ("--clusterer-param", "n_heads=4"),
               "corpus": ("--corpus", "wordnet-nouns-adjectives"), "template": ("--template", "itap of a {}."),
               "tau": ("--tau", "0.125"), "seed": ("--seed", "9"), "holdout_fraction": ("--holdout", "0.3"),
               "topk": ("--topk", "2"), "batch_size": ("--batch-size", "16"), "device": ("--device", "cpu"),
               "max_pixels": ("--max-pixels", "5000")}


@pytest.mark.parametrize("name", [f.name for f in dataclasses.fields(MineConfig)])
def test_every_setting_is_reachable_from_the_cli(name):
    assert name in NON_DEFAULT, f"MineConfig.{name} is new: add its flag and a value to NON_DEFAULT"
    cfg = _parse(*NON_DEFAULT[name])
    changed = {f.name for f in dataclasses.fields(MineConfig) if getattr(cfg, f.name) != getattr(MineConfig(), f.name)}
    assert changed == {name}


def test_clusterer_names_match_the_clustering_registry():
    from clustermine.method.clustering import CLUSTERERS
    from clustermine.core.config import CLUSTERER_NAMES

    assert set(CLUSTERER_NAMES) == set(CLUSTERERS) and MineConfig().clusterer in CLUSTERERS


def test_bad_flags_and_bad_stored_settings_are_refused_with_a_message(capsys):
    with pytest.raises(SystemExit):
        _parse("--clusterer-param", "no-equals-sign")
    assert "KEY=VALUE" in capsys.readouterr().err
    with pytest.raises(ClusterMineError, match="tau"):
        _parse("--tau", "-1")
    with pytest.raises(ClusterMineError, match=r"run\.json: unknown setting\(s\) colour"):
        MineConfig.from_dict({"colour": "red", "images_dir": "/x"}, "run.json")
    with pytest.raises(ClusterMineError, match="run.json: topk"):
        MineConfig.from_dict({"topk": "five"}, "run.json")


# ------------------------------------------------------------------------------- per-encoder τ
def test_default_tau_depends_on_the_encoder():
    assert default_tau("offline") == 0.05 and default_tau(" offline ") == 0.05 and default_tau(None) == 0.05
    for spec in ("openclip:ViT-B-32:openai", "openclip:hf-hub:org/repo", "openclip:RN50@/w.pt"):
        assert default_tau(spec) == 0.01
    assert MineConfig().resolved().tau == 0.05
    assert MineConfig(encoder="openclip:ViT-B-32:openai").resolved().tau == 0.01
    assert MineConfig(tau=0.2).resolved().tau == 0.2  # an explicit value wins


def test_detector_and_old_runs_take_tau_from_the_right_place(tmp_path):
    from clustermine.store import Run
    from clustermine.method.scoring import Detector

    emb = np.eye(3, dtype=np.float32)
    assert Detector(["a", "b", "c"], emb, [0], encoder_spec="offline").tau == 0.05
    assert Detector(["a", "b", "c"], emb, [0], encoder_spec="openclip:RN50:openai").tau == 0.01
    assert Detector(["a", "b", "c"], emb, [0], tau=0.3).tau == 0.3
    # a run written before τ depended on the encoder stored 0.01 for the offline encoder: it keeps it
    old = Run.create(tmp_path / "old", {"encoder": "offline", "tau": 0.01, "images_dir": str(tmp_path)})
    assert old.tau == 0.01
    untold = Run.create(tmp_path / "untold", {"encoder": "offline", "images_dir": str(tmp_path)})
    assert untold.tau == 0.05


def test_a_mined_run_stores_and_scores_with_its_encoders_tau(small_run_template):
    """The conftest run (offline encoder, no τ given) stores τ = 0.05 and its detector scores with it:
    log S from an independent numpy softmax over the run's own arrays."""
    from clustermine.store import Run

    run = Run.open(small_run_template)
    stored = json.loads((small_run_template / "run.json").read_text())["config"]
    assert stored["tau"] == 0.05 and run.tau == 0.05
    det = run_detector(run)
    feats = run.features()[:5].astype(np.float64)
    text = run.text_embeddings().astype(np.float64)
    z = feats @ text.T / 0.05
    z -= z.max(axis=1, keepdims=True)
    pos = np.asarray(det.positive_idx)
    expected = np.log(np.exp(z[:, pos]).sum(1) / np.exp(z).sum(1))
    np.testing.assert_allclose(det.log_scores(run.features()[:5]), expected, atol=1e-4)
    at_clip_tau = feats @ text.T / 0.01
    at_clip_tau -= at_clip_tau.max(axis=1, keepdims=True)
    other = np.log(np.exp(at_clip_tau[:, pos]).sum(1) / np.exp(at_clip_tau).sum(1))
    assert np.abs(other - expected).max() > 1e-2  # the check above can tell the two τ apart

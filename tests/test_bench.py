"""The evaluation scripts under bench/: deterministic, disjoint splits of the real data, the class-matching
rule, the BENCHMARKS.md block writer, and the GPU check's failure mode and report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, SHARED_DATA, missing_resource

from clustermine.method.corpus import find_wordnet
from clustermine.core.errors import CorpusError

sys.path.insert(0, str(ROOT / "bench"))

import common  # noqa: E402
import eval_ood  # noqa: E402

# (mining images, {ID test set: size}, {OOD set: size}) as stated in the issue and BENCHMARKS.md
EXPECTED = {
    "b1": (600, {"imagenette-6 val": 600},
           {"imagenette-4 (near)": 400, "imagewoof (dogs)": 800, "dtd10 (far)": 600}),
    "b2": (440, {"caltech-11 test": 220}, {"caltech-10 other": 600, "dtd10 (far)": 600}),
    "b3": (490, {"photo (held-out)": 210, "art_painting": 420, "cartoon": 420, "sketch": 420},
           {"dtd10 (far)": 600, "imagenette val (10 cls)": 1000}),
    "b4": (1800, {"cifar-6 test": 1200}, {"cifar-4 other": 800}),
}


@pytest.fixture
def row_id_features(monkeypatch):
    """Replace feature loading by (set number, row) pairs, so a split can be checked without encoding."""
    if not SHARED_DATA.exists():
        missing_resource(f"real data not available: {SHARED_DATA}")
    sets: dict[str, int] = {}

    def fake(rel: str, per_class: int | None = None):
        paths = [r.path for r in common.folder_records(rel, per_class)]
        sid = sets.setdefault(rel, len(sets))
        return paths, np.stack([np.full(len(paths), sid), np.arange(len(paths))], axis=1).astype(np.float32)

    monkeypatch.setattr(eval_ood, "folder_features", fake)


def _pairs(a: np.ndarray) -> set[tuple[int, int]]:
    return {(int(s), int(r)) for s, r in a}


@pytest.mark.parametrize("key", sorted(EXPECTED))
def test_split_is_deterministic_disjoint_and_sized(key, row_id_features):
    split = eval_ood.SPLITS[key]()
    again = eval_ood.SPLITS[key]()
    n_mine, id_sizes, ood_sizes = EXPECTED[key]
    assert len(split["mine"]) == n_mine
    assert {k: len(v) for k, v in split["id_tests"].items()} == id_sizes
    assert {k: len(v) for k, v in split["ood"].items()} == ood_sizes
    # same rows on every call: the split is a pure function of the file names
    np.testing.assert_array_equal(split["mine"], again["mine"])
    for k in split["id_tests"]:
        np.testing.assert_array_equal(split["id_tests"][k], again["id_tests"][k])
    # no image is used twice: mining, every ID test set and every OOD set are pairwise disjoint
    groups = [split["mine"], *split["id_tests"].values(), *split["ood"].values()]
    seen: set[tuple[int, int]] = set()
    for g in groups:
        p = _pairs(g)
        assert len(p) == len(g), "a set repeats an image"
        assert not (p & seen), "an image appears in two sets"
        seen |= p
    # mining labels cover exactly the ID classes
    assert set(np.unique(split["mine_labels"])) == set(split["class_names"])


def test_matching_rule_uses_wordnet_synonyms_and_embedding_similarity():
    try:
        find_wordnet()
    except CorpusError as exc:  # the one error that means "no WordNet on this machine"
        missing_resource(f"WordNet not available: {exc}")
    assert "chainsaw" in common.wordnet_synonyms("chain saw")
    class_names = {"a": "chain saw", "b": "church"}
    class_emb = np.eye(4, dtype=np.float32)[:2]
    # "chainsaw" is a WordNet synonym of "chain saw" (its embedding points elsewhere);
    # "chapel" is not a synonym of "church" but its embedding is close (cos 0.8 >= 0.7);
    # "teapot" matches nothing (cos 0.5 < 0.7).
    pos_texts = ["chainsaw", "chapel", "teapot"]
    pos_emb = np.array([[0, 0, 1, 0], [0, 0.8, 0.6, 0], [0.5, 0, 0, np.sqrt(0.75)]], dtype=np.float32)
    m = eval_ood.match_classes(pos_texts, class_names, class_emb, pos_emb)
    assert m["by_class"] == {"chain saw": ["chainsaw"], "church": ["chapel"]}
    assert m["n_matched"] == 2


def test_write_block_replaces_only_its_own_block(tmp_path):
    md = tmp_path / "B.md"
    md.write_text("# Benchmarks\n\n## A\n\nhand-written text\n\n## B\n\nother\n", encoding="utf-8")
    common.write_block("## A", "x", "first", path=md)
    common.write_block("## A", "x", "second", path=md)
    common.write_block("## New", "y", "appended", path=md)
    doc = md.read_text(encoding="utf-8")
    assert doc.count("<!-- bench:x -->") == 1 and "second" in doc and "first" not in doc
    assert "hand-written text" in doc and "other" in doc
    assert doc.index("<!-- bench:x -->") < doc.index("## B"), "the block stays inside its section"
    assert doc.rstrip().endswith("<!-- /bench:y -->") and "## New" in doc


def test_gpu_check_without_cuda_says_so_and_exits_2():
    # CUDA hidden from the script, so this runs (and means the same) on a machine with a GPU too
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py")], capture_output=True, text=True,
                       timeout=300, env=env)
    assert p.returncode == 2
    assert "no CUDA device" in p.stderr and "--quick --device cpu" in p.stderr


def test_gpu_check_report_names_the_device_and_every_part():
    import gpu_check

    r = {
        "device": "cuda", "total_wall_s": 80.0, "host": common.machine_info(),
        "gpu": {"name": "NVIDIA Test GPU", "memory_gib": 80.0, "multiprocessors": 100, "cuda": "13.0"},
        "offline_encode": {"n_files": 10, "batch": 4, "decode_threads": 2, "e2e_img_s": 100.0,
                           "bare_forward_img_s": 1000.0, "e2e_over_bare": 0.1,
                           "vs_cpu_fp32": {"n": 10, "cos_min": 0.99, "cos_mean": 0.999, "nearest_class_agreement": 1.0}},
        "openclip_encode": {"ViT-B-32": {"n_files": 10, "batch": 4, "decode_threads": 2, "e2e_img_s": 50.0,
                                         "bare_forward_img_s": 500.0, "e2e_over_bare": 0.1}},
        "temi": {"N": 1000, "C": 10, "knn_s": 0.1, "s_per_step": 0.002, "default_batch": 64,
                 "full_fit": {"fit_s": 5.0, "steps": 2010, "epochs": 134, "knn_s": 0.1, "occupied_clusters": 10}},
        "score": {"corpus": "synthetic", "torch_float32_img_s": 1e5, "torch_float16_img_s": 2e5,
                  "engine_numpy_host_img_s": 300.0, "max_abs_diff_fp32_vs_engine": 1e-6},
    }
    md = gpu_check.render(json.loads(json.dumps(r)))
    assert "NVIDIA Test GPU" in md
    assert "| offline" in md and "| open_clip ViT-B-32" in md
    assert "Full default fit: **5.0 s**" in md and "100,000 img/s" in md


def test_recorded_gpu_results_name_a_cuda_device():
    """The committed GPU figures must come from a real CUDA run, not the CPU dry run."""
    p = Path(common.RESULTS) / "gpu_check.json"
    assert p.is_file(), f"{p} is committed with the GPU figures BENCHMARKS.md quotes"
    r = json.loads(p.read_text(encoding="utf-8"))
    assert r["device"].startswith("cuda") and not r["quick"] and r["gpu"]["name"]

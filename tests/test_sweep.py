"""``clustermine sweep`` (issue 21, item 5): a settings grid x seeds mined and evaluated with the engine's
own path, images encoded once (counted in a private feature cache), every finished cell written before
the next, a killed sweep resumed by skipping them, mean ± sd over seeds."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from clustermine.cli import main
from clustermine.core.config import MineConfig
from clustermine.core.errors import ClusterMineError
from clustermine.core.storage import cache_root
from clustermine.store import Run
from clustermine.workflows.pipeline import evaluate
from clustermine.workflows.sweep import Cell, grid_cells, parse_grid, parse_named_folders, summarize, sweep

from conftest import copy_subset, shared

ROOT = Path(__file__).resolve().parents[1]
ID_CLASSES = ["n01440764", "n02102040", "n02979186", "n03028079"]
# Tiny TEMI (as tests/test_estimators.py): narrow heads, few epochs, one thread; only for TEMI cells.
TEMI_FAST = ["temi.n_heads=2", "temi.hidden_dim=32", "temi.bottleneck_dim=16", "temi.batch_size=16",
             "temi.epochs=10", "temi.n_threads=1"]


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> dict[str, Path]:
    """Small real sets: mine on 4 Imagenette classes x 8 (train), evaluate on the same classes x 5 (val)
    against two OOD sets (2 other Imagenette classes x 5; 5 DTD texture classes x 2)."""
    root = tmp_path_factory.mktemp("sweep_sets")
    return {
        "images": copy_subset(shared("imagenette_train100"), root / "images", ID_CLASSES, 8),
        "id": copy_subset(shared("imagenette_val100"), root / "id", ID_CLASSES, 5),
        "near": copy_subset(shared("imagenette_val100"), root / "near", ["n03417042", "n03425413"], 5),
        "textures": copy_subset(shared("dtd10"), root / "textures",
                                sorted(p.name for p in shared("dtd10").iterdir() if p.is_dir())[:5], 2),
    }


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Every 40th WordNet noun (~3,000 real concepts): the vote and the scores cost ~1/40 of the full corpus."""
    from clustermine.method.corpus import load_corpus

    path = tmp_path_factory.mktemp("corpus") / "concepts.txt"
    path.write_text("\n".join(load_corpus("wordnet-nouns").concepts[::40]) + "\n", encoding="utf-8")
    return path


def private_cache(tmp_path: Path) -> Path:
    """An empty feature cache (so every encode is counted) sharing the corpus embeddings (text/)."""
    text = cache_root() / "text"
    text.mkdir(parents=True, exist_ok=True)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "text").symlink_to(text, target_is_directory=True)
    return tmp_path / "cache"


def cached_keys(cache: Path) -> list[str]:
    """Every key written to the feature cache's chunks (one entry per encoded image)."""
    keys: list[str] = []
    for chunk in sorted((cache / "features").rglob("chunk-*.npz")):
        with np.load(chunk, allow_pickle=False) as z:
            keys += z["keys"].tolist()
    return keys


def file_sha1s(*folders: Path) -> set[str]:
    return {hashlib.sha1(f.read_bytes()).hexdigest() for d in folders for f in d.rglob("*") if f.is_file()}


def sweep_argv(sets: dict[str, Path], out: Path, cache: Path, corpus: Path, grid: list[str], seeds: list[str]) -> list[str]:
    argv = ["sweep", str(sets["images"]), "--corpus", str(corpus), "--id", str(sets["id"]), "--ood", f"near={sets['near']}",
            "--ood", f"textures={sets['textures']}", "--out", str(out), "--cache-dir", str(cache), "--seeds", *seeds]
    for g in grid:
        argv += ["--grid", g]
    for p in TEMI_FAST:
        argv += ["--clusterer-param", p]
    return argv


# ------------------------------------------------------------------------------------ parsing, fast
def test_grid_keys_are_checked_with_a_clear_message(capsys):
    assert parse_grid(["clusters=10,20", "tau=0.05", "clusters=40,10", "clusterer=kmeans,temi"]) == \
        {"clusters": [10, 20, 40], "tau": [0.05], "clusterer": ["kmeans", "temi"]}
    assert parse_grid(["template=a photo of a {}, a kind of thing"]) == {"template": ["a photo of a {}, a kind of thing"]}
    for bad, needle in [("heads=3", "unknown key 'heads'; allowed keys: clusters, tau, clusterer"),
                        ("clusters=ten", "'ten' is not a valid clusters value"),
                        ("tau=-1", "tau"), ("clusterer=dbscan", "clusterer"), ("clusters", "KEY=V1,V2"),
                        ("template=no braces", "template")]:
        with pytest.raises(ClusterMineError, match=None) as exc:
            parse_grid([bad])
        assert needle in str(exc.value), (bad, str(exc.value))
    assert main(["sweep", ".", "--id", ".", "--ood", "x=.", "--grid", "seed=1,2", "--out", "unused"]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'seed'" in err and "clusters, tau, clusterer, corpus, template" in err and "--seeds" in err


def test_clusterer_params_per_clusterer_and_seed_flag(capsys):
    from clustermine.workflows.sweep import parse_clusterer_params

    got = parse_clusterer_params({"temi.epochs": 5, "kmeans.n_init": 3, "max_iter": 50})
    assert got == {"temi": {"epochs": 5, "max_iter": 50}, "kmeans": {"n_init": 3, "max_iter": 50}}
    with pytest.raises(ClusterMineError, match="'dbscan' is not a clusterer"):
        parse_clusterer_params({"dbscan.eps": 1})
    assert main(["sweep", ".", "--id", ".", "--ood", "x=.", "--seed", "3", "--out", "unused"]) == 2
    assert "--seeds" in capsys.readouterr().err


def test_named_folders(tmp_path):
    (tmp_path / "inat").mkdir()
    (tmp_path / "sun").mkdir()
    assert parse_named_folders([f"i={tmp_path / 'inat'}", str(tmp_path / "sun")]) == \
        {"i": tmp_path / "inat", "sun": tmp_path / "sun"}
    for bad in [[f"i={tmp_path / 'inat'}", f"i={tmp_path / 'sun'}"], [f"x={tmp_path / 'nope'}"],
                [f"mean={tmp_path / 'sun'}"], []]:
        with pytest.raises(ClusterMineError):
            parse_named_folders(bad)


def test_cell_keys_are_stable_and_distinct():
    grid = parse_grid(["clusters=10,20", "tau=0.01,0.05", "clusterer=temi,kmeans"])
    cells = grid_cells(grid, [0, 1])
    assert len(cells) == 16 and len({c.key for c in cells}) == 16
    # the same grid written in another order gives the same cells and keys
    again = grid_cells(parse_grid(["clusterer=temi,kmeans", "tau=0.01,0.05", "clusters=10,20"]), [0, 1])
    assert {c.key for c in again} == {c.key for c in cells}
    assert Cell((("clusters", 10),), 0).key == Cell((("clusters", 10),), 0).key != Cell((("clusters", 10),), 1).key


def test_summary_is_mean_and_sample_sd_over_seeds():
    def cell(point, seed, auroc, acc):
        m = {s: {"auroc": auroc + i, "fpr95": 1 - auroc, "aupr_in": auroc, "aupr_out": auroc} for i, s in
             enumerate(["a", "mean"])}
        return {"point": point, "params": {"clusters": point}, "seed": seed, "metrics": m, "purity":
                {"acc": acc, "nmi": acc, "ari": acc}}
    rows = summarize([cell(2, 0, 0.8, 0.5), cell(2, 1, 0.9, 0.7), cell(4, 0, 0.7, 0.6)], ["a", "mean"])
    assert [r["n_seeds"] for r in rows] == [2, 1]
    a = rows[0]["metrics"]["a"]["auroc"]
    assert a["mean"] == pytest.approx(0.85) and a["sd"] == pytest.approx(np.sqrt(((0.05 ** 2) * 2) / 1))
    assert rows[0]["purity"]["acc"]["mean"] == pytest.approx(0.6)
    assert rows[1]["metrics"]["mean"]["auroc"] == {"mean": pytest.approx(1.7), "sd": None}


# ------------------------------------------------------------------------------------ a real sweep
def test_one_cell_equals_evaluate_of_its_run_and_other_settings_are_refused(sets, corpus, tmp_path):
    cache = private_cache(tmp_path)
    out = tmp_path / "sweep"
    ood = {"near": sets["near"], "textures": sets["textures"]}
    res = sweep(sets["images"], out, id_dir=sets["id"], ood=ood, grid=parse_grid(["clusters=4"]), seeds=[0],
                config=MineConfig(clusterer="kmeans", corpus=str(corpus)), cache_dir=cache)
    assert res["computed"] == 1 and res["skipped"] == 0
    cell = res["cells"][0]
    run = Run.open(cell["run_dir"])
    assert run.config["n_clusters"] == 4 and run.config["clusterer"] == "kmeans" and run.config["seed"] == 0
    for name, folder in ood.items():  # the one scoring path: the cell's numbers are evaluate's
        ref = evaluate(run, sets["id"], folder, cache_dir=cache / "features")
        for m in ("auroc", "fpr95", "aupr_in", "aupr_out", "n_id", "n_ood"):
            assert cell["metrics"][name][m] == ref[m], (name, m)
    assert cell["metrics"]["mean"]["auroc"] == pytest.approx(
        np.mean([cell["metrics"][n]["auroc"] for n in ood]), abs=1e-15)
    assert cell["purity"] is not None and 0 <= cell["purity"]["acc"] <= 1
    assert json.loads((out / "results.json").read_text())["cells"] == res["cells"]
    csv_lines = (out / "results.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + 3 and csv_lines[1].startswith("4,near,1,")
    with pytest.raises(ClusterMineError, match="holds a sweep of other inputs or settings"):
        sweep(sets["images"], out, id_dir=sets["id"], ood=ood, grid=parse_grid(["clusters=4"]), seeds=[0],
              config=MineConfig(clusterer="kmeans", corpus=str(corpus), topk=3), cache_dir=cache)



def test_vote_memo_keys_on_content_and_keeps_read_only_copies(tmp_path):
    from clustermine.workflows.vote_memo import VoteMemo

    rng = np.random.default_rng(0)
    feats = rng.standard_normal((70_000, 4)).astype(np.float16)  # more rows than one hashing block
    np.save(tmp_path / "f.npy", feats)
    mapped = np.load(tmp_path / "f.npy", mmap_mode="r")
    text = rng.standard_normal((9, 4)).astype(np.float32)
    key = VoteMemo.key(feats, text, 5, 0.01)
    assert VoteMemo.key(mapped, text.copy(), 5, 0.01) == key  # same values: same key, memmap or not
    changed = feats.copy()
    changed[-1, 0] += 1
    others = [VoteMemo.key(changed, text, 5, 0.01), VoteMemo.key(feats, text[:8], 5, 0.01),
              VoteMemo.key(feats, text, 3, 0.01), VoteMemo.key(feats, text, 5, 0.05),
              VoteMemo.key(feats.astype(np.float32), text, 5, 0.01)]
    assert len({key, *others}) == 6
    memo = VoteMemo()
    assert memo.get(key) is None and memo.misses == 1
    idx = np.zeros((3, 5), np.int32)
    memo.put(key, idx, np.ones((3, 5), np.float32), np.zeros(3))
    idx[0, 0] = 7  # the caller's array changing later does not change the memo
    kept = memo.get(key)
    assert memo.hits == 1 and kept[0][0, 0] == 0 and not any(a.flags.writeable for a in kept)

def test_cells_that_differ_in_clusters_clusterer_or_seed_share_one_vote(sets, corpus, tmp_path, monkeypatch):
    """The vote and the scores' denominators depend only on the features, corpus and τ (and k): a C x clusterer x τ
    grid over two seeds computes each once per τ, and a cell's votes, concepts and scores are those of mining
    it on its own."""
    import clustermine.workflows.pipeline as pipeline
    from clustermine.workflows.pipeline import mine_features

    taus_voted = []
    real_vote = pipeline.zero_shot_topk

    def counted_vote(*args, **kwargs):
        taus_voted.append(kwargs.get("tau"))
        return real_vote(*args, **kwargs)

    import clustermine.workflows.sweep as sweep_module

    denominators = []
    real_lse = sweep_module.corpus_logsumexp

    def counted_lse(feats, text, tau):
        denominators.append((len(feats), tau))
        return real_lse(feats, text, tau)

    monkeypatch.setattr(pipeline, "zero_shot_topk", counted_vote)
    monkeypatch.setattr(sweep_module, "corpus_logsumexp", counted_lse)
    cache = private_cache(tmp_path)
    out = tmp_path / "sweep"
    temi_fast = {key: int(value) for key, value in (p.split("=") for p in TEMI_FAST)}
    res = sweep(sets["images"], out, id_dir=sets["id"], ood={"near": sets["near"]},
                grid=parse_grid(["clusters=3,4", "clusterer=kmeans,temi", "tau=0.01,0.05"]), seeds=[0, 1],
                config=MineConfig(corpus=str(corpus)), clusterer_params=temi_fast, cache_dir=cache)
    assert res["computed"] == 16
    assert sorted(taus_voted) == [0.01, 0.05]  # one vote per τ, not one per cell
    n_id, n_near = (sum(1 for f in sets[k].rglob("*") if f.is_file()) for k in ("id", "near"))
    assert sorted(denominators) == sorted((n, t) for n in (n_id, n_near) for t in (0.01, 0.05))  # per set and τ
    monkeypatch.setattr(pipeline, "zero_shot_topk", real_vote)

    for cell in (res["cells"][-1], next(c for c in res["cells"] if c["params"]["tau"] == 0.01 and c["seed"] == 1)):
        in_sweep = Run.open(cell["run_dir"])
        config = MineConfig.from_dict(in_sweep.config, "cell").resolved()
        alone = mine_features(out / "features" / "images.npy", out / "features" / "paths.parquet",
                              tmp_path / "alone" / cell["key"], config, image_root=sets["images"], cache_dir=cache)
        for got, want in zip(in_sweep.votes(), alone.votes()):
            np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(in_sweep.cluster_ids(), alone.cluster_ids())
        assert in_sweep.positive_concepts() == alone.positive_concepts()
        ref = evaluate(alone, sets["id"], sets["near"], cache_dir=cache / "features")
        assert cell["metrics"]["near"]["auroc"] == pytest.approx(ref["auroc"], abs=1e-9)

@pytest.mark.slow
def test_2x2x2_grid_two_seeds_completes_resumes_after_a_kill_and_encodes_each_image_once(sets, corpus, tmp_path,
                                                                                        capsys):
    cache = private_cache(tmp_path)
    out = tmp_path / "sweep"
    argv = sweep_argv(sets, out, cache, corpus, ["clusters=2,4", "tau=0.01,0.05", "clusterer=temi,kmeans"], ["0", "1"])
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), PYTHONUNBUFFERED="1")
    log = tmp_path / "first.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "clustermine", *argv], cwd=ROOT, env=env, stdout=fh,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 600
        while not list((out / "cells").glob("*.json")) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        assert proc.poll() is None, log.read_text()[-3000:]  # still running when the first cell is written
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    first = log.read_text()
    assert "cell 1/16 clusters=2 tau=0.01 clusterer=temi seed=0: running" in first  # progress is shown
    done_before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (out / "cells").glob("*.json")}
    assert 1 <= len(done_before) < 16
    keys_before = cached_keys(cache)

    assert main([*argv, "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["computed"] == 16 - len(done_before) and res["skipped"] == len(done_before)
    assert len(res["cells"]) == 16 and len({c["key"] for c in res["cells"]}) == 16
    for name, (mtime, data) in done_before.items():  # the finished cells were not computed again
        assert (out / "cells" / name).stat().st_mtime_ns == mtime and (out / "cells" / name).read_bytes() == data

    # each image encoded once: every distinct file is one cache entry, all written by the first process
    keys = cached_keys(cache)
    assert keys == keys_before
    assert sorted(keys) == sorted(file_sha1s(*sets.values()))

    # mean ± sd over the two seeds of every grid point, from the cells
    assert len(res["summary"]) == 8
    for row in res["summary"]:
        members = [c for c in res["cells"] if c["point"] == row["point"]]
        assert sorted(c["seed"] for c in members) == [0, 1] == row["seeds"]
        for s in ("near", "textures", "mean"):
            vals = [c["metrics"][s]["auroc"] for c in members]
            assert row["metrics"][s]["auroc"]["mean"] == pytest.approx(np.mean(vals))
            assert row["metrics"][s]["auroc"]["sd"] == pytest.approx(np.std(vals, ddof=1))
    # every cell's run has the cell's settings
    for c in res["cells"]:
        cfg = Run.open(c["run_dir"]).config
        assert (cfg["n_clusters"], cfg["tau"], cfg["clusterer"], cfg["seed"]) == \
            (c["params"]["clusters"], c["params"]["tau"], c["params"]["clusterer"], c["seed"])
        assert cfg["clusterer_params"] == ({"n_heads": 2, "hidden_dim": 32, "bottleneck_dim": 16, "batch_size": 16,
                                            "epochs": 10, "n_threads": 1} if cfg["clusterer"] == "temi" else {})

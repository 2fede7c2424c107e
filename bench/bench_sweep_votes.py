"""A sweep's shared vote: the cells of a C x seeds grid mined with one shared vote (what ``sweep`` does now)
against the same cells each voting on their own (what every sweep cell cost before), on real images and
the full WordNet-noun corpus.

    .venv/bin/python bench/bench_sweep_votes.py [--images cifar10_test] [--clusters 10 20 40] [--seeds 0 1]

A warm-up sweep encodes every image once (feature cache) and writes the features file both arms mine
from; the corpus embeddings are cached too, so only cluster + vote + concepts are timed, with
:func:`mine_features` and k-means. The arms must agree on every cell's votes and positive concepts; the
script fails otherwise.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import DATA, machine_info

import numpy as np

from clustermine.core.config import MineConfig
from clustermine.core.storage import cache_root
from clustermine.workflows.pipeline import mine_features
from clustermine.workflows.sweep import parse_grid, sweep
from clustermine.workflows.vote_memo import VoteMemo


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", default="cifar10_test")
    ap.add_argument("--clusters", type=int, nargs="+", default=[10, 20, 40])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    a = ap.parse_args()
    images = DATA / a.images
    few = DATA / "dtd10"  # the warm-up's ID / OOD sets: only needed for the sweep to run
    cells = [(c, s) for c in a.clusters for s in a.seeds]
    with tempfile.TemporaryDirectory() as tmp:
        warm = Path(tmp) / "warm"
        sweep(images, warm, id_dir=few, ood={"ood": few}, grid=parse_grid(["clusters=2"]), seeds=[0],
              config=MineConfig(clusterer="kmeans"))
        feats, paths = warm / "features" / "images.npy", warm / "features" / "paths.parquet"
        timings, concepts, votes = {}, {}, {}
        for arm in ("own vote per cell", "shared vote (sweep)"):
            memo = VoteMemo() if arm.startswith("shared") else None
            t0 = time.perf_counter()
            for c, seed in cells:
                run = mine_features(feats, paths, Path(tmp) / arm[:3] / f"c{c}-s{seed}",
                                    MineConfig(clusterer="kmeans", n_clusters=c, seed=seed), image_root=images,
                                    cache_dir=cache_root(), vote_memo=memo)
                concepts.setdefault((c, seed), []).append(run.positive_concepts())
                votes.setdefault((c, seed), []).append(run.votes()[0])
            timings[arm] = time.perf_counter() - t0
        n_images = run.n_images()
    for cell in cells:
        if concepts[cell][0] != concepts[cell][1] or not np.array_equal(*votes[cell]):
            raise SystemExit(f"cell C={cell[0]} seed={cell[1]}: the arms differ")
    print(f"machine: {machine_info()}")
    print(f"\n{a.images}: {n_images} images, C in {a.clusters} x seeds {a.seeds} = {len(cells)} cells, k-means, "
          f"117,798 WordNet nouns, offline encoder; the arms agree on every cell's votes and concepts\n")
    print("| arm | votes run | total (s) | per cell (s) |")
    print("| --- | ---: | ---: | ---: |")
    for arm, t in timings.items():
        print(f"| {arm} | {1 if arm.startswith('shared') else len(cells)} | {t:.1f} | {t / len(cells):.2f} |")
    own, shared = timings["own vote per cell"], timings["shared vote (sweep)"]
    print(f"\nspeed-up {own / shared:.2f}x")
    return 0

if __name__ == "__main__":
    raise SystemExit(main())

"""A sweep's shared vote: the sweep (one zero-shot vote per τ) against mining each cell on its own (a vote
per cell, what every cell cost before), on real images and the full WordNet-noun corpus.

    .venv/bin/python bench/bench_sweep_votes.py [--images imagenette_train100] [--clusters 5 10 20] [--seeds 0 1]

Both arms mine the same cells (C x seeds, k-means, offline encoder) from the same features: the sweep's
``OUT/features`` file, with every image and the corpus already cached, so only cluster + vote + concepts
are timed. The arms must agree on every cell's positive concepts; the script fails otherwise.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import DATA, machine_info

from clustermine.core.config import MineConfig
from clustermine.core.storage import cache_root
from clustermine.store import Run
from clustermine.workflows.pipeline import mine_features
from clustermine.workflows.sweep import parse_grid, sweep


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", default="imagenette_train100")
    ap.add_argument("--id", default="imagenette_val100")
    ap.add_argument("--ood", default="dtd10")
    ap.add_argument("--clusters", nargs="+", default=["5", "10", "20"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    a = ap.parse_args()
    images, id_dir, ood_dir = DATA / a.images, DATA / a.id, DATA / a.ood
    grid = parse_grid([f"clusters={','.join(a.clusters)}"])
    config = MineConfig(clusterer="kmeans")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "sweep"
        # warm-up: encodes every image once into the feature cache (not timed)
        sweep(images, Path(tmp) / "warm", id_dir=id_dir, ood={"ood": ood_dir}, grid=parse_grid(["clusters=2"]),
              seeds=[0], config=config)
        t0 = time.perf_counter()
        res = sweep(images, out, id_dir=id_dir, ood={"ood": ood_dir}, grid=grid, seeds=a.seeds, config=config)
        t_sweep = time.perf_counter() - t0
        t0 = time.perf_counter()
        for cell in res["cells"]:
            cfg = MineConfig.from_dict(Run.open(cell["run_dir"]).config, "cell").resolved()
            alone = mine_features(out / "features" / "images.npy", out / "features" / "paths.parquet",
                                  Path(tmp) / "alone" / cell["key"], cfg, image_root=images, cache_dir=cache_root())
            if alone.positive_concepts() != Run.open(cell["run_dir"]).positive_concepts():
                raise SystemExit(f"cell {cell['key']}: concepts differ between the arms")
        t_alone = time.perf_counter() - t0
    n_cells = len(res["cells"])
    info = machine_info()
    print(f"machine: {info}")
    print(f"\n{a.images}: {res['cells'][0]['n_mining']} mining images, C in {a.clusters}, seeds {a.seeds}: "
          f"{n_cells} cells, k-means, full corpus\n")
    print("| arm | votes | total (s) | per cell (s) |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| sweep (shared vote) | 1 | {t_sweep:.1f} | {t_sweep / n_cells:.2f} |")
    print(f"| each cell mined on its own | {n_cells} | {t_alone:.1f} | {t_alone / n_cells:.2f} |")
    print(f"\nspeed-up {t_alone / t_sweep:.2f}x; the sweep's time includes scoring the ID and OOD sets per cell")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A/B of the engine before and after the layer restructuring (issue 19): the whole `clustermine mine`
of 160 and 1,000 real images (defaults: offline encoder, TEMI), with an old checkout and this one,
interleaved (old, new, old, new) so that a change in the machine's load hits both alike.

Each run gets a cold feature cache and the warm text (corpus) cache, and runs the CLI in its own
process (`python -m clustermine mine`), so import time is part of the figure.

    git worktree add /tmp/ab_old <commit before the change>
    .venv/bin/python bench/ab_layers.py --old /tmp/ab_old [--reps 2] [--sizes 160 1000]

Writes bench/results/ab_layers.json and prints a table (median wall time per checkout and size).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "imagenette_train100"


def images(n: int, dst: Path) -> Path:
    """The first n // 10 files of each of the 10 Imagenette classes (class-stratified), flat."""
    dst.mkdir(parents=True, exist_ok=True)
    per = n // 10
    for cls in sorted(p for p in DATA.iterdir() if p.is_dir()):
        for f in sorted(cls.iterdir())[:per]:
            shutil.copy2(f, dst / f"{cls.name}_{f.name}")
    return dst


def one(tree: Path, imgs: Path, work: Path, text_cache: Path) -> dict:
    cache = work / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True)
    (cache / "text").symlink_to(text_cache)
    out = work / "run"
    shutil.rmtree(out, ignore_errors=True)
    env = dict(os.environ, CLUSTERMINE_CACHE=str(cache), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               PYTHONPATH=str(tree))
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "clustermine", "mine", str(imgs), "--out", str(out), "--device", "cpu",
                        "--quiet"], cwd=tree, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"{tree}: mine failed: {r.stderr[-2000:]}")
    meta = json.loads((out / "run.json").read_text())
    s = meta["summary"]
    return {"wall_s": round(wall, 1), "timings_s": s.get("timings_s"), "n_positive": s.get("n_positive"),
            "load1": round(os.getloadavg()[0], 2)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--old", required=True, type=Path, help="checkout of the engine before the change")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--sizes", type=int, nargs="+", default=[160, 1000])
    a = ap.parse_args()
    text_cache = Path(os.environ.get("CLUSTERMINE_CACHE") or ROOT / ".cache" / "clustermine") / "text"
    results: dict = {"old": str(a.old), "new": str(ROOT), "cells": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for n in a.sizes:
            imgs = images(n, tmp / f"img{n}")
            for rep in range(a.reps):
                for name, tree in (("old", a.old), ("new", ROOT)):
                    cell = {"n": n, "rep": rep, "tree": name, **one(tree, imgs, tmp / f"w_{name}", text_cache)}
                    print(json.dumps(cell), flush=True)
                    results["cells"].append(cell)
    out = ROOT / "bench" / "results" / "ab_layers.json"
    out.write_text(json.dumps(results, indent=1))
    print("\n| N | old (median s) | new (median s) | new / old |\n|---|---|---|---|")
    for n in a.sizes:
        med = {t: statistics.median(c["wall_s"] for c in results["cells"] if c["n"] == n and c["tree"] == t)
               for t in ("old", "new")}
        print(f"| {n:,} | {med['old']:.1f} | {med['new']:.1f} | {med['new'] / med['old']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

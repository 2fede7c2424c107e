"""First-run benchmark (issue 12): the first ``mine`` of a small folder with the defaults, and TEMI's
N-scaled default schedule vs the former fixed one on real features.

    python bench/bench_first_run.py                 # mine 160 imagenette images (4 classes x 40), defaults
    python bench/bench_first_run.py --quality --out q.jsonl   # TEMI new vs old defaults, 3 seeds, real features
    python bench/bench_first_run.py --table q.jsonl           # the BENCHMARKS.md table of that file

``mine`` runs in this process on a fresh folder with an empty feature cache and the corpus embedding
already cached (set-up embeds it: ``clustermine prepare``); stage timings come from the run's summary. ``--quality`` uses the
offline encoder's features of ../shared/data/imagenette_train100 (4 classes x 40, C = 4) and
caltech101_sub (21 classes x 10, C = 21), cached in the feature cache; "old" is the fixed schedule
before issue 12 (16 heads, >= 2,000 steps, batch >= 32).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT / ".." / "shared" / "data"


def subset_folder(src: Path, dst: Path, n_classes: int, per_class: int) -> list[str]:
    """Copy the first ``per_class`` images of the first ``n_classes`` class folders of src into dst."""
    labels = []
    for cls in sorted(p for p in src.iterdir() if p.is_dir())[:n_classes]:
        (dst / cls.name).mkdir(parents=True, exist_ok=True)
        for f in sorted(cls.iterdir())[:per_class]:
            shutil.copyfile(f, dst / cls.name / f.name)
            labels.append(cls.name)
    return labels


def real_features(name: str, n_classes: int, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """Offline-encoder features [n, D] and class labels of a class-balanced subset of a shared folder."""
    from clustermine.method.encoders import load_encoder
    from clustermine.workflows.pipeline import load_folder

    records, feats = load_folder(DATA / name, load_encoder("offline"))
    labels = np.array([Path(r.path).parts[0] for r in records])
    keep = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in sorted(set(labels))[:n_classes]])
    return feats[keep], labels[keep]


def old_defaults(n: int) -> dict:
    """The schedule TEMI ran before issue 12 whatever N: 16 heads, >= 2,000 steps, batch >= 32 (and
    from issue 12 to 18 whenever N / C < 15)."""
    import math

    b = 2 ** int(round(math.log2(max(n, 1) / 16))) if n >= 16 else 1
    return {"n_heads": 16, "min_steps": 2000, "batch_size": max(2, min(int(np.clip(b, 32, 256)), n // 4))}


def quality(seeds: list[int], out: Path | None, threads: int | None = 1, variants: tuple[str, ...] = ("new", "old"),
            only: str = "") -> list[dict]:
    from clustermine.method.clustering import TEMI
    from clustermine.method.metrics import clustering_scores

    from clustermine.method.clustering import default_n_clusters

    # (features, labels, C): C = the classes, except "4x18", an 80-image first run's 72 mining images
    # with the default C rule (6 clusters of ~12: the small-cluster schedule of issue 18)
    sets = {"imagenette 4x40": (*real_features("imagenette_train100", 4, 40), None),
            "imagenette 4x18": (*real_features("imagenette_train100", 4, 18), default_n_clusters(72)),
            "caltech101_sub 21x10": (*real_features("caltech101_sub", 21, 10), None)}
    rows = []
    for name, (X, y, c) in sets.items():
        if only and only not in name:
            continue
        c = c or len(set(y))
        for seed in seeds:
            for variant in variants:  # interleaved: a busy machine slows both alike
                kw = old_defaults(len(X)) if variant == "old" else {}
                t = time.perf_counter()
                m = TEMI(c, random_state=seed, n_threads=threads, **kw).fit(X)
                s = clustering_scores(y, m.labels_)
                row = {"set": name, "variant": variant, "seed": seed, "N": len(X), "C": c, "heads": m.n_heads_,
                       "batch": m.batch_size_, "steps": m.n_iter_, "fit_s": round(time.perf_counter() - t, 1),
                       "acc": round(s["acc"], 4), "nmi": round(s["nmi"], 4)}
                print(json.dumps(row), flush=True)
                rows.append(row)
                if out:
                    with out.open("a") as f:
                        f.write(json.dumps(row) + "\n")
    return rows


def table(rows: list[dict]) -> str:
    """Markdown table of --quality rows: per set and variant, mean +- sd over seeds."""
    out = ["| set (N, C) | schedule | ACC mean ± sd | NMI mean ± sd | per seed ACC / NMI | fit s (median) |",
           "|---|---|---|---|---|---|"]
    keys = sorted({(r["set"], r["variant"]) for r in rows}, key=lambda k: (k[0], k[1] != "old"))
    for name, variant in keys:
        rs = sorted((r for r in rows if (r["set"], r["variant"]) == (name, variant)), key=lambda r: r["seed"])
        acc, nmi = np.array([r["acc"] for r in rs]), np.array([r["nmi"] for r in rs])
        sched = f"{variant}: {rs[0]['heads']} heads, batch {rs[0]['batch']}, {rs[0]['steps']:,} steps"
        per = ", ".join(f"{r['acc']:.3f} / {r['nmi']:.3f}" for r in rs)
        out.append(f"| {name} ({rs[0]['N']}, {rs[0]['C']}) | {sched} | {acc.mean():.3f} ± {acc.std():.3f} | "
                   f"{nmi.mean():.3f} ± {nmi.std():.3f} | {per} | {float(np.median([r['fit_s'] for r in rs])):.0f} |")
    return "\n".join(out)


def first_mine(n_classes: int, per_class: int, clusterer: str) -> dict:
    """Wall time of one ``mine`` of a fresh folder (feature cache empty, corpus embedding cached)."""
    from clustermine.core.config import MineConfig
    from clustermine.workflows.estimate import estimate_run_cost
    from clustermine.workflows.pipeline import mine

    tmp = Path(tempfile.mkdtemp(prefix="first_run_"))
    try:
        subset_folder(DATA / "imagenette_train100", tmp / "images", n_classes, per_class)
        cache = tmp / "cache"  # empty feature cache: the images are encoded, as on a first run
        text = Path(os.environ.get("CLUSTERMINE_CACHE", ROOT / ".cache" / "clustermine")) / "text"
        (cache).mkdir()
        os.symlink(text.resolve(), cache / "text")  # the corpus embedding set-up made
        n = n_classes * per_class
        est = estimate_run_cost(n, clusterer, corpus_cached=True)
        t = time.perf_counter()
        run = mine(tmp / "images", tmp / "run", MineConfig(clusterer=clusterer), cache_dir=cache)
        wall = time.perf_counter() - t
        summary = run.meta.get("summary") or {}
        return {"N": n, "clusterer": clusterer, "wall_s": round(wall, 1), "stages_s": summary.get("timings_s"),
                "estimate_s": round(est.seconds, 1), "estimate_detail": est.detail,
                "load_avg_1min": round(os.getloadavg()[0], 2)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quality", action="store_true", help="TEMI new vs old default schedule on real features")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", type=Path, help="append JSON lines here (--quality)")
    ap.add_argument("--classes", type=int, default=4)
    ap.add_argument("--per-class", type=int, default=40)
    ap.add_argument("--clusterer", default="temi")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for --quality (1: robust on a shared machine)")
    ap.add_argument("--variants", default="new,old", help="--quality: new, old or both")
    ap.add_argument("--only", default="", help="--quality: only sets whose name contains this")
    ap.add_argument("--table", type=Path, help="print the markdown table of a --quality JSON-lines file")
    a = ap.parse_args()
    if a.table:
        print(table([json.loads(ln) for ln in a.table.read_text().splitlines() if ln.strip()]))
    elif a.quality:
        quality([int(s) for s in a.seeds.split(",")], a.out, a.threads, tuple(a.variants.split(",")), a.only)
    else:
        print(json.dumps(first_mine(a.classes, a.per_class, a.clusterer)))


if __name__ == "__main__":
    main()

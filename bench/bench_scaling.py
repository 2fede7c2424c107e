"""Performance and scaling of ClusterMine on this CPU (offline encoder).

    python bench/bench_scaling.py --part mine     # end-to-end `mine` at N = 1K, 5K, 20K real images
    python bench/bench_scaling.py --part vote     # vote-stage memory: image rows chunked vs all at once
    python bench/bench_scaling.py --part temi     # TEMI s/step and kNN time vs N (to 100K) and C (to 1000)
    python bench/bench_scaling.py --part embed2d  # UMAP and PCA, cold (new process, numba JIT) and warm
    python bench/bench_scaling.py --part score    # scoring throughput
    python bench/bench_scaling.py --part all

Folders for `mine` (deterministic): all image files of the sets below, in this order, each set's
files in sorted order; N = the first N of that list, hard-linked into
``.cache/bench_folders/N<N>/<set>/...`` (20,621 real images exist; nothing is repeated):
imagenette_train100, imagenette_val100, imagewoof_val80, dtd10, caltech101_sub, pacs,
imagenet_sample, cifar10_train300, cifar10_test. N = 1K is imagenette_train100 itself.

`mine` runs in a fresh process with the engine defaults (TEMI, C = default rule, 10 % holdout) and
a **cold feature cache** (an empty ``.cache/scaling_cache/N<N>/features``; the corpus embeddings are
linked from the shared cache, since they are a one-off cost per encoder x corpus measured on its own),
so every stage is measured, nothing is extrapolated. Decode + preprocess overlaps the forward pass
inside ``encode`` (prefetch threads); after ``mine`` the same process decodes every file once more on
one thread to show decode's share.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from common import DATA, ROOT, machine_info, machine_line, run_fresh, save_json, write_block  # noqa: E402

import numpy as np  # noqa: E402

SECTION = "## Performance and scaling"
ORDER = ["imagenette_train100", "imagenette_val100", "imagewoof_val80", "dtd10", "caltech101_sub", "pacs",
         "imagenet_sample", "cifar10_train300", "cifar10_test"]
FOLDERS = ROOT / ".cache" / "bench_folders"


def make_folder(n: int) -> Path:
    if n == 1000:
        return DATA / "imagenette_train100"
    from clustermine.method.images import scan_images

    dst = FOLDERS / f"N{n}"
    marker = dst / ".complete"
    if marker.is_file():
        return dst
    files = []
    for s in ORDER:
        files += [(s, r.path) for r in scan_images(DATA / s) if r.status == "ok"]
        if len(files) >= n:
            break
    if len(files) < n:
        raise SystemExit(f"only {len(files)} real images available, asked for {n}")
    for s, rel in files[:n]:
        t = dst / s / rel
        t.parent.mkdir(parents=True, exist_ok=True)
        if not t.exists():
            try:
                os.link(DATA / s / rel, t)
            except OSError:
                import shutil

                shutil.copy2(DATA / s / rel, t)
    marker.write_text(str(n))
    return dst


def _cold_cache(n: int) -> Path:
    """A cache root with no features and the shared corpus embeddings linked in."""
    import shutil

    root = ROOT / ".cache" / "scaling_cache" / f"N{n}"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    shared = Path(os.environ.get("CLUSTERMINE_CACHE", ROOT / ".cache" / "clustermine"))
    if (shared / "text").is_dir():
        (root / "text").symlink_to((shared / "text").resolve(), target_is_directory=True)
    return root


def part_mine(sizes) -> dict:
    import shutil

    out = {}
    for n in sizes:
        folder = make_folder(n)
        run_dir = ROOT / ".cache" / "bench_runs" / f"N{n}"
        shutil.rmtree(run_dir, ignore_errors=True)
        code = (
            "from clustermine.workflows.pipeline import mine, MineConfig\n"
            "t0 = time.perf_counter()\n"
            f"run = mine({str(folder)!r}, {str(run_dir)!r}, MineConfig(device='cpu'), overwrite=True)\n"
            "out = {'wall_s': time.perf_counter() - t0, 'summary': run.meta.get('summary', {})}\n"
            "out['max_rss_after_mine_mb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
            "from clustermine.method.images import scan_images, load_rgb\n"
            "from clustermine.method.encoders import load_encoder\n"
            "enc = load_encoder('offline', 'cpu')\n"
            f"recs = [r for r in scan_images({str(folder)!r}) if r.status == 'ok']\n"
            "t0 = time.perf_counter()\n"
            "for r in recs:\n    enc.preprocess(load_rgb(r.abs_path))\n"
            "out['decode_1thread_s'] = time.perf_counter() - t0\n"
        )
        r = run_fresh(code, {"CLUSTERMINE_CACHE": str(_cold_cache(n))}, timeout=5400)
        out[str(n)] = r
        print(n, json.dumps(r), flush=True)
    return out


def part_vote(sizes) -> dict:
    """Peak memory and time of the vote (top-5 over the corpus) on the features of the `mine` runs,
    in a fresh process each: image rows in chunks of 1,024 (the engine) vs all rows at once (before)."""
    out = {}
    for n in sizes:
        feats = ROOT / ".cache" / "bench_runs" / f"N{n}" / "features.npy"
        if not feats.is_file():
            continue
        for label, chunk in (("chunked", 1024), ("all rows at once", 10**9)):
            code = (
                "import numpy as np\nfrom common import corpus_and_embeddings\n"
                "from clustermine.method.mining import zero_shot_topk\n"
                f"F = np.load({str(feats)!r}).astype(np.float32)\n"
                "_, T = corpus_and_embeddings('wordnet-nouns')\n"
                "zero_shot_topk(F[:8], T, k=5)\n"
                "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
                "t0 = time.perf_counter()\n"
                f"zero_shot_topk(F, T, k=5, image_chunk_size={chunk})\n"
                "out = {'N': len(F), 'vote_s': time.perf_counter() - t0, 'rss_before_mb': base}\n"
            )
            r = run_fresh(code, timeout=5400)
            r["vote_extra_peak_mb"] = r["max_rss_mb"] - r["rss_before_mb"]
            out.setdefault(str(n), {})[label] = r
            print(n, label, r, flush=True)
    return out


def _synthetic(n: int, d: int = 384, k: int = 50, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((k, d)).astype(np.float32)
    x = centers[rng.integers(0, k, n)] + 0.7 * rng.standard_normal((n, d)).astype(np.float32)
    return common.l2n(x)


def part_temi(max_n: int, full_fit: bool = False) -> dict:
    import torch

    from clustermine.method.clustering.temi import MIN_STEPS, TEMI, default_batch_size, default_epochs, knn_indices

    res = {"step": [], "knn": [], "full": []}
    # s/step depends on batch size and C, not on N: 1 epoch at N = 10,240 (bs = 256 by default there)
    X = _synthetic(10240)
    for C in (10, 100, 1000):
        m = TEMI(C, epochs=1, random_state=0)
        t0 = time.perf_counter()
        m.fit(X)
        total = time.perf_counter() - t0
        train = total - m.knn_time_
        res["step"].append({"C": C, "N": len(X), "batch": m.batch_size_, "steps": m.n_iter_,
                            "s_per_step": train / m.n_iter_, "knn_s": m.knn_time_})
        print(res["step"][-1], flush=True)
    # exact kNN (N x N) and predict time vs N
    for n in [x for x in (10_000, 30_000, 100_000) if x <= max_n]:
        X = _synthetic(n)
        t0 = time.perf_counter()
        knn_indices(X, 50)
        res["knn"].append({"N": n, "knn_s": time.perf_counter() - t0})
        print(res["knn"][-1], flush=True)
    if not full_fit:  # `--part mine` at N = 20K already measures a real full default fit
        full_sizes = []
    else:
        full_sizes = [20_000]
    for n_full in full_sizes:
        X = _synthetic(n_full)
        m = TEMI(100, random_state=0)
        t0 = time.perf_counter()
        m.fit(X)
        res["full"].append({"N": n_full, "C": 100, "steps": m.n_iter_, "batch": m.batch_size_,
                            "fit_s": time.perf_counter() - t0, "knn_s": m.knn_time_})
        print(res["full"][-1], flush=True)
    res["min_steps"] = MIN_STEPS
    res["default_batch"] = {n: default_batch_size(n) for n in (1000, 5000, 20000, 100000)}
    res["default_steps"] = {n: (n // default_batch_size(n)) * default_epochs(n, default_batch_size(n))
                            for n in (1000, 5000, 10_000, 20000, 30_000, 100000)}
    res["torch_threads"] = torch.get_num_threads()
    return res


def part_embed2d(sizes) -> dict:
    out = {}
    for n in sizes:
        code = (
            "import numpy as np\nfrom common import folder_features\n"
            "import itertools\n"
            f"sets = {ORDER[:7]!r}\nF = []\n"
            "for s in sets:\n    F.append(folder_features(s)[1])\n"
            f"X = np.concatenate(F)[:{n}]\n"
            "out = {'N': len(X)}\n"
            "t0 = time.perf_counter(); from sklearn.decomposition import PCA; out['pca_import_s'] = time.perf_counter() - t0\n"
            "t0 = time.perf_counter(); PCA(2, random_state=0).fit_transform(X); out['pca_cold_s'] = time.perf_counter() - t0\n"
            "t0 = time.perf_counter(); PCA(2, random_state=0).fit_transform(X); out['pca_warm_s'] = time.perf_counter() - t0\n"
            "t0 = time.perf_counter(); import umap; out['umap_import_s'] = time.perf_counter() - t0\n"
            "t0 = time.perf_counter(); umap.UMAP(n_components=2, random_state=0).fit_transform(X); out['umap_cold_s'] = time.perf_counter() - t0\n"
            "t0 = time.perf_counter(); umap.UMAP(n_components=2, random_state=0).fit_transform(X); out['umap_warm_s'] = time.perf_counter() - t0\n"
            "t0 = time.perf_counter(); umap.UMAP(n_components=2).fit_transform(X); out['umap_warm_parallel_s'] = time.perf_counter() - t0\n"
        )
        out[str(n)] = run_fresh(code, timeout=5400)
        print(n, out[str(n)], flush=True)
    return out


def part_score() -> dict:
    from clustermine.method.scoring import Detector

    enc = common.encoder()
    corpus, emb = common.corpus_and_embeddings("wordnet-nouns")
    det = Detector(concepts=list(corpus.concepts), text_embeddings=emb, positive_idx=np.arange(17))
    F = np.concatenate([common.folder_features(s)[1] for s in ORDER[:6]])
    res = {}
    for n in (1000, len(F)):
        t0 = time.perf_counter()
        det.log_scores(F[:n])
        res[f"features_{n}"] = n / (time.perf_counter() - t0)
    paths, _ = common.folder_features("caltech101_sub")
    files = [str(DATA / "caltech101_sub" / p) for p in paths[:320]]
    enc.encode_images(files[:32])
    t0 = time.perf_counter()
    r = enc.encode_images(files, batch_size=32)
    t1 = time.perf_counter()
    det.log_scores(r.features)
    t2 = time.perf_counter()
    res.update({"e2e_files": len(files), "e2e_img_s": len(files) / (t2 - t0), "encode_img_s": len(files) / (t1 - t0),
                "score_part_s": t2 - t1})
    print(res, flush=True)
    return res


def render(r: dict) -> str:
    L = [f"Command: `python bench/bench_scaling.py --part all` (parts: mine, vote, temi, embed2d, score) · "
         f"{machine_line(r['machine'])}. Load average (1 / 5 / 15 min) at the start of each part: "
         + ", ".join(f"{p} {v}" for p, v in r.get("loadavg", {}).items()) + "."]
    if "mine" in r:
        L += ["", "#### End-to-end `mine`, cold (engine defaults: offline encoder, TEMI, C = default rule, 10 % holdout; "
              "empty feature cache, corpus embeddings cached), real images", "",
              "| N images | C | scan | encode (decode overlapped) | decode alone, 1 thread | corpus load | TEMI | vote "
              "| total wall | peak RSS | bottleneck |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
        for n, m in r["mine"].items():
            s = m["summary"]
            t = s.get("timings_s", {})
            stages = {"encode": t.get("encode", 0), "corpus": t.get("corpus", 0), "TEMI": t.get("cluster", 0),
                      "vote": t.get("vote", 0)}
            bott = max(stages, key=stages.get)
            share = stages[bott] / max(m["wall_s"], 1e-9)
            L.append(f"| {int(n):,} | {s.get('n_clusters')} | {t.get('scan', 0):.1f} s | {t.get('encode', 0):.0f} s "
                     f"({int(n) / max(t.get('encode', 0), 1e-9):.1f} img/s) | {m.get('decode_1thread_s', float('nan')):.0f} s | "
                     f"{t.get('corpus', 0):.1f} s | {t.get('cluster', 0):.0f} s | {t.get('vote', 0):.1f} s | "
                     f"{m['wall_s']:.0f} s | {m.get('max_rss_after_mine_mb', m['max_rss_mb']):.0f} MB | "
                     f"{bott} ({share:.0%}) |")
    if "vote" in r:
        L += ["", "#### Vote stage memory (top-5 of every image over the 117,798-noun corpus), fresh process per row", "",
              "| N | image rows per chunk | time | peak memory above the loaded features + corpus |", "|---|---|---|---|"]
        for n, v in r["vote"].items():
            for label, x in v.items():
                L.append(f"| {int(n):,} | {label} | {x['vote_s']:.1f} s | {x['vote_extra_peak_mb']:,.0f} MB |")
    if "temi" in r:
        T = r["temi"]
        L += ["", "#### TEMI on synthetic features (384-d, 50-component Gaussian mixture, L2-normalised), 16 heads", "",
              "s / step measured over one epoch at N = 10,240 (batch 256, the default for every N ≥ 4,096; "
              "the step cost does not depend on N); exact kNN (k = 50) measured at each N.", "",
              "| C | batch | s / step |", "|---|---|---|"]
        for s in T["step"]:
            L.append(f"| {s['C']:,} | {s['batch']} | {s['s_per_step'] * 1000:.0f} ms |")
        steps = {int(k): v for k, v in T.get("default_steps", {}).items()}
        L += ["", "| N | exact kNN | default steps | est. full fit, C = 10 / 100 / 1,000 (kNN + steps × s/step) |",
              "|---|---|---|---|"]
        for k in T["knn"]:
            n_steps = steps.get(k["N"]) or T["min_steps"]
            est = " / ".join(f"{(k['knn_s'] + n_steps * s['s_per_step']) / 60:.0f} min" for s in T["step"])
            L.append(f"| {k['N']:,} | {k['knn_s']:.1f} s | {n_steps:,} | {est} |")
        for f in T["full"]:
            L.append(f"\nMeasured full default fit at N = {f['N']:,}, C = {f['C']}: {f['steps']} steps of batch "
                     f"{f['batch']} in {f['fit_s']:.0f} s (kNN {f['knn_s']:.1f} s).")
    if "embed2d" in r:
        L += ["", "#### 2-D map: PCA and UMAP (umap-learn), cold = new process incl. import and numba JIT", "",
              "| N | PCA import + cold / warm | UMAP import | UMAP cold (1st fit, JIT) | UMAP warm (seeded, 1 thread) | UMAP warm (unseeded, parallel) |",
              "|---|---|---|---|---|---|"]
        for n, e in r["embed2d"].items():
            L.append(f"| {int(n):,} | {e['pca_import_s']:.2f} + {e['pca_cold_s']:.2f} s / {e['pca_warm_s']:.3f} s | "
                     f"{e['umap_import_s']:.1f} s | {e['umap_cold_s']:.1f} s | {e['umap_warm_s']:.1f} s | "
                     f"{e['umap_warm_parallel_s']:.1f} s |")
    if "score" in r:
        s = r["score"]
        fk = [k for k in s if k.startswith("features_")]
        L += ["", "#### Scoring throughput (whole 117,798-noun corpus in the denominator)", "",
              "; ".join(f"features already encoded, N = {k.split('_')[1]}: {s[k]:.0f} images/s" for k in fk) +
              f"; end-to-end from files ({s['e2e_files']} caltech images, decode + encode + score): "
              f"{s['e2e_img_s']:.1f} images/s (encode alone {s['encode_img_s']:.1f} images/s)."]
    return "\n".join(L)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", choices=["mine", "vote", "temi", "embed2d", "score", "all", "render"], default="all")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 20000])
    ap.add_argument("--max-knn", type=int, default=100_000)
    ap.add_argument("--temi-full", action="store_true", help="also one full default TEMI fit at N = 20K synthetic")
    a = ap.parse_args()
    r = common.load_json("scaling.json") or {}
    r["machine"] = machine_info()
    parts = ["mine", "vote", "temi", "embed2d", "score"] if a.part == "all" else ([] if a.part == "render" else [a.part])
    for p in parts:
        r.setdefault("loadavg", {})[p] = [round(x, 1) for x in os.getloadavg()]
        if p == "mine":
            r["mine"] = part_mine(a.sizes)
        elif p == "vote":
            r["vote"] = part_vote(a.sizes)
        elif p == "temi":
            r["temi"] = part_temi(a.max_knn, a.temi_full)
        elif p == "embed2d":
            r["embed2d"] = part_embed2d([n for n in a.sizes if n <= 20000])
        elif p == "score":
            r["score"] = part_score()
        save_json("scaling.json", r)
    md = render(r)
    print(md)
    write_block(SECTION, "scaling", md)


if __name__ == "__main__":
    main()

"""CUDA check of issue 4 (run via ``bash bench/gpu_check.sh``; under 5 minutes on one GPU).

Measures on ``--device`` (default ``cuda``):

1. offline encoder (ConSE): end-to-end ``encode_images`` throughput on real image files (decode
   threads + forward) and the bare forward pass on the same preprocessed batches; when reference
   CPU features are given, the cosine between the CUDA (fp16 autocast) and CPU (fp32) features of the
   same files, and whether their ImageNet top-1 agrees;
2. encoding pipeline (issue 10): untrained ViT-B-32 bare forward vs end-to-end with decode threads,
   spawn decode processes, and processes + nvJPEG GPU decoding; ratio to bare forward (target >= 0.5);
3. open_clip ViT-B-32 and ViT-L-14 with untrained weights (``:none``; throughput does not depend on
   the weights): end-to-end and bare-forward images/s;
4. TEMI: exact kNN (k = 50) at N = 100,000 synthetic 384-d features; s/step at C = 1,000 (16 heads);
   a full default-recipe fit at N = 100,000, C = 1,000 when the estimate fits the time budget; and a
   full default fit on real offline features of ``imagenette_train100`` (C = 10, seed 0) with its
   clustering accuracy (CPU reference: 72.9 s, ACC 0.944);
5. scoring throughput: log-score of 50,000 features against the 117,798-concept corpus on the GPU
   (fp32 and fp16 matmul) and the engine's numpy path on the host CPUs.

The device machine has no internet and no ``../shared``; ``--data``, ``--class-embeddings`` and the
``.npz`` options let a prepared folder stand in (see ``bench/gpu_check.sh``). Without the cached
117,798-concept corpus embeddings the scoring step uses random unit vectors of the same shape, and
says so (throughput does not depend on the values). ``--quick --device cpu`` is a small dry run.
Exits 2 with a clear message when CUDA is asked for and absent. Writes ``bench/results/gpu_check.json``
(and ``$OUT/gpu_check.json`` when ``OUT`` is set).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import torch

N_CORPUS, DIM = 117_798, 384


def _sync(dev: str) -> None:
    if dev.startswith("cuda"):
        torch.cuda.synchronize()


def _files(data: Path, limit: int) -> list[str]:
    from clustermine.method.images import scan_images

    files: list[str] = []
    for sub in sorted(p for p in data.iterdir() if p.is_dir()):
        files += [r.abs_path for r in scan_images(sub) if r.status == "ok"]
    return files[:limit]


def _encode_throughput(enc, files: list[str], dev: str, batch: int, workers: int) -> dict:
    enc.encode_images(files[:batch], batch_size=batch, num_workers=workers, worker_kind="thread")  # warm-up
    e2e_passes = []
    for _ in range(2):  # the first pass may read files cold from disk; the second has them in the OS cache
        _sync(dev)
        t0 = time.perf_counter()
        res = enc.encode_images(files, batch_size=batch, num_workers=workers, worker_kind="thread")
        _sync(dev)
        e2e_passes.append(len(files) / (time.perf_counter() - t0))
    e2e = e2e_passes[-1]
    n_bare = min(len(files), 4 * batch)
    batches = [torch.stack([enc.load_and_preprocess(f) for f in files[i:i + batch]]).to(dev)
               for i in range(0, n_bare, batch)]
    enc.encode_batch(batches[0])
    _sync(dev)
    t0 = time.perf_counter()
    for b in batches:
        enc.encode_batch(b)
    _sync(dev)
    bare = n_bare / (time.perf_counter() - t0)
    return {"n_files": len(files), "batch": batch, "decode_threads": workers, "e2e_img_s": e2e,
            "e2e_first_pass_img_s": e2e_passes[0],
            "bare_forward_img_s": bare, "e2e_over_bare": e2e / bare, "features": res.features}


def check_offline(args, dev: str, files: list[str]) -> dict:
    from clustermine.method.encoders import offline

    enc = offline.OfflineEncoder(dev)
    if args.class_embeddings:
        # The MiniLM text model is not on the device machine; its 1000 class-name embeddings (the
        # only text the image path uses) were computed by the same model on the host and are put
        # into the encoder's cache, so the image path below is the engine's own code.
        emb = torch.from_numpy(np.load(args.class_embeddings)).to(dev)
        enc.class_embeddings = lambda: emb  # this instance only; the engine's image path is unchanged
    r = _encode_throughput(enc, files, dev, args.batch, args.workers)
    feats = r.pop("features")
    if args.reference_features:
        ref = np.load(args.reference_features)
        ref_idx = {p: i for i, p in enumerate(ref["paths"].tolist())}
        data = Path(args.data).resolve()
        rows = []
        for i, f in enumerate(files):
            rel = "/".join(Path(f).resolve().relative_to(data).parts[1:])  # path inside its image set
            if rel in ref_idx:
                rows.append((i, ref_idx[rel]))
        a = feats[[i for i, _ in rows]]
        b = ref["features"][[j for _, j in rows]]
        cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        ce = enc.class_embeddings().float().cpu().numpy()
        agree = float(np.mean((a @ ce.T).argmax(1) == (b @ ce.T).argmax(1)))
        r["vs_cpu_fp32"] = {"n": len(rows), "cos_min": float(cos.min()), "cos_mean": float(cos.mean()),
                            "nearest_class_agreement": agree}
    return r


_DECODER = None


def _decode_one(path: str) -> tuple:
    return tuple(_DECODER.load_and_preprocess(path).shape)


def _decoder_init() -> None:
    global _DECODER
    from clustermine.method.encoders import offline

    torch.set_num_threads(1)
    _DECODER = offline.OfflineEncoder("cpu")


def check_decode(args, files: list[str]) -> dict:
    """Decode + preprocess alone (the offline encoder's transform), in threads vs in processes."""
    import multiprocessing as mp
    from concurrent.futures import ThreadPoolExecutor

    from clustermine.method.encoders import offline

    global _DECODER
    _DECODER = offline.OfflineEncoder("cpu")
    out: dict = {"n_files": len(files), "torch_threads": torch.get_num_threads()}
    for f in files[:16]:  # warm-up: lazy imports, first-call costs
        _decode_one(f)
    for w in sorted({1, 4, args.workers}):
        with ThreadPoolExecutor(w) as pool:
            t0 = time.perf_counter()
            list(pool.map(_decode_one, files))
            out[f"threads_{w}_img_s"] = len(files) / (time.perf_counter() - t0)
    # spawn, not fork: a forked child of a process whose OpenMP pool is running can deadlock
    with mp.get_context("spawn").Pool(args.workers, initializer=_decoder_init) as pool:
        pool.map(_decode_one, files[:64])
        t0 = time.perf_counter()
        pool.map(_decode_one, files, chunksize=16)
        out[f"processes_{args.workers}_img_s"] = len(files) / (time.perf_counter() - t0)
    return out


def check_openclip(args, dev: str, files: list[str]) -> dict:
    from clustermine.method.encoders import load_encoder

    out = {}
    for arch in args.openclip:
        t0 = time.perf_counter()
        enc = load_encoder(f"openclip:{arch}:none", device=dev)
        build = time.perf_counter() - t0
        r = _encode_throughput(enc, files, dev, args.batch, args.workers)
        r.pop("features")
        r["build_s"] = build
        out[arch] = r
        print(" ", arch, {k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()}, flush=True)
        del enc
    return out


def check_encode_pipeline(args, dev: str, files: list[str]) -> dict:
    """Issue 10 item 3: ViT-B-32-sized (untrained open_clip ViT-B-32) bare forward vs end-to-end with
    decode threads, decode processes, and decode processes + GPU JPEG decoding (nvJPEG).

    ``args.pipeline_n`` paths (the file list repeated: after the first pass the files are in the OS
    cache, decoding still happens every time). "whole" counts the workers' start-up; "steady" times
    the job from the first 10 % of images on (progress callback), i.e. the rate a long job runs at.
    """
    from clustermine.method.encoders import load_encoder
    from clustermine.method.encoders.decode import gpu_jpeg_available

    enc = load_encoder(f"openclip:{args.pipeline_arch}:none", device=dev)
    n, batch = args.pipeline_n, args.pipeline_batch
    paths = [files[i % len(files)] for i in range(n)]
    pre = [enc.load_and_preprocess(f) for f in files[: 4 * batch]]
    xs = [torch.stack((pre * (batch // len(pre) + 1))[i * batch:(i + 1) * batch]).to(dev) for i in range(4)]
    enc.encode_batch(xs[0])
    _sync(dev)
    t0 = time.perf_counter()
    for _ in range(3):
        for x in xs:
            enc.encode_batch(x)
    _sync(dev)
    bare = 12 * batch / (time.perf_counter() - t0)
    out: dict = {"arch": args.pipeline_arch, "n_paths": n, "n_files": len(files), "batch": batch,
                 "workers": args.workers, "bare_forward_img_s": bare}
    variants = {"threads": dict(worker_kind="thread", gpu_decode=False),
                "processes": dict(worker_kind="process", gpu_decode=False)}
    if gpu_jpeg_available(dev):
        variants["processes_gpu_jpeg"] = dict(worker_kind="process", gpu_decode=True)
    else:
        out["processes_gpu_jpeg"] = f"skipped: no nvJPEG on device {dev!r}"
    ref = None
    for name, kw in variants.items():
        marks: list[tuple[int, float]] = []
        _sync(dev)
        t0 = time.perf_counter()
        res = enc.encode_images(paths, batch_size=batch, num_workers=args.workers,
                                progress=lambda d, _t: marks.append((d, time.perf_counter())), **kw)
        _sync(dev)
        t1 = time.perf_counter()
        d0, s0 = next(((d, s) for d, s in marks if d >= n // 10), marks[0])
        steady = (n - d0) / max(t1 - s0, 1e-9)
        whole = n / (t1 - t0)
        out[name] = {"whole_img_s": whole, "steady_img_s": steady, "whole_over_bare": whole / bare,
                     "steady_over_bare": steady / bare, "n_ok": res.n_ok}
        if ref is None:
            ref = res.features
        elif res.features.shape == ref.shape:
            cos = (res.features * ref).sum(1)
            out[name]["cos_vs_threads_min"] = float(cos.min())
            out[name]["cos_vs_threads_mean"] = float(cos.mean())
        print(f"  {name}: whole {whole:.0f} img/s, steady {steady:.0f} img/s, bare {bare:.0f} img/s, "
              f"ratio whole {whole / bare:.3f} / steady {steady / bare:.3f} (target >= 0.5)", flush=True)
    return out


def _synthetic(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    cent = rng.standard_normal((200, DIM)).astype(np.float32)
    x = cent[rng.integers(0, 200, n)] + 0.7 * rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def check_temi(args, dev: str, t_start: float) -> dict:
    from clustermine.method.clustering.temi import MIN_STEPS, TEMI, default_batch_size, knn_indices
    from clustermine.method.metrics import clustering_scores

    n, c = args.temi_n, args.temi_c
    X = _synthetic(n)
    out: dict = {"N": n, "C": c, "default_batch": default_batch_size(n), "min_steps": MIN_STEPS}
    _sync(dev)
    t0 = time.perf_counter()
    knn_indices(X, 50, device=dev)
    _sync(dev)
    out["knn_s"] = time.perf_counter() - t0
    # s/step: 3 epochs over a slice of 100 default-size batches (the step cost does not depend on N)
    bs = default_batch_size(n)
    m = TEMI(c, device=dev, batch_size=bs, epochs=3, min_steps=1, seed=0)
    t0 = time.perf_counter()
    m.fit(X[: 100 * bs])
    _sync(dev)
    out["s_per_step"] = (time.perf_counter() - t0 - m.knn_time_) / m.n_iter_
    out["probe_steps"] = m.n_iter_
    out["est_default_fit_s"] = out["knn_s"] + out["s_per_step"] * MIN_STEPS
    print("  temi probe", {k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}, flush=True)
    left = args.budget_s - (time.perf_counter() - t_start)
    if out["est_default_fit_s"] * 1.3 < left - 60:
        m = TEMI(c, device=dev, seed=0)
        t0 = time.perf_counter()
        m.fit(X)
        _sync(dev)
        out["full_fit"] = {"fit_s": time.perf_counter() - t0, "steps": m.n_iter_, "batch": m.batch_size_,
                           "epochs": m.epochs_, "knn_s": m.knn_time_, "occupied_clusters": m.n_occupied_}
    else:
        out["full_fit"] = f"skipped: estimate {out['est_default_fit_s']:.0f} s does not fit the {left:.0f} s left"
    if args.real_features:
        z = np.load(args.real_features)
        m = TEMI(10, device=dev, seed=0)
        t0 = time.perf_counter()
        m.fit(z["features"])
        _sync(dev)
        sc = clustering_scores(z["labels"], m.labels_)
        out["real_imagenette_train100"] = {"fit_s": time.perf_counter() - t0, "steps": m.n_iter_, **sc}
    return out


def check_scoring(args, dev: str) -> dict:
    from clustermine.method.scoring import log_scores

    out: dict = {}
    emb = None
    if args.real_corpus:  # the real corpus embeddings (the host's cache); on failure the synthetic one below
        import common

        try:
            _, emb = common.corpus_and_embeddings("wordnet-nouns")
            out["corpus"] = "real: 117,798 WordNet nouns, offline encoder"
        except Exception as exc:  # noqa: BLE001 - any failure falls back to the synthetic corpus
            out["corpus_error"] = str(exc)[:200]
    if emb is None:
        emb = _synthetic(N_CORPUS, seed=1)
        out["corpus"] = "synthetic: random unit vectors, shape [117798, 384] (throughput only)"
    n = args.score_n
    F = _synthetic(n, seed=2)
    pos = np.arange(17)
    T = torch.from_numpy(emb).to(dev)
    Ft = torch.from_numpy(F).to(dev)
    for dtype in (torch.float32, torch.float16):
        Tt, Fd = T.to(dtype), Ft.to(dtype)
        for rep in range(2):  # first pass warms up kernels
            _sync(dev)
            t0 = time.perf_counter()
            res = []
            for i in range(0, n, 4096):
                z = (Fd[i:i + 4096] @ Tt.T).float() / 0.01
                res.append((torch.logsumexp(z[:, pos], 1) - torch.logsumexp(z, 1)).cpu())
            _sync(dev)
            dt = time.perf_counter() - t0
        out[f"torch_{str(dtype).split('.')[-1]}_img_s"] = n / dt
        if dtype == torch.float32:
            gpu32 = torch.cat(res).numpy()
    m = min(n, args.score_n_numpy)
    t0 = time.perf_counter()
    ref = log_scores(F[:m], emb, pos, 0.01)  # the same tau as the torch path above
    out["engine_numpy_host_img_s"] = m / (time.perf_counter() - t0)
    out["max_abs_diff_fp32_vs_engine"] = float(np.abs(ref - np.minimum(gpu32[:m], 0.0)).max())
    return out


def check_ray_encode(args, dev: str, files: list[str]) -> dict:
    """Issue 11: one GPU encoder actor through the Ray Data pipeline (a one-node loopback Ray cluster on
    this machine: decode tasks on its CPUs, ``num_gpus=1`` actor) vs the bare forward of the same model.
    Needs Ray installed (``ray[default,data]``, requirements.txt)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from ray_cluster import LoopbackRayCluster

    from clustermine.workflows.distributed import RayCluster
    from clustermine.method.encoders import load_encoder

    enc = load_encoder(f"openclip:{args.pipeline_arch}:none", device=dev)
    n, batch = args.pipeline_n, args.pipeline_batch
    paths = [files[i % len(files)] for i in range(n)]
    pre = [enc.load_and_preprocess(f) for f in files[:batch]]
    x = torch.stack((pre * (batch // len(pre) + 1))[:batch]).to(dev)
    enc.encode_batch(x)
    _sync(dev)
    t0 = time.perf_counter()
    for _ in range(8):
        enc.encode_batch(x)
    _sync(dev)
    bare = 8 * batch / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    with LoopbackRayCluster(nodes=1, cpus_per_node=os.cpu_count() or 2, gpus_per_node=1,
                            object_store_mb=8192) as c:
        started = time.perf_counter() - t0
        with RayCluster(c.address) as cluster:
            marks: list[tuple[int, float]] = []
            t1 = time.perf_counter()
            n_ok = sum(r.n_ok for _, r in cluster.iter_encode(enc, paths, batch_size=batch, chunk_size=4 * batch,
                                                             progress=lambda d, _t: marks.append((d, time.perf_counter()))))
            t2 = time.perf_counter()
    d0, s0 = next(((d, s) for d, s in marks if d >= n // 10), marks[0])
    steady, whole = (n - d0) / max(t2 - s0, 1e-9), n / (t2 - t1)
    return {"arch": args.pipeline_arch, "n_paths": n, "batch": batch, "bare_forward_img_s": bare,
            "cluster_start_s": started, "whole_img_s": whole, "steady_img_s": steady,
            "whole_over_bare": whole / bare, "steady_over_bare": steady / bare, "n_ok": n_ok}


def _save(out: dict) -> None:
    """bench/results/gpu_check.json, and $OUT/gpu_check.json on the device machine."""
    import common

    common.save_json("gpu_check.json", out)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu_check.json").write_text(json.dumps(out, indent=1, default=float))


def render(r: dict) -> str:
    """The BENCHMARKS.md block for one ``gpu_check.json``."""
    from common import machine_line

    g = r.get("gpu", {})
    L = [f"Command: `bash bench/gpu_check.sh` (prepared with `bash bench/gpu_check.sh --prepare`) · GPU: "
         f"**{g.get('name', r['device'])}** ({g.get('memory_gib', '?')} GiB, {g.get('multiprocessors', '?')} SMs, "
         f"CUDA {g.get('cuda', '?')}) · host: {machine_line(r['host'])} · whole check {r.get('total_wall_s', 0):.0f} s.", ""]
    o = r.get("offline_encode", {})
    rows = [("offline (ConSE, EfficientNet-Lite0 + class-name mixture), fp16 autocast", o)]
    rows += [(f"open_clip {a}, untrained weights, fp16 autocast", v) for a, v in r.get("openclip_encode", {}).items()]
    L += ["| encoder | files | batch / decode threads | end-to-end (decode + forward) | bare forward | end-to-end / bare |",
          "|---|---|---|---|---|---|"]
    for name, v in rows:
        if "e2e_img_s" in v:
            L.append(f"| {name} | {v['n_files']} | {v['batch']} / {v['decode_threads']} | {v['e2e_img_s']:.0f} img/s | "
                     f"{v['bare_forward_img_s']:,.0f} img/s | {v['e2e_over_bare']:.3f} |")
    p = r.get("encode_pipeline", {})
    if "bare_forward_img_s" in p:
        L += ["", f"Encoding pipeline (issue 10): open_clip {p['arch']} untrained, fp16 autocast, {p['n_paths']:,} paths "
              f"({p['n_files']} files repeated), batch {p['batch']}, {p['workers']} decode workers; bare forward "
              f"**{p['bare_forward_img_s']:,.0f} img/s**. Target end-to-end >= 0.5 x bare.", "",
              "| decode | end-to-end (whole job) | steady (after 10 %) | whole / bare | steady / bare |",
              "|---|---|---|---|---|"]
        for name in ("threads", "processes", "processes_gpu_jpeg"):
            v = p.get(name)
            if isinstance(v, dict):
                cos = (f" (cosine vs threads: mean {v['cos_vs_threads_mean']:.4f}, min {v['cos_vs_threads_min']:.4f})"
                       if "cos_vs_threads_min" in v else "")
                L.append(f"| {name.replace('_', ' ')}{cos} | {v['whole_img_s']:,.0f} img/s | {v['steady_img_s']:,.0f} img/s | "
                         f"{v['whole_over_bare']:.3f} | {v['steady_over_bare']:.3f} |")
            elif v:
                L.append(f"| {name.replace('_', ' ')} | {v} | | | |")
    c = o.get("vs_cpu_fp32")
    if c:
        L.append(f"\nCUDA (fp16 autocast) vs CPU (fp32) offline features of the same {c['n']} files: cosine mean "
                 f"{c['cos_mean']:.5f}, min {c['cos_min']:.4f}; nearest ImageNet class agrees for "
                 f"{c['nearest_class_agreement']:.1%}.")
    t = r.get("temi", {})
    if "knn_s" in t:
        L += ["", f"TEMI (16 heads, default recipe) at N = {t['N']:,} synthetic 384-d features, C = {t['C']:,}: exact kNN "
              f"(k = 50) {t['knn_s']:.2f} s; {t['s_per_step'] * 1000:.1f} ms / step at batch {t['default_batch']}."]
        f = t.get("full_fit")
        if isinstance(f, dict):
            L.append(f"Full default fit: **{f['fit_s']:.1f} s** ({f['steps']:,} steps, {f['epochs']} epochs, kNN inside the fit "
                     f"{f['knn_s']:.1f} s; {f['occupied_clusters']} of {t['C']:,} clusters occupied).")
        real = t.get("real_imagenette_train100")
        if real:
            L.append(f"Real offline features of `imagenette_train100` (N = 1,000, C = 10, seed 0): full default fit "
                     f"**{real['fit_s']:.1f} s** ({real['steps']:,} steps), ACC {real['acc']:.3f}, NMI {real['nmi']:.3f}, "
                     f"ARI {real['ari']:.3f} (2-core CPU: 72.9–79.5 s, ACC 0.944, NMI 0.881).")
    ry = r.get("ray_encode", {})
    if "bare_forward_img_s" in ry:
        L += ["", f"Ray (issue 11): one GPU encoder actor through the Ray Data pipeline, open_clip {ry['arch']} untrained, "
              f"{ry['n_paths']:,} paths, batch {ry['batch']}: whole {ry['whole_img_s']:,.0f} img/s, steady "
              f"{ry['steady_img_s']:,.0f} img/s vs bare forward {ry['bare_forward_img_s']:,.0f} img/s: "
              f"**{ry['steady_over_bare']:.2f} x** steady (target >= 0.5); cluster start {ry['cluster_start_s']:.0f} s."]
    sc = r.get("score", {})
    if sc:
        L += ["", f"Scoring features already encoded against {sc['corpus']}: GPU fp32 **{sc['torch_float32_img_s']:,.0f} "
              f"img/s**, fp16 {sc['torch_float16_img_s']:,.0f} img/s; the engine's numpy path on the host CPUs "
              f"{sc['engine_numpy_host_img_s']:,.0f} img/s (max |difference| of the log-scores "
              f"{sc['max_abs_diff_fp32_vs_engine']:.1e})."]
    return "\n".join(L)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--data", help="folder of image sets (default: ../shared/data)")
    ap.add_argument("--max-files", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--workers", type=int, default=max(1, min(12, (os.cpu_count() or 2) - 2)))
    ap.add_argument("--class-embeddings", help=".npy [1000, 384] of the offline encoder's class names")
    ap.add_argument("--reference-features", help=".npz (paths, features) of CPU offline features")
    ap.add_argument("--real-features", help=".npz (features, labels) for a real TEMI fit")
    ap.add_argument("--real-corpus", action="store_true", help="use the cached real corpus embeddings")
    ap.add_argument("--openclip", nargs="*", default=["ViT-B-32", "ViT-L-14"])
    ap.add_argument("--pipeline-arch", default="ViT-B-32")
    ap.add_argument("--pipeline-n", type=int, default=8192, help="paths per end-to-end run of encode_pipeline")
    ap.add_argument("--pipeline-batch", type=int, default=256)
    ap.add_argument("--temi-n", type=int, default=100_000)
    ap.add_argument("--temi-c", type=int, default=1000)
    ap.add_argument("--score-n", type=int, default=50_000)
    ap.add_argument("--score-n-numpy", type=int, default=5_000)
    ap.add_argument("--budget-s", type=float, default=270.0)
    ap.add_argument("--steps", nargs="+",
                    default=["encode_pipeline", "offline_encode", "openclip_encode", "temi", "score", "decode",
                             "ray_encode"],
                    help="which parts to run (default: all, decode last)")
    ap.add_argument("--quick", action="store_true", help="small sizes: a dry run of the script itself")
    ap.add_argument("--render", action="store_true",
                    help="write the BENCHMARKS.md block from bench/results/gpu_check.json and exit")
    args = ap.parse_args()
    if args.render:
        import common

        md = render(common.load_json("gpu_check.json"))
        common.write_block("## GPU check", "gpu", md)
        print(md)
        return 0
    dev = args.device
    if dev.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: FAILED - no CUDA device is visible to torch "
              f"(torch {torch.__version__}, CUDA build {torch.version.cuda}). Run this on a machine with an "
              "NVIDIA GPU, or pass --quick --device cpu for a dry run.", file=sys.stderr)
        return 2
    if args.quick:
        args.max_files, args.batch, args.temi_n, args.temi_c = 64, 16, 5000, 50
        args.score_n, args.score_n_numpy, args.openclip = 2000, 2000, args.openclip[:1]
        args.pipeline_n, args.pipeline_batch, args.workers = 96, 16, 2
    t_start = time.perf_counter()
    import common

    data = Path(args.data) if args.data else common.DATA
    args.data = str(data)
    out: dict = {"device": dev, "torch": torch.__version__, "numpy": np.__version__,
                 "host": common.machine_info(), "quick": args.quick}
    if dev.startswith("cuda"):
        p = torch.cuda.get_device_properties(0)
        out["gpu"] = {"name": p.name, "memory_gib": round(p.total_memory / 2**30, 1),
                      "multiprocessors": p.multi_processor_count, "cuda": torch.version.cuda}
    print("device:", out.get("gpu", dev), flush=True)
    files = _files(data, args.max_files)
    parts = {"decode": lambda: check_decode(args, files),
             "encode_pipeline": lambda: check_encode_pipeline(args, dev, files),
             "offline_encode": lambda: check_offline(args, dev, files),
             "openclip_encode": lambda: check_openclip(args, dev, files),
             "temi": lambda: check_temi(args, dev, t_start),
             "score": lambda: check_scoring(args, dev),
             "ray_encode": lambda: check_ray_encode(args, dev, files)}
    steps = [(name, parts[name]) for name in args.steps]
    rc = 0
    for name, fn in steps:
        t0 = time.perf_counter()
        try:
            out[name] = fn()
        except Exception as exc:  # noqa: BLE001 - report and go on: one failed part must not lose the others
            out[name] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
            rc = 1
        out[name + "_wall_s"] = time.perf_counter() - t0
        print(name, json.dumps(out[name], default=float)[:1500], flush=True)
        _save(out)  # after every part, so a later hang or kill keeps what was measured
    out["total_wall_s"] = time.perf_counter() - t_start
    _save(out)
    print(f"total {out['total_wall_s']:.1f} s", flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())

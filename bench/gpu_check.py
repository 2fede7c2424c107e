"""CUDA check (run via ``bash bench/gpu_check.sh``; finishes in under 5 minutes on one GPU).

Measures on ``cuda``:
1. encode throughput of the offline encoder, end-to-end (``encode_images`` on real image files,
   batch 128) and bare forward (same preprocessed batches);
2. TEMI at N = 100,000 synthetic 384-d features, C = 1,000, default recipe except a step budget:
   kNN time, s/step over 300 steps, and the extrapolated default fit (2,000 steps);
3. scoring throughput (features on the GPU vs the whole corpus; and the engine's numpy path).
Exits with status 2 and a clear message when CUDA is not available. Writes
``bench/results/gpu_check.json``.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import torch


def main() -> int:
    if not torch.cuda.is_available():
        print("gpu_check: FAILED — no CUDA device is visible to torch "
              f"(torch {torch.__version__}, CUDA build {torch.version.cuda}). Run this on a machine with an NVIDIA GPU.",
              file=sys.stderr)
        return 2
    import common
    from clustermine.clustering.temi import TEMI, knn_indices
    from clustermine.encoders import load_encoder
    from clustermine.images import scan_images
    from clustermine.scoring import log_scores

    dev = "cuda"
    out = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "machine": common.machine_info()}
    print("device:", out["gpu"], flush=True)
    enc = load_encoder("offline", device=dev)
    # 1. encode
    files = []
    for s in ("imagenette_val100", "caltech101_sub", "pacs"):
        files += [r.abs_path for r in scan_images(common.DATA / s) if r.status == "ok"]
    files = files[:2048]
    enc.encode_images(files[:128], batch_size=128)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    enc.encode_images(files, batch_size=128, num_workers=8)
    torch.cuda.synchronize()
    e2e = len(files) / (time.perf_counter() - t0)
    batches = [torch.stack([enc.load_and_preprocess(f) for f in files[i:i + 128]]) for i in range(0, 512, 128)]
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    with torch.inference_mode():
        for b in batches:
            enc._embed_images(b.to(dev))
    torch.cuda.synchronize()
    bare = 512 / (time.perf_counter() - t0)
    out["encode"] = {"n": len(files), "e2e_img_s": e2e, "bare_forward_img_s": bare, "ratio": e2e / bare}
    print("encode", out["encode"], flush=True)
    # 2. TEMI at N = 100K
    rng = np.random.default_rng(0)
    cent = rng.standard_normal((200, 384)).astype(np.float32)
    X = common.l2n(cent[rng.integers(0, 200, 100_000)] + 0.7 * rng.standard_normal((100_000, 384)).astype(np.float32))
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    knn_indices(X, 50, device=dev)
    torch.cuda.synchronize()
    knn_s = time.perf_counter() - t0
    m = TEMI(1000, device=dev, batch_size=256, epochs=3, seed=0)
    Xs = X[:25_600]  # 100 steps per epoch; 3 epochs = 300 steps
    t0 = time.perf_counter()
    m.fit(Xs)
    torch.cuda.synchronize()
    train = time.perf_counter() - t0 - m.knn_time_
    out["temi"] = {"N_knn": len(X), "knn_s": knn_s, "C": 1000, "steps": m.n_iter_, "s_per_step": train / m.n_iter_,
                   "est_default_fit_N100K_s": knn_s + 2000 * train / m.n_iter_}
    print("temi", out["temi"], flush=True)
    # 3. scoring
    corpus, emb = common.corpus_and_embeddings("wordnet-nouns")
    F = X[:50_000]
    T = torch.from_numpy(emb).to(dev)
    Ft = torch.from_numpy(F).to(dev)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(0, len(Ft), 4096):
        z = Ft[i:i + 4096] @ T.T / 0.01
        (torch.logsumexp(z[:, :100], 1) - torch.logsumexp(z, 1)).cpu()
    torch.cuda.synchronize()
    out["score"] = {"torch_cuda_img_s": len(F) / (time.perf_counter() - t0)}
    t0 = time.perf_counter()
    log_scores(F[:5000], emb, np.arange(100))
    out["score"]["engine_numpy_img_s"] = 5000 / (time.perf_counter() - t0)
    print("score", out["score"], flush=True)
    common.save_json("gpu_check.json", out)
    print(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Engine benchmarks (the engine issue's four goals), offline encoder on this CPU.

    python bench/bench_engine.py            # all four; add --skip-cold to reuse the cold corpus time

1. per-image scoring latency after load (goal < 100 ms): one image file -> decode, encode, score
   against the whole corpus (Detector.log_scores); median / p95 over 30 single-image calls after
   2 warm-up calls; also the score-only part (features given).
2. corpus embedding cold vs warm (goal warm < 2 s): a new process each time; cold = empty cache
   directory (text model load + embedding 117,798 nouns), warm = the cached float16 matrix.
3. encode throughput end-to-end (``encode_images``: decode + preprocess threads + forward + ConSE)
   vs the bare model forward (``_embed_images`` on the same, already preprocessed batches of 32);
   goal ratio >= 0.9.
4. peak memory (max RSS of a fresh process) of ``pipeline.mine`` on 1,000 images
   (imagenette_train100), features not cached (encode runs), corpus embeddings cached.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from common import DATA, machine_info, machine_line, run_fresh, save_json, write_block  # noqa: E402

import numpy as np  # noqa: E402



def corpus_cold_warm(skip_cold: bool) -> dict:
    res = {}
    code = (
        "t0 = time.perf_counter()\n"
        "from clustermine.method.encoders import load_encoder\n"
        "from clustermine.method.corpus import load_corpus, corpus_embeddings\n"
        "t_imp = time.perf_counter()\n"
        "enc = load_encoder('offline', device='cpu')\n"
        "c = load_corpus('wordnet-nouns')\n"
        "t1 = time.perf_counter()\n"
        "emb, p = corpus_embeddings(enc, c, cache_dir=CACHE)\n"
        "t2 = time.perf_counter()\n"
        "out = {'n': len(c), 'import_s': t_imp - t0, 'load_corpus_s': t1 - t_imp, 'embed_s': t2 - t1, 'total_s': t2 - t0}\n"
    )
    if not skip_cold:
        tmp = tempfile.mkdtemp(prefix="cm-cold-")
        try:
            res["cold"] = run_fresh(f"CACHE = {tmp!r}\n" + code)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    warm_dir = Path(os.environ["CLUSTERMINE_CACHE"]) / "text"
    res["warm"] = [run_fresh(f"CACHE = {str(warm_dir)!r}\n" + code) for _ in range(3)]
    return res


def latency_and_throughput() -> dict:
    import torch

    from clustermine.method.scoring import Detector

    enc = common.encoder()
    corpus, text_emb = common.corpus_and_embeddings("wordnet-nouns")
    paths, feats = common.folder_features("imagenette_val100")
    det = Detector(concepts=list(corpus.concepts), text_embeddings=text_emb, positive_idx=np.arange(17),
                   encoder_fingerprint_id=enc.fingerprint_id)
    files = [str(DATA / "imagenette_val100" / p) for p in paths]
    # --- 1. single-image latency
    for f in files[:2]:
        det.log_scores(enc.encode_images([f]).features)
    lat, score_only = [], []
    for f in files[100:130]:
        t0 = time.perf_counter()
        r = enc.encode_images([f], num_workers=0)
        t1 = time.perf_counter()
        det.log_scores(r.features)
        t2 = time.perf_counter()
        lat.append(t2 - t0)
        score_only.append(t2 - t1)
    out = {"latency_ms": {"median": 1000 * float(np.median(lat)), "p95": 1000 * float(np.percentile(lat, 95)),
                          "score_only_median": 1000 * float(np.median(score_only))}}
    # --- 3. encode throughput vs bare forward, same batches (256 images, batches of 32)
    sub = files[200:456]
    bs = 32
    enc.encode_images(sub[:bs])  # warm
    e2e = []
    for _ in range(2):
        t0 = time.perf_counter()
        enc.encode_images(sub, batch_size=bs)
        e2e.append(len(sub) / (time.perf_counter() - t0))
    from clustermine.method.images import load_rgb  # noqa: F401
    batches = [torch.stack([enc.load_and_preprocess(f) for f in sub[i:i + bs]]) for i in range(0, len(sub), bs)]
    bare = []
    for _ in range(2):
        t0 = time.perf_counter()
        with torch.inference_mode(), enc._autocast():
            for b in batches:
                enc._embed_images(b.to(enc.device))
        bare.append(len(sub) / (time.perf_counter() - t0))
    t0 = time.perf_counter()
    for f in sub:
        enc.load_and_preprocess(f)
    decode_rate = len(sub) / (time.perf_counter() - t0)
    out["encode"] = {"n_images": len(sub), "batch_size": bs, "e2e_img_s": max(e2e), "bare_forward_img_s": max(bare),
                     "ratio": max(e2e) / max(bare), "decode_preprocess_1thread_img_s": decode_rate,
                     "torch_threads": torch.get_num_threads()}
    # score throughput with features given
    F = np.concatenate([feats] * 5)
    t0 = time.perf_counter()
    det.log_scores(F)
    out["score_features_img_s"] = len(F) / (time.perf_counter() - t0)
    return out


def mine_memory() -> dict:
    tmp = tempfile.mkdtemp(prefix="cm-mine1k-")
    try:
        (Path(tmp) / "text").mkdir()
        for f in (Path(os.environ["CLUSTERMINE_CACHE"]) / "text").glob("*"):
            os.link(f, Path(tmp) / "text" / f.name)
        code = (
            "from clustermine.workflows.pipeline import mine, MineConfig\n"
            "t0 = time.perf_counter()\n"
            f"run = mine({str(DATA / 'imagenette_train100')!r}, {tmp + '/run'!r}, MineConfig(device='cpu'), cache_dir={tmp!r})\n"
            "out = {'wall_s': time.perf_counter() - t0, 'summary': run.meta.get('summary', {})}\n"
        )
        return run_fresh(code)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def render(r: dict) -> str:
    lat = r["latency"]["latency_ms"]
    enc = r["latency"]["encode"]
    cw = r["corpus"]
    warm = cw["warm"]
    wt = [w["total_s"] for w in warm]
    we = [w["embed_s"] for w in warm]
    m = r["mine"]
    s = m["summary"]
    cold = cw.get("cold")
    cold_txt = (f"{cold['total_s']:.0f} s in-process ({cold['embed_s']:.0f} s embedding {cold['n']:,} nouns; "
                f"{cold['max_rss_mb']:.0f} MB max RSS)") if cold else "not re-measured (--skip-cold)"
    lines = [
        "Command: `python bench/bench_engine.py` · " + machine_line(r["machine"]) + ". The machine was shared "
        "with other jobs (load average above 2 on 2 cores during the runs), so all times are upper bounds.",
        "",
        "| benchmark | goal | measured | verdict |",
        "|---|---|---|---|",
        f"| per-image scoring latency after load (decode + encode + score vs {r['n_corpus']:,} concepts), "
        f"30 calls | < 100 ms | median {lat['median']:.0f} ms, p95 {lat['p95']:.0f} ms (score only: "
        f"{lat['score_only_median']:.1f} ms) | {'met' if lat['median'] < 100 else 'NOT met'} |",
        f"| corpus embedding, new process, warm (cached) | < 2 s | embedding step {np.median(we):.2f} s "
        f"(whole process incl. imports {np.median(wt):.1f} s); cold: {cold_txt} | "
        f"{'met' if np.median(we) < 2 else 'NOT met'} |",
        f"| encode throughput end-to-end vs bare forward ({enc['n_images']} imagenette images, batch {enc['batch_size']}) "
        f"| ratio ≥ 0.9 | {enc['e2e_img_s']:.1f} vs {enc['bare_forward_img_s']:.1f} img/s = "
        f"{enc['ratio']:.2f} (decode+preprocess alone, 1 thread: {enc['decode_preprocess_1thread_img_s']:.0f} img/s) | "
        f"{'met' if enc['ratio'] >= 0.9 else 'NOT met'} |",
        f"| peak memory of `mine` on 1,000 images (fresh process, features not cached, corpus cached) | — | "
        f"{m['max_rss_mb']:.0f} MB max RSS; wall {m['wall_s']:.0f} s; stages {s.get('timings_s')} | — |",
        "",
        f"Scoring throughput with features already encoded: {r['latency']['score_features_img_s']:.0f} images/s "
        f"(whole corpus in the denominator).",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-cold", action="store_true", help="reuse the cold corpus time of the last run")
    ap.add_argument("--only", choices=["corpus", "latency", "mine"], nargs="*")
    a = ap.parse_args()
    prev = common.load_json("engine.json") or {}
    r = dict(prev)
    r["machine"] = machine_info()
    only = set(a.only or ["corpus", "latency", "mine"])
    if "corpus" in only:
        cw = corpus_cold_warm(a.skip_cold)
        if a.skip_cold and prev.get("corpus", {}).get("cold"):
            cw["cold"] = prev["corpus"]["cold"]
        r["corpus"] = cw
        print(json.dumps(cw), flush=True)
    if "latency" in only:
        r["latency"] = latency_and_throughput()
        print(json.dumps(r["latency"]), flush=True)
    if "mine" in only:
        r["mine"] = mine_memory()
        print(json.dumps(r["mine"]), flush=True)
    r["n_corpus"] = len(common.corpus_and_embeddings("wordnet-nouns")[0])
    save_json("engine.json", r)
    if all(k in r for k in ("corpus", "latency", "mine")):
        md = render(r)
        print(md)
        write_block("## Engine benchmarks", "engine", md)


if __name__ == "__main__":
    main()

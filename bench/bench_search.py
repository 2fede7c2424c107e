"""Find-images benchmark (issue 13): latency of a warm text -> images query on a 20K-image run.

A warm query is (1) embedding the text with the run's encoder text tower and (2) one cosine
ranking over the run's cached L2-normalised features (``clustermine.workflows.search.FeatureIndex``). The
features here are synthetic (20,000 x 384 float16, like a run's ``features.npy``); the text is
embedded with the real encoder (default: the offline one, whose text tower is MiniLM, D = 384).

    python bench/bench_search.py                  # 20K x 384, offline encoder
    python bench/bench_search.py --n 50000 --no-encoder

Prints JSON and saves bench/results/search.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("CLUSTERMINE_CACHE", str(ROOT / ".cache" / "clustermine"))
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=20_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--k", type=int, default=12)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--encoder", default="offline")
    p.add_argument("--no-encoder", action="store_true", help="time the ranking only")
    a = p.parse_args(argv)

    from clustermine.workflows.search import FeatureIndex

    rng = np.random.default_rng(0)
    feats = rng.normal(size=(a.n, a.dim)).astype(np.float16).astype(np.float32)
    t0 = time.perf_counter()
    index = FeatureIndex(feats)
    build_ms = 1000 * (time.perf_counter() - t0)
    query = rng.normal(size=a.dim).astype(np.float32)
    rank_ms = _median_ms(lambda: index.nearest(query, a.k), a.repeats)
    out = {"n": a.n, "dim": a.dim, "k": a.k, "index_build_ms": round(build_ms, 1), "rank_ms": round(rank_ms, 2)}
    if not a.no_encoder:
        from clustermine.method.corpus import embed_concepts
        from clustermine.method.encoders import load_encoder

        t0 = time.perf_counter()
        enc = load_encoder(a.encoder, device="cpu")
        embed_concepts(enc, ["warm-up"], enc.text_template)
        out["encoder_load_s"] = round(time.perf_counter() - t0, 2)
        words = iter([f"a photo of thing {i}" for i in range(10 * a.repeats)])
        out["embed_text_ms"] = round(_median_ms(lambda: embed_concepts(enc, [next(words)], enc.text_template),
                                                a.repeats), 2)
        if enc.dim == a.dim:
            out["warm_query_ms"] = round(_median_ms(
                lambda: index.nearest(embed_concepts(enc, ["church"], enc.text_template)[0], a.k), a.repeats), 2)
        out["encoder"] = a.encoder
    out["cpus"] = os.cpu_count()
    print(json.dumps(out, indent=2))
    res = ROOT / "bench" / "results"
    res.mkdir(parents=True, exist_ok=True)
    (res / "search.json").write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return out


if __name__ == "__main__":
    main()

"""Cold corpus embedding speed: plain corpus-order batches vs length-sorted batches (issues 10 / 12).

Embeds the same random sample of WordNet nouns (the offline encoder's MiniLM text tower, CPU,
batch 256) both ways, alternating, and reports texts/s; then the full-corpus estimate.
Writes the "Corpus embedding" block of BENCHMARKS.md and bench/results/corpus_embedding.json.

    .venv/bin/python bench/bench_corpus.py [--n 8000] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from common import RESULTS, machine_info, machine_line, write_block  # noqa: E402  (sets env, sys.path)

from clustermine.method.corpus import embed_concepts, load_corpus, prompts
from clustermine.method.encoders import load_encoder


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=8000)
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    enc = load_encoder("offline", device="cpu")
    corpus = load_corpus("wordnet-nouns")
    rng = np.random.default_rng(0)
    sample = [corpus.concepts[i] for i in sorted(rng.choice(len(corpus), a.n, replace=False))]
    texts = prompts(sample, enc.text_template)
    enc.encode_texts(texts[:256], batch_size=256)  # load + warm up
    plain, ordered = [], []
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        ref = enc.encode_texts(texts, batch_size=256)
        plain.append(a.n / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        emb = embed_concepts(enc, sample, enc.text_template, batch_size=256)
        ordered.append(a.n / (time.perf_counter() - t0))
    diff = float(np.abs(emb - ref).max())
    info = machine_info()
    res = {"n": a.n, "plain_texts_per_s": plain, "sorted_texts_per_s": ordered, "max_abs_diff": diff,
           "full_corpus": len(corpus), "machine": info}
    (RESULTS / "corpus_embedding.json").write_text(json.dumps(res, indent=2))
    best_p, best_s = max(plain), max(ordered)
    text = (f"Command: `.venv/bin/python bench/bench_corpus.py --n {a.n} --repeats {a.repeats}` · {machine_line(info)}\n\n"
            f"| batches (256 texts, offline encoder's MiniLM, CPU) | texts/s (best of {a.repeats}) | all {len(corpus):,} nouns |\n"
            f"|---|---|---|\n"
            f"| corpus order (before) | {best_p:,.0f} | {len(corpus) / best_p:,.0f} s |\n"
            f"| length-sorted (`corpus.embed_concepts`) | {best_s:,.0f} | {len(corpus) / best_s:,.0f} s |\n\n"
            f"Same embeddings either way (max |difference| {diff:.1e}, float16-rounded form). Set-up "
            f"(`scripts/setup_env.sh` -> `clustermine prepare`) embeds the default corpus once, so a user's first "
            f"run does not wait for it.")
    write_block("## Corpus embedding (issues 10, 12)", "corpus", text)
    print(text)


if __name__ == "__main__":
    main()

"""Pre-encode every image set the benchmarks use (fills the engine's FeatureCache) and the corpus.

python bench/encode_all.py            # prints images/s per folder
"""
import sys, time
sys.path.insert(0, __import__("os").path.dirname(__file__))
from common import folder_features, corpus_and_embeddings, encoder, DATA  # noqa

SETS = ["imagenette_train100", "imagenette_val100", "caltech101_sub", "dtd10", "imagewoof_val80",
        "pacs", "cifar10_train300", "cifar10_test"]
if __name__ == "__main__":
    sets = sys.argv[1:] or SETS
    t = time.perf_counter(); corpus_and_embeddings("wordnet-nouns"); print("corpus", time.perf_counter() - t, flush=True)
    for s in sets:
        t = time.perf_counter()
        paths, f = folder_features(s, per_class=200 if s == "cifar10_test" else None)
        dt = time.perf_counter() - t
        print(f"{s}: {len(paths)} images {f.shape} in {dt:.1f}s ({len(paths)/dt:.1f} img/s)", flush=True)

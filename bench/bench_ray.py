"""Ray scale-out on one box (issue 11): local path vs ``--ray`` on the same 1,000 real images.

Starts a 2-node loopback Ray cluster (tests/ray_cluster.py: two raylets x 1 CPU on this machine's
cores), then measures, each with an empty feature cache:

* encode throughput (images/s) of the local path (``encode_records`` in this process: decode threads +
  the model on all cores) and of the Ray Data pipeline (decode tasks -> one encoder actor per node);
* the zero-shot vote (top-5 + corpus LSE against the 117,798-concept corpus) locally vs as Ray tasks;
* overheads: starting the cluster, connecting a driver.

On one box both paths share the same cores, so this shows Ray's overhead, not a speed-up.

    .venv/bin/python bench/bench_ray.py [--images ../shared/data/imagenette_train100] [--n 1000]

Results go to BENCHMARKS.md, section "Ray" (block ``ray-one-box``).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

sys.path.insert(0, str(common.ROOT / "tests"))
from ray_cluster import LoopbackRayCluster  # noqa: E402

SECTION = "## Ray"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", default=str(common.DATA / "imagenette_train100"))
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=1)
    a = ap.parse_args()

    from clustermine.method.corpus import corpus_embeddings, load_corpus
    from clustermine.workflows.distributed import RayCluster
    from clustermine.method.encoders import load_encoder
    from clustermine.method.images import scan_images
    from clustermine.method.mining import zero_shot_topk
    from clustermine.workflows.pipeline import FeatureCache, encode_records

    encoder = load_encoder("offline", device="cpu")
    records = [r for r in scan_images(a.images) if r.ok][: a.n]
    n = len(records)
    corpus = load_corpus("wordnet-nouns")
    text_emb, _ = corpus_embeddings(encoder, corpus, encoder.text_template)
    work = Path(tempfile.mkdtemp(prefix="bench-ray-"))

    class Marks:
        """A ProgressTracker stand-in recording (images done, time) of every update."""

        def __init__(self) -> None:
            self.marks: list[tuple[int, float]] = []

        def update(self, done: int, total: int, force: bool = False) -> None:
            self.marks.append((done, time.perf_counter()))

        def check_cancel_flag(self) -> bool:
            return False

    def encode(cluster=None) -> tuple[float, int, float, float]:
        """(whole seconds, images encoded, seconds to the first result, steady images/s after 10 %)."""
        recs = [type(r)(**r.to_dict()) for r in records]
        cache_dir = Path(tempfile.mkdtemp(dir=work))
        marks = Marks()
        t = time.perf_counter()
        _, errors = encode_records(encoder, recs, cache=FeatureCache(encoder.fingerprint_id, cache_dir),
                                   assemble=False, cluster=cluster, tracker=marks)
        end = time.perf_counter()
        shutil.rmtree(cache_dir, ignore_errors=True)
        first = next(s for d, s in marks.marks if d > 0) - t
        d0, s0 = next((d, s) for d, s in marks.marks if d >= n // 10)
        return end - t, n - len(errors), first, (n - d0) / (end - s0)

    rows = []
    try:
        for rep in range(a.repeats):
            rows.append(("local", "encode", rep, *encode()))
            feats = encoder.encode_images([r.abs_path for r in records[:1000]]).features
            t = time.perf_counter()
            zero_shot_topk(feats, text_emb, k=5, tau=0.05)
            rows.append(("local", "vote", rep, time.perf_counter() - t, len(feats), 0.0, 0.0))

        t = time.perf_counter()
        cluster_proc = LoopbackRayCluster(nodes=2, cpus_per_node=1, object_store_mb=600).start()
        start_s = time.perf_counter() - t
        try:
            cluster = RayCluster(cluster_proc.address)
            info = cluster.connect()
            for rep in range(a.repeats):
                rows.append(("ray", "encode", rep, *encode(cluster)))
                t = time.perf_counter()
                cluster.zero_shot_topk(feats, text_emb, k=5, tau=0.05)
                rows.append(("ray", "vote", rep, time.perf_counter() - t, len(feats), 0.0, 0.0))
            cluster.close()
        finally:
            cluster_proc.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def best(path: str, stage: str) -> tuple:
        return min(r[3:] for r in rows if r[0] == path and r[1] == stage)

    (le, lk, lf, ls), (re_, rk, rf, rs) = best("local", "encode"), best("ray", "encode")
    (lv, *_), (rv, *_) = best("local", "vote"), best("ray", "vote")
    info_m = common.machine_info()
    lines = [f"Command: `.venv/bin/python bench/bench_ray.py --n {a.n}` · " + common.machine_line(info_m), "",
             f"{n} real images ({Path(a.images).name}), offline encoder on CPU, empty feature cache each time; "
             f"Ray: 2 nodes x 1 CPU on this machine (two raylets on loopback, the same {info_m['nproc']} cores as "
             "the local path), one encoder actor per node, decode tasks beside it. *Whole*: the encode call from "
             "start to end; *first result*: until the first features come back (Ray: the actors start and load "
             "the encoder); *steady*: images/s from 10 % of the job to its end.", "",
             "| path | encode s (whole) | whole images/s | first result s | steady images/s | "
             "vote s (1,000 images x 117,798 concepts) |", "|---|---|---|---|---|---|",
             f"| local (this process) | {le:.1f} | {lk / le:.1f} | {lf:.1f} | {ls:.1f} | {lv:.1f} |",
             f"| `--ray` (2 nodes) | {re_:.1f} | {rk / re_:.1f} | {rf:.1f} | {rs:.1f} | {rv:.1f} |", "",
             f"Ratio `--ray` / local: steady encode **{rs / ls:.2f} x** (target >= 0.8), whole encode "
             f"{(rk / re_) / (lk / le):.2f} x, vote {lv / rv:.2f} x. Overheads: starting the 2-node cluster "
             f"{start_s:.1f} s (once per cluster, not per job); connecting a driver {info.connect_s:.1f} s and the "
             f"actors' start-up ({rf - lf:.1f} s more to the first result) once per job."]
    text = "\n".join(lines)
    print(text)
    common.write_block(SECTION, "ray-one-box", text)


if __name__ == "__main__":
    main()

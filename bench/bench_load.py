"""Load benchmark (issue 5): memory and latency of N concurrent sessions scoring images against one
run, inside one server process, through the web app's own caches.

Each session is a thread that does what the Scoring page does per user: take the encoder from
``ui.cache.get_encoder`` (``st.cache_resource``: one instance per process, forward passes
serialised by a lock), the run from ``ui.cache.load_run`` and score its own images with
``clustermine.workflows.pipeline.score_images``. The script checks that every session got the *same*
encoder object (and that ``load_encoder`` returns one instance), and reports the resident memory
(VmRSS, and the peak VmHWM) of the process: after imports, after one warm-up session (encoder and
run loaded), and after N concurrent sessions.

    python bench/bench_load.py                      # offline encoder, 40-image run, 5 sessions x 20 images
    python bench/bench_load.py --encoder tiny       # the tiny random open_clip test model (seconds)
    python bench/bench_load.py --run PATH           # an existing run (its encoder)

Results: printed as JSON and a Markdown row, and saved to bench/results/load.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("CLUSTERMINE_CACHE", str(ROOT / ".cache" / "clustermine"))
for p in (ROOT, ROOT / "tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

DATA = Path(os.environ.get("CLUSTERMINE_DATA", ROOT.parent / "shared" / "data"))
RESULTS = ROOT / "bench" / "results"
from test_faults import CONCEPTS  # noqa: E402 - the 50-concept list of the tests' small runs
ID_CLASSES = ["n01440764", "n02102040", "n02979186", "n03028079"]


def rss_mib() -> dict[str, float]:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, val = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = round(int(val.split()[0]) / 1024, 1)
    return out


def files(folder: Path, classes: list[str] | None, per_class: int) -> list[Path]:
    out = []
    for d in sorted(p for p in folder.iterdir() if p.is_dir()):
        if classes is None or d.name in classes:
            out += sorted(f for f in d.iterdir() if f.is_file())[:per_class]
    return out


def build_run(spec: str, workdir: Path, corpus: str) -> Path:
    """A small real run: 40 Imagenette photos (4 classes x 10), k-means C = 4."""
    from clustermine.method.encoders import load_encoder
    from clustermine.workflows.pipeline import MineConfig, mine

    imgs = workdir / "images"
    for f in files(DATA / "imagenette_train100", ID_CLASSES, 10):
        (imgs / f.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, imgs / f.parent.name / f.name)
    if corpus == "small":
        corpus = str(workdir / "concepts.txt")
        Path(corpus).write_text("\n".join(CONCEPTS) + "\n", encoding="utf-8")
    cfg = MineConfig(encoder=spec, clusterer="kmeans", n_clusters=4, corpus=corpus, device="cpu")
    return mine(imgs, workdir / "runs" / "load-bench", cfg, encoder=load_encoder(spec, "cpu")).path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--encoder", default="offline", help="offline | tiny | any encoder spec")
    ap.add_argument("--run", default=None, help="an existing finished run (default: build a 40-image run)")
    ap.add_argument("--corpus", default="small", help="small (50 concepts) | wordnet-nouns | PATH")
    ap.add_argument("--sessions", type=int, default=5)
    ap.add_argument("--images", type=int, default=20, help="images scored by each session")
    ap.add_argument("--rounds", type=int, default=2, help="times each session scores its images")
    ap.add_argument("--json", default=str(RESULTS / "load.json"))
    a = ap.parse_args()

    logging.getLogger("streamlit").setLevel(logging.ERROR)
    import numpy as np  # noqa: F401
    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    import ui.cache as cache  # the web app's caches (st.cache_resource works without a server)
    from clustermine.method.encoders import load_encoder
    from clustermine.workflows.pipeline import score_images

    mem = {"after_imports": rss_mib()}
    spec = a.encoder
    tmp = Path(tempfile.mkdtemp(prefix="cm-bench-load-"))
    try:
        if spec == "tiny":
            from tiny_openclip import register_tiny_openclip

            spec = f"openclip:{register_tiny_openclip(tmp / 'cfg')}:none"
        t0 = time.perf_counter()
        run_path = Path(a.run) if a.run else build_run(spec, tmp, a.corpus)
        build_s = time.perf_counter() - t0
        if a.run:
            spec = cache.run_encoder_spec(cache.load_run(run_path))
        # Only the mining above has touched the encoder; drop nothing: the server would hold it too.
        mem["after_run_built"] = rss_mib()

        val = files(DATA / "imagenette_val100", None, 10)
        need = a.sessions * a.images
        if len(val) < need:
            raise SystemExit(f"need {need} validation images, found {len(val)} in {DATA / 'imagenette_val100'}")
        per_session = [val[k * a.images:(k + 1) * a.images] for k in range(a.sessions)]

        encoders: list[int] = []
        raw_encoders: list[int] = []
        latencies: dict[int, list[float]] = {}
        errors: list[str] = []
        lock = threading.Lock()

        def session(k: int, barrier: threading.Barrier | None) -> None:
            try:
                if barrier is not None:
                    barrier.wait(60)
                for _ in range(a.rounds):
                    t = time.perf_counter()
                    enc = cache.get_encoder(spec, "cpu")
                    run = cache.load_run(run_path)
                    res = score_images(run, per_session[k], encoder=enc)
                    dt = time.perf_counter() - t
                    bad = [r for r in res if "error" in r]
                    with lock:
                        encoders.append(id(enc))
                        raw_encoders.append(id(load_encoder(spec, "cpu")))
                        latencies.setdefault(k, []).append(dt)
                        errors.extend(r["error"] for r in bad)
            except Exception as exc:  # reported below
                with lock:
                    errors.append(f"session {k}: {type(exc).__name__}: {exc}")

        # one warm-up session (what the first user pays), then N at once
        t0 = time.perf_counter()
        session(0, None)
        warm_s = time.perf_counter() - t0
        mem["after_one_session"] = rss_mib()
        latencies.clear()
        barrier = threading.Barrier(a.sessions)
        threads = [threading.Thread(target=session, args=(k, barrier)) for k in range(a.sessions)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join(1800)
        wall = time.perf_counter() - t0
        mem[f"after_{a.sessions}_sessions"] = rss_mib()

        assert not errors, errors[:5]
        assert len(set(encoders)) == 1, f"{len(set(encoders))} encoder wrappers for {a.sessions} sessions"
        assert len(set(raw_encoders)) == 1, "load_encoder returned more than one instance"
        enc = cache.get_encoder(spec, "cpu")
        assert enc._encoder is load_encoder(spec, "cpu")
        n_params = sum(p.numel() for p in enc.model.parameters()) if hasattr(enc, "model") else None
        all_lat = sorted(x for v in latencies.values() for x in v)
        out = {
            "encoder": spec, "run": str(run_path) if a.run else "40 Imagenette photos, k-means C=4, corpus " + a.corpus,
            "sessions": a.sessions, "images_per_session": a.images, "rounds": a.rounds,
            "encoder_instances": len(set(raw_encoders)), "encoder_wrappers": len(set(encoders)),
            "encoder_params": n_params, "build_run_s": round(build_s, 1), "warmup_session_s": round(warm_s, 2),
            "concurrent_wall_s": round(wall, 2),
            "images_per_s": round(a.sessions * a.images * a.rounds / wall, 1),
            "session_latency_s": {"median": round(all_lat[len(all_lat) // 2], 2), "max": round(all_lat[-1], 2)},
            "memory_mib": mem, "nproc": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "date": time.strftime("%Y-%m-%d %H:%M"),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(out, indent=2))
    m = out["memory_mib"]
    n = a.sessions
    print(f"| {spec} | {n} | {a.images}x{a.rounds} | {m['after_imports']['VmRSS']:.0f} | "
          f"{m['after_one_session']['VmRSS']:.0f} | {m[f'after_{n}_sessions']['VmRSS']:.0f} | "
          f"{m[f'after_{n}_sessions']['VmHWM']:.0f} | {out['concurrent_wall_s']} | {out['images_per_s']} | 1 |")
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    results = {}
    if Path(a.json).is_file():
        try:
            results = json.loads(Path(a.json).read_text())
        except ValueError:
            results = {}
    results[a.encoder] = out
    Path(a.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

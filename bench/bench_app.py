"""Web-app benchmarks (issue: bench_app): prints a markdown table.

(a) a concept edit followed by re-scoring 1,000 ID images with the what-if scorer (goal < 300 ms
    once the scorer is built: "after models are loaded");
(b) render time of every page on a ~1,000-image run through AppTest, first (cold caches in this
    process) and second (warm) render (goal < 1 s warm);
(c) time from ``streamlit run app.py`` until the server answers ``/_stcore/health`` and ``/``, and
    until the first page is drawn in a browser (goal < 5 s; needs /usr/bin/chromium + playwright).

Usage::

    .venv/bin/python bench/bench_app.py                 # builds runs/bench-1000 the first time (minutes)
    .venv/bin/python bench/bench_app.py --run PATH      # any finished run with >= 1,000 images
    .venv/bin/python bench/bench_app.py --skip-browser

The 1,000-image run is mined from ../shared/data/imagenette_train100 (offline encoder, k-means,
C = 10) into ``runs/bench-1000`` (gitignored) and reused afterwards.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("CLUSTERMINE_CACHE", str(ROOT / ".cache" / "clustermine"))
os.environ["CLUSTERMINE_UMAP_WARMUP"] = "0"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

PAGES = ["pages/runs.py", "pages/data.py", "pages/clusters.py", "pages/audit.py", "pages/concepts.py",
         "pages/scoring.py", "pages/export.py", "pages/search.py"]
CHROMIUM = "/usr/bin/chromium"


def build_run(path: Path, images: Path) -> Path:
    from clustermine.workflows.pipeline import MineConfig, mine
    from clustermine.store import Run

    try:
        if Run.open(path).status == "done":
            return path
    except Exception:
        pass
    print(f"[bench] mining {images} into {path} (first time only)…", file=sys.stderr)
    t0 = time.perf_counter()
    mine(images, path, MineConfig(n_clusters=10, clusterer="kmeans", seed=0), overwrite=path.exists())
    print(f"[bench] mined in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return path


# ------------------------------------------------------------------------------------ (a)
def bench_edit_rescore(run_dir: Path, n_images: int = 1000, reps: int = 20) -> dict:
    from clustermine.store import Run
    from clustermine.method.scoring import WhatIfScorer

    tmp = Path(tempfile.mkdtemp(prefix="bench-edit-"))
    try:
        work = tmp / run_dir.name
        shutil.copytree(run_dir, work, ignore=shutil.ignore_patterns("projections", "scoring", "ood_sample"))
        run = Run.open(work)
        feats = run.features()
        rows = np.resize(np.arange(len(feats)), n_images)  # 1,000 ID images (all of them for a 1,000-image run)
        t0 = time.perf_counter()
        scorer = WhatIfScorer(feats[rows], run.text_embeddings(), run.tau)
        build_s = time.perf_counter() - t0
        victim = run.concepts()[0].id
        times = []
        for i in range(reps):
            t = time.perf_counter()
            run.edit_concept("reject" if i % 2 == 0 else "restore", victim, user="bench")
            _, extra, pos = run.vocabulary()
            scores = scorer.log_scores(pos, extra)
            times.append(time.perf_counter() - t)
            assert scores.shape == (n_images,)
        return {"n": n_images, "build_s": build_s, "median_ms": 1000 * statistics.median(times),
                "p90_ms": 1000 * sorted(times)[int(0.9 * (len(times) - 1))], "reps": reps}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------------------------ (b)
def bench_pages(run_dir: Path) -> list[dict]:
    from streamlit.testing.v1 import AppTest

    os.environ["CLUSTERMINE_RUNS_ROOT"] = str(run_dir.parent)
    out = []
    for page in PAGES:
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600)
        at.query_params["run"] = run_dir.name
        at.run()
        t = time.perf_counter()
        at.switch_page(page).run()
        cold = time.perf_counter() - t
        errors = [e.value for e in at.exception] + [e.value for e in at.error]
        t = time.perf_counter()
        at.run()
        warm = time.perf_counter() - t
        out.append({"page": page, "cold_s": cold, "warm_s": warm, "errors": errors})
    return out


# ------------------------------------------------------------------------------------ (c)
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_startup(runs_root: Path, browser: bool) -> dict:
    """Seconds from spawning ``streamlit run`` to: health ok, GET / answered, and (with a browser
    already started beforehand, so its own start-up is not counted) the first page's title drawn."""
    import contextlib

    port = _free_port()
    env = dict(os.environ, CLUSTERMINE_RUNS_ROOT=str(runs_root))
    res: dict = {}
    url = f"http://localhost:{port}"
    with contextlib.ExitStack() as stack:
        page = None
        if browser and Path(CHROMIUM).exists():
            from playwright.sync_api import sync_playwright

            p = stack.enter_context(sync_playwright())
            b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu",
                                  "--disable-background-networking", "--disable-component-update",
                                  "--disable-sync", "--no-first-run"])
            stack.callback(b.close)
            page = b.new_page()
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.port",
                                 str(port)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while time.perf_counter() - t0 < 60:
                try:
                    if urllib.request.urlopen(url + "/_stcore/health", timeout=1).read() == b"ok":
                        res["health_s"] = time.perf_counter() - t0
                        break
                except OSError:
                    time.sleep(0.05)
            with urllib.request.urlopen(url + "/", timeout=10) as r:
                assert r.status == 200
            res["http_root_s"] = time.perf_counter() - t0
            if page is not None:
                page.goto(url + "/")
                page.locator("h1").first.wait_for(timeout=60_000)
                res["first_page_s"] = time.perf_counter() - t0
                t1 = time.perf_counter()
                page.goto(url + "/")  # a second visit: the server process is warm
                page.locator("h1").first.wait_for(timeout=60_000)
                res["second_visit_s"] = time.perf_counter() - t1
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, default=ROOT / "runs" / "bench-1000")
    ap.add_argument("--images", type=Path, default=ROOT.parent / "shared" / "data" / "imagenette_train100")
    ap.add_argument("--skip-browser", action="store_true")
    ap.add_argument("--only", choices=["a", "b", "c"], action="append")
    a = ap.parse_args()
    only = set(a.only or ["a", "b", "c"])
    run_dir = build_run(a.run.absolute(), a.images) if only & {"a", "b"} else a.run.absolute()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\nmachine: {platform.platform()}, {os.cpu_count()} cores, load {load:.1f} at start; "
          f"run: {run_dir}\n")
    rows = []
    if "a" in only:
        r = bench_edit_rescore(run_dir)
        rows.append(("(a) concept edit + re-score 1,000 ID images", f"{r['median_ms']:.1f} ms median, "
                     f"{r['p90_ms']:.1f} ms p90 ({r['reps']} edits; scorer built once in {r['build_s']:.1f} s)",
                     "< 300 ms", r["median_ms"] < 300))
    if "b" in only:
        from clustermine.store import Run

        n = len(Run.open(run_dir).image_paths())
        for r in bench_pages(run_dir):
            note = f" — {r['errors'][0][:60]}" if r["errors"] else ""
            rows.append((f"(b) render {r['page']} ({n:,} images)", f"{r['warm_s']:.2f} s warm, "
                         f"{r['cold_s']:.2f} s first{note}", "< 1 s", r["warm_s"] < 1.0 and not r["errors"]))
    if "c" in only:
        r = bench_startup(run_dir.parent, browser=not a.skip_browser)
        rows.append(("(c) `streamlit run` → /_stcore/health ok", f"{r.get('health_s', float('nan')):.2f} s", "< 5 s",
                     r.get("health_s", 99) < 5))
        rows.append(("(c) `streamlit run` → GET / 200", f"{r.get('http_root_s', float('nan')):.2f} s", "< 5 s",
                     r.get("http_root_s", 99) < 5))
        if "first_page_s" in r:
            rows.append(("(c) `streamlit run` → first page drawn in chromium", f"{r['first_page_s']:.2f} s "
                         f"(a second visit: {r['second_visit_s']:.2f} s)", "< 5 s", r["first_page_s"] < 5))
    print("| measure | result | goal | met |\n|---|---|---|---|")
    for name, res, goal, ok in rows:
        print(f"| {name} | {res} | {goal} | {'yes' if ok else 'no'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Paper scale (issue 10): `clustermine mine --features` on synthetic ImageNet-shaped features.

Synthetic features: N x D float16 (default 1,281,167 x 384, the offline text tower's width), a
1,000-component mixture on the unit sphere (cos to the component centre ~0.7) so clusters exist;
written block by block with a fixed seed, plus a paths file (the images do not exist: thumbnails
are not part of this benchmark). Each stage runs in a fresh process that reports its wall time and
peak memory (RSS, and RSS minus file-backed pages = anonymous memory, sampled every 0.2 s):

* ``mine``: the whole ``clustermine mine --features`` (k-means, C = 1000) with its per-stage timings;
* ``calibrate``: the cross-fitted calibration set of the finished run (5 folds);
* ``score``: log scores of all N images under the current concepts (corpus LSE from the run);
* ``vote`` / ``score`` memory at two sizes on a 10K-concept corpus slice (flat in N?).

    .venv/bin/python bench/bench_paper_scale.py [--n 1281167] [--dim 384] [--workdir /tmp/paper-scale]

Results go to BENCHMARKS.md, section "Paper scale" (block ``paper-scale``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import numpy as np  # noqa: E402

SECTION = "## Paper scale"
PY = sys.executable

# Prepended to every child: samples its memory every 0.2 s and prints a JSON line at exit.
MONITOR = textwrap.dedent('''
    import atexit, json, threading, time, psutil
    _p = psutil.Process(); _peak = {"rss": 0, "anon": 0}
    def _watch():
        while True:
            m = _p.memory_info()
            _peak["rss"] = max(_peak["rss"], m.rss); _peak["anon"] = max(_peak["anon"], m.rss - m.shared)
            time.sleep(0.2)
    threading.Thread(target=_watch, daemon=True).start()
    _t0 = time.perf_counter()
    RESULT = {}
    atexit.register(lambda: print("BENCH " + json.dumps({**RESULT, "wall_s": time.perf_counter() - _t0,
                                                       "peak_rss_gb": _peak["rss"] / 2**30,
                                                       "peak_anon_gb": _peak["anon"] / 2**30})))
''')


def make_features(path: Path, paths_file: Path, n: int, d: int, components: int = 1000, seed: int = 0,
                  block: int = 65536) -> None:
    """Write the synthetic mixture (float16 [n, d], unit rows) and one fake image path per row."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(components, d)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(n, d))
    with open(paths_file, "w", encoding="utf-8") as fh:
        for lo in range(0, n, block):
            m = min(block, n - lo)
            comp = rng.integers(0, components, size=m)
            x = centres[comp] + rng.normal(size=(m, d)).astype(np.float32) / np.sqrt(d)
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            out[lo:lo + m] = x
            fh.write("".join(f"c{c:04d}/img{lo + i:07d}.jpg\n" for i, c in enumerate(comp)))
    out.flush()
    del out


def run_child(code: str, *args: str, timeout: float = 7200) -> dict:
    proc = subprocess.run([PY, "-c", MONITOR + textwrap.dedent(code), *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(common.ROOT)})
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"child failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads(line[6:])


MINE = '''
    import sys
    from clustermine.cli import main
    from clustermine.store import Run
    feats, paths, out = sys.argv[1:4]
    rc = main(["mine", "--features", feats, "--paths", paths, "--out", out, "--clusterer", "kmeans",
               "--clusters", "1000", "--quiet", "--force"])
    assert rc == 0
    s = Run.open(out).meta["summary"]
    RESULT.update(timings=s["timings_s"], n_positive=s["n_positive"], n_occupied=s["n_occupied"],
                  mean_purity=s["mean_purity"])
'''

CALIBRATE = '''
    import sys, time
    from clustermine.store import Run
    from clustermine.workflows.whatif import calibration_set
    run = Run.open(sys.argv[1])
    t = time.perf_counter(); cal = calibration_set(run); RESULT["seconds"] = time.perf_counter() - t
    RESULT["n"] = int(len(cal.rows))
'''

SCORE = '''
    import sys, time
    from clustermine.store import Run
    from clustermine.workflows.whatif import all_scores
    run = Run.open(sys.argv[1])
    t = time.perf_counter(); s = all_scores(run); RESULT["seconds"] = time.perf_counter() - t
    RESULT["n"] = int(len(s))
'''

PAGES = '''
    import sys
    from pathlib import Path
    sys.path.insert(0, "bench")
    from bench_app import bench_pages
    RESULT["pages"] = bench_pages(Path(sys.argv[1]))
'''

VOTE_SLICE = '''
    import sys, time
    import numpy as np
    from clustermine.method.mining import zero_shot_topk
    from clustermine.method.scoring import WhatIfScorer
    feats = np.load(sys.argv[1], mmap_mode="r")[: int(sys.argv[2])]
    rng = np.random.default_rng(1)
    text = rng.normal(size=(10000, feats.shape[1])).astype(np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    t = time.perf_counter()
    idx, sim, lse = zero_shot_topk(feats, text, k=5, tau=0.05)
    RESULT["vote_s"] = time.perf_counter() - t
    t = time.perf_counter()
    WhatIfScorer(feats, text, 0.05, base_lse=lse).log_scores(np.arange(1000))
    RESULT["score_s"] = time.perf_counter() - t
'''


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_281_167)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--workdir", default="/tmp/paper-scale")
    ap.add_argument("--keep", action="store_true", help="keep the features and the run afterwards")
    ap.add_argument("--skip-mine", action="store_true", help="reuse the finished run in the workdir")
    ap.add_argument("--skip-pages", action="store_true", help="do not render the app's pages on the run")
    a = ap.parse_args()
    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    feats, paths, run = work / f"features-{a.n}x{a.dim}.npy", work / f"paths-{a.n}.txt", work / "run"
    t = time.perf_counter()
    if not feats.is_file() or not paths.is_file():
        make_features(feats, paths, a.n, a.dim)
    gen_s = time.perf_counter() - t
    rows = []
    if not a.skip_mine:
        mine = run_child(MINE, str(feats), str(paths), str(run))
        rows.append(("whole `mine --features` (k-means, C = 1000)", mine["wall_s"], mine))
        print(json.dumps(mine, indent=1), flush=True)
    cal = run_child(CALIBRATE, str(run))
    rows.append(("calibrate (cross-fitted, 5 folds)", cal["seconds"], cal))
    score = run_child(SCORE, str(run))
    rows.append(("score all N images (current concepts)", score["seconds"], score))
    pages = run_child(PAGES, str(run))["pages"] if not a.skip_pages else []
    flat = [run_child(VOTE_SLICE, str(feats), str(m)) | {"n": m} for m in (a.n // 8, a.n // 2)]
    info = common.machine_info()
    lines = [f"Command: `.venv/bin/python bench/bench_paper_scale.py --n {a.n} --dim {a.dim}` · "
             + common.machine_line(info), "",
             f"Synthetic features: {a.n:,} x {a.dim} float16, 1,000-component mixture on the sphere "
             f"(generated in {gen_s:.0f} s). Fresh process per row; peak RSS includes the memory-mapped "
             "feature pages the process touched (file-backed, reclaimable); anon = RSS minus those.", "",
             "| stage | seconds | peak RSS GB | peak anon GB |", "|---|---|---|---|"]
    for name, secs, res in rows:
        lines.append(f"| {name} | {secs:,.0f} | {res['peak_rss_gb']:.2f} | {res['peak_anon_gb']:.2f} |")
    if not a.skip_mine:
        lines += ["", "Stages inside that `mine` (seconds): " + ", ".join(
            f"{k} {v:,.0f}" for k, v in mine["timings"].items())
            + f". Result: {mine['n_occupied']} occupied clusters, |Y_pos| = {mine['n_positive']}, "
              f"mean purity {mine['mean_purity']:.3f} (random directions vs real text: only the timing is meaningful)."]
    lines += ["", "Vote + score memory against N (10,000-concept random corpus slice, top-5 + LSE, then "
              "1,000 positives):", "", "| N | vote s | score s | peak RSS GB | peak anon GB |", "|---|---|---|---|---|"]
    for f in flat:
        lines.append(f"| {f['n']:,} | {f['vote_s']:,.0f} | {f['score_s']:,.1f} | {f['peak_rss_gb']:.2f} | "
                     f"{f['peak_anon_gb']:.2f} |")
    if pages:
        lines += ["", "App pages on that run (AppTest render in one process: first visit, then a rerun = warm):", "",
                  "| page | first s | warm s | errors |", "|---|---|---|---|"]
        for p in pages:
            err = (p["errors"][0][:80] if p["errors"] else "").replace("|", "/")
            lines.append(f"| {p['page']} | {p['cold_s']:.1f} | {p['warm_s']:.1f} | {err} |")
    text = "\n".join(lines)
    print(text)
    common.write_block(SECTION, "paper-scale", text)
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Estimates benchmark (issue 18): the pre-launch estimate and the running job's whole-job ETA against
the truth, for default settings at several N, TEMI and k-means, with the machine quiet and with a
second mining job running; and the 160-image first run, old checkout vs this one (--ab).

    python bench/bench_estimates.py                       # N = 80,160,400,1000 x temi,kmeans x quiet,loaded
    python bench/bench_estimates.py --sizes 160 --loads quiet --clusterers temi
    python bench/bench_estimates.py --table bench/results/estimates.json     # the BENCHMARKS.md tables
    python bench/bench_estimates.py --ab /work/old-checkout --reps 3          # 160-image first run A/B

Each cell is what the app does: the estimate is made in this process as the Data page makes it (the
encoder loaded, ``measure_speed`` then ``estimate_run_cost``), then the job runs in a worker process
(``clustermine.workflows.jobs.start_mine_job``: ``python -m clustermine resume``) on a class-stratified subset of
../shared/data/imagenette_train100 (N / 10 images of each of its 10 classes), with a fresh runs root
and an empty feature cache (the images are encoded, as on a first run) but the corpus embedding
already cached. "actual" is the wall time from launching the worker to the run being done; the ETA
is read from progress.json every 0.5 s; the worker's exit after that is not counted. "loaded": a second ``clustermine mine`` (1,000 images of
imagenette_val100, TEMI, its own empty cache) runs alongside, restarted whenever it ends. The 1-min
load average is recorded with each cell: the machine is shared, so "quiet" is not guaranteed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT / ".." / "shared" / "data"
PY = sys.executable


TEXT_CACHE = (Path(os.environ.get("CLUSTERMINE_CACHE") or Path.home() / ".cache" / "clustermine") / "text").resolve()


def text_cache() -> Path:
    """The warm corpus embeddings (read once: the cells point CLUSTERMINE_CACHE at their own caches)."""
    return TEXT_CACHE


def fresh_cache(tmp: Path) -> Path:
    """An empty feature cache with the warm corpus embeddings linked in."""
    cache = tmp / "cache"
    cache.mkdir(parents=True)
    os.symlink(text_cache(), cache / "text")
    return cache


def stratified_subset(src: Path, dst: Path, n: int) -> int:
    """Copy n / (classes) images of each class folder of src (first in file-name order) into dst."""
    classes = sorted(p for p in src.iterdir() if p.is_dir())
    per = max(1, n // len(classes))
    copied = 0
    for cls in classes:
        (dst / cls.name).mkdir(parents=True, exist_ok=True)
        for f in sorted(cls.iterdir())[:per]:
            shutil.copyfile(f, dst / cls.name / f.name)
            copied += 1
    return copied


class SecondJob:
    """A second mining process kept running (restarted when it ends) until stopped."""

    def __init__(self, tmp: Path) -> None:
        self.tmp, self.proc, self.stop_flag, self.starts = tmp, None, False, 0
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self.stop_flag:
            run = self.tmp / f"second-{self.starts}"
            cache = self.tmp / f"second-cache-{self.starts}"
            cache.mkdir(parents=True)
            os.symlink(text_cache(), cache / "text")
            env = {**os.environ, "CLUSTERMINE_CACHE": str(cache), "PYTHONPATH": str(ROOT)}
            self.proc = subprocess.Popen([PY, "-m", "clustermine", "mine", str(DATA / "imagenette_val100"), "--out", str(run),
                                          "--quiet"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.starts += 1
            self.proc.wait()

    def start(self) -> None:
        self.thread.start()
        time.sleep(8)  # past its imports: encoding

    def stop(self) -> None:
        self.stop_flag = True
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.thread.join(30)


def estimate_like_the_app(n: int, clusterer: str, encoder) -> tuple[dict, float]:
    """The Data page's pre-launch estimate (encoder loaded, speed probed now); its own cost (s)."""
    from clustermine.core.config import MineConfig
    from clustermine.workflows.estimate import estimate_now

    cfg = MineConfig()
    t = time.perf_counter()
    est = estimate_now(n, clusterer, corpus_cached=True, holdout_fraction=cfg.holdout_fraction, max_age_s=0)
    speed = est.speed
    took = time.perf_counter() - t
    return {"total_s": round(est.total_s, 1), "stages_s": {k: round(v, 1) for k, v in est.stages.items()},
            "detail": est.detail, "slowdown": round(speed.slowdown, 2),
            "parallel_slowdown": round(speed.parallel_slowdown, 2),
            "temi_step_ms": round(1e3 * speed.temi_step_s, 2)}, took


def run_cell(n: int, clusterer: str, load: str, encoder) -> dict:
    """One cell; the worker reads the probe of the pre-launch estimate, as a job launched by the app does."""
    from clustermine.workflows import jobs
    from clustermine.core.config import MineConfig
    from clustermine.store import Run

    tmp = Path(tempfile.mkdtemp(prefix=f"est_{n}_{clusterer}_{load}_"))
    second = None
    try:
        images = tmp / "images"
        n_real = stratified_subset(DATA / "imagenette_train100", images, n)
        cache = fresh_cache(tmp)
        if load == "loaded":
            second = SecondJob(tmp)
            second.start()
        load_before = os.getloadavg()[0]
        os.environ["CLUSTERMINE_CACHE"] = str(cache)  # the app and its jobs share one cache root (speed.json)
        est, probe_s = estimate_like_the_app(n_real, clusterer, encoder)
        run_dir = tmp / "runs" / "cell"
        run_dir.parent.mkdir()
        cfg = MineConfig(clusterer=clusterer).resolved().to_dict()
        cfg["images_dir"] = str(images.resolve())
        Run.create(run_dir, cfg)
        env = {**os.environ, "CLUSTERMINE_CACHE": str(cache), "PYTHONPATH": str(ROOT)}
        t0 = time.time()
        jobs.start_mine_job(run_dir, env=env)
        samples = []
        loads = []
        while True:
            time.sleep(0.5)
            run = Run.open(run_dir, require_complete=False)
            prog = run.progress() or {}
            samples.append({"t": round(time.time() - t0, 2), "stage": prog.get("stage"), "done": prog.get("done"),
                            "total": prog.get("total"), "job_eta_s": prog.get("job_eta_s")})
            loads.append(os.getloadavg()[0])
            if run.status in ("done", "failed", "cancelled"):  # what the user sees: the run is finished
                break
            if time.time() - t0 > 3600:
                raise RuntimeError("cell took over an hour")
        actual = time.time() - t0
        if run.status != "done":
            raise RuntimeError(f"run {run.status}: {run.meta.get('error')}")
        summary = run.meta.get("summary") or {}
        timings = dict(summary.get("timings_s") or {})
        timings["start"] = round(actual - sum(float(v) for v in timings.values()), 1)  # outside the stages
        # ETA quality: job_eta_s / true remaining, over samples with >= 5 s left and an ETA shown
        ratios = [s["job_eta_s"] / (actual - s["t"]) for s in samples
                  if s["job_eta_s"] is not None and actual - s["t"] >= 5.0]
        shown = [s for s in samples if s["stage"] and s["stage"] != "scan"]
        starting = sum(1 for s in shown if s["job_eta_s"] is None) / max(len(shown), 1)
        return {"N": n_real, "clusterer": clusterer, "load": load, "actual_s": round(actual, 1),
                "estimate_s": est["total_s"], "ratio": round(est["total_s"] / actual, 2), "estimate": est,
                "probe_s": round(probe_s, 2), "stages_actual_s": timings,
                "schedule": summary.get("temi_schedule"), "worker_slowdown": summary.get("speed_slowdown"),
                "eta_ratio_min": round(min(ratios), 2) if ratios else None,
                "eta_ratio_max": round(max(ratios), 2) if ratios else None, "eta_samples": len(ratios),
                "share_starting": round(starting, 2),
                "eta_samples_every": samples[:: max(1, len(samples) // 40)],
                "load_avg_1min": {"before": round(load_before, 2), "mean": round(sum(loads) / len(loads), 2)},
                "second_job_starts": second.starts if second else 0}
    finally:
        if second is not None:
            second.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def ab(old_tree: Path, reps: int, n: int = 160) -> list[dict]:
    """The 160-image first run (4 classes x 40, defaults, empty feature cache, corpus cached) as a
    fresh ``clustermine mine`` process of the old checkout and of this one, interleaved."""
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="ab_first_run_"))
    try:
        from bench_first_run import subset_folder

        subset_folder(DATA / "imagenette_train100", tmp / "images", 4, n // 4)
        for rep in range(reps):
            for tree, root in (("old", old_tree), ("new", ROOT)):
                cell = tmp / f"{tree}-{rep}"
                cache = fresh_cache(cell)
                env = {**os.environ, "CLUSTERMINE_CACHE": str(cache), "PYTHONPATH": str(root)}
                load = os.getloadavg()[0]
                t = time.perf_counter()
                subprocess.run([PY, "-m", "clustermine", "mine", str(tmp / "images"), "--out", str(cell / "run"), "--quiet"],
                               env=env, cwd=root, check=True, stdout=subprocess.DEVNULL)
                wall = time.perf_counter() - t
                meta = json.loads((cell / "run" / "run.json").read_text())
                s = meta.get("summary") or {}
                row = {"tree": tree, "rep": rep, "N": n, "wall_s": round(wall, 1), "stages_s": s.get("timings_s"),
                       "schedule": s.get("temi_schedule"), "load_avg_1min": round(load, 2)}
                print(json.dumps(row), flush=True)
                rows.append(row)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


def table(rows: list[dict]) -> str:
    out = ["| N | clusterer | load | estimate s | actual s | estimate / actual | whole-job ETA / truth: min-max (share within 2x) "
           "| 'starting…' share | stages actual s (other / scan / encode / corpus / cluster / vote) "
           "| stages estimated s | schedule | slowdown (probe) | load avg 1 min (before / mean) |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    order = ("start", "scan", "encode", "corpus", "cluster", "vote")
    for r in sorted(rows, key=lambda r: (r["load"], r["clusterer"], r["N"])):
        st = dict(r["stages_actual_s"])
        st["start"] = r["actual_s"] - sum(float(v) for k, v in st.items() if k != "start")  # outside the stages
        act = " / ".join(f"{float(st.get(k, 0)):.0f}" for k in order)
        est = " / ".join(f"{float(r['estimate']['stages_s'].get(k, 0)):.0f}" for k in order)
        s = r.get("schedule")
        sched = f"{s['n_heads']}x{s['batch_size']}x{s['steps']:,}" if s else "k-means"
        eta = f"{r['eta_ratio_min']}-{r['eta_ratio_max']}" if r.get("eta_ratio_min") is not None else "n/a"
        trace = [x["job_eta_s"] / (r["actual_s"] - x["t"]) for x in r.get("eta_samples_every", [])
                 if x["job_eta_s"] is not None and r["actual_s"] - x["t"] >= 5.0]
        if trace:  # share of the (sampled) ETAs within 2x of the truth
            eta += f" ({sum(1 for v in trace if 0.5 <= v <= 2.0) / len(trace):.0%} within 2x)"
        out.append(f"| {r['N']:,} | {r['clusterer']} | {r['load']} | {r['estimate_s']:.0f} | {r['actual_s']:.0f} | "
                   f"{r['ratio']:.2f} | {eta} | {r['share_starting']:.0%} | {act} | {est} | {sched} | "
                   f"{r['estimate']['slowdown']:.1f} | {r['load_avg_1min']['before']:.1f} / {r['load_avg_1min']['mean']:.1f} |")
    out.append("")
    for (clusterer, load) in sorted({(r["clusterer"], r["load"]) for r in rows}):
        rs = sorted((r for r in rows if (r["clusterer"], r["load"]) == (clusterer, load)), key=lambda r: r["N"])
        slower = [f"{a['N']} ({a['actual_s']:.0f} s) > {b['N']} ({b['actual_s']:.0f} s)" for a, b in zip(rs, rs[1:])
                  if a["actual_s"] > b["actual_s"]]
        within = sum(1 for r in rs if 0.5 <= r["ratio"] <= 2.0)
        out.append(f"- {clusterer}, {load}: estimate within 2x in {within} / {len(rs)} cells; "
                   + ("no N slower than a larger N" if not slower else "slower than a larger N: " + "; ".join(slower)))
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="80,160,400,1000")
    ap.add_argument("--clusterers", default="temi,kmeans")
    ap.add_argument("--loads", default="quiet,loaded")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "estimates.json")
    ap.add_argument("--table", type=Path, help="print the markdown table of a results file")
    ap.add_argument("--ab", type=Path, help="old checkout: run the 160-image first-run A/B against it")
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    if a.table:
        print(table(json.loads(a.table.read_text())["cells"]))
        return
    if a.ab:
        rows = ab(a.ab.resolve(), a.reps)
        out = a.out.with_name("ab_first_run_160.json")
        out.write_text(json.dumps({"rows": rows}, indent=1) + "\n")
        return
    from clustermine.method.encoders import load_encoder

    encoder = load_encoder("offline")  # the app keeps the Data page's encoder loaded
    existing = json.loads(a.out.read_text())["cells"] if a.out.is_file() else []
    cells = []
    for n in [int(x) for x in a.sizes.split(",")]:  # small N first: an interrupted run still has them all
        for load in a.loads.split(","):
            for clusterer in a.clusterers.split(","):
                row = run_cell(n, clusterer, load, encoder)
                print(json.dumps(row), flush=True)
                cells.append(row)
                keep = [c for c in existing if (c["N"], c["clusterer"], c["load"]) not in
                        {(x["N"], x["clusterer"], x["load"]) for x in cells}]
                a.out.write_text(json.dumps({"cells": keep + cells}, indent=1) + "\n")
    print(table(keep + cells))


if __name__ == "__main__":
    main()

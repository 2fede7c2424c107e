"""Ablations as one command: mine, score and measure every cell of a settings grid x seeds.

The images, the ID set and every OOD set are encoded once (the feature cache of
:func:`clustermine.workflows.encoding.load_folder`); each cell then mines a real run from those features
(:func:`clustermine.workflows.pipeline.mine_features`: cluster → vote → concepts, the engine's own
path) into ``OUT/runs/<cell>``, scores the ID and OOD sets with that run's detector
(:func:`clustermine.workflows.whatif.run_detector`, the one scoring path) and measures them
(:func:`clustermine.method.metrics.ood_metrics`, one row per OOD set and their mean). Each finished cell
is written atomically to ``OUT/cells/<cell>.json`` before the next starts, so a killed sweep run
again with the same grid skips the finished cells. Cells that differ only in C, the clusterer or the seed
share one zero-shot vote (:class:`clustermine.workflows.vote_memo.VoteMemo`), the costly pass over the
corpus, and the corpus denominators of the ID and OOD scores; ``OUT/results.json`` / ``results.csv`` /
``cells.csv`` hold the cells and the mean ± sd over seeds of every grid point.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import itertools
import json
import math
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from clustermine.core.config import CLUSTERER_NAMES, MineConfig
from clustermine.core.errors import ClusterMineError
from clustermine.core.hashing import array_hash
from clustermine.core.storage import (atomic_save_npy, atomic_write_bytes, atomic_write_json, atomic_write_text,
                                      cache_root)
from clustermine.method.encoders import load_encoder
from clustermine.method.metrics import ood_metrics
from clustermine.method.scoring import corpus_logsumexp
from clustermine.workflows.diagnostics import purity_diagnostics
from clustermine.workflows.encoding import load_folder
from clustermine.workflows.pipeline import mine_features
from clustermine.workflows.vote_memo import VoteMemo
from clustermine.workflows.whatif import run_detector

__all__ = ["GRID_KEYS", "METRICS", "Cell", "parse_grid", "parse_named_folders", "parse_clusterer_params",
           "grid_cells", "sweep", "summarize", "results_table"]

#: Grid keys: the user's name -> (MineConfig field, how one value is read). ``template`` is never split
#: on commas (a prompt may hold one): repeat ``--grid template=...`` for several.
GRID_KEYS: dict[str, tuple[str, Callable[[str], object]]] = {
    "clusters": ("n_clusters", int),
    "tau": ("tau", float),
    "clusterer": ("clusterer", str),
    "corpus": ("corpus", str),
    "template": ("template", str),
}
METRICS = ("auroc", "fpr95", "aupr_in", "aupr_out")
PURITY = ("acc", "nmi", "ari")
MEAN = "mean"
ProgressFn = Callable[[int, int, str, str], None]  # (cell number from 1, cells, cell label, what happens)


# ----------------------------------------------------------------------------- parsing
def parse_grid(items: Sequence[str]) -> dict[str, list]:
    """``["clusters=10,20", "tau=0.01"]`` → ``{"clusters": [10, 20], "tau": [0.01]}`` in :data:`GRID_KEYS`
    order. Repeating a key adds values; duplicates are dropped. Unknown keys and bad values raise
    ClusterMineError naming the item and the allowed keys."""
    grid: dict[str, list] = {}
    for item in items:
        key, sep, raw = str(item).partition("=")
        key = key.strip()
        if not sep or not key:
            raise ClusterMineError(f"--grid {item!r}: expected KEY=V1,V2,... (keys: {', '.join(GRID_KEYS)})")
        if key not in GRID_KEYS:
            raise ClusterMineError(f"--grid {item!r}: unknown key {key!r}; allowed keys: {', '.join(GRID_KEYS)} "
                                   "(seeds go in --seeds)")
        field, read = GRID_KEYS[key]
        texts = [raw] if key == "template" else [t.strip() for t in raw.split(",")]
        for text in texts:
            if not text:
                raise ClusterMineError(f"--grid {item!r}: empty value")
            try:
                value = read(text)
            except ValueError:
                raise ClusterMineError(f"--grid {item!r}: {text!r} is not a valid {key} value") from None
            MineConfig(**{field: value}).validate(f"--grid {key}={text}")
            if value not in grid.setdefault(key, []):
                grid[key].append(value)
    return {k: grid[k] for k in GRID_KEYS if k in grid}


def parse_named_folders(items: Sequence[str]) -> dict[str, Path]:
    """``["inat=/data/inat", "/data/sun"]`` → ``{"inat": Path, "sun": Path}``: NAME=DIR, or a bare DIR
    named after its folder. Raises ClusterMineError for a missing folder or a repeated name."""
    out: dict[str, Path] = {}
    for item in items:
        name, sep, folder = str(item).partition("=")
        if not sep or Path(str(item)).is_dir():
            name, folder = Path(str(item)).name, str(item)
        name = name.strip()
        if not name or name == MEAN:
            raise ClusterMineError(f"--ood {item!r}: give NAME=DIR with a NAME other than {MEAN!r}")
        if name in out:
            raise ClusterMineError(f"--ood {item!r}: the name {name!r} is given twice")
        if not Path(folder).is_dir():
            raise ClusterMineError(f"--ood {item!r}: {folder}: folder not found")
        out[name] = Path(folder)
    if not out:
        raise ClusterMineError("give at least one OOD set: --ood NAME=DIR")
    return out


def parse_clusterer_params(params: dict | None) -> dict[str, dict]:
    """Clusterer options per clusterer: ``KEY`` applies to every clusterer, ``CLUSTERER.KEY`` (e.g.
    ``temi.epochs``) to that one only (TEMI and k-means take different options)."""
    out: dict[str, dict] = {name: {} for name in CLUSTERER_NAMES}
    for key, value in (params or {}).items():
        prefix, dot, option = str(key).partition(".")
        if dot and prefix in CLUSTERER_NAMES:
            out[prefix][option] = value
        elif dot and prefix not in CLUSTERER_NAMES:
            raise ClusterMineError(f"--clusterer-param {key}: {prefix!r} is not a clusterer "
                                   f"({', '.join(CLUSTERER_NAMES)})")
        else:
            for name in CLUSTERER_NAMES:
                out[name].setdefault(key, value)
    return out


# ----------------------------------------------------------------------------- cells
@dataclass(frozen=True)
class Cell:
    """One grid point and seed: ``params`` {grid key: value} in :data:`GRID_KEYS` order."""

    params: tuple[tuple[str, object], ...]
    seed: int

    @property
    def label(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.params) + f" seed={self.seed}"

    @property
    def point(self) -> str:
        """The grid point without the seed (cells that differ only by seed share it)."""
        return " ".join(f"{k}={v}" for k, v in self.params)

    @property
    def key(self) -> str:
        """File-safe and stable: the same grid point and seed always give the same key."""
        canon = json.dumps({"params": [[k, v] for k, v in self.params], "seed": self.seed}, sort_keys=True)
        readable = re.sub(r"[^A-Za-z0-9_.=-]+", "_", self.label.replace(" ", "_"))[:80]
        return f"{readable}-{hashlib.sha1(canon.encode()).hexdigest()[:8]}"


def grid_cells(grid: dict[str, list], seeds: Sequence[int]) -> list[Cell]:
    """Every grid point x seed, points in the product order of :data:`GRID_KEYS`, seeds innermost."""
    keys = [k for k in GRID_KEYS if k in grid]
    seeds = list(dict.fromkeys(int(s) for s in seeds)) or [0]
    if any(s < 0 for s in seeds):
        raise ClusterMineError("--seeds: seeds must be non-negative integers")
    return [Cell(tuple(zip(keys, values)), seed)
            for values in itertools.product(*(grid[k] for k in keys)) for seed in seeds]


def _cell_config(base: MineConfig, cell: Cell, params: dict[str, dict]) -> MineConfig:
    changes = {GRID_KEYS[k][0]: v for k, v in cell.params}
    cfg = dataclasses.replace(base, seed=cell.seed, **changes)
    return dataclasses.replace(cfg, clusterer_params=dict(params.get(cfg.clusterer, {}))).validate(
        f"sweep cell {cell.label}")


# ----------------------------------------------------------------------------- the sweep
def _features_file(folder: Path, records: list, feats: np.ndarray, images_dir: Path) -> tuple[Path, Path]:
    """The encoded images as a features file [N, D] + paths (relative to ``images_dir``) for ``mine_features``."""
    import pyarrow as pa  # heavy (pyarrow): only when a sweep runs
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    feat_path, paths_path = folder / "images.npy", folder / "paths.parquet"
    atomic_save_npy(feat_path, np.asarray(feats, dtype=np.float16))
    buf = io.BytesIO()
    pq.write_table(pa.table({"image_path": [r.path for r in records]}), buf)
    atomic_write_bytes(paths_path, buf.getvalue())
    return feat_path, paths_path


def _setup_stamp(encoder, config: MineConfig, grid: dict[str, list], params: dict[str, dict],
                 sets: dict[str, list]) -> dict:
    """What every cell shares (settings outside the grid, the sets' contents); a sweep folder holding
    another setup is refused, so its finished cells never mix with cells of other settings."""
    varied = {GRID_KEYS[k][0] for k in grid} | {"seed"}
    base = {k: v for k, v in config.to_dict().items() if k not in varied}
    content = {name: hashlib.sha1("\n".join(r.sha1 for r in recs).encode()).hexdigest() for name, recs in sets.items()}
    return {"encoder": encoder.fingerprint_id, "config": base, "clusterer_params": params, "sets": content}


def _score_cell(run, id_feats: np.ndarray, ood_feats: dict[str, np.ndarray], denominators: dict) -> dict:
    """The cell's metrics with its run's detector. ``denominators`` {(set, embeddings + τ key): corpus LSE
    float64 [N]} is shared by the sweep's cells: the score's denominator does not depend on Y_pos."""
    detector = run_detector(run, calibrate=False)
    corpus_key = f"{array_hash(detector.text_embeddings)}-tau{float(detector.tau)!r}"

    def log_scores(name: str, feats: np.ndarray) -> np.ndarray:
        feats = np.asarray(feats, dtype=np.float32)
        if (name, corpus_key) not in denominators:
            denominators[(name, corpus_key)] = corpus_logsumexp(feats, detector.text_embeddings, detector.tau)
        return detector.log_scores(feats, corpus_lse=denominators[(name, corpus_key)])

    id_scores = log_scores("id", id_feats)
    rows = {name: ood_metrics(id_scores, log_scores(f"ood:{name}", f)) for name, f in ood_feats.items()}
    rows[MEAN] = {m: float(np.mean([r[m] for r in rows.values()])) for m in METRICS}
    rows[MEAN].update(n_id=int(len(id_scores)), n_ood=int(sum(len(f) for f in ood_feats.values())))
    return {"metrics": rows, "n_positive": int(len(detector.positive_idx))}


def sweep(images: str | Path, out: str | Path, *, id_dir: str | Path, ood: dict[str, str | Path],
          grid: dict[str, list], seeds: Sequence[int] = (0,), config: MineConfig | None = None,
          clusterer_params: dict | None = None, cache_dir: str | Path | None = None, encoder=None,
          keep_runs: bool = True, progress: ProgressFn | None = None) -> dict:
    """Mine and evaluate every cell of ``grid`` x ``seeds``; returns (and writes to ``out``) the results.

    ``grid``: from :func:`parse_grid`; ``config``: every other setting (encoder, holdout, topk ...);
    ``clusterer_params``: see :func:`parse_clusterer_params`; ``cache_dir``: the cache root (features
    and corpus embeddings, as ``mine --cache-dir``). Finished cells in ``out/cells`` are skipped.
    Returns ``{"grid", "seeds", "sets", "cells": [...], "summary": [...], "computed", "skipped", "files"}``.
    """
    base = (config or MineConfig()).validate("sweep settings")
    params = parse_clusterer_params(clusterer_params)
    cells = grid_cells(grid, seeds)
    for cell in cells:
        _cell_config(base, cell, params)  # every cell's settings are checked before any work
    images, out = Path(images), Path(out)
    for name, folder in [("images", images), ("--id", Path(id_dir))]:
        if not folder.is_dir():
            raise ClusterMineError(f"{name} {folder}: folder not found")
    root = Path(cache_dir) if cache_dir else cache_root()

    encoder = encoder or load_encoder(base.encoder, device=base.device)
    loaded = {}
    for name, folder in [("images", images), ("id", Path(id_dir)), *((f"ood:{n}", Path(f)) for n, f in ood.items())]:
        if progress:
            progress(0, len(cells), f"{name} ({folder})", "encoding (cached by file content: only new files are encoded)")
        loaded[name] = load_folder(folder, encoder, cache_dir=root / "features", max_pixels=base.max_pixels,
                                   batch_size=base.batch_size)
    stamp = _setup_stamp(encoder, base, grid, params, {k: recs for k, (recs, _) in loaded.items()})
    manifest = out / "sweep.json"
    if manifest.is_file():
        try:
            old = json.loads(manifest.read_text(encoding="utf-8")).get("setup")
        except (OSError, ValueError, AttributeError) as exc:
            raise ClusterMineError(f"{manifest}: unreadable ({exc}); use a new --out folder") from None
        stamp = json.loads(json.dumps(stamp))  # compared as stored (tuples become lists)
        if old != stamp:
            differ = sorted(k for k in stamp if (old or {}).get(k) != stamp[k])
            raise ClusterMineError(f"{out}: holds a sweep of other inputs or settings (differs in: "
                                   f"{', '.join(differ) or 'format'}); use a new --out folder or delete it")
    elif out.exists() and any(out.iterdir()):
        raise ClusterMineError(f"{out}: folder is not empty and holds no sweep; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(manifest, {"setup": stamp, "images": str(images.resolve()), "id": str(Path(id_dir).resolve()),
                                 "ood": {n: str(Path(f).resolve()) for n, f in ood.items()}})
    recs, feats = loaded["images"]
    feat_path, paths_path = _features_file(out / "features", recs, feats, images)
    id_feats = loaded["id"][1]
    ood_feats = {n: loaded[f"ood:{n}"][1] for n in ood}

    results, computed, skipped = [], 0, 0
    votes = VoteMemo()  # cells differing only in C, clusterer or seed share one zero-shot vote ...
    denominators: dict = {}  # ... and the corpus LSE of the ID and OOD sets they score
    for i, cell in enumerate(cells, 1):
        cell_file = out / "cells" / f"{cell.key}.json"
        if cell_file.is_file():
            try:
                results.append(json.loads(cell_file.read_text(encoding="utf-8")))
                skipped += 1
                if progress:
                    progress(i, len(cells), cell.label, "finished earlier (kept)")
                continue
            except (OSError, ValueError):
                pass  # a damaged cell file is computed again
        if progress:
            progress(i, len(cells), cell.label, "running")
        start = time.perf_counter()
        run_dir = out / "runs" / cell.key
        if run_dir.exists():  # a cell killed half-way: its run is ours and unfinished
            shutil.rmtree(run_dir)
        cfg = _cell_config(base, cell, params)
        try:
            run = mine_features(feat_path, paths_path, run_dir, cfg, image_root=images, cache_dir=root, encoder=encoder,
                                vote_memo=votes)
            scored = _score_cell(run, id_feats, ood_feats, denominators)
        except ClusterMineError as exc:
            raise ClusterMineError(f"sweep cell {cell.label}: {exc} (finished cells are kept in {out / 'cells'})") \
                from exc
        purity = purity_diagnostics(run)
        summ = run.meta.get("summary") or {}
        record = {"key": cell.key, "point": cell.point, "params": dict(cell.params), "seed": cell.seed,
                  **scored, "purity": {k: purity[k] for k in PURITY} if purity else None,
                  "n_clusters": summ.get("n_clusters"), "n_mining": summ.get("n_mining"),
                  "seconds": round(time.perf_counter() - start, 3),
                  "run_dir": str(run_dir) if keep_runs else None}
        if not keep_runs:
            shutil.rmtree(run_dir, ignore_errors=True)
        atomic_write_json(cell_file, record)
        results.append(record)
        computed += 1
        if progress:
            progress(i, len(cells), cell.label, f"done in {record['seconds']:.1f} s, mean AUROC "
                                                f"{record['metrics'][MEAN]['auroc']:.4f}")
    result = {"grid": grid, "seeds": sorted({c.seed for c in cells}), "sets": [*ood, MEAN], "cells": results,
              "summary": summarize(results, [*ood, MEAN]), "computed": computed, "skipped": skipped}
    result["files"] = write_results(out, result)
    return result


# ----------------------------------------------------------------------------- results
def _mean_sd(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (ddof 1; None with one value)."""
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), (float(arr.std(ddof=1)) if arr.size > 1 else None)


def summarize(cells: list[dict], sets: Sequence[str]) -> list[dict]:
    """One row per grid point (cells averaged over seeds, in first-seen order): ``point``, ``params``,
    ``n_seeds``, ``metrics`` {set: {metric: {"mean", "sd"}}} and ``purity`` {acc/nmi/ari: {"mean",
    "sd"}} (None without folder labels). sd is the sample standard deviation over seeds (None for one)."""
    groups: dict[str, list[dict]] = {}
    for c in cells:
        groups.setdefault(c["point"], []).append(c)
    rows = []
    for point, members in groups.items():
        metrics = {s: {m: dict(zip(("mean", "sd"), _mean_sd([c["metrics"][s][m] for c in members])))
                       for m in METRICS} for s in sets}
        with_purity = [c["purity"] for c in members if c.get("purity")]
        purity = ({k: dict(zip(("mean", "sd"), _mean_sd([p[k] for p in with_purity]))) for k in PURITY}
                  if len(with_purity) == len(members) else None)
        rows.append({"point": point, "params": members[0]["params"], "n_seeds": len(members),
                     "seeds": sorted(c["seed"] for c in members), "metrics": metrics, "purity": purity})
    return rows


def _pm(stat: dict) -> str:
    return f"{stat['mean']:.4f}" + ("" if stat["sd"] is None else f"±{stat['sd']:.4f}")


def results_table(result: dict) -> str:
    """The summary as a text table: one line per grid point, AUROC per OOD set, mean AUROC / FPR95,
    clustering ACC (when the images have class folders); mean ± sd over seeds."""
    sets = [s for s in result["sets"] if s != MEAN]
    head = ["grid point", "seeds", *(f"AUROC {s}" for s in sets), "mean AUROC", "mean FPR95"]
    has_purity = any(r["purity"] for r in result["summary"])
    if has_purity:
        head.append("ACC")
    lines = [head]
    for r in result["summary"]:
        m = r["metrics"]
        line = [r["point"] or "(defaults)", str(r["n_seeds"]), *(_pm(m[s]["auroc"]) for s in sets),
                _pm(m[MEAN]["auroc"]), _pm(m[MEAN]["fpr95"])]
        if has_purity:
            line.append(_pm(r["purity"]["acc"]) if r["purity"] else "–")
        lines.append(line)
    widths = [max(len(row[j]) for row in lines) for j in range(len(head))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in lines)


def _csv(rows: list[list]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def _num(v: float | None) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else repr(float(v))


def write_results(out: Path, result: dict) -> dict[str, str]:
    """``results.json`` (everything), ``results.csv`` (one line per grid point x set, mean and sd of each
    metric) and ``cells.csv`` (one line per cell x set), each written atomically."""
    keys = [k for k in GRID_KEYS if k in result["grid"]]
    summary = [[*keys, "set", "n_seeds", *(f"{m}_{s}" for m in METRICS for s in ("mean", "sd"))]]
    for r in result["summary"]:
        for s in result["sets"]:
            stats = r["metrics"][s]
            summary.append([*(r["params"].get(k) for k in keys), s, r["n_seeds"],
                            *(_num(stats[m][x]) for m in METRICS for x in ("mean", "sd"))])
    per_cell = [[*keys, "seed", "set", *METRICS, *PURITY]]
    for c in result["cells"]:
        for s in result["sets"]:
            per_cell.append([*(c["params"].get(k) for k in keys), c["seed"], s,
                             *(_num(c["metrics"][s][m]) for m in METRICS),
                             *(_num(c["purity"][k]) if c.get("purity") else "" for k in PURITY)])
    files = {"json": out / "results.json", "csv": out / "results.csv", "cells_csv": out / "cells.csv"}
    atomic_write_text(files["csv"], _csv(summary))
    atomic_write_text(files["cells_csv"], _csv(per_cell))
    atomic_write_json(files["json"], {k: v for k, v in result.items() if k != "files"})
    return {k: str(v) for k, v in files.items()}

"""Encoding images into features for a workflow: progress of a job's stages (and its whole-job
ETA), the on-disk feature cache keyed by file content and encoder, and the one encode path every
workflow uses (mine, resume, what-if and scoring samples, evaluate), locally or on a Ray cluster."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from clustermine.core.config import STAGES
from clustermine.core.errors import CancelledError, NoImagesError
from clustermine.core.storage import atomic_save_npz, cache_root
from clustermine.core.errors import ImageError
from clustermine.method.images import DEFAULT_MAX_PIXELS, check_pixel_limit, scan_images
from clustermine.workflows.estimate import job_eta

ProgressFn = Callable[[str, int, int], None]
CancelFn = Callable[[], bool]


# ----------------------------------------------------------------------------- progress
class ProgressTracker:
    """Forwards stage progress to a callback and to the run's ``progress.json`` (throttled).

    Once :meth:`set_plan` has given per-stage estimates (``clustermine.workflows.estimate``), every update also
    carries ``job_eta_s``: seconds left for the whole job (the current stage and all later ones). A
    callback object with an ``on_job_eta(seconds)`` method (the CLI's bars) receives it too.
    """

    def __init__(self, run=None, callback: ProgressFn | None = None, cancel: CancelFn | None = None,
                 min_interval: float = 0.5) -> None:
        self.run, self.callback, self._cancel = run, callback, cancel
        self.min_interval = min_interval
        self.started = time.time()
        self.stage = ""
        self.stage_started = self.started
        self._last_write = 0.0
        self.timings: dict[str, float] = {}
        self.plan: dict[str, float] = {}
        self.plan_detail = ""
        self.job_eta_s: float | None = None
        self.speed_slowdown: float | None = None  # the speed probe's, when the plan was made
        self._first: tuple[float, int] | None = None  # (elapsed, done) of the stage's first progress

    def set_plan(self, stage_estimates: dict[str, float], detail: str = "") -> None:
        """Estimated seconds per stage (``CostEstimate.stages``) for the whole-job ETA."""
        self.plan, self.plan_detail = dict(stage_estimates), detail

    def start(self, stage: str, total: int = 0) -> None:
        if self.stage:
            self.timings[self.stage] = round(time.time() - self.stage_started, 3)
        self.stage, self.stage_started = stage, time.time()
        self._first = None
        self.update(0, total, force=True)

    def finish(self) -> None:
        if self.stage:
            self.timings[self.stage] = round(time.time() - self.stage_started, 3)
        self.stage = ""

    def update(self, done: int, total: int, force: bool = False) -> None:
        now = time.time()
        elapsed = now - self.stage_started
        if done > 0 and self._first is None:
            self._first = (elapsed, int(done))
        if self.plan:
            self.job_eta_s = job_eta(self.plan, self.stage, done, total, elapsed, self._first)
        if self.run is not None and (force or done >= total or now - self._last_write >= self.min_interval):
            eta = (elapsed / done * (total - done)) if done and total else None
            self.run.write_progress({
                "stage": self.stage, "stage_index": STAGES.index(self.stage) if self.stage in STAGES else -1,
                "stages": list(STAGES), "done": int(done), "total": int(total), "started": self.started,
                "stage_started": self.stage_started, "updated": now,
                "eta_s": None if eta is None else round(eta, 1), "status": "running",
                "job_eta_s": None if self.job_eta_s is None else round(self.job_eta_s, 3),
                "plan_s": {k: round(v, 3) for k, v in self.plan.items()}, "plan_detail": self.plan_detail,
            })
            self._last_write = now
        if self.callback:  # after the write: a callback reading progress.json sees this update
            if self.job_eta_s is not None and callable(getattr(self.callback, "on_job_eta", None)):
                self.callback.on_job_eta(self.job_eta_s)
            self.callback(self.stage, done, total)
        self.check_cancel()

    def check_cancel(self) -> None:
        if (self._cancel and self._cancel()) or (self.run is not None and self.run.cancel_requested()):
            raise CancelledError("cancelled by the user; finished work is kept, run `clustermine resume RUN_DIR` to continue")

    def check_cancel_flag(self) -> bool:
        """True when a cancel was requested (callback or ``cancel.requested`` in the run)."""
        try:
            self.check_cancel()
        except CancelledError:
            return True
        return False

    def stage_callback(self) -> Callable[[int, int], None]:
        return lambda done, total: self.update(done, total)


# ----------------------------------------------------------------------------- feature cache
class FeatureCache:
    """Image features keyed by (encoder fingerprint, file sha1), stored as atomic chunk files.

    Encoding writes a chunk every few hundred images, so a killed job loses at most one chunk and a
    re-run on the same (or an overlapping) folder re-encodes only new or changed files.
    """

    def __init__(self, fingerprint_id: str, root: str | Path | None = None) -> None:
        self.dir = Path(root or cache_root() / "features") / fingerprint_id
        self._index: dict[str, tuple[Path, int]] | None = None

    def _load_index(self) -> dict[str, tuple[Path, int]]:
        if self._index is None:
            self._index = {}
            for chunk in sorted(self.dir.glob("chunk-*.npz")):
                try:
                    with np.load(chunk, allow_pickle=False) as z:
                        keys = z["keys"]
                except (OSError, ValueError, KeyError, EOFError):
                    continue  # an unreadable chunk is simply re-encoded
                for i, k in enumerate(keys.tolist()):
                    self._index[k] = (chunk, i)
        return self._index

    def __contains__(self, sha1: str) -> bool:
        return sha1 in self._load_index()

    def get_many(self, sha1s: Sequence[str]) -> np.ndarray:
        """Features [len(sha1s), D] float32 for keys that are all in the cache."""
        index = self._load_index()
        by_chunk: dict[Path, list[tuple[int, int]]] = {}
        for out_row, k in enumerate(sha1s):
            chunk, row = index[k]
            by_chunk.setdefault(chunk, []).append((out_row, row))
        result = None
        for chunk, pairs in by_chunk.items():
            with np.load(chunk, allow_pickle=False) as z:
                feats = z["features"]
            if result is None:
                result = np.zeros((len(sha1s), feats.shape[1]), dtype=np.float32)
            out_rows, rows = zip(*pairs)
            result[list(out_rows)] = feats[list(rows)].astype(np.float32)
        return result if result is not None else np.zeros((0, 0), dtype=np.float32)

    def put(self, sha1s: Sequence[str], features: np.ndarray) -> None:
        if not len(sha1s):
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        chunk = self.dir / f"chunk-{time.time_ns()}-{uuid.uuid4().hex[:6]}.npz"
        atomic_save_npz(chunk, keys=np.array(list(sha1s)), features=np.asarray(features, dtype=np.float16))
        index = self._load_index()
        for i, k in enumerate(sha1s):
            index[k] = (chunk, i)


def encode_records(encoder, records: list, *, cache: FeatureCache | None = None, tracker: ProgressTracker | None = None,
                   batch_size: int = 32, chunk_size: int = 256, max_pixels: int | None = None,
                   assemble: bool = True, cluster=None) -> tuple[np.ndarray | None, dict[str, str]]:
    """Encode the "ok" image records (``clustermine.method.images.ImageRecord``), using and filling the cache.

    The cache's chunk files are the feature shards: each is written atomically as encoding goes,
    so a re-run resumes after the last finished shard. Returns ``(features float32 [n, D] for
    records that encoded (None unless ``assemble``), errors {path: reason})``; records that fail
    to decode are marked skipped in place. ``cluster`` (a connected
    :class:`clustermine.workflows.distributed.RayCluster`): encode there instead of in this process; the shards
    are the same cache chunks, written here as results come back.
    """

    cache = cache or FeatureCache(encoder.fingerprint_id)
    errors: dict[str, str] = {}
    for r in records:  # cached features skip decoding, but the pixel limit must still hold
        if r.status == "ok" and r.sha1 in cache:
            try:
                check_pixel_limit(r.abs_path, max_pixels or DEFAULT_MAX_PIXELS)
            except ImageError as exc:
                errors[r.path] = exc.reason
    todo = [r for r in records if r.status == "ok" and r.sha1 not in cache]
    seen: set[str] = set()
    todo = [r for r in todo if not (r.sha1 in seen or seen.add(r.sha1))]  # duplicates encode once
    total = len(todo)
    if tracker:
        tracker.update(0, total, force=True)
    kwargs = {"batch_size": batch_size}
    if max_pixels:
        kwargs["max_pixels"] = max_pixels
    # One decode pipeline for the whole job; every chunk becomes a feature-cache shard as it finishes.
    on_progress = (lambda done, _t: tracker.update(done, total)) if tracker else None
    on_cancel = tracker.check_cancel_flag if tracker else None
    if cluster is not None:
        chunks = cluster.iter_encode(encoder, [r.abs_path for r in todo], chunk_size=chunk_size,
                                     progress=on_progress, cancel=on_cancel, **kwargs)
    else:
        chunks = ((range(start, start + len(result.ok)), result) for start, result in
                  encoder.iter_encode([r.abs_path for r in todo], chunk_size=chunk_size, progress=on_progress,
                                      cancel=on_cancel, **kwargs))
    stored = 0
    for positions, result in chunks:
        part = [todo[i] for i in positions]
        stored += len(part)
        ok_records = [r for r, ok in zip(part, result.ok) if ok]
        cache.put([r.sha1 for r in ok_records], result.features)
        for r, ok in zip(part, result.ok):
            if not ok:
                errors[r.path] = result.errors.get(r.abs_path, "could not be decoded")
        if tracker:
            tracker.update(stored, total, force=True)
    bad = set(errors)
    for r in records:
        if r.path in bad:
            r.status, r.reason = "skipped", errors[r.path]
    if not assemble:
        return None, errors
    usable = [r for r in records if r.status == "ok"]
    feats = cache.get_many([r.sha1 for r in usable]) if usable else np.zeros((0, encoder.dim), dtype=np.float32)
    return feats, errors


def load_folder(folder: str | Path, encoder, *, cache_dir: str | Path | None = None,
                tracker: ProgressTracker | None = None, max_pixels: int | None = None,
                batch_size: int = 32, cluster=None) -> tuple[list, np.ndarray]:
    """Scan and encode a folder: (usable ImageRecords, features float32 [n, D]) in scan order."""

    records = scan_images(folder, hash_files=cluster.hash_files if cluster is not None else None)
    cache = FeatureCache(encoder.fingerprint_id, cache_dir)
    feats, _ = encode_records(encoder, records, cache=cache, tracker=tracker, max_pixels=max_pixels,
                              batch_size=batch_size, cluster=cluster)
    usable = [r for r in records if r.status == "ok"]
    if not usable:
        reasons = "; ".join(f"{r.path}: {r.reason}" for r in records[:5])
        raise NoImagesError(f"{folder}: no readable image ({reasons})")
    return usable, feats



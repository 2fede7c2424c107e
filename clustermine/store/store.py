"""Create, open and check a run directory; its metadata, locks, progress flags, arrays and writers.

Every write is atomic (see :mod:`clustermine.core.storage`); ``run.json`` updates are serialised with
a file lock. Arrays are loaded lazily and cached on the object (a writer drops what it replaces).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import io
import json
import os
import platform
import uuid
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import numpy as np
from filelock import FileLock

from clustermine.core.errors import RunError
from clustermine.method.mining import ClusterStats
from clustermine.core.config import MineConfig, stored_tau
from clustermine.core.storage import (atomic_memmap, atomic_save_npy, atomic_save_npz, atomic_write_bytes, atomic_write_json,
                       atomic_write_text)
from clustermine.store import layout

RUN_FORMAT = layout.RUN_FORMAT
#: Rows per block when features are copied or cast (float32 blocks of ~100 MB at D = 512).
FEATURE_BLOCK = 65536
#: Columns of the per-image table, in order, and their Arrow types.
IMAGE_COLUMNS = (("path", "string"), ("abs_path", "string"), ("size_bytes", "int64"), ("sha1", "string"),
                 ("status", "string"), ("reason", "string"), ("duplicate_of", "string"), ("row", "int64"),
                 ("split", "string"))
STATUSES = ("created", "running", "done", "failed", "cancelled")
_PACKAGES = ("clustermine", "torch", "torchvision", "open_clip_torch", "numpy", "scikit-learn", "timm",
             "sentence-transformers", "umap-learn", "streamlit")


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def records_table(records: list[dict]):
    """A pyarrow.Table of per-image dicts with the :data:`IMAGE_COLUMNS` (missing keys -> null)."""
    import pyarrow as pa

    return pa.table({name: pa.array([r.get(name) for r in records], type=getattr(pa, typ)())
                     for name, typ in IMAGE_COLUMNS})


def comparable_config(config: dict) -> dict:
    """The settings that decide whether an unfinished run may be resumed (not who / when)."""
    return {k: v for k, v in (config or {}).items() if k not in ("created", "user")}


class RunStore:
    """A run directory's files. Use :meth:`create` or :meth:`open`."""

    def __init__(self, path: str | os.PathLike, meta: dict) -> None:
        self.path = Path(path)
        self.meta = meta
        self.cache: dict[str, Any] = {}

    def file(self, name: str) -> Path:
        """Path of the run file ``name`` (a :mod:`~clustermine.store.layout` constant); for
        ``layout.IMAGES``, an older run's ``images.jsonl`` when it has no ``images.parquet``."""
        if name == layout.IMAGES:
            return layout.images_table_path(self.path)
        return self.path / name

    # ------------------------------------------------------------------ create / open
    @classmethod
    def create(cls, path: str | os.PathLike, config: dict, *, overwrite: bool = False):
        """Start a new run in ``path`` (created if missing). Refuses a non-empty folder that is not
        an unfinished run with the same config, unless ``overwrite``."""
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise RunError(f"{path}: exists and is not a folder")
        if path.is_dir() and any(path.iterdir()):
            if layout.meta_path(path).is_file():
                run = cls.open(path, require_complete=False)
                if overwrite:  # explicit: the old run is moved aside, never deleted
                    path.rename(layout.replaced_name(path, f"{_dt.datetime.now():%Y%m%d-%H%M%S}"))
                elif run.status == "done":
                    raise RunError(f"{path}: already holds a finished run; choose a new --out folder or pass --force")
                elif comparable_config(run.config) != comparable_config(config):
                    raise RunError(f"{path}: holds an unfinished run with different settings; use a new --out "
                                   "folder, the same settings to resume, or --force to start over")
                else:  # resume an unfinished run with identical settings
                    run.update_meta(status="created", error=None)
                    return run
            elif not overwrite:
                raise RunError(f"{path}: folder is not empty and is not a ClusterMine run; choose another --out")
        path.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": RUN_FORMAT, "run_id": path.name or uuid.uuid4().hex[:8], "created": now_iso(),
            "updated": now_iso(), "status": "created", "config": config, "versions": package_versions(),
            "encoder": None, "summary": {}, "error": None, "stages_done": [],
        }
        atomic_write_json(layout.meta_path(path), meta)
        return cls(path, meta)

    @classmethod
    def open(cls, path: str | os.PathLike, *, require_complete: bool = True):
        """Open an existing run; RunError naming the bad file if it is missing, partial or corrupt."""
        path = Path(path)
        meta_path = layout.meta_path(path)
        if not path.is_dir():
            raise RunError(f"{path}: run folder not found")
        if not meta_path.is_file():
            raise RunError(f"{meta_path}: missing; {path} is not a ClusterMine run folder")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (ValueError, OSError) as exc:
            raise RunError(f"{meta_path}: corrupt ({exc})") from exc
        if not isinstance(meta, dict) or meta.get("format") != RUN_FORMAT:
            fmt = meta.get("format") if isinstance(meta, dict) else None
            raise RunError(f"{meta_path}: unsupported run format {fmt!r} (this version reads format {RUN_FORMAT})")
        run = cls(path, meta)
        if require_complete:
            run.check_complete()
        return run

    def check_complete(self) -> None:
        """Raise RunError naming the first missing or unreadable file of a finished run."""
        if self.status != "done":
            raise RunError(f"{layout.meta_path(self.path)}: run is not finished (status {self.status!r}); "
                           "resume it with `clustermine resume RUN_DIR`")
        for name in layout.REQUIRED_FILES[1:]:
            p = self.file(name)
            if not p.is_file() or p.stat().st_size == 0:
                raise RunError(f"{p}: missing or empty; the run is incomplete")
        n = self.n_images()
        for name, loader in ((layout.FEATURES, self.feature_matrix), (layout.CLUSTER_IDS, self.cluster_ids)):
            arr = loader()
            if arr.shape[0] != n:
                raise RunError(f"{self.file(name)}: has {arr.shape[0]} rows, {layout.IMAGES} lists {n} usable images")
        if self.text_embeddings().shape[0] != len(self.vocabulary_base()):
            raise RunError(f"{self.file(layout.TEXT_EMBEDDINGS)}: row count differs from {layout.CORPUS}")

    def files_stamp(self, names: tuple[str, ...] = layout.REQUIRED_FILES) -> tuple:
        """Changes whenever one of the run files ``names`` is rewritten (for caches)."""
        return tuple(layout.file_stamp(self.file(n)) for n in names)

    # ------------------------------------------------------------------ metadata
    @property
    def run_id(self) -> str:
        return self.meta.get("run_id", self.path.name)

    @property
    def status(self) -> str:
        return self.meta.get("status", "created")

    @property
    def config(self) -> dict:
        return self.meta.get("config", {})

    @property
    def encoder_spec(self) -> str:
        """The encoder of this run, the one place that says it: the spec recorded when it encoded
        (``run.json`` ``encoder.spec``), else the configured one, else the default (offline)."""
        return (self.meta.get("encoder") or {}).get("spec") or self.config.get("encoder") or MineConfig.encoder

    @property
    def tau(self) -> float:
        return stored_tau(self.config)

    def reload_meta(self) -> dict:
        meta_path = layout.meta_path(self.path)
        try:
            self.meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (ValueError, OSError) as exc:
            raise RunError(f"{meta_path}: corrupt ({exc})") from exc
        return self.meta

    def update_meta(self, **changes: Any) -> None:
        """Merge ``changes`` into ``run.json`` under the run's metadata lock (re-read first, so two
        writers lose nothing), stamping ``updated``."""
        with self.lock(layout.META_LOCK):
            self.reload_meta()
            self.meta.update(changes)
            self.meta["updated"] = now_iso()
            atomic_write_json(layout.meta_path(self.path), self.meta)

    def set_status(self, status: str, error: str | None = None) -> None:
        if status not in STATUSES:
            raise ValueError(f"unknown run status {status!r}")
        self.update_meta(status=status, error=error)

    def mark_stage(self, stage: str, **meta_changes: Any) -> None:
        done = list(self.meta.get("stages_done", []))
        if stage not in done:
            done.append(stage)
        self.update_meta(stages_done=done, **meta_changes)

    def lock(self, name: str, timeout: float = 30.0) -> FileLock:
        """The run's inter-process file lock ``name`` (a :mod:`clustermine.store.layout` ``*_LOCK``)."""
        return FileLock(str(layout.lock_path(self.path, name)), timeout=timeout)

    # ------------------------------------------------------------------ progress and cancel
    def write_progress(self, progress: dict) -> None:
        atomic_write_json(self.file(layout.PROGRESS), progress)

    def progress(self) -> dict | None:
        try:
            return json.loads(self.file(layout.PROGRESS).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def request_cancel(self) -> None:
        self.file(layout.CANCEL_FLAG).write_text(now_iso(), encoding="utf-8")

    def cancel_requested(self) -> bool:
        return self.file(layout.CANCEL_FLAG).exists()

    def clear_cancel(self) -> None:
        try:
            self.file(layout.CANCEL_FLAG).unlink()
        except FileNotFoundError:
            pass

    # ------------------------------------------------------------------ arrays and tables
    def _cached(self, key: str, loader: Callable[[], Any]) -> Any:
        if key not in self.cache:
            self.cache[key] = loader()
        return self.cache[key]

    def _load_npy(self, name: str, dtype=None) -> np.ndarray:
        p = self.file(name)
        try:
            arr = np.load(p, allow_pickle=False)
        except FileNotFoundError as exc:
            raise RunError(f"{p}: missing; the run is incomplete") from exc
        except (ValueError, OSError, EOFError) as exc:
            raise RunError(f"{p}: corrupt ({exc})") from exc
        return arr.astype(dtype) if dtype is not None else arr

    def _read_json(self, name: str) -> Any:
        p = self.file(name)
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise RunError(f"{p}: missing; the run is incomplete") from exc
        except (ValueError, OSError) as exc:
            raise RunError(f"{p}: corrupt ({exc})") from exc

    def image_table(self):
        """The per-image table (pyarrow.Table, one row per scanned file: path, abs_path, size_bytes,
        sha1, status, reason, duplicate_of, row, split), read from ``images.parquet`` or, for runs
        made before it, ``images.jsonl``. Columnar: 1M+ rows cost tens of MB, not Python objects."""
        return self._cached("images", self._read_image_table)

    def _read_image_table(self):
        import pyarrow as pa
        import pyarrow.parquet as pq

        p = self.file(layout.IMAGES)
        try:
            if p.name == layout.IMAGES_LEGACY:
                lines = p.read_text(encoding="utf-8").splitlines()
                return records_table([json.loads(ln) for ln in lines if ln.strip()])
            return pq.read_table(p)
        except FileNotFoundError as exc:
            raise RunError(f"{p}: missing; the run is incomplete") from exc
        except (ValueError, OSError, pa.ArrowException, KeyError, TypeError) as exc:
            raise RunError(f"{p}: corrupt ({exc})") from exc

    def ok_rows_table(self):
        """The usable images' rows of :meth:`image_table`, sorted by feature row (row i = feature i)."""
        def load():
            import pyarrow.compute as pc

            table = self.image_table()
            ok = table.filter(pc.is_valid(table["row"]))
            return ok.take(pc.sort_indices(ok["row"]))
        return self._cached("ok_rows", load)

    def n_images(self) -> int:
        """Number of usable images N_ok (= feature rows)."""
        return self.ok_rows_table().num_rows

    def image_records(self, ok_only: bool = False) -> list[dict]:
        """Scanned files as dicts (path, status, reason, row, split ...); ``ok_only``: usable ones,
        by feature row. Builds one dict per row: on 1M+ row runs use :meth:`image_table`."""
        return (self.ok_rows_table() if ok_only else self.image_table()).to_pylist()

    def image_paths(self) -> list[str]:
        """Absolute paths of the usable images, aligned with feature rows."""
        return self._cached("paths", lambda: self.ok_rows_table().column("abs_path").to_pylist())

    def image_path(self, row: int) -> str:
        """Absolute path of feature row ``row``."""
        return str(self.ok_rows_table().column("abs_path")[int(row)])

    def upload_names(self) -> dict[str, str]:
        """For uploaded images: stored path (relative to ``uploads/``) -> the user's own file name
        (``uploads.json``; {} for a run read from a server folder or without a manifest)."""
        stamp = layout.file_stamp(layout.uploads_manifest(self.path))
        cached = self.cache.get("upload_names")
        if cached is not None and cached[0] == stamp:
            return cached[1]
        try:
            manifest = json.loads(layout.uploads_manifest(self.path).read_text(encoding="utf-8"))
            names = {str(f["path"]): str(f["display_name"]) for f in manifest.get("saved", [])
                     if f.get("path") and f.get("display_name")}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            names = {}
        self.cache["upload_names"] = (stamp, names)
        return names

    def image_names(self, rows: np.ndarray | list[int] | None = None) -> list[str]:
        """The single source of an image's display name, for feature ``rows`` (default: every row):
        the user's own file name for an upload (exactly as uploaded, e.g. ``X.JPEG``), else the path
        as scanned (relative to the images folder). Read from the columnar image table, so a few
        rows of a 1M-image run cost microseconds. User text: escape it wherever it is rendered."""
        table = self.ok_rows_table()
        if rows is not None:
            table = table.take(np.asarray(rows, dtype=np.int64).ravel())
        shown = self.upload_names()
        paths, absolute = table.column("path").to_pylist(), table.column("abs_path").to_pylist()
        return [shown.get(p, p or Path(a).name) for p, a in zip(paths, absolute)]

    def feature_matrix(self) -> np.ndarray:
        """float16 [N_ok, D] image features, memory-mapped (read-only; nothing loaded until used).
        Read row blocks and cast them (``np.asarray(m[a:b], np.float32)``) for arithmetic."""
        def load():
            p = self.file(layout.FEATURES)
            try:
                return np.load(p, mmap_mode="r", allow_pickle=False)
            except FileNotFoundError as exc:
                raise RunError(f"{p}: missing; the run is incomplete") from exc
            except (ValueError, OSError, EOFError) as exc:
                raise RunError(f"{p}: corrupt ({exc})") from exc
        return self._cached("feature_matrix", load)

    def features(self) -> np.ndarray:
        """float32 [N_ok, D] image features, all in RAM (4 N D bytes): for small runs and row
        subsets; chunked code reads :meth:`feature_matrix` instead."""
        return self._cached("features", lambda: np.asarray(self.feature_matrix(), dtype=np.float32))

    def cluster_ids(self) -> np.ndarray:
        """int64 [N_ok] cluster id per image, -1 = held out of mining."""
        return self._cached("clusters", lambda: self._load_npy(layout.CLUSTER_IDS, np.int64))

    def holdout_mask(self) -> np.ndarray:
        """bool [N_ok]: images held out of mining (used to calibrate the threshold)."""
        return self.cluster_ids() < 0

    def votes(self) -> tuple[np.ndarray, np.ndarray]:
        """(top_idx int64 [N_ok, k], top_sim float32 [N_ok, k]) zero-shot top-k over the corpus."""
        def load():
            p = self.file(layout.VOTES)
            try:
                with np.load(p, allow_pickle=False) as z:
                    return z["top_idx"].astype(np.int64), z["top_sim"].astype(np.float32)
            except FileNotFoundError as exc:
                raise RunError(f"{p}: missing; the run is incomplete") from exc
            except (ValueError, OSError, KeyError, EOFError) as exc:
                raise RunError(f"{p}: corrupt ({exc})") from exc
        return self._cached("votes", load)

    def cluster_stats(self) -> list[ClusterStats]:
        return self._cached("cluster_stats",
                            lambda: [ClusterStats.from_dict(d) for d in self._read_json(layout.CLUSTER_STATS)])

    def vocabulary_base(self) -> list[str]:
        """The corpus V (row i ↔ text embedding i)."""
        def load():
            p = self.file(layout.CORPUS)
            try:
                return p.read_text(encoding="utf-8").split("\n")[:-1]
            except FileNotFoundError as exc:
                raise RunError(f"{p}: missing; the run is incomplete") from exc
        return self._cached("vocab", load)

    def text_embeddings(self) -> np.ndarray:
        """float32 [M, D] text embeddings of the corpus (stored as float16)."""
        return self._cached("text_embeddings", lambda: self._load_npy(layout.TEXT_EMBEDDINGS, np.float32))

    # ------------------------------------------------------------------ writers (used by the pipeline)
    def write_images(self, records) -> None:
        """Store the per-image table (a list of dicts, or a pyarrow.Table with those columns) as
        ``images.parquet``; an older run's ``images.jsonl`` is removed once it is replaced."""
        import pyarrow.parquet as pq

        table = records if hasattr(records, "num_rows") else records_table(records)
        buf = io.BytesIO()
        pq.write_table(table, buf)
        atomic_write_bytes(self.path / layout.IMAGES, buf.getvalue())
        try:
            (self.path / layout.IMAGES_LEGACY).unlink()
        except FileNotFoundError:
            pass
        for key in ("images", "ok_rows", "paths"):
            self.cache.pop(key, None)

    def write_array(self, name: str, array: np.ndarray) -> None:
        atomic_save_npy(self.file(name), array)
        self.cache.clear()

    def write_features(self, features: np.ndarray) -> None:
        """Store [N_ok, D] features (as float16)."""
        with self.feature_writer(features.shape[0], features.shape[1]) as out:
            for lo in range(0, features.shape[0], FEATURE_BLOCK):
                out[lo:lo + FEATURE_BLOCK] = features[lo:lo + FEATURE_BLOCK]

    @contextlib.contextmanager
    def feature_writer(self, n_rows: int, dim: int):
        """``with run.feature_writer(N, D) as out: out[a:b] = block`` fills ``features.npy`` (float16)
        block by block through a memory map of a temporary file, flushed, fsynced and renamed over
        the old one on success (removed on error): never the whole matrix in RAM, never torn."""
        with atomic_memmap(self.file(layout.FEATURES), (n_rows, dim), np.float16) as out:
            yield out
        self.cache.clear()

    def write_cluster_ids(self, cluster_ids: np.ndarray) -> None:
        """Store [N_ok] cluster ids (as int32; -1 = held out)."""
        self.write_array(layout.CLUSTER_IDS, np.asarray(cluster_ids).astype(np.int32))

    def write_votes(self, top_idx: np.ndarray, top_sim: np.ndarray) -> None:
        atomic_save_npz(self.file(layout.VOTES), top_idx=top_idx.astype(np.int32), top_sim=top_sim.astype(np.float16))
        self.cache.pop("votes", None)

    def write_vocabulary(self, concepts: list[str] | tuple[str, ...], embeddings: np.ndarray) -> None:
        atomic_save_npy(self.file(layout.TEXT_EMBEDDINGS), embeddings.astype(np.float16))
        atomic_write_text(self.file(layout.CORPUS), "".join(c + "\n" for c in concepts))
        self.cache.clear()

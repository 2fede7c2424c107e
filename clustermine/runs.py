"""The run directory: the one durable state shared by the engine, the CLI and the web app.

Layout (format 1)::

    run.json              format, id, status, config, package versions, encoder fingerprint, summary
    images.jsonl          one line per scanned file: path, size, sha1, status, reason, row, split
    features.npy          float16 [N_ok, D]   image features, rows = images with status "ok"
    clusters.npy          int32 [N_ok]        cluster id per image (−1 = held out of mining)
    votes.npz             top_idx int32 [N_ok, k], top_sim float16 [N_ok, k]  zero-shot top-k
    clusters.json         per-cluster audit statistics (size, histogram, winner, purity, entropy)
    corpus.txt            the vocabulary V, one concept per line (row i = text embedding i)
    text_embeddings.npy   float16 [M, D]
    mined.json            the mined Y_pos with provenance (never edited)
    edits.jsonl           append-only log of concept edits (accept / reject / restore / add)
    concepts.json         current concept table (derived from mined.json + edits.jsonl)
    added/<id>.npy        text embedding of each user-added concept that is not in V
    progress.json         stage, done, total, eta while a job runs
    projections/          cached 2-D maps

Every write is atomic (see :mod:`clustermine.storage`); concept edits are serialised with a file
lock, so two sessions editing one run lose nothing.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import uuid
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock, Timeout

from .config import stored_tau
from .corpus import normalize_concept
from .errors import ClusterMineError, RunError
from .mining import ClusterStats, MinedConcept
from .metrics import threshold_at_tpr
from .scoring import Detector, WhatIfScorer
from .storage import atomic_save_npy, atomic_save_npz, atomic_write_json, atomic_write_jsonl

RUN_FORMAT = 1
STATUSES = ("created", "running", "done", "failed", "cancelled")
POSITIVE_STATUSES = ("mined", "accepted", "added")
EDIT_ACTIONS = ("accept", "reject", "restore", "add")
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


def concept_id(text: str) -> str:
    """Stable id of a concept: ``c-`` + 10 hex of sha1 of its normalised text."""
    return "c-" + hashlib.sha1(normalize_concept(text).encode("utf-8")).hexdigest()[:10]


@dataclass
class Concept:
    """One row of the concept table (Y_pos candidates and their review status)."""

    id: str
    text: str
    status: str  # mined | accepted | rejected | added
    source: str  # mined | user
    corpus_index: int | None  # row in corpus.txt, or None for user concepts outside V
    clusters: list[int] = field(default_factory=list)
    votes: int = 0
    purity: float | None = None
    examples: list[int] = field(default_factory=list)  # feature rows of example images
    updated: str | None = None
    user: str | None = None

    @property
    def is_positive(self) -> bool:
        return self.status in POSITIVE_STATUSES

    def to_dict(self) -> dict:
        return asdict(self)


class Run:
    """A run directory. Use :meth:`create` or :meth:`open`; arrays are loaded lazily and cached."""

    def __init__(self, path: str | os.PathLike, meta: dict) -> None:
        self.path = Path(path)
        self.meta = meta
        self._cache: dict[str, Any] = {}

    # ------------------------------------------------------------------ create / open
    @classmethod
    def create(cls, path: str | os.PathLike, config: dict, *, overwrite: bool = False) -> "Run":
        """Start a new run in ``path`` (created if missing). Refuses a non-empty folder that is not
        an unfinished run with the same config, unless ``overwrite``."""
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise RunError(f"{path}: exists and is not a folder")
        if path.is_dir() and any(path.iterdir()):
            if (path / "run.json").is_file():
                run = cls.open(path, require_complete=False)
                if overwrite:  # explicit: the old run is moved aside, never deleted
                    backup = path.with_name(f"{path.name}.replaced-{_dt.datetime.now():%Y%m%d-%H%M%S}")
                    path.rename(backup)
                elif run.status == "done":
                    raise RunError(f"{path}: already holds a finished run; choose a new --out folder or pass --force")
                elif _comparable(run.config) != _comparable(config):
                    raise RunError(f"{path}: holds an unfinished run with different settings; use a new --out "
                                   "folder, the same settings to resume, or --force to start over")
                else:  # resume an unfinished run with identical settings
                    run._update_meta(status="created", error=None)
                    return run
            elif not overwrite:
                raise RunError(f"{path}: folder is not empty and is not a ClusterMine run; choose another --out")
        path.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": RUN_FORMAT, "run_id": path.name or uuid.uuid4().hex[:8], "created": now_iso(),
            "updated": now_iso(), "status": "created", "config": config, "versions": package_versions(),
            "encoder": None, "summary": {}, "error": None, "stages_done": [],
        }
        atomic_write_json(path / "run.json", meta)
        return cls(path, meta)

    @classmethod
    def open(cls, path: str | os.PathLike, *, require_complete: bool = True) -> "Run":
        """Open an existing run; RunError naming the bad file if it is missing, partial or corrupt."""
        path = Path(path)
        meta_path = path / "run.json"
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
            raise RunError(f"{self.path / 'run.json'}: run is not finished (status {self.status!r}); "
                           "resume it with `clustermine resume RUN_DIR`")
        for name in ("images.jsonl", "features.npy", "clusters.npy", "votes.npz", "clusters.json",
                     "corpus.txt", "text_embeddings.npy", "mined.json"):
            p = self.path / name
            if not p.is_file() or p.stat().st_size == 0:
                raise RunError(f"{p}: missing or empty; the run is incomplete")
        n = len(self.image_records(ok_only=True))
        for name, loader in (("features.npy", self.features), ("clusters.npy", self.cluster_ids)):
            arr = loader()
            if arr.shape[0] != n:
                raise RunError(f"{self.path / name}: has {arr.shape[0]} rows, images.jsonl lists {n} usable images")
        if self.text_embeddings().shape[0] != len(self.vocabulary_base()):
            raise RunError(f"{self.path / 'text_embeddings.npy'}: row count differs from corpus.txt")

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
    def tau(self) -> float:
        return stored_tau(self.config)

    def reload_meta(self) -> dict:
        try:
            self.meta = json.loads((self.path / "run.json").read_text(encoding="utf-8"))
        except (ValueError, OSError) as exc:
            raise RunError(f"{self.path / 'run.json'}: corrupt ({exc})") from exc
        return self.meta

    def _update_meta(self, **changes: Any) -> None:
        with self._lock("meta"):
            self.reload_meta()
            self.meta.update(changes)
            self.meta["updated"] = now_iso()
            atomic_write_json(self.path / "run.json", self.meta)

    def set_status(self, status: str, error: str | None = None) -> None:
        assert status in STATUSES
        self._update_meta(status=status, error=error)

    def mark_stage(self, stage: str, **meta_changes: Any) -> None:
        done = list(self.meta.get("stages_done", []))
        if stage not in done:
            done.append(stage)
        self._update_meta(stages_done=done, **meta_changes)

    def _lock(self, name: str, timeout: float = 30.0) -> FileLock:
        return FileLock(str(self.path / f".{name}.lock"), timeout=timeout)

    # ------------------------------------------------------------------ progress
    def write_progress(self, progress: dict) -> None:
        atomic_write_json(self.path / "progress.json", progress)

    def progress(self) -> dict | None:
        p = self.path / "progress.json"
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def request_cancel(self) -> None:
        (self.path / "cancel.requested").write_text(now_iso(), encoding="utf-8")

    def cancel_requested(self) -> bool:
        return (self.path / "cancel.requested").exists()

    def clear_cancel(self) -> None:
        try:
            (self.path / "cancel.requested").unlink()
        except FileNotFoundError:
            pass

    # ------------------------------------------------------------------ arrays and tables
    def _cached(self, key: str, loader):
        if key not in self._cache:
            self._cache[key] = loader()
        return self._cache[key]

    def _load_npy(self, name: str, dtype=None) -> np.ndarray:
        p = self.path / name
        try:
            arr = np.load(p, allow_pickle=False)
        except FileNotFoundError as exc:
            raise RunError(f"{p}: missing; the run is incomplete") from exc
        except (ValueError, OSError, EOFError) as exc:
            raise RunError(f"{p}: corrupt ({exc})") from exc
        return arr.astype(dtype) if dtype is not None else arr

    def image_records(self, ok_only: bool = False) -> list[dict]:
        """Scanned files (dicts with path, status, reason, row, split ...); ``ok_only``: usable ones."""
        def load():
            p = self.path / "images.jsonl"
            try:
                lines = p.read_text(encoding="utf-8").splitlines()
                return [json.loads(ln) for ln in lines if ln.strip()]
            except FileNotFoundError as exc:
                raise RunError(f"{p}: missing; the run is incomplete") from exc
            except (ValueError, OSError) as exc:
                raise RunError(f"{p}: corrupt ({exc})") from exc
        records = self._cached("images", load)
        return [r for r in records if r.get("row") is not None] if ok_only else records

    def image_paths(self) -> list[str]:
        """Absolute paths of the usable images, aligned with feature rows."""
        rows = sorted(self.image_records(ok_only=True), key=lambda r: r["row"])
        return [r["abs_path"] for r in rows]

    def features(self) -> np.ndarray:
        return self._cached("features", lambda: self._load_npy("features.npy", np.float32))

    def cluster_ids(self) -> np.ndarray:
        return self._cached("clusters", lambda: self._load_npy("clusters.npy", np.int64))

    def holdout_mask(self) -> np.ndarray:
        """bool [N_ok]: images held out of mining (used to calibrate the threshold)."""
        return self.cluster_ids() < 0

    def votes(self) -> tuple[np.ndarray, np.ndarray]:
        def load():
            p = self.path / "votes.npz"
            try:
                with np.load(p, allow_pickle=False) as z:
                    return z["top_idx"].astype(np.int64), z["top_sim"].astype(np.float32)
            except FileNotFoundError as exc:
                raise RunError(f"{p}: missing; the run is incomplete") from exc
            except (ValueError, OSError, KeyError, EOFError) as exc:
                raise RunError(f"{p}: corrupt ({exc})") from exc
        return self._cached("votes", load)

    def cluster_stats(self) -> list[ClusterStats]:
        return self._cached("cluster_stats", lambda: [ClusterStats.from_dict(d) for d in self._read_json("clusters.json")])

    def mined_concepts(self) -> list[MinedConcept]:
        return self._cached("mined", lambda: [MinedConcept(**d) for d in self._read_json("mined.json")])

    def vocabulary_base(self) -> list[str]:
        """The corpus V (row i ↔ text embedding i)."""
        def load():
            p = self.path / "corpus.txt"
            try:
                return p.read_text(encoding="utf-8").split("\n")[:-1]
            except FileNotFoundError as exc:
                raise RunError(f"{p}: missing; the run is incomplete") from exc
        return self._cached("vocab", load)

    def text_embeddings(self) -> np.ndarray:
        return self._cached("text_embeddings", lambda: self._load_npy("text_embeddings.npy", np.float32))

    def _read_json(self, name: str) -> Any:
        p = self.path / name
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise RunError(f"{p}: missing; the run is incomplete") from exc
        except (ValueError, OSError) as exc:
            raise RunError(f"{p}: corrupt ({exc})") from exc

    # ------------------------------------------------------------------ writers (used by pipeline)
    def write_images(self, records: list[dict]) -> None:
        atomic_write_jsonl(self.path / "images.jsonl", records)
        self._cache.pop("images", None)

    def write_array(self, name: str, array: np.ndarray) -> None:
        atomic_save_npy(self.path / name, array)
        self._cache.clear()

    def write_votes(self, top_idx: np.ndarray, top_sim: np.ndarray) -> None:
        atomic_save_npz(self.path / "votes.npz", top_idx=top_idx.astype(np.int32), top_sim=top_sim.astype(np.float16))
        self._cache.pop("votes", None)

    def write_vocabulary(self, concepts: list[str] | tuple[str, ...], embeddings: np.ndarray) -> None:
        atomic_save_npy(self.path / "text_embeddings.npy", embeddings.astype(np.float16))
        from .storage import atomic_write_text
        atomic_write_text(self.path / "corpus.txt", "".join(c + "\n" for c in concepts))
        self._cache.clear()

    def write_mining(self, stats: list[ClusterStats], mined: list[MinedConcept]) -> None:
        atomic_write_json(self.path / "clusters.json", [s.to_dict() for s in stats])
        atomic_write_json(self.path / "mined.json", [m.to_dict() for m in mined])
        self._cache.clear()
        with self._lock("edits"):
            self._write_concepts(self._replay(self._read_edits()))

    # ------------------------------------------------------------------ concepts and edits
    def _read_edits(self) -> list[dict]:
        p = self.path / "edits.jsonl"
        if not p.exists():
            return []
        out = []
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except ValueError as exc:
                raise RunError(f"{p}: line {n} is corrupt ({exc})") from exc
        return out

    def edits(self) -> list[dict]:
        """The concept edit log, oldest first."""
        return self._read_edits()

    def _vocab_index(self) -> dict[str, int]:
        return self._cached("vocab_index", lambda: {c: i for i, c in enumerate(self.vocabulary_base())})

    def _replay(self, edits: list[dict]) -> list[Concept]:
        vocab_index = self._vocab_index()
        table: dict[str, Concept] = {}
        for m in self.mined_concepts():
            cid = concept_id(m.text)
            table[cid] = Concept(cid, m.text, "mined", "mined", m.index, list(m.clusters), m.votes, m.purity,
                                 list(m.examples))
        for e in edits:
            cid, action = e["concept_id"], e["action"]
            if action == "add" and cid not in table:
                table[cid] = Concept(cid, e["text"], "added", "user", vocab_index.get(e["text"]))
            c = table.get(cid)
            if c is None:
                continue
            if action == "add":
                c.status = "added" if c.source == "user" else "accepted"
            elif action == "accept":
                c.status = "accepted" if c.source == "mined" else "added"
            elif action == "reject":
                c.status = "rejected"
            elif action == "restore":
                c.status = "mined" if c.source == "mined" else "added"
            c.updated, c.user = e.get("ts"), e.get("user")
        return list(table.values())

    def concepts(self) -> list[Concept]:
        """The current concept table: mined concepts and user additions with their status."""
        return self._replay(self._read_edits())

    def _write_concepts(self, concepts: list[Concept]) -> None:
        atomic_write_json(self.path / "concepts.json", [c.to_dict() for c in concepts])

    def find_concept(self, key: str, concepts: list[Concept] | None = None) -> Concept | None:
        """Look a concept up by id or by (normalised) text."""
        concepts = concepts if concepts is not None else self.concepts()
        norm = normalize_concept(key)
        for c in concepts:
            if c.id == key or c.text == norm:
                return c
        return None

    def edit_concept(self, action: str, key: str, *, encoder=None, user: str | None = None) -> Concept:
        """Apply one edit (accept / reject / restore by id or text; add by text) and log it.

        Takes effect at once: :meth:`concepts`, :meth:`positive_concepts` and :meth:`detector`
        reflect it. ``add`` of a concept outside the corpus embeds it with ``encoder`` (loaded from
        the run's encoder spec when not given). Safe against concurrent editors (file lock).
        """
        if action not in EDIT_ACTIONS:
            raise ClusterMineError(f"unknown concept action {action!r}; use one of {', '.join(EDIT_ACTIONS)}")
        if self.status != "done":
            raise RunError(f"{self.path}: concepts can be edited once mining has finished (status {self.status!r})")
        text = normalize_concept(key)
        if action == "add" and not text:
            raise ClusterMineError("cannot add an empty concept")
        if action == "add" and len(text) > 200:
            raise ClusterMineError("concept text is too long (200 characters at most)")
        if action == "add" and text not in self._vocab_index():
            self._ensure_added_embedding(text, encoder)
        try:
            with self._lock("edits"):
                edits = self._read_edits()
                concepts = self._replay(edits)
                if action == "add":
                    cid = concept_id(text)
                else:
                    found = self.find_concept(key, concepts)
                    if found is None:
                        raise ClusterMineError(f"no concept {key!r} in this run; `add` it first")
                    cid, text = found.id, found.text
                entry = {"seq": len(edits) + 1, "ts": now_iso(), "user": user or os.environ.get("USER") or "unknown",
                         "action": action, "concept_id": cid, "text": text}
                edits.append(entry)
                atomic_write_jsonl(self.path / "edits.jsonl", edits)
                concepts = self._replay(edits)
                self._write_concepts(concepts)
        except Timeout as exc:
            raise RunError(f"{self.path}: another session holds the concept lock; try again") from exc
        self._cache.pop("added", None)
        return next(c for c in concepts if c.id == cid)

    def _ensure_added_embedding(self, text: str, encoder) -> None:
        p = self.path / "added" / f"{concept_id(text)}.npy"
        if p.is_file():
            return
        if encoder is None:
            from .encoders import load_encoder

            encoder = load_encoder(self.meta["encoder"]["spec"])
        if self.meta.get("encoder") and encoder.fingerprint_id != self.meta["encoder"]["fingerprint_id"]:
            raise ClusterMineError("the given encoder is not the one this run was mined with")
        from .corpus import embed_concepts

        emb = embed_concepts(encoder, [text], self.config.get("template") or encoder.text_template)
        atomic_save_npy(p, emb[0].astype(np.float16))

    def _added_embeddings(self, texts: list[str]) -> np.ndarray:
        rows = []
        for t in texts:
            p = self.path / "added" / f"{concept_id(t)}.npy"
            try:
                rows.append(np.load(p, allow_pickle=False).astype(np.float32))
            except (OSError, ValueError) as exc:
                raise RunError(f"{p}: embedding of added concept {t!r} is missing or corrupt") from exc
        dim = self.text_embeddings().shape[1]
        return np.stack(rows) if rows else np.zeros((0, dim), dtype=np.float32)

    def vocabulary(self, concepts: list[Concept] | None = None) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Full vocabulary (corpus + user concepts outside it), the extra embeddings [E, D], and the
        vocabulary rows of the positive concepts."""
        concepts = concepts if concepts is not None else self.concepts()
        base = self.vocabulary_base()
        extra_texts = [c.text for c in concepts if c.corpus_index is None]
        extra_emb = self._added_embeddings(extra_texts)
        extra_row = {t: len(base) + j for j, t in enumerate(extra_texts)}
        pos_rows = np.array(sorted({c.corpus_index if c.corpus_index is not None else extra_row[c.text]
                                    for c in concepts if c.is_positive}), dtype=np.int64)
        return base + extra_texts, extra_emb, pos_rows

    def positive_concepts(self) -> list[str]:
        """Y_pos now (mined, accepted and added concepts; rejected ones excluded)."""
        return [c.text for c in self.concepts() if c.is_positive]

    def detector(self, *, calibrate: bool = True, tpr: float = 0.95) -> Detector:
        """A Detector reflecting the current concept edits (threshold calibrated on held-out images)."""
        vocab, extra_emb, pos_rows = self.vocabulary()
        emb = self.text_embeddings()
        if len(extra_emb):
            emb = np.concatenate([emb, extra_emb])
        enc = self.meta.get("encoder") or {}
        det = Detector(concepts=vocab, text_embeddings=emb, positive_idx=pos_rows, tau=self.tau,
                       encoder_spec=enc.get("spec", ""), encoder_fingerprint=enc.get("fingerprint", {}),
                       encoder_fingerprint_id=enc.get("fingerprint_id", ""),
                       template=self.config.get("template") or "{}")
        if calibrate and len(pos_rows):
            # Same numbers as det.calibrate(held-out features), but the corpus pass is cached.
            scorer = self._cached("holdout_scorer", self.what_if_scorer)
            held_scores = scorer.log_scores(pos_rows, extra_emb)
            det.threshold = threshold_at_tpr(held_scores, tpr)
            det.threshold_rule = f"log-score at {tpr:.0%} TPR on {held_scores.size} held-out ID images"
            if not self.holdout_mask().any():  # tiny runs hold nothing out
                det.threshold_rule += " (no held-out images: mining images used)"
        return det

    def what_if_scorer(self, features: np.ndarray | None = None) -> WhatIfScorer:
        """A :class:`WhatIfScorer` over ``features`` (default: the held-out ID images)."""
        if features is None:
            features = self.features()[self.holdout_mask()]
            if len(features) == 0:
                features = self.features()
        return WhatIfScorer(features, self.text_embeddings(), self.tau)

    def export_detector(self, folder: str | os.PathLike | None = None) -> Path:
        folder = Path(folder) if folder else self.path / "detector"
        return self.detector().save(folder)


def _comparable(config: dict) -> dict:
    return {k: v for k, v in (config or {}).items() if k not in ("created", "user")}


def list_runs(root: str | os.PathLike) -> list[dict]:
    """Runs directly under ``root``, newest first: id, path, status, created, summary."""
    root = Path(root)
    out = []
    if not root.is_dir():
        return out
    for p in root.iterdir():
        meta_path = p / "run.json"
        if not meta_path.is_file():
            continue
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (ValueError, OSError):
            out.append({"run_id": p.name, "path": str(p), "status": "corrupt", "created": "", "summary": {}})
            continue
        out.append({"run_id": meta.get("run_id", p.name), "path": str(p), "status": meta.get("status", "?"),
                    "created": meta.get("created", ""), "summary": meta.get("summary", {}),
                    "config": meta.get("config", {})})
    return sorted(out, key=lambda r: r["created"], reverse=True)


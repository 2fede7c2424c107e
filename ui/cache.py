"""Process-wide caches (st.cache_resource): the encoder, opened runs, thumbnails.

- The encoder is loaded once per server process and per spec, lazily (never at import time), and
  wrapped so that forward passes from concurrent sessions are serialised by a lock.
- A run is opened once per (path, mtime of ``run.json``): status changes give a fresh object,
  concept edits do not (``Run.concepts()`` re-reads ``edits.jsonl``), so large arrays such as the
  corpus text embeddings are held once. Artefacts that depend on the edits are keyed on
  :func:`edits_key` (the mtime, size and inode of ``edits.jsonl``). The run list
  (:func:`list_runs_light`) is the engine's JSON-only ``clustermine.store.listing.list_runs``.
"""

from __future__ import annotations

import io
import os
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import streamlit as st

from clustermine.store import layout
from clustermine.store.listing import list_runs as list_runs_light  # JSON only: no numeric imports

if TYPE_CHECKING:  # clustermine.store pulls in scikit-learn: imported lazily, off the first page's path
    from clustermine.store import Run


# ------------------------------------------------------------------------------------ encoder
class LockedEncoder:
    """An encoder whose forward passes (images and texts) hold one lock: one model, many sessions."""

    def __init__(self, encoder) -> None:
        self._encoder = encoder
        self._lock = threading.Lock()

    def encode_images(self, *args, **kwargs):
        with self._lock:
            return self._encoder.encode_images(*args, **kwargs)

    def encode_texts(self, *args, **kwargs):
        with self._lock:
            return self._encoder.encode_texts(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._encoder, name)


@st.cache_resource(show_spinner="Loading the encoder (once per server process)…", max_entries=3)
def get_encoder(spec: str, device: str = "auto") -> LockedEncoder:
    """The (locked) encoder for ``spec``; raises EncoderError for bad specs (not cached)."""
    from clustermine.method.encoders import load_encoder

    return LockedEncoder(load_encoder(spec, device=device))


class LazyEncoder:
    """Stands in for the run's encoder and loads it only if an attribute is actually used (e.g. by
    ``concept_edits.edit_concept(run, "add", ...)`` for a concept outside the corpus)."""

    def __init__(self, spec: str, device: str = "auto") -> None:
        self._spec, self._device = spec, device

    def __getattr__(self, name):
        return getattr(get_encoder(self._spec, self._device), name)


def run_encoder_spec(run: Run) -> str:
    return run.encoder_spec


def system_device() -> str:
    """The device ``auto`` resolves to, without importing torch if it is not loaded yet."""
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            if torch.cuda.is_available():
                return "cuda"
        except Exception:
            pass
        return "cpu"
    if os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/nvidia0"):
        return "cuda"
    return "cpu"


@st.cache_resource(show_spinner=False)
def resolved_device(device: str = "auto") -> str:
    """``clustermine.method.encoders.resolve_device`` (imports torch: call it where the user chooses)."""
    from clustermine.method.encoders.base import resolve_device

    return resolve_device(device)


# ------------------------------------------------------------------------------------ runs
def _stat_key(p: Path) -> tuple[int, int, int]:
    """(mtime_ns, size, inode) of ``p``; zeros when absent."""
    return layout.file_stamp(p)


@st.cache_resource(max_entries=8, show_spinner=False)
def _open_run(path: str, meta_key: tuple[int, int]) -> "Run":
    from clustermine.store import Run

    return Run.open(path, require_complete=False)


def load_run(path: str | os.PathLike) -> Run:
    """The run at ``path`` (cached per run.json version). Raises RunError with the bad file named."""
    path = Path(path)
    return _open_run(str(path), _stat_key(layout.meta_path(path)))


def edits_key(run: Run) -> tuple[int, int, int]:
    """Changes with every concept edit (stamp of edits.jsonl)."""
    return _stat_key(run.file(layout.EDITS))


@st.cache_resource(max_entries=256, show_spinner=False)
def _checked(path: str, stamp: tuple, _run: Run) -> bool:
    _run.check_complete()  # a RunError is raised, not cached: a fixed run is checked again
    return True


def check_complete(run: Run) -> None:
    """``run.check_complete()`` once per version of its files (RunError names a missing file)."""
    _checked(str(run.path), run.files_stamp(layout.REQUIRED_FILES), run)


# ------------------------------------------------------------------------------------ thumbnails
@st.cache_data(max_entries=5000, show_spinner=False)
def thumbnail(path: str, stamp: tuple[int, int, int], size: int = 192) -> bytes | None:
    """JPEG bytes of a ``size``-pixel thumbnail (None when the file cannot be decoded)."""
    from clustermine.core.errors import ImageError
    from clustermine.method.images import load_rgb

    try:
        img = load_rgb(path)
    except ImageError:
        return None
    img.thumbnail((size, size))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=82)
    return buf.getvalue()


def thumb(path: str, size: int = 192) -> bytes | None:
    return thumbnail(str(path), _stat_key(Path(path)), size)


_WARM_STARTED = False


def warm_imports() -> None:
    """Import the heavy modules the other pages need in a background thread (once per process),
    so the first page is drawn without waiting for them and the next ones find them loaded."""
    global _WARM_STARTED
    if _WARM_STARTED:
        return
    _WARM_STARTED = True

    def work() -> None:
        import importlib

        for name in ("clustermine.store", "clustermine.workflows.pipeline", "clustermine.workflows.export", "pandas",
                     "plotly.graph_objects", "ui.scores", "ui.charts", "PIL.Image"):
            try:
                importlib.import_module(name)
            except Exception:  # the page that needs it will report the problem
                pass

    threading.Thread(target=work, name="warm-imports", daemon=True).start()

"""The encoder interface shared by the offline ConSE encoder and open_clip models.

An :class:`Encoder` maps images and texts into one embedding space (rows L2-normalised, float32).
:meth:`Encoder.encode_images` is the batched, fault-tolerant path used on folders: threads or spawn
worker processes (:mod:`clustermine.method.encoders.decode`) decode and preprocess the next batches while
the model runs on the current one, unreadable
files are skipped and reported, and a ``progress`` / ``cancel`` pair lets front ends follow and
stop long jobs.
"""

from __future__ import annotations

import abc
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from clustermine.method.encoders import decode
from clustermine.method.encoders.decode import GpuPreprocess
from clustermine.core.errors import CancelledError, EncoderError, ImageError
from clustermine.method.images import DEFAULT_MAX_PIXELS, load_rgb

ProgressFn = Callable[[int, int], None]
"""``progress(done, total)``: called after each batch with counts of items processed so far."""

CancelFn = Callable[[], bool]
"""``cancel()``: returns True when the user asked to stop."""


def resolve_device(device: str = "auto") -> str:
    """``"auto"`` -> ``"cuda"`` if available, else ``"mps"``, else ``"cpu"``.

    Explicit values (``cpu``, ``cuda``, ``cuda:N``, ``mps``) are checked against the machine;
    an unavailable or unknown device raises EncoderError.
    """
    name = (device or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if _mps_available():
            return "mps"
        return "cpu"
    if name == "cpu":
        return "cpu"
    if name == "mps":
        if not _mps_available():
            raise EncoderError("device 'mps' was requested but Apple MPS is not available here")
        return "mps"
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise EncoderError(f"device {device!r} was requested but CUDA is not available here")
        if name != "cuda":
            index = name.split(":", 1)[1]
            if not index.isdigit() or int(index) >= torch.cuda.device_count():
                raise EncoderError(
                    f"device {device!r} does not exist ({torch.cuda.device_count()} CUDA device(s))"
                )
        return name
    raise EncoderError(f"unknown device {device!r}: use auto, cpu, cuda, cuda:N or mps")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def fingerprint_hash(fingerprint: dict[str, Any]) -> str:
    """A short (16 hex digits) stable hash of a JSON-serialisable fingerprint dict."""
    blob = json.dumps(fingerprint, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


@dataclass
class EncodeResult:
    """Output of :meth:`Encoder.encode_images`.

    ``features``: float32 [n_ok, D], rows in input order of the files that decoded;
    ``ok``: one bool per input path; ``errors``: path -> reason for every skipped file.
    """

    features: np.ndarray
    ok: list[bool]
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def n_ok(self) -> int:
        """Number of encoded images (rows of ``features``)."""
        return int(self.features.shape[0])


class Encoder(abc.ABC):
    """An image + text encoder into one L2-normalised embedding space.

    Subclasses set ``spec``, ``dim``, ``device``, ``text_template`` and implement
    :meth:`preprocess`, :meth:`_embed_images`, :meth:`_embed_texts` and :attr:`fingerprint`.
    """

    spec: str
    dim: int
    device: str
    text_template: str = "{}"

    # ---- identity -----------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def fingerprint(self) -> dict[str, Any]:
        """What determines the features: kind, model, weights identity, preprocessing, dim."""

    @property
    def fingerprint_id(self) -> str:
        """Short stable hex hash of :attr:`fingerprint` (equal ids => comparable features)."""
        return fingerprint_hash(self.fingerprint)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(spec={self.spec!r}, device={self.device!r}, dim={self.dim})"

    # ---- model hooks --------------------------------------------------------------------
    @abc.abstractmethod
    def preprocess(self, img: Image.Image) -> torch.Tensor:
        """RGB PIL image -> float tensor [3, H, W] ready for :meth:`encode_batch`."""

    @abc.abstractmethod
    def _embed_images(self, x: torch.Tensor) -> torch.Tensor:
        """Batch [B, 3, H, W] on ``self.device`` -> raw (unnormalised) embeddings [B, D]."""

    @abc.abstractmethod
    def _embed_texts(self, texts: list[str]) -> torch.Tensor | np.ndarray:
        """One chunk of texts -> raw embeddings [M, D]."""

    # ---- public encoding API ------------------------------------------------------------
    def _autocast(self) -> Any:
        if self.device.startswith("cuda"):
            return torch.autocast(device_type="cuda", dtype=torch.float16)
        return nullcontext()

    def encode_batch(self, x: torch.Tensor) -> np.ndarray:
        """Preprocessed batch [B, 3, H, W] -> float32 [B, D], rows L2-normalised."""
        if x.ndim != 4:
            raise ValueError(f"expected a batch [B, 3, H, W], got shape {tuple(x.shape)}")
        if x.shape[0] == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        with torch.inference_mode(), self._autocast():
            out = self._embed_images(x.to(self.device, non_blocking=True))
        return F.normalize(out.float(), dim=-1).cpu().numpy().astype(np.float32, copy=False)

    def encode_texts(
        self,
        texts: Sequence[str],
        *,
        batch_size: int = 256,
        progress: ProgressFn | None = None,
    ) -> np.ndarray:
        """Texts (used verbatim; apply :attr:`text_template` first if wanted) -> float32 [M, D],
        rows L2-normalised. ``progress(done, total)`` is called after each chunk."""
        items = [str(t) for t in texts]
        chunks: list[np.ndarray] = []
        for start in range(0, len(items), max(1, batch_size)):
            part = items[start : start + max(1, batch_size)]
            with torch.inference_mode(), self._autocast():
                emb = self._embed_texts(part)
            emb_t = torch.as_tensor(emb).float()
            chunks.append(F.normalize(emb_t, dim=-1).cpu().numpy().astype(np.float32, copy=False))
            if progress is not None:
                progress(start + len(part), len(items))
        if not chunks:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.concatenate(chunks, axis=0)

    def image_transform(self) -> Callable[[Image.Image], torch.Tensor]:
        """The picklable callable RGB image -> [3, H, W] that worker processes apply.

        Subclasses return a small object (not the encoder with its weights); the default, the bound
        :meth:`preprocess`, pickles the whole encoder. Unpicklable transforms fall back to threads.
        """
        return self.preprocess

    def gpu_preprocess(self) -> GpuPreprocess | None:
        """The GPU equivalent of :meth:`preprocess` for nvJPEG-decoded images, or None (CPU only)."""
        return None

    def load_and_preprocess(self, path: str, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> torch.Tensor:
        """Decode one file and preprocess it -> [3, H, W]; raises ImageError on bad files."""
        img = load_rgb(path, max_pixels=max_pixels)
        try:
            return self.preprocess(img)
        except (ValueError, RuntimeError, OSError) as exc:
            raise ImageError(path, f"preprocessing failed ({exc})") from None

    def encode_images(
        self,
        paths: Sequence[str | os.PathLike[str]],
        *,
        batch_size: int = 32,
        num_workers: int | str = "auto",
        worker_kind: str = "auto",
        gpu_decode: bool | str = False,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        progress: ProgressFn | None = None,
        cancel: CancelFn | None = None,
    ) -> EncodeResult:
        """Encode image files in batches, skipping (and reporting) files that cannot be used.

        Decoding + preprocessing runs ahead of the forward pass (see :mod:`clustermine.method.encoders.decode`):
        ``worker_kind`` ``"thread"``, ``"process"`` (spawn) or ``"auto"`` (processes for large jobs on
        CUDA, see ``decode.resolve_workers``); ``num_workers`` an int (0 = decode in this thread) or
        ``"auto"``. ``gpu_decode`` (``True``, or ``"auto"`` = when the device is CUDA and the process
        path runs; off by default because its features differ from the PIL path's by interpolation
        rounding and the feature cache's fingerprint does not record how images were decoded):
        JPEGs are decoded by nvJPEG and preprocessed on the GPU. Features, order and skip reasons do
        not depend on the worker kind (GPU decoding: up to interpolation rounding).
        ``progress(done, total)`` is called after each batch; ``cancel()`` returning True raises
        CancelledError (worker threads and processes are stopped before it propagates).
        """
        parts = list(self.iter_encode(paths, chunk_size=max(1, len(paths)), batch_size=batch_size,
                                      num_workers=num_workers, worker_kind=worker_kind, gpu_decode=gpu_decode,
                                      max_pixels=max_pixels, progress=progress, cancel=cancel))
        if not parts:
            return EncodeResult(features=np.zeros((0, self.dim), np.float32), ok=[], errors={})
        return parts[0][1]

    def iter_encode(
        self,
        paths: Sequence[str | os.PathLike[str]],
        *,
        chunk_size: int = 256,
        batch_size: int = 32,
        num_workers: int | str = "auto",
        worker_kind: str = "auto",
        gpu_decode: bool | str = False,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        progress: ProgressFn | None = None,
        cancel: CancelFn | None = None,
    ) -> Iterator[tuple[int, EncodeResult]]:
        """Like :meth:`encode_images`, yielding ``(start, result)`` for each ``chunk_size`` slice of
        ``paths`` (``result`` covers ``paths[start:start + chunk_size]``) as soon as it is encoded.

        One set of decode workers serves the whole job (worker processes start once, not per chunk),
        so a caller that stores features chunk by chunk (a feature cache, shards) keeps the decode
        pipeline full. ``progress(done, total)`` counts over all of ``paths``. Closing the generator
        early stops the workers.
        """
        names = [os.fspath(p) for p in paths]
        batch_size, chunk_size = max(1, int(batch_size)), max(1, int(chunk_size))
        chunks = [(c, min(c + chunk_size, len(names))) for c in range(0, len(names), chunk_size)]
        batches = [list(range(i, min(i + batch_size, end))) for c, end in chunks for i in range(c, end, batch_size)]
        kind, workers = decode.resolve_workers(num_workers, worker_kind, len(names), self.device)
        transform = self.image_transform()
        if kind == "process" and not decode.picklable(transform):
            kind, workers = "thread", decode.AUTO_THREADS
        prep = self.gpu_preprocess() if kind == "process" and gpu_decode else None
        if prep is not None and not decode.gpu_jpeg_available(self.device):
            if gpu_decode is True:
                raise EncoderError(f"gpu_decode=True needs a CUDA device and torchvision nvJPEG (device {self.device!r})")
            prep = None
        stream = decode.iter_batches(names, batches, transform, kind=kind, workers=workers,
                                     max_pixels=max_pixels, gpu_jpeg=prep is not None)
        done = 0
        try:
            batch_iter = zip(batches, stream)
            for start, end in chunks:
                ok = [False] * (end - start)
                errors: dict[str, str] = {}
                feats: list[np.ndarray] = []
                while done < end:
                    batch, dec = next(batch_iter)
                    if cancel is not None and cancel():
                        raise CancelledError(f"encoding cancelled after {done} of {len(names)} images")
                    if prep is not None:
                        dec = decode.finish_gpu_batch(dec, prep, transform, self.device, max_pixels)
                    for idx, reason in zip(batch, dec.reasons):
                        if reason is None:
                            ok[idx - start] = True
                        else:
                            errors[names[idx]] = reason
                    if dec.tensor is not None:
                        feats.append(self.encode_batch(dec.tensor))
                    done += len(batch)
                    if progress is not None:
                        progress(done, len(names))
                features = np.concatenate(feats, axis=0) if feats else np.zeros((0, self.dim), np.float32)
                yield start, EncodeResult(features=features, ok=ok, errors=errors)
        finally:
            stream.close()

"""Decoding + preprocessing of image files for :meth:`Encoder.encode_images`, off the model's thread.

Three ways to feed the model, all giving the same tensors and the same skip reasons in the same order:

- ``inline``: decode in the calling thread (``num_workers=0``);
- ``thread``: a thread pool decodes up to two batches ahead (PIL releases the GIL only in parts of the
  decoder, so threads stop scaling at ~2 workers);
- ``process``: a ``torch.utils.data.DataLoader`` with ``spawn`` worker processes, each decoding whole
  batches, two batches ahead per worker. Spawning a worker imports torch (seconds), so the first batch
  is decoded in the calling thread while the workers start. ``"auto"`` picks processes only where they
  pay: a CUDA model, >= :data:`PROCESS_MIN_IMAGES` images, >= :data:`PROCESS_MIN_CPUS` cores.

On CUDA the process workers can hand over JPEG bytes instead of pixels (``gpu_jpeg``): the batch is
decoded by nvJPEG (``torchvision.io.decode_jpeg(device="cuda")``) and resized / cropped / normalised on
the GPU by :class:`GpuPreprocess`. Files nvJPEG cannot take (not a baseline 8-bit RGB/grey JPEG, an EXIF
rotation, a decode failure) go through the CPU path, so skips and reasons stay the same.
"""

from __future__ import annotations

import io
import os
import pickle
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Union

import torch

from clustermine.core.errors import ImageError
from clustermine.method.images import load_rgb

PROCESS_MIN_IMAGES = 2048
"""``worker_kind="auto"`` starts worker processes only for jobs of at least this many images, on CUDA.

Spawning workers costs seconds (each imports torch): 7-10 s for one worker on a loaded 2-core machine
(``bench/bench_encode_pipeline.py``: 128 images 0.40 x the thread path's speed, 512 images 0.80 x).
On a GPU nothing hides that start-up, so processes pay off once threads (~590 img/s for ViT-B-32,
BENCHMARKS "GPU check") would need about as long as the start-up: ~3 s x 590 img/s ~ 1,800 images.
"""

PROCESS_MIN_CPUS = 4
"""``worker_kind="auto"`` uses processes only with at least this many cores (one is left to the model).

On CPU devices it never does: the forward pass is the bottleneck there (EfficientNet-Lite0 ~60-100 ms
of CPU per image vs ~6 ms decode + preprocess), so two decode threads already keep up (2 cores, 128
files, load ~3: threads end-to-end 33 img/s vs bare forward 34 img/s), while the workers' start-up is
a certain cost. On the shared 2-core machine, 1,000 files, one decode process ran at 0.5-0.6 x and
512 files at 0.8-1.5 x the thread path's speed from run to run (BENCHMARKS "Paper scale" / encode).
"""

MAX_AUTO_PROCESSES = 8
"""Upper bound of ``num_workers="auto"`` for worker processes (one core is left to the model)."""

AUTO_THREADS = 2
"""Threads used by ``num_workers="auto"`` when the job stays in-process (today's default)."""

Transform = Callable[[Any], torch.Tensor]
Item = Union[torch.Tensor, str]
"""One decoded file: a tensor [3, H, W], or the reason it was skipped."""


def load_item(path: str, transform: Transform, max_pixels: int | None) -> Item:
    """Decode one file and preprocess it -> tensor, or the human reason it cannot be used."""
    try:
        img = load_rgb(path, max_pixels=max_pixels)
        try:
            return transform(img)
        except (ValueError, RuntimeError, OSError) as exc:
            raise ImageError(path, f"preprocessing failed ({exc})") from None
    except ImageError as exc:
        return exc.reason
    except Exception as exc:  # never let one odd file stop the whole job
        return f"could not be processed ({type(exc).__name__}: {exc})"


def resolve_workers(num_workers: int | str, worker_kind: str, n_images: int,
                    device: str = "cpu") -> tuple[str, int]:
    """-> (``"inline"`` | ``"thread"`` | ``"process"``, number of workers) for a job of ``n_images``.

    ``num_workers``: an int >= 0 or ``"auto"`` (processes: min(cpu_count - 1, 8), at least 1;
    threads: 2); ``0`` always decodes inline. ``worker_kind``: ``"thread"``, ``"process"`` or
    ``"auto"``: processes when the model runs on CUDA, the job has >= :data:`PROCESS_MIN_IMAGES`
    images and the machine >= :data:`PROCESS_MIN_CPUS` cores; threads otherwise.
    """
    if worker_kind not in ("auto", "thread", "process"):
        raise ValueError(f"worker_kind must be 'auto', 'thread' or 'process', got {worker_kind!r}")
    cpus = os.cpu_count() or 1
    if num_workers == "auto":
        n: int | None = None
    elif isinstance(num_workers, int) and not isinstance(num_workers, bool) and num_workers >= 0:
        n = num_workers
    else:
        raise ValueError(f"num_workers must be an int >= 0 or 'auto', got {num_workers!r}")
    if n == 0:
        return "inline", 0
    kind = worker_kind
    if kind == "auto":
        fast_model = str(device).startswith("cuda")
        kind = "process" if fast_model and n_images >= PROCESS_MIN_IMAGES and cpus >= PROCESS_MIN_CPUS else "thread"
    if n is None:
        n = max(1, min(cpus - 1, MAX_AUTO_PROCESSES)) if kind == "process" else AUTO_THREADS
    return kind, n


def picklable(obj: Any) -> bool:
    """True when ``obj`` survives pickling (worker processes receive the transform this way)."""
    try:
        pickle.dumps(obj)
        return True
    except Exception:
        return False


@dataclass(frozen=True)
class RGBThen:
    """``transform(img.convert("RGB"))`` for non-RGB images, else ``transform(img)``; picklable."""

    transform: Transform

    def __call__(self, img: Any) -> torch.Tensor:
        return self.transform(img.convert("RGB") if img.mode != "RGB" else img)


# --------------------------------------------------------------------------------------------
# Batches of items: inline / threads / processes
# --------------------------------------------------------------------------------------------


@dataclass
class RawJpeg:
    """A JPEG file's bytes (uint8 [n]) for GPU decoding; ``path`` for the CPU fallback."""

    path: str
    data: torch.Tensor


@dataclass
class Decoded:
    """One decoded batch. ``tensor`` [k, 3, H, W] holds the usable files in batch order (None when k = 0);
    ``reasons[i]`` is why file i was skipped, None when it is used; ``raw`` (GPU path only) maps
    positions to JPEG bytes still to decode (those positions are neither in ``tensor`` nor skipped)."""

    tensor: torch.Tensor | None
    reasons: list[str | None]
    raw: dict[int, RawJpeg]


def make_decoded(items: Sequence[Any]) -> Decoded:
    """Per-file items (tensor | reason | RawJpeg) -> one :class:`Decoded` (a single stacked tensor:
    one shared-memory block per batch between processes, not one per image)."""
    tensors = [it for it in items if isinstance(it, torch.Tensor)]
    return Decoded(torch.stack(tensors) if tensors else None,
                   [it if isinstance(it, str) else None for it in items],
                   {i: it for i, it in enumerate(items) if isinstance(it, RawJpeg)})


def _jpeg_for_gpu(path: str, max_pixels: int | None) -> RawJpeg | None:
    """The file's bytes when nvJPEG will decode it exactly like :func:`load_rgb` would, else None.

    Only 8-bit RGB (YCbCr) or greyscale baseline/progressive JPEGs without an EXIF rotation, within
    the pixel limit; everything else (CMYK, rotations, other formats, damaged headers) goes the CPU way.
    """
    from PIL import Image

    try:
        with open(path, "rb") as fh:
            data = fh.read()
        # a missing end-of-image marker (truncated file) goes the CPU way, which names the damage
        if not data.startswith(b"\xff\xd8") or not data.rstrip(b"\x00\r\n ").endswith(b"\xff\xd9"):
            return None
        with Image.open(io.BytesIO(data)) as im:
            if im.format != "JPEG" or im.mode not in ("RGB", "L"):
                return None
            w, h = im.size
            if max_pixels is not None and w * h > max_pixels:
                return None
            if im.getexif().get(0x0112, 1) not in (1, None):
                return None
    except Exception:
        return None
    return RawJpeg(path, torch.frombuffer(bytearray(data), dtype=torch.uint8))


class BatchDataset(torch.utils.data.Dataset):
    """Dataset whose index is a list of paths (one batch) -> :class:`Decoded`.

    Picklable (holds only the transform and the pixel limit), for spawn worker processes.
    ``gpu_jpeg``: JPEGs nvJPEG can decode come back as :class:`RawJpeg` instead of tensors.
    """

    def __init__(self, transform: Transform, max_pixels: int | None, gpu_jpeg: bool = False) -> None:
        self.transform = transform
        self.max_pixels = max_pixels
        self.gpu_jpeg = gpu_jpeg

    def __len__(self) -> int:  # the sampler drives iteration; the length is not used
        return 0

    def __getitem__(self, paths: list[str]) -> Decoded:  # type: ignore[override]
        out: list[Any] = []
        for path in paths:
            raw = _jpeg_for_gpu(path, self.max_pixels) if self.gpu_jpeg else None
            out.append(raw if raw is not None else load_item(path, self.transform, self.max_pixels))
        return make_decoded(out)


def _worker_init(_worker_id: int) -> None:
    # one intra-op thread per worker: the workers together must not oversubscribe the cores
    torch.set_num_threads(1)


def _identity(batch: Any) -> Any:
    return batch


def iter_batches(
    names: Sequence[str],
    batches: Sequence[Sequence[int]],
    transform: Transform,
    *,
    kind: str,
    workers: int,
    max_pixels: int | None,
    gpu_jpeg: bool = False,
) -> Iterator[Decoded]:
    """Yield, for each batch of indices into ``names``, its :class:`Decoded` (files in batch order).

    A generator: closing it (or an exception in the consumer) stops threads and worker processes
    before it returns, so no child process outlives the job.
    """
    if kind == "inline" or not batches:
        for batch in batches:
            yield make_decoded([load_item(names[i], transform, max_pixels) for i in batch])
    elif kind == "thread":
        yield from _thread_batches(names, batches, transform, workers, max_pixels)
    elif kind == "process":
        yield from _process_batches(names, batches, transform, workers, max_pixels, gpu_jpeg)
    else:
        raise ValueError(f"unknown worker kind {kind!r}")


def _thread_batches(names: Sequence[str], batches: Sequence[Sequence[int]], transform: Transform,
                    workers: int, max_pixels: int | None) -> Iterator[Decoded]:
    pool = ThreadPoolExecutor(max_workers=workers)
    ahead = 2
    try:
        pending: deque[list[Future[Item]]] = deque()
        nxt = 0

        def submit(batch: Sequence[int]) -> list[Future[Item]]:
            return [pool.submit(load_item, names[i], transform, max_pixels) for i in batch]

        while nxt < len(batches) and len(pending) < ahead:
            pending.append(submit(batches[nxt]))
            nxt += 1
        while pending:
            futures = pending.popleft()
            if nxt < len(batches):
                pending.append(submit(batches[nxt]))
                nxt += 1
            yield make_decoded([f.result() for f in futures])
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _process_batches(names: Sequence[str], batches: Sequence[Sequence[int]], transform: Transform,
                     workers: int, max_pixels: int | None, gpu_jpeg: bool) -> Iterator[Decoded]:
    from torch.utils.data import DataLoader

    rest = [[names[i] for i in batch] for batch in batches[1:]]
    loader = DataLoader(
        BatchDataset(transform, max_pixels, gpu_jpeg),
        sampler=rest,
        batch_size=None,
        collate_fn=_identity,
        num_workers=workers,
        multiprocessing_context="spawn",
        prefetch_factor=2,
        worker_init_fn=_worker_init,
        persistent_workers=False,
    )
    it = iter(loader) if rest else None  # starts the workers now; they import torch while batch 0 decodes here
    try:
        first = BatchDataset(transform, max_pixels, gpu_jpeg)[[names[i] for i in batches[0]]]
        yield first
        if it is not None:
            for items in it:
                yield items
    finally:
        if it is not None:
            shutdown = getattr(it, "_shutdown_workers", None)
            if shutdown is not None:  # the iterator's __del__ would do it, but a traceback may keep it alive
                shutdown()
            del it


# --------------------------------------------------------------------------------------------
# GPU JPEG decoding
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuPreprocess:
    """Resize (shorter side, antialiased) + centre crop + normalise, on uint8 [3, H, W] GPU tensors.

    The GPU counterpart of the CPU transforms of both encoders (PIL resize there, torch resize here:
    values differ by interpolation rounding, not by geometry).
    """

    resize: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"

    def __call__(self, images: list[torch.Tensor]) -> torch.Tensor:
        """uint8 [3, H_i, W_i] tensors on one device -> float32 [B, 3, crop, crop]."""
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms.v2 import functional as F

        mode = InterpolationMode(self.interpolation)
        out = []
        for img in images:
            x = img.float() / 255.0
            x = F.resize(x, [self.resize], interpolation=mode, antialias=True).clamp_(0.0, 1.0)
            out.append(F.center_crop(x, [self.crop, self.crop]))
        batch = torch.stack(out)
        mean = torch.tensor(self.mean, device=batch.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=batch.device).view(1, 3, 1, 1)
        return (batch - mean) / std


def gpu_jpeg_available(device: str) -> bool:
    """True when ``device`` is CUDA and this torchvision can decode JPEGs on it."""
    if not str(device).startswith("cuda") or not torch.cuda.is_available():
        return False
    try:
        from torchvision.io import decode_jpeg  # noqa: F401
    except Exception:
        return False
    return True


def finish_gpu_batch(dec: Decoded, prep: GpuPreprocess, transform: Transform, device: str,
                     max_pixels: int | None) -> Decoded:
    """Decode the JPEG bytes of one batch on ``device`` -> a :class:`Decoded` with everything on ``device``.

    A batch that the decoder refuses is decoded file by file; a file it refuses goes the CPU way (same
    skip reason as without GPU decoding).
    """
    from torchvision.io import ImageReadMode, decode_jpeg

    if not dec.raw:
        return Decoded(None if dec.tensor is None else dec.tensor.to(device, non_blocking=True), dec.reasons, {})
    pos = sorted(dec.raw)
    try:
        decoded: list[torch.Tensor | None] = list(
            decode_jpeg([dec.raw[i].data for i in pos], mode=ImageReadMode.RGB, device=device))
    except RuntimeError:
        decoded = []
        for i in pos:
            try:
                decoded.append(decode_jpeg(dec.raw[i].data, mode=ImageReadMode.RGB, device=device))
            except RuntimeError:
                decoded.append(None)
    good = [(i, img) for i, img in zip(pos, decoded) if img is not None]
    by_pos: dict[int, torch.Tensor] = dict(zip([i for i, _ in good], prep([img for _, img in good]))) if good else {}
    reasons = list(dec.reasons)
    for i, img in zip(pos, decoded):
        if img is None:
            item = load_item(dec.raw[i].path, transform, max_pixels)
            if isinstance(item, str):
                reasons[i] = item
            else:
                by_pos[i] = item.to(device)
    cpu_rows = iter(dec.tensor.to(device, non_blocking=True)) if dec.tensor is not None else iter(())
    rows = []
    for i, reason in enumerate(reasons):
        if reason is None:
            rows.append(by_pos[i] if i in by_pos else next(cpu_rows))
    return Decoded(torch.stack(rows) if rows else None, reasons, {})

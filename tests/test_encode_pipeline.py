"""The encoding pipeline's decode workers (clustermine.method.encoders.decode): worker processes (spawn) give
the same features, order, skip reasons and progress as decoding in-process; cancel and errors leave no
child process; the GPU preprocessing is checked on the CPU against the PIL transform."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch

from clustermine.method.encoders import load_encoder
from clustermine.method.encoders.base import EncodeResult
from clustermine.method.encoders.decode import (
    PROCESS_MIN_CPUS,
    PROCESS_MIN_IMAGES,
    RawJpeg,
    _jpeg_for_gpu,
    finish_gpu_batch,
    make_decoded,
    resolve_workers,
)
from clustermine.method.encoders.openclip import OpenClipEncoder
from clustermine.core.errors import CancelledError
from clustermine.method.images import load_rgb

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import SHARED_DATA, missing_resource  # noqa: E402
from tiny_openclip import register_tiny_openclip  # noqa: E402


def _children() -> list[psutil.Process]:
    """Live child processes, without multiprocessing's resource tracker (it lives as long as we do)."""
    out = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.status() == psutil.STATUS_ZOMBIE or "resource_tracker" in " ".join(proc.cmdline()):
                continue
        except psutil.NoSuchProcess:
            continue
        out.append(proc)
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """14 real images of varied sizes and three bad files (truncated JPEG, text as .jpg, missing)."""
    sample, imagenette = SHARED_DATA / "imagenet_sample", SHARED_DATA / "imagenette_val100"
    if not sample.is_dir() or not imagenette.is_dir():
        missing_resource(f"shared data not found: {SHARED_DATA}")
    real = sorted(str(p) for p in sample.glob("*/*.jpg"))[:8] + sorted(str(p) for p in imagenette.glob("*/*"))[:6]
    bad_dir = tmp_path_factory.mktemp("bad")
    data = Path(real[0]).read_bytes()
    (bad_dir / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (bad_dir / "text.jpg").write_text("not an image\n")
    return real[:5] + [str(bad_dir / "truncated.jpg")] + real[5:10] + [str(bad_dir / "text.jpg"),
                                                                        str(bad_dir / "missing.jpg")] + real[10:]


def _compare(enc, files: list[str], chunk_size: int | None = None) -> None:
    """Inline decoding vs 2 worker processes (``chunk_size``: through iter_encode, chunks merged)."""
    calls_a: list[tuple[int, int]] = []
    calls_b: list[tuple[int, int]] = []
    a = enc.encode_images(files, batch_size=6, num_workers=0, progress=lambda d, t: calls_a.append((d, t)))
    kw = dict(batch_size=6, num_workers=2, worker_kind="process", progress=lambda d, t: calls_b.append((d, t)))
    if chunk_size is None:
        b = enc.encode_images(files, **kw)
    else:
        parts = list(enc.iter_encode(files, chunk_size=chunk_size, **kw))
        assert [s for s, _ in parts] == list(range(0, len(files), chunk_size))
        assert [len(r.ok) for _, r in parts] == [len(files[s:s + chunk_size]) for s, _ in parts]
        b = EncodeResult(np.concatenate([r.features for _, r in parts]), [o for _, r in parts for o in r.ok],
                         {k: v for _, r in parts for k, v in r.errors.items()})
        # batches never straddle chunks: progress comes at the end of each batch inside each chunk
        n = len(files)
        calls_a = [(min(i + 6, min(c + chunk_size, n)), n) for c in range(0, n, chunk_size)
                   for i in range(c, min(c + chunk_size, n), 6)]
    assert a.n_ok == len(files) - 3
    assert b.ok == a.ok
    assert b.errors == a.errors
    assert set(a.errors) == {f for f in files if Path(f).name in ("truncated.jpg", "text.jpg", "missing.jpg")}
    assert "truncated" in a.errors[files[5]]
    np.testing.assert_allclose(b.features, a.features, rtol=0, atol=1e-6)
    assert calls_b == calls_a
    assert not _children()


def test_process_workers_match_inline_offline(files: list[str]) -> None:
    _compare(load_encoder("offline", "cpu"), files, chunk_size=7)


def test_process_workers_match_inline_tiny_openclip(files: list[str], tmp_path: Path) -> None:
    name = register_tiny_openclip(tmp_path)
    _compare(OpenClipEncoder(f"openclip:{name}:none", "cpu"), files)


@pytest.mark.parametrize("stop", ["cancel", "progress_error"])
def test_cancel_or_error_leaves_no_child_process(files: list[str], stop: str) -> None:
    enc = load_encoder("offline", "cpu")
    done: list[int] = []

    def progress(d: int, _t: int) -> None:
        done.append(d)
        assert _children(), "the worker processes should be running during the job"
        if stop == "progress_error" and d >= 4:
            raise RuntimeError("boom")

    expected = CancelledError if stop == "cancel" else RuntimeError
    with pytest.raises(expected):
        enc.encode_images(files, batch_size=4, num_workers=2, worker_kind="process", progress=progress,
                          cancel=lambda: len(done) >= 2)
    assert done and done[-1] < len(files)
    assert not _children()


def test_resolve_workers() -> None:
    cpus = os.cpu_count() or 1
    assert resolve_workers(0, "process", 10_000) == ("inline", 0)
    assert resolve_workers("auto", "auto", PROCESS_MIN_IMAGES - 1, "cuda") == ("thread", 2)
    assert resolve_workers("auto", "auto", 10**6, "cpu") == ("thread", 2)  # CPU: threads keep up with the model
    big = "process" if cpus >= PROCESS_MIN_CPUS else "thread"
    assert resolve_workers("auto", "auto", PROCESS_MIN_IMAGES, "cuda")[0] == big
    assert resolve_workers("auto", "process", 10) == ("process", max(1, min(cpus - 1, 8)))
    assert resolve_workers(3, "thread", 10_000) == ("thread", 3)
    assert resolve_workers(2, "process", 5) == ("process", 2)
    for bad in (-1, "many", 1.5, True):
        with pytest.raises(ValueError):
            resolve_workers(bad, "auto", 5)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        resolve_workers(2, "fibres", 5)


def test_gpu_preprocess_matches_pil_transform_on_cpu(files: list[str]) -> None:
    """The GPU path's resize / crop / normalise (run here on the CPU) ~ the PIL transform it replaces,
    and a JPEG it cannot decode falls back to the CPU reason."""
    enc = load_encoder("offline", "cpu")
    prep = enc.gpu_preprocess()
    real = [f for f in files if Path(f).name not in ("truncated.jpg", "text.jpg", "missing.jpg")][:8]
    items = [_jpeg_for_gpu(f, None) for f in real]
    assert all(isinstance(it, RawJpeg) for it in items)
    assert _jpeg_for_gpu(files[5], None) is None  # truncated: no end-of-image marker -> CPU path
    # bytes the JPEG decoder refuses: the whole batch is retried file by file, that file goes the CPU way
    text = next(f for f in files if Path(f).name == "text.jpg")
    broken = RawJpeg(text, torch.frombuffer(bytearray(b"\xff\xd8 not a jpeg \xff\xd9"), dtype=torch.uint8))
    # and a file the CPU path decodes in the middle of the batch keeps its place
    cpu_item = enc.preprocess(load_rgb(real[-1]))
    dec = make_decoded(items[:4] + [cpu_item] + items[4:] + [broken])
    out = finish_gpu_batch(dec, prep, enc.image_transform(), "cpu", None)
    assert out.reasons[:-1] == [None] * (len(items) + 1) and not out.raw
    assert out.reasons[-1] == enc.encode_images([text], num_workers=0).errors[text]
    assert torch.equal(out.tensor[4], cpu_item)
    got = torch.cat([out.tensor[:4], out.tensor[5:]])
    ref = torch.stack([enc.preprocess(load_rgb(f)) for f in real])
    assert got.shape == ref.shape
    diff = (got - ref).abs()
    assert float(diff.mean()) < 0.02  # values in [-1, 1]; JPEG decoder + interpolation rounding only
    feat_gpu, feat_cpu = enc.encode_batch(got), enc.encode_batch(ref)
    assert float((feat_gpu * feat_cpu).sum(1).min()) > 0.95

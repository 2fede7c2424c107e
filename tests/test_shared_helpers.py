"""The engine's single helpers: file hashes (on-disk cache keys), row L2 normalisation, and the
process-wide encoder cache."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from clustermine.core.hashing import array_hash, cached_file_hash, file_hash
from clustermine.method.images import scan_images
from clustermine.core.linalg import l2_normalize

# FIPS 180 test vectors for the message "abc".
ABC_SHA1 = "a9993e364706816aba3e25717850c26c9cd0d89d"
ABC_SHA256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_file_hash_known_answers(tmp_path: Path) -> None:
    f = tmp_path / "abc.bin"
    f.write_bytes(b"abc")
    assert file_hash(f, "sha1") == ABC_SHA1
    assert file_hash(f) == ABC_SHA256 == file_hash(str(f), "sha256")
    assert cached_file_hash(str(f), "sha1") == ABC_SHA1


def test_file_hash_of_a_file_larger_than_any_read_buffer(tmp_path: Path) -> None:
    """1,000,000 x 'a' is the FIPS long-message vector; 3 MiB crosses hashlib's and our old
    4 MiB / 1 MiB chunk boundaries."""
    f = tmp_path / "a.bin"
    f.write_bytes(b"a" * 1_000_000)
    assert file_hash(f, "sha1") == "34aa973cd4c4daa4f61eeb2bdbad27316534016f"
    assert file_hash(f) == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"



def test_array_hash_is_the_sha1_of_header_and_bytes_for_memmaps_and_views_alike(tmp_path: Path) -> None:
    """One array hash: the vote memo's keys and the 2-D maps' cache keys on disk (``features_key``, whose
    values must not change) are this digest; a memmap is read in blocks (70,000 rows > one block)."""
    import hashlib

    from clustermine.workflows.projection import features_key

    a = np.random.default_rng(0).standard_normal((70_000, 4)).astype(np.float16)
    want = hashlib.sha1(b"(70000, 4)|float16" + a.tobytes()).hexdigest()
    np.save(tmp_path / "a.npy", a)
    assert array_hash(a) == want == array_hash(np.load(tmp_path / "a.npy", mmap_mode="r"))
    assert features_key(a) == want[:16]
    strided = np.arange(24, dtype=np.float32).reshape(6, 4)[::2]
    assert array_hash(strided) == hashlib.sha1(b"(3, 4)|float32" + strided.copy().tobytes()).hexdigest()
    assert array_hash(np.zeros((0, 3), np.float32)) == hashlib.sha1(b"(0, 3)|float32").hexdigest()
    assert array_hash(a[:-1]) != want and array_hash(a.astype(np.float32)) != want

def test_scanned_image_keys_are_the_sha1_of_the_bytes(tmp_path: Path) -> None:
    """Image features are cached on disk under the file's sha1: the key must not change."""
    from PIL import Image

    Image.new("RGB", (8, 8), (200, 10, 10)).save(tmp_path / "red.png")
    (rec,) = scan_images(tmp_path)
    assert rec.status == "ok"
    import hashlib

    assert rec.sha1 == hashlib.sha1((tmp_path / "red.png").read_bytes()).hexdigest()


def test_missing_file_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        file_hash(tmp_path / "nope.bin")


def test_l2_normalize_known_answers() -> None:
    x = np.array([[3.0, 4.0], [0.0, 0.0], [0.0, -2.0]])
    out = l2_normalize(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0], [0.0, -1.0]], atol=1e-7)
    assert x[0, 0] == 3.0  # the input is not modified


def test_l2_normalize_agrees_with_torch_normalize() -> None:
    """The NumPy helper and torch's F.normalize (used on tensors) implement the same rule."""
    import torch

    x = np.random.default_rng(0).normal(size=(50, 7)).astype(np.float32)
    x[3] = 0.0
    ref = torch.nn.functional.normalize(torch.from_numpy(x), dim=-1).numpy()
    np.testing.assert_allclose(l2_normalize(x), ref, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(l2_normalize(x)[np.arange(50) != 3], axis=1), 1.0, atol=1e-6)


def test_load_encoder_builds_each_encoder_once_under_concurrent_calls(tmp_path: Path) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from tiny_openclip import register_tiny_openclip

    from clustermine.method.encoders import load_encoder

    name = register_tiny_openclip(tmp_path, name="cm-tiny-cache-test")
    barrier = threading.Barrier(6)
    got: list[object] = []

    def load() -> None:
        barrier.wait()
        got.append(load_encoder(f"openclip:{name}:none", "cpu"))

    threads = [threading.Thread(target=load) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 6 and all(e is got[0] for e in got)
    assert load_encoder(f" openclip:{name}:none ", "cpu") is got[0]  # the spec is stripped

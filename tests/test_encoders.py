"""Tests of clustermine.method.encoders with real components: the offline ConSE encoder on real ImageNet
images, and a tiny (untrained) open_clip model for the open_clip code paths."""

from __future__ import annotations

import csv
import json
import os
import pickle
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clustermine.method.encoders import load_encoder
from clustermine.method.encoders.base import EncodeResult, Encoder, resolve_device
from clustermine.method.encoders.offline import OfflineEncoder, get_classifier, imagenet_classnames
from clustermine.method.encoders.openclip import OpenClipEncoder, parse_spec
from clustermine.core.errors import CancelledError, EncoderError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import SHARED_DATA, missing_resource  # noqa: E402
from tiny_openclip import TINY_CONFIG, register_tiny_openclip  # noqa: E402

IMAGENET_SAMPLE = SHARED_DATA / "imagenet_sample"


def _require_imagenet_sample() -> list[dict[str, str]]:
    labels = IMAGENET_SAMPLE / "labels.csv"
    if not labels.is_file():
        missing_resource(f"shared data not found: {labels} (expected ../shared/data beside the checkout)")
    with labels.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _norms(x: np.ndarray) -> np.ndarray:
    return np.linalg.norm(x.astype(np.float64), axis=1)


# ---------------------------------------------------------------------------------------------
# Offline ConSE encoder
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def offline() -> Encoder:
    return load_encoder("offline", "cpu")


@pytest.fixture(scope="module")
def sample_rows() -> list[dict[str, str]]:
    return _require_imagenet_sample()


@pytest.fixture(scope="module")
def classifier_probs(offline: OfflineEncoder, sample_rows: list[dict[str, str]]) -> np.ndarray:
    """ImageNet-1k probabilities [1000, 1000] for every image of imagenet_sample (~30-60 s)."""
    probs = []
    for start in range(0, len(sample_rows), 50):
        batch = [offline.load_and_preprocess(str(IMAGENET_SAMPLE / r["file"])) for r in sample_rows[start : start + 50]]
        probs.append(offline.classify_batch(torch.stack(batch)))
    return np.concatenate(probs)


def test_offline_top1_accuracy_on_imagenet_sample(classifier_probs: np.ndarray, sample_rows: list[dict[str, str]]) -> None:
    labels = np.array([int(r["index"]) for r in sample_rows])
    assert classifier_probs.shape == (len(sample_rows), 1000)
    np.testing.assert_allclose(classifier_probs.sum(axis=1), 1.0, atol=1e-4)
    top1 = float(np.mean(classifier_probs.argmax(axis=1) == labels))
    assert top1 >= 0.80, f"offline classifier top-1 {top1:.3f} < 0.80 (documented: 0.869)"


def test_classnames_align_with_labels(sample_rows: list[dict[str, str]]) -> None:
    names = imagenet_classnames()
    assert len(names) == 1000
    assert all(names[int(r["index"])] == r["openclip_classname"] for r in sample_rows)


def test_offline_image_embeddings_are_semantic(offline: OfflineEncoder, sample_rows: list[dict[str, str]]) -> None:
    rows = sample_rows[::50]  # 20 classes spread over ImageNet
    result = offline.encode_images([IMAGENET_SAMPLE / r["file"] for r in rows], batch_size=8)
    assert result.features.shape == (len(rows), 384) and result.features.dtype == np.float32
    np.testing.assert_allclose(_norms(result.features), 1.0, atol=1e-5)
    texts = offline.encode_texts([offline.text_template.format(r["openclip_classname"]) for r in rows])
    sims = result.features @ texts.T
    assert float(np.mean(sims.argmax(axis=1) == np.arange(len(rows)))) >= 0.8


def test_offline_text_embeddings(offline: OfflineEncoder) -> None:
    calls: list[tuple[int, int]] = []
    texts = ["dog", "a photo of a cat.", "", "Ünïcödé — 日本"] * 3
    emb = offline.encode_texts(texts, batch_size=5, progress=lambda d, t: calls.append((d, t)))
    assert emb.shape == (len(texts), 384) and emb.dtype == np.float32
    np.testing.assert_allclose(_norms(emb), 1.0, atol=1e-5)
    np.testing.assert_allclose(emb[0], emb[4], atol=1e-5)  # deterministic
    assert calls == [(5, 12), (10, 12), (12, 12)]
    assert offline.encode_texts([]).shape == (0, 384)


def test_offline_fingerprint(offline: OfflineEncoder) -> None:
    fp = offline.fingerprint
    assert fp["kind"] == "offline-conse" and fp["dim"] == 384 and fp["top_t"] == 10
    assert fp["text_weights_sha256"].startswith("53aa5117")  # the official all-MiniLM-L6-v2 hash
    assert fp["image_weights_sha256"] and fp["text_template"] == offline.text_template
    json.dumps(fp)
    assert offline.fingerprint_id == load_encoder("offline", "cpu").fingerprint_id
    assert len(offline.fingerprint_id) == 16 and int(offline.fingerprint_id, 16) >= 0
    other = OfflineEncoder("cpu", top_t=5)
    prompt = OfflineEncoder("cpu", text_template="a photo of a {}.")
    assert len({offline.fingerprint_id, other.fingerprint_id, prompt.fingerprint_id}) == 3


def test_offline_instances_share_weights(offline: OfflineEncoder) -> None:
    assert load_encoder("offline", "cpu") is offline
    other = OfflineEncoder("cpu", top_t=3)
    x = torch.stack([offline.preprocess(Image.new("RGB", (300, 200), (200, 30, 30)))])
    a, b = offline.encode_batch(x), other.encode_batch(x)
    assert get_classifier("cpu") is get_classifier("cpu")
    assert a.shape == b.shape == (1, 384) and not np.allclose(a, b)  # T differs, weights shared


def _mixed_folder(tmp_path: Path, rows: list[dict[str, str]]) -> list[Path]:
    good = []
    for i, r in enumerate(rows):
        dst = tmp_path / f"good_{i}.jpg"
        shutil.copyfile(IMAGENET_SAMPLE / r["file"], dst)
        good.append(dst)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "text.png"
    text.write_text("not an image")
    trunc = tmp_path / "trunc.jpg"
    trunc.write_bytes(good[0].read_bytes()[:300])
    missing = tmp_path / "missing.jpg"
    return [empty, good[0], text, good[1], trunc, missing, good[2]]


def test_bad_files_in_batch_are_skipped(offline: OfflineEncoder, sample_rows: list[dict[str, str]], tmp_path: Path) -> None:
    paths = _mixed_folder(tmp_path, sample_rows[:3])
    calls: list[tuple[int, int]] = []
    result = offline.encode_images(paths, batch_size=2, num_workers=2, progress=lambda d, t: calls.append((d, t)))
    assert isinstance(result, EncodeResult)
    assert result.ok == [False, True, False, True, False, False, True]
    assert set(result.errors) == {str(paths[i]) for i in (0, 2, 4, 5)}
    assert "file not found" in result.errors[str(paths[5])]
    assert result.features.shape == (3, 384) and result.n_ok == 3
    assert calls == [(2, 7), (4, 7), (6, 7), (7, 7)]
    alone = offline.encode_images([paths[1], paths[3], paths[6]], batch_size=32, num_workers=0)
    np.testing.assert_allclose(result.features, alone.features, atol=1e-5)


def test_all_bad_and_empty_inputs(offline: OfflineEncoder, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"nope")
    result = offline.encode_images([bad])
    assert result.features.shape == (0, 384) and result.ok == [False] and list(result.errors) == [str(bad)]
    empty = offline.encode_images([])
    assert empty.features.shape == (0, 384) and empty.ok == [] and empty.errors == {}


def test_cancel_stops_encoding(offline: OfflineEncoder, sample_rows: list[dict[str, str]]) -> None:
    paths = [IMAGENET_SAMPLE / r["file"] for r in sample_rows[:6]]
    done: list[int] = []
    with pytest.raises(CancelledError, match="after 2 of 6"):
        offline.encode_images(paths, batch_size=2, progress=lambda d, t: done.append(d), cancel=lambda: bool(done))
    assert done == [2]


# ---------------------------------------------------------------------------------------------
# open_clip encoder with a tiny untrained architecture
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_name(tmp_path_factory: pytest.TempPathFactory) -> str:
    return register_tiny_openclip(tmp_path_factory.mktemp("tiny_openclip"))


@pytest.fixture(scope="module")
def tiny(tiny_name: str) -> OpenClipEncoder:
    return load_encoder(f"openclip:{tiny_name}:none", "cpu")


@pytest.fixture(scope="module")
def photo_paths(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """A few real photos when shared data exists, else synthetic images."""
    folder = tmp_path_factory.mktemp("photos")
    sources = sorted(IMAGENET_SAMPLE.glob("*/*.jpg"))[:5] if IMAGENET_SAMPLE.is_dir() else []
    paths = []
    for i in range(5):
        dst = folder / f"p{i}.jpg"
        if sources:
            shutil.copyfile(sources[i], dst)
        else:
            rng = np.random.default_rng(i)
            Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(dst)
        paths.append(dst)
    return paths


def test_tiny_openclip_encodes_images_and_texts(tiny: OpenClipEncoder, tiny_name: str, photo_paths: list[Path]) -> None:
    assert load_encoder(f"openclip:{tiny_name}:none", "cpu") is tiny
    assert tiny.dim == 32 and tiny.device == "cpu"
    assert tuple(tiny.preprocess(Image.open(photo_paths[0]).convert("RGB")).shape) == (3, 32, 32)
    result = tiny.encode_images(photo_paths, batch_size=2)
    assert result.features.shape == (5, 32) and all(result.ok)
    np.testing.assert_allclose(_norms(result.features), 1.0, atol=1e-5)
    texts = tiny.encode_texts(["a dog", "a cat", "a photo of a church."], batch_size=2)
    assert texts.shape == (3, 32) and texts.dtype == np.float32
    np.testing.assert_allclose(_norms(texts), 1.0, atol=1e-5)
    fp = tiny.fingerprint
    assert fp["kind"] == "openclip" and fp["model"] == tiny_name and fp["weights"].startswith("random-init")
    assert fp["image_size"] == [32, 32] and len(fp["mean"]) == 3 and len(fp["std"]) == 3


def test_tiny_random_init_is_deterministic(tiny: OpenClipEncoder, tiny_name: str, photo_paths: list[Path]) -> None:
    again = OpenClipEncoder(f"openclip:{tiny_name}:none", "cpu")
    a = tiny.encode_images(photo_paths[:2]).features
    b = again.encode_images(photo_paths[:2]).features
    np.testing.assert_array_equal(a, b)
    assert again.fingerprint_id == tiny.fingerprint_id


def _perturbed_state(tiny: OpenClipEncoder) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(123)
    return {
        k: (v + 0.05 * torch.randn(v.shape, generator=gen)) if v.is_floating_point() else v.clone()
        for k, v in tiny.model.state_dict().items()
    }


def _reference_features(tiny_name: str, state: dict[str, torch.Tensor], tiny: OpenClipEncoder, paths: list[Path]) -> np.ndarray:
    import open_clip

    model = open_clip.create_model(tiny_name, pretrained=None).eval()
    model.load_state_dict(state, strict=True)
    x = torch.stack([tiny.preprocess(Image.open(p).convert("RGB")) for p in paths])
    with torch.inference_mode():
        f = model.encode_image(x)
    return torch.nn.functional.normalize(f, dim=-1).numpy()


def test_safetensors_checkpoint_gives_identical_features(
    tiny: OpenClipEncoder, tiny_name: str, photo_paths: list[Path], tmp_path: Path
) -> None:
    from safetensors.torch import save_file

    state = _perturbed_state(tiny)
    ckpt = tmp_path / "tiny weights.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(ckpt))
    enc = load_encoder(f"openclip:{tiny_name}@{ckpt}", "cpu")
    got = enc.encode_images(photo_paths).features
    np.testing.assert_allclose(got, _reference_features(tiny_name, state, tiny, photo_paths), atol=1e-5)
    assert not np.allclose(got, tiny.encode_images(photo_paths).features, atol=1e-3)
    assert enc.fingerprint["weights"].startswith("sha256:")
    assert enc.fingerprint_id != tiny.fingerprint_id

    # the same weights as a weights-only torch state dict (.pt) load too, with the same identity rules
    pt = tmp_path / "tiny.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, pt)
    enc_pt = load_encoder(f"openclip:{tiny_name}@{pt}", "cpu")
    np.testing.assert_allclose(enc_pt.encode_images(photo_paths).features, got, atol=1e-5)
    assert enc_pt.fingerprint_id != enc.fingerprint_id  # different file bytes

    # and as a local-dir folder (open_clip_config.json + weights)
    folder = tmp_path / "tiny_dir"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CONFIG}))
    shutil.copyfile(ckpt, folder / "open_clip_model.safetensors")
    enc_dir = load_encoder(f"openclip:local-dir:{folder}", "cpu")
    np.testing.assert_allclose(enc_dir.encode_images(photo_paths).features, got, atol=1e-5)
    assert enc_dir.fingerprint["weights"] == enc.fingerprint["weights"]


class _Payload:
    """Unpickling this object runs a shell command (a hostile checkpoint)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (self.command,))


@pytest.mark.parametrize("writer", ["torch.save", "raw-pickle"])
def test_malicious_pickle_checkpoint_is_refused(tiny_name: str, tmp_path: Path, writer: str) -> None:
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.pt"
    payload = {"state_dict": {"visual.x": _Payload(f"touch {shlex.quote(str(marker))}")}}
    if writer == "torch.save":
        torch.save(payload, evil)
    else:
        evil.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(EncoderError) as info:
        load_encoder(f"openclip:{tiny_name}@{evil}", "cpu")
    assert str(evil) in str(info.value)
    assert not marker.exists()
    # the file really is hostile: an unsafe load in another process does run the payload
    code = f"import torch; torch.load({str(evil)!r}, weights_only=False)"
    subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, timeout=120)
    assert marker.exists()


def test_spec_errors(tiny_name: str, tmp_path: Path) -> None:
    with pytest.raises(EncoderError, match="valid forms"):
        load_encoder("clip-vit", "cpu")
    with pytest.raises(EncoderError, match="unknown open_clip architecture"):
        load_encoder("openclip:No-Such-Arch-123", "cpu")
    with pytest.raises(EncoderError, match=":none"):  # random init is not allowed implicitly
        load_encoder(f"openclip:{tiny_name}", "cpu")
    with pytest.raises(EncoderError, match="unknown pretrained tag"):
        load_encoder(f"openclip:{tiny_name}:no-such-tag", "cpu")
    with pytest.raises(EncoderError, match="checkpoint not found"):
        load_encoder(f"openclip:{tiny_name}@{tmp_path / 'missing.safetensors'}", "cpu")
    with pytest.raises(EncoderError, match="folder not found"):
        load_encoder(f"openclip:local-dir:{tmp_path / 'nope'}", "cpu")
    wrong = tmp_path / "wrong.safetensors"
    from safetensors.torch import save_file

    save_file({"foo": torch.zeros(2)}, str(wrong))
    with pytest.raises(EncoderError, match="does not match"):
        load_encoder(f"openclip:{tiny_name}@{wrong}", "cpu")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(EncoderError, match="garbage.safetensors"):
        load_encoder(f"openclip:{tiny_name}@{garbage}", "cpu")


def test_parse_spec_grammar() -> None:
    assert parse_spec("openclip:ViT-B-32:openai").pretrained == "openai"
    assert parse_spec("openclip:ViT-B-32").pretrained is None
    assert parse_spec("openclip:ViT-B-32:none").random_init
    assert parse_spec("openclip:hf-hub:org/repo").schema == "hf-hub"
    assert parse_spec("openclip:local-dir:/a/b").model_name == "local-dir:/a/b"
    spec = parse_spec("openclip:ViT-B-32@/x/y.safetensors")
    assert spec.model_name == "ViT-B-32" and spec.checkpoint == "/x/y.safetensors"


def test_resolve_device() -> None:
    assert resolve_device("auto") in {"cuda", "mps", "cpu"}
    assert resolve_device("CPU") == "cpu"
    with pytest.raises(EncoderError, match="unknown device"):
        resolve_device("tpu")
    with pytest.raises(EncoderError):
        resolve_device("cuda:99")

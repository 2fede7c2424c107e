"""open_clip encoders: any model open_clip can build, with weights from a tag, the HF hub, a local
folder or a checkpoint file.

Spec grammar (after the ``openclip:`` prefix):

- ``ARCH:TAG``            built-in architecture + open_clip pretrained tag (``ViT-B-32:openai``);
- ``ARCH``                the architecture's default tag (``openai`` if offered, else the first);
- ``ARCH:none``           untrained weights (seeded, deterministic) -- only for tests;
- ``hf-hub:org/repo``     config + weights from the Hugging Face hub;
- ``local-dir:/path``     a folder with ``open_clip_config.json`` and a weights file;
- ``ARCH@/path/file``     a checkpoint ``.safetensors`` / ``.pt`` / ``.pth`` / ``.bin``.

Checkpoints from users (``@file``, ``local-dir:``, ``hf-hub:``) are read without running code:
safetensors, or ``torch.load(weights_only=True)`` with no unsafe fallback. A pickle that would
need to execute code is refused with EncoderError.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from clustermine.method.encoders.base import Encoder
from clustermine.method.encoders.decode import GpuPreprocess, RGBThen
from clustermine.core.errors import EncoderError
from clustermine.core.hashing import file_hash

PREFIX = "openclip:"
CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
RANDOM_INIT_SEED = 0
_LOCAL_DIR_WEIGHTS = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth",
    "model.safetensors",
    "pytorch_model.bin",
    "pytorch_model.pth",
    "model.pth",
)

_BUILD_LOCK = threading.Lock()


@dataclass(frozen=True)
class OpenClipSpec:
    """A parsed ``openclip:`` spec: exactly one weights source is set (or ``random_init``)."""

    model_name: str  # what open_clip is given: ARCH, "hf-hub:org/repo" or "local-dir:/path"
    pretrained: str | None = None  # open_clip tag
    checkpoint: str | None = None  # user checkpoint file
    random_init: bool = False

    @property
    def schema(self) -> str | None:
        """``"hf-hub"``, ``"local-dir"`` or None for a built-in architecture."""
        for schema in ("hf-hub", "local-dir"):
            if self.model_name.startswith(schema + ":"):
                return schema
        return None


def parse_spec(spec: str) -> OpenClipSpec:
    """Parse an ``openclip:...`` spec (see module docstring); raises EncoderError when malformed."""
    if not spec.startswith(PREFIX) or not spec[len(PREFIX) :].strip():
        raise EncoderError(f"not an open_clip spec: {spec!r} (expected openclip:ARCH:TAG and similar)")
    body = spec[len(PREFIX) :].strip()
    if body.startswith(("hf-hub:", "local-dir:")):
        schema, _, ident = body.partition(":")
        if not ident.strip():
            raise EncoderError(f"{spec!r}: nothing after '{schema}:'")
        return OpenClipSpec(model_name=f"{schema}:{ident.strip()}")
    if "@" in body:
        arch, _, path = body.partition("@")
        if not arch or not path:
            raise EncoderError(f"{spec!r}: expected openclip:ARCH@/path/to/checkpoint")
        return OpenClipSpec(model_name=arch.strip(), checkpoint=os.path.expanduser(path.strip()))
    arch, _, tag = body.partition(":")
    if tag.strip().lower() == "none":
        return OpenClipSpec(model_name=arch.strip(), random_init=True)
    return OpenClipSpec(model_name=arch.strip(), pretrained=tag.strip() or None)


# --------------------------------------------------------------------------------------------
# Safe checkpoint loading
# --------------------------------------------------------------------------------------------


def safe_load_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file without running code from it (safetensors or weights-only pickle).

    Accepts a plain state dict or one nested under ``state_dict`` / ``model``; strips a
    ``module.`` prefix. Raises EncoderError naming the file when it is missing, unsafe or corrupt.
    """
    file = Path(path)
    if not file.is_file():
        raise EncoderError(f"checkpoint not found: {file}")
    if file.suffix.lower() not in CHECKPOINT_SUFFIXES:
        raise EncoderError(
            f"{file}: unsupported checkpoint type {file.suffix!r} (use {', '.join(CHECKPOINT_SUFFIXES)})"
        )
    try:
        if file.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(file), device="cpu")
        else:
            obj = torch.load(str(file), map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, TypeError, RuntimeError, SafetensorError...
        raise EncoderError(
            f"{file}: refused to load checkpoint: it is not a plain tensor file (a pickle that "
            f"would run code when loaded, or corrupt data). Save it as .safetensors or a "
            f"weights-only state dict. Detail: {_load_error_detail(exc)}"
        ) from None
    return _unwrap_state_dict(obj, file)


def _load_error_detail(exc: BaseException) -> str:
    """The informative part of a torch / safetensors load error (never torch's advice to
    retry with ``weights_only=False``, which would run the file's code)."""
    text = str(exc)
    match = re.search(r"(?:unsupported|Unsupported global:) GLOBAL ([\w.]+)", text)
    if match:
        return f"it references {match.group(1)}, which a weights-only load does not allow"
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    if "weights_only" in first or "Weights only load failed" in first:
        return f"{type(exc).__name__} in the weights-only unpickler"
    return first[:200]


def _unwrap_state_dict(obj: Any, file: Path) -> dict[str, torch.Tensor]:
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj:
        raise EncoderError(f"{file}: checkpoint holds no state dict")
    state = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise EncoderError(f"{file}: checkpoint holds no tensors")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def load_weights_into(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load an open_clip state dict into ``model`` strictly, with open_clip's format fix-ups."""
    from open_clip.convert import convert_state_dict
    from open_clip.model import convert_to_custom_text_state_dict, resize_pos_embed, resize_text_pos_embed

    state = convert_state_dict(model, state)
    if "positional_embedding" in state and not hasattr(model, "positional_embedding"):
        state = convert_to_custom_text_state_dict(state)
    for name in ("logit_scale", "logit_bias"):
        param = getattr(model, name, None)
        if name in state and param is not None and param.ndim != state[name].ndim:
            state[name] = state[name].reshape(param.shape)
    if "logit_bias" not in state and getattr(model, "logit_bias", None) is not None:
        state["logit_bias"] = torch.zeros_like(state["logit_scale"])
    state.pop("text.transformer.embeddings.position_ids", None)
    resize_pos_embed(state, model)
    resize_text_pos_embed(state, model)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise EncoderError(f"{source}: checkpoint does not match the architecture: {str(exc)[:400]}") from None


def _local_dir_checkpoint(folder: Path) -> Path:
    for name in _LOCAL_DIR_WEIGHTS:
        if (folder / name).is_file():
            return folder / name
    found = sorted(p for p in folder.iterdir() if p.suffix.lower() in CHECKPOINT_SUFFIXES)
    found.sort(key=lambda p: p.suffix.lower() != ".safetensors")
    if not found:
        raise EncoderError(f"no weights file ({', '.join(CHECKPOINT_SUFFIXES)}) in {folder}")
    return found[0]


# --------------------------------------------------------------------------------------------
# Model construction
# --------------------------------------------------------------------------------------------


def _download_hint(spec: str, arch: str) -> str:
    return (
        f"weights for {spec} could not be downloaded (no network?): pass a local checkpoint with "
        f"openclip:{arch}@/path/to/checkpoint.safetensors or openclip:local-dir:/path/to/folder"
    )


def _default_tag(arch: str, spec: str) -> str:
    import open_clip

    if arch not in open_clip.list_models():
        raise EncoderError(_unknown_arch(arch, spec))
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if not tags:
        raise EncoderError(
            f"{spec}: open_clip has no pretrained weights for {arch}; pass a checkpoint with "
            f"openclip:{arch}@/path/to/checkpoint.safetensors (or openclip:{arch}:none for an "
            "untrained model, useful only for tests)"
        )
    return "openai" if "openai" in tags else tags[0]


def _unknown_arch(arch: str, spec: str) -> str:
    import open_clip

    names = open_clip.list_models()
    close = [n for n in names if arch.lower().replace("/", "-") in n.lower()][:8]
    hint = f" (similar: {', '.join(close)})" if close else f" ({len(names)} known; see open_clip.list_models())"
    return f"{spec}: unknown open_clip architecture {arch!r}{hint}"


def _create(spec: str, parsed: OpenClipSpec) -> tuple[torch.nn.Module, Any, str]:
    """Build the model on CPU -> (model, val transform, weights identity)."""
    import open_clip

    kwargs: dict[str, Any] = {"device": "cpu", "pretrained_text": False}
    if parsed.schema is None and parsed.model_name not in open_clip.list_models():
        raise EncoderError(_unknown_arch(parsed.model_name, spec))
    if parsed.random_init:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_INIT_SEED)
            model, _, val = open_clip.create_model_and_transforms(parsed.model_name, pretrained=None, **kwargs)
        return model, val, f"random-init:seed{RANDOM_INIT_SEED}"
    if parsed.checkpoint is not None:
        state = safe_load_state_dict(parsed.checkpoint)
        model, _, val = open_clip.create_model_and_transforms(parsed.model_name, pretrained=None, **kwargs)
        load_weights_into(model, state, parsed.checkpoint)
        return model, val, f"sha256:{file_hash(parsed.checkpoint)[:16]}"
    if parsed.schema is not None:
        return _create_from_location(spec, parsed, kwargs)
    tag = parsed.pretrained or _default_tag(parsed.model_name, spec)
    if tag not in open_clip.list_pretrained_tags_by_model(parsed.model_name):
        raise EncoderError(
            f"{spec}: unknown pretrained tag {tag!r} for {parsed.model_name}; available: "
            f"{', '.join(open_clip.list_pretrained_tags_by_model(parsed.model_name)) or 'none'}"
        )
    try:
        model, _, val = open_clip.create_model_and_transforms(parsed.model_name, pretrained=tag, **kwargs)
    except Exception as exc:
        raise EncoderError(f"{_download_hint(spec, parsed.model_name)} ({_short(exc)})") from None
    return model, val, f"pretrained:{tag}"


def _create_from_location(spec: str, parsed: OpenClipSpec, kwargs: dict[str, Any]) -> tuple[torch.nn.Module, Any, str]:
    """``hf-hub:`` / ``local-dir:``: config via open_clip, weights loaded safely by us."""
    import open_clip

    ident = parsed.model_name.split(":", 1)[1]
    if parsed.schema == "local-dir" and not Path(ident).is_dir():
        raise EncoderError(f"{spec}: folder not found: {ident}")
    try:
        model, _, val = open_clip.create_model_and_transforms(parsed.model_name, load_weights=False, **kwargs)
        if parsed.schema == "local-dir":
            weights = _local_dir_checkpoint(Path(ident))
        else:
            from open_clip.pretrained import download_pretrained_from_hf

            weights = Path(download_pretrained_from_hf(ident))
    except EncoderError:
        raise
    except Exception as exc:
        if parsed.schema == "hf-hub":
            raise EncoderError(f"{_download_hint(spec, 'ARCH')} ({_short(exc)})") from None
        raise EncoderError(f"{spec}: could not build the model: {_short(exc)}") from None
    load_weights_into(model, safe_load_state_dict(weights), str(weights))
    return model, val, f"sha256:{file_hash(weights)[:16]}"


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:300]}"


# --------------------------------------------------------------------------------------------
# Encoder
# --------------------------------------------------------------------------------------------


class OpenClipEncoder(Encoder):
    """An open_clip model as an :class:`Encoder` (uses the model's own validation preprocessing)."""

    text_template = "a photo of a {}."

    def __init__(self, spec: str, device: str = "cpu") -> None:
        import open_clip

        self.spec = spec
        self.device = device
        self._parsed = parse_spec(spec)
        with _BUILD_LOCK:
            model, transform, weights = _create(spec, self._parsed)
        self._model = model.eval().to(device)
        self._transform = transform
        self._weights = weights
        try:
            self._tokenizer = open_clip.get_tokenizer(self._parsed.model_name)
        except Exception as exc:
            raise EncoderError(f"{spec}: could not load the tokenizer ({_short(exc)})") from None
        self._pp_cfg = dict(open_clip.get_model_preprocess_cfg(self._model))
        self.dim = int(self._infer_dim())

    def _infer_dim(self) -> int:
        proj = getattr(self._model, "text_projection", None)
        if isinstance(proj, torch.Tensor):
            return int(proj.shape[-1])
        size = self._pp_cfg.get("size", 224)
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        with torch.inference_mode():
            out = self._model.encode_image(torch.zeros(1, 3, h, w, device=self.device))
        return int(out.shape[-1])

    @property
    def model(self) -> torch.nn.Module:
        """The underlying open_clip model (eval mode, on ``device``)."""
        return self._model

    @property
    def fingerprint(self) -> dict[str, Any]:
        """Kind, architecture, weights identity, image size, mean/std, interpolation, dim."""
        cfg = self._pp_cfg
        return {
            "kind": "openclip",
            "model": self._parsed.model_name,
            "weights": self._weights,
            "image_size": _jsonable(cfg.get("size")),
            "mean": _jsonable(cfg.get("mean")),
            "std": _jsonable(cfg.get("std")),
            "interpolation": cfg.get("interpolation"),
            "resize_mode": cfg.get("resize_mode"),
            "dim": self.dim,
        }

    def preprocess(self, img: Image.Image) -> torch.Tensor:
        """RGB PIL image -> [3, H, W] with the model's own validation transform."""
        return self._transform(img.convert("RGB") if img.mode != "RGB" else img)

    def image_transform(self) -> RGBThen:
        """:meth:`preprocess` as a small picklable object (for decode worker processes)."""
        return RGBThen(self._transform)

    def gpu_preprocess(self) -> GpuPreprocess | None:
        """GPU resize / crop / normalise when the model's transform is the usual shortest-side
        resize + square centre crop; None (CPU decoding) for other resize modes."""
        cfg = self._pp_cfg
        size = cfg.get("size", 224)
        side = size if isinstance(size, int) else (size[0] if len(set(size)) == 1 else None)
        interp = cfg.get("interpolation", "bicubic")
        if side is None or cfg.get("resize_mode", "shortest") != "shortest" or interp not in ("bicubic", "bilinear"):
            return None
        return GpuPreprocess(int(side), int(side), tuple(cfg["mean"]), tuple(cfg["std"]), interp)

    def _embed_images(self, x: torch.Tensor) -> torch.Tensor:
        return self._model.encode_image(x)

    def _embed_texts(self, texts: list[str]) -> torch.Tensor:
        tokens = self._tokenizer(texts).to(self.device)
        return self._model.encode_text(tokens)


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value

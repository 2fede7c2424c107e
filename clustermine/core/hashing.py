"""Content hashes of files: the one helper, on :func:`hashlib.file_digest`.

Digests key caches on disk (image features by the file's sha1, encoder fingerprints by the weight
file's sha256), so the algorithm of each use is fixed by its caller and must not change.
"""

from __future__ import annotations

import functools
import hashlib
import os


def file_hash(path: str | os.PathLike[str], algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes with ``algorithm`` (any :func:`hashlib.new` name).

    Raises OSError when the file cannot be read.
    """
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, algorithm).hexdigest()


@functools.cache
def cached_file_hash(path: str, algorithm: str = "sha256") -> str:
    """:func:`file_hash` memoised per (path, algorithm) for the process: for files that do not
    change while it runs (installed model weights). Do not use it on user files."""
    return file_hash(path, algorithm)

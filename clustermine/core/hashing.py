"""Content hashes of files (on :func:`hashlib.file_digest`) and of arrays: the one home of both.

Digests key caches on disk (image features by the file's sha1, encoder fingerprints by the weight
file's sha256, a run's 2-D maps by its features' :func:`array_hash`), so the algorithm of each use is
fixed by its caller and must not change.
"""

from __future__ import annotations

import functools
import hashlib
import os

import numpy as np

#: Rows of an array hashed at a time: a memory-mapped matrix is read block by block, never whole.
_ARRAY_BLOCK_ROWS = 65536


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


def array_hash(array: np.ndarray) -> str:
    """SHA-1 hex of an array's shape, dtype and values (C order); equal for a memmap and its copy in memory.

    The header is ``f"{shape}|{dtype}"``, then the bytes, read ``_ARRAY_BLOCK_ROWS`` rows at a time.
    """
    h = hashlib.sha1(f"{tuple(array.shape)}|{array.dtype}".encode())
    rows = np.atleast_1d(array)
    for lo in range(0, rows.shape[0], _ARRAY_BLOCK_ROWS):
        h.update(np.ascontiguousarray(rows[lo:lo + _ARRAY_BLOCK_ROWS]).tobytes())
    return h.hexdigest()

"""Images marked "not ID" by the user: an append-only log (who, when) and its replay into a mask.

Like the concept edits (:mod:`.concepts`), every exclude / restore is one line of
``exclusions.jsonl``, written atomically under a file lock, so two sessions lose nothing. The log
names images by their scanned path (``images.jsonl``) and feature row. Excluded images take no part
in voting or calibration after the next re-mine (:func:`clustermine.workflows.pipeline.remine`); the held-out
mask leaves them out at once.
"""

from __future__ import annotations

import os
from fnmatch import fnmatchcase
from pathlib import Path

import numpy as np
from filelock import Timeout

from clustermine.core.errors import ClusterMineError, RunError
from clustermine.store import layout
from clustermine.store.concepts import read_edit_log
from clustermine.store.store import RunStore, now_iso
from clustermine.core.config import user_identity
from clustermine.core.identity import Actor
from clustermine.core.roles import require
from clustermine.core.storage import atomic_write_jsonl

EXCLUSION_ACTIONS = ("exclude", "restore")


def replay_exclusions(entries: list[dict], n_rows: int) -> np.ndarray:
    """bool [n_rows]: rows whose last logged action is ``exclude``."""
    mask = np.zeros(n_rows, dtype=bool)
    for e in entries:
        row = e.get("row")
        if isinstance(row, int) and 0 <= row < n_rows:
            mask[row] = e.get("action") == "exclude"
    return mask


_GLOB_CHARS = frozenset("*?[")


def _match_many(text: str, resolved: list[tuple[int, str, str]], n: int) -> list[int]:
    """Rows under the folder or matching the glob ``text`` (sorted); ClusterMineError when none."""
    if not text.strip():
        raise ClusterMineError("an empty path names no image")
    if _GLOB_CHARS & set(text):
        pattern = os.path.expanduser(text)
        absolute = os.path.abspath(pattern)
        rows = sorted(row for row, path, real in resolved
                      if fnmatchcase(path, pattern) or fnmatchcase(real, absolute))
        if not rows:
            raise ClusterMineError(f"{text}: the pattern matches none of this run's {n} usable images")
        return rows
    prefix = text.replace("\\", "/").strip("/")
    rows = sorted(row for row, path, _ in resolved if path.startswith(prefix + "/")) if prefix else []
    folder = Path(text).expanduser()
    if not rows and folder.is_dir():
        base = str(folder.resolve())
        rows = sorted(row for row, _, real in resolved if real.startswith(base.rstrip(os.sep) + os.sep))
        if not rows:
            raise ClusterMineError(f"{text}: this folder holds none of this run's {n} usable images")
    if not rows:
        raise ClusterMineError(f"{text}: not one of this run's usable images, nor a folder or pattern matching any")
    return rows


class ExclusionTable(RunStore):
    """A run's excluded images ("not ID")."""

    def exclusion_log(self) -> list[dict]:
        """The exclusion log, oldest first ([] when nothing was ever excluded)."""
        return read_edit_log(self.file(layout.EXCLUSIONS))

    def excluded_mask(self) -> np.ndarray:
        """bool [N_ok]: images the user marked "not ID" (and did not restore)."""
        n = len(self.image_records(ok_only=True))
        key = ("excluded", layout.file_stamp(self.file(layout.EXCLUSIONS)), n)
        cached = self.cache.get("excluded")
        if cached is not None and cached[0] == key:
            return cached[1]
        mask = replay_exclusions(self.exclusion_log(), n)
        self.cache["excluded"] = (key, mask)
        return mask

    def holdout_mask(self) -> np.ndarray:
        """bool [N_ok]: held-out images that calibrate the threshold; excluded images never do."""
        return super().holdout_mask() & ~self.excluded_mask()

    def resolve_image_groups(self, keys: list[str | int | os.PathLike]) -> list[tuple[str, str, list[int]]]:
        """Per key, in order: (the key as text, its kind, its feature rows); kinds: ``row``, ``image``,
        ``folder``, ``pattern``. A key is a row (int), an image
        path (as scanned relative to the images folder, absolute, or relative to the current
        folder), a folder (every usable image under it, at any depth) or a glob pattern (``*``,
        ``?``, ``[...]``; matched against the scanned and the absolute paths, ``*`` crosses ``/``).
        ClusterMineError names the first key that matches no usable image of the run."""
        records = self.image_records(ok_only=True)
        n = len(records)
        by_path: dict[str, int] = {}
        resolved: list[tuple[int, str, str]] = []  # (row, scanned path, resolved absolute path)
        for r in records:
            real = str(Path(r["abs_path"]).resolve())
            by_path[r["path"]] = r["row"]
            by_path[real] = r["row"]
            resolved.append((r["row"], r["path"], real))
        out: list[tuple[str, str, list[int]]] = []
        for k in keys:
            if isinstance(k, (int, np.integer)):
                if not 0 <= int(k) < n:
                    raise ClusterMineError(f"image row {k} is out of range (the run has {n} usable images)")
                out.append((str(int(k)), "row", [int(k)]))
                continue
            text = str(k)
            row = by_path.get(text)
            if row is None and text.strip():
                row = by_path.get(str(Path(text).expanduser().resolve()))
            if row is not None:
                out.append((text, "image", [row]))
                continue
            out.append((text, "pattern" if _GLOB_CHARS & set(text) else "folder",
                        _match_many(text, resolved, n)))
        return out

    def resolve_images(self, keys: list[str | int | os.PathLike]) -> list[int]:
        """Feature rows of ``keys`` (see :meth:`resolve_image_groups`), in key order, without repeats."""
        rows = [row for _, _, group in self.resolve_image_groups(keys) for row in group]
        return list(dict.fromkeys(rows))

    def set_excluded(self, keys: list[str | int | os.PathLike], *, restore: bool = False,
                     user: str | None = None, actor: Actor | None = None) -> list[int]:
        """Mark images "not ID" (or restore them with ``restore``) and log who did it and when.

        Returns the rows whose state changed (already excluded / not excluded rows are skipped).
        Safe against concurrent sessions (file lock); the log is rewritten atomically.
        ``actor``: who acts; PermissionDenied before anything is written when its role may not.
        """
        require(actor, "exclude")
        if self.status != "done":
            raise RunError(f"{self.path}: images can be excluded once mining has finished (status {self.status!r})")
        rows = self.resolve_images(keys)
        records = {r["row"]: r for r in self.image_records(ok_only=True)}
        action = "restore" if restore else "exclude"

        try:
            with self.lock(layout.EXCLUSIONS_LOCK):
                log = self.exclusion_log()
                mask = replay_exclusions(log, len(records))
                changed = []
                for row in dict.fromkeys(rows):
                    if bool(mask[row]) == (not restore):
                        continue
                    log.append({"seq": len(log) + 1, "ts": now_iso(),
                                "user": user_identity(user or (actor.name if actor else None)), "action": action,
                                "row": row, "path": records[row]["path"]})
                    mask[row] = not restore
                    changed.append(row)
                if changed:
                    atomic_write_jsonl(self.file(layout.EXCLUSIONS), log)
        except Timeout as exc:
            raise RunError(f"{self.path}: another session holds the exclusion lock; try again") from exc
        self.cache.pop("excluded", None)
        return changed

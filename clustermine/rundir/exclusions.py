"""Images marked "not ID" by the user: an append-only log (who, when) and its replay into a mask.

Like the concept edits (:mod:`.concepts`), every exclude / restore is one line of
``exclusions.jsonl``, written atomically under a file lock, so two sessions lose nothing. The log
names images by their scanned path (``images.jsonl``) and feature row. Excluded images take no part
in voting or calibration after the next re-mine (:func:`clustermine.pipeline.remine`); the held-out
mask leaves them out at once.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from filelock import Timeout

from ..errors import ClusterMineError, RunError
from . import layout
from .concepts import read_edit_log
from .store import RunStore, now_iso

EXCLUSION_ACTIONS = ("exclude", "restore")


def replay_exclusions(entries: list[dict], n_rows: int) -> np.ndarray:
    """bool [n_rows]: rows whose last logged action is ``exclude``."""
    mask = np.zeros(n_rows, dtype=bool)
    for e in entries:
        row = e.get("row")
        if isinstance(row, int) and 0 <= row < n_rows:
            mask[row] = e.get("action") == "exclude"
    return mask


class ExclusionTable(RunStore):
    """A run's excluded images ("not ID")."""

    def exclusion_log(self) -> list[dict]:
        """The exclusion log, oldest first ([] when nothing was ever excluded)."""
        return read_edit_log(self.file(layout.EXCLUSIONS))

    def excluded_mask(self) -> np.ndarray:
        """bool [N_ok]: images the user marked "not ID" (and did not restore)."""
        n = len(self.image_records(ok_only=True))
        key = ("excluded", layout.file_stamp(self.file(layout.EXCLUSIONS)), n)
        cached = self._cache.get("excluded")
        if cached is not None and cached[0] == key:
            return cached[1]
        mask = replay_exclusions(self.exclusion_log(), n)
        self._cache["excluded"] = (key, mask)
        return mask

    def holdout_mask(self) -> np.ndarray:
        """bool [N_ok]: held-out images that calibrate the threshold; excluded images never do."""
        return super().holdout_mask() & ~self.excluded_mask()

    def resolve_images(self, keys: list[str | int | os.PathLike]) -> list[int]:
        """Feature rows of ``keys``: ints are rows; strings are paths as scanned (relative to the
        images folder), absolute paths or paths relative to the current folder. ClusterMineError
        names the first key that is not a usable image of the run."""
        records = self.image_records(ok_only=True)
        by_path: dict[str, int] = {}
        for r in records:
            by_path[r["path"]] = r["row"]
            by_path[str(Path(r["abs_path"]).resolve())] = r["row"]
        n = len(records)
        rows: list[int] = []
        for k in keys:
            if isinstance(k, (int, np.integer)):
                if not 0 <= int(k) < n:
                    raise ClusterMineError(f"image row {k} is out of range (the run has {n} usable images)")
                rows.append(int(k))
                continue
            text = str(k)
            row = by_path.get(text)
            if row is None:
                row = by_path.get(str(Path(text).expanduser().resolve()))
            if row is None:
                raise ClusterMineError(f"{text}: not one of this run's usable images")
            rows.append(row)
        return rows

    def set_excluded(self, keys: list[str | int | os.PathLike], *, restore: bool = False,
                     user: str | None = None) -> list[int]:
        """Mark images "not ID" (or restore them with ``restore``) and log who did it and when.

        Returns the rows whose state changed (already excluded / not excluded rows are skipped).
        Safe against concurrent sessions (file lock); the log is rewritten atomically.
        """
        if self.status != "done":
            raise RunError(f"{self.path}: images can be excluded once mining has finished (status {self.status!r})")
        rows = self.resolve_images(keys)
        records = {r["row"]: r for r in self.image_records(ok_only=True)}
        action = "restore" if restore else "exclude"
        from ..storage import atomic_write_jsonl

        try:
            with self._lock(layout.EXCLUSIONS_LOCK):
                log = self.exclusion_log()
                mask = replay_exclusions(log, len(records))
                changed = []
                for row in dict.fromkeys(rows):
                    if bool(mask[row]) == (not restore):
                        continue
                    log.append({"seq": len(log) + 1, "ts": now_iso(),
                                "user": user or os.environ.get("USER") or "unknown", "action": action,
                                "row": row, "path": records[row]["path"]})
                    mask[row] = not restore
                    changed.append(row)
                if changed:
                    atomic_write_jsonl(self.file(layout.EXCLUSIONS), log)
        except Timeout as exc:
            raise RunError(f"{self.path}: another session holds the exclusion lock; try again") from exc
        self._cache.pop("excluded", None)
        return changed

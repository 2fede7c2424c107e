"""The runs under a folder, read from their ``run.json`` files only (fast: the app's frame calls
it on every page and it imports nothing beyond the standard library)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from clustermine.store import layout


def list_runs(root: str | os.PathLike) -> list[dict]:
    """Run folders directly under ``root``, newest first.

    Each: ``run_id`` (the folder name), ``path``, ``status`` (``"corrupt"`` when run.json cannot be
    read), ``created`` (ISO time, ``""`` if unknown), ``summary`` and ``config`` (dicts). Symbolic
    links are not followed; a missing ``root`` gives ``[]``.
    """
    out = []
    try:
        entries = list(os.scandir(root))
    except OSError:
        return out
    for e in entries:
        if e.name.startswith(layout.DELETING_PREFIX):
            continue
        meta_path = layout.meta_path(e.path)
        try:
            if not e.is_dir(follow_symlinks=False) or not meta_path.is_file():
                continue
        except OSError:
            continue
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if not isinstance(meta, dict):
                raise ValueError("not an object")
        except (ValueError, OSError):
            out.append({"run_id": e.name, "path": e.path, "status": "corrupt", "created": "", "label": "", "summary": {},
                        "config": {}})
            continue
        out.append({"run_id": e.name, "path": e.path, "status": str(meta.get("status", "?")),
                    "created": str(meta.get("created") or ""), "label": str(meta.get("label") or ""),
                    "summary": meta.get("summary") or {},
                    "config": meta.get("config") or {}})
    return sorted(out, key=lambda r: r["created"], reverse=True)

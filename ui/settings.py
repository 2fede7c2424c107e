"""Where runs and data live, from the environment (read on every call: tests change it)."""

from __future__ import annotations

import os
from pathlib import Path

from clustermine.workflows.uploads import default_data_roots


def runs_root() -> Path:
    """``$CLUSTERMINE_RUNS_ROOT`` or ``./runs`` (absolute; created when missing)."""
    root = Path(os.environ.get("CLUSTERMINE_RUNS_ROOT") or "runs").expanduser().absolute()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError:
        pass
    return root


def data_roots() -> list[Path]:
    """Folders a typed server-side path may point into (see clustermine.workflows.uploads.default_data_roots)."""
    return default_data_roots(runs_root())


def umap_warmup_enabled() -> bool:
    return os.environ.get("CLUSTERMINE_UMAP_WARMUP", "1") not in ("0", "false", "no")

"""Run administration: give a run a label, delete a run (never while its job runs)."""

from __future__ import annotations

import datetime as _dt
import os
import shutil
import time
from pathlib import Path

from clustermine.core.errors import ClusterMineError, RunError
from clustermine.core.identity import Actor
from clustermine.core.roles import require
from clustermine.store import layout
from clustermine.store.store import RunStore
from clustermine.workflows.jobs import job_state

MAX_LABEL_CHARS = 120
# A run whose progress file changed this recently is treated as being mined (by the CLI, which
# leaves no job file), so it is not deleted under a running process.
RECENT_PROGRESS_S = 120.0


def clean_label(text: str) -> str:
    """``text`` on one line, trimmed; ClusterMineError when it is too long."""
    label = " ".join(str(text or "").split())
    if len(label) > MAX_LABEL_CHARS:
        raise ClusterMineError(f"label is {len(label)} characters long; at most {MAX_LABEL_CHARS} are allowed")
    return label


def set_label(run_dir: str | os.PathLike, text: str, *, actor: Actor | None = None) -> str:
    """Store ``text`` (one line, at most :data:`MAX_LABEL_CHARS`; empty removes the label) as the
    run's ``label`` in run.json (locked, atomic). Returns the stored label. ``actor``: who acts;
    PermissionDenied (nothing written) when its role may not label runs."""
    require(actor, "label")

    label = clean_label(text)
    store = RunStore.open(run_dir, require_complete=False)
    store.update_meta(label=label)
    return label


def _appears_running(run_dir: Path) -> str | None:
    """Why the run must not be deleted now (its job is alive or it is being mined), else None."""

    state = job_state(run_dir)
    if state["alive"]:
        return f"its mining job is running (pid {state['pid']}); cancel it first"
    prog = run_dir / layout.PROGRESS
    try:
        age = time.time() - prog.stat().st_mtime
    except OSError:
        return None

    try:
        status = RunStore.open(run_dir, require_complete=False).status
    except RunError:
        return None
    if status == "running" and age < RECENT_PROGRESS_S:
        return f"it is being mined (progress updated {age:.0f} s ago); cancel it or wait"
    return None


def delete_run(run_dir: str | os.PathLike, *, actor: Actor | None = None) -> None:
    """Delete the run folder ``run_dir``; refused (ClusterMineError) unless it is a ClusterMine run
    folder (it holds run.json; not a symbolic link) whose job is not running. The folder is first
    renamed aside (so it vanishes from the run list at once), then removed. ``actor``: who acts;
    PermissionDenied (nothing deleted) when its role may not delete runs."""
    require(actor, "delete")
    path = Path(run_dir)
    if path.is_symlink():
        raise ClusterMineError(f"{path}: is a symbolic link; not deleted")
    if not path.is_dir():
        raise RunError(f"{path}: run folder not found")
    if not layout.meta_path(path).is_file():
        raise RunError(f"{layout.meta_path(path)}: missing; {path} is not a ClusterMine run folder, not deleted")
    why = _appears_running(path)
    if why:
        raise ClusterMineError(f"{path}: not deleted: {why}")
    aside = layout.deleting_name(path, f"{_dt.datetime.now():%Y%m%d-%H%M%S-%f}")
    try:
        path.rename(aside)
    except OSError as exc:
        raise ClusterMineError(f"{path}: cannot be deleted ({exc})") from exc
    shutil.rmtree(aside, ignore_errors=True)

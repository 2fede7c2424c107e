"""Long jobs outside the web app's script runs: one worker subprocess per run.

A Streamlit script run is re-executed on every click and stopped when the user navigates, so the
mining job never runs inside it. :func:`start_mine_job` starts ``python -m clustermine mine ...``
(an argument list, never a shell; its own session, so a rerun, a closed tab or even a restarted
web server does not kill it) with its output in ``<run>/job.log`` and its pid in ``<run>/job.json``.
The worker writes ``progress.json`` and ``run.json`` itself; the UI only polls them
(:func:`job_state`), asks for a cancel through the run's ``cancel.requested`` flag
(:func:`cancel_job`), and if a worker died without saying so, :func:`reconcile` marks the run
failed (finished work stays in the feature cache: resuming re-encodes nothing already done).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .errors import ClusterMineError, RunError
from .runs import Run, now_iso
from .storage import atomic_write_json

from .rundir.layout import JOB_FILE, LOG_FILE
_PROCS: dict[int, subprocess.Popen] = {}  # workers started by this process (reaped by poll())
_PKG_ROOT = Path(__file__).resolve().parents[1]


def mine_command(config: dict, run_dir: str | os.PathLike, python: str | None = None) -> list[str]:
    """The worker's argument list for a run whose ``run.json`` config is ``config``.

    It reproduces exactly that config through the CLI, so the worker's ``Run.create`` sees the same
    settings and resumes the run rather than refusing it.
    """
    images_dir = config.get("images_dir")
    if not images_dir:
        raise RunError(f"{Path(run_dir) / 'run.json'}: the run's config has no images_dir")
    argv = [python or sys.executable, "-m", "clustermine", "mine", str(images_dir), "--out", str(run_dir),
            "--encoder", str(config.get("encoder", "offline")), "--clusterer", str(config.get("clusterer", "temi")),
            "--corpus", str(config.get("corpus", "wordnet-nouns")), "--tau", repr(float(config.get("tau", 0.01))),
            "--seed", str(int(config.get("seed", 0))), "--holdout", repr(float(config.get("holdout_fraction", 0.1))),
            "--device", str(config.get("device", "auto")), "--batch-size", str(int(config.get("batch_size", 32))),
            "--quiet"]
    if config.get("n_clusters") is not None:
        argv += ["--clusters", str(int(config["n_clusters"]))]
    if config.get("template") is not None:
        argv += ["--template", str(config["template"])]
    if config.get("max_pixels") is not None:
        argv += ["--max-pixels", str(int(config["max_pixels"]))]
    return argv


def _start_token(pid: int) -> str | None:
    """The process start time from /proc (guards against a recycled pid); None off Linux."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
        return raw[raw.rindex(")") + 2:].split()[19]
    except (OSError, ValueError, IndexError):
        return None


def _proc_state(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
        return raw[raw.rindex(")") + 2:].split()[0]
    except (OSError, ValueError, IndexError):
        return None


def is_alive(pid: int | None, token: str | None = None) -> bool:
    """True while the worker ``pid`` runs (zombies and recycled pids count as dead)."""
    if not pid:
        return False
    proc = _PROCS.get(pid)
    if proc is not None:
        return proc.poll() is None
    try:
        if os.waitpid(pid, os.WNOHANG) != (0, 0):
            return False  # it was our child and has just been reaped
    except ChildProcessError:
        pass
    except OSError:
        pass
    state = _proc_state(pid)
    if state is not None:
        if state in ("Z", "X"):
            return False
        return token is None or _start_token(pid) == token
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_job(run_dir: str | os.PathLike) -> dict | None:
    """The ``job.json`` of a run, or None when no job was started from the app."""
    import json

    try:
        return json.loads((Path(run_dir) / JOB_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def start_mine_job(run_dir: str | os.PathLike, *, env: dict | None = None) -> dict:
    """Start (or resume) mining the run in ``run_dir`` in a worker subprocess; returns job.json.

    The run must exist (``Run.create`` with its full config, images in place) and not be finished.
    Refuses to start a second worker while one is alive.
    """
    run_dir = Path(run_dir)
    run = Run.open(run_dir, require_complete=False)
    if run.status == "done":
        raise RunError(f"{run_dir}: the run is already finished")
    state = job_state(run_dir)
    if state["alive"] and run.status in ("cancelled", "failed"):  # the old worker is still exiting
        end = time.monotonic() + 20
        while time.monotonic() < end and state["alive"]:
            time.sleep(0.2)
            state = job_state(run_dir)
    if state["alive"]:
        raise ClusterMineError(f"a job is already running for this run (pid {state['pid']})")
    run.clear_cancel()
    argv = mine_command(run.config, run_dir)
    run.set_status("created")  # until the worker says "running": the UI shows "starting", not the old status
    child_env = dict(os.environ if env is None else env)
    child_env.setdefault("HF_HUB_OFFLINE", "1")
    child_env.setdefault("TRANSFORMERS_OFFLINE", "1")
    child_env["PYTHONUNBUFFERED"] = "1"
    child_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_PKG_ROOT), child_env.get("PYTHONPATH", "")) if p)
    log_path = run_dir / LOG_FILE
    with open(log_path, "ab") as log:
        log.write(f"\n[{now_iso()}] start: {' '.join(argv[1:])}\n".encode())
        log.flush()
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=str(_PKG_ROOT), env=child_env, start_new_session=True, close_fds=True)
    _PROCS[proc.pid] = proc
    info = {"kind": "mine", "pid": proc.pid, "start_token": _start_token(proc.pid), "argv": argv,
            "started": now_iso(), "started_ts": time.time(), "log": LOG_FILE}
    atomic_write_json(run_dir / JOB_FILE, info)
    return info


def job_state(run_dir: str | os.PathLike) -> dict:
    """``{"pid", "alive", "exit_code", "started_ts"}`` of the run's worker (pid None when none)."""
    info = read_job(run_dir) or {}
    pid = info.get("pid")
    alive = is_alive(pid, info.get("start_token")) if pid else False
    proc = _PROCS.get(pid) if pid else None
    code = proc.returncode if proc is not None and not alive else None
    return {"pid": pid, "alive": alive, "exit_code": code, "started_ts": info.get("started_ts")}


def log_tail(run_dir: str | os.PathLike, n_lines: int = 20, max_bytes: int = 16_384) -> str:
    """The last lines of the worker's log (empty when there is none)."""
    p = Path(run_dir) / LOG_FILE
    try:
        with open(p, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-n_lines:])


def reconcile(run: Run) -> Run:
    """If the run says it is running (or about to) but its worker is gone, mark it failed.

    Only runs started from the app (with a job.json) are touched: a run mined by a CLI in another
    terminal has no job.json and is left alone.
    """
    run.reload_meta()
    if run.status not in ("running", "created"):
        return run
    info = read_job(run.path)
    if not info:
        return run
    state = job_state(run.path)
    if state["alive"]:
        return run
    run.reload_meta()  # the worker may have finished between the two reads
    if run.status not in ("running", "created"):
        return run
    last = next((ln for ln in reversed(log_tail(run.path).splitlines()) if ln.strip()), "")
    if run.cancel_requested():
        run.set_status("cancelled", "stopped by the user; finished work is kept, resume to continue")
    else:
        detail = f": {last.strip()}" if last else ""
        run.set_status("failed", f"the worker process stopped unexpectedly{detail} (see {LOG_FILE})")
    return run


def cancel_job(run_dir: str | os.PathLike) -> None:
    """Ask the worker to stop at its next progress check (finished work is kept)."""
    Run.open(run_dir, require_complete=False).request_cancel()


def kill_job(run_dir: str | os.PathLike, grace: float = 5.0) -> bool:
    """Stop the worker now (SIGTERM to its process group, SIGKILL after ``grace`` seconds) and mark
    the run cancelled. For a worker that does not react to :func:`cancel_job` (e.g. while a model
    loads). Returns True when a live worker was stopped."""
    info = read_job(run_dir) or {}
    pid = info.get("pid")
    if not pid or not is_alive(pid, info.get("start_token")):
        return False
    run = Run.open(run_dir, require_complete=False)
    run.request_cancel()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        end = time.monotonic() + grace
        while time.monotonic() < end and is_alive(pid, info.get("start_token")):
            time.sleep(0.1)
        if not is_alive(pid, info.get("start_token")):
            break
    reconcile(run)
    return True

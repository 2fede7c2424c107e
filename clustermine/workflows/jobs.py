"""Long jobs outside the web app's script runs: one worker subprocess per run.

A Streamlit script run is re-executed on every click and stopped when the user navigates, so the
mining job never runs inside it. :func:`start_mine_job` starts ``python -m clustermine resume RUN_DIR``
(an argument list, never a shell; its own session, so a rerun or a closed tab does not kill it): the
worker reads every setting from the run's own ``run.json``, so nothing is lost on the way. Its
output goes to ``<run>/job.log`` and its pid to ``<run>/job.json``. The worker writes
``progress.json`` and ``run.json`` itself; the UI only polls them (:func:`job_state`), asks for a
cancel through the run's ``cancel.requested`` flag (:func:`cancel_job`), and if a worker died without
saying so, :func:`reconcile` marks the run failed (finished work stays in the feature cache:
resuming re-encodes nothing already done).

Each worker is waited for by a daemon thread as soon as it is started, so a finished worker never
lingers as a zombie under the web server. When the web server stops (SIGTERM),
:func:`stop_all_jobs` asks every worker it started to cancel: each run is left "cancelled",
resumable, and the server log says so.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from clustermine.workflows.distributed import RAY_ADDRESS_ENV, ray_address
from clustermine.core.errors import ClusterMineError, RunError
from clustermine.core.identity import Actor
from clustermine.core.roles import require
from clustermine.store import Run, now_iso
from clustermine.core.storage import atomic_write_json

from clustermine.store.layout import JOB_FILE, LOG_FILE
from clustermine.workflows.pipeline import run_mine_config
_PROCS: dict[int, subprocess.Popen] = {}  # workers started by this process; a daemon thread waits for each
_PROC_RUNS: dict[int, Path] = {}  # worker pid -> its run folder
_PROCS_LOCK = threading.Lock()
_EXIT_HOOK = {"installed": False}
_PKG_ROOT = Path(__file__).resolve().parents[1]


def worker_command(run_dir: str | os.PathLike, python: str | None = None, ray_address: str | None = None) -> list[str]:
    """The worker's argument list: resume the run with the settings stored in its ``run.json``, on the
    Ray cluster ``ray_address`` or (None) on this machine (``--ray local``: never the environment's)."""
    return [python or sys.executable, "-m", "clustermine", "resume", str(run_dir), "--quiet",
            "--ray", ray_address or "local"]


def _same_process(proc: psutil.Process, info: dict) -> bool:
    """True when ``proc`` is the worker ``job.json`` describes, not a later process with a recycled pid."""
    try:
        if info.get("create_time") is not None:
            return abs(proc.create_time() - float(info["create_time"])) < 0.05
        if info.get("start_token") is not None:  # job.json of an older version: /proc start time in clock ticks
            ticks = (proc.create_time() - psutil.boot_time()) * os.sysconf("SC_CLK_TCK")
            return abs(ticks - int(info["start_token"])) <= 1
    except (ValueError, TypeError, OSError, AttributeError):
        return False
    except psutil.Error:
        return False
    return True


def is_alive(pid: int | None, info: dict | None = None) -> bool:
    """True while the worker ``pid`` runs (zombies and recycled pids count as dead); ``info`` is the
    run's ``job.json`` (its ``create_time`` identifies the process)."""
    if not pid:
        return False
    with _PROCS_LOCK:
        popen = _PROCS.get(pid)
    if popen is not None:
        return popen.poll() is None
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            _reap_foreign(pid)
            return False
        return _same_process(proc, info or {})
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def _reap_foreign(pid: int) -> None:
    """Reap a dead child this module did not start through :func:`start_mine_job` (no Popen)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except OSError:
        pass


def reap_workers() -> list[int]:
    """Collect the exit status of finished workers started by this process; returns the live pids."""
    with _PROCS_LOCK:
        items = list(_PROCS.items())
    return [pid for pid, p in items if p.poll() is None]


def _wait_for_worker(proc: subprocess.Popen, log_path: Path) -> None:
    code = proc.wait()
    try:
        with open(log_path, "ab") as log:
            log.write(f"[{now_iso()}] worker pid {proc.pid} exited with code {code}\n".encode())
    except OSError:
        pass


def read_job(run_dir: str | os.PathLike) -> dict | None:
    """The ``job.json`` of a run, or None when no job was started from the app."""
    try:
        return json.loads((Path(run_dir) / JOB_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def start_mine_job(run_dir: str | os.PathLike, *, env: dict | None = None, cancel_at_exit: bool = False,
                   actor: Actor | None = None) -> dict:
    """Start (or resume) mining the run in ``run_dir`` in a worker subprocess; returns job.json.

    The run must exist (``Run.create`` with its full config, images in place) and not be finished;
    its stored config is checked here, so a bad one is reported to the caller, not in the log.
    Refuses to start a second worker while one is alive. ``cancel_at_exit`` (the web server): when
    this process exits (e.g. on SIGTERM), the worker is asked to cancel (:func:`stop_all_jobs`);
    otherwise it runs on by itself. ``actor``: who launches; PermissionDenied (nothing started)
    when its role may not.
    """
    require(actor, "launch")

    run_dir = Path(run_dir)
    run = Run.open(run_dir, require_complete=False)
    if run.status == "done":
        raise RunError(f"{run_dir}: the run is already finished")
    run_mine_config(run)
    state = job_state(run_dir)
    if state["alive"] and run.status in ("cancelled", "failed"):  # the old worker is still exiting
        end = time.monotonic() + 20
        while time.monotonic() < end and state["alive"]:
            time.sleep(0.2)
            state = job_state(run_dir)
    if state["alive"]:
        raise ClusterMineError(f"a job is already running for this run (pid {state['pid']})")
    run.clear_cancel()
    child_env = dict(os.environ if env is None else env)
    cluster = ray_address(child_env.get(RAY_ADDRESS_ENV, ""))  # the web server's CLUSTERMINE_RAY_ADDRESS
    argv = worker_command(run_dir, ray_address=cluster)
    run.set_status("created")  # until the worker says "running": the UI shows "starting", not the old status
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
    with _PROCS_LOCK:
        _PROCS[proc.pid] = proc
        _PROC_RUNS[proc.pid] = run_dir
    threading.Thread(target=_wait_for_worker, args=(proc, log_path), name=f"reap-worker-{proc.pid}",
                     daemon=True).start()
    if cancel_at_exit:
        _install_exit_hook()
    try:
        create_time = psutil.Process(proc.pid).create_time()
    except psutil.Error:
        create_time = None  # it has already exited (and been waited for)
    info = {"kind": "mine", "pid": proc.pid, "create_time": create_time, "argv": argv,
            "started": now_iso(), "started_ts": time.time(), "log": LOG_FILE, "ray": cluster}
    atomic_write_json(run_dir / JOB_FILE, info)
    return info


def job_state(run_dir: str | os.PathLike) -> dict:
    """``{"pid", "alive", "exit_code", "started_ts"}`` of the run's worker (pid None when none)."""
    reap_workers()
    info = read_job(run_dir) or {}
    pid = info.get("pid")
    alive = is_alive(pid, info) if pid else False
    with _PROCS_LOCK:
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
    if not pid or not is_alive(pid, info):
        return False
    run = Run.open(run_dir, require_complete=False)
    run.request_cancel()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        end = time.monotonic() + grace
        while time.monotonic() < end and is_alive(pid, info):
            time.sleep(0.1)
        if not is_alive(pid, info):
            break
    reconcile(run)
    return True


def stop_all_jobs(grace: float = 2.0, log=None) -> dict[str, str]:
    """Ask every live worker started by this process to cancel (the run's cancel flag: finished work
    is kept and the run can be resumed) and wait up to ``grace`` seconds for them to exit.

    Returns ``{run folder: "cancelled" | "stopping"}`` ("stopping": it stops at its next
    checkpoint, after this process has gone). Each line is also written to ``log`` (default
    stderr) and to the run's ``job.log``.
    """
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    with _PROCS_LOCK:
        live = [(pid, _PROC_RUNS[pid]) for pid, p in _PROCS.items() if p.poll() is None]
    for _, run_dir in live:
        try:
            Run.open(run_dir, require_complete=False).request_cancel()
        except (ClusterMineError, OSError):
            pass  # the run folder is gone: nothing to keep
    end = time.monotonic() + grace
    while time.monotonic() < end and any(is_alive(pid) for pid, _ in live):
        time.sleep(0.1)
    out = {}
    for pid, run_dir in live:
        state = "stopping" if is_alive(pid) else "cancelled"
        out[str(run_dir)] = state
        what = ("cancelled; finished work is kept" if state == "cancelled" else
                "asked to cancel; it stops at its next checkpoint, finished work is kept")
        line = f"clustermine: the server is stopping: job of run {run_dir.name} (worker pid {pid}) {what}; resume it later"
        log(line)
        try:
            with open(run_dir / LOG_FILE, "ab") as fh:
                fh.write(f"[{now_iso()}] {line}\n".encode())
        except OSError:
            pass
    return out


def _install_exit_hook() -> None:
    """Run :func:`stop_all_jobs` when this process exits, before Python waits for its threads
    (a web server stopped by SIGTERM: Streamlit stops its event loop, then the interpreter exits)."""
    with _PROCS_LOCK:
        if _EXIT_HOOK["installed"]:
            return
        _EXIT_HOOK["installed"] = True
    try:
        threading._register_atexit(stop_all_jobs)  # before non-daemon threads are joined
    except (AttributeError, RuntimeError):
        import atexit

        atexit.register(stop_all_jobs)

"""Start ``streamlit run app.py`` on a free localhost port for a test, and stop it afterwards."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """Stop one process a test started, by its PID: TERM, then KILL after ``grace`` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@contextlib.contextmanager
def streamlit_server(runs_root: Path, log_path: Path, *, wait_s: float = 60.0,
                     env: dict[str, str] | None = None, port: int | None = None) -> Iterator[dict]:
    """Run the app with ``CLUSTERMINE_RUNS_ROOT=runs_root`` until the block ends.

    Yields ``{"url", "port", "pid"}`` once ``/_stcore/health`` answers. If it does not answer within
    ``wait_s`` seconds (or the process dies), the test fails with the end of the server log in the
    message (a server that does not start is an error, never a skip). ``port``: a port chosen before
    the start (an OIDC redirect URI names it), else a free one.
    """
    port = port or free_port()
    env = dict(os.environ, CLUSTERMINE_RUNS_ROOT=str(runs_root), CLUSTERMINE_UMAP_WARMUP="0", HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1", **(env or {}))
    env.pop("STREAMLIT_SERVER_ADDRESS", None)  # the address must come from .streamlit/config.toml
    log = open(log_path, "wb")
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                             "--server.headless", "true"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + wait_s
        while True:
            if proc.poll() is not None:
                pytest.fail("streamlit exited at start: " + log_path.read_text(errors="replace")[-2000:])
            try:
                if urllib.request.urlopen(url + "/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"streamlit did not answer /_stcore/health in {wait_s:.0f} s: "
                            + log_path.read_text(errors="replace")[-2000:])
                time.sleep(0.2)
        yield {"url": url, "port": port, "pid": proc.pid}
    finally:
        stop_process(proc, grace=20)
        log.close()

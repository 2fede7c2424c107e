"""Test hooks loaded into the app's mining worker subprocesses (a ``sitecustomize`` on PYTHONPATH).

:func:`install` writes the ``sitecustomize`` and puts it on PYTHONPATH; in the worker it calls one of
the patchers below, each active only when its environment variables are set. Both hold the first
worker (``CM_TEST_HELD_MARK`` marks that it happened) until the run's cancel is requested, so a test's
cancel always lands mid-encode, whatever the machine's speed: no race.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def install(folder: Path, monkeypatch, patcher: str) -> None:
    """Make every Python process started from now on run ``worker_hooks.<patcher>()`` at start-up."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(
        f"import sys\nsys.path.insert(0, {str(TESTS)!r})\nimport worker_hooks\nworker_hooks.{patcher}()\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")]))


def hold_once_until_cancel() -> None:
    """The first caller waits until the run ``CM_TEST_RUN_DIR``'s cancel is requested (at most 300 s)."""
    from clustermine.store import Run

    mark = os.environ["CM_TEST_HELD_MARK"]
    if os.path.exists(mark):
        return
    open(mark, "w").close()
    run = Run.open(os.environ["CM_TEST_RUN_DIR"], require_complete=False)
    end = time.monotonic() + 300
    while not run.cancel_requested() and time.monotonic() < end:
        time.sleep(0.05)


def hold_before_encode() -> None:
    """The first worker holds at the start of its encode stage; later workers run freely."""
    if not os.environ.get("CM_TEST_HELD_MARK"):
        return
    import clustermine.workflows.pipeline as pipeline

    encode_records = pipeline.encode_records

    def hold_then_encode(*args, **kwargs):
        hold_once_until_cancel()
        return encode_records(*args, **kwargs)

    pipeline.encode_records = hold_then_encode


def hold_after_first_chunk() -> None:
    """Encode in chunks of ``CM_TEST_CHUNK`` images, log every chunk written to the feature cache
    (``CM_TEST_ENCODE_LOG``: pid and keys, one JSON line each), and hold the first worker after its
    first chunk: the cancel lands with one chunk cached and one not."""
    if not os.environ.get("CM_TEST_ENCODE_LOG"):
        return
    import clustermine.workflows.pipeline as pipeline

    encode_records, put = pipeline.encode_records, pipeline.FeatureCache.put

    def encode_in_small_chunks(*args, **kwargs):
        kwargs["chunk_size"] = int(os.environ["CM_TEST_CHUNK"])
        return encode_records(*args, **kwargs)

    def put_and_hold(self, keys, feats):
        put(self, keys, feats)
        with open(os.environ["CM_TEST_ENCODE_LOG"], "a") as fh:
            fh.write(json.dumps({"pid": os.getpid(), "keys": list(keys)}) + "\n")
        hold_once_until_cancel()

    pipeline.encode_records, pipeline.FeatureCache.put = encode_in_small_chunks, put_and_hold

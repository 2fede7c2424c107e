"""Job workers (issue 9 §3): the worker reads every setting from the run itself (``clustermine
resume RUN_DIR``), finished workers never linger as zombies, and the web server stops promptly on
SIGTERM, leaving its running job cancelled and resumable. Real workers (offline encoder, k-means)
on real photos from ../shared/data."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

import worker_hooks
from conftest import copy_subset, shared
from polling import wait_for

CONCEPTS = ["tench", "fish", "dog", "springer spaniel", "cassette player", "church", "truck", "parachute"]


def _images(dst: Path, per_class: int) -> Path:
    return copy_subset(shared("imagenette_train100"), dst, ["n01440764", "n02102040", "n02979186"], per_class)


def _new_run(tmp_path: Path, name: str, images: Path, **settings) -> Path:
    """A created (not started) run, as the web app's new-run form leaves it."""
    from clustermine.core.config import MineConfig
    from clustermine.store import Run

    corpus = tmp_path / "concepts.txt"
    corpus.write_text("\n".join(CONCEPTS) + "\n", encoding="utf-8")
    cfg = MineConfig(corpus=str(corpus), device="cpu", **settings).validate().resolved().to_dict()
    cfg["images_dir"] = str(images.resolve())
    run_dir = tmp_path / "runs" / name
    Run.create(run_dir, cfg)
    return run_dir


def _status(run_dir: Path) -> str:
    try:
        return json.loads((run_dir / "run.json").read_text())["status"]
    except (OSError, ValueError, KeyError):
        return "?"


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.slow
def test_non_default_topk_and_clusterer_params_survive_the_job_path(tmp_path):
    """A run with topk=2 and k-means options (n_init=1, max_iter=2) started as the app starts it: the
    worker finishes, stores those settings, keeps 2 votes per image, and its clusters are exactly
    k-means with those options on the run's own features (not with the defaults)."""
    from clustermine.workflows import jobs
    from clustermine.method.clustering import KMeansClusterer
    from clustermine.store import Run

    params = {"n_init": 1, "max_iter": 2}
    run_dir = _new_run(tmp_path, "opts", _images(tmp_path / "imgs", 10), clusterer="kmeans", n_clusters=3, topk=2,
                       clusterer_params=params, holdout_fraction=0.0)
    jobs.start_mine_job(run_dir)
    assert wait_for(lambda: not jobs.job_state(run_dir)["alive"], 300, 0.5), "the worker did not finish"
    assert _status(run_dir) == "done", jobs.log_tail(run_dir)
    assert jobs.job_state(run_dir)["exit_code"] == 0
    assert "resume" in jobs.read_job(run_dir)["argv"]
    run = Run.open(run_dir)
    assert run.config["topk"] == 2 and run.config["clusterer_params"] == params and run.config["tau"] == 0.05
    with np.load(run_dir / "votes.npz") as votes:
        top_idx = votes["top_idx"]
    feats, text = run.features(), run.text_embeddings()
    assert top_idx.shape == (len(feats), 2)
    sims = feats.astype(np.float64) @ text.astype(np.float64).T
    best_two = np.sort(sims, axis=1)[:, -2:]  # top-2 by an independent full sort
    chosen = np.sort(np.take_along_axis(sims, top_idx.astype(np.int64), 1), axis=1)
    # votes were taken before the text embeddings were stored as float16 (cosine error < 1e-3)
    np.testing.assert_allclose(chosen, best_two, rtol=0, atol=1e-3)
    with_params = KMeansClusterer(3, random_state=0, **params).fit_predict(feats)
    with_defaults = KMeansClusterer(3, random_state=0).fit_predict(feats)
    assert np.array_equal(run.cluster_ids(), with_params)
    assert not np.array_equal(with_params, with_defaults)  # so the check above can fail


@pytest.mark.slow
def test_finished_workers_are_reaped(tmp_path):
    """Three real jobs started from this process: once they have finished, none is left as a zombie
    child, even though nobody asked for their state (as when the user has left the page)."""
    from clustermine.workflows import jobs

    images = _images(tmp_path / "imgs", 4)
    runs = [_new_run(tmp_path, f"job{i}", images, clusterer="kmeans", n_clusters=2, seed=i) for i in range(3)]
    pids = [jobs.start_mine_job(r)["pid"] for r in runs]
    assert wait_for(lambda: all(_status(r) in ("done", "failed") for r in runs), 300, 0.5)
    assert [_status(r) for r in runs] == ["done"] * 3, [jobs.log_tail(r) for r in runs]
    assert wait_for(lambda: not any(_running(p) for p in pids), 60, 0.2), "a worker did not exit"

    def zombies() -> list[int]:
        return [c.pid for c in psutil.Process().children() if c.pid in pids and c.status() == psutil.STATUS_ZOMBIE]

    assert wait_for(lambda: not zombies(), 5, 0.1), f"zombie workers: {zombies()}"
    assert [jobs.job_state(r)["exit_code"] for r in runs] == [0, 0, 0]


async def _click(port: int, query: str, page: str, key: str) -> None:
    """Open ``page`` in a real Streamlit session over the websocket and click the button ``key``."""
    import websockets
    from streamlit.proto.BackMsg_pb2 import BackMsg
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
    from streamlit.proto.WidgetStates_pb2 import WidgetState

    async with websockets.connect(f"ws://127.0.0.1:{port}/_stcore/stream", subprotocols=["streamlit"],
                                  max_size=None, open_timeout=30) as ws:
        async def rerun(states: list) -> dict[str, str]:
            msg = BackMsg()
            msg.rerun_script.query_string, msg.rerun_script.page_name = query, page
            msg.rerun_script.widget_states.widgets.extend(states)
            await ws.send(msg.SerializeToString())
            buttons = {}
            while True:
                fm = ForwardMsg()
                fm.ParseFromString(await asyncio.wait_for(ws.recv(), 120))
                if fm.WhichOneof("type") == "delta" and fm.delta.WhichOneof("type") == "new_element":
                    el = fm.delta.new_element
                    assert el.WhichOneof("type") != "exception", el.exception.message
                    if el.WhichOneof("type") == "button":
                        buttons[el.button.id] = el.button.label
                elif fm.WhichOneof("type") == "script_finished":
                    return buttons

        buttons = await rerun([])
        ids = [i for i in buttons if i.endswith(f"-{key}")]
        assert ids, f"no button {key!r} on the page: {buttons}"
        await rerun([WidgetState(id=ids[0], trigger_value=True)])


@pytest.mark.slow
def test_sigterm_stops_the_server_promptly_and_leaves_its_job_cancelled(tmp_path, monkeypatch):
    """The server starts a job (Resume clicked in a real session), gets SIGTERM while the job runs,
    exits within a few seconds, and says so in its log; the job is cancelled (finished work kept)
    and resuming it finishes the run."""
    from streamlit_server import streamlit_server

    from clustermine.workflows import jobs

    monkeypatch.setenv("CLUSTERMINE_CACHE", str(tmp_path / "cache"))  # nothing encoded yet: the job runs a while
    # ... and the first worker holds at its encode stage until a cancel is requested, so the job is
    # still running when the server is stopped however fast this machine encodes (no race).
    worker_hooks.install(tmp_path / "hook", monkeypatch, "hold_before_encode")
    monkeypatch.setenv("CM_TEST_HELD_MARK", str(tmp_path / "held"))
    run_dir = _new_run(tmp_path, "served", _images(tmp_path / "imgs", 15), clusterer="kmeans", n_clusters=3)
    monkeypatch.setenv("CM_TEST_RUN_DIR", str(run_dir))
    log_path = tmp_path / "server.log"
    with streamlit_server(run_dir.parent, log_path, wait_s=90) as srv:
        asyncio.run(_click(srv["port"], f"run={run_dir.name}", "data", "resume"))
        worker = jobs.read_job(run_dir)["pid"]
        assert worker in [c.pid for c in psutil.Process(srv["pid"]).children()]
        assert wait_for(lambda: _status(run_dir) == "running", 60, 0.1), _status(run_dir)
        t0 = time.monotonic()
        os.kill(srv["pid"], signal.SIGTERM)
        assert wait_for(lambda: not _running(srv["pid"]), 10, 0.05), "the server still runs 10 s after SIGTERM"
        stopped_s = time.monotonic() - t0
    print(f"server exited {stopped_s:.2f} s after SIGTERM")
    assert stopped_s < 6.0
    assert f"the server is stopping: job of run {run_dir.name} (worker pid {worker})" in log_path.read_text()
    assert wait_for(lambda: not _running(worker), 120, 0.2), "the worker ignored the cancel"
    assert _status(run_dir) == "cancelled", jobs.log_tail(run_dir)
    meta = json.loads((run_dir / "run.json").read_text())
    assert "resume" in meta["error"]
    monkeypatch.delenv("CM_TEST_HELD_MARK")  # the resumed worker runs freely (the first may have stopped before holding)
    jobs.start_mine_job(run_dir)
    assert wait_for(lambda: _status(run_dir) in ("done", "failed", "cancelled") and not jobs.job_state(run_dir)["alive"],
                    300, 0.5)
    assert _status(run_dir) == "done", jobs.log_tail(run_dir)

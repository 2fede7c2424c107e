"""Run administration: label a run (run.json, atomic) and delete it (refused while its job runs),
from the engine, the CLI and the Runs page."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from clustermine.cli import main
from clustermine.core.errors import ClusterMineError, RunError
from clustermine.store import layout, list_runs
from clustermine.workflows.run_admin import MAX_LABEL_CHARS, delete_run, set_label
from clustermine.store import Run
from test_app import app_env, no_exception, open_app  # noqa: F401,E402  (app_env is a fixture)

ROOT = Path(__file__).resolve().parents[1]


def test_label_is_stored_in_run_json_and_listed(small_run):
    assert set_label(small_run, "  baseline \n k-means  ") == "baseline k-means"
    meta = json.loads(layout.meta_path(small_run).read_text(encoding="utf-8"))
    assert meta["label"] == "baseline k-means"
    assert meta["status"] == "done"  # nothing else changed
    Run.open(small_run)  # still a valid finished run
    assert [r["label"] for r in list_runs(small_run.parent) if r["run_id"] == small_run.name] == ["baseline k-means"]
    assert set_label(small_run, "") == ""
    assert json.loads(layout.meta_path(small_run).read_text(encoding="utf-8"))["label"] == ""
    with pytest.raises(ClusterMineError, match="at most"):
        set_label(small_run, "x" * (MAX_LABEL_CHARS + 1))


def test_delete_run_removes_the_folder_and_only_runs(small_run, tmp_path):
    keep = small_run.parent / "keep.txt"
    keep.write_text("not a run", encoding="utf-8")
    delete_run(small_run)
    assert not small_run.exists()
    assert keep.exists()
    assert not [p for p in small_run.parent.iterdir() if p.name.startswith(layout.DELETING_PREFIX)]
    assert small_run.name not in [r["run_id"] for r in list_runs(small_run.parent)]
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "photo.jpg").write_bytes(b"x")
    with pytest.raises(RunError, match="not a ClusterMine run folder"):
        delete_run(plain)
    assert (plain / "photo.jpg").exists()
    with pytest.raises(RunError, match="not found"):
        delete_run(tmp_path / "nope")


def test_delete_refused_while_the_job_runs(small_run):
    """A live process recorded as the run's worker (job.json with its pid and start time) blocks it."""
    import psutil

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        info = {"kind": "mine", "pid": proc.pid, "create_time": psutil.Process(proc.pid).create_time(),
                "argv": [sys.executable, "-c", "import time; time.sleep(60)"], "started": "", "started_ts": 0}
        (small_run / layout.JOB_FILE).write_text(json.dumps(info), encoding="utf-8")
        with pytest.raises(ClusterMineError, match="job is running"):
            delete_run(small_run)
        assert layout.meta_path(small_run).is_file()
    finally:
        proc.kill()
        proc.wait()
    delete_run(small_run)  # the job has ended: allowed now
    assert not small_run.exists()


def test_cli_label_and_delete(small_run, capsys):
    assert main(["label", str(small_run), "first try"]) == 0
    assert Run.open(small_run).meta["label"] == "first try"
    assert main(["delete", str(small_run)]) == 2  # no --yes: refused
    assert "--yes" in capsys.readouterr().err
    assert small_run.exists()
    assert main(["delete", str(small_run), "--yes"]) == 0
    assert not small_run.exists()
    assert main(["delete", str(small_run), "--yes"]) == 2
    assert "not found" in capsys.readouterr().err


@pytest.mark.app
def test_runs_page_label_and_delete_with_confirmation(app_env, small_run):
    at = open_app(small_run.name)
    no_exception(at)
    at.text_input(key="runs_label").set_value("my baseline").run()
    at.button(key="runs_label_save").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert Run.open(small_run).meta["label"] == "my baseline"
    # delete: the first click only asks; the run is still there until confirmed
    at.button(key="runs_delete").click().run()
    assert small_run.exists()
    assert any("cannot be undone" in w.value for w in at.warning)
    at.button(key="runs_delete_cancel").click().run()
    assert small_run.exists()
    at.button(key="runs_delete").click().run()
    at.button(key="runs_delete_confirm").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert not small_run.exists()

"""Crash safety (issue 5): SIGKILL during encoding and during concept edits, and concurrent editors.

- A ``mine`` subprocess (tiny open_clip model, 60 photos, feature-cache chunks of 6 images) is
  killed at a random point of the encode stage: the run must open (not finished), and re-running
  ``mine`` must finish it while encoding only the images of the chunks that were not written.
- A process looping concept edits is killed at random moments: ``edits.jsonl`` must always parse,
  its ``seq`` stay contiguous, and ``concepts.json`` be valid and derived from the log.
- Two processes (and two threads) editing one run's concepts lose no edit.

The random points come from a seed printed in the test output (``CM_CRASH_SEED`` to replay one).
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from clustermine.core.errors import RunError
from clustermine.store import Run, layout
from clustermine.store.chain import genesis, verify_log

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
sys.path.insert(0, str(TESTS))
from test_faults import CONCEPTS, config, photo_sources  # noqa: E402
from test_properties import write_synthetic_run  # noqa: E402
from tiny_openclip import register_tiny_openclip  # noqa: E402

pytestmark = pytest.mark.faults

SEED = int(os.environ.get("CM_CRASH_SEED", time.time_ns() % 1_000_000))
N_IMAGES, CHUNK, BATCH = 60, 6, 3


@pytest.fixture(scope="module")
def rnd() -> random.Random:
    print(f"crash-test seed: CM_CRASH_SEED={SEED}")
    return random.Random(SEED)


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), HF_HUB_OFFLINE="1",
                PYTHONUNBUFFERED="1")


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)


# ------------------------------------------------------------------------------------ encoding


MINE_CHILD = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {tests!r})
    from tiny_openclip import register_tiny_openclip
    name = register_tiny_openclip({cfg!r})
    from clustermine.method.encoders import load_encoder
    from clustermine.workflows.pipeline import MineConfig, mine
    cfg = MineConfig(**{cfg_dict!r})
    enc = load_encoder(cfg.encoder, "cpu")

    def slow(stage, done, total):  # keep the encode stage long enough to be killed inside it
        if stage == "encode":
            time.sleep(0.15)

    mine({images!r}, {run!r}, cfg, encoder=enc, cache_dir={cache!r}, encode_chunk_size={chunk},
         progress=slow)
    print("FINISHED")
""")


def _chunk_keys(cache: Path) -> tuple[list[Path], set[str]]:
    chunks = sorted((cache / "features").glob("*/chunk-*.npz"))
    keys: set[str] = set()
    for c in chunks:
        with np.load(c, allow_pickle=False) as z:  # every chunk on disk is whole (atomic writes)
            k = z["keys"].tolist()
            assert z["features"].shape == (len(k), 32)
        keys.update(k)
    return chunks, keys


def test_sigkill_during_encoding_then_resume_encodes_only_missing_chunks(tmp_path, rnd):
    images, run_dir, cache = tmp_path / "images", tmp_path / "run", tmp_path / "cache"
    images.mkdir()
    for i, p in enumerate(photo_sources(N_IMAGES)):
        shutil.copyfile(p, images / f"img_{i:03d}.jpg")
    corpus = tmp_path / "concepts.txt"
    corpus.write_text("\n".join(CONCEPTS) + "\n", encoding="utf-8")
    name = register_tiny_openclip(tmp_path / "cfg")
    cfg = config(f"openclip:{name}:none", corpus, batch_size=BATCH)
    script = MINE_CHILD.format(tests=str(TESTS), cfg=str(tmp_path / "cfg-child"), cfg_dict=cfg.to_dict(),
                               images=str(images), run=str(run_dir), cache=str(cache), chunk=CHUNK)
    n_chunks = math.ceil(N_IMAGES / CHUNK)
    # chunks written before the kill, plus a random slice of the next one (each chunk sleeps >= 0.3 s
    # in the child, so at least half of the encode stage is still ahead when the kill lands)
    kill_after = rnd.randint(1, n_chunks // 2 - 1)
    extra_delay = rnd.uniform(0.0, 0.6)
    log = open(tmp_path / "child.log", "wb")
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=_env(), stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if len(_chunk_keys(cache)[0]) >= kill_after:
                break
            time.sleep(0.05)
        time.sleep(extra_delay)
        assert proc.poll() is None, "the mining child ended before it could be killed: " + \
            (tmp_path / "child.log").read_text(errors="replace")
    finally:
        _kill(proc)
        log.close()
    assert proc.returncode == -signal.SIGKILL
    print(f"killed after {kill_after} chunks + {extra_delay:.2f} s")

    # the killed run opens, says it is not finished, and names why it is incomplete
    run = Run.open(run_dir, require_complete=False)
    assert run.status == "running" and "vote" not in run.meta.get("stages_done", [])
    with pytest.raises(RunError, match="not finished"):
        Run.open(run_dir)
    prog = run.progress()
    assert prog is not None and prog["stage"] == "encode"
    chunks_before, cached = _chunk_keys(cache)
    assert len(chunks_before) >= kill_after and len(cached) == CHUNK * len(chunks_before)
    assert len(cached) < N_IMAGES

    # resume in this process: only the images outside the written chunks are encoded
    from clustermine.method.encoders import load_encoder
    from clustermine.workflows.pipeline import mine

    enc = load_encoder(cfg.encoder, "cpu")
    totals: list[int] = []

    def record(stage, done, total):
        if stage == "encode":
            totals.append(total)

    run = mine(images, run_dir, cfg, encoder=enc, cache_dir=cache, encode_chunk_size=CHUNK, progress=record)
    # progress total of the encode stage = images still to encode (0 only before the stage knows it)
    assert {t for t in totals if t} == {N_IMAGES - len(cached)}, (sorted(set(totals)), len(cached))
    chunks_after, keys_after = _chunk_keys(cache)
    assert set(chunks_before) <= set(chunks_after)  # finished chunks were kept, not rewritten
    assert len(chunks_after) - len(chunks_before) == math.ceil((N_IMAGES - len(cached)) / CHUNK)
    assert len(keys_after) == N_IMAGES
    run = Run.open(run_dir)  # complete now
    assert run.status == "done" and run.features().shape == (N_IMAGES, 32)
    # rows line up with files: the resumed features equal a fresh encode of the same files
    fresh = enc.encode_images(run.image_paths(), batch_size=16).features
    np.testing.assert_allclose(run.features(), fresh, atol=2e-3)


# ------------------------------------------------------------------------------------ concept edits


EDIT_CHILD = textwrap.dedent("""
    import sys
    from clustermine.store import Run
    run = Run.open({run!r})
    vocab = run.vocabulary_base()
    limit, offset, user = {limit!r}, {offset!r}, {user!r}
    print("READY", flush=True)
    i = 0
    while limit is None or i < limit:
        concept = vocab[(offset + i // 4) % len(vocab)]
        action = ("add", "reject", "restore", "accept")[i % 4]
        run.edit_concept(action, concept, user=user)
        i += 1
    print("DONE", i, flush=True)
""")


def _start_editor(run_dir: Path, *, limit: int | None, offset: int, user: str) -> subprocess.Popen:
    code = EDIT_CHILD.format(run=str(run_dir), limit=limit, offset=offset, user=user)
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _check_log_and_table(run_dir: Path) -> list[dict]:
    run = Run.open(run_dir)
    edits = run.edits()  # raises RunError naming the line if edits.jsonl were torn
    assert [e["seq"] for e in edits] == list(range(1, len(edits) + 1))
    assert all(set(e) >= {"seq", "ts", "user", "action", "concept_id", "text"} for e in edits)
    table = json.loads((run_dir / "concepts.json").read_text(encoding="utf-8"))  # valid JSON
    # concepts.json is derived from the log: the whole log, or (killed between the two atomic
    # writes of one edit) the log without its last entry; readers always replay the log itself
    candidates = [[c.to_dict() for c in run._replay(edits)]]
    if edits:
        candidates.append([c.to_dict() for c in run._replay(edits[:-1])])
    assert table in candidates
    # the hash chain and its head record verify after any kill (issue 20): the head is two-phase
    state = verify_log(run_dir / layout.EDITS, start=genesis(layout.EDITS, run.run_id))
    assert state.kind in ("intact", "empty") and state.count == len(edits), state
    return edits


def test_sigkill_during_concept_edits_never_corrupts_the_log(tmp_path, rnd):
    run_dir = tmp_path / "run"
    write_synthetic_run(run_dir, seed=1)
    total_before = 0
    for attempt in range(3):
        proc = _start_editor(run_dir, limit=None, offset=attempt * 5, user=f"killed-{attempt}")
        try:
            assert proc.stdout.readline().strip() == "READY", proc.stderr.read()
            # wait for this child's first edit, then kill it at a random moment
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and len(Run.open(run_dir).edits()) <= total_before:
                time.sleep(0.01)
            time.sleep(rnd.uniform(0.0, 0.6))
        finally:
            _kill(proc)
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read()
        edits = _check_log_and_table(run_dir)
        assert len(edits) > total_before
        total_before = len(edits)
        # the killed editor's lock died with it: a new edit goes through at once
        t0 = time.monotonic()
        Run.open(run_dir).edit_concept("accept", Run.open(run_dir).concepts()[0].id, user="after-kill")
        assert time.monotonic() - t0 < 10
        edits = _check_log_and_table(run_dir)
        assert edits[-1]["user"] == "after-kill" and len(edits) == total_before + 1
        total_before = len(edits)


def test_two_processes_editing_one_run_lose_no_edit(tmp_path):
    run_dir = tmp_path / "run"
    write_synthetic_run(run_dir, seed=2)
    n = 30
    procs = [_start_editor(run_dir, limit=n, offset=k * 7, user=f"session-{k}") for k in range(2)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        outs.append(out)
    assert all(f"DONE {n}" in o for o in outs)
    edits = _check_log_and_table(run_dir)
    assert len(edits) == 2 * n
    assert len({e["seq"] for e in edits}) == 2 * n
    by_user = {u: [e for e in edits if e["user"] == u] for u in ("session-0", "session-1")}
    assert all(len(v) == n for v in by_user.values())
    # each session's own edits are in its own order
    for mine_ in by_user.values():
        assert [e["action"] for e in mine_] == [("add", "reject", "restore", "accept")[i % 4] for i in range(n)]


def test_two_threads_editing_one_run_lose_no_edit(tmp_path):
    run_dir = tmp_path / "run"
    write_synthetic_run(run_dir, seed=4)
    n, errors = 20, []

    def session(k: int) -> None:
        try:
            run = Run.open(run_dir)  # one Run object per session, as in the web app
            vocab = run.vocabulary_base()
            for i in range(n):
                run.edit_concept(("add", "reject")[i % 2], vocab[(k * 5 + i // 2) % len(vocab)], user=f"t{k}")
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=session, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    edits = _check_log_and_table(run_dir)
    assert len(edits) == 2 * n and sorted(e["user"] for e in edits) == ["t0"] * n + ["t1"] * n

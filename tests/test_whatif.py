"""The what-if engine (clustermine.workflows.whatif): the corpus-LSE cache kept in the run, what-if after
concept edits, and the OOD comparison. Every expected value is computed here from the run's files
(read with numpy) and the plain score formula, not through the code under test. The run is real:
tiny random open_clip model, real photos, a 50-concept corpus, k-means."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.special import logsumexp

from clustermine.workflows import concept_edits
from clustermine.workflows import whatif
from clustermine.method.metrics import ood_metrics, threshold_at_tpr
from clustermine.workflows.pipeline import MineConfig, mine
from clustermine.store import Run
from clustermine.method.scoring import Detector

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
from conftest import shared  # noqa: E402
from test_faults import CONCEPTS, photo_sources  # noqa: E402
from tiny_openclip import register_tiny_openclip  # noqa: E402
from clustermine.workflows.whatif import run_detector

TPR = 0.9
ATOL = 1e-4  # float32 dot products / τ against a float64 reference: ~1e-5 in log-score units
NEW_CONCEPT = "purple elephant on a bicycle"  # outside the corpus: embedded when added


@pytest.fixture(scope="module")
def tiny_env(tmp_path_factory):
    from clustermine.method.encoders import load_encoder

    base = tmp_path_factory.mktemp("whatif")
    spec = f"openclip:{register_tiny_openclip(base / 'cfg')}:none"
    enc = load_encoder(spec, "cpu")
    corpus = base / "concepts.txt"
    corpus.write_text("\n".join(CONCEPTS) + "\n", encoding="utf-8")
    imgs = base / "imgs"
    imgs.mkdir()
    for i, p in enumerate(photo_sources(24)):
        shutil.copyfile(p, imgs / f"img_{i:02d}.jpg")
    run_dir = base / "run"
    cfg = MineConfig(encoder=spec, clusterer="kmeans", corpus=str(corpus), device="cpu", n_clusters=3,
                     batch_size=8, holdout_fraction=0.3)
    mine(imgs, run_dir, cfg, encoder=enc, cache_dir=base / "cache")
    return run_dir, enc


@pytest.fixture
def run(tiny_env, tmp_path) -> Run:
    dst = tmp_path / "run"
    shutil.copytree(tiny_env[0], dst)
    return Run.open(dst)


def files(run: Run):
    """(features float32, cluster ids, text embeddings float32, tau) read straight from disk."""
    feats = np.load(run.path / "features.npy").astype(np.float32)
    cids = np.load(run.path / "clusters.npy")
    text = np.load(run.path / "text_embeddings.npy").astype(np.float32)
    tau = json.loads((run.path / "run.json").read_text())["config"]["tau"]
    return feats, cids, text, tau


def reference_lse(feats: np.ndarray, text: np.ndarray, tau: float) -> np.ndarray:
    return logsumexp(feats.astype(np.float64) @ text.astype(np.float64).T / tau, axis=1)


def reference_log_scores(feats, text, pos_rows, tau) -> np.ndarray:
    """log S = LSE over Y_pos − LSE over V, in float64."""
    z = feats.astype(np.float64) @ text.astype(np.float64).T / tau
    return logsumexp(z[:, np.asarray(pos_rows)], axis=1) - logsumexp(z, axis=1)


def test_the_tiny_run_holds_images_out(run):
    _, cids, _, _ = files(run)
    assert (cids < 0).sum() >= 5 and len(run.mined_concepts()) >= 1


# ------------------------------------------------------------------------------------ LSE cache
def test_corpus_lse_is_cached_in_the_run_and_reused(run):
    feats, cids, text, tau = files(run)
    rows = np.flatnonzero(cids < 0)
    calls = []
    got = whatif.corpus_lse(run, rows, progress=lambda d, t: calls.append((d, t)))
    np.testing.assert_allclose(got, reference_lse(feats[rows], text, tau), rtol=0, atol=ATOL)
    assert calls and calls[-1] == (len(rows), len(rows))
    assert whatif.lse_ready(run, rows) and not whatif.lse_ready(run, np.arange(len(feats)))

    # Reused: a sentinel written into the cache file comes back, and nothing is recomputed.
    npy = run.path / "projections" / "corpus_lse.npy"
    cached = np.load(npy)
    assert np.isfinite(cached[rows]).all() and np.isnan(np.delete(cached, rows)).all()
    cached[rows] = -123.0 - np.arange(len(rows))
    np.save(npy, cached)
    calls.clear()
    again = whatif.corpus_lse(Run.open(run.path), rows, progress=lambda d, t: calls.append((d, t)))
    np.testing.assert_array_equal(again, -123.0 - np.arange(len(rows)))
    assert calls == []

    # Extending to all rows computes only the missing ones and keeps the cached ones.
    every = whatif.corpus_lse(run, np.arange(len(feats)), progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (len(feats) - len(rows),) * 2
    np.testing.assert_array_equal(every[rows], -123.0 - np.arange(len(rows)))
    others = np.setdiff1d(np.arange(len(feats)), rows)
    np.testing.assert_allclose(every[others], reference_lse(feats[others], text, tau), rtol=0, atol=ATOL)


def _poison(run: Run) -> None:
    """Fill the cache for all rows with a sentinel (valid for the current inputs)."""
    whatif.corpus_lse(run, np.arange(run.features().shape[0]))
    npy = run.path / "projections" / "corpus_lse.npy"
    np.save(npy, np.full(run.features().shape[0], -999.0))
    assert (whatif.corpus_lse(Run.open(run.path), [0]) == -999.0).all()


def test_corpus_lse_cache_is_dropped_when_the_text_embeddings_change(run):
    feats, _, text, tau = files(run)
    _poison(run)
    rng = np.random.default_rng(0)
    new_text = text[rng.permutation(len(text))] * np.where(rng.random(len(text)) < 0.5, -1.0, 1.0)[:, None]
    run.write_vocabulary(run.vocabulary_base(), new_text)
    rows = np.arange(len(feats))
    assert not whatif.lse_ready(run, rows)
    got = whatif.corpus_lse(Run.open(run.path), rows)
    np.testing.assert_allclose(got, reference_lse(feats, new_text.astype(np.float16), tau), rtol=0, atol=ATOL)


def test_corpus_lse_cache_is_dropped_when_the_features_change(run):
    feats, _, text, tau = files(run)
    _poison(run)
    new_feats = feats[::-1].copy()
    run.write_features(new_feats)
    got = whatif.corpus_lse(Run.open(run.path), np.arange(len(feats)))
    np.testing.assert_allclose(got, reference_lse(new_feats.astype(np.float16), text, tau), rtol=0, atol=ATOL)


def test_corpus_lse_cache_is_dropped_when_tau_changes(run):
    feats, _, text, tau = files(run)
    _poison(run)
    run.update_meta(config={**run.config, "tau": 2 * tau})
    reopened = Run.open(run.path)
    assert reopened.tau == 2 * tau
    got = whatif.corpus_lse(reopened, np.arange(len(feats)))
    np.testing.assert_allclose(got, reference_lse(feats, text, 2 * tau), rtol=0, atol=ATOL)


# ------------------------------------------------------------------------------------ what-if
def _edit(run: Run, enc) -> tuple[list[int], str]:
    """Reject the first mined concept, add a corpus concept that was not mined and one outside the
    corpus. Returns (expected positive corpus rows, the rejected text)."""
    mined = {m.index: m.text for m in run.mined_concepts()}
    victim = min(mined)
    newcomer = next(i for i, c in enumerate(CONCEPTS) if i not in mined)
    run.edit_concept("reject", mined[victim])
    run.edit_concept("add", CONCEPTS[newcomer])
    concept_edits.edit_concept(run, "add", NEW_CONCEPT, encoder=enc)
    return sorted(set(mined) - {victim} | {newcomer}), mined[victim]


def test_what_if_after_a_reject_equals_a_fresh_detector(run, tiny_env):
    enc = tiny_env[1]
    feats, cids, text, tau = files(run)
    held = feats[cids < 0]
    mined_rows = sorted({m["index"] for m in json.loads((run.path / "mined.json").read_text())})
    pos_rows, _ = _edit(run, enc)

    from clustermine.method.corpus import embed_concepts

    extra = embed_concepts(enc, [NEW_CONCEPT], run.config.get("template") or enc.text_template)
    extra = extra.astype(np.float16).astype(np.float32)  # stored as float16 like every embedding
    vocab = CONCEPTS + [NEW_CONCEPT]
    fresh_after = Detector(concepts=vocab, text_embeddings=np.concatenate([text, extra]),
                           positive_idx=pos_rows + [len(CONCEPTS)], tau=tau)
    fresh_before = Detector(concepts=list(CONCEPTS), text_embeddings=text, positive_idx=mined_rows, tau=tau)
    after_ref, before_ref = fresh_after.log_scores(held), fresh_before.log_scores(held)
    np.testing.assert_allclose(after_ref, reference_log_scores(held, np.concatenate([text, extra]),
                                                               pos_rows + [len(CONCEPTS)], tau), atol=ATOL)

    wi = whatif.what_if(run, TPR)
    assert (wi.n, wi.n_pos_before, wi.n_pos_after) == (len(held), len(mined_rows), len(pos_rows) + 1)
    np.testing.assert_allclose(wi.before, before_ref, rtol=0, atol=ATOL)
    np.testing.assert_allclose(wi.after, after_ref, rtol=0, atol=ATOL)
    thr = threshold_at_tpr(before_ref, TPR)
    assert wi.threshold == pytest.approx(thr, abs=ATOL)
    assert wi.threshold_after == pytest.approx(threshold_at_tpr(after_ref, TPR), abs=ATOL)
    assert wi.far_before == pytest.approx(np.mean(before_ref < thr))
    assert wi.far_after == pytest.approx(np.mean(after_ref < thr))
    assert wi.rule == f"log-score at {TPR:.0%} TPR on {len(held)} held-out ID images"

    # The run's calibrated detector uses the current concepts ...
    det = run_detector(Run.open(run.path), tpr=TPR)
    assert sorted(det.positive_idx.tolist()) == pos_rows + [len(CONCEPTS)]
    # ... and the calibrated threshold of issue 12 (checked against a recomputation in test_calibration.py).
    cal = whatif.calibration(run, TPR)
    assert (det.threshold, det.threshold_rule) == (cal.threshold, cal.rule) == whatif.current_threshold(run, TPR)
    assert cal.rule.startswith(f"order statistic k = {cal.k} of {len(feats)} calibration ID images")


def test_accept_and_restore_bring_the_mined_scores_back(run):
    mined = run.mined_concepts()
    run.edit_concept("reject", mined[0].text)
    changed = whatif.what_if(run, TPR)
    assert changed.n_pos_after == len({m.index for m in mined}) - 1
    run.edit_concept("accept", mined[0].text)
    back = whatif.what_if(run, TPR)
    np.testing.assert_array_equal(back.after, back.before)
    assert back.far_after == back.far_before and back.n_pos_after == back.n_pos_before


def test_what_if_with_every_concept_rejected_has_no_threshold(run):
    for m in run.mined_concepts():
        run.edit_concept("reject", m.text)
    wi = whatif.what_if(run, TPR)
    assert wi.n_pos_after == 0 and np.isneginf(wi.after).all() and wi.far_after == 1.0
    thr, why = whatif.current_threshold(run, TPR)
    assert thr is None and "no positive concepts" in why


# ------------------------------------------------------------------------------------ OOD comparison
def test_ood_comparison_equals_metrics_computed_directly(run, tiny_env, tmp_path):
    enc = tiny_env[1]
    src = shared("dtd10")
    sample = tmp_path / "ood"
    sample.mkdir()
    for p in sorted(src.rglob("*.jpg"))[:8]:
        shutil.copyfile(p, sample / p.name)
    recs, ood_feats, skipped = whatif.encode_folder(sample, enc)
    assert len(recs) == 8 and ood_feats.shape == (8, 32) and skipped == []
    np.testing.assert_allclose(ood_feats, enc.encode_images([r.abs_path for r in recs]).features, atol=1e-3)

    feats, cids, text, tau = files(run)
    held = feats[cids < 0]
    mined_rows = sorted({m.index for m in run.mined_concepts()})
    pos_rows, _ = _edit(run, enc)
    extra = np.load(next((run.path / "added").glob("*.npy"))).astype(np.float32)[None]
    full = np.concatenate([text, extra])

    cmp = whatif.ood_comparison(run, whatif.sample_scorer(run, ood_feats))
    for name, t, rows in (("before", text, mined_rows), ("after", full, pos_rows + [len(CONCEPTS)])):
        id_s, ood_s = reference_log_scores(held, t, rows, tau), reference_log_scores(ood_feats, t, rows, tau)
        expected = ood_metrics(id_s, ood_s)
        assert set(cmp[name]) == set(expected)
        for key, value in expected.items():
            assert cmp[name][key] == pytest.approx(value, abs=1e-6), (name, key)
        # AUROC from its definition (ID = positive, higher score = more ID, ties count half).
        diff = id_s[:, None] - ood_s[None, :]
        assert cmp[name]["auroc"] == pytest.approx(np.mean((diff > 0) + 0.5 * (diff == 0)), abs=1e-12)


def test_heldout_above_the_cap_is_a_fixed_sample_scored_like_the_full_set(small_run):
    from clustermine.store import Run
    from clustermine.workflows.whatif import heldout

    run = Run.open(small_run)
    full = heldout(run)
    assert len(full.rows) >= 3
    part = heldout(run, max_rows=2)
    again = heldout(Run.open(small_run), max_rows=2)
    assert len(part.rows) == 2 and list(part.rows) == sorted(part.rows) and set(part.rows) <= set(full.rows)
    np.testing.assert_array_equal(part.rows, again.rows)
    _, extra, pos = run.vocabulary()
    where = np.searchsorted(full.rows, part.rows)
    np.testing.assert_allclose(part.scorer.log_scores(pos, extra), full.scorer.log_scores(pos, extra)[where], atol=1e-9)


# ------------------------------------------------------------------------------------ OOD sample of a folder
def _folder(path: str) -> str:
    return Path(path).parent.as_posix()


@pytest.fixture(scope="module")
def dtd10_paths() -> list[str]:
    """The scanned relative paths of dtd10 (10 texture subfolders x 60 photos), as encode_folder sees them."""
    from clustermine.method.images import scan_images

    return [r.path for r in scan_images(shared("dtd10")) if r.ok]


def test_ood_sample_of_dtd10_keeps_every_subfolder(dtd10_paths):
    folders = sorted({_folder(p) for p in dtd10_paths})
    assert len(folders) == 10 and len(dtd10_paths) == 600
    first_500 = {_folder(p) for p in sorted(dtd10_paths)[:500]}
    assert len(first_500) < 10  # the old rule (first 500 in file-name order) lost textures
    for limit in (500, 37, 10):
        idx = whatif.stratified_sample(dtd10_paths, limit, seed=3)
        assert len(idx) == limit == len(set(idx.tolist()))  # the sample size, no repeat
        per = {f: 0 for f in folders}
        for i in idx:
            per[_folder(dtd10_paths[i])] += 1
        assert min(per.values()) >= 1  # every subfolder represented
        assert max(per.values()) - min(per.values()) <= 1  # equal subfolders, equal shares
        assert np.array_equal(idx, whatif.stratified_sample(dtd10_paths, limit, seed=3))  # same seed, same sample
    assert not np.array_equal(whatif.stratified_sample(dtd10_paths, 500, seed=3),
                              whatif.stratified_sample(dtd10_paths, 500, seed=4))
    assert np.array_equal(whatif.stratified_sample(dtd10_paths, 600), np.arange(600))  # all when they fit
    few = whatif.stratified_sample(dtd10_paths, 4, seed=0)  # fewer than the subfolders: 4 different ones
    assert len(few) == 4 and len({_folder(dtd10_paths[i]) for i in few}) == 4


def test_ood_sample_is_proportional_to_unequal_subfolders(dtd10_paths):
    """Subfolders of 6, 12, ..., 60 photos (330 in all), sampled to 100: each gets its share within one
    image, and the smallest still gets one at a budget of 12."""
    by = {}
    for p in dtd10_paths:
        by.setdefault(_folder(p), []).append(p)
    paths = [p for i, f in enumerate(sorted(by)) for p in sorted(by[f])[:6 * (i + 1)]]
    sizes = {f: sum(_folder(p) == f for p in paths) for f in by}
    for limit in (100, 12):
        idx = whatif.stratified_sample(paths, limit, seed=0)
        assert len(idx) == limit
        got = {f: 0 for f in by}
        for i in idx:
            got[_folder(paths[i])] += 1
        for f, n in sizes.items():
            assert got[f] >= 1 and abs(got[f] - limit * n / len(paths)) < 1.0 + (limit < 20)


def test_encode_folder_draws_the_stratified_sample_and_says_so(tiny_env):
    _, enc = tiny_env
    recs, feats, skipped = whatif.encode_folder(shared("dtd10"), enc, limit=20)
    assert len(recs) == len(feats) == 20
    assert len({_folder(r.path) for r in recs}) == 10
    left_out, limit = whatif.not_drawn(skipped)
    assert limit == 20 and len(left_out) == 580 and not {r.path for r in recs} & set(left_out)
    note = whatif.sampling_note([r.path for r in recs], skipped)
    assert "20 of the folder's 600 usable images" in note and "stratified over its 10 subfolders" in note
    again = whatif.encode_folder(shared("dtd10"), enc, limit=20)[0]
    assert [r.path for r in again] == [r.path for r in recs]

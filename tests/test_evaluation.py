"""The evaluation protocol (issue 21, items 1-3): several named OOD sets, FPR conventions, bootstrap
intervals, several runs, feature caching, --features inputs, label-based baselines, output formats.

Real images (a few Imagenette / DTD files), the small k-means run of conftest, the offline encoder."""

from __future__ import annotations

import csv
import io
import json
import shutil

import numpy as np
import pytest
from scipy.special import logsumexp
from sklearn.metrics import roc_curve

from clustermine.cli import main
from clustermine.method import metrics
from clustermine.method.corpus import embed_concepts
from clustermine.method.encoders import load_encoder
from clustermine.method.scoring import mcm_scores, neg_mining, neglabel_scores
from clustermine.store import Run
from clustermine.workflows import evaluation as ev_mod
from clustermine.workflows.evaluation import (MCM, NEGLABEL, TRUE_NAMES, evaluate_sets, evaluate_single,
                                              read_class_names, render)
from clustermine.workflows.pipeline import load_folder
from clustermine.workflows.whatif import run_detector
from conftest import copy_subset, shared
from test_metrics import ref_fpr_at_recall

ID_CLASSES = ["n01440764", "n02102040", "n02979186", "n03028079"]  # the classes of conftest's small run
NAMES = {"n01440764": "tench", "n02102040": "English springer", "n02979186": "cassette player",
         "n03028079": "church"}


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    """ID test = 10 val images of each of the run's 4 classes; OOD near = 2 other Imagenette classes, far = 2 DTD
    textures (10 each); a private feature cache so encoder work can be counted."""
    base = tmp_path_factory.mktemp("eval_sets")
    return {
        "id": copy_subset(shared("imagenette_val100"), base / "id", ID_CLASSES, 10),
        "near": copy_subset(shared("imagenette_val100"), base / "near", ["n03417042", "n03888257"], 10),
        "far": copy_subset(shared("dtd10"), base / "far", ["banded", "cracked"], 10),
        "cache": base / "cache",
    }


@pytest.fixture(scope="module")
def encoder():
    return load_encoder("offline")


@pytest.fixture(scope="module")
def run(small_run_template):
    return Run.open(small_run_template)


def _two(sets):
    return {"near": sets["near"], "far": sets["far"]}


def _metric_keys(row):
    return {k: row[k] for k in ("auroc", "fpr95", "aupr_in", "aupr_out", "n_id", "n_ood")}


def test_two_named_sets_equal_two_single_evaluations_and_the_mean_row_is_their_mean(run, sets, encoder):
    ev = evaluate_sets([run], sets["id"], _two(sets), cache_dir=sets["cache"], encoder=encoder)
    rows = {r["name"]: r for r in ev.rows}
    assert [r["name"] for r in ev.rows] == ["near", "far", "mean"]
    for name in ("near", "far"):
        single = evaluate_single(run, sets["id"], sets[name], cache_dir=sets["cache"], encoder=encoder)
        assert _metric_keys(rows[name]) == _metric_keys(single)  # identical, not approximately
    for key in ("auroc", "fpr95", "aupr_in", "aupr_out"):
        assert rows["mean"][key] == pytest.approx((rows["near"][key] + rows["far"][key]) / 2, abs=1e-15)
    assert rows["mean"]["n_ood"] == 40 and rows["mean"]["n_id"] == 40
    # the raw scores of the label-free detector, in the shape the run stores for ROC curves / histograms
    assert set(ev.scores) == {"id", "ood/near", "ood/far"}
    det = run_detector(run)
    np.testing.assert_array_equal(ev.scores["ood/far"], det.log_scores(load_folder(sets["far"], encoder,
                                                                                    cache_dir=sets["cache"])[1]))
    assert ev.scores["id"].shape == (40,) and ev.scores["id"].dtype == np.float64


def test_fpr95_equals_hendrycks_reference_and_openood_column_equals_its_reference(run, sets, encoder):
    ev = evaluate_sets([run], sets["id"], _two(sets), cache_dir=sets["cache"], encoder=encoder,
                       fpr_convention="openood")
    for row in ev.rows[:2]:
        s_id, s_ood = ev.scores["id"], ev.scores[f"ood/{row['name']}"]
        assert row["fpr95"] == ref_fpr_at_recall(s_id, s_ood)
        assert row["fpr95_openood"] == openood_reference(s_id, s_ood)
    assert "fpr95_openood" in ev.rows[2] and "fpr95_openood_variant" in ev.to_json()


def openood_reference(id_scores, ood_scores):
    """OpenOOD v1.5 ``auc_and_fpr_recall``, as its code reads (OOD positive, scikit-learn's roc_curve)."""
    conf = np.concatenate([id_scores, ood_scores])
    ood_indicator = np.concatenate([np.zeros(len(id_scores)), np.ones(len(ood_scores))])
    fpr_list, tpr_list, _ = roc_curve(ood_indicator, -conf)
    return fpr_list[np.argmax(tpr_list >= 0.95)]


def brute_openood(id_scores, ood_scores):
    """The same rule by brute force: every threshold t over the distinct scores (OOD flagged when S <= t),
    scikit-learn's collinear-point dropping, first point catching >= 95 % of OOD."""
    ts = sorted(set(id_scores) | set(ood_scores))
    pts = [(sum(s <= t for s in ood_scores), sum(s <= t for s in id_scores)) for t in ts]
    if len(pts) > 2:
        pts = [p for i, p in enumerate(pts) if i in (0, len(pts) - 1) or
               (pts[i + 1][0] - 2 * p[0] + pts[i - 1][0], pts[i + 1][1] - 2 * p[1] + pts[i - 1][1]) != (0, 0)]
    for tp, fp in [(0, 0)] + pts:
        if tp / len(ood_scores) >= 0.95:
            return fp / len(id_scores)


def test_openood_rule_and_bootstrap_replicates_on_tied_scores():
    rng = np.random.default_rng(7)
    for trial in range(60):
        n_id, n_ood = rng.integers(1, 50, 2)
        a, b = np.round(rng.normal(1, 1, n_id), 1), np.round(rng.normal(0, 1, n_ood), 1)  # many ties
        assert metrics.fpr95_openood(a, b) == openood_reference(a, b) == brute_openood(list(a), list(b))
        reps = metrics.bootstrap_ood(a, b, 5, seed=trial, stream=2)
        for r in range(5):  # each vectorised replicate = the plain metrics on that resample
            i, j = metrics.bootstrap_indices(n_id, n_ood, r, seed=trial, stream=2)
            assert reps["auroc"][r] == metrics.auroc(a[i], b[j])
            assert reps["fpr95"][r] == ref_fpr_at_recall(a[i], b[j])


def test_bootstrap_intervals_reproducible_for_a_seed_and_contain_the_point_estimate(run, sets, encoder):
    kw = dict(cache_dir=sets["cache"], encoder=encoder, bootstrap=300)
    first = evaluate_sets([run], sets["id"], _two(sets), seed=0, **kw)
    again = evaluate_sets([run], sets["id"], _two(sets), seed=0, **kw)
    other = evaluate_sets([run], sets["id"], _two(sets), seed=1, **kw)
    assert [(r["auroc_ci"], r["fpr95_ci"]) for r in first.rows] == [(r["auroc_ci"], r["fpr95_ci"]) for r in again.rows]
    assert [r["auroc_ci"] for r in first.rows] != [r["auroc_ci"] for r in other.rows]
    for r in first.rows:
        for key in ("auroc", "fpr95"):
            lo, hi = r[f"{key}_ci"]
            assert lo <= r[key] <= hi, (r["name"], key, lo, r[key], hi)
    # a set's interval does not depend on which other sets are evaluated beside it
    alone = evaluate_sets([run], sets["id"], {"far": sets["far"]}, seed=0, **kw)
    assert alone.rows[0]["auroc_ci"] == first.rows[1]["auroc_ci"]


def test_a_second_evaluation_does_not_re_encode(run, sets, encoder, tmp_path):
    cache = tmp_path / "cache"
    chunks = lambda: sorted(cache.rglob("chunk-*.npz"))  # noqa: E731  (every encoded batch is a cache chunk)
    evaluate_sets([run], sets["id"], _two(sets), cache_dir=cache, encoder=encoder)
    after_first = chunks()
    assert after_first  # the first evaluation encoded the 80 images
    n_cached = sum(len(np.load(c)["keys"]) for c in after_first)
    assert n_cached == 80
    evaluate_sets([run], sets["id"], {"again": sets["near"], **_two(sets)}, cache_dir=cache, encoder=encoder)
    assert chunks() == after_first  # nothing new encoded


def test_features_files_as_id_and_ood_sets_give_the_same_numbers(run, sets, encoder, tmp_path):
    id_feats = load_folder(sets["id"], encoder, cache_dir=sets["cache"])[1]
    far_feats = load_folder(sets["far"], encoder, cache_dir=sets["cache"])[1]
    np.save(tmp_path / "id.npy", id_feats.astype(np.float16))
    np.save(tmp_path / "far.npy", (3.0 * far_feats).astype(np.float32))  # not normalised: rows are normalised
    from_files = evaluate_sets([run], tmp_path / "id.npy", {"far": tmp_path / "far.npy"}, encoder=encoder)
    from_folders = evaluate_sets([run], sets["id"], {"far": sets["far"]}, cache_dir=sets["cache"], encoder=encoder)
    assert from_files.rows[0]["auroc"] == pytest.approx(from_folders.rows[0]["auroc"], abs=1e-12)
    assert from_files.rows[0]["n_id"] == 40
    np.save(tmp_path / "bad.npy", far_feats[:, :10])  # wrong dimension: the mine --features check
    with pytest.raises(Exception, match="bad.npy.*D=10"):
        evaluate_sets([run], sets["id"], {"bad": tmp_path / "bad.npy"}, encoder=encoder)


def test_several_runs_give_per_run_rows_and_mean_sd(small_run_template, sets, encoder, tmp_path):
    other = tmp_path / "edited-run"
    shutil.copytree(small_run_template, other)
    r2 = Run.open(other)
    r2.edit_concept("reject", r2.positive_concepts()[0])  # another detector (a seed would do the same)
    runs = [Run.open(small_run_template), r2]
    ev = evaluate_sets(runs, sets["id"], _two(sets), cache_dir=sets["cache"], encoder=encoder)
    per_run = [r for r in ev.rows if r["run"] in ev.runs]
    summary = [r for r in ev.rows if r.get("n_runs") == 2]
    assert len(per_run) == 6 and [r["name"] for r in summary] == ["near", "far", "mean"]
    for s in summary:
        vals = np.array([r["auroc"] for r in per_run if r["name"] == s["name"]])
        assert s["auroc"] == pytest.approx(vals.mean(), abs=1e-15)
        assert s["auroc_sd"] == pytest.approx(vals.std(), abs=1e-15) and s["auroc_sd"] > 0
    single = evaluate_single(r2, sets["id"], sets["near"], cache_dir=sets["cache"], encoder=encoder)
    assert _metric_keys(next(r for r in per_run if r["run"] == "edited-run" and r["name"] == "near")) == \
        _metric_keys(single)
    assert set(ev.scores_by_run) == {"small-run", "edited-run"} and ev.scores is ev.scores_by_run["small-run"]


def test_baseline_rows_equal_the_scoring_maths(run, sets, encoder, tmp_path):
    mapping = tmp_path / "names.tsv"
    mapping.write_text("".join(f"{k}\t{v}\n" for k, v in {**NAMES, "n03888257": "parachute"}.items()))
    names = read_class_names(mapping, sets["id"])
    assert names == [NAMES[c] for c in ID_CLASSES]
    ev = evaluate_sets([run], sets["id"], _two(sets), class_names=names, cache_dir=sets["cache"], encoder=encoder)
    by = {(r["method"], r["name"]): r for r in ev.rows}
    for m in (MCM, NEGLABEL, TRUE_NAMES):
        assert by[(m, "near")]["label_based"] and (m, "mean") in by
    assert not by[("ClusterMine", "near")]["label_based"]
    # reference: the method/scoring maths called directly, on the same features
    feats = {k: load_folder(sets[k], encoder, cache_dir=sets["cache"])[1] for k in ("id", "near", "far")}
    template = run.config.get("template") or encoder.text_template
    cls = embed_concepts(encoder, names, template)
    vocab = run.text_embeddings()
    negs = neg_mining(cls, vocab, 0.95, 0.15)
    det = run_detector(run)
    # "true names as Y_pos", by its definition in float64: LSE over the names minus LSE over names + corpus
    lower = {n.lower() for n in names}
    rest = [i for i, c in enumerate(det.concepts[:len(vocab)]) if c.lower() not in lower]
    text = np.concatenate([cls, vocab[rest]]).astype(np.float64)

    def true_names(f):
        z = f.astype(np.float64) @ text.T / det.tau
        return logsumexp(z[:, :len(names)], axis=1) - logsumexp(z, axis=1)

    refs = {MCM: lambda f: mcm_scores(f, cls, tau=1.0),
            NEGLABEL: lambda f: neglabel_scores(f, cls, vocab[negs], tau=det.tau), TRUE_NAMES: true_names}
    for method, score in refs.items():
        s_id = score(feats["id"])
        for name in ("near", "far"):
            want = metrics.ood_metrics(s_id, score(feats[name]))
            got = by[(method, name)]
            if method == NEGLABEL:
                assert _metric_keys(got) == _metric_keys(want)
            else:
                for k in ("auroc", "fpr95", "aupr_in", "aupr_out"):
                    assert got[k] == pytest.approx(want[k], abs=1e-9), (method, name, k)
    assert ev.baseline_info[NEGLABEL]["n_neg"] == len(negs)


def test_output_formats_parse(run, sets, encoder):
    ev = evaluate_sets([run], sets["id"], _two(sets), cache_dir=sets["cache"], encoder=encoder, bootstrap=50,
                       fpr_convention="openood", class_names=[NAMES[c] for c in ID_CLASSES])
    rows = list(csv.DictReader(io.StringIO(render(ev, "csv"))))
    assert len(rows) == len(ev.rows) == 12
    assert float(rows[0]["auroc"]) == ev.rows[0]["auroc"] and float(rows[0]["auroc_ci_low"]) == ev.rows[0]["auroc_ci"][0]
    md = render(ev, "markdown").splitlines()
    assert md[0].startswith("| method | OOD set | AUROC % | FPR95 % | FPR95 (OpenOOD) % |") and len(md) == 14
    assert md[5].startswith("| MCM (label-based) | near |") and md[-1].startswith(f"| {TRUE_NAMES} (label-based) | mean |")
    tex = render(ev, "latex")
    assert tex.startswith("\\begin{tabular}{llrrrrrrr}") and tex.rstrip().endswith("\\end{tabular}")
    assert tex.count("\\\\") == 13 and "FPR95 (OpenOOD) \\%" in tex
    doc = json.loads(render(ev, "json"))
    assert {"name", "auroc", "fpr95", "aupr_in", "aupr_out", "n_id", "n_ood", "auroc_ci", "fpr95_ci"} <= set(doc["rows"][0])
    table = render(ev, "table")
    assert "near" in table and "far" in table and "95 % bootstrap" in table


def test_cli_single_ood_keeps_todays_json_and_named_sets_give_rows(run, sets, capsys, tmp_path):
    import shutil

    from clustermine.workflows.evaluation_store import latest_evaluation

    copy = tmp_path / run.path.name  # evaluate keeps its result in the run: never in the shared template
    shutil.copytree(run.path, copy)
    path = str(copy)
    assert main(["evaluate", path, "--id", str(sets["id"]), "--ood", str(sets["far"]), "--json",
                 "--cache-dir", str(sets["cache"])]) == 0
    got = json.loads(capsys.readouterr().out)
    assert list(got) == ["auroc", "fpr95", "aupr_in", "aupr_out", "n_id", "n_ood", "n_positive", "fpr95_variant"]
    assert main(["evaluate", path, "--id", str(sets["id"]), "--ood", f"near={sets['near']}", "--ood",
                 f"far={sets['far']}", "--json", "--cache-dir", str(sets["cache"])]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in doc["rows"]] == ["near", "far", "mean"]
    assert _metric_keys(doc["rows"][1]) == _metric_keys(got)
    kept = latest_evaluation(Run.open(copy))  # the Evaluate page and the report show it
    assert kept.result["rows"] == doc["rows"] and kept.ood_names == ["near", "far"] and not kept.stale
    assert kept.result["ood"] == {"near": str(sets["near"]), "far": str(sets["far"])}
    assert main(["evaluate", "--runs", path, path, "--id", str(sets["id"]), "--ood", f"far={sets['far']}",
                 "--markdown", "--cache-dir", str(sets["cache"])]) == 0
    assert "| method | run | OOD set |" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--ood", "=nowhere"], "--ood '=nowhere': expected NAME=DIR"),
    (["--ood", "x=/no/such/folder"], "/no/such/folder: --ood x: folder or features file not found"),
    (["--ood", "{far}", "--class-names", "{empty}"], "{empty}: no class names (the file is empty)"),
    (["--ood", "{far}", "--class-names", "{three}"], "{three}: 3 class names, but the ID folder"),
    (["--ood", "{far}", "--class-names", "{partial}"], "{partial}: no class name for the ID subfolder(s) n03028079"),
])
def test_bad_input_gives_a_clear_message_naming_the_file(run, sets, tmp_path, capsys, args, message):
    files = {"empty": tmp_path / "empty.txt", "three": tmp_path / "three.txt", "partial": tmp_path / "partial.tsv"}
    files["empty"].write_text("\n\n")
    files["three"].write_text("tench\nchurch\ndog\n")
    files["partial"].write_text("".join(f"{k}\t{v}\n" for k, v in list(NAMES.items())[:3]))
    fill = {**{k: str(v) for k, v in files.items()}, "far": str(sets["far"])}
    argv = ["evaluate", str(run.path), "--id", str(sets["id"])] + [a.format(**fill) for a in args]
    assert main(argv) == 2
    assert message.format(**fill) in capsys.readouterr().err


def test_class_names_from_folders(sets, tmp_path):
    assert read_class_names("folders", sets["id"]) == ["n01440764", "n02102040", "n02979186", "n03028079"]
    caltech = tmp_path / "c"
    (caltech / "Water_lilly").mkdir(parents=True)
    (caltech / "airplanes").mkdir()
    assert read_class_names("folders", caltech) == ["water lilly", "airplanes"]  # sorted folder order
    assert ev_mod.clean_class_name("Water_lilly") == "water lilly"


def test_evaluate_reports_the_clustering_against_folder_labels(run, sets, encoder):
    """Issue 21, item 4: with class subfolders under the run's images, evaluate reports ACC / NMI / ARI
    of its clustering (the audit's numbers); without labels, nothing is said."""
    import dataclasses

    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    from clustermine.workflows.diagnostics import run_labels
    from clustermine.workflows.clusterview import voting_cluster_ids

    ev = evaluate_sets([run], sets["id"], _two(sets), cache_dir=sets["cache"], encoder=encoder)
    p = ev.purity[run.path.name]
    clusters, labels = voting_cluster_ids(run), run_labels(run)
    keep = (clusters >= 0) & np.array([lab is not None for lab in labels])
    y = [labels[i] for i in np.flatnonzero(keep)]
    assert p["n_images"] == int(keep.sum()) >= 30 and p["n_classes"] == 4  # held-out images are not clustered
    assert p["nmi"] == pytest.approx(normalized_mutual_info_score(y, clusters[keep]), abs=1e-12)
    assert p["ari"] == pytest.approx(adjusted_rand_score(y, clusters[keep]), abs=1e-12)
    assert ev.to_json()["purity"][run.path.name]["acc"] == p["acc"]
    table = render(ev, "table")
    assert f"ACC {p['acc']:.3f}  NMI {p['nmi']:.3f}  ARI {p['ari']:.3f}" in table
    flat = dataclasses.replace(ev, purity={run.path.name: None})
    assert "purity" not in flat.to_json() and "folder labels" not in render(flat, "table")

"""Per-image results table (CSV / parquet, export) and the self-contained HTML report: values equal
the run's stored arrays and scores recomputed here; the report opens offline in Chromium with no
network request and every cluster card visible."""

from __future__ import annotations

import csv
import html
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import CHROMIUM, copy_subset, missing_resource, shared

from clustermine.workflows import concept_edits
from clustermine.cli import main
from clustermine.workflows.export import export_run
from clustermine.method.mining import cluster_alerts
from clustermine.store import layout
from clustermine.store import Run
from clustermine.workflows.tables import IMAGE_FIELDS, image_table, image_table_csv, image_table_parquet
from test_app import app_env, no_exception, open_app  # noqa: F401,E402  (app_env is a fixture)
from clustermine.workflows.whatif import run_detector


def _lse(x: np.ndarray) -> np.ndarray:
    m = x.max(axis=1, keepdims=True)
    return (m + np.log(np.exp(x - m).sum(axis=1, keepdims=True))).ravel()


def reference_log_scores(run_dir: Path, positive_texts: list[str]) -> np.ndarray:
    """log S of every stored feature row, from the raw files: float64 LSE over the positive concepts
    minus LSE over the whole corpus (positives are corpus concepts in these tests)."""
    feats = np.load(run_dir / layout.FEATURES).astype(np.float64)
    text = np.load(run_dir / layout.TEXT_EMBEDDINGS).astype(np.float64)
    corpus = (run_dir / layout.CORPUS).read_text(encoding="utf-8").split("\n")[:-1]
    tau = Run.open(run_dir).tau
    pos = [corpus.index(t) for t in positive_texts]
    logits = feats @ text.T / tau
    return np.minimum(_lse(logits[:, pos]) - _lse(logits), 0.0)


def test_image_table_equals_the_run_arrays_and_scores(small_run):
    run = Run.open(small_run)
    dropped = run.positive_concepts()[0]
    run.edit_concept("reject", dropped, user="tester")  # the table must follow the current concepts
    run = Run.open(small_run)
    cols, threshold = image_table(run)
    clusters = np.load(small_run / layout.CLUSTER_IDS)
    with np.load(small_run / layout.VOTES) as z:
        top_idx, top_sim = z["top_idx"], z["top_sim"].astype(np.float64)
    corpus = (small_run / layout.CORPUS).read_text(encoding="utf-8").split("\n")[:-1]
    import pyarrow.parquet as pq

    records = pq.read_table(small_run / layout.IMAGES).to_pylist()
    usable = sorted((r for r in records if r.get("row") is not None), key=lambda r: r["row"])
    ref = reference_log_scores(small_run, run.positive_concepts())
    assert dropped not in run.positive_concepts()

    assert cols["row"] == list(range(len(usable)))
    assert cols["path"] == [r["path"] for r in usable]
    assert cols["cluster"] == clusters.tolist()
    assert cols["held_out"] == (clusters < 0).tolist()
    assert any(cols["held_out"]) and not all(cols["held_out"])
    assert cols["top1_concept"] == [corpus[i] for i in top_idx[:, 0]]
    np.testing.assert_allclose(cols["top1_similarity"], top_sim[:, 0], atol=1e-6)
    np.testing.assert_allclose(cols["log_score"], ref, atol=1e-4)
    np.testing.assert_allclose(cols["score"], np.exp(ref), rtol=1e-3)
    assert threshold == run_detector(run).threshold
    # the verdict at the current threshold; rows within float noise of it are not asserted
    clear = np.abs(ref - threshold) > 1e-4
    want = np.where(ref >= threshold, "ID", "OOD")
    assert np.array(cols["verdict"])[clear].tolist() == want[clear].tolist()
    assert clear.sum() >= len(ref) - 1  # the check above covers (nearly) every row
    assert cols["excluded"] == [False] * len(usable)


def test_csv_guards_formulas_and_parquet_matches(small_run):
    run = Run.open(small_run)
    records = run.image_records()
    target = next(r for r in records if r.get("row") == 0)
    target["path"] = "=HYPERLINK(\"x\")/evil.jpg"  # a file name that a spreadsheet would run
    run.write_images(records)
    run = Run.open(small_run)
    table, _ = image_table(run)
    rows = list(csv.DictReader(io.StringIO(image_table_csv(run, table))))
    assert tuple(rows[0].keys()) == IMAGE_FIELDS
    assert rows[0]["path"] == "'=HYPERLINK(\"x\")/evil.jpg"
    assert not any(v[:1] in "=+-@" for r in rows for k, v in r.items() if k in ("path", "top1_concept"))

    import pyarrow.parquet as pq

    pt = pq.read_table(io.BytesIO(image_table_parquet(run, table))).to_pydict()
    assert list(pt) == list(IMAGE_FIELDS)
    assert pt["path"][0] == "=HYPERLINK(\"x\")/evil.jpg"  # parquet keeps the data verbatim
    assert pt["cluster"] == [int(r["cluster"]) for r in rows]
    np.testing.assert_allclose(pt["log_score"], [float(r["log_score"]) for r in rows], rtol=0, atol=0)
    assert pt["held_out"] == [r["held_out"] == "True" for r in rows]

    out = export_run(run, small_run.parent / "export")
    assert (out / "images.csv").read_bytes().decode("utf-8") == image_table_csv(run, table)
    assert pq.read_table(out / "images.parquet").num_rows == len(rows)


# ------------------------------------------------------------------------------------ HTML report
EXTERNAL = re.compile(r"""(?:src|href|action|poster|srcset)\s*=\s*["']?\s*(?:https?:)?//""", re.I)


def _check_report_text(text: str, run: Run) -> None:
    assert "http://" not in text and "https://" not in text
    assert not EXTERNAL.search(text)
    assert "url(" not in text and "@import" not in text
    for src in re.findall(r"""src\s*=\s*["']([^"']*)""", text):
        assert src.startswith("data:image/jpeg;base64,"), src[:60]
    stats = run.cluster_stats()
    ids = [int(m) for m in re.findall(r'<section class="card" id="cluster-(\d+)"', text)]
    assert ids == [s.cluster for s in stats]
    vocab = run.vocabulary_base()
    alerts = cluster_alerts(stats)
    for s in stats:
        card = text.split(f'id="cluster-{s.cluster}"', 1)[1].split("</section>", 1)[0]
        if s.winner is not None:
            assert html.escape(vocab[s.winner]) in card
        for a in alerts.get(s.cluster, []):
            assert html.escape(a) in card
        assert card.count("<rect") == min(len(s.histogram), 8)
        assert f"size {s.size} · purity {s.purity:.0%}" in card
    for c in run.concepts():
        assert f'data-concept-id="{c.id}"' in text
        assert html.escape(c.text) in text


def test_report_holds_every_cluster_and_concept_and_the_ood_metrics(small_run, tmp_path):
    from sklearn.metrics import roc_auc_score

    from clustermine.method.encoders import load_encoder
    from clustermine.method.images import scan_images

    run = Run.open(small_run)
    concept_edits.edit_concept(run, "add", "<b>bold</b> fish", user="tester")  # user text: escaped, not markup
    run.edit_concept("reject", run.positive_concepts()[0], user="tester")
    run = Run.open(small_run)
    ood_dir = copy_subset(shared("imagenette_train100"), tmp_path / "ood", ["n03417042"], 8)
    out = tmp_path / "out" / "report.html"
    assert main(["report", str(small_run), "--out", str(out), "--ood", str(ood_dir)]) == 0
    text = out.read_text(encoding="utf-8")
    _check_report_text(text, run)
    assert "<b>bold</b> fish" not in text and "&lt;b&gt;bold&lt;/b&gt; fish" in text
    assert text.count("<td>reject</td>") == 1 and text.count("<td>add</td>") == 1

    # OOD AUROC (current concepts) recomputed here: held-out ID vs the OOD photos, sklearn's AUROC
    pos_rows = run.vocabulary()[2]
    feats = np.load(small_run / layout.FEATURES).astype(np.float64)
    held = np.load(small_run / layout.CLUSTER_IDS) < 0
    enc = load_encoder("offline")
    ood_paths = [r.abs_path for r in scan_images(ood_dir) if r.ok]
    ood_feats = enc.encode_images(ood_paths).features.astype(np.float16).astype(np.float64)
    text_emb = np.concatenate([run.text_embeddings(), run.vocabulary()[1]]).astype(np.float64)

    def log_s(f: np.ndarray) -> np.ndarray:
        logits = f @ text_emb.T / run.tau
        return np.minimum(_lse(logits[:, pos_rows]) - _lse(logits), 0.0)

    id_s, ood_s = log_s(feats[held]), log_s(ood_feats)
    auroc = roc_auc_score(np.r_[np.ones(len(id_s)), np.zeros(len(ood_s))], np.r_[id_s, ood_s])
    row = re.search(r"<tr><td>current concepts</td><td>([0-9.]+)</td>", text)
    assert row is not None
    assert abs(float(row.group(1)) - auroc) < 2e-3
    assert f"vs {len(ood_paths)} images" in text


def test_report_refuses_a_folder_as_output(small_run_template, tmp_path, capsys):
    assert main(["report", str(small_run_template), "--out", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
    out = tmp_path / "r.html"
    assert main(["report", str(small_run_template), "--out", str(out), "--ood", str(tmp_path / "nope")]) == 2
    assert "OOD folder not found" in capsys.readouterr().err and not out.exists()


@pytest.mark.browser
def test_report_opens_offline_in_chromium(small_run_template, tmp_path):
    if not CHROMIUM.exists():
        missing_resource(f"{CHROMIUM} not installed")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        missing_resource(f"playwright not importable: {exc}")
    run = Run.open(small_run_template)
    out = tmp_path / "report.html"
    assert main(["report", str(small_run_template), "--out", str(out)]) == 0
    url = out.resolve().as_uri()
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                          "--disable-component-update", "--disable-sync", "--no-first-run"])
        ctx = browser.new_context(viewport={"width": 1400, "height": 1000}, offline=True)
        page = ctx.new_page()
        page.on("request", lambda r: requests.append(r.url))
        page.goto(url, wait_until="load")
        page.wait_for_timeout(300)
        cards = page.locator("section.card")
        assert cards.count() == len(run.cluster_stats())
        for i in range(cards.count()):
            cards.nth(i).scroll_into_view_if_needed()
            assert cards.nth(i).is_visible()
        # every embedded thumbnail decoded (naturalWidth > 0)
        widths = page.eval_on_selector_all("img", "els => els.map(e => e.naturalWidth)")
        assert widths and min(widths) > 0
        assert page.locator("tr.concept").count() == len(run.concepts())
        # issue 18 (12): captions (file names) wrap inside their thumbnail, histogram labels start
        # inside their chart: nothing is cut off
        cut = page.eval_on_selector_all("figcaption", "els => els.filter(e => e.scrollWidth > e.clientWidth)"
                                                      ".map(e => e.textContent)")
        assert page.locator("figcaption").count() > 0 and cut == []
        left = page.eval_on_selector_all("svg.hist text", "els => Math.min(...els.map(e => e.getBBox().x))")
        assert left >= 0
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()
    others = [u for u in requests if u != url and not u.startswith("data:")]
    assert others == [], others


def _report_ood_row(text: str, label: str) -> tuple[str, str]:
    """(AUROC, FPR95) as printed in the report's OOD table row ``label``."""
    row = re.search(rf"<tr><td>{label}</td><td>([0-9.]+)</td><td>([0-9.]+)</td>", text)
    assert row is not None, f"no OOD row {label!r} in the report"
    return row.group(1), row.group(2)


def test_report_carries_the_latest_what_if_on_a_server_folder(small_run, tmp_path):
    """Issue 18 (5): a what-if on a server folder (the panel's default source) is recorded in the run,
    and the report shows its AUROC / FPR95, equal to the engine's; after a concept edit the report
    re-measures on that folder; once the folder is gone the old numbers are flagged, never dropped."""
    import shutil

    from clustermine.workflows import ood_eval, report
    from clustermine.method.encoders import load_encoder
    from clustermine.workflows.whatif import encode_folder, ood_comparison, sample_scorer

    run = Run.open(small_run)
    assert ood_eval.latest(run) is None and '<section id="ood">' not in report.report_html(run)
    folder = copy_subset(shared("imagenette_val100"), tmp_path / "server" / "trucks", ["n03417042"], 6)
    enc = load_encoder("offline")
    wi = ood_eval.evaluate_sample(run, folder, enc)  # what the what-if panel calls on "Use this folder"
    _, feats, _ = encode_folder(folder, enc)
    engine = ood_comparison(run, sample_scorer(run, feats))
    for name in ("before", "after"):
        assert wi[name] == engine[name]
    text = report.report_html(Run.open(small_run), encoder=enc)
    assert _report_ood_row(text, "current concepts") == (f"{engine['after']['auroc']:.4f}",
                                                         f"{engine['after']['fpr95']:.4f}")
    assert _report_ood_row(text, "mined concepts") == (f"{engine['before']['auroc']:.4f}",
                                                       f"{engine['before']['fpr95']:.4f}")
    assert "vs 6 images of the OOD sample trucks; all 6 usable image(s) of the folder are used" in text

    # a concept edit makes the record stale: the report measures again on the same folder
    run.edit_concept("reject", run.positive_concepts()[0], user="tester")
    run = Run.open(small_run)
    assert ood_eval.latest(run)["current"] is False
    edited = ood_comparison(run, sample_scorer(run, feats))
    assert edited["after"]["auroc"] != engine["after"]["auroc"] or edited["after"]["fpr95"] != engine["after"]["fpr95"]
    text = report.report_html(run, encoder=enc)
    assert _report_ood_row(text, "current concepts") == (f"{edited['after']['auroc']:.4f}",
                                                         f"{edited['after']['fpr95']:.4f}")
    assert ood_eval.latest(run)["current"] is True and "measured before later changes" not in text

    # folder gone and another edit: the recorded numbers stay in the report, flagged as old
    shutil.rmtree(folder)
    run.edit_concept("add", "garbage truck", user="tester")
    text = report.report_html(Run.open(small_run), encoder=enc)
    assert _report_ood_row(text, "current concepts")[0] == f"{edited['after']['auroc']:.4f}"
    assert "measured before later changes" in text


def test_report_ood_of_an_unreadable_record_is_left_out(small_run):
    from clustermine.workflows import ood_eval, report

    layout.ood_eval_file(small_run).parent.mkdir(parents=True, exist_ok=True)
    layout.ood_eval_file(small_run).write_text("{not json", encoding="utf-8")
    run = Run.open(small_run)
    assert ood_eval.latest(run) is None
    assert '<section id="ood">' not in report.report_html(run)


@pytest.mark.app
def test_export_page_offers_the_table_and_report(app_env, small_run, tmp_path):
    """The Export page's deferred payloads (built on click) are the engine's table and report; with an
    OOD sample stored by the what-if panel the report carries its metrics."""
    copy_subset(shared("imagenette_train100"), layout.ood_sample_dir(small_run), ["n03425413"], 4)
    at = open_app(small_run.name, "pages/export.py")
    no_exception(at)
    labels = [b.proto.label for b in at.get("download_button")]
    assert {"images.csv", "images.parquet", "Report (.html)"} <= set(labels)

    from ui.exports import deferred

    from clustermine.workflows import report, tables

    run = Run.open(small_run)
    csv_text = deferred(tables.image_table_csv, str(small_run))()
    assert [r["path"] for r in csv.DictReader(io.StringIO(csv_text))] == \
        [r["path"] for r in sorted(run.image_records(ok_only=True), key=lambda r: r["row"])]
    assert any("images uploaded in the what-if panel" in c.value for c in at.caption)
    page = deferred(report.report_html, str(small_run))()
    _check_report_text(page, run)
    assert '<section id="ood">' in page and "vs 4 images" in page
    at = open_app(small_run.name, "pages/export.py")  # now recorded: the page names the sample
    assert any("OOD metrics of 4 image(s)" in c.value for c in at.caption)


def test_typical_and_atypical_members_by_angle_to_the_centroid():
    from clustermine.workflows.report import typical_atypical

    angles = np.radians([0.0, 10.0, -10.0, 40.0, -50.0, 170.0])
    feats = np.stack([np.cos(angles), np.sin(angles)], axis=1) * np.array([[1], [2], [1], [3], [1], [1]])
    cids = np.array([0, 0, 0, 0, 0, 1])
    unit = feats[:5] / np.linalg.norm(feats[:5], axis=1, keepdims=True)
    mean = feats[:5].mean(axis=0)
    centre = np.arctan2(mean[1], mean[0])
    by_angle = np.argsort(np.abs(np.arctan2(unit[:, 1], unit[:, 0]) - centre))
    typical, atypical = typical_atypical(feats, cids, 0, 2)
    assert typical == by_angle[:2].tolist()
    assert atypical == by_angle[::-1][:2].tolist()
    assert typical_atypical(feats, cids, 1, 2) == ([5], [])  # too small for an atypical list
    assert typical_atypical(feats, cids, 7, 2) == ([], [])

"""Export a run: Y_pos as txt / CSV / JSON, the detector bundle, and a summary."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from clustermine.core.units import csv_safe  # noqa: F401  (re-exported)
from clustermine.store import Run
from clustermine.core.storage import atomic_write_json, atomic_write_text
from clustermine.workflows.whatif import run_detector
from clustermine.core.config import DEFAULT_TPR
from clustermine.core.storage import atomic_write_bytes
from clustermine.workflows.tables import image_table, image_table_csv, image_table_parquet
from clustermine.workflows.whatif import calibration

CONCEPT_FIELDS = ("id", "text", "status", "source", "votes", "purity", "clusters", "updated", "user")


def concepts_txt(run: Run) -> str:
    """The current Y_pos, one concept per line."""
    return "".join(c + "\n" for c in run.positive_concepts())


def concepts_csv(run: Run) -> str:
    """All concepts (any status) as CSV with the columns of ``CONCEPT_FIELDS``."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CONCEPT_FIELDS, extrasaction="ignore")
    w.writeheader()
    for c in run.concepts():
        d = c.to_dict()
        d["clusters"] = " ".join(map(str, d["clusters"]))
        w.writerow({k: csv_safe(v) for k, v in d.items()})
    return buf.getvalue()


def concepts_json(run: Run) -> str:
    return json.dumps([c.to_dict() for c in run.concepts()], indent=2, ensure_ascii=False)


def calibration_summary(run: Run, tpr: float = DEFAULT_TPR) -> dict | None:
    """How the default threshold (``tpr``) was calibrated, with the too-few-images warning (None:
    no positive concept, nothing to calibrate). See :mod:`clustermine.method.calibration`."""
    if not len(run.vocabulary()[2]):
        return None

    cal = calibration(run, tpr)
    return {"tpr": cal.tpr, "confidence": cal.confidence, "threshold": cal.threshold, "k": cal.k,
            "n_calibration": cal.n, "n_mining_crossfitted": cal.n_mining, "n_holdout": cal.n_holdout,
            "n_folds": cal.n_folds, "tpr_guaranteed": cal.guaranteed, "min_n_for_guarantee": cal.min_n,
            "id_false_alarms_crossval": cal.false_alarms, "warning": cal.warning}


def run_summary(run: Run) -> dict:
    """Config, encoder, summary figures, Y_pos, the threshold and its calibration (with the warning
    when the calibration set is too small for the target TPR) and the edit log of a run."""
    det = run_detector(run)
    cal = calibration_summary(run)
    return {"run_id": run.run_id, "status": run.status, "created": run.meta.get("created"),
            "config": run.config, "encoder": run.meta.get("encoder"), "versions": run.meta.get("versions"),
            "summary": run.meta.get("summary"), "positive_concepts": run.positive_concepts(),
            "threshold": det.threshold, "threshold_rule": det.threshold_rule, "calibration": cal,
            "warnings": [cal["warning"]] if cal and cal["warning"] else [], "edits": run.edits()}


def export_run(run: Run, out_dir: str | Path) -> Path:
    """Write ``positive_concepts.txt``, ``concepts.csv``, ``concepts.json``, ``summary.json`` and
    ``detector/`` (load it with ``clustermine.Detector.load``), and the per-image results
    ``images.csv`` / ``images.parquet`` (:mod:`clustermine.workflows.tables`) into ``out_dir``."""

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "positive_concepts.txt", concepts_txt(run))
    atomic_write_text(out / "concepts.csv", concepts_csv(run))
    atomic_write_text(out / "concepts.json", concepts_json(run))
    atomic_write_json(out / "summary.json", run_summary(run))
    run_detector(run).save(out / "detector")
    table, _ = image_table(run)
    atomic_write_text(out / "images.csv", image_table_csv(run, table))
    atomic_write_bytes(out / "images.parquet", image_table_parquet(run, table))
    return out

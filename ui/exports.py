"""Download payloads of the Export page (built when the user clicks, from the run as it is then)."""

from __future__ import annotations

import io
import json
import tempfile
import zipfile
from pathlib import Path

from clustermine.workflows import export
from clustermine.store import Run
from clustermine.workflows.whatif import run_detector



def bundle_zip(run: Run) -> bytes:
    """A zip of ``detector/`` as written by ``run_detector(run).save`` (load with ``Detector.load``)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = run_detector(run).save(Path(tmp) / "detector")
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for f in sorted(folder.iterdir()):  # float16 embeddings barely compress: store them
                zf.write(f, f"detector/{f.name}",
                         compress_type=zipfile.ZIP_STORED if f.suffix == ".npy" else zipfile.ZIP_DEFLATED)
    return buf.getvalue()


def summary_json(run: Run) -> str:
    return json.dumps(export.run_summary(run), indent=2, ensure_ascii=False, default=str)


def deferred(fn, path: str):
    """A zero-argument callable for ``st.download_button(data=...)``: the payload is built only when
    the user clicks (on Streamlit's download thread), from the run as it is at that moment."""
    from clustermine.store import Run

    return lambda: fn(Run.open(path))


def overview(run: Run) -> dict:
    """What the page shows without computing anything: config, encoder, summary, versions."""
    return {"run_id": run.run_id, "status": run.status, "created": run.meta.get("created"),
            "config": run.config, "encoder": run.meta.get("encoder"), "summary": run.meta.get("summary"),
            "versions": run.meta.get("versions")}

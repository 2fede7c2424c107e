"""The images kept in a run to be scored (its ``scoring/`` folder): what the Scoring page shows and
``clustermine score RUN`` (no paths) scores; ``clustermine score RUN FILES --keep`` adds to it.

Layout (``clustermine.store.layout``): ``scoring/uploads/`` holds uploaded or kept files under
sanitised names, ``scoring/names.json`` maps each stored name to the user's own file name (display
text only), ``scoring/folders.json`` lists server folders scored in place. The API: :func:`add_uploads`,
:func:`add_files`, :func:`add_folder`, :func:`folders`, :func:`display_names`, :func:`sources`,
:func:`remove_upload`, :func:`clear`; :func:`score_kept` scores everything kept, and
:func:`results_csv` writes such a table with the formula guard on every text cell.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
from pathlib import Path
from typing import Iterable, Sequence

from clustermine.core.errors import NoImagesError
from clustermine.core.storage import atomic_write_json
from clustermine.core.units import csv_safe
from clustermine.store import layout
from clustermine.workflows.uploads import SavedFile, UploadReport, resolve_in_roots, save_uploads
from clustermine.workflows.whatif import encode_folder, score_features

SCORE_LIMIT = 2000  # images encoded per kept source (a stratified sample beyond: whatif.encode_folder)
UPLOAD_SOURCE = "upload"  # the ``source`` of rows scored from the kept uploads


def _dir(run) -> Path:
    """The run folder of ``run`` (a Run, whose ``.path`` is used, or a run folder path)."""
    return Path(getattr(run, "path", run))


def uploads_dir(run) -> Path:
    """``<run>/scoring/uploads``: the kept test images (may not exist yet)."""
    return layout.scoring_uploads_dir(_dir(run))


def _folders_file(run) -> Path:
    return layout.scoring_dir(_dir(run)) / layout.SCORING_FOLDERS


def _names_file(run) -> Path:
    return layout.scoring_dir(_dir(run)) / layout.SCORING_NAMES


def _read_json(path: Path, kind: type):
    try:
        return kind(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return kind()


def folders(run) -> list[str]:
    """The server folders kept for scoring (absolute paths, in the order they were added)."""
    return _read_json(_folders_file(run), list)


def display_names(run) -> dict[str, str]:
    """stored (sanitised) file name -> the name the user's file had (display text only)."""
    return _read_json(_names_file(run), dict)


def _remember_names(run, report: UploadReport) -> None:
    names = display_names(run)
    names.update({f.stored_name: f.display_name for f in report.saved})
    atomic_write_json(_names_file(run), names)


def add_uploads(run, files: Iterable) -> UploadReport:
    """Save uploaded file objects (``.name`` + ``.read``) into the run's scoring uploads under
    sanitised names (``clustermine.workflows.uploads.save_uploads``: limits, empty files refused) and
    remember the user's names. Returns the report (saved, and skipped with the reason)."""
    report = save_uploads(files, uploads_dir(run))
    _remember_names(run, report)
    return report


class _LocalFile:
    """A file on this machine as an upload object (``name``, ``size``, ``read``, ``seek``)."""

    def __init__(self, path: Path) -> None:
        self.name, self.size, self._fh = path.name, path.stat().st_size, open(path, "rb")

    def read(self, n: int = -1) -> bytes:
        return self._fh.read(n)

    def seek(self, pos: int) -> int:
        return self._fh.seek(pos)

    def close(self) -> None:
        self._fh.close()


def add_files(run, paths: Sequence[str | os.PathLike]) -> UploadReport:
    """Copy image files of this machine into the run's scoring uploads (the CLI's ``--keep``), the
    same way as :func:`add_uploads`. A missing path is reported as skipped, with the reason."""
    report = UploadReport(str(uploads_dir(run)))
    opened, missing = [], []
    try:
        for p in map(Path, paths):
            if p.is_file():
                opened.append(_LocalFile(p))
            else:
                missing.append(str(p))
        if opened:
            report = add_uploads(run, opened)
    finally:
        for f in opened:
            f.close()
    report.skipped += [SavedFile(m, None, None, 0, "skipped", "file not found") for m in missing]
    return report


def add_folder(run, folder: str | os.PathLike, roots: Iterable[str | os.PathLike] | None = None) -> str:
    """Keep a server folder for scoring in place; ``roots``: confine it to these data roots (the web
    app; SafetyError outside them). Returns the absolute folder as kept (kept once)."""
    if roots is not None:
        path = resolve_in_roots(str(folder), roots)
    else:
        path = Path(folder).expanduser()
        if not path.is_dir():
            raise NoImagesError(f"{path}: folder not found")
        path = path.resolve()
    known = folders(run)
    if str(path) not in known:
        atomic_write_json(_folders_file(run), known + [str(path)])
    return str(path)


def sources(run) -> list[str]:
    """What :func:`score_kept` scores: the uploads folder (when it exists), then the kept folders."""
    up = uploads_dir(run)
    return ([str(up)] if up.is_dir() else []) + folders(run)


def is_kept_upload(run, path: str | os.PathLike) -> bool:
    """Whether ``path`` is a file directly inside the run's scoring uploads."""
    up = uploads_dir(run)
    p = Path(path)
    try:
        return p.resolve().parent == up.resolve() and p.is_file()
    except OSError:
        return False


def remove_upload(run, stored_name: str) -> bool:
    """Delete one kept upload (only a direct child of the scoring uploads folder) and its display
    name; the other images stay. Returns whether a file was removed."""
    p = uploads_dir(run) / str(stored_name)
    if not is_kept_upload(run, p):
        return False
    p.unlink()
    names = display_names(run)
    if names.pop(p.name, None) is not None or _names_file(run).is_file():
        try:
            atomic_write_json(_names_file(run), names)
        except OSError:
            pass
    return True


def remove_folder(run, folder: str) -> bool:
    """Forget one kept server folder (its images are not touched). Returns whether it was kept."""
    known = folders(run)
    if folder not in known:
        return False
    atomic_write_json(_folders_file(run), [f for f in known if f != folder])
    return True


def clear(run) -> None:
    """Forget every kept upload and folder (deletes ``scoring/``)."""
    shutil.rmtree(layout.scoring_dir(_dir(run)), ignore_errors=True)


def bad_uploads(run, skipped: Iterable[tuple[str, str]], scored_paths: Iterable[str] = ()) -> list[tuple[str, str]]:
    """(stored name, reason) of kept uploads that were saved but could not be scored: the files of
    ``skipped`` [(path or name, reason)] that are kept uploads and not among ``scored_paths``."""
    up = uploads_dir(run)
    good = set(map(str, scored_paths))
    out = []
    for name, reason in skipped:
        p = up / str(name)
        if is_kept_upload(run, p) and str(p) not in good and str(p.resolve()) not in good:
            out.append((p.name, reason))
    return out


def score_kept(run, tpr: float, encoder, *, top: int = 3, detector=None, held=None, progress=None,
               limit: int = SCORE_LIMIT) -> tuple[list[dict], float | None, str, list[tuple[str, str]]]:
    """Score every kept image with the run's current concepts (``whatif.score_features``: the
    threshold calibrated for ``tpr``).

    ``encoder``: the run's encoder; ``detector`` / ``held``: passed on to ``score_features`` when at
    hand (the web app's caches). Returns ``(rows, threshold, rule, skipped [(path, reason)])``; one
    row per image: ``file`` (the user's name for uploads, the path inside the folder otherwise),
    ``source`` (``upload`` or the folder), ``path`` (absolute), ``is_id``, ``log_score``, ``score``,
    ``top_positive`` / ``top_negative`` [(concept, cosine)].
    """
    rows, skipped = [], []
    shown = display_names(run)
    up = str(uploads_dir(run))
    thr, rule = None, ""
    for src in sources(run):
        try:
            recs, feats, skip = encode_folder(src, encoder, limit=limit, progress=progress)
        except NoImagesError as exc:
            skipped.append((src, str(exc)))
            continue
        skipped += skip
        out, thr, rule = score_features(run, feats, tpr, top, detector=detector, held=held)
        for r, e in zip(recs, out):
            name = Path(r.path).name
            rows.append({"file": shown.get(name, name) if src == up else r.path,
                         "source": UPLOAD_SOURCE if src == up else src, "path": r.abs_path,
                         "is_id": e["is_id"], "log_score": e["log_score"], "score": e["score"],
                         "top_positive": e["top_positive"], "top_negative": e["top_negative"]})
    return rows, thr, rule, skipped


def _cell(value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return csv_safe(value) if isinstance(value, str) else value


def results_csv(rows: Sequence[dict], threshold: float | None, rule: str,
                columns: Sequence[str] | None = None) -> str:
    """A scoring table as CSV text, one line per row plus ``threshold`` and ``threshold_rule``
    columns; text cells go through ``csv_safe`` (a file named ``=cmd.jpg`` stays text in a
    spreadsheet), missing values are empty cells, floats keep full precision."""
    cols = list(columns or (rows[0].keys() if rows else [])) + ["threshold", "threshold_rule"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in rows:
        full = {**r, "threshold": threshold, "threshold_rule": rule}
        w.writerow([_cell(full.get(c)) for c in cols])
    return buf.getvalue()


__all__ = ["add_files", "add_folder", "add_uploads", "bad_uploads", "clear", "display_names", "folders",
           "is_kept_upload", "remove_folder", "remove_upload", "results_csv", "score_kept", "sources",
           "uploads_dir"]

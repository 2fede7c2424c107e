"""Create a run from the user's images (uploaded files, a zip, or a server folder), ready for a worker.

The Data page's Launch button and ``clustermine mine --zip FILE`` both come here, so a run made from
an upload is the same run whichever door it came through: inputs are staged in a hidden folder next
to the run first (a refused upload — zip bomb, nothing usable, nothing decodable — leaves no
half-made run behind), then the run is created with the config that
:func:`clustermine.workflows.pipeline.mine` will find on resume (``images_dir`` resolved the way
it resolves it), the staged files move in, and ``uploads.json`` records the user's own file names.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from clustermine.core.config import MineConfig
from clustermine.core.errors import NoImagesError, RunError, SafetyError
from clustermine.core.identity import Actor
from clustermine.core.roles import require
from clustermine.method.images import require_decodable
from clustermine.store import layout
from clustermine.store.run import Run
from clustermine.workflows.uploads import (
    UploadReport,
    extract_zip,
    new_run_id,
    nothing_usable,
    resolve_in_roots,
    save_upload,
    save_uploads,
    write_upload_manifest,
)

SOURCE_KINDS = ("files", "zip", "folder")
ZIP_MAX_BYTES = 1 << 40  # the archive itself; extract_zip's limits guard what it unpacks to
CORPUS_MAX_BYTES = 64 << 20


@dataclass
class RunSource:
    """Where a new run's ID images come from.

    ``kind``: ``files`` (``files``: objects with ``.name`` and ``.read``, e.g. Streamlit's
    ``UploadedFile``), ``zip`` (``zip_file``: a path or a binary file object with ``.name``) or
    ``folder`` (``folder``: a path, confined to ``roots`` when roots are given; read in place).
    """

    kind: str
    files: list = field(default_factory=list)
    zip_file: str | os.PathLike | BinaryIO | None = None
    folder: str | os.PathLike = ""
    roots: list | None = None

    def display_name(self) -> str:
        """The user's name for an uploaded source, for messages ('your upload', the zip's name)."""
        if self.kind == "zip":
            if isinstance(self.zip_file, (str, os.PathLike)):
                return Path(self.zip_file).name
            return str(getattr(self.zip_file, "name", "") or "the zip")
        return "your upload"


def unique_run_dir(root: str | os.PathLike, name: str = "") -> Path:
    """A run folder under ``root`` that does not exist yet: the sanitised ``name`` (default
    ``run-YYYYmmdd-HHMMSS``), with ``-2``, ``-3`` … appended while taken."""
    root = Path(root)
    base = new_run_id(name or f"run-{_dt.datetime.now():%Y%m%d-%H%M%S}")
    candidate, i = root / base, 2
    while candidate.exists():
        candidate, i = root / f"{base}-{i}", i + 1
    return candidate


def stage_upload(source: RunSource, staging: str | os.PathLike) -> tuple[UploadReport | None, Path | None]:
    """Put the source's images where the run will read them, inside ``staging``.

    Returns ``(upload report, None)`` for files and zips (saved / unpacked into ``staging/uploads``)
    or ``(None, resolved folder)`` for a folder read in place. Raises SafetyError on a refusal
    (limits, path escapes, a folder outside ``roots``), naming the file and the problem.
    """
    staging = Path(staging)
    if source.kind not in SOURCE_KINDS:
        raise SafetyError(f"unknown image source {source.kind!r}; use one of {', '.join(SOURCE_KINDS)}")
    if source.kind == "files":
        return save_uploads(source.files, layout.uploads_dir(staging)), None
    if source.kind == "zip":
        return _stage_zip(source, staging), None
    if source.roots is not None:
        return None, resolve_in_roots(str(source.folder), source.roots)
    folder = Path(source.folder).expanduser()
    if not folder.is_dir():
        raise NoImagesError(f"{folder}: folder not found")
    return None, folder.resolve()


def _stage_zip(source: RunSource, staging: Path) -> UploadReport:
    name = source.display_name()
    if source.zip_file is None:
        raise SafetyError("no zip file was given")
    if isinstance(source.zip_file, (str, os.PathLike)):  # a file on this machine (the CLI): unpacked from where it is
        path = Path(source.zip_file).expanduser()
        if not path.is_file():
            raise SafetyError(f"{path}: zip file not found")
        try:
            return extract_zip(path, layout.uploads_dir(staging))
        except SafetyError as exc:
            raise SafetyError(f"{name}: {exc}") from None
    zpath = staging / layout.UPLOAD_ZIP
    saved = save_upload(source.zip_file, staging, name, max_bytes=ZIP_MAX_BYTES, stored_name=layout.UPLOAD_ZIP)
    if saved.status != "saved":
        raise SafetyError(f"the zip could not be saved: {saved.reason}")
    try:
        return extract_zip(zpath, layout.uploads_dir(staging))
    finally:
        zpath.unlink(missing_ok=True)


def _require_readable(images_dir: Path, uploaded: bool) -> None:
    """Refuse a run whose images cannot be read (NoImagesError naming files and reasons); for an
    upload the hidden staging path is replaced by 'your upload'."""
    try:
        require_decodable(images_dir)
    except NoImagesError as exc:
        if not uploaded:
            raise
        raise NoImagesError(str(exc).replace(str(images_dir), "your upload")) from None


def create_run_from_uploads(run_dir: str | os.PathLike, config: MineConfig, source: RunSource, *,
                            corpus_file: BinaryIO | None = None, overwrite: bool = False,
                            actor: Actor | None = None) -> Run:
    """Create the run in ``run_dir`` (which must not hold anything yet, unless ``overwrite``: the
    old run is moved aside by ``Run.create``) from ``source``, ready for
    :func:`clustermine.workflows.jobs.start_mine_job` or :func:`clustermine.workflows.pipeline.resume`.

    ``config``: the run's settings (validated and resolved here). ``corpus_file``: the user's own
    concept list (one per line), stored in the run as ``user_corpus.txt`` and used as its corpus.
    Raises SafetyError / NoImagesError with the file and the problem; then nothing is left behind.
    ``actor``: who launches; PermissionDenied before anything is written when its role may not.
    """
    require(actor, "launch")
    run_dir = Path(run_dir)
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())) and not overwrite:
        raise RunError(f"{run_dir}: already exists; choose a new run folder, continue an unfinished run with "
                       "`clustermine resume`, or replace it (--force)")
    root = run_dir.parent
    root.mkdir(parents=True, exist_ok=True)
    final = root.resolve() / run_dir.name  # resolved exactly as the worker's pipeline.mine resolves it
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
    try:
        report, folder = stage_upload(source, staging)
        problem = nothing_usable(report, source.display_name()) if report is not None else None
        if problem:
            raise SafetyError(problem)
        _require_readable(folder if folder is not None else layout.uploads_dir(staging), folder is None)
        corpus = config.corpus
        if corpus_file is not None:
            saved = save_upload(corpus_file, staging, str(getattr(corpus_file, "name", "") or "concepts.txt"),
                                stored_name=layout.USER_CORPUS, max_bytes=CORPUS_MAX_BYTES)
            if saved.status != "saved":
                raise SafetyError(f"the concept list could not be saved: {saved.reason}")
            corpus = str(final / layout.USER_CORPUS)
        images_dir = folder.resolve() if folder is not None else layout.uploads_dir(final)
        cfg = dataclasses.replace(config, corpus=corpus).validate().resolved().to_dict()
        cfg["images_dir"] = str(images_dir)
        run = Run.create(run_dir, cfg, overwrite=overwrite)
        for item in staging.iterdir():
            item.rename(run_dir / item.name)
        if report is not None:  # paths relative to uploads/ (they were staged elsewhere)
            write_upload_manifest(run_dir, report)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return run


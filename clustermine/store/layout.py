"""Every file and folder name of a run directory, defined once (format 1).

Nothing else in ClusterMine spells a run-directory name; code builds paths from these constants
and functions (``tests/test_rundir.py`` greps the code base to keep it that way). Standard library
only: the app's first page imports this without the numeric stack.

::

    run.json              format, id, status, config, package versions, encoder fingerprint, summary
    images.parquet        one row per scanned file (columns path, abs_path, size_bytes, sha1, status,
                          reason, duplicate_of, row, split); runs made before it hold images.jsonl
                          (one JSON line per file, same fields), which is still read
    features.npy          float16 [N_ok, D]   image features, rows = images with status "ok", L2-normalised;
                          read memory-mapped, written block by block (never whole in RAM). While a
                          folder encodes, the shards are the feature cache's chunk files (every
                          ~256 images, atomic, keyed by file content): a killed job resumes after
                          the last shard, and features.npy is assembled from them at the end
    clusters.npy          int32 [N_ok]        cluster id per image (-1 = held out of mining)
    votes.npz             top_idx int32 [N_ok, k], top_sim float16 [N_ok, k]  zero-shot top-k
    clusters.json         per-cluster audit statistics (size, histogram, winner, purity, entropy)
    corpus.txt            the vocabulary V, one concept per line (row i = text embedding i)
    text_embeddings.npy   float16 [M, D]
    mined.json            the mined Y_pos with provenance (never edited)
    edits.jsonl           append-only log of concept edits (accept / reject / restore / add), hash-chained
                          (``store/chain.py``: who, auth mode, when, SHA-256 of the previous entry)
    exclusions.jsonl      append-only log of image exclusions ("not ID": exclude / restore, who, when), hash-chained
    edits.head.json,      each log's head record: entry count and the last entry's SHA-256 (so removing
    exclusions.head.json  or changing the last entries shows)
    head_labels.npy       int32 [H, N_ok]     cluster id of every image under each TEMI head (-1 = not clustered)
    seed_labels.npy       int32 [S, N_ok]     cluster ids of S seeds (``clustermine stability``), -1 = not clustered
    previous/             the mining before the last re-mine (clusters.npy, clusters.json, mined.json, concepts.json)
    concepts.json         current concept table (derived from mined.json + edits.jsonl)
    added/<id>.npy        text embedding of each user-added concept that is not in V
    progress.json         stage, done, total, eta while a job runs
    cancel.requested      present while a cancel is asked for
    .<name>.lock          file locks (run.json updates, concept edits, exclusions)
    job.json, job.log     the app's worker: pid / start token, and its output
    uploads/              images uploaded from the app (the run's images_dir)
    uploads.json          upload report: saved files with the user's names, refused files
    user_corpus.txt       a concept list uploaded from the app
    projections/          cached 2-D maps, and corpus_lse.npy / corpus_lse.json (corpus LSE cache),
                          calibration.npz / calibration.json (cross-fitted calibration scores),
                          ood_eval.json (the latest OOD-sample evaluation and the inputs it used),
                          map-<method>-s<seed>-<key>.npz / .json (a large run's map of every image:
                          coords float32 [N, 2] and the fitted sample's rows; and its stamp)
    scoring/              the Scoring page's images: uploads/, names.json, folders.json
    ood_sample/           OOD images uploaded in the what-if panel
    detector/             default folder of ``Run.export_detector``
    evaluations/          ID-vs-OOD-sets evaluations (``clustermine.workflows.evaluation_store``):
                          <UTC stamp>.json (result rows, when, the detector it measured) and
                          <UTC stamp>.npz (the label-free log scores of the ID and each OOD set);
                          latest.json names the latest one

Beside run folders: ``.deleting-<run>-<stamp>/``, a run being deleted (renamed first, then removed;
never listed as a run).
"""

from __future__ import annotations

import os
from pathlib import Path

RUN_FORMAT = 1

RUN_META = "run.json"
IMAGES = "images.parquet"
IMAGES_LEGACY = "images.jsonl"  # the per-image table of runs made before images.parquet
FEATURES = "features.npy"
CLUSTER_IDS = "clusters.npy"
VOTES = "votes.npz"
CLUSTER_STATS = "clusters.json"
CORPUS = "corpus.txt"
TEXT_EMBEDDINGS = "text_embeddings.npy"
MINED = "mined.json"
EDITS = "edits.jsonl"
CONCEPTS = "concepts.json"
EXCLUSIONS = "exclusions.jsonl"
EDITS_HEAD = "edits.head.json"  # store.chain.head_path(EDITS)
EXCLUSIONS_HEAD = "exclusions.head.json"  # store.chain.head_path(EXCLUSIONS)
HEAD_LABELS = "head_labels.npy"
SEED_LABELS = "seed_labels.npy"
PREVIOUS_DIR = "previous"
ADDED_DIR = "added"
PROGRESS = "progress.json"
CANCEL_FLAG = "cancel.requested"
JOB_FILE = "job.json"
LOG_FILE = "job.log"
UPLOADS_DIR = "uploads"
UPLOADS_MANIFEST = "uploads.json"
UPLOAD_ZIP = "upload.zip"  # staged, then unpacked into uploads/ and deleted
USER_CORPUS = "user_corpus.txt"
PROJECTIONS_DIR = "projections"
CORPUS_LSE = "corpus_lse.npy"  # in projections/
CORPUS_LSE_STAMP = "corpus_lse.json"  # in projections/: the inputs the cached LSE was computed from
CALIBRATION = "calibration.npz"  # in projections/: cross-fitted calibration scores (clustermine.method.calibration)
CALIBRATION_STAMP = "calibration.json"  # in projections/: the inputs they were computed from
OOD_EVAL = "ood_eval.json"  # in projections/: the latest OOD-sample evaluation (clustermine.workflows.ood_eval)
FULL_MAP_PREFIX = "map"  # in projections/: map-<method>-s<seed>-<key>.npz (clustermine.workflows.projection.full_map)
SCORING_DIR = "scoring"
SCORING_FOLDERS = "folders.json"  # in scoring/
SCORING_NAMES = "names.json"  # in scoring/
OOD_SAMPLE_DIR = "ood_sample"
DETECTOR_DIR = "detector"
EVALUATIONS_DIR = "evaluations"
EVALUATION_LATEST = "latest.json"  # in evaluations/: {"name": <stem of the latest evaluation>}

DELETING_PREFIX = ".deleting-"  # a run folder renamed to this prefix is being deleted

META_LOCK = "meta"
EDITS_LOCK = "edits"
EXCLUSIONS_LOCK = "exclusions"

# The files a finished run must hold (non-empty); ``run.json`` first.
REQUIRED_FILES = (RUN_META, IMAGES, FEATURES, CLUSTER_IDS, VOTES, CLUSTER_STATS, CORPUS, TEXT_EMBEDDINGS, MINED)

PathLike = str | os.PathLike


def images_table_path(run_dir: PathLike) -> Path:
    """The run's per-image table: ``images.parquet``, or an older run's ``images.jsonl``."""
    run_dir = Path(run_dir)
    new = run_dir / IMAGES
    legacy = run_dir / IMAGES_LEGACY
    return legacy if not new.exists() and legacy.exists() else new


def meta_path(run_dir: PathLike) -> Path:
    return Path(run_dir) / RUN_META


def lock_path(run_dir: PathLike, name: str) -> Path:
    """The lock file of ``name`` (:data:`META_LOCK` or :data:`EDITS_LOCK`)."""
    return Path(run_dir) / f".{name}.lock"


def replaced_name(run_dir: PathLike, stamp: str) -> Path:
    """Where ``create(..., overwrite=True)`` moves an old run aside (never deleted)."""
    run_dir = Path(run_dir)
    return run_dir.with_name(f"{run_dir.name}.replaced-{stamp}")


def deleting_name(run_dir: PathLike, stamp: str) -> Path:
    """Where :func:`clustermine.workflows.run_admin.delete_run` renames a run before removing it."""
    run_dir = Path(run_dir)
    return run_dir.with_name(f"{DELETING_PREFIX}{run_dir.name}-{stamp}")


def added_embedding(run_dir: PathLike, concept_id: str) -> Path:
    """Text embedding (float16 [D]) of a user-added concept outside the corpus."""
    return Path(run_dir) / ADDED_DIR / f"{concept_id}.npy"


def previous_dir(run_dir: PathLike) -> Path:
    """The mining before the last re-mine (same file names as the run's own)."""
    return Path(run_dir) / PREVIOUS_DIR


def projections_dir(run_dir: PathLike) -> Path:
    return Path(run_dir) / PROJECTIONS_DIR


def corpus_lse_files(run_dir: PathLike) -> tuple[Path, Path]:
    """(cached corpus LSE float64 [N_ok], JSON stamp of its inputs)."""
    folder = projections_dir(run_dir)
    return folder / CORPUS_LSE, folder / CORPUS_LSE_STAMP


def calibration_files(run_dir: PathLike) -> tuple[Path, Path]:
    """(cached calibration scores .npz, JSON stamp of their inputs)."""
    folder = projections_dir(run_dir)
    return folder / CALIBRATION, folder / CALIBRATION_STAMP


def ood_eval_file(run_dir: PathLike) -> Path:
    """The latest OOD-sample evaluation of the run (what-if panel, ``clustermine report --ood``)."""
    return projections_dir(run_dir) / OOD_EVAL


def full_map_files(run_dir: PathLike, method: str, seed: int, key: str) -> tuple[Path, Path]:
    """(all-row 2-D map of a large run .npz: coords float32 [N, 2], fit_rows int64 [S]; its JSON stamp)."""
    stem = f"{FULL_MAP_PREFIX}-{method}-s{seed}-{key}"
    folder = projections_dir(run_dir)
    return folder / f"{stem}.npz", folder / f"{stem}.json"


def uploads_dir(run_dir: PathLike) -> Path:
    return Path(run_dir) / UPLOADS_DIR


def uploads_manifest(run_dir: PathLike) -> Path:
    return Path(run_dir) / UPLOADS_MANIFEST


def scoring_dir(run_dir: PathLike) -> Path:
    return Path(run_dir) / SCORING_DIR


def scoring_uploads_dir(run_dir: PathLike) -> Path:
    return scoring_dir(run_dir) / UPLOADS_DIR


def ood_sample_dir(run_dir: PathLike) -> Path:
    return Path(run_dir) / OOD_SAMPLE_DIR


def detector_dir(run_dir: PathLike) -> Path:
    return Path(run_dir) / DETECTOR_DIR


def evaluations_dir(run_dir: PathLike) -> Path:
    return Path(run_dir) / EVALUATIONS_DIR


def evaluation_files(run_dir: PathLike, stem: str) -> tuple[Path, Path]:
    """(record .json, scores .npz) of the evaluation ``stem`` (its UTC stamp)."""
    folder = evaluations_dir(run_dir)
    return folder / f"{stem}.json", folder / f"{stem}.npz"


def evaluation_latest(run_dir: PathLike) -> Path:
    """The pointer to the run's latest evaluation."""
    return evaluations_dir(run_dir) / EVALUATION_LATEST


def file_stamp(path: PathLike) -> tuple[int, int, int]:
    """(mtime_ns, size, inode) of ``path``, (0, 0, 0) if absent. Every run file is written by an
    atomic rename, so a rewrite gets a new inode even within one clock tick."""
    try:
        st = os.stat(path)
    except OSError:
        return 0, 0, 0
    return st.st_mtime_ns, st.st_size, st.st_ino

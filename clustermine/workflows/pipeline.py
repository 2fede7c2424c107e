"""The ClusterMine stages in order: images → features → clusters → votes → concepts → scores.

``mine`` fills a run directory (resumable: finished feature chunks are cached by file content and
encoder fingerprint); ``score_images`` and ``evaluate`` use a run's current concepts.
Progress: ``progress(stage, done, total)`` callbacks, and ``progress.json`` in the run directory.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from clustermine.core.config import MineConfig
from clustermine.core.errors import CancelledError, ClusterMineError, NoImagesError, RunError
from clustermine.core.identity import Actor
from clustermine.core.roles import require
from clustermine.store import layout
from clustermine.core.storage import cache_root

from clustermine.workflows.encoding import (  # noqa: F401  (STAGES, load_folder: part of this module's API)
    STAGES, CancelFn, FeatureCache, ProgressFn, ProgressTracker, encode_records, load_folder)
from clustermine.workflows.whatif import run_detector
from clustermine.workflows.evaluation import evaluate_single
from clustermine.method.corpus import corpus_embeddings, embedding_cache_key, load_corpus
from clustermine.method.cost import check_clusterer_feasible
from clustermine.method.feature_input import iter_normalized_chunks, load_feature_source, validate_features
from clustermine.method.mining import cluster_statistics, mine_positive_concepts, summary, zero_shot_topk
from clustermine.store import Run, comparable_config, list_runs
from clustermine.store.store import IMAGE_COLUMNS
from clustermine.workflows.distributed import RayCluster
from clustermine.workflows.estimate import corpus_cache_state, estimate_now
from clustermine.workflows.whatif import store_corpus_lse
from clustermine.workflows.vote_memo import VoteMemo
from clustermine.method.images import scan_images
from clustermine.method.encoders import load_encoder
from clustermine.method.schedule import clamp_n_clusters, default_n_clusters

__all__ = ["MineConfig", "mine", "mine_features", "resume", "score_images", "evaluate", "load_folder", "STAGES"]


# ----------------------------------------------------------------------------- mine
def holdout_rows(n: int, fraction: float, seed: int) -> np.ndarray:
    """Rows (sorted) held out of mining: ⌊fraction·n⌋ of them, none when n < 20."""
    if n < 20 or fraction <= 0:
        return np.zeros(0, dtype=np.int64)
    n_hold = int(np.floor(fraction * n))
    return np.sort(np.random.default_rng(seed).permutation(n)[:n_hold])


def mine(images_dir: str | Path, run_dir: str | Path, config: MineConfig | None = None, *,
         progress: ProgressFn | None = None, cancel: CancelFn | None = None, overwrite: bool = False,
         cache_dir: str | Path | None = None, encoder=None, encode_chunk_size: int = 256,
         ray_address: str | None = None, actor: Actor | None = None):
    """Run the whole mining pipeline on a folder of ID images and return the finished :class:`Run`.

    ``config`` is resolved first (``tau=None`` -> the encoder's default) and stored in ``run.json``.
    Resumes an unfinished run in ``run_dir`` with the same config. Raises ClusterMineError subclasses
    for user errors; on failure or cancel the run's status says so and finished work is kept.
    ``encode_chunk_size``: images per feature-cache chunk (a killed job loses at most one chunk);
    it does not change any result, so it is not part of the run's config.
    ``ray_address``: encode and vote on that Ray cluster (:mod:`clustermine.workflows.distributed`; the folder
    must be visible under the same path on its nodes); None = in this process, Ray never imported.
    ``actor``: who launches; PermissionDenied before anything is written when its role may not.
    """
    require(actor, "launch")
    config = (config or MineConfig()).validate().resolved()
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise NoImagesError(f"{images_dir}: folder not found")
    cfg = config.to_dict()
    cfg["images_dir"] = str(images_dir.resolve())
    with _cluster(ray_address) as cluster:  # before the run folder: an unreachable cluster leaves nothing
        run = _start_run(run_dir, cfg, overwrite)
        tracker = ProgressTracker(run, progress, cancel)
        _run_guarded(run, tracker, lambda: _mine_stages(run, images_dir, config, tracker, cache_dir, encoder,
                                                        encode_chunk_size, cluster))
    return run


@contextmanager
def _cluster(ray_address: str | None):
    """The connected :class:`~clustermine.workflows.distributed.RayCluster` named by ``ray_address`` for the
    ``with`` block (disconnected after it), or None for local work (Ray is then never imported)."""
    if not ray_address:
        yield None
        return

    with RayCluster(ray_address) as cluster:
        yield cluster


def _store_cluster(run, cluster) -> None:
    """Say in ``run.json`` where the job ran (nodes, CPUs, GPUs); results do not depend on it."""
    if cluster is not None and cluster.info is not None:
        run.update_meta(executed_on={"ray": cluster.info.to_dict()})


def mine_features(features: str | Path, paths: str | Path | None, run_dir: str | Path,
                  config: MineConfig | None = None, *, image_root: str | Path | None = None,
                  progress: ProgressFn | None = None, cancel: CancelFn | None = None, overwrite: bool = False,
                  cache_dir: str | Path | None = None, encoder=None, ray_address: str | None = None,
                  actor: Actor | None = None, vote_memo: VoteMemo | None = None):
    """Mine from precomputed image embeddings (bring your own; :mod:`clustermine.method.feature_input`
    reads a ``.npy`` [N, D] or a clip-retrieval folder) instead of encoding a folder.

    ``config.encoder`` names the text tower matching the image tower that made the features; the
    features are checked against it (dimension, finite, sane norms) before anything is written,
    then L2-normalised into the run's ``features.npy`` block by block (memory independent of N).
    Relative image paths are resolved against ``image_root`` (default: the paths file's folder,
    or the features folder for clip-retrieval metadata); they are only opened to show thumbnails.
    Stages: ``scan`` (check), ``encode`` (import), then corpus / cluster / vote as :func:`mine`.
    ``actor``: who launches; PermissionDenied before anything is written when its role may not.
    ``vote_memo``: reuse (and keep) the zero-shot vote of these features across runs (a sweep's cells).
    """
    require(actor, "launch")

    config = (config or MineConfig()).validate().resolved()
    # Every check before the run folder is made: a bad file leaves nothing behind.
    source = load_feature_source(features, paths)  # FeatureInputError on a missing / unreadable file
    corpus = load_corpus(config.corpus)
    encoder = encoder or load_encoder(config.encoder, device=config.device)
    on_check = (lambda done, total: progress("scan", done, total)) if progress else None
    stats = validate_features(source, encoder.dim, encoder_name=config.encoder, progress=on_check)
    cfg = config.to_dict()
    cfg["features_file"] = str(Path(features).resolve())
    cfg["paths_file"] = str(Path(paths).resolve()) if paths else None
    root = image_root or (Path(paths).parent if paths else Path(features))
    cfg["image_root"] = str(Path(root).resolve())
    with _cluster(ray_address) as cluster:  # the vote runs there (``ray_address``)
        run = _start_run(run_dir, cfg, overwrite)
        tracker = ProgressTracker(run, progress, cancel)
        _run_guarded(run, tracker, lambda: _import_stages(run, source, stats, config, tracker, cache_dir, encoder,
                                                          corpus, Path(cfg["image_root"]), cluster, vote_memo))
    return run


def _import_stages(run, source, stats, config: MineConfig, tracker: ProgressTracker, cache_dir, encoder, corpus,
                   image_root: Path, cluster=None, vote_memo: VoteMemo | None = None) -> None:
    import pyarrow as pa
    import pyarrow.compute as pc


    _store_encoder(run, encoder)
    _store_cluster(run, cluster)
    tracker.start("encode", source.n)
    with run.feature_writer(source.n, source.d) as out:
        for start, block in iter_normalized_chunks(source):
            out[start:start + len(block)] = block
            tracker.update(start + len(block), source.n)
    hold = holdout_rows(source.n, config.holdout_fraction, config.seed)
    is_hold = np.zeros(source.n, dtype=bool)
    is_hold[hold] = True
    given = pc.cast(source.paths, pa.string())
    absolute = pc.starts_with(given, "/")
    prefix = str(image_root).rstrip("/") + "/"
    abs_path = pc.if_else(absolute, given, pc.binary_join_element_wise(prefix, given, ""))
    n = source.n
    columns = {"path": given, "abs_path": abs_path, "size_bytes": pa.nulls(n, pa.int64()),
               "sha1": pa.nulls(n, pa.string()), "status": pa.array(np.full(n, "ok", dtype=object), pa.string()),
               "reason": pa.nulls(n, pa.string()), "duplicate_of": pa.nulls(n, pa.string()),
               "row": pa.array(np.arange(n, dtype=np.int64)),
               "split": pa.array(np.where(is_hold, "holdout", "mine").astype(object), pa.string())}
    run.write_images(pa.table({name: columns[name] for name, _ in IMAGE_COLUMNS}))
    run.mark_stage("encode")
    _analyse(run, config, tracker, cache_dir, encoder, corpus, is_hold,
             {"n_files": n, "n_skipped": 0, "n_duplicates": int(stats.duplicate_paths),
              "features_import": {"n": n, "d": source.d, "dtype": str(source.dtype), "layout": source.layout,
                                  "norm_median": float(stats.norm_median), "normalised": bool(stats.normalised),
                                  "warnings": list(stats.warnings)}}, cluster, vote_memo)


def _start_run(run_dir: str | Path, cfg: dict, overwrite: bool):
    """Create (or resume) the run in ``run_dir`` with config ``cfg`` and mark it running."""

    run = Run.create(run_dir, cfg, overwrite=overwrite)
    run.clear_cancel()
    run.set_status("running")
    return run


def _run_guarded(run, tracker: ProgressTracker, stages: Callable[[], None]) -> None:
    """Run ``stages``; on cancel or error the run's status and progress say so (work kept), and the
    exception propagates."""
    try:
        stages()
    except CancelledError as exc:
        run.set_status("cancelled", str(exc))
        _final_progress(run, tracker, "cancelled")
        raise
    except ClusterMineError as exc:
        run.set_status("failed", str(exc))
        _final_progress(run, tracker, "failed")
        raise
    except BaseException as exc:
        run.set_status("failed", f"internal error: {type(exc).__name__}: {exc}")
        _final_progress(run, tracker, "failed")
        raise
    _final_progress(run, tracker, "done")


def run_mine_config(run) -> tuple[MineConfig, Path]:
    """The resolved MineConfig and images folder stored in a run's ``run.json`` (a stored τ is kept;
    settings missing from an older run take today's defaults, τ its encoder's)."""
    source = str(layout.meta_path(run.path))
    stored = run.config
    images_dir = stored.get("images_dir") if isinstance(stored, dict) else None
    if not images_dir:
        raise RunError(f"{source}: the run's config has no images_dir")
    return MineConfig.from_dict(stored, source).resolved(), Path(images_dir)


def resume(run_dir: str | Path, *, progress: ProgressFn | None = None, cancel: CancelFn | None = None,
           cache_dir: str | Path | None = None, encoder=None, encode_chunk_size: int = 256,
           ray_address: str | None = None, actor: Actor | None = None):
    """Continue (or start) mining the unfinished run in ``run_dir`` with the settings stored in its
    ``run.json``; returns the finished :class:`Run`. Finished work (cached features) is reused.
    ``actor``: who launches (None: the app's worker, started by a permitted launch)."""
    require(actor, "launch")

    run = Run.open(run_dir, require_complete=False)
    if run.status == "done":
        raise RunError(f"{run.path}: the run is already finished")
    if run.config.get("features_file"):  # a run mined from imported embeddings
        stored = run.config
        config = MineConfig.from_dict(stored, str(layout.meta_path(run.path))).resolved()
        return mine_features(stored["features_file"], stored.get("paths_file"), run.path, config,
                             image_root=stored.get("image_root"), progress=progress, cancel=cancel,
                             cache_dir=cache_dir, encoder=encoder, ray_address=ray_address)
    config, images_dir = run_mine_config(run)
    full = {**config.to_dict(), "images_dir": str(images_dir.resolve())}
    if comparable_config(full) != comparable_config(run.config):  # an older run lacking a newer setting: store it
        run.update_meta(config={**run.config, **full})
    return mine(images_dir, run.path, config, progress=progress, cancel=cancel, cache_dir=cache_dir,
                encoder=encoder, encode_chunk_size=encode_chunk_size, ray_address=ray_address)


def _final_progress(run, tracker: ProgressTracker, status: str) -> None:
    tracker.finish()
    prog = run.progress() or {}
    prog.update({"status": status, "updated": time.time(), "timings": tracker.timings})
    run.write_progress(prog)


def prepare_corpus(config: MineConfig | None = None, *, progress: ProgressFn | None = None,
                   cache_dir: str | Path | None = None) -> dict:
    """Embed the corpus of ``config`` (encoder, corpus, template) into the text cache ahead of time,
    so the first ``mine`` needs no corpus stage. Returns ``{"cache": path, "n": M, "seconds": s,
    "was_cached": bool}``; a cached corpus returns at once."""
    config = (config or MineConfig()).resolved()
    corpus = load_corpus(config.corpus)
    encoder = load_encoder(config.encoder, device=config.device)
    template = config.template or encoder.text_template
    text_root = Path(cache_dir) / "text" if cache_dir else None
    key = embedding_cache_key(encoder.fingerprint_id, corpus, template)
    was_cached = ((text_root or cache_root() / "text") / f"{key}.npy").is_file()
    start = time.perf_counter()
    on_batch = (lambda done, total: progress("corpus", done, total)) if progress else None
    _, path = corpus_embeddings(encoder, corpus, template, cache_dir=text_root, progress=on_batch)
    return {"cache": str(path), "n": len(corpus), "seconds": time.perf_counter() - start, "was_cached": was_cached}


def _plan_job(tracker: ProgressTracker, run, config: MineConfig, encoder, n_files: int, corpus,
              cache_dir: str | Path | None, n_encode: int | None = None) -> None:
    """Give the tracker per-stage estimates for the whole-job ETA: this machine's speed as the probe
    of the pre-launch estimate measured it a moment ago (``clustermine.workflows.estimate.estimate_now``; the
    job spends no time probing: without a recent probe, finished runs / reference rates, which the
    ETA rescales by the live rate of the running stage), the corpus cache state, TEMI's schedule
    for N, the ``n_encode`` images not in the feature cache. An estimate only: any failure leaves the
    job without a whole-job ETA, never fails it."""

    try:
        try:
            runs = list_runs(Path(run.path).parent)
        except Exception:  # noqa: BLE001
            runs = []
        cached = corpus_cache_state(encoder, corpus, config.template,
                                    Path(cache_dir) / "text" if cache_dir else None)
        est = estimate_now(n_files, config.clusterer, clusterer_params=config.clusterer_params,
                           n_clusters=config.n_clusters, corpus_cached=cached, corpus_size=len(corpus),
                           holdout_fraction=config.holdout_fraction, n_encode=n_encode, probe=False, runs=runs)
        tracker.set_plan(est.stages, est.detail)
        tracker.speed_slowdown = round(est.speed.slowdown, 3) if est.speed else None
    except Exception:  # noqa: BLE001 - the ETA is a convenience
        pass


def _mine_stages(run, images_dir: Path, config: MineConfig, tracker: ProgressTracker,
                 cache_dir: str | Path | None, encoder, encode_chunk_size: int = 256, cluster=None) -> None:
    from clustermine.method.clustering import make_clusterer  # imports pandas (seconds): only when this runs
    # Fail fast on a bad corpus, clusterer option or encoder spec, before the long scan and encode.
    corpus = load_corpus(config.corpus)
    make_clusterer(config.clusterer, 2, seed=config.seed, **config.clusterer_params)
    encoder = encoder or load_encoder(config.encoder, device=config.device)

    # 1. scan
    tracker.start("scan")
    records = scan_images(images_dir, hash_files=cluster.hash_files if cluster is not None else None)
    feat_cache = FeatureCache(encoder.fingerprint_id, Path(cache_dir) / "features" if cache_dir else None)
    n_encode = len({r.sha1 for r in records if r.status == "ok" and r.sha1 not in feat_cache})
    _plan_job(tracker, run, config, encoder, len(records), corpus, cache_dir, n_encode)
    tracker.update(len(records), len(records), force=True)

    # 2. encode
    _store_encoder(run, encoder)
    _store_cluster(run, cluster)
    tracker.start("encode")
    encode_records(encoder, records, cache=feat_cache, tracker=tracker, batch_size=config.batch_size,
                   max_pixels=config.max_pixels, chunk_size=max(1, int(encode_chunk_size)), assemble=False,
                   cluster=cluster)
    usable = [r for r in records if r.status == "ok"]
    if not usable:
        examples = "; ".join(f"{r.path}: {r.reason}" for r in records[:5])
        raise NoImagesError(f"{images_dir}: no readable image among {len(records)} files ({examples})")
    hold = holdout_rows(len(usable), config.holdout_fraction, config.seed)
    is_hold = np.zeros(len(usable), dtype=bool)
    is_hold[hold] = True
    row_of = {id(r): i for i, r in enumerate(usable)}
    rows = []
    for r in records:
        d = r.to_dict()
        i = row_of.get(id(r))
        d["row"] = i
        d["split"] = None if i is None else ("holdout" if is_hold[i] else "mine")
        rows.append(d)
    run.write_images(rows)
    write_cached_features(run, feat_cache, [r.sha1 for r in usable], encoder.dim)
    run.mark_stage("encode")
    _analyse(run, config, tracker, cache_dir, encoder, corpus, is_hold,
             {"n_files": len(records), "n_skipped": len(records) - len(usable),
              "n_duplicates": sum(1 for r in usable if r.duplicate_of)}, cluster)


def _store_encoder(run, encoder) -> None:
    run.update_meta(encoder={"spec": encoder.spec, "fingerprint": encoder.fingerprint,
                              "fingerprint_id": encoder.fingerprint_id, "device": encoder.device})


def write_cached_features(run, cache: FeatureCache, sha1s: Sequence[str], dim: int, block: int = 65536) -> None:
    """Write the run's ``features.npy`` (float16 [len(sha1s), D], row i = ``sha1s[i]``) from the
    feature cache's shards, ``block`` rows at a time (memory independent of N)."""
    with run.feature_writer(len(sha1s), dim) as out:
        for lo in range(0, len(sha1s), block):
            out[lo:lo + block] = cache.get_many(sha1s[lo:lo + block])


def _analyse(run, config: MineConfig, tracker: ProgressTracker, cache_dir: str | Path | None, encoder, corpus,
             is_hold: np.ndarray, counts: dict, cluster=None, vote_memo: VoteMemo | None = None) -> None:
    """Stages 3-5 (corpus, cluster, vote) on the run's stored features; ``is_hold`` bool [N_ok].
    With a Ray ``cluster`` the vote runs there; clustering stays here. With ``vote_memo`` a vote of the
    same features, corpus embeddings, k and τ is reused instead of recomputed."""
    from clustermine.workflows.recluster import clusterer_device, fit_rows, run_clusterer  # imports pandas (seconds): only when this runs

    template = config.template or encoder.text_template
    features = run.feature_matrix()  # float16 memmap [N_ok, D]
    n_usable = features.shape[0]

    # 3. corpus
    tracker.start("corpus", len(corpus))
    text_emb, _ = corpus_embeddings(encoder, corpus, template,
                                    cache_dir=Path(cache_dir) / "text" if cache_dir else None,
                                    progress=tracker.stage_callback())
    run.write_vocabulary(corpus.concepts, text_emb)
    run.mark_stage("corpus")

    # 4. cluster (mining rows only)
    mine_rows = np.flatnonzero(~is_hold)
    requested = config.n_clusters or default_n_clusters(len(mine_rows))
    n_clusters, clamp_msg = clamp_n_clusters(requested, len(mine_rows))
    device = clusterer_device(config, encoder.device if config.clusterer == "temi" else None)
    # TEMI on a CPU at paper scale: said in the run (TEMI.fit also warns), the job goes on as asked.
    clustering_note = check_clusterer_feasible(config.clusterer, len(mine_rows), device, n_clusters=n_clusters,
                                               params=config.clusterer_params)
    tracker.start("cluster", 1)
    cluster_ids = np.full(n_usable, -1, dtype=np.int64)
    temi_schedule = None
    if n_clusters <= 1:
        cluster_ids[mine_rows] = 0
    else:
        clusterer = run_clusterer(config, n_clusters, device=device, progress=tracker.stage_callback(),
                                  cancel=lambda: tracker.check_cancel_flag())
        cluster_ids[mine_rows] = fit_rows(clusterer, features, mine_rows)
        if hasattr(clusterer, "n_heads_"):  # TEMI's resolved schedule, for this machine's cost estimates
            temi_schedule = {"n_heads": int(clusterer.n_heads_), "batch_size": int(clusterer.batch_size_),
                             "steps": int(clusterer.n_iter_)}
    run.write_array(layout.CLUSTER_IDS, cluster_ids.astype(np.int32))
    if n_clusters > 1 and getattr(clusterer, "head_labels_", None) is not None:  # TEMI: every head's clustering
        write_head_labels(run, clusterer.head_labels_, mine_rows)
    run.mark_stage("cluster")

    # 5. vote (and, in the same pass over the corpus, every image's corpus LSE: the score's denominator)
    tracker.start("vote", n_usable)
    features = run.feature_matrix()
    kept = None
    if vote_memo is not None:
        memo_key = VoteMemo.key(features, text_emb, config.topk, run.tau)
        kept = vote_memo.get(memo_key)
    if kept is not None:
        top_idx, top_sim, lse = kept
        tracker.update(n_usable, n_usable)
    else:
        vote = cluster.zero_shot_topk if cluster is not None else zero_shot_topk
        top_idx, top_sim, lse = vote(features, text_emb, k=config.topk, tau=run.tau,
                                     progress=tracker.stage_callback(), cancel=lambda: tracker.check_cancel_flag())
        if vote_memo is not None:
            vote_memo.put(memo_key, top_idx, top_sim, lse)
    run.write_votes(top_idx, top_sim)
    store_corpus_lse(run, lse)
    top_sim = top_sim.astype(np.float16).astype(np.float32)
    sel = cluster_ids >= 0
    stats = cluster_statistics(cluster_ids[sel], top_idx[sel, 0], top_sim[sel, 0], len(corpus), n_clusters)
    # Example rows must index the full feature matrix, so pass full arrays with −1 for held-out rows.
    mined = mine_positive_concepts(stats, corpus.concepts, top_idx[:, 0], top_sim[:, 0], cluster_ids)
    run.write_mining(stats, mined)
    tracker.finish()
    summ = summary(stats, mined)
    summ.update({
        **counts, "n_images": int(n_usable), "n_mining": int(len(mine_rows)), "n_holdout": int(is_hold.sum()),
        "n_clusters_requested": int(requested), "corpus_size": len(corpus), "clamp_warning": clamp_msg,
        "timings_s": tracker.timings,
    })
    if temi_schedule:
        summ["temi_schedule"] = temi_schedule
    if tracker.speed_slowdown is not None:
        summ["speed_slowdown"] = tracker.speed_slowdown
    if clustering_note:
        summ["clustering_note"] = clustering_note
    run.mark_stage("vote", summary=summ, status="done", error=None)


def write_head_labels(run, head_labels: np.ndarray, rows: np.ndarray) -> None:
    """Store per-head cluster ids int [H, len(rows)] of feature ``rows`` as int32 [H, N_ok] (-1 elsewhere),
    the input of concept stability (:mod:`clustermine.workflows.stability`)."""
    n = run.cluster_ids().shape[0]
    full = np.full((head_labels.shape[0], n), -1, dtype=np.int32)
    full[:, rows] = head_labels
    run.write_array(layout.HEAD_LABELS, full)


# ----------------------------------------------------------------------------- score / evaluate
def _gather_encode(cluster, encoder, files: list[str]):
    """Encode ``files`` on the cluster into one EncodeResult in input order (no feature cache, as locally)."""
    from clustermine.method.encoders.base import EncodeResult  # imports torch (seconds): only when this runs

    ok = [False] * len(files)
    errors: dict[str, str] = {}
    feats = np.zeros((len(files), encoder.dim), dtype=np.float32)
    for positions, result in cluster.iter_encode(encoder, files):
        good = [p for p, flag in zip(positions, result.ok) if flag]
        feats[good] = result.features
        for p, flag in zip(positions, result.ok):
            ok[p] = flag
        errors.update(result.errors)
    return EncodeResult(features=feats[np.asarray(ok, dtype=bool)], ok=ok, errors=errors)


def _resolve_paths(paths: Iterable[str | Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            out.extend(Path(r.abs_path) for r in scan_images(p) if r.status == "ok")
        else:
            out.append(p)
    return out


def score_images(run, paths: Iterable[str | Path], *, encoder=None, top: int = 5,
                 ray_address: str | None = None) -> list[dict]:
    """Score image files (or folders) against the run's current concepts.

    One dict per file: ``path``, ``log_score``, ``score``, ``is_id`` (at the calibrated threshold),
    ``threshold``, ``top_positive`` / ``top_negative`` [(concept, cosine)], or ``error``.
    ``ray_address``: encode and score on that Ray cluster (same results as here).
    """
    detector = run_detector(run)
    encoder = encoder or load_encoder(detector.encoder_spec or run.encoder_spec)
    detector.check_encoder(encoder)
    files = _resolve_paths(paths)
    if not files:
        raise NoImagesError("no image to score")
    with _cluster(ray_address) as cluster:
        if cluster is None:
            result = encoder.encode_images([str(f) for f in files])
        else:
            result = _gather_encode(cluster, encoder, [str(f) for f in files])
        # float16 like the run's features, the feature cache and the web app: one image, one score everywhere
        feats = result.features.astype(np.float16).astype(np.float32)
        if not len(feats):
            explanations = []
        elif cluster is None:
            explanations = detector.explain(feats, top=top)
        else:
            explanations = cluster.explain(detector, feats, top=top)
    out: list[dict] = []
    explained = iter(explanations)
    for f, ok in zip(files, result.ok):
        if not ok:
            out.append({"path": str(f), "error": result.errors.get(str(f), "could not be decoded")})
            continue
        e = next(explained)
        e.update({"path": str(f), "is_id": bool(e["log_score"] >= detector.threshold)
                  if detector.threshold is not None else None, "threshold": detector.threshold})
        out.append(e)
    return out


def evaluate(run, id_dir: str | Path, ood_dir: str | Path, *, encoder=None,
             cache_dir: str | Path | None = None, ray_address: str | None = None) -> dict:
    """AUROC / FPR95 / AUPR of the run's current detector, ID folder vs OOD folder
    (``ray_address``: encode and score on that Ray cluster); :func:`clustermine.workflows.evaluation.evaluate_single`."""
    return evaluate_single(run, id_dir, ood_dir, encoder=encoder, cache_dir=cache_dir, ray_address=ray_address)

"""Command-line interface: the same verbs as the web app (mine, resume, score, evaluate, concepts, export,
report, search, label, delete, exclude, remine, stability, diff, verify), plus the researcher's ``purity`` (clusters
against folder labels) and ``sweep`` (ablations over a settings grid x seeds).

The ``mine`` flags are derived from :class:`clustermine.core.config.MineConfig` (one flag per field, its
default the field's); ``resume RUN_DIR`` continues a run with the settings stored in the run itself.

User errors print one line (``error: ...``) and exit with status 2; no traceback. ``verify`` exits 1
when a decision log was altered.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from pathlib import Path
from typing import Sequence

from clustermine.core.config import MineConfig
from clustermine.core.errors import CancelledError, ClusterMineError
from clustermine.core.identity import Actor, cli_actor, os_user
from clustermine.core.roles import clustermine_settings, configured_roles
from clustermine.store import layout
from clustermine.store import Run
from clustermine.workflows.distributed import RAY_ADDRESS_ENV, RayCluster, ray_address
from clustermine.workflows.remine import remine
from clustermine.workflows.run_admin import delete_run, set_label
from clustermine.workflows.search import row_of_path, search_image, search_text
from clustermine.workflows.stability import clustering_winners, seed_stability, stability_source, support_counts
from clustermine.workflows.compare import diff_runs
from clustermine.workflows.decisions import log_state
from clustermine.workflows.export import export_run
from clustermine.workflows.evaluation import (FPR_CONVENTIONS, evaluate_sets, parse_ood_specs, read_class_names,
                                              single_result)
from clustermine.workflows.evaluation_store import store_evaluation
from clustermine.workflows.evaluation import render as render_evaluation
from clustermine.workflows.pipeline import mine, mine_features, prepare_corpus, resume, score_images
from clustermine.workflows.report import write_report
from clustermine.workflows.whatif import calibration_warning
from clustermine.workflows.concept_edits import edit_concept, set_concept_status
from clustermine.workflows import scoring_uploads
from clustermine.workflows.new_run import RunSource, create_run_from_uploads
from clustermine.core.units import fmt_duration
from clustermine.workflows.diagnostics import purity_diagnostics
from clustermine.workflows.sweep import parse_grid, parse_named_folders, results_table, sweep


def _type_of(f: dataclasses.Field) -> type:
    """The value type of a MineConfig field (``int | None`` -> int)."""
    hint = typing.get_type_hints(MineConfig)[f.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def _key_value(text: str) -> tuple[str, object]:
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw  # plain text
    return key.strip(), value


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per MineConfig field; flag name, help and choices come from the field's metadata and
    the default is the field's own (never written here)."""
    defaults = MineConfig()
    for f in dataclasses.fields(MineConfig):
        meta = f.metadata
        flag = meta.get("flag") or "--" + f.name.replace("_", "-")
        kind = _type_of(f)
        default = getattr(defaults, f.name)
        helptext = meta.get("help", "")
        if kind is dict:  # repeated KEY=VALUE, gathered into a dict by config_from_args
            parser.add_argument(flag, dest=f.name, action="append", type=_key_value, default=None,
                                metavar="KEY=VALUE", help=helptext)
        elif kind is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=default,
                                help=helptext)
        else:
            suffix = "" if default is None else f" (default: {default})"
            parser.add_argument(flag, dest=f.name, type=kind, default=default, choices=meta.get("choices"),
                                metavar=None if meta.get("choices") else flag[2:].upper().replace("-", "_"),
                                help=helptext + suffix)


def config_from_args(args: argparse.Namespace) -> MineConfig:
    """The MineConfig given by the flags of :func:`add_config_arguments` (validated)."""
    values = {}
    for f in dataclasses.fields(MineConfig):
        value = getattr(args, f.name)
        if _type_of(f) is dict:
            value = dict(value or [])
        values[f.name] = value
    return MineConfig(**values).validate("command line")



_USER_HELP = ("name recorded with this change (default: the OS user); with a roles file the OS user's role "
              "applies, since the OS vouches only for its own account")


def _add_user_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--user", default=None, metavar="NAME", help=_USER_HELP)


def _actor(a: argparse.Namespace) -> Actor:
    """Who acts on a write verb: ``--user`` or the OS user (``auth = "os"``), with the role the roles
    file ($CLUSTERMINE_ROLES or [clustermine] roles_file in .streamlit/secrets.toml) gives the OS user."""
    actor = cli_actor(getattr(a, "user", None))
    policy = configured_roles(settings=clustermine_settings())
    if policy is None:
        return actor
    return Actor(name=actor.name, auth=actor.auth, role=policy.role_for(os_user()))


def _add_ray_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ray", default=None, metavar="ADDRESS",
                        help="run encoding, vote and scoring on a Ray cluster: auto, HOST:PORT or ray://HOST:PORT "
                             "(default: $CLUSTERMINE_RAY_ADDRESS; 'local' forces this machine). Images must be "
                             "visible under the same path on every node")


def _ray(a: argparse.Namespace) -> str | None:
    return ray_address(a.ray)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clustermine", description="Label-free OOD detection by mining concepts from "
                                "clusters of your in-distribution images (ClusterMine).")
    sub = p.add_subparsers(dest="verb", required=True)

    m = sub.add_parser("mine", help="encode a folder of ID images (or import their embeddings), cluster, vote and "
                       "mine concepts into a run folder")
    m.add_argument("images_dir", nargs="?", default=None, help="folder of ID images (or use --zip / --features)")
    m.add_argument("--zip", default=None, metavar="FILE", dest="zip_file",
                   help="a zip of ID images instead of a folder: unpacked safely into the run's uploads/ (as the "
                        "web app's 'Upload a zip'; path escapes, links and zip bombs are refused)")
    m.add_argument("--features", default=None, metavar="FILE",
                   help="precomputed image embeddings instead of a folder: a .npy float16/float32 [N, D], or a "
                        "clip-retrieval output folder (img_emb/ + metadata/); --encoder names the matching text tower")
    m.add_argument("--paths", default=None, metavar="PATHS",
                   help="with --features: one image path per row (text, one per line; or .csv/.parquet with an "
                        "image_path column); optional for clip-retrieval folders (their metadata has the paths)")
    m.add_argument("--image-root", default=None, metavar="DIR",
                   help="with --features: folder that relative paths are resolved against (default: the folder "
                        "of the paths file)")
    m.add_argument("--out", required=True, help="run folder to create (or resume with the same settings)")
    add_config_arguments(m)
    m.add_argument("--cache-dir", default=None, help="feature / text-embedding cache (default ~/.cache/clustermine)")
    m.add_argument("--force", action="store_true", help="replace a finished run in --out (the old one is moved aside)")
    _add_ray_argument(m)
    _add_user_argument(m)
    m.add_argument("--quiet", action="store_true")

    r = sub.add_parser("resume", help="continue an unfinished run with the settings stored in its run.json")
    r.add_argument("run_dir")
    r.add_argument("--cache-dir", default=None, help="feature / text-embedding cache (default ~/.cache/clustermine)")
    _add_ray_argument(r)
    _add_user_argument(r)
    r.add_argument("--quiet", action="store_true")

    pr = sub.add_parser("prepare", help="embed the concept corpus into the cache now, so the first mine skips that "
                        "stage (set-up runs it for the default encoder and corpus)")
    for name in ("encoder", "corpus", "template", "device"):
        f = next(f for f in dataclasses.fields(MineConfig) if f.name == name)
        pr.add_argument("--" + name, default=getattr(MineConfig(), name), choices=f.metadata.get("choices"),
                        help=f.metadata.get("help", ""))
    pr.add_argument("--cache-dir", default=None, help="feature / text-embedding cache (default ~/.cache/clustermine)")
    pr.add_argument("--quiet", action="store_true")

    s = sub.add_parser("score", help="score images (files or folders) with a run's current concepts")
    s.add_argument("run_dir")
    s.add_argument("paths", nargs="*", help="image files or folders (none: the images kept in the run, as on the "
                   "Scoring page)")
    s.add_argument("--keep", action="store_true",
                   help="also keep these images in the run's scoring store (files copied, folders listed), the "
                        "store the Scoring page shows")
    s.add_argument("--clear-kept", action="store_true", help="forget every image kept in the run for scoring")
    s.add_argument("--top", type=int, default=3)
    s.add_argument("--json", action="store_true")
    _add_ray_argument(s)

    e = sub.add_parser("evaluate", help="AUROC / FPR95 / AUPR of runs: ID set vs one or more named OOD sets, "
                       "with bootstrap intervals and label-based baselines")
    e.add_argument("run_dir", nargs="?", default=None, help="the run (or use --runs)")
    e.add_argument("--runs", nargs="+", default=[], metavar="RUN",
                   help="several runs (e.g. seeds): per-run rows and mean ± sd over runs")
    e.add_argument("--id", required=True, dest="id_dir", metavar="DIR",
                   help="ID test images: a folder, or precomputed features (.npy [N, D] or a clip-retrieval folder)")
    e.add_argument("--ood", required=True, action="append", dest="ood", metavar="[NAME=]DIR",
                   help="an OOD set (folder or features, as --id); repeat for several: one row each and their mean")
    e.add_argument("--class-names", default=None, metavar="FILE|folders",
                   help="the true ID class names: adds MCM, NegLabel and 'ClusterMine, true names as Y_pos' "
                        "(label-based). FILE: one name per line (one per ID subfolder, sorted order) or "
                        "folder<TAB>name lines; 'folders': the ID subfolder names, '_' -> ' ', lowercase")
    e.add_argument("--bootstrap", type=int, default=0, metavar="N",
                   help="N bootstrap replicates: 95 %% percentile intervals of AUROC and FPR95 (e.g. 1000)")
    e.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    e.add_argument("--fpr-convention", choices=FPR_CONVENTIONS, default="hendrycks",
                   help="openood: add OpenOOD v1.5's OOD-positive FPR@95TPR as its own column")
    e.add_argument("--cache-dir", default=None)
    fmt = e.add_mutually_exclusive_group()
    for name in ("json", "csv", "markdown", "latex"):
        fmt.add_argument(f"--{name}", action="store_const", const=name, dest="format", help=f"print {name}")
    _add_ray_argument(e)

    c = sub.add_parser("concepts", help="list or edit the mined concepts (Y_pos)")
    c.add_argument("run_dir")
    c.add_argument("--accept", action="append", default=[], metavar="CONCEPT")
    c.add_argument("--reject", action="append", default=[], metavar="CONCEPT")
    c.add_argument("--restore", action="append", default=[], metavar="CONCEPT")
    c.add_argument("--add", action="append", default=[], metavar="CONCEPT")
    c.add_argument("--set", action="append", default=[], metavar="CONCEPT=STATUS", dest="set_status",
                   help="give a concept (id or text) a status: mined, accepted, rejected or added, through the edit "
                        "the web app's table makes (clustermine.store.action_for)")
    _add_user_argument(c)
    c.add_argument("--json", action="store_true")

    x = sub.add_parser("export", help="write the detector bundle, concept lists and per-image results of a run")
    x.add_argument("run_dir")
    x.add_argument("--out", required=True)

    rp = sub.add_parser("report", help="write one self-contained HTML report of a run (opens offline)")
    rp.add_argument("run_dir")
    rp.add_argument("--out", required=True, help="HTML file to write, e.g. report.html")
    rp.add_argument("--ood", default=None, metavar="FOLDER",
                    help="an OOD image sample: adds AUROC / FPR95 to the report")
    rp.add_argument("--ood-limit", type=int, default=500, help="at most this many OOD images are encoded")

    se = sub.add_parser("search", help="find the run's images nearest a text (any concept) or one of its images")
    se.add_argument("run_dir")
    se.add_argument("query", help="text to search for, or with --image an image path of the run")
    se.add_argument("--image", action="store_true", help="QUERY is an image of the run: find its nearest neighbours")
    se.add_argument("--k", type=int, default=12, help="number of images to return (default: 12)")
    se.add_argument("--json", action="store_true")

    lb = sub.add_parser("label", help="give a run a label (empty text removes it)")
    lb.add_argument("run_dir")
    lb.add_argument("text")
    _add_user_argument(lb)

    dl = sub.add_parser("delete", help="delete a run folder (refused while its job runs)")
    dl.add_argument("run_dir")
    dl.add_argument("--yes", action="store_true", help="confirm the deletion (required)")
    _add_user_argument(dl)

    ex = sub.add_parser("exclude", help="mark images of a run \"not ID\" (or restore them); re-mine to apply")
    ex.add_argument("run_dir")
    ex.add_argument("paths", nargs="*", metavar="PATH", help="image paths (as listed in the run, or absolute), folders (every usable image under "
                         "them) or quoted glob patterns, e.g. 'n03417042/*'")
    ex.add_argument("--row", type=int, action="append", default=[], help="an image by its feature row")
    ex.add_argument("--restore", action="store_true", help="restore the images instead of excluding them")
    _add_user_argument(ex)
    ex.add_argument("--list", action="store_true", help="list the excluded images")

    rm = sub.add_parser("remine", help="mine again without the excluded images (no re-encoding)")
    rm.add_argument("run_dir")
    rm.add_argument("--recluster", action="store_true",
                    help="re-cluster the remaining images (default: reuse the clusters minus excluded images)")
    _add_user_argument(rm)
    rm.add_argument("--json", action="store_true")

    st = sub.add_parser("stability", help="support of every concept across the run's TEMI heads or several seeds")
    st.add_argument("run_dir")
    st.add_argument("--seeds", type=int, default=None,
                    help="re-cluster with this many seeds (the run's own clustering counts as one)")
    _add_user_argument(st)
    st.add_argument("--json", action="store_true")

    df = sub.add_parser("diff", aliases=["compare"],
                        help="compare two runs: which detects OOD better (AUROC / FPR95 of each on --ood), "
                             "Y_pos, cluster agreement, score shift, settings and images")
    df.add_argument("run_a")
    df.add_argument("run_b")
    df.add_argument("--ood", default=None, metavar="FOLDER",
                    help="an OOD image sample: AUROC / FPR95 of each run on it, and its verdict changes")
    df.add_argument("--ood-limit", type=int, default=500, help="at most this many OOD images are encoded")
    df.add_argument("--json", action="store_true")

    vf = sub.add_parser("verify", help="check a run's decision logs (edits, exclusions) against their hash chain: "
                                       "exit 0 when intact (or unchained: written before the chain), 1 when altered")
    vf.add_argument("run_dir")
    vf.add_argument("--json", action="store_true", help="the state of each log, with its head hash to keep elsewhere")

    cl = sub.add_parser("cluster", help="show the Ray cluster that --ray / CLUSTERMINE_RAY_ADDRESS names "
                                        "(nodes, CPUs, GPUs)")
    _add_ray_argument(cl)
    cl.add_argument("--json", action="store_true")

    pu = sub.add_parser("purity", help="clustering ACC / NMI / ARI of a run against the class subfolders of its "
                                       "images, and which classes each cluster merges")
    pu.add_argument("run_dir")
    pu.add_argument("--json", action="store_true")

    sw = sub.add_parser("sweep", help="ablations: mine and evaluate every cell of a settings grid x seeds "
                                      "(images encoded once; resumable; mean ± sd over seeds)",
                        description="Settings outside the grid take the mine flags below. --clusterer-param "
                                    "KEY=VALUE applies to every clusterer, temi.KEY=VALUE or kmeans.KEY=VALUE to one.")
    sw.add_argument("images_dir", metavar="IMAGES", help="the ID images to mine (the same for every cell)")
    sw.add_argument("--id", required=True, dest="id_dir", help="ID images to evaluate on")
    sw.add_argument("--ood", required=True, action="append", metavar="NAME=DIR",
                    help="an OOD set (repeat for several); a bare DIR is named after its folder")
    sw.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                    help="a setting to vary: clusters, tau, clusterer, corpus, template (template: one value "
                         "per --grid, never split on commas); repeat for several keys")
    sw.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds of every grid point (default: 0)")
    sw.add_argument("--out", required=True, help="sweep folder: cells/, runs/, results.json / .csv")
    sw.add_argument("--discard-runs", action="store_true", help="delete each cell's run folder once measured")
    sw.add_argument("--cache-dir", default=None)
    sw.add_argument("--json", action="store_true")
    add_config_arguments(sw)  # every other setting: the same flags and defaults as mine
    return p


class _Bars:
    """One tqdm bar per pipeline stage."""

    def __init__(self, quiet: bool) -> None:
        self.quiet, self.bar, self.stage = quiet, None, None
        self.job_eta_s: float | None = None

    def on_job_eta(self, seconds: float) -> None:
        """The whole job's remaining time (all stages), shown beside the current stage's bar."""
        self.job_eta_s = seconds

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self.quiet:
            return
        from tqdm import tqdm

        if stage != self.stage:
            self.close()
            self.stage = stage
            # disable=None: bars on a terminal only, so logs and pipes get clean lines
            self.bar = tqdm(total=total or None, desc=f"{stage:>7}", unit="it", file=sys.stderr, leave=True,
                            disable=None)
        if self.bar is not None:
            if total and self.bar.total != total:
                self.bar.total = total
            self.bar.n = done
            if self.job_eta_s is not None:
                self.bar.set_postfix_str(f"job ETA {fmt_duration(self.job_eta_s)}", refresh=False)
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _cmd_mine(a: argparse.Namespace) -> int:
    if sum(x is not None for x in (a.images_dir, a.features, a.zip_file)) != 1:
        raise ClusterMineError("mine: give one of an images folder, --zip FILE or --features FILE")
    if a.features is None and (a.paths or a.image_root):
        raise ClusterMineError("mine: --paths and --image-root go with --features")
    who = _actor(a)  # before anything is written: a refused launch leaves nothing
    bars = _Bars(a.quiet)
    try:
        if a.zip_file is not None:  # the same engine call as the web app's upload, then the stored run is mined
            create_run_from_uploads(a.out, config_from_args(a), RunSource("zip", zip_file=a.zip_file),
                                    overwrite=a.force, actor=who)
            run = resume(a.out, progress=bars, cache_dir=a.cache_dir, ray_address=_ray(a), actor=who)
        elif a.features is not None:
            run = mine_features(a.features, a.paths, a.out, config_from_args(a), image_root=a.image_root,
                                progress=bars, overwrite=a.force, cache_dir=a.cache_dir, ray_address=_ray(a),
                                actor=who)
        else:
            run = mine(a.images_dir, a.out, config_from_args(a), progress=bars, overwrite=a.force,
                       cache_dir=a.cache_dir, ray_address=_ray(a), actor=who)
    finally:
        bars.close()
    return _report_run(run)


def _cmd_resume(a: argparse.Namespace) -> int:
    bars = _Bars(a.quiet)
    try:
        run = resume(a.run_dir, progress=bars, cache_dir=a.cache_dir, ray_address=_ray(a), actor=_actor(a))
    finally:
        bars.close()
    return _report_run(run)


def _cmd_prepare(a: argparse.Namespace) -> int:
    config = MineConfig(encoder=a.encoder, corpus=a.corpus, template=a.template, device=a.device).validate("command line")
    bars = _Bars(a.quiet)
    try:
        info = prepare_corpus(config, progress=bars, cache_dir=a.cache_dir)
    finally:
        bars.close()
    state = "already cached" if info["was_cached"] else f"embedded in {info['seconds']:.0f} s"
    print(f"corpus {config.corpus} ({info['n']} concepts, encoder {config.encoder}): {state} -> {info['cache']}")
    return 0


def _report_run(run) -> int:
    s = run.meta["summary"]
    print(f"run: {run.path}")
    print(f"images used: {s['n_images']} (mining {s['n_mining']}, held out {s['n_holdout']}), "
          f"skipped: {s['n_skipped']}, duplicates: {s['n_duplicates']}")
    print(f"clusters: {s['n_clusters']} ({s['n_occupied']} occupied), |Y_pos|: {s['n_positive']}, "
          f"mean purity: {s['mean_purity']:.3f}, corpus: {s['corpus_size']} concepts, tau: {run.config.get('tau')}")
    if s.get("clamp_warning"):
        print(f"note: {s['clamp_warning']}")
    import pyarrow.compute as pc

    table = run.image_table()
    skipped = table.filter(pc.not_equal(table["status"], "ok"))
    for r in skipped.slice(0, 20).to_pylist():
        print(f"skipped {r['path']}: {r['reason']}")
    if skipped.num_rows > 20:
        print(f"... and {skipped.num_rows - 20} more skipped files (see {run.file(layout.IMAGES)})")
    print("Y_pos: " + ", ".join(run.positive_concepts()))
    return 0


def _calibration_warning(run) -> None:
    """Issue 12: say on stderr when the calibration set is too small for the default 95 % TPR."""

    if len(run.vocabulary()[2]):
        msg = calibration_warning(run, 0.95)
        if msg:
            print(f"warning: {msg}", file=sys.stderr)


def _cmd_score(a: argparse.Namespace) -> int:
    run = Run.open(a.run_dir)
    paths = _scoring_paths(run, a)
    if not paths:
        return 0
    results = score_images(run, paths, top=a.top, ray_address=_ray(a))
    _calibration_warning(run)
    if a.json:
        print(json.dumps(results, indent=2))
        return 0
    for r in results:
        if "error" in r:
            print(f"{r['path']}\tERROR\t{r['error']}")
            continue
        verdict = "ID" if r["is_id"] else "OOD"
        tops = ", ".join(f"{c} ({s:.2f})" for c, s in r["top_positive"])
        print(f"{r['path']}\t{verdict}\tlog_score={r['log_score']:.3f}\tscore={r['score']:.4g}\ttop: {tops}")
    return 0


def _scoring_paths(run, a: argparse.Namespace) -> list[str]:
    """What ``score`` scores: the given paths (kept in the run's scoring store with --keep), or the
    images the run keeps (``clustermine.workflows.scoring_uploads``, the Scoring page's store)."""
    if a.clear_kept:
        scoring_uploads.clear(run)
        print("cleared the images kept for scoring", file=sys.stderr)
        if not a.paths:
            return []
    if a.paths and a.keep:
        folders = [p for p in a.paths if Path(p).is_dir()]
        rep = scoring_uploads.add_files(run, [p for p in a.paths if not Path(p).is_dir()])
        for f in folders:
            scoring_uploads.add_folder(run, f)
        for f in rep.skipped:
            print(f"not kept {f.display_name}: {f.reason}", file=sys.stderr)
        print(f"kept {rep.n_saved} file(s) and {len(folders)} folder(s) in {scoring_uploads.uploads_dir(run).parent}",
              file=sys.stderr)
    if a.paths:
        return list(a.paths)
    if a.keep:
        raise ClusterMineError("score: --keep needs image files or folders to keep")
    kept = scoring_uploads.sources(run)
    if not kept:
        raise ClusterMineError("score: give image files or folders; this run keeps none for scoring (add them "
                               "with --keep or on the Scoring page)")
    return kept


def _keep_evaluation(ev, runs: list[Run], id_source: str, oods: dict[str, str]) -> None:
    """Keep the evaluation in each run (the app's Evaluate page and the report show the latest); a run
    that cannot be written only loses the record, said on stderr."""
    try:
        store_evaluation(ev, runs, id_source, oods)
    except OSError as exc:
        print(f"note: the evaluation was not kept in the run ({exc})", file=sys.stderr)


def _cmd_evaluate(a: argparse.Namespace) -> int:
    run_dirs = ([a.run_dir] if a.run_dir else []) + list(a.runs)
    if not run_dirs:
        raise ClusterMineError("evaluate: give a run folder (or --runs RUN [RUN ...])")
    oods, named = parse_ood_specs(a.ood)
    runs = [Run.open(r) for r in run_dirs]
    plain = (len(runs) == 1 and len(oods) == 1 and not named and a.class_names is None and not a.bootstrap
             and a.fpr_convention == "hendrycks" and a.format in (None, "json"))
    if plain:  # one run, one OOD folder: the original answer (same JSON)
        ev = evaluate_sets(runs, a.id_dir, oods, cache_dir=a.cache_dir, ray_address=_ray(a), purity=False)
        _keep_evaluation(ev, runs, a.id_dir, oods)
        res = single_result(ev)
        _calibration_warning(runs[0])
        if a.format == "json":
            print(json.dumps(res, indent=2))
        else:
            print(f"AUROC {res['auroc']:.4f}  FPR95 {res['fpr95']:.4f}  AUPR-In {res['aupr_in']:.4f}  "
                  f"AUPR-Out {res['aupr_out']:.4f}  (ID {res['n_id']}, OOD {res['n_ood']}, |Y_pos| {res['n_positive']})")
        return 0
    names = read_class_names(a.class_names, a.id_dir) if a.class_names is not None else None
    ev = evaluate_sets(runs, a.id_dir, oods, class_names=names, bootstrap=a.bootstrap, seed=a.seed,
                       fpr_convention=a.fpr_convention, cache_dir=a.cache_dir, ray_address=_ray(a))
    _keep_evaluation(ev, runs, a.id_dir, oods)
    for run in runs:
        _calibration_warning(run)
    print(render_evaluation(ev, a.format or "table"))
    return 0


def _cmd_concepts(a: argparse.Namespace) -> int:
    run = Run.open(a.run_dir)
    edits = any(getattr(a, k) for k in ("accept", "reject", "restore", "add", "set_status"))
    actor = _actor(a) if edits else None
    for action in ("accept", "reject", "restore", "add"):
        for key in getattr(a, action):
            c = edit_concept(run, action, key, actor=actor)
            if not a.json:
                print(f"{action}: {c.text} -> {c.status}")
    for item in a.set_status:
        key, sep, status = item.rpartition("=")
        if not sep or not key.strip():
            raise ClusterMineError(f"concepts --set: expected CONCEPT=STATUS, got {item!r}")
        c, action = set_concept_status(run, key.strip(), status.strip(), actor=actor)
        if not a.json:
            print(f"{action}: {c.text} -> {c.status}" if action else f"unchanged: {c.text} is {c.status}")
    concepts = run.concepts()
    if a.json:
        print(json.dumps([c.to_dict() for c in concepts], indent=2))
        return 0
    print(f"{'id':<14} {'status':<9} {'votes':>5} {'purity':>6} {'support':>7}  concept (clusters)")
    for c in concepts:
        pur = f"{c.purity:.2f}" if c.purity is not None else "-"
        sup = f"{c.support:.2f}" if c.support is not None else "?"
        flag = "  [one head only]" if c.single_head else ""
        where = c.clusters if c.clusters else ""
        print(f"{c.id:<14} {c.status:<9} {c.votes:>5} {pur:>6} {sup:>7}  {c.text} {where}{flag}")
    print(f"|Y_pos| = {sum(c.is_positive for c in concepts)}")
    return 0


def _cmd_export(a: argparse.Namespace) -> int:
    out = export_run(Run.open(a.run_dir), a.out)
    print(f"exported to {out}")
    return 0


def _cmd_report(a: argparse.Namespace) -> int:
    out = write_report(Run.open(a.run_dir), a.out, ood_dir=a.ood, ood_limit=a.ood_limit)
    print(f"report written to {out}")
    return 0


def _cmd_search(a: argparse.Namespace) -> int:
    run = Run.open(a.run_dir)
    hits = search_image(run, row_of_path(run, a.query), a.k) if a.image else search_text(run, a.query, a.k)
    if a.json:
        print(json.dumps([h.to_dict() for h in hits], indent=2))
        return 0
    for h in hits:
        print(f"{h.rank:>3}  {h.similarity:.3f}  {h.name}\t{h.place}")
    return 0


def _cmd_label(a: argparse.Namespace) -> int:
    label = set_label(a.run_dir, a.text, actor=_actor(a))
    print(f"label of {a.run_dir}: {label!r}" if label else f"label of {a.run_dir} removed")
    return 0


def _cmd_delete(a: argparse.Namespace) -> int:
    if not a.yes:
        print(f"error: deleting {a.run_dir} cannot be undone; add --yes to confirm", file=sys.stderr)
        return 2
    delete_run(a.run_dir, actor=_actor(a))
    print(f"deleted {a.run_dir}")
    return 0


def _cmd_exclude(a: argparse.Namespace) -> int:
    run = Run.open(a.run_dir)
    keys = list(a.paths) + list(a.row)
    if keys:
        groups = run.resolve_image_groups(keys)  # refuses a key that matches nothing, before any change
        for key, kind, group in groups:
            if kind in ("folder", "pattern"):
                print(f"{key}: {len(group)} usable image(s) {'under this folder' if kind == 'folder' else 'match'}")
        rows = list(dict.fromkeys(row for _, _, group in groups for row in group))
        changed = run.set_excluded(rows, restore=a.restore, actor=_actor(a))
        verb = "restored" if a.restore else "excluded"
        print(f"{verb} {len(changed)} image(s); {len(rows) - len(changed)} already {verb}. "
              "Run `clustermine remine RUN_DIR` to mine again without the excluded images.")
    elif not a.list:
        raise ClusterMineError("give image paths (or --row N) to exclude, or --list")
    mask = run.excluded_mask()
    paths = {r["row"]: r["path"] for r in run.image_records(ok_only=True)}
    if a.list:
        for row in map(int, mask.nonzero()[0]):
            print(f"{row}\t{paths[row]}")
    print(f"{int(mask.sum())} image(s) excluded")
    return 0


def _print_changes(ch: dict) -> None:
    print(f"re-mined ({ch['mode']}) without {ch['n_excluded']} excluded image(s); {ch['n_voters']} images voted")
    print("Y_pos added: " + (", ".join(ch["y_pos_added"]) or "-"))
    print("Y_pos removed: " + (", ".join(ch["y_pos_removed"]) or "-"))
    print("clusters affected: " + (" ".join(map(str, ch["clusters_affected"])) or "-"))
    for d in ch["decisions_not_applying"]:
        print(f"no longer applies: {d['action']} of {d['concept']!r} by {d['user']} (concept no longer mined)")


def _cmd_remine(a: argparse.Namespace) -> int:
    run = Run.open(a.run_dir)
    changes = remine(run, recluster=a.recluster, actor=_actor(a))
    if a.json:
        print(json.dumps(changes, indent=2))
    else:
        _print_changes(changes)
    return 0


def _cmd_stability(a: argparse.Namespace) -> int:
    run = Run.open(a.run_dir)
    if a.seeds is not None:
        bars = _Bars(a.json)
        labels = seed_stability(run, a.seeds, progress=lambda d, t: bars("stability", d, t), actor=_actor(a))
        bars.close()
        top_idx, top_sim = run.votes()
        counts = support_counts(clustering_winners(labels, top_idx[:, 0], top_sim[:, 0], len(run.vocabulary_base()),
                                                   ~run.excluded_mask()))
        rows = [{"id": c.id, "text": c.text, "status": c.status,
                 "support": (counts.get(c.corpus_index, 0) / len(labels)) if c.corpus_index is not None else None,
                 "support_count": counts.get(c.corpus_index, 0) if c.corpus_index is not None else None,
                 "support_total": len(labels)} for c in run.concepts()]
        source = "seeds"
    else:
        source = stability_source(run)
        rows = [{"id": c.id, "text": c.text, "status": c.status, "support": c.support,
                 "support_count": c.support_count, "support_total": c.support_total} for c in run.concepts()]
    if a.json:
        print(json.dumps({"source": source, "concepts": rows}, indent=2))
        return 0
    if source is None:
        print("support unknown: this run stores no head labels (k-means or an older run); "
              "compute it with --seeds 5")
    for r in rows:
        sup = "?" if r["support"] is None else f"{r['support']:.2f} ({r['support_count']}/{r['support_total']})"
        flag = "  [elected once]" if r["support_count"] == 1 and (r["support_total"] or 0) > 1 else ""
        print(f"{sup:>16}  {r['status']:<9} {r['text']}{flag}")
    return 0


def _cmd_diff(a: argparse.Namespace) -> int:
    d = diff_runs(Run.open(a.run_a), Run.open(a.run_b), ood_folder=a.ood, ood_limit=a.ood_limit)
    if a.json:
        print(json.dumps(d, indent=2))
        return 0
    y, c, h = d["y_pos"], d["clusters"], d["heldout_shift"]
    print(d["verdict"])
    om = d["ood_metrics"]
    if om:
        for name in ("a", "b"):
            m = om[name]
            print(f"  {name.upper()}: " + ("undefined (no positive concept)" if m is None else
                                           f"AUROC {m['auroc']:.4f}  FPR95 {m['fpr95']:.4f}  "
                                           f"(ID {m['n_id']}, OOD {m['n_ood']})"))
    print(f"Y_pos: +{len(y['added'])} -{len(y['removed'])} ={len(y['kept'])}")
    for t in y["added"]:
        print(f"  + {t}")
    for t in y["removed"]:
        print(f"  - {t}")
    ari = "-" if c["ari"] is None else f"{c['ari']:.3f}"
    mf = "-" if c["matched_fraction"] is None else f"{c['matched_fraction']:.0%}"
    print(f"clusters: ARI {ari} on {c['n_shared']} shared mined images; matched clusters hold {mf} of them")
    mean = "-" if h["mean"] is None else f"{h['mean']:+.4f}"
    print(f"held-out score shift (B - A): mean {mean} over {h['n']} images; verdict changes: "
          + ("-" if h["verdict_changes"] is None else
             f"{h['verdict_changes']} ({h['id_to_ood']} ID->OOD, {h['ood_to_id']} OOD->ID)"))
    if d["ood_shift"]:
        o = d["ood_shift"]
        print(f"OOD score shift (B - A): mean {o['mean']:+.4f} over {o['n']} images; verdict changes: "
              + ("-" if o["verdict_changes"] is None else
                 f"{o['verdict_changes']} ({o['id_to_ood']} ID->OOD, {o['ood_to_id']} OOD->ID)"))
    print(f"images: {d['images']['text']}")
    print("settings that differ: " + (", ".join(f"{k}: {v[0]!r} -> {v[1]!r}" for k, v in d["settings"].items())
                                      or "none"))
    return 0


def _cmd_verify(a: argparse.Namespace) -> int:
    state = log_state(Run.open(a.run_dir, require_complete=False))
    if a.json:
        print(json.dumps(state.to_dict(), indent=2))
    else:
        print(state.message())
        for s in state.logs:
            head = f" (head {s.head[:16]}…)" if s.head else ""
            print(f"  {s.log}: {s.message()}{head}")
        if state.kind == "unchained" or (state.ok and any(s.unchained for s in state.logs)):
            print("note: entries written before ClusterMine chained its logs carry no hash and cannot be "
                  "verified; every new decision is chained")
    return 0 if state.ok else 1


def _cmd_cluster(a: argparse.Namespace) -> int:
    address = _ray(a)
    if address is None:
        raise ClusterMineError(f"no Ray cluster named: pass --ray ADDRESS or set {RAY_ADDRESS_ENV}")
    with RayCluster(address) as cluster:
        info = cluster.info
    if a.json:
        print(json.dumps(info.to_dict(), indent=2))
        return 0
    print(f"Ray cluster: {info.describe()} (connected in {info.connect_s:.1f} s)")
    for n in info.nodes:
        print(f"  {n.address}\t{n.cpus:g} CPUs\t{n.gpus:g} GPUs\t{'head' if n.is_head else 'worker'}\t{n.node_id[:12]}")
    return 0


def _cmd_purity(a: argparse.Namespace) -> int:
    res = purity_diagnostics(Run.open(a.run_dir))
    if a.json:
        print(json.dumps(res, indent=2))
        return 0
    if res is None:
        print("no folder labels: the images are not in class subfolders (or all in one class)")
        return 0
    print(f"ACC {res['acc']:.4f}  NMI {res['nmi']:.4f}  ARI {res['ari']:.4f}  ({res['n_images']} clustered images, "
          f"{len(res['classes'])} classes, {res['n_clusters']} clusters; {res['label_rule']})")
    if res["n_unlabelled"]:
        print(f"{res['n_unlabelled']} clustered images have no class folder and are left out")
    print("cluster\tsize\tmajority\tshare\tclasses (count)\tname")
    for c in res["clusters"]:
        merged = ", ".join(f"{k} ({v})" for k, v in c["counts"].items())
        print(f"{c['cluster']}\t{c['size']}\t{c['majority']}\t{c['share']:.0%}\t{merged}\t{c['name']}")
    return 0


def _cmd_sweep(a: argparse.Namespace) -> int:
    if a.seed != MineConfig.seed:
        raise ClusterMineError("sweep: give the seeds with --seeds S1 S2 ..., not --seed")
    config = config_from_args(a)

    def progress(i: int, n: int, label: str, what: str) -> None:
        print(f"{label}: {what}" if i == 0 else f"cell {i}/{n} {label}: {what}", file=sys.stderr, flush=True)

    res = sweep(a.images_dir, a.out, id_dir=a.id_dir, ood=parse_named_folders(a.ood), grid=parse_grid(a.grid),
                seeds=a.seeds, config=config, clusterer_params=config.clusterer_params, cache_dir=a.cache_dir,
                keep_runs=not a.discard_runs, progress=None if a.json else progress)
    if a.json:
        print(json.dumps(res, indent=2))
        return 0
    print(results_table(res))
    print(f"{res['computed']} cells computed, {res['skipped']} finished earlier; mean ± sd over seeds "
          f"(sample sd). Results: {res['files']['json']}, {res['files']['csv']}, {res['files']['cells_csv']}")
    return 0


_COMMANDS = {"mine": _cmd_mine, "resume": _cmd_resume, "prepare": _cmd_prepare, "score": _cmd_score, "evaluate": _cmd_evaluate, "concepts": _cmd_concepts,
             "export": _cmd_export, "report": _cmd_report, "search": _cmd_search, "label": _cmd_label,
             "delete": _cmd_delete, "exclude": _cmd_exclude, "remine": _cmd_remine, "stability": _cmd_stability,
             "diff": _cmd_diff, "compare": _cmd_diff, "cluster": _cmd_cluster, "verify": _cmd_verify,
             "purity": _cmd_purity, "sweep": _cmd_sweep}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _COMMANDS[args.verb](args)
    except CancelledError as exc:
        print(f"cancelled: {exc}", file=sys.stderr)
        return 130
    except ClusterMineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished work is kept in the run folder", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

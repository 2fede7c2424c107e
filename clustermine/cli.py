"""Command-line interface: the same verbs as the web app (mine, score, evaluate, concepts, export).

User errors print one line (``error: ...``) and exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from .errors import CancelledError, ClusterMineError
from .rundir import layout


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clustermine", description="Label-free OOD detection by mining concepts from "
                                "clusters of your in-distribution images (ClusterMine).")
    sub = p.add_subparsers(dest="verb", required=True)

    m = sub.add_parser("mine", help="encode a folder of ID images, cluster, vote and mine concepts into a run folder")
    m.add_argument("images_dir")
    m.add_argument("--out", required=True, help="run folder to create (or resume)")
    m.add_argument("--encoder", default="offline",
                   help="offline (default) or openclip:ARCH:TAG | openclip:hf-hub:ORG/REPO | openclip:local-dir:PATH | "
                        "openclip:ARCH@CHECKPOINT")
    m.add_argument("--clusters", type=int, default=None, help="number of clusters C (default: from the image count)")
    m.add_argument("--clusterer", default="temi", choices=["temi", "kmeans"])
    m.add_argument("--corpus", default="wordnet-nouns",
                   help="wordnet-nouns | wordnet-nouns-adjectives | wordnet-nouns-first-lemma | PATH (one concept per line)")
    m.add_argument("--template", default=None, help="prompt template with {} for the concept (default: the encoder's)")
    m.add_argument("--tau", type=float, default=0.01)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--holdout", type=float, default=0.1, help="fraction of images held out to calibrate the threshold")
    m.add_argument("--device", default="auto")
    m.add_argument("--batch-size", type=int, default=32)
    m.add_argument("--max-pixels", type=int, default=None, help="decompression-bomb guard (pixels per image)")
    m.add_argument("--cache-dir", default=None, help="feature / text-embedding cache (default ~/.cache/clustermine)")
    m.add_argument("--force", action="store_true", help="replace a finished run in --out (the old one is moved aside)")
    m.add_argument("--quiet", action="store_true")

    s = sub.add_parser("score", help="score images (files or folders) with a run's current concepts")
    s.add_argument("run_dir")
    s.add_argument("paths", nargs="+")
    s.add_argument("--top", type=int, default=3)
    s.add_argument("--json", action="store_true")

    e = sub.add_parser("evaluate", help="AUROC / FPR95 / AUPR of a run: ID folder vs OOD folder")
    e.add_argument("run_dir")
    e.add_argument("--id", required=True, dest="id_dir")
    e.add_argument("--ood", required=True, dest="ood_dir")
    e.add_argument("--cache-dir", default=None)
    e.add_argument("--json", action="store_true")

    c = sub.add_parser("concepts", help="list or edit the mined concepts (Y_pos)")
    c.add_argument("run_dir")
    c.add_argument("--accept", action="append", default=[], metavar="CONCEPT")
    c.add_argument("--reject", action="append", default=[], metavar="CONCEPT")
    c.add_argument("--restore", action="append", default=[], metavar="CONCEPT")
    c.add_argument("--add", action="append", default=[], metavar="CONCEPT")
    c.add_argument("--user", default=None)
    c.add_argument("--json", action="store_true")

    x = sub.add_parser("export", help="write the detector bundle and concept lists of a run")
    x.add_argument("run_dir")
    x.add_argument("--out", required=True)
    return p


class _Bars:
    """One tqdm bar per pipeline stage."""

    def __init__(self, quiet: bool) -> None:
        self.quiet, self.bar, self.stage = quiet, None, None

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
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _cmd_mine(a: argparse.Namespace) -> int:
    from .pipeline import MineConfig, mine

    cfg = MineConfig(encoder=a.encoder, n_clusters=a.clusters, clusterer=a.clusterer, corpus=a.corpus,
                     template=a.template, tau=a.tau, seed=a.seed, holdout_fraction=a.holdout, device=a.device,
                     batch_size=a.batch_size, max_pixels=a.max_pixels)
    bars = _Bars(a.quiet)
    try:
        run = mine(a.images_dir, a.out, cfg, progress=bars, overwrite=a.force, cache_dir=a.cache_dir)
    finally:
        bars.close()
    s = run.meta["summary"]
    print(f"run: {run.path}")
    print(f"images used: {s['n_images']} (mining {s['n_mining']}, held out {s['n_holdout']}), "
          f"skipped: {s['n_skipped']}, duplicates: {s['n_duplicates']}")
    print(f"clusters: {s['n_clusters']} ({s['n_occupied']} occupied), |Y_pos|: {s['n_positive']}, "
          f"mean purity: {s['mean_purity']:.3f}, corpus: {s['corpus_size']} concepts")
    if s.get("clamp_warning"):
        print(f"note: {s['clamp_warning']}")
    skipped = [r for r in run.image_records() if r["status"] != "ok"]
    for r in skipped[:20]:
        print(f"skipped {r['path']}: {r['reason']}")
    if len(skipped) > 20:
        print(f"... and {len(skipped) - 20} more skipped files (see {run.file(layout.IMAGES)})")
    print("Y_pos: " + ", ".join(run.positive_concepts()))
    return 0


def _calibration_warning(run) -> None:
    """Issue 12: say on stderr when the calibration set is too small for the default 95 % TPR."""
    from .whatif import calibration_warning

    if len(run.vocabulary()[2]):
        msg = calibration_warning(run, 0.95)
        if msg:
            print(f"warning: {msg}", file=sys.stderr)


def _cmd_score(a: argparse.Namespace) -> int:
    from .pipeline import score_images
    from .runs import Run

    run = Run.open(a.run_dir)
    results = score_images(run, a.paths, top=a.top)
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


def _cmd_evaluate(a: argparse.Namespace) -> int:
    from .pipeline import evaluate
    from .runs import Run

    run = Run.open(a.run_dir)
    res = evaluate(run, a.id_dir, a.ood_dir, cache_dir=a.cache_dir)
    _calibration_warning(run)
    if a.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"AUROC {res['auroc']:.4f}  FPR95 {res['fpr95']:.4f}  AUPR-In {res['aupr_in']:.4f}  "
              f"AUPR-Out {res['aupr_out']:.4f}  (ID {res['n_id']}, OOD {res['n_ood']}, |Y_pos| {res['n_positive']})")
    return 0


def _cmd_concepts(a: argparse.Namespace) -> int:
    from .runs import Run

    run = Run.open(a.run_dir)
    for action in ("accept", "reject", "restore", "add"):
        for key in getattr(a, action):
            c = run.edit_concept(action, key, user=a.user)
            if not a.json:
                print(f"{action}: {c.text} -> {c.status}")
    concepts = run.concepts()
    if a.json:
        print(json.dumps([c.to_dict() for c in concepts], indent=2))
        return 0
    print(f"{'id':<14} {'status':<9} {'votes':>5} {'purity':>6}  concept (clusters)")
    for c in concepts:
        pur = f"{c.purity:.2f}" if c.purity is not None else "-"
        print(f"{c.id:<14} {c.status:<9} {c.votes:>5} {pur:>6}  {c.text} {c.clusters if c.clusters else ''}")
    print(f"|Y_pos| = {sum(c.is_positive for c in concepts)}")
    return 0


def _cmd_export(a: argparse.Namespace) -> int:
    from .export import export_run
    from .runs import Run

    out = export_run(Run.open(a.run_dir), a.out)
    print(f"exported to {out}")
    return 0


_COMMANDS = {"mine": _cmd_mine, "score": _cmd_score, "evaluate": _cmd_evaluate, "concepts": _cmd_concepts,
             "export": _cmd_export}


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

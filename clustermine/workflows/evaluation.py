"""The evaluation protocol: runs vs one ID set and several named OOD sets, with uncertainty and baselines.

:func:`evaluate_sets` is the one implementation behind ``clustermine evaluate`` (and
:func:`clustermine.workflows.pipeline.evaluate`, the single-set form):

* a *source* is an image folder (encoded once through the feature cache, so a second evaluation does
  not re-encode) or precomputed features (a ``.npy`` [N, D] or a clip-retrieval folder, checked as
  ``mine --features`` checks them; no paths file needed: rows are only scored);
* every run is scored through its detector (:func:`clustermine.workflows.whatif.run_detector`, the
  one scoring path); one row per (method, run, OOD set) and a ``mean`` row per (method, run) when
  there are several sets: AUROC, FPR95 (ID positive, Hendrycks' rule), AUPR-in, AUPR-out
  (:mod:`clustermine.method.metrics`); optional OpenOOD v1.5 FPR@95TPR (OOD positive) as
  ``fpr95_openood``; optional seeded bootstrap 95 % percentile intervals ``auroc_ci`` / ``fpr95_ci``;
* several runs (seeds): per-run rows, then rows with the mean and ``*_sd`` (population sd, ddof 0,
  as the benchmark tables) over runs;
* with the true class names: the label-based baselines MCM (τ = 1), NegLabel (NegMining 15 %,
  η = 0.95 percentile, the run's τ, one group) and ClusterMine with the true names as Y_pos (Y_neg =
  the run's corpus minus those names, the run's τ) — :func:`baseline_scores`, which the benchmark
  scripts call too.
"""

from __future__ import annotations

import csv
import io
import json
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Hashable

import numpy as np

from clustermine.core.errors import ClusterMineError, NoImagesError
from clustermine.method import metrics as _metrics
from clustermine.method.corpus import embed_concepts
from clustermine.method.encoders import load_encoder
from clustermine.method.feature_input import iter_normalized_chunks, load_feature_source, validate_features
from clustermine.method.scoring import log_scores, mcm_scores, neg_mining, neglabel_scores
from clustermine.store import Run
from clustermine.workflows.diagnostics import purity_diagnostics
from clustermine.workflows.distributed import RayCluster
from clustermine.workflows.encoding import load_folder
from clustermine.workflows.whatif import run_detector

LABEL_FREE = "ClusterMine"
MCM = "MCM"
NEGLABEL = "NegLabel"
TRUE_NAMES = "ClusterMine, true names as Y_pos"
BASELINES = (MCM, NEGLABEL, TRUE_NAMES)
MCM_TAU = 1.0  # MCM's paper setting
NEGMINING_PERCENTILE = 0.95  # NegLabel's η
NEGMINING_FRACTION = 0.15  # NegLabel's share of the candidate words kept as negatives
FPR_CONVENTIONS = ("hendrycks", "openood")
METRIC_KEYS = ("auroc", "fpr95", "fpr95_openood", "aupr_in", "aupr_out")
FORMATS = ("table", "json", "csv", "markdown", "latex")
MEAN = "mean"
FOLDERS = "folders"  # --class-names folders: the ID folder's subfolder names, cleaned


# ----------------------------------------------------------------------------- inputs
def parse_ood_specs(specs: Sequence[str]) -> tuple[dict[str, str], bool]:
    """``--ood`` values → ({set name: path}, whether any was given as NAME=PATH).

    ``NAME=PATH`` names the set; a bare ``PATH`` (also when the whole text is an existing path, so a
    folder with ``=`` in its name works) is named after the folder / file name."""
    out: dict[str, str] = {}
    named = False
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or Path(spec).exists():
            name, path = Path(spec).name or spec, spec
        else:
            named = True
            name, path = name.strip(), path.strip()
            if not name or not path:
                raise ClusterMineError(f"--ood {spec!r}: expected NAME=DIR (or a single DIR)")
        if name == MEAN:
            raise ClusterMineError(f"--ood {spec!r}: {MEAN!r} is the name of the mean row; choose another name")
        if name in out:
            raise ClusterMineError(f"--ood {spec!r}: two OOD sets are named {name!r}; give each NAME=DIR its own name")
        out[name] = path
    if not out:
        raise ClusterMineError("evaluate: give at least one --ood [NAME=]DIR")
    return out, named


def is_feature_source(path: str | Path) -> bool:
    """A file (``.npy`` features), or a clip-retrieval output folder (``img_emb/``), not an image folder."""
    p = Path(path)
    return p.is_file() or (p.is_dir() and ((p / "img_emb").is_dir() or p.name == "img_emb"))


def class_subfolders(id_source: str | Path) -> list[str]:
    """Sorted names of the ID folder's non-hidden subfolders (its classes); [] for features or a flat folder."""
    p = Path(id_source)
    if not p.is_dir() or is_feature_source(p):
        return []
    return sorted(d.name for d in p.iterdir() if d.is_dir() and not d.name.startswith("."))


def clean_class_name(folder: str) -> str:
    """Folder name → class name: ``_`` to space, lowercase (the benchmarks' rule, e.g. ``Water_lilly``)."""
    return folder.replace("_", " ").lower()


def read_class_names(spec: str | Path, id_source: str | Path) -> list[str]:
    """The true ID class names for the baselines.

    ``spec`` is ``folders`` (the ID folder's subfolder names, :func:`clean_class_name`) or a UTF-8
    text file, blank lines ignored, either

    * one class name per line; when the ID folder has class subfolders there must be one name per
      subfolder, in the sorted order of their names (Python's: uppercase first), or
    * a mapping, one ``folder<TAB>name`` per line (every line with a TAB): each subfolder of the ID
      folder must be listed; extra lines are ignored (one file can serve several subsets).
    """
    subfolders = class_subfolders(id_source)
    if str(spec) == FOLDERS:
        if not subfolders:
            raise ClusterMineError(f"--class-names folders: {id_source} has no class subfolders; give a file "
                                   f"with one class name per line")
        return [clean_class_name(f) for f in subfolders]
    path = Path(spec)
    if not path.is_file():
        raise ClusterMineError(f"{path}: class-names file not found")
    try:
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8-sig").splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise ClusterMineError(f"{path}: unreadable class-names file ({exc}); save it as UTF-8 text") from None
    lines = [ln for ln in lines if ln]
    if not lines:
        raise ClusterMineError(f"{path}: no class names (the file is empty); write one class name per line")
    if any("\t" in ln for ln in lines):
        bad = [ln for ln in lines if "\t" not in ln]
        if bad:
            raise ClusterMineError(f"{path}: mixes mapping lines (folder<TAB>name) with plain lines, e.g. {bad[0]!r}")
        mapping = {}
        for ln in lines:
            folder, _, name = ln.partition("\t")
            mapping[folder.strip()] = name.strip()
        if not subfolders:
            raise ClusterMineError(f"{path}: a folder<TAB>name mapping needs an ID folder with class subfolders; "
                                   f"{id_source} has none (give one class name per line instead)")
        missing = [f for f in subfolders if not mapping.get(f)]
        if missing:
            raise ClusterMineError(f"{path}: no class name for the ID subfolder(s) {', '.join(missing[:5])}"
                                   f"{' …' if len(missing) > 5 else ''} of {id_source}")
        return [mapping[f] for f in subfolders]
    if subfolders and len(lines) != len(subfolders):
        raise ClusterMineError(f"{path}: {len(lines)} class names, but the ID folder {id_source} has "
                               f"{len(subfolders)} class subfolders; give one name per subfolder, in sorted order")
    return lines


def load_source(path: str | Path, encoder, *, cache_dir: str | Path | None = None, cluster=None,
                role: str = "") -> np.ndarray:
    """Features float32 [N, D] of an image folder (feature cache: each image is encoded once, ever)
    or of precomputed features (checked as ``mine --features``; rows L2-normalised)."""
    p = Path(path)
    if not p.exists():
        raise NoImagesError(f"{p}: {role + ' ' if role else ''}folder or features file not found")
    if is_feature_source(p):
        src = load_feature_source(p, need_paths=False)
        validate_features(src, encoder.dim, encoder_name=getattr(encoder, "spec", None))
        feats = np.empty((src.n, src.d), dtype=np.float32)
        for start, block in iter_normalized_chunks(src):
            feats[start:start + len(block)] = block
        return feats
    return load_folder(p, encoder, cache_dir=cache_dir, cluster=cluster)[1]


# ----------------------------------------------------------------------------- baselines
def baseline_scores(feature_sets: Mapping[Hashable, np.ndarray], class_embeddings: np.ndarray,
                    vocab_embeddings: np.ndarray, tau: float, *, vocab_concepts: Sequence[str] | None = None,
                    class_names: Sequence[str] | None = None, methods: Sequence[str] = BASELINES,
                    ) -> tuple[dict[str, dict[Hashable, np.ndarray]], dict[str, dict]]:
    """Scores (higher = more ID) of the label-based baselines on every feature set.

    ``class_embeddings`` float32 [K, D]: the true class names embedded with the corpus template;
    ``vocab_embeddings`` float32 [M, D]: the corpus; ``tau``: the run's score temperature.

    * MCM: log of the max softmax over the class names at τ = 1 (:func:`~clustermine.method.scoring.mcm_scores`);
    * NegLabel: Y_pos = the class names, Y_neg = NegMining over the corpus (15 %, η = 0.95), τ, one group;
    * ClusterMine, true names as Y_pos: log S with Y_pos = the class names and Y_neg = the corpus minus
      any concept whose text is a class name (case-insensitive; ``vocab_concepts`` / ``class_names``).

    Returns ({method: {set key: float64 [N]}}, {method: {"n_pos", "n_neg"}}).
    """
    cls = np.asarray(class_embeddings, dtype=np.float32)
    k = cls.shape[0]
    scores: dict[str, dict[Hashable, np.ndarray]] = {}
    info: dict[str, dict] = {}
    if MCM in methods:
        scores[MCM] = {key: np.log(mcm_scores(f, cls, tau=MCM_TAU)) for key, f in feature_sets.items()}
        info[MCM] = {"n_pos": k, "tau": MCM_TAU}
    if NEGLABEL in methods:
        negs = neg_mining(cls, vocab_embeddings, NEGMINING_PERCENTILE, NEGMINING_FRACTION)
        scores[NEGLABEL] = {key: neglabel_scores(f, cls, vocab_embeddings[negs], tau=tau)
                            for key, f in feature_sets.items()}
        info[NEGLABEL] = {"n_pos": k, "n_neg": int(len(negs)), "tau": tau}
    if TRUE_NAMES in methods:
        keep = np.arange(len(vocab_embeddings))
        if vocab_concepts is not None and class_names is not None:
            names = {n.lower() for n in class_names}
            keep = np.array([i for i, c in enumerate(vocab_concepts) if c.lower() not in names], dtype=np.int64)
        text = np.concatenate([cls, np.asarray(vocab_embeddings, dtype=np.float32)[keep]])
        pos = np.arange(k)
        scores[TRUE_NAMES] = {key: log_scores(f, text, pos, tau) for key, f in feature_sets.items()}
        info[TRUE_NAMES] = {"n_pos": k, "n_neg": int(len(keep)), "tau": tau}
    return scores, info


# ----------------------------------------------------------------------------- rows
def metric_rows(id_scores: np.ndarray, ood_scores: Mapping[str, np.ndarray], *, bootstrap: int = 0, seed: int = 0,
                fpr_convention: str = "hendrycks", **labels: Any) -> list[dict]:
    """One row per OOD set (keys ``name``, ``auroc``, ``fpr95``, [``fpr95_openood``], ``aupr_in``,
    ``aupr_out``, ``n_id``, ``n_ood``, [``auroc_ci``, ``fpr95_ci``] and ``labels``) and, for several
    sets, a ``mean`` row (metrics averaged, ``n_ood`` summed; its intervals come from the mean of the
    sets' replicates: one ID resample per replicate shared by every set, each OOD set drawn on its own)."""
    if fpr_convention not in FPR_CONVENTIONS:
        raise ClusterMineError(f"--fpr-convention {fpr_convention!r}: choose one of {', '.join(FPR_CONVENTIONS)}")
    rows, reps = [], {}
    for name, ood in ood_scores.items():
        m = _metrics.ood_metrics(id_scores, ood)
        row = {"name": name, "auroc": m["auroc"], "fpr95": m["fpr95"]}
        if fpr_convention == "openood":
            row["fpr95_openood"] = _metrics.fpr95_openood(id_scores, ood)
        row.update(aupr_in=m["aupr_in"], aupr_out=m["aupr_out"], n_id=m["n_id"], n_ood=m["n_ood"])
        if bootstrap:
            # the OOD stream follows the set's name, so a set's interval does not depend on the other sets
            reps[name] = _metrics.bootstrap_ood(id_scores, ood, bootstrap, seed, stream=zlib.crc32(name.encode()))
            row["auroc_ci"] = _metrics.percentile_interval(reps[name]["auroc"])
            row["fpr95_ci"] = _metrics.percentile_interval(reps[name]["fpr95"])
        rows.append({**row, **labels})
    if len(rows) > 1:
        mean = {"name": MEAN}
        for key in METRIC_KEYS:
            if key in rows[0]:
                mean[key] = float(np.mean([r[key] for r in rows]))
        mean.update(n_id=rows[0]["n_id"], n_ood=int(sum(r["n_ood"] for r in rows)))
        if bootstrap:
            for key in ("auroc", "fpr95"):
                mean[f"{key}_ci"] = _metrics.percentile_interval(np.mean([reps[n][key] for n in reps], axis=0))
        rows.append({**mean, **labels})
    return rows


def runs_summary(rows: list[dict], n_runs: int) -> list[dict]:
    """Per OOD set (and ``mean``): mean and ``<metric>_sd`` (ddof 0) over the per-run label-free rows."""
    out = []
    names = list(dict.fromkeys(r["name"] for r in rows))
    for name in names:
        group = [r for r in rows if r["name"] == name]
        row: dict[str, Any] = {"name": name}
        for key in METRIC_KEYS:
            if key in group[0]:
                vals = np.array([r[key] for r in group], dtype=np.float64)
                row[key], row[f"{key}_sd"] = float(vals.mean()), float(vals.std(ddof=0))
        row.update(n_id=group[0]["n_id"], n_ood=group[0]["n_ood"], method=LABEL_FREE,
                   run=f"mean ± sd of {n_runs} runs", label_based=False, n_runs=n_runs)
        out.append(row)
    return out


# ----------------------------------------------------------------------------- the evaluation
@dataclass
class Evaluation:
    """What :func:`evaluate_sets` found.

    ``rows``: the table (JSON-ready dicts, metrics as fractions); ``scores``: the raw log-scores of
    the label-free detector of the first run, float64, keys ``"id"`` and ``"ood/<set name>"``;
    ``scores_by_run``: the same per run (by run folder name)."""

    rows: list[dict]
    scores: dict[str, np.ndarray]
    scores_by_run: dict[str, dict[str, np.ndarray]]
    runs: list[str]
    n_positive: dict[str, int]
    ood_names: list[str]
    fpr_convention: str = "hendrycks"
    bootstrap: int = 0
    seed: int = 0
    class_names: list[str] | None = None
    baseline_info: dict[str, dict] = field(default_factory=dict)
    #: run name -> clustering ACC / NMI / ARI against the run's folder labels (None: no labels)
    purity: dict[str, dict | None] = field(default_factory=dict)

    def to_json(self) -> dict:
        """The ``--json`` document: the rows and how they were computed (no score arrays)."""
        doc = {"rows": self.rows, "runs": self.runs, "ood_sets": self.ood_names, "n_positive": self.n_positive,
               "fpr95_variant": _metrics.FPR95_RULE}
        if self.fpr_convention == "openood":
            doc["fpr95_openood_variant"] = _metrics.FPR95_OPENOOD_RULE
        if self.bootstrap:
            doc["bootstrap"] = {"replicates": self.bootstrap, "seed": self.seed,
                                "interval": "95 % percentile; ID and OOD resampled independently"}
        if self.class_names is not None:
            doc["class_names"] = self.class_names
            doc["baselines"] = self.baseline_info
        if any(v is not None for v in self.purity.values()):
            doc["purity"] = self.purity
        return doc

    def purity_lines(self) -> list[str]:
        """One line per run whose images sit in class folders: its clustering against those labels."""
        return [f"clustering vs folder labels, {name}: ACC {p['acc']:.3f}  NMI {p['nmi']:.3f}  ARI {p['ari']:.3f} "
                f"({p['n_images']} images, {p['n_clusters']} clusters, {p['n_classes']} classes)"
                for name, p in self.purity.items() if p is not None]


def _scorer(detector, cluster):
    return detector.log_scores if cluster is None else (lambda f: cluster.log_scores(detector, f))


def evaluate_sets(runs: Sequence[Run], id_source: str | Path, ood_sources: Mapping[str, str | Path], *,
                  class_names: Sequence[str] | None = None, bootstrap: int = 0, seed: int = 0,
                  fpr_convention: str = "hendrycks", cache_dir: str | Path | None = None, encoder=None,
                  ray_address: str | None = None, purity: bool = True) -> Evaluation:
    """Evaluate ``runs`` (one or more, e.g. seeds; same encoder) on ``id_source`` vs every named OOD
    source. Each source (folder or features) is loaded once; every run scores through its detector.
    ``class_names``: the true ID class names → the baseline rows (computed with the first run's
    encoder, corpus, template and τ). ``bootstrap``: replicates per row (0 = no intervals).
    ``purity``: also each run's clustering against its folder labels (:func:`run_purity`); off where
    nothing shows it (the one-set answer)."""

    if not runs:
        raise ClusterMineError("evaluate: give at least one run")
    if not ood_sources:
        raise ClusterMineError("evaluate: give at least one OOD set")
    if fpr_convention not in FPR_CONVENTIONS:
        raise ClusterMineError(f"--fpr-convention {fpr_convention!r}: choose one of {', '.join(FPR_CONVENTIONS)}")
    if bootstrap < 0:
        raise ClusterMineError(f"--bootstrap {bootstrap}: the number of replicates must be 0 (none) or more")
    for path, role in [(id_source, "--id")] + [(p, f"--ood {n}") for n, p in ood_sources.items()]:
        if not Path(path).exists():
            raise NoImagesError(f"{path}: {role}: folder or features file not found")
    detectors = [run_detector(r) for r in runs]
    first = detectors[0]
    encoder = encoder or load_encoder(first.encoder_spec or runs[0].encoder_spec)
    for run, det in zip(runs, detectors):
        try:
            det.check_encoder(encoder)
        except ClusterMineError as exc:
            raise ClusterMineError(f"{run.path}: {exc}") from None
    names = [run.path.name for run in runs]
    if len(set(names)) != len(names):
        names = [str(run.path) for run in runs]
    with (RayCluster(ray_address) if ray_address else _NoCluster()) as cluster:
        loaded: dict[Path, np.ndarray] = {}

        def feats(path) -> np.ndarray:  # one load per distinct source, even when named twice
            key = Path(path).resolve()
            if key not in loaded:
                loaded[key] = load_source(path, encoder, cache_dir=cache_dir, cluster=cluster)
            return loaded[key]

        id_feats = feats(id_source)
        ood_feats = {n: feats(p) for n, p in ood_sources.items()}
        rows: list[dict] = []
        by_run: dict[str, dict[str, np.ndarray]] = {}
        for name, det in zip(names, detectors):
            score = _scorer(det, cluster)
            s_id, s_ood = score(id_feats), {n: score(f) for n, f in ood_feats.items()}
            by_run[name] = {"id": s_id, **{f"ood/{n}": s for n, s in s_ood.items()}}
            rows += metric_rows(s_id, s_ood, bootstrap=bootstrap, seed=seed, fpr_convention=fpr_convention,
                                method=LABEL_FREE, run=name, label_based=False)
    if len(runs) > 1:
        rows += runs_summary(list(rows), len(runs))
    info: dict[str, dict] = {}
    if class_names is not None:
        class_names = [str(c) for c in class_names]
        if not class_names:
            raise ClusterMineError("--class-names: no class names given")
        template = runs[0].config.get("template") or encoder.text_template
        cls_emb = embed_concepts(encoder, class_names, template)
        vocab_emb = runs[0].text_embeddings()
        sets = {"id": id_feats, **{f"ood/{n}": f for n, f in ood_feats.items()}}
        base, info = baseline_scores(sets, cls_emb, vocab_emb, first.tau, vocab_concepts=first.concepts[:len(vocab_emb)],
                                     class_names=class_names)
        for method, sc in base.items():
            rows += metric_rows(sc["id"], {n: sc[f"ood/{n}"] for n in ood_sources}, bootstrap=bootstrap, seed=seed,
                                fpr_convention=fpr_convention, method=method, run=None, label_based=True)
    return Evaluation(rows=rows, scores=by_run[names[0]], scores_by_run=by_run, runs=names,
                      n_positive={n: int(len(d.positive_idx)) for n, d in zip(names, detectors)},
                      ood_names=list(ood_sources), fpr_convention=fpr_convention, bootstrap=bootstrap, seed=seed,
                      class_names=list(class_names) if class_names is not None else None, baseline_info=info,
                      purity={n: run_purity(run) for n, run in zip(names, runs)} if purity else {})


def run_purity(run: Run) -> dict | None:
    """ACC / NMI / ARI of ``run``'s clustering against its images' class folders
    (:func:`~clustermine.workflows.diagnostics.purity_diagnostics`), or None without labels."""
    d = purity_diagnostics(run)
    if d is None:
        return None
    return {"acc": d["acc"], "nmi": d["nmi"], "ari": d["ari"], "n_images": d["n_images"],
            "n_clusters": d["n_clusters"], "n_classes": len(d["classes"])}


class _NoCluster:
    """``with`` stand-in for local work (Ray is then never imported)."""

    def __enter__(self):
        return None

    def __exit__(self, *exc) -> None:
        return None


def evaluate_single(run: Run, id_dir: str | Path, ood_dir: str | Path, *, encoder=None,
                    cache_dir: str | Path | None = None, ray_address: str | None = None) -> dict:
    """One OOD set, the original ``evaluate`` answer: auroc, fpr95, aupr_in, aupr_out, n_id, n_ood,
    n_positive, fpr95_variant."""
    ev = evaluate_sets([run], id_dir, {Path(ood_dir).name or "ood": ood_dir}, encoder=encoder, cache_dir=cache_dir,
                       ray_address=ray_address, purity=False)
    return single_result(ev)


def single_result(ev: Evaluation) -> dict:
    """The original one-set ``evaluate`` answer from the first row of ``ev`` (one run, one OOD set)."""
    row = ev.rows[0]
    res: dict[str, Any] = {k: row[k] for k in ("auroc", "fpr95", "aupr_in", "aupr_out", "n_id", "n_ood")}
    res["n_positive"] = ev.n_positive[ev.runs[0]]
    res["fpr95_variant"] = _metrics.FPR95_RULE
    return res


# ----------------------------------------------------------------------------- output
def _method_label(row: dict) -> str:
    return f"{row['method']} (label-based)" if row.get("label_based") else row["method"]


def _cell(row: dict, key: str, *, latex: bool = False) -> str:
    """A metric in % with 2 decimals; ``± sd`` over runs, ``[low, high]`` with a bootstrap interval."""
    if key not in row or row[key] is None:
        return "—" if not latex else "--"
    text = f"{100 * row[key]:.2f}"
    if f"{key}_sd" in row:
        text += (" $\\pm$ " if latex else " ± ") + f"{100 * row[f'{key}_sd']:.2f}"
    if f"{key}_ci" in row:
        lo, hi = row[f"{key}_ci"]
        text += f" [{100 * lo:.2f}, {100 * hi:.2f}]"
    return text


def display_table(ev: Evaluation, *, latex: bool = False) -> tuple[list[str], list[list[str]]]:
    """Header and rows of text cells (metrics in %) for the terminal, Markdown and LaTeX tables."""
    many_runs = len(ev.runs) > 1
    keys = ["auroc", "fpr95"] + (["fpr95_openood"] if ev.fpr_convention == "openood" else []) + ["aupr_in", "aupr_out"]
    titles = {"auroc": "AUROC %", "fpr95": "FPR95 %", "fpr95_openood": "FPR95 (OpenOOD) %",
              "aupr_in": "AUPR-In %", "aupr_out": "AUPR-Out %"}
    header = ["method"] + (["run"] if many_runs else []) + ["OOD set"] + [titles[k] for k in keys] + ["n ID", "n OOD"]
    body = []
    for r in ev.rows:
        cells = [_method_label(r)] + ([r.get("run") or "—"] if many_runs else []) + [r["name"]]
        cells += [_cell(r, k, latex=latex) for k in keys] + [str(r["n_id"]), str(r["n_ood"])]
        body.append(cells)
    return header, body


def _latex_escape(text: str) -> str:
    if "$\\pm$" in text:
        return text.replace("%", "\\%")
    for a, b in (("\\", "\\textbackslash{}"), ("&", "\\&"), ("%", "\\%"), ("_", "\\_"), ("#", "\\#"),
                 ("$", "\\$"), ("{", "\\{"), ("}", "\\}"), ("±", "$\\pm$")):
        text = text.replace(a, b)
    return text


def render(ev: Evaluation, fmt: str = "table") -> str:
    """The evaluation as ``table`` (terminal), ``json``, ``csv`` (fractions, one column per key,
    intervals as ``_low`` / ``_high``), ``markdown`` or ``latex`` (a ``tabular``)."""
    if fmt == "json":
        return json.dumps(ev.to_json(), indent=2)
    if fmt == "csv":
        flat = []
        for r in ev.rows:
            f: dict[str, Any] = {}
            for k, v in r.items():
                if isinstance(v, list):
                    f[f"{k}_low"], f[f"{k}_high"] = v
                else:
                    f[k] = v
            flat.append(f)
        cols = list(dict.fromkeys(["method", "label_based", "run", "name"] + [k for f in flat for k in f]))
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        w.writerows(flat)
        return buf.getvalue()
    if fmt == "markdown":
        header, body = display_table(ev)
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in body]
        return "\n".join(lines)
    if fmt == "latex":
        header, body = display_table(ev, latex=True)
        n_text = header.index("OOD set") + 1  # method, [run], OOD set: left-aligned; numbers right-aligned
        lines = ["\\begin{tabular}{" + "l" * n_text + "r" * (len(header) - n_text) + "}", "\\hline",
                 " & ".join(_latex_escape(h) for h in header) + " \\\\", "\\hline"]
        lines += [" & ".join(_latex_escape(c) for c in row) + " \\\\" for row in body]
        lines += ["\\hline", "\\end{tabular}"]
        return "\n".join(lines)
    if fmt == "table":
        header, body = display_table(ev)
        widths = [max(len(x) for x in col) for col in zip(header, *body)]
        fmt_row = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
        lines = [fmt_row(header), fmt_row(["-" * w for w in widths])] + [fmt_row(r) for r in body]
        notes = [f"FPR95: {_metrics.FPR95_RULE}"]
        if ev.fpr_convention == "openood":
            notes.append(f"FPR95 (OpenOOD): {_metrics.FPR95_OPENOOD_RULE}")
        if ev.bootstrap:
            notes.append(f"[low, high]: 95 % bootstrap percentile interval, {ev.bootstrap} replicates, seed {ev.seed}")
        notes.append("|Y_pos|: " + ", ".join(f"{k} {v}" for k, v in ev.n_positive.items()))
        notes += ev.purity_lines()
        return "\n".join(lines + [""] + notes)
    raise ClusterMineError(f"unknown output format {fmt!r}; choose one of {', '.join(FORMATS)}")

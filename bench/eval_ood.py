"""OOD benchmarks B1-B4 of issue 4 (offline encoder) and the ablations on B1/B2.

One command per table, e.g.::

    python bench/eval_ood.py --bench b1                # main table, 3 seeds
    python bench/eval_ood.py --bench b2
    python bench/eval_ood.py --bench b3 --seeds 0 1 2
    python bench/eval_ood.py --bench b4
    python bench/eval_ood.py --ablation C --bench b1   # C, tau, corpus, template, neg

Results: ``bench/results/<bench>[_<ablation>].json`` and the markdown block in BENCHMARKS.md.

Methods (all share the same image features, corpus embeddings and score code of the engine):
- ClusterMine-TEMI / ClusterMine-k-means: cluster the mining images (C = the engine's
  ``default_n_clusters`` rule unless --C), top-1 zero-shot over the corpus, plurality vote per
  cluster -> Y_pos; score = softmax mass on Y_pos over the whole corpus (Y_neg = corpus minus
  Y_pos), tau = 0.01, one group.
- PosMine-A (METHOD 3.4, variant A): the K most frequent per-image top-1 concepts, K = |Y_pos| of
  ClusterMine-TEMI with the same seed (size-matched); same score.
- MCM (oracle, true class names, tau = 1, engine ``mcm_scores``).
- NegLabel (oracle): Y_pos = true class names, Y_neg = NegMining over the corpus (15 %, eta = 0.95
  percentile), tau = 0.01, one group.
  Both through ``clustermine.workflows.evaluation.baseline_scores``, the rows of
  ``clustermine evaluate --class-names`` (one implementation).
- Random: |Y_pos| (of ClusterMine-TEMI, same seed) corpus words drawn uniformly (seeded); same score.

"Matched classes" rule (fixed before any result was seen, not tuned): a true class counts as
matched when some mined concept (a) is a WordNet noun synonym of the class name (shares a synset
with it; includes the exact string), or (b) its text embedding's nearest true-class-name embedding
is that class with cosine >= 0.7 (same template for both).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from common import (by_class, corpus_and_embeddings, encoder, folder_features, machine_info,  # noqa: E402
                    machine_line, mean_std, save_json, write_block)

import numpy as np  # noqa: E402

MATCH_COS = 0.7
CORPORA = ["wordnet-nouns", "wordnet-nouns-adjectives", "wordnet-nouns-first-lemma"]
TAU = 0.01
SECTION = "## Evaluation (issue 4)"


# ============================================================================ splits (deterministic)
def _class_name(folder: str) -> str:
    """Folder -> class name used by the oracles: lowercase, underscores to spaces, nothing else."""
    return folder.replace("_", " ").lower()


IMAGENETTE = {
    "n01440764": "tench", "n02102040": "English springer", "n02979186": "cassette player",
    "n03000684": "chain saw", "n03028079": "church", "n03394916": "French horn",
    "n03417042": "garbage truck", "n03425413": "gas pump", "n03445777": "golf ball", "n03888257": "parachute",
}
B1_ID = ["n01440764", "n02102040", "n02979186", "n03000684", "n03028079", "n03394916"]


def _rows(paths, classes, sel=lambda rows: rows):
    groups = by_class(paths)
    out, lab = [], []
    for c in classes:
        r = sel(groups[c])
        out += r
        lab += [c] * len(r)
    return np.array(out, dtype=np.int64), np.array(lab)


def split_b1() -> dict:
    tp, tf = folder_features("imagenette_train100")
    vp, vf = folder_features("imagenette_val100")
    wp, wf = folder_features("imagewoof_val80")
    dp, df = folder_features("dtd10")
    near = [c for c in sorted(IMAGENETTE) if c not in B1_ID]
    mr, ml = _rows(tp, B1_ID)
    ir, il = _rows(vp, B1_ID)
    nr, _ = _rows(vp, near)
    return {
        "name": "B1 Imagenette (6 ID classes)",
        "mine": tf[mr], "mine_labels": ml, "id_tests": {"imagenette-6 val": vf[ir]}, "id_labels": {"imagenette-6 val": il},
        "ood": {"imagenette-4 (near)": vf[nr], "imagewoof (dogs)": wf, "dtd10 (far)": df},
        "class_names": {c: IMAGENETTE[c] for c in B1_ID},
        "rule": "ID = 6 wnids, mining = all 100 train100 images of each (600), ID test = their 100 val100 images (600); "
                "OOD = the other 4 Imagenette val100 classes (400), imagewoof_val80 (800), dtd10 (600)",
    }


def split_b2() -> dict:
    p, f = folder_features("caltech101_sub")
    dp, df = folder_features("dtd10")
    classes = sorted(by_class(p), key=str.lower)  # case-insensitive sort, as in the data README
    idc, oodc = classes[:11], classes[11:]
    mr, ml = _rows(p, idc, lambda r: r[:40])
    ir, il = _rows(p, idc, lambda r: r[-20:])
    orr, _ = _rows(p, oodc)
    return {
        "name": "B2 Caltech-101 sub (11 ID classes)",
        "mine": f[mr], "mine_labels": ml, "id_tests": {"caltech-11 test": f[ir]}, "id_labels": {"caltech-11 test": il},
        "ood": {"caltech-10 other": f[orr], "dtd10 (far)": df},
        "class_names": {c: _class_name(c) for c in idc},
        "rule": f"classes sorted case-insensitively; ID = first 11 ({', '.join(idc)}); mining = first 40 files of each "
                f"(440), ID test = last 20 (220); OOD = all 60 files of the other 10 ({', '.join(oodc)}) (600) and dtd10 (600)",
    }


def split_b3() -> dict:
    p, f = folder_features("pacs")
    vp, vf = folder_features("imagenette_val100")
    dp, df = folder_features("dtd10")
    doms = {}
    for i, q in enumerate(p):
        dom, cls = q.split("/")[:2]
        doms.setdefault(dom, {}).setdefault(cls, []).append(i)
    for d in doms.values():
        for c in d:
            d[c].sort(key=lambda i: p[i])
    classes = sorted(doms["photo"])
    mine = [i for c in classes for i in doms["photo"][c][:70]]
    ml = [c for c in classes for _ in doms["photo"][c][:70]]
    tests = {"photo (held-out)": [i for c in classes for i in doms["photo"][c][70:]]}
    for d in ("art_painting", "cartoon", "sketch"):
        tests[d] = [i for c in classes for i in doms[d][c]]
    return {
        "name": "B3 PACS style shift (7 classes, mined on photos)",
        "mine": f[mine], "mine_labels": np.array(ml), "id_tests": {k: f[v] for k, v in tests.items()},
        "id_labels": {k: np.array([p[i].split('/')[1] for i in v]) for k, v in tests.items()},
        "ood": {"dtd10 (far)": df, "imagenette val (10 cls)": vf},
        "class_names": {c: _class_name(c) for c in classes},
        "rule": "mining = first 70 files per class of pacs/photo (490); ID tests = the other 30 photos per class (210), "
                "all of art_painting, cartoon, sketch (420 each); OOD = dtd10 (600) and all 10 imagenette_val100 classes "
                "(1000; note: it includes English springer, a dog, and PACS has a dog class)",
    }


def split_b4() -> dict:
    tp, tf = folder_features("cifar10_train300")
    vp, vf = folder_features("cifar10_test", per_class=200)
    classes = sorted(by_class(tp))
    idc, oodc = classes[:6], classes[6:]
    mr, ml = _rows(tp, idc)
    ir, il = _rows(vp, idc, lambda r: r[:200])
    orr, _ = _rows(vp, oodc, lambda r: r[:200])
    return {
        "name": "B4 CIFAR-10 32x32 (6 ID classes) — documented failure case",
        "mine": tf[mr], "mine_labels": ml, "id_tests": {"cifar-6 test": vf[ir]}, "id_labels": {"cifar-6 test": il},
        "ood": {"cifar-4 other": vf[orr]},
        "class_names": {c: c for c in idc},
        "rule": f"ID = first 6 classes in sorted order ({', '.join(idc)}); mining = all 300 train images of each (1800); "
                f"ID test = first 200 test files of each (1200); OOD = first 200 test files of {', '.join(oodc)} (800)",
    }


SPLITS = {"b1": split_b1, "b2": split_b2, "b3": split_b3, "b4": split_b4}


# ============================================================================ methods
class Scorer:
    """Per test set: LSE over the corpus computed once (engine's WhatIfScorer), then any Y_pos."""

    def __init__(self, split: dict, text_emb: np.ndarray, tau: float):
        from clustermine.method.scoring import WhatIfScorer

        self.sets = {**{("id", k): v for k, v in split["id_tests"].items()},
                     **{("ood", k): v for k, v in split["ood"].items()}}
        self.ws = {k: WhatIfScorer(v, text_emb, tau) for k, v in self.sets.items()}

    def scores(self, pos_idx) -> dict:
        return {k: s.log_scores(np.asarray(pos_idx)) for k, s in self.ws.items()}


def evaluate_scores(split: dict, sc: dict) -> dict:
    from clustermine.method.metrics import ood_metrics

    out = {}
    for idn in split["id_tests"]:
        for oodn in split["ood"]:
            m = ood_metrics(sc[("id", idn)], sc[("ood", oodn)])
            out[f"{idn} | {oodn}"] = {k: (100 * v if k in ("auroc", "fpr95", "aupr_in", "aupr_out") else v)
                                      for k, v in m.items()}
    return out


def match_classes(pos_texts: list[str], class_names: dict, class_emb: np.ndarray, pos_emb: np.ndarray) -> dict:
    """Which true classes have a matching mined concept (rule in the module docstring)."""
    names = list(class_names.values())
    matched: dict[str, list[str]] = {n: [] for n in names}
    syn = {n: common.wordnet_synonyms(n) for n in names}
    for t, e in zip(pos_texts, pos_emb):
        for n in names:
            if t in syn[n]:
                matched[n].append(t)
        sims = class_emb @ e
        j = int(np.argmax(sims))
        if sims[j] >= MATCH_COS and t not in matched[names[j]]:
            matched[names[j]].append(t)
    return {"n_matched": sum(1 for v in matched.values() if v), "n_classes": len(names), "by_class": matched}


def clustermine_pos(X, top1, top1_sim, method, C, seed, n_vocab, concepts):
    from clustermine.method.mining import cluster_statistics, mine_positive_concepts, summary

    t0 = time.perf_counter()
    ids = common.cluster(X, method, C, seed)
    t_cluster = common.LAST_FIT_S[0] if C > 1 else time.perf_counter() - t0
    stats = cluster_statistics(ids, top1, top1_sim, n_vocab, C)
    mined = mine_positive_concepts(stats, concepts, top1, top1_sim, ids)
    return ids, stats, mined, summary(stats, mined), t_cluster


def class_concepts(ids, labels, stats, concepts, class_names):
    """For each true class: concepts elected by clusters whose majority GT class it is."""
    out: dict[str, list] = {class_names[c]: [] for c in class_names}
    for s in stats:
        if s.winner is None:
            continue
        lab = labels[ids == s.cluster]
        vals, cnt = np.unique(lab, return_counts=True)
        maj = vals[np.argmax(cnt)]
        out[class_names[maj]].append({"concept": concepts[s.winner], "size": s.size, "purity": round(s.purity, 3),
                                      "gt_purity": round(float(cnt.max() / cnt.sum()), 3)})
    return out


def run_bench(split: dict, seeds, *, C=None, tau=TAU, corpus_spec="wordnet-nouns", template=None, neg="rest",
              clusterers=("temi", "kmeans"), baselines=True, verbose=True, subsample=None,
              temi_seeds=None) -> dict:
    from clustermine.method.corpus import embed_concepts
    from clustermine.method.metrics import FPR95_RULE, clustering_scores
    from clustermine.method.mining import posmine, zero_shot_topk
    from clustermine.method.scoring import neg_mining, neglabel_scores
    from clustermine.workflows.evaluation import MCM, NEGLABEL, baseline_scores

    enc = encoder()
    corpus, text_emb = corpus_and_embeddings(corpus_spec, template, subsample)
    tmpl = template or enc.text_template
    concepts = corpus.concepts
    X = split["mine"]
    top_idx, top_sim = zero_shot_topk(X, text_emb, k=1)
    top1, top1_sim = top_idx[:, 0], top_sim[:, 0]
    C_used = C or common.n_clusters_default(len(X))
    scorer = Scorer(split, text_emb, tau) if neg == "rest" else None
    class_names = split["class_names"]
    cls_emb = embed_concepts(enc, list(class_names.values()), tmpl)
    res = {"split": split["name"], "rule": split["rule"], "C": C_used, "n_mine": len(X), "tau": tau,
           "corpus": corpus_spec, "corpus_size": len(corpus), "template": tmpl, "neg": neg, "seeds": list(seeds),
           "methods": {}, "machine": machine_info(), "fpr95_rule": FPR95_RULE}

    def score_pos(pos):
        if neg == "rest":
            return scorer.scores(pos)
        # NegMining on Y_pos: negatives = the 15 % of the other corpus words least similar to Y_pos
        pos = np.unique(np.asarray(pos))
        others = np.setdiff1d(np.arange(len(concepts)), pos)
        negs = others[neg_mining(text_emb[pos], text_emb[others], 0.95, 0.15)]
        sets = {**{("id", k): v for k, v in split["id_tests"].items()}, **{("ood", k): v for k, v in split["ood"].items()}}
        return {k: neglabel_scores(v, text_emb[pos], text_emb[negs], tau=tau) for k, v in sets.items()}

    def add(method, seed, metrics, extra):
        res["methods"].setdefault(method, []).append({"seed": seed, "metrics": metrics, **extra})

    temi_seeds = list(seeds) if temi_seeds is None else list(temi_seeds)
    res["temi_seeds"] = temi_seeds
    for seed in seeds:
        temi_k = None
        for cl in clusterers:
            if cl == "temi" and seed not in temi_seeds:
                continue
            ids, stats, mined, summ, tcl = clustermine_pos(X, top1, top1_sim, cl, C_used, seed, len(concepts), concepts)
            pos = [m.index for m in mined]
            texts = [m.text for m in mined]
            match = match_classes(texts, class_names, cls_emb, text_emb[pos])
            cs = clustering_scores(split["mine_labels"], ids)
            sc = score_pos(pos)
            add(f"ClusterMine-{'TEMI' if cl == 'temi' else 'k-means'}", seed, evaluate_scores(split, sc), {
                "n_pos": len(pos), "purity": summ["mean_purity"], "n_occupied": summ["n_occupied"],
                "matched": match, "concepts": texts, "cluster_acc": cs["acc"], "cluster_nmi": cs["nmi"],
                "cluster_time_s": tcl,
                "class_concepts": class_concepts(ids, split["mine_labels"], stats, concepts, class_names),
            })
            if verbose:
                m = res["methods"][f"ClusterMine-{'TEMI' if cl == 'temi' else 'k-means'}"][-1]
                mean_auc = np.mean([v["auroc"] for v in m["metrics"].values()])
                print(f"[{split['name'][:2]}] seed {seed} {cl}: C={C_used} |Ypos|={len(pos)} purity={summ['mean_purity']:.2f} "
                      f"matched={match['n_matched']}/{match['n_classes']} acc={cs['acc']:.2f} meanAUROC={mean_auc:.1f} "
                      f"({tcl:.0f}s) {texts[:12]}", flush=True)
            if temi_k is None:
                temi_k = len(pos)
        if not baselines or temi_k is None:
            continue
        # PosMine-A, size matched
        pm = posmine(top1, k=temi_k)
        pm_texts = [concepts[i] for i in pm]
        counts = np.bincount(top1, minlength=len(concepts))
        add("PosMine-A (K matched)", seed, evaluate_scores(split, score_pos(pm)), {
            "n_pos": len(pm), "purity": float(counts[pm].sum() / len(X)),
            "matched": match_classes(pm_texts, class_names, cls_emb, text_emb[pm]), "concepts": pm_texts})
        # random concepts
        rnd = np.random.default_rng(1000 + seed).choice(len(concepts), size=temi_k, replace=False)
        rt = [concepts[i] for i in rnd]
        add("Random concepts", seed, evaluate_scores(split, score_pos(rnd)), {
            "n_pos": len(rnd), "matched": match_classes(rt, class_names, cls_emb, text_emb[rnd]), "concepts": rt})
    if baselines:
        # oracles (deterministic; one run, reported for every seed identically)
        sets = {**{("id", k): v for k, v in split["id_tests"].items()}, **{("ood", k): v for k, v in split["ood"].items()}}
        # the library's baselines (clustermine evaluate --class-names computes the same rows)
        base, info = baseline_scores(sets, cls_emb, text_emb, tau, methods=(MCM, NEGLABEL))
        add("MCM (oracle names)", None, evaluate_scores(split, base[MCM]), {"n_pos": info[MCM]["n_pos"]})
        add("NegLabel (oracle names)", None, evaluate_scores(split, base[NEGLABEL]),
            {"n_pos": info[NEGLABEL]["n_pos"], "n_neg": info[NEGLABEL]["n_neg"]})
    return res


# ============================================================================ tables
def _avg(runs, key, pairs=None):
    vals = []
    for r in runs:
        ms = r["metrics"]
        ks = pairs or list(ms)
        vals.append(np.mean([ms[k][key] for k in ks]))
    return vals


def main_table(res: dict) -> str:
    methods = res["methods"]
    first = next(iter(methods.values()))[0]["metrics"]
    pairs = list(first)
    ids = sorted({p.split(" | ")[0] for p in pairs}, key=lambda s: pairs.index(next(q for q in pairs if q.startswith(s))))
    oods = list(dict.fromkeys(p.split(" | ")[1] for p in pairs))
    lines = []
    one_id = len(ids) == 1
    if one_id:
        hdr = ["method", "\\|Y_pos\\|", "purity", "matched"] + [f"{o} AUROC / FPR95" for o in oods] + \
              ["mean AUROC", "mean FPR95", "mean AUPR-In", "mean AUPR-Out"]
    else:
        hdr = ["method", "\\|Y_pos\\|", "purity", "matched"] + [f"{i}: mean AUROC / FPR95" for i in ids] + ["all AUPR-In / Out"]
    lines.append("| " + " | ".join(hdr) + " |")
    lines.append("|" + "---|" * len(hdr))
    for name, runs in methods.items():
        npos = mean_std([r.get("n_pos") for r in runs])
        pur = mean_std([100 * r["purity"] for r in runs if r.get("purity") is not None]) if any(
            r.get("purity") is not None for r in runs) else "—"
        mt = [r["matched"]["n_matched"] for r in runs if "matched" in r]
        ncls = runs[0]["matched"]["n_classes"] if "matched" in runs[0] else len(res.get("class_names", [])) or None
        matched = f"{mean_std(mt)}/{ncls}" if mt else "(oracle)"
        row = [name, npos, pur, matched]
        if one_id:
            for o in oods:
                k = f"{ids[0]} | {o}"
                row.append(f"{mean_std([r['metrics'][k]['auroc'] for r in runs])} / "
                           f"{mean_std([r['metrics'][k]['fpr95'] for r in runs])}")
            for key in ("auroc", "fpr95", "aupr_in", "aupr_out"):
                row.append(mean_std(_avg(runs, key)))
        else:
            for i in ids:
                ps = [f"{i} | {o}" for o in oods]
                row.append(f"{mean_std(_avg(runs, 'auroc', ps))} / {mean_std(_avg(runs, 'fpr95', ps))}")
            row.append(f"{mean_std(_avg(runs, 'aupr_in'))} / {mean_std(_avg(runs, 'aupr_out'))}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def pair_table(res: dict, methods=("ClusterMine-TEMI", "ClusterMine-k-means", "NegLabel (oracle names)", "MCM (oracle names)")) -> str:
    """AUROC of every (ID test set, OOD set) pair (B3)."""
    ms = res["methods"]
    pairs = list(next(iter(ms.values()))[0]["metrics"])
    hdr = ["ID test set vs OOD set"] + [m for m in methods if m in ms]
    lines = ["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
    for p in pairs:
        row = [p.replace(" | ", " vs ")]
        for m in methods:
            if m in ms:
                row.append(f"{mean_std([r['metrics'][p]['auroc'] for r in ms[m]])} / "
                           f"{mean_std([r['metrics'][p]['fpr95'] for r in ms[m]])}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def concepts_text(res: dict) -> str:
    out = []
    for m in ("ClusterMine-TEMI", "ClusterMine-k-means"):
        if m not in res["methods"]:
            continue
        r = res["methods"][m][0]
        cc = r.get("class_concepts", {})
        parts = []
        for cls, lst in cc.items():
            words = sorted({x["concept"] for x in lst})
            parts.append(f"{cls} → {', '.join(words) if words else '(no cluster)'}")
        bc = r["matched"]["by_class"]
        un = [c for c, v in bc.items() if not v]
        out.append(f"- {m}, seed {r['seed']}: clusters by majority true class → elected concepts: " + "; ".join(parts)
                   + f". Unmatched classes: {', '.join(un) if un else 'none'}.")
    return "\n".join(out)


def render(res: dict, key: str) -> str:
    hdr = (f"### {res['split']}\n\n"
           f"Command: `python bench/eval_ood.py --bench {key} --seeds {' '.join(map(str, res['seeds']))} --temi-seeds "
           f"{' '.join(map(str, res['temi_seeds']))}` · k-means / PosMine / random seeds {res['seeds']}, TEMI seeds "
           f"{res['temi_seeds']} (mean ± std over seeds; oracles are deterministic; PosMine and random use K = \\|Y_pos\\| "
           f"of the first clusterer run at that seed, TEMI where it ran, else k-means) · C = {res['C']} (engine default rule for N = {res['n_mine']} mining images) · "
           f"corpus {res['corpus']} ({res['corpus_size']:,} concepts), template `{res['template']}`, τ = {res['tau']}, "
           f"Y_neg = corpus minus Y_pos, one group · machine: {machine_line(res['machine'])}.\n\n"
           f"Split: {res['rule']}.\n\n"
           f"AUROC / FPR95 in % (ID = positive, higher score = more ID; FPR95 rule: "
           f"{res.get('fpr95_rule', 'threshold keeps >= 95 % of ID, OOD ties count as FP (rule before issue 9)')}; "
           f"AUPR = step-wise average precision); "
           f"purity = size-weighted share of cluster members whose own top-1 concept is the cluster's winner "
           f"(PosMine: share of mining images whose top-1 is in Y_pos); matched = true classes with a matching "
           f"mined concept (WordNet synonym, or nearest class-name embedding with cosine ≥ {MATCH_COS}).\n\n")
    body = main_table(res)
    first = next(iter(res["methods"].values()))[0]["metrics"]
    if len({p.split(' | ')[0] for p in first}) > 1:
        body += "\n\nPer (ID test set, OOD set) pair, AUROC / FPR95:\n\n" + pair_table(res)
    tm = res["methods"].get("ClusterMine-TEMI", [])
    extra = ""
    if tm:
        extra = (f"\n\nClustering of the mining images vs true classes (Hungarian ACC): TEMI "
                 f"{mean_std([100 * r['cluster_acc'] for r in tm])}, k-means "
                 f"{mean_std([100 * r['cluster_acc'] for r in res['methods'].get('ClusterMine-k-means', [])])}; "
                 f"TEMI fit time {mean_std([r['cluster_time_s'] for r in tm])} s.\n\n" + concepts_text(res))
    return hdr + body + extra


# ============================================================================ ablations
ABLATIONS = {
    "C": "number of clusters C = m × number of true classes (TEMI with --temi-seeds; k-means with --seeds)",
    "tau": "score temperature τ",
    "corpus": "corpus",
    "template": "prompt template of the corpus and class names (image features unchanged; all 117,798 nouns)",
    "neg": "negatives: corpus minus Y_pos vs NegMining on Y_pos (15 %, η = 0.95)",
}


def run_ablation(key: str, which: str, seeds, temi_seeds=None) -> dict:
    split = SPLITS[key]()
    K = len(split["class_names"])
    rows = []

    def summarize(label, r):
        for m, runs in r["methods"].items():
            rows.append({"setting": label, "method": m, "C": r["C"],
                         "n_pos": [x.get("n_pos") for x in runs],
                         "purity": [x.get("purity") for x in runs],
                         "matched": [x["matched"]["n_matched"] for x in runs if "matched" in x],
                         "n_classes": K,
                         "auroc": _avg(runs, "auroc"), "fpr95": _avg(runs, "fpr95"),
                         "concepts": runs[0].get("concepts")})
        print(rows[-1]["setting"], [(x["method"], np.mean(x["auroc"])) for x in rows if x["setting"] == label], flush=True)

    if which == "C":
        for mult in (1, 2, 4, 8):
            r = run_bench(split, seeds, C=mult * K, clusterers=("temi", "kmeans"), baselines=False,
                          temi_seeds=temi_seeds)
            summarize(f"C = {mult}×{K} = {mult * K}", r)
        r = run_bench(split, [0], C=None, clusterers=(), baselines=True)
        summarize("oracles", r)
    elif which == "tau":
        for tau in (0.005, 0.01, 0.05):
            summarize(f"τ = {tau}", run_bench(split, seeds, tau=tau, baselines=False, temi_seeds=temi_seeds))
    elif which == "corpus":
        for spec in CORPORA:
            summarize(spec, run_bench(split, seeds, corpus_spec=spec, baselines=False, temi_seeds=temi_seeds))
    elif which == "template":
        # The second template needs a new embedding of every noun (a one-off ~10 CPU-minutes, cached in
        # .cache/bench_text); the image features stay those of the encoder's own template.
        for t in ("{}", "a photo of a {}."):
            summarize(f"`{t}`", run_bench(split, seeds, template=t, baselines=True, temi_seeds=temi_seeds))
    elif which == "neg":
        for neg in ("rest", "negmining"):
            summarize("corpus minus Y_pos" if neg == "rest" else "NegMining(Y_pos) 15 %",
                      run_bench(split, seeds, neg=neg, baselines=False, temi_seeds=temi_seeds))
    return {"bench": key, "split": split["name"], "ablation": which, "seeds": list(seeds),
            "temi_seeds": list(seeds if temi_seeds is None else temi_seeds), "rows": rows,
            "machine": machine_info()}


def render_ablation(res: dict) -> str:
    lines = [f"#### {res['split']}: {ABLATIONS[res['ablation']]}",
             "",
             f"Command: `python bench/eval_ood.py --bench {res['bench']} --ablation {res['ablation']} --seeds "
             f"{' '.join(map(str, res['seeds']))} --temi-seeds {' '.join(map(str, res['temi_seeds']))}` · k-means seeds "
             f"{res['seeds']}, TEMI seeds {res['temi_seeds']} · mean AUROC / FPR95 over the OOD sets of the main table · {machine_line(res['machine'])}.",
             "", "| setting | method | C | \\|Y_pos\\| | purity | matched | mean AUROC | mean FPR95 |", "|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        pur = [p for p in r["purity"] if p is not None]
        lines.append(f"| {r['setting']} | {r['method']} | {r['C']} | {mean_std(r['n_pos'])} | "
                     f"{mean_std([100 * p for p in pur]) if pur else '—'} | "
                     f"{(mean_std(r['matched']) + '/' + str(r['n_classes'])) if r['matched'] else '—'} | "
                     f"{mean_std(r['auroc'])} | {mean_std(r['fpr95'])} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", choices=sorted(SPLITS), required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--temi-seeds", type=int, nargs="*", default=None,
                    help="seeds for TEMI (default: --seeds); k-means and the baselines use --seeds")
    ap.add_argument("--ablation", choices=sorted(ABLATIONS))
    ap.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    ap.add_argument("--corpora", nargs="+", default=CORPORA, help="corpora of the corpus ablation")
    a = ap.parse_args(argv)
    CORPORA[:] = a.corpora
    t0 = time.perf_counter()
    if a.ablation:
        res = run_ablation(a.bench, a.ablation, a.seeds, a.temi_seeds)
        save_json(f"{a.bench}_{a.ablation}.json", res)
        md = render_ablation(res)
        key = f"{a.bench}-ablation-{a.ablation}"
    else:
        res = run_bench(SPLITS[a.bench](), a.seeds, temi_seeds=a.temi_seeds)
        save_json(f"{a.bench}.json", res)
        md = render(res, a.bench)
        key = a.bench
    print(md)
    if not a.no_write:
        write_block(SECTION, key, md)
    print(f"done in {time.perf_counter() - t0:.0f}s", file=sys.stderr)


if __name__ == "__main__":
    main()

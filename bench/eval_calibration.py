"""Calibration of the ID/OOD threshold (issue 12 §2) on B1-B3: before vs after.

    python bench/eval_calibration.py                 # B1-B3, seeds 0-9, writes BENCHMARKS.md
    python bench/eval_calibration.py --no-write

Splits, features, corpus and k-means clusterings are those of ``bench/eval_ood.py`` (cached
features: run ``bench/encode_all.py`` first). For every split, seed and mining-set size (all mining
images, and a seeded subsample of 160 — the first-run scenario of issue 12) a run is emulated
exactly as ``clustermine.workflows.pipeline.mine`` builds it: ``holdout_rows(n, 0.1, seed)`` held out, k-means
with the engine's default C on the rest, top-1 zero-shot votes over the WordNet nouns (similarities
rounded to float16 as stored), plurality vote -> Y_pos, τ = 0.01. Then, at target TPR 95 %:

- before: threshold = ``threshold_at_tpr`` on the held-out images' scores (the old default);
  its "ID false alarms" figure = share of those same held-out images below it.
- after: ``clustermine.method.calibration``: cross-fitted (5 folds) mining scores pooled with the held-out
  scores; threshold = order statistic at 90 % confidence; "ID false alarms" = cross-validated over
  the folds (each image judged by a threshold its fold did not set).

Reported (in %): the "ID false alarms" figure each rule would show, the false alarms actually
measured on the ID test set(s) (1 − TPR), and the FPR on every OOD test set, at each threshold.
Nothing is tuned on these sets: the target (95 %), confidence (90 %), folds (5), hold-out (10 %)
and the 160-image size are the engine's defaults / the issue's scenario.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from common import corpus_and_embeddings, machine_info, machine_line, mean_std, save_json, write_block  # noqa: E402
from eval_ood import SPLITS, TAU  # noqa: E402

import numpy as np  # noqa: E402

SECTION = "## Calibration (issue 12)"
TPR, CONFIDENCE, N_FOLDS, HOLDOUT, SMALL_N = 0.95, 0.9, 5, 0.1, 160


def emulate_run(X: np.ndarray, top1: np.ndarray, sim1: np.ndarray, seed: int, n_vocab: int) -> dict:
    """Held-out rows, cluster ids (-1 = held out) and mined Y_pos of a run on features ``X``."""
    from clustermine.method.calibration import crossfit_positive_rows, fold_ids
    from clustermine.method.mining import cluster_statistics
    from clustermine.workflows.pipeline import holdout_rows

    n = len(X)
    hold = holdout_rows(n, HOLDOUT, seed)
    mine_rows = np.setdiff1d(np.arange(n), hold)
    C = common.n_clusters_default(len(mine_rows))
    cids = np.full(n, -1, dtype=np.int64)
    cids[mine_rows] = common.cluster(X[mine_rows], "kmeans", C, seed)
    folds = fold_ids(n, N_FOLDS, seed)
    sel = cids >= 0
    stats = cluster_statistics(cids[sel], top1[sel], sim1[sel], n_vocab, C)  # the run's own vote
    ypos = np.array(sorted({s.winner for s in stats if s.winner is not None}), dtype=np.int64)
    voted = crossfit_positive_rows(cids, top1, sim1, folds, n_vocab)
    return {"hold": hold, "cids": cids, "C": C, "folds": folds, "ypos": ypos, "voted": voted}


def evaluate_split(key: str, seeds, sizes) -> dict:
    from clustermine.method.calibration import choose_threshold, crossfit_scores, crossval_false_alarms
    from clustermine.method.metrics import threshold_at_tpr
    from clustermine.method.mining import zero_shot_topk
    from clustermine.method.scoring import WhatIfScorer

    split = SPLITS[key]()
    corpus, text = corpus_and_embeddings("wordnet-nouns")
    t0 = time.perf_counter()
    tests = {**{("id", k): WhatIfScorer(v, text, TAU) for k, v in split["id_tests"].items()},
             **{("ood", k): WhatIfScorer(v, text, TAU) for k, v in split["ood"].items()}}
    X_all = split["mine"]
    top_idx, top_sim = zero_shot_topk(X_all, text, k=1)
    top1_all, sim1_all = top_idx[:, 0].astype(np.int64), top_sim[:, 0].astype(np.float16).astype(np.float32)
    scorer_all = WhatIfScorer(X_all, text, TAU)
    print(f"[{key}] test-set and mining LSE in {time.perf_counter() - t0:.0f}s", flush=True)
    out = {"split": split["name"], "rule": split["rule"], "runs": []}
    for size in sizes:
        for seed in seeds:
            if size is None or size >= len(X_all):
                sub = np.arange(len(X_all))
            else:
                sub = np.sort(np.random.default_rng(10_000 + seed).permutation(len(X_all))[:size])
            X, top1, sim1 = X_all[sub], top1_all[sub], sim1_all[sub]
            scorer = WhatIfScorer(X, text, TAU, base_lse=scorer_all.base_lse[sub])
            r = emulate_run(X, top1, sim1, seed, len(corpus))
            held_scores = scorer.log_scores(r["ypos"])[r["hold"]]
            before = threshold_at_tpr(held_scores, TPR)
            cf = crossfit_scores(scorer, r["cids"], r["folds"], r["voted"], r["ypos"])
            ch = choose_threshold(cf.scores, TPR, CONFIDENCE)
            test_scores = {k: s.log_scores(r["ypos"]) for k, s in tests.items()}
            row = {"size": len(sub), "seed": seed, "C": r["C"], "n_pos": len(r["ypos"]), "n_holdout": len(r["hold"]),
                   "n_cal": ch.n, "k": ch.k, "guaranteed": ch.guaranteed, "rules": {}}
            shown_after = crossval_false_alarms(cf.scores, cf.folds, TPR, CONFIDENCE)
            for name, thr, shown in (("before", before, float(np.mean(held_scores < before))),
                                     ("after", ch.threshold, shown_after)):
                row["rules"][name] = {
                    "threshold": thr, "shown_id_false_alarms": 100 * shown,
                    "id_false_alarms": {k[1]: 100 * float(np.mean(v < thr))
                                        for k, v in test_scores.items() if k[0] == "id"},
                    "ood_fpr": {k[1]: 100 * float(np.mean(v >= thr)) for k, v in test_scores.items() if k[0] == "ood"}}
            out["runs"].append(row)
            b, a = row["rules"]["before"], row["rules"]["after"]
            print(f"[{key}] n={len(sub)} seed {seed}: |Ypos|={len(r['ypos'])} before thr={before:.2f} "
                  f"ID-FA {b['id_false_alarms']} | after thr={ch.threshold:.2f} (k={ch.k}/{ch.n}) "
                  f"ID-FA {a['id_false_alarms']}",
                  flush=True)
    return out


def render(results: dict, seeds, info: dict, seconds: float) -> str:
    lines = [
        f"Command: `python bench/eval_calibration.py --seeds {' '.join(map(str, seeds))}` · {machine_line(info)} · "
        f"{seconds:.0f} s wall. Target TPR {TPR:.0%}; k-means (engine default C), seeds {list(seeds)} "
        f"(mean ± std over seeds); splits, features and corpus of `bench/eval_ood.py`; a run is emulated as `mine` "
        f"builds it "
        f"(10 % held out by `holdout_rows`, votes rounded to float16). **before**: `threshold_at_tpr` on the "
        f"held-out images (the old default), its \"ID false alarms\" measured on those same images. **after**: "
        f"`clustermine.method.calibration`: {N_FOLDS}-fold cross-fitted mining scores + held-out scores, order statistic "
        f"at {CONFIDENCE:.0%} confidence, \"ID false alarms\" cross-validated over the folds. Columns: the ID "
        f"false-alarm figure the app shows; the false alarms measured on the ID test set(s) (= 100 − TPR); the FPR "
        f"on each OOD test set (OOD scored ≥ threshold). All in %. \"n = 160\": a seeded subsample of the mining "
        f"images (issue 12's first-run scenario).",
        "",
    ]
    for key, res in results.items():
        runs = res["runs"]
        id_sets = list(runs[0]["rules"]["before"]["id_false_alarms"])
        ood_sets = list(runs[0]["rules"]["before"]["ood_fpr"])
        lines += [f"**{res['split']}**", "",
                  "| mining images | rule | calibration images | shown ID false alarms | "
                  + " | ".join(f"ID false alarms: {s}" for s in id_sets) + f" | runs with TPR ≥ {TPR:.0%} on "
                  f"{id_sets[0]} | " + " | ".join(f"OOD FPR: {s}" for s in ood_sets) + " |",
                  "|" + "---|" * (5 + len(id_sets) + len(ood_sets))]
        for size in sorted({r["size"] for r in runs}, reverse=True):
            rs = [r for r in runs if r["size"] == size]
            for rule in ("before", "after"):
                if rule == "before":
                    ncal = f"{rs[0]['n_holdout']} held out"
                else:
                    ks = sorted({r["k"] for r in rs})
                    ncal = (f"{rs[0]['n_cal']} (k = {'/'.join(map(str, ks))}"
                            f"{'' if all(r['guaranteed'] for r in rs) else ', NOT guaranteed'})")
                cells = [str(size), rule, ncal, mean_std([r["rules"][rule]["shown_id_false_alarms"] for r in rs])]
                cells += [mean_std([r["rules"][rule]["id_false_alarms"][s] for r in rs]) for s in id_sets]
                met = sum(r["rules"][rule]["id_false_alarms"][id_sets[0]] <= 100 * (1 - TPR) + 1e-9 for r in rs)
                cells.append(f"{met}/{len(rs)}")
                cells += [mean_std([r["rules"][rule]["ood_fpr"][s] for r in rs]) for s in ood_sets]
                lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", nargs="+", default=["b1", "b2", "b3"], choices=["b1", "b2", "b3"])
    ap.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    ap.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    results = {k: evaluate_split(k, a.seeds, (None, SMALL_N)) for k in a.bench}
    seconds = time.perf_counter() - t0
    info = machine_info()
    save_json("calibration.json", {"results": results, "seeds": a.seeds, "machine": info, "seconds": seconds})
    md = render(results, a.seeds, info, seconds)
    print(md)
    if not a.no_write:
        write_block(SECTION, "calibration", md)


if __name__ == "__main__":
    main()

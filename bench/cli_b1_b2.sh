#!/usr/bin/env bash
# B1 and B2 of BENCHMARKS.md through the CLI verbs (issue 21): the label-free rows (TEMI, k-means;
# seeds 0 1 2, mean ± sd over the seeds) beside MCM and NegLabel, the same splits and τ = 0.01 as
# bench/eval_ood.py (split_b1 / split_b2), every image kept in mining (--holdout 0, as the script).
#
#   bash bench/cli_b1_b2.sh [WORK_DIR] [FORMAT]      # FORMAT: markdown (default), json, csv, latex
#
# Folders are copies of the shared images in WORK_DIR (default bench/.cli_b1_b2, ~40 MB); features
# come from the feature cache, so only new images are encoded.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${CLUSTERMINE_DATA:-../shared/data}
W=${1:-bench/.cli_b1_b2}
FMT=${2:-markdown}
PY=${PYTHON:-.venv/bin/python}
CM="$PY -m clustermine"

# ------------------------------------------------------------------ the splits as folders
"$PY" - "$DATA" "$W" <<'EOF'
import shutil, sys
from pathlib import Path

data, w = Path(sys.argv[1]), Path(sys.argv[2])
IMAGENETTE = {"n01440764": "tench", "n02102040": "English springer", "n02979186": "cassette player",
              "n03000684": "chain saw", "n03028079": "church", "n03394916": "French horn",
              "n03417042": "garbage truck", "n03425413": "gas pump", "n03445777": "golf ball", "n03888257": "parachute"}
B1_ID = ["n01440764", "n02102040", "n02979186", "n03000684", "n03028079", "n03394916"]

def files(d):
    return sorted(f for f in d.iterdir() if f.is_file())

def put(dst, cls, fs):
    (dst / cls).mkdir(parents=True, exist_ok=True)
    for f in fs:
        if not (dst / cls / f.name).exists():
            shutil.copy2(f, dst / cls / f.name)

for c in IMAGENETTE:  # B1: mining = train100 of the 6 ID classes, ID test = their val100, near OOD = the other 4
    if c in B1_ID:
        put(w / "b1/mine", c, files(data / "imagenette_train100" / c))
        put(w / "b1/id", c, files(data / "imagenette_val100" / c))
    else:
        put(w / "b1/near", c, files(data / "imagenette_val100" / c))
(w / "b1/names.tsv").write_text("".join(f"{k}\t{v}\n" for k, v in IMAGENETTE.items()))
classes = sorted((d.name for d in (data / "caltech101_sub").iterdir() if d.is_dir()), key=str.lower)
for c in classes[:11]:  # B2: first 11 classes (case-insensitive order): first 40 files mine, last 20 ID test
    fs = files(data / "caltech101_sub" / c)
    put(w / "b2/mine", c, fs[:40])
    put(w / "b2/id", c, fs[-20:])
for c in classes[11:]:
    put(w / "b2/other", c, files(data / "caltech101_sub" / c))
EOF

# ------------------------------------------------------------------ runs: TEMI and k-means, seeds 0 1 2
for b in b1 b2; do
  for cl in temi kmeans; do
    for s in 0 1 2; do
      $CM mine "$W/$b/mine" --out "$W/$b/runs/$cl-$s" --clusterer "$cl" --seed "$s" --holdout 0 --tau 0.01 --quiet --force
    done
  done
done

# ------------------------------------------------------------------ the tables
B1_OOD=(--ood "imagenette-4 (near)=$W/b1/near" --ood "imagewoof (dogs)=$DATA/imagewoof_val80" --ood "dtd10 (far)=$DATA/dtd10")
B2_OOD=(--ood "caltech-10 other=$W/b2/other" --ood "dtd10 (far)=$DATA/dtd10")
echo "### B1, ClusterMine-TEMI + MCM + NegLabel"
$CM evaluate --runs "$W"/b1/runs/temi-{0,1,2} --id "$W/b1/id" "${B1_OOD[@]}" --class-names "$W/b1/names.tsv" --bootstrap 1000 --"$FMT"
echo "### B1, ClusterMine-k-means"
$CM evaluate --runs "$W"/b1/runs/kmeans-{0,1,2} --id "$W/b1/id" "${B1_OOD[@]}" --bootstrap 1000 --"$FMT"
echo "### B2, ClusterMine-TEMI + MCM + NegLabel (class names: folder names, '_' -> ' ', lowercase)"
$CM evaluate --runs "$W"/b2/runs/temi-{0,1,2} --id "$W/b2/id" "${B2_OOD[@]}" --class-names folders --bootstrap 1000 --"$FMT"
echo "### B2, ClusterMine-k-means"
$CM evaluate --runs "$W"/b2/runs/kmeans-{0,1,2} --id "$W/b2/id" "${B2_OOD[@]}" --bootstrap 1000 --"$FMT"

#!/bin/bash
# Small-run A/B (issue 10): `mine` of 1,000 real images with an old checkout (/work/wt/old, e.g.
# `git worktree add /work/wt/old 8d17f25`) and this one, cold feature cache, corpus cached. Paths are this
# machine's; adjust IMG source and the checkouts.
set -e
IMG=/tmp/ab_images
if [ ! -d $IMG ]; then
  mkdir -p $IMG; i=0
  for f in $(ls /work/shared/data/imagenette_train100/*/* | head -1000); do cp "$f" $IMG/; done
fi
for rep in 1; do
for tree in old main; do
  root=/work/wt/$tree; [ $tree = main ] && root=/work/main
  C=/tmp/ab_cache_$tree; rm -rf $C /tmp/ab_run_$tree; mkdir -p $C; ln -s /work/main/.cache/clustermine/text $C/text
  ( cd $root && CLUSTERMINE_CACHE=$C HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 /work/main/.venv/bin/python -c "
import time
from clustermine.pipeline import mine, MineConfig
t=time.perf_counter(); run=mine('$IMG', '/tmp/ab_run_$tree', MineConfig(device='cpu'))
print('$tree rep $rep', round(time.perf_counter()-t,1), 's', run.meta['summary']['timings_s'], run.meta['summary']['n_positive'])
" )
done; done

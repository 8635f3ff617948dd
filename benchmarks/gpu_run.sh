#!/usr/bin/env bash
# The one command a GPU machine runs: about 8 minutes at most, on a bare machine with no network.
#
#   bash benchmarks/gpu_run.sh OUT_DIR            # on the GPU machine
#   bash benchmarks/gpu_run.sh OUT_DIR --dry-run  # anywhere: the same steps, CUDA steps skipped (tested in CI)
#
# Steps, most important first, each under its own `timeout` and all under one deadline (GPU_RUN_BUDGET_S, 460 s):
# install missing wheels, build the extension for the detected GPU, the test suite on CUDA (pytest-xdist workers),
# compute-sanitizer memcheck on small targets, then the benchmarks: loss (noise tensor and seeded), the guided step
# and the TRELLIS.2 rescale step, marching cubes fp16 at 256^3/512^3/1024^3, the data-preparation pipeline on the
# bunny at 256^3 (watertight, samples, labels on the GPU), then the rest while time remains.
# Every benchmark case is added to OUT_DIR/bench.json as soon as it finishes, so a time-out loses nothing finished.
#
# Written to OUT_DIR (5 files): summary.txt (one line per step: status, seconds), bench.json, compile-check.json
# (registers/spills of the kernels as built for this GPU), environment.txt, logs.tar.gz (every step's log).
#
# Wheels: the machine has Python 3.12 with torch, triton, numpy, scipy, scikit-image, pytest(-xdist), cmake,
# ninja and pybind11; what is missing (WHEELS below) is installed from .whl/ when present. Fetch them here with:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
#     --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl trimesh==5.2.0 pymcubes==0.1.6 \
#     pymeshfix==0.18.1
# (trimesh: mesh export tests, the bunny grid and mesh loading; pymcubes, pymeshfix: a marching-cubes peer and the
# bunny scan.)
set -uo pipefail

OUT=${1:?usage: benchmarks/gpu_run.sh OUT_DIR [--dry-run]}
DRY=0
[ "${2:-}" = "--dry-run" ] && DRY=1
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
LOGS=$(mktemp -d)
SUMMARY="$OUT/summary.txt"
BUDGET=${GPU_RUN_BUDGET_S:-460}
START=$(date +%s)
PY=python3
WHEELS="trimesh:trimesh pymcubes:mcubes pymeshfix:pymeshfix"  # distribution:import name
: > "$SUMMARY"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

left() { echo $((BUDGET - ($(date +%s) - START))); }

# step NAME MAX_SECONDS CUDA|ANY CMD...: run CMD with its log in $LOGS/NAME.log, time-boxed by the smaller of
# MAX_SECONDS and what is left of the budget; CUDA steps are skipped in a dry run. Never stops the script.
step() {
  local name=$1 max=$2 kind=$3
  shift 3
  local limit t0 rc
  limit=$(left)
  [ "$limit" -gt "$max" ] && limit=$max
  if [ "$kind" = CUDA ] && [ "$DRY" = 1 ]; then
    echo "$name skipped (dry run): $*" | tee -a "$SUMMARY"
    return 0
  fi
  if [ "$limit" -lt 5 ]; then
    echo "$name skipped: out of time" | tee -a "$SUMMARY"
    return 0
  fi
  echo "== $name (limit ${limit}s)"
  t0=$(date +%s)
  timeout --kill-after=5 "$limit" bash -c '"$@"' "$name" "$@" > "$LOGS/$name.log" 2>&1
  rc=$?
  local status=ok
  [ $rc -eq 124 ] || [ $rc -eq 137 ] && status="TIMED OUT"
  [ $rc -ne 0 ] && [ "$status" = ok ] && status="FAILED ($rc)"
  echo "$name $status $(( $(date +%s) - t0 ))s" | tee -a "$SUMMARY"
  tail -n 3 "$LOGS/$name.log"
  return 0
}

install_wheels() {
  local missing=""
  for entry in $WHEELS; do
    $PY -c "import ${entry#*:}" 2> /dev/null || missing="$missing ${entry%%:*}"
  done
  echo "missing:${missing:- none}"
  [ -z "$missing" ] && return 0
  if [ "$DRY" = 1 ]; then echo "dry run: would install$missing from .whl/"; return 0; fi
  local files=""
  for dist in $missing; do  # wheel names keep the project's capitalization (PyMCubes-...): match any case
    files="$files $(find .whl -maxdepth 1 -iname "$dist-*.whl" 2> /dev/null | head -n 1)"
  done
  files=$(echo $files)
  [ -z "$files" ] && { echo "no wheels for$missing in .whl/: those peers and tests are skipped"; return 0; }
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site $files
}

environment() {
  $PY - <<'EOF'
import platform, torch, triton
print("python", platform.python_version(), "torch", torch.__version__, "triton", triton.__version__)
print("cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("device", p.name, "sm_%d%d" % (p.major, p.minor), p.multi_processor_count, "SMs")
EOF
  command -v nvidia-smi > /dev/null && nvidia-smi
  command -v nvcc > /dev/null && nvcc --version | tail -n 2
}

build() {
  local arch
  arch=$($PY -c "import torch; print('%d%d' % torch.cuda.get_device_capability())")
  FLOWKERNELS_CUDA=ON CMAKE_CUDA_ARCHITECTURES=$arch FLOWKERNELS_BUILD_JOBS=16 \
    $PY setup.py -q build_ext --inplace
  $PY -c "import flowkernels._C as c; assert c.cuda_built(), 'the CUDA driver was not built'; print(c.__file__)"
}

compile_check() {  # the kernels as this machine's Triton and nvcc build them for its GPU
  local arch
  arch=$($PY -c "import torch; print('%d%d' % torch.cuda.get_device_capability())")
  $PY -m flowkernels compile-check --arch "$arch" --json "$OUT/compile-check.json"
}

bench() {  # bench OPS SIZES: one `flowkernels bench` run whose rows are added to bench.json case by case
  local device=cuda
  [ "$DRY" = 1 ] && device=cpu
  $PY -m flowkernels bench --device $device --ops "$1" ${2:+--sizes "$2"} --min-time 0.1 --no-progress \
    --json "$OUT/bench.json" --append
}

export -f install_wheels environment build compile_check bench  # steps run them in a time-boxed bash
export DRY PY OUT WHEELS
step wheels 60 ANY install_wheels
export PYTHONPATH="$PYTHONPATH:/tmp/site"  # where install_wheels put what was missing
step environment 30 ANY environment
cp "$LOGS/environment.log" "$OUT/environment.txt"
step build 150 CUDA build
step compile-check 90 CUDA compile_check  # CI runs the check on CPU; here it reads this GPU's toolchain
step tests 150 CUDA $PY -m pytest python_tests -q -n 8 --maxfail=20 -p no:cacheprovider
step memcheck 60 CUDA compute-sanitizer --tool memcheck --error-exitcode 1 $PY benchmarks/sanitize_targets.py
if [ "$DRY" = 1 ]; then  # the JSON path on CPU: one small case, appended as the GPU run appends
  step bench-smoke 90 ANY bench sampler trellis_ss
fi
step bench-loss 70 CUDA bench loss,loss_seeded hunyuan,bandwidth
step bench-step 60 CUDA bench sampler,trellis2_rescale
step bench-mc-fp16 70 CUDA bench mc 256-fp16,512-fp16,1024-fp16
step bench-prepare 60 CUDA bench prepare bunny-256
step bench-rest 120 CUDA bench mc,trellis_loss,e2e sphere-256,gyroid-256,sphere-512,B8,train,sample50

tar -czf "$OUT/logs.tar.gz" -C "$LOGS" .
rm -rf "$LOGS"
echo "total $(( $(date +%s) - START ))s" | tee -a "$SUMMARY"
grep -q "FAILED\|TIMED OUT" "$SUMMARY" && exit 1
exit 0

#!/usr/bin/env bash
# One-command GPU verification, offline: build the extension for this GPU, run the whole test suite on CUDA,
# compute-sanitizer (memcheck, racecheck) over marching cubes and the loss / step kernels, then the benchmarks.
# Logs, the results JSON and plots go to OUT_DIR. Usage: benchmarks/gpu_check.sh OUT_DIR
# Extra wheels (benchmarks/gpu_requirements.txt) are installed from WHEELS_DIR (default: .whl) when present.
set -uo pipefail
OUT=${1:?usage: benchmarks/gpu_check.sh OUT_DIR}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
status=0
step() { echo "== $1"; shift; "$@" || { echo "!! failed: $*"; status=1; }; }

WHEELS=${WHEELS_DIR:-.whl}
if [ -d "$WHEELS" ]; then
  grep -v '^\s*#' benchmarks/gpu_requirements.txt | awk '{print $1}' | grep . | while read -r pkg; do
    pip install -q --no-index --find-links "$WHEELS" "$pkg" || echo "optional wheel $pkg not available"
  done 2>&1 | tee "$OUT/wheels.log"
fi
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
ARCH=$(python -c "import torch; print('%d%d' % torch.cuda.get_device_capability())")
step build bash -c "FLOWKERNELS_CUDA=ON CMAKE_CUDA_ARCHITECTURES=$ARCH pip install -q --no-build-isolation --no-deps -e . 2>&1 | tee '$OUT/build.log'"
step tests bash -c "python -m pytest python_tests -q -rs -p no:cacheprovider 2>&1 | tee '$OUT/tests.log'"
if command -v compute-sanitizer > /dev/null; then
  for tool in memcheck racecheck; do
    step "sanitizer $tool" bash -c "compute-sanitizer --tool $tool --error-exitcode 1 python benchmarks/sanitize_targets.py > '$OUT/sanitizer-$tool.log' 2>&1"
  done
else
  echo "compute-sanitizer not found: sanitizer runs skipped" | tee "$OUT/sanitizer-skipped.log"
fi
step bench bash -c "python -m flowkernels.bench --device cuda --no-progress --json '$OUT/bench.json' --plot '$OUT/plots' 2>&1 | tee '$OUT/bench.log'"
exit $status

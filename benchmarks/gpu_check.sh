#!/usr/bin/env bash
# The GPU check of the CUDA backend, in one command on a machine with an NVIDIA GPU (sm_80 or newer):
# build libniti_cuda.so with nvcc, run the CUDA parity tests (tests/test_cuda.py, GPU half: every op,
# the GEMM engines and whole lenet / small-VGG training steps bit-identical to the numpy reference),
# then `python -m gpu_backend` (the project's PASS/FAIL line per backend) and benchmarks/gpu_bench.py
# (int8 GEMM TOP/s and vgg-small-9 training images/s against torch).
#
#   benchmarks/gpu_check.sh            # from anywhere; Python: $PYTHON, else python3
#
# Every step runs even when an earlier one fails; the exit status is that of the parity tests.
# Results: $OUT/results-gpu.md when $OUT is set (the device tool's output folder), else
# docs/results-gpu.md; logs of each step under $OUT too when it is set. Sized for < 5 minutes on an
# H200 (about 1 min build, 1-2 min tests, 1 min benchmarks). cffi is optional: without it the
# library is bound through ctypes.
set -u -o pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
LOGS=${OUT:-/tmp}
start=$(date +%s)
stamp() { echo "== [$(( $(date +%s) - start ))s] $*"; }

stamp "environment"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>&1 | head -4 || true
command -v nvcc >/dev/null && nvcc --version | tail -2 || echo "nvcc not on PATH (build.find_nvcc also tries \$NVCC, \$CUDA_HOME, /usr/local/cuda)"
"$PY" - <<'PYEOF' || true
import importlib, sys
print("python", sys.version.split()[0])
for name in ("numpy", "yaml", "pytest", "cffi", "hypothesis", "torch"):
    try:
        m = importlib.import_module(name)
        print(f"  {name} {getattr(m, '__version__', '')}")
    except Exception as err:  # noqa: BLE001
        print(f"  {name}: MISSING ({err})")
PYEOF

stamp "build (nvcc, sm_80 + sm_90)"
timeout 600 "$PY" -c "from gpu_backend import build; print(build.build_cuda())" 2>&1 | tee "$LOGS/gpu-build.log" \
    || echo "BUILD FAILED (see above); the tests and benchmarks below will say why they cannot run"

stamp "device"
"$PY" -c "import sys; from gpu_backend import cuda; ok, why = cuda.cuda_status(); print('usable' if ok else 'NOT USABLE', '-', why); sys.exit(0 if ok else 1)" 2>&1
usable=$?

stamp "parity tests (tests/test_cuda.py on the GPU; the host-emulator copies of the tests are left out)"
timeout 420 "$PY" -m pytest -q -k "not emulator" -rs --durations=8 -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$LOGS/gpu-tests.log"
tests_status=$?
if [ "$usable" -ne 0 ] && [ "$tests_status" -eq 0 ]; then
    tests_status=3  # every GPU test skipped: that is not a pass
    echo "NO USABLE GPU: the parity tests only skipped (reasons above)"
fi
[ "$tests_status" -eq 0 ] && echo "PARITY TESTS PASSED" || echo "PARITY TESTS FAILED OR NOT RUN (status $tests_status)"

stamp "python -m gpu_backend (the project's own whole-step parity check of every backend)"
timeout 180 "$PY" -m gpu_backend 2>&1 | tee "$LOGS/gpu-backends.log" || echo "python -m gpu_backend: FAIL or unavailable (see above)"

stamp "benchmarks"
timeout 300 "$PY" benchmarks/gpu_bench.py ${OUT:+--out "$OUT/results-gpu.md"} 2>&1 | tee "$LOGS/gpu-bench.log" \
    || echo "BENCHMARKS FAILED"

stamp "done (parity tests exit $tests_status)"
exit "$tests_status"

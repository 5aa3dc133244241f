#!/usr/bin/env bash
# The GPU check of the CUDA backend, in one command on a machine with an NVIDIA GPU (sm_80 or newer):
#   1. build libniti_cuda.so with nvcc (sm_80 + sm_90);
#   2. the CUDA parity tests (tests/test_cuda.py, GPU half: every op, the GEMM engines, whole lenet /
#      small-VGG training steps bit-identical to the numpy reference, per-node event timing);
#   3. `python -m gpu_backend` (the project's PASS/FAIL line per backend);
#   4. benchmarks/gpu_bench.py: int8 GEMM TOP/s against torch._int_mm / bf16, conv ops and vgg-small-9
#      training images/s in both conv modes (A read in place vs gathered) against torch bf16 autocast;
#   5. the main job on the GPU, `nitisim run --backend cuda` (Fashion-MNIST LeNet, 2 epochs, int8 on
#      CUDA and its fp32 twin on torch CUDA, the shipped accelerators simulated, report.html), then
#      the same integer config trained on the C backend and benchmarks/same_run.py: the two runs
#      must be the same run, bit for bit (checkpoint and every per-epoch accuracy);
#   6. compute-sanitizer memcheck and racecheck over the GEMM and conv parity tests, the implicit conv
#      operand's (its loader reads activation maps directly) included (last: slowest, and bounded so
#      it cannot cost the results above).
#
#   benchmarks/gpu_carry.sh      # first, on a machine with pip: wheels + Fashion-MNIST into .gpucarry/
#   benchmarks/gpu_check.sh      # on the GPU machine; Python: $PYTHON, else python3
#   (device tool: run(command="benchmarks/gpu_check.sh", carry=[".gpucarry"], timeout_s=540))
#
# Every step runs even when an earlier one fails; the exit status is that of the parity tests.
# Output (the device tool brings back at most 8 files): with $OUT set, $OUT/results-gpu.md (the
# benchmark table), $OUT/gpu-check.log (every step's output) and $OUT/run-cuda/{report.html,
# report.md, compare.json, timing.json, summary.json}; without $OUT, the same under docs/gpu-check/.
# Estimated at about 6 minutes on an H200 (not yet run on one); each step has its own timeout, and the steps run in order of
# value, so a call cut short at its limit still returns what the earlier steps wrote.
set -u -o pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEST=${OUT:-docs/gpu-check}
mkdir -p "$DEST"
LOG="$DEST/gpu-check.log"
: >"$LOG"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
start=$(date +%s)
stamp() { echo "== [$(( $(date +%s) - start ))s] $*" | tee -a "$LOG"; }
step() { local limit=$1; shift; timeout "$limit" "$@" 2>&1 | tee -a "$LOG"; return "${PIPESTATUS[0]}"; }

if [ -d .gpucarry/wheels ]; then  # packages the GPU image lacks, prepared by gpu_carry.sh
    stamp "installing carried wheels"
    step 120 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/gpucarry-site .gpucarry/wheels/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/gpucarry-site"
fi

stamp "environment"
step 30 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
command -v nvcc >/dev/null && nvcc --version | tail -2 | tee -a "$LOG" || echo "nvcc not on PATH (build.find_nvcc also tries \$NVCC, \$CUDA_HOME, /usr/local/cuda)" | tee -a "$LOG"
step 60 "$PY" - <<'PYEOF'
import importlib, sys
print("python", sys.version.split()[0])
for name in ("numpy", "yaml", "pytest", "cffi", "hypothesis", "torch", "simpy", "matplotlib"):
    try:
        m = importlib.import_module(name)
        print(f"  {name} {getattr(m, '__version__', '')}")
    except Exception as err:  # noqa: BLE001
        print(f"  {name}: MISSING ({err})")
PYEOF

stamp "1. build (nvcc, sm_80 + sm_90)"
step 300 "$PY" -c "from gpu_backend import build; print(build.build_cuda())" \
    || echo "BUILD FAILED (see above); the steps below will say why they cannot run" | tee -a "$LOG"

stamp "device"
step 60 "$PY" -c "import sys; from gpu_backend import cuda; ok, why = cuda.cuda_status(); print('usable' if ok else 'NOT USABLE', '-', why); sys.exit(0 if ok else 1)"
usable=$?

stamp "2. parity tests (tests/test_cuda.py on the GPU; the host-emulator copies are left out)"
step 300 "$PY" -m pytest -q -k "not emulator" -rs --durations=8 -p no:cacheprovider tests/test_cuda.py
tests_status=$?
if [ "$usable" -ne 0 ] && [ "$tests_status" -eq 0 ]; then
    tests_status=3  # every GPU test skipped: that is not a pass
    echo "NO USABLE GPU: the parity tests only skipped (reasons above)" | tee -a "$LOG"
fi
[ "$tests_status" -eq 0 ] && echo "PARITY TESTS PASSED" | tee -a "$LOG" || echo "PARITY TESTS FAILED OR NOT RUN (status $tests_status)" | tee -a "$LOG"

stamp "3. python -m gpu_backend"
step 180 "$PY" -m gpu_backend || echo "python -m gpu_backend: FAIL or unavailable (see above)" | tee -a "$LOG"

stamp "4. benchmarks"
step 240 "$PY" benchmarks/gpu_bench.py --out "$DEST/results-gpu.md" || echo "BENCHMARKS FAILED" | tee -a "$LOG"

stamp "5. nitisim run --backend cuda, then the same integer run on the C backend"
data=()
[ -d .gpucarry/data ] && data=(--data .gpucarry/data)
work=/tmp/nitisim-gpu-run
rm -rf "$work"
if step 300 "$PY" -m nitisim run --backend cuda --out "$work" "${data[@]}"; then
    mkdir -p "$DEST/run-cuda"
    cp "$work"/report.html "$work"/report.md "$work"/compare.json "$DEST/run-cuda/"
    cp "$work"/runs/*-int8/timing.json "$work"/runs/*-int8/summary.json "$DEST/run-cuda/"
    config=$(ls "$work"/configs/*.yaml | head -1)
    step 300 "$PY" -m nitisim train "$config" --backend cpu --epochs 2 --out "$work/cpu-int8" "${data[@]}" \
        && step 60 "$PY" benchmarks/same_run.py "$work"/runs/*-int8 "$work/cpu-int8" \
        || echo "CUDA AND C RUNS NOT SHOWN IDENTICAL (see above)" | tee -a "$LOG"
else
    echo "nitisim run --backend cuda FAILED (see above)" | tee -a "$LOG"
fi

stamp "6. compute-sanitizer over the GEMM and conv parity tests (memcheck, then racecheck on shared memory)"
if command -v compute-sanitizer >/dev/null; then
    for tool in memcheck racecheck; do
        step 150 compute-sanitizer --tool "$tool" --error-exitcode 9 "$PY" -m pytest -q -x -p no:cacheprovider \
            -k "not emulator and (gemm or conv2d_forward or implicit)" tests/test_cuda.py \
            && echo "compute-sanitizer $tool: clean" | tee -a "$LOG" \
            || echo "compute-sanitizer $tool: ERRORS OR TIMEOUT (see above)" | tee -a "$LOG"
    done
else
    echo "compute-sanitizer not on PATH: skipped" | tee -a "$LOG"
fi

stamp "done (parity tests exit $tests_status)"
exit "$tests_status"

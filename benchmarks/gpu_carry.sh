#!/usr/bin/env bash
# Prepares, on a machine with pip access, what benchmarks/gpu_check.sh needs on a GPU machine that
# can fetch nothing: wheels of the packages its image lacks (cffi + pycparser, simpy) for Python
# 3.12 on x86-64, and the Fashion-MNIST files for the `nitisim run --backend cuda` report. Writes
# .gpucarry/ (git-ignored, about 32 MB), which gpu_check.sh picks up when it is there:
#
#   benchmarks/gpu_carry.sh                 # here, once
#   run(command="benchmarks/gpu_check.sh", carry=[".gpucarry"], timeout_s=540)   # the device tool
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
CARRY=.gpucarry
WHEELS=("cffi==2.0.0" "pycparser==2.23" "simpy==4.1.1")
rm -rf "$CARRY" && mkdir -p "$CARRY/wheels" "$CARRY/data/fashion-mnist"
for spec in "${WHEELS[@]}"; do
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$CARRY/wheels" "$spec"
done
src=${FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
    if [ -f "$src/$f.gz" ]; then cp "$src/$f.gz" "$CARRY/data/fashion-mnist/"
    elif [ -f "$src/$f" ]; then cp "$src/$f" "$CARRY/data/fashion-mnist/"
    else echo "gpu_carry: $src has no $f(.gz): install dataset-fashion-mnist or set FASHION_MNIST" >&2; exit 2
    fi
done
ls -l "$CARRY/wheels" && du -sh "$CARRY"

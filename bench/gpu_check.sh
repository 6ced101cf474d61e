#!/usr/bin/env bash
# The GPU check in one command (see bench/gpu_check.py). On the GPU machine:
#   TRITONEP_COMMIT=$(git rev-parse HEAD) bash bench/gpu_check.sh [--data-dir DIR]
# installs tritonep over the image's own torch/triton (no dependency changes),
# then runs the steps in order of value; results go to $OUT/gpu-check (or
# bench/results/gpu-check), packed into $OUT/gpu-check.tgz at the end when $OUT is set.
# On CPU: bash bench/gpu_check.sh --dry-run
# MNIST is looked for in --data-dir, $TRITONEP_DATA, ../shared/data, ./shared/data and
# ./device-data (what `python bench/device_data.py` prepares to travel with the tree).
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ -z "${TRITONEP_DATA:-}" ] && [ -f device-data/mnist.npz ]; then export TRITONEP_DATA="$PWD/device-data"; fi
# offline machine: no build isolation (setuptools comes from the image); the image
# already has pytest, pytest-benchmark and tqdm. A system Python that refuses installs
# (PEP 668, externally managed) gets --break-system-packages; a venv never needs it.
"$PY" -m pip install -q --no-deps --no-build-isolation -e . \
  || "$PY" -m pip install -q --no-deps --no-build-isolation --break-system-packages -e . \
  || { echo "gpu_check: could not install tritonep with $PY -m pip" >&2; exit 1; }
export PYTHONUNBUFFERED=1 PYTHONFAULTHANDLER=1
"$PY" bench/gpu_check.py "$@"
rc=$?
# a device call brings back only a few files: pack the results into one archive, and keep
# the summary beside it (checkpoints left out)
if [ -n "${OUT:-}" ] && [ -d "$OUT/gpu-check" ]; then
  rm -f "$OUT"/gpu-check/*.ckpt
  tar czf "$OUT/gpu-check.tgz" -C "$OUT" gpu-check \
    && cp "$OUT"/gpu-check/summary.md "$OUT"/gpu-check/gpu-check-*.json "$OUT"/ && rm -rf "$OUT/gpu-check"
fi
exit $rc

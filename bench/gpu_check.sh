#!/usr/bin/env bash
# The GPU check in one command (see bench/gpu_check.py). On the GPU machine:
#   TRITONEP_COMMIT=$(git rev-parse HEAD) bash bench/gpu_check.sh [--data-dir DIR]
# installs tritonep over the image's own torch/triton (no dependency changes),
# prints the versions that run, then tests, benchmarks and trains; results go to
# $OUT (or bench/results/gpu-check). On CPU: bash bench/gpu_check.sh --dry-run
# MNIST is looked for in --data-dir, $TRITONEP_DATA, ../shared/data, ./shared/data
# (a device copy of the repo may need mnist.npz carried into an ignored folder).
set -uo pipefail
cd "$(dirname "$0")/.."
# offline machine: no build isolation (setuptools comes from the image); the image
# already has pytest, pytest-benchmark and tqdm
pip install -q --no-deps --no-build-isolation -e . || exit 1
python - <<'EOF'
import torch, triton
print("torch", torch.__version__, "| triton", triton.__version__, "| cuda", torch.version.cuda,
      "|", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU")
EOF
exec python bench/gpu_check.py "$@"

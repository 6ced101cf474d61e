#!/usr/bin/env bash
# The CIFAR-10 FC rows with the authors' layered model settings (models_LN.py: constant nudge,
# frozen error, readout from the free error) instead of the graph model's; resumable.
cd "$(dirname "$0")/../../.." && . .venv/bin/activate
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
for preset in cifar10-5hl cifar10-10hl; do
  for seed in 0 1 2; do
    out=bench/results/cifar10-layered/$preset/seed$seed.json
    ck=bench/results/cifar10-layered/$preset/seed$seed.ckpt
    if [ -f "$out" ] && python -c "import json,sys; sys.exit(0 if json.load(open('$out')).get('finished') else 1)"; then continue; fi
    resume=""; [ -f "$ck" ] && resume="--resume $ck"
    tritonep train $preset --seed $seed --nudge-schedule constant --error frozen --readout-error free \
      --data-dir ../shared/data --no-download --quiet --out $out $resume
    rm -f "$ck"
  done
done

#!/usr/bin/env bash
# alternating-schedule accuracy runs (issue 21), resumable: rerun the same command
cd /work/main && . .venv/bin/activate
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
for preset in mnist-2hl-alt mnist-5hl-alt mnist-2hl-alt-tol; do
  for seed in 0 1 2; do
    out=bench/results/schedule-accuracy/$preset/seed$seed.json
    ck=bench/results/schedule-accuracy/$preset/seed$seed.ckpt
    if [ -f "$out" ] && python -c "import json,sys; sys.exit(0 if json.load(open('$out')).get('finished') else 1)"; then continue; fi
    resume=""; [ -f "$ck" ] && resume="--resume $ck"
    tritonep train $preset --seed $seed --data-dir ../shared/data --no-download --quiet --out $out $resume
    rm -f "$ck"
  done
done

#!/usr/bin/env bash
# One call on a GPU machine: CUDA correctness tests of the engine, then the GPU goal of
# benchmarks/scaling.py (n = 100,000, p ≈ 800k, mean + variances at 1,000 test points),
# then a quick Jacobian-product benchmark. Results land in $OUT (default /tmp/gpu_check).
#
#   bash benchmarks/gpu_check.sh                 # on the GPU machine, from the repo root
#   DEVICE=cpu bash benchmarks/gpu_check.sh      # dry run of the same steps on a CPU
#
# Each step has its own timeout so one slow step cannot starve the others.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONPATH=".:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
OUT="${OUT:-/tmp/gpu_check}"
DEVICE="${DEVICE:-cuda}"
PY="${PY:-python3}"
mkdir -p "$OUT"

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '')"
  date -u; } | tee "$OUT/machine.txt"

timeout "${TESTS_TIMEOUT:-150}" "$PY" -m pytest -q -p no:cacheprovider -rs \
    tests/test_cuda.py tests/test_linearization.py tests/test_operators.py tests/test_posterior.py \
    -k cuda 2>&1 | tee "$OUT/pytest.txt"

if [[ "$DEVICE" == cuda ]]; then
    timeout "${SCALING_TIMEOUT:-200}" "$PY" benchmarks/scaling.py --device cuda --preset gpu \
        --sweeps goal --json "$OUT/scaling-goal.json" 2>&1 | tee "$OUT/scaling.txt"
    timeout "${PRODUCTS_TIMEOUT:-120}" "$PY" benchmarks/products.py --device cuda --quick \
        --markdown --json "$OUT/products.json" 2>&1 | tee "$OUT/products.txt"
else
    timeout "${SCALING_TIMEOUT:-200}" "$PY" benchmarks/scaling.py --preset quick --sweeps goal n \
        --n 500 --json "$OUT/scaling-goal.json" 2>&1 | tail -5 | tee "$OUT/scaling.txt"
fi
echo "gpu_check done" | tee -a "$OUT/machine.txt"

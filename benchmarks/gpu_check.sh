#!/usr/bin/env bash
# One call on a GPU machine: CUDA correctness tests of the engine, the GPU goal of
# benchmarks/scaling.py (n = 100,000, p ≈ 800k, mean + variances at 1,000 test points),
# the Jacobian-product and Fisher-product benchmarks, then as much of the scaling sweeps
# (Figure 2: time vs n and vs p) as fits. Results land in $OUT (default /tmp/gpu_check).
#
#   bash benchmarks/gpu_check.sh                 # on the GPU machine, from the repo root
#   DEVICE=cpu bash benchmarks/gpu_check.sh      # dry run of the same steps on a CPU
#   STEPS="pytest fisher" bash benchmarks/gpu_check.sh   # only some steps
#   STEPS="experiments" bash benchmarks/gpu_check.sh     # the library's timing experiments
#   STEPS="torchrun-nccl streaming-goal similarity-full" bash benchmarks/gpu_check.sh
#   STEPS="classification-full" bash benchmarks/gpu_check.sh
#       what the open issues still need a GPU for: issue 13's NCCL path (torchrun on every
#       GPU against the exact one-process posterior) and streaming goal (n = 10⁶, p = 803,601,
#       ≤ 2 min); issue 9's full presets (Jacobian similarity: 25 seeds × 3 data sets, 2,000
#       probes; classification: PreResNet-20/56/110). Each fits one device call.
#
# Each step has its own timeout so one slow step cannot starve the others; the defaults
# add up to 660 s (one device call may run 600 s: run the steps in two calls, or lower
# the timeouts).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONPATH=".:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
OUT="${OUT:-/tmp/gpu_check}"
DEVICE="${DEVICE:-cuda}"
PY="${PY:-python3}"
mkdir -p "$OUT"
# The commit every log below measured: from git here, or NTKCORE_GIT_COMMIT when the tree was
# copied without .git (run as `NTKCORE_GIT_COMMIT=$(git rev-parse HEAD) bash ...`).
COMMIT="$(git rev-parse HEAD 2>/dev/null || echo "${NTKCORE_GIT_COMMIT:-unknown}")"
export NTKCORE_GIT_COMMIT="$COMMIT"

{ echo "git commit: $COMMIT"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '')"
  date -u; } | tee "$OUT/machine.txt"

STEPS="${STEPS:-pytest scaling-goal products fisher scaling-sweeps scaling-p1e8}"

step() {  # step NAME TIMEOUT CMD...: run with a timeout, log to $OUT/NAME.txt, time it
    local name=$1 limit=$2; shift 2
    [[ " $STEPS " == *" $name "* ]] || return 0
    local t0=$SECONDS
    echo "git commit: $COMMIT; $(date -u); $*" > "$OUT/$name.txt"
    timeout "$limit" "$@" >> "$OUT/$name.txt" 2>&1
    local rc=$?
    echo "step $name: rc=$rc, $((SECONDS - t0)) s" | tee -a "$OUT/machine.txt"
    tail -n 25 "$OUT/$name.txt"
}

step pytest "${TESTS_TIMEOUT:-60}" "$PY" -m pytest -q -p no:cacheprovider -rs \
    tests/test_cuda.py tests/test_linearization.py tests/test_operators.py tests/test_posterior.py \
    -k cuda

if [[ "$DEVICE" == cuda ]]; then
    step scaling-goal "${SCALING_TIMEOUT:-100}" "$PY" benchmarks/scaling.py --device cuda \
        --preset gpu --sweeps goal --json "$OUT/scaling-goal.json"
    step products "${PRODUCTS_TIMEOUT:-110}" "$PY" benchmarks/products.py --device cuda \
        --markdown --json "$OUT/products.json"
    step fisher "${FISHER_TIMEOUT:-240}" "$PY" benchmarks/fisher.py --device cuda \
        --out "$OUT/fisher-cuda"
    step scaling-sweeps "${SWEEPS_TIMEOUT:-150}" "$PY" benchmarks/scaling.py --device cuda \
        --preset gpu --sweeps n p --budget 110 --json "$OUT/scaling-sweeps.json"
    # p ≈ 10⁸ at n = 1,000 (function space; the rank is capped by the factor's memory)
    step scaling-p1e8 "${P1E8_TIMEOUT:-150}" "$PY" benchmarks/scaling.py --device cuda \
        --preset gpu --sweeps p --p-hidden 2236 --methods function --budget 140 \
        --json "$OUT/scaling-p1e8.json"
    # not in the default STEPS: the library's Figure 2 experiments (what the Timing page runs)
    step experiments "${EXPERIMENTS_TIMEOUT:-240}" bash -c "
        set -e
        $PY -m ntkcore.experiments timing-n --preset full --device cuda --quiet \
            --sizes 1000 10000 50000 --budget-s 60 --out '$OUT/timing-n.csv'
        $PY -m ntkcore.experiments timing-p --preset full --device cuda --quiet \
            --widths 20 63 200 632 --budget-s 60 --out '$OUT/timing-p.csv'
        $PY -m ntkcore.experiments fisher-products --preset full --device cuda --quiet \
            --out '$OUT/fisher-products.csv'"
    NGPU="$(nvidia-smi -L 2>/dev/null | wc -l)"
    step torchrun-nccl "${NCCL_TIMEOUT:-120}" "$PY" benchmarks/torchrun_check.py \
        --backend nccl --nproc "${NGPU:-1}" --out "$OUT/torchrun-nccl.json"
    step streaming-goal "${STREAMING_TIMEOUT:-200}" "$PY" benchmarks/streaming.py --device cuda \
        --n 1000000 --widths 5,200,2000,200,1 --stream 100000 --tol 1e-3 --threads 8 \
        --out "$OUT/streaming-cuda.json"
    step similarity-full "${SIMILARITY_TIMEOUT:-420}" "$PY" -m ntkcore.experiments \
        jacobian-similarity --preset full --device cuda --quiet --out "$OUT/similarity-full.csv"
    step classification-full "${CLASSIFICATION_TIMEOUT:-540}" "$PY" -m ntkcore.experiments \
        classification --preset full --device cuda --quiet --out "$OUT/classification-full.csv"
else
    # dry runs of the open issues' GPU steps at CPU sizes (same commands and code paths)
    step torchrun-nccl "${NCCL_TIMEOUT:-200}" "$PY" benchmarks/torchrun_check.py \
        --backend gloo --nproc 2 --out "$OUT/torchrun-gloo.json"
    step streaming-goal "${STREAMING_TIMEOUT:-200}" "$PY" benchmarks/streaming.py \
        --n 20000 --widths 5,20,200,20,1 --stream 5000 --tol 1e-3 --out "$OUT/streaming-cpu.json"
    step similarity-full "${SIMILARITY_TIMEOUT:-300}" "$PY" -m ntkcore.experiments \
        jacobian-similarity --seeds 2 --n-probe 20 --quiet --out "$OUT/similarity-dry.csv"
    step classification-full "${CLASSIFICATION_TIMEOUT:-300}" "$PY" -m ntkcore.experiments \
        classification --quiet --out "$OUT/classification-dry.csv"
    step scaling-goal "${SCALING_TIMEOUT:-200}" "$PY" benchmarks/scaling.py --preset quick \
        --sweeps goal n --n 500 --json "$OUT/scaling-goal.json"
    step products "${PRODUCTS_TIMEOUT:-200}" "$PY" benchmarks/products.py --quick \
        --models mlp --ks 1,8 --markdown
    step fisher "${FISHER_TIMEOUT:-200}" "$PY" benchmarks/fisher.py --quick --models mlp \
        --reference exact32 --out "$OUT/fisher-cpu"
    # one thread: with two OpenMP threads on a busy 2-core machine these small problems
    # wait on descheduled threads (a small preset took > 240 s instead of ~20 s)
    step experiments "${EXPERIMENTS_TIMEOUT:-240}" env OMP_NUM_THREADS=1 bash -c "
        set -e
        $PY -m ntkcore.experiments timing-n --preset small --quiet --out '$OUT/timing-n.csv'
        $PY -m ntkcore.experiments timing-p --preset small --quiet --out '$OUT/timing-p.csv'
        $PY -m ntkcore.experiments fisher-products --preset small --quiet \
            --out '$OUT/fisher-products.csv'"
fi
echo "gpu_check done" | tee -a "$OUT/machine.txt"

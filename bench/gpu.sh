#!/usr/bin/env bash
# Run the GPU-relevant benchmarks (train_step, cka, extract, scaling) on CUDA in one go (about 5 minutes on
# an H100), writing <name>-cuda.json and BENCHMARKS-gpu.md to $OUT when set (else bench/results/).
#
#   bash bench/gpu.sh                 # full sizes
#   BENCH_QUICK=1 bash bench/gpu.sh   # smoke run (seconds)
#
# Needs only torch, numpy and the library's core dependencies (no streamlit/plotly/captum). The comparison
# packages of the cka benchmark (pure-Python wheels) are installed from .whl/ when it holds them:
#   pip download --no-deps -d .whl pytorch-cka==1.1.3 ckatorch==1.0.3   (on a machine with PyPI)
# otherwise the cka result lists them as unavailable. Each benchmark has its own time limit, so one that
# hangs cannot eat the others' time.
set -uo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ] && .venv/bin/python -c "import torch" 2>/dev/null; then PY=.venv/bin/python; else PY=python3; fi
fi
OUT_DIR=${OUT:-bench/results}
mkdir -p "$OUT_DIR"
QUICK=()
[ -n "${BENCH_QUICK:-}" ] && QUICK=(--quick)
THREADS=${BENCH_THREADS:-4}
export PYTHONUNBUFFERED=1

if ls .whl/pytorch_cka-*.whl .whl/ckatorch-*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/bench-site \
    .whl/pytorch_cka-*.whl .whl/ckatorch-*.whl && export PYTHONPATH="/tmp/bench-site${PYTHONPATH:+:$PYTHONPATH}"
fi

"$PY" - <<'EOF' || { echo "[gpu.sh] no CUDA device visible to torch"; exit 1; }
import torch
assert torch.cuda.is_available()
print(f"[gpu.sh] {torch.cuda.get_device_name()} torch {torch.__version__} cuda {torch.version.cuda}")
EOF

status=0
run() {  # name, time limit in seconds
  local t0=$SECONDS
  timeout "$2" "$PY" -m bench "$1" --device cuda --threads "$THREADS" --out "$OUT_DIR" "${QUICK[@]}" \
    || { echo "[gpu.sh] $1 failed or ran past $2 s"; status=1; }
  echo "[gpu.sh] $1: $((SECONDS - t0)) s"
}
run train_step 90
run extract 45
run cka 90
run scaling 120

"$PY" -m bench report --results "$OUT_DIR" --output "$OUT_DIR/BENCHMARKS-gpu.md" || status=1
exit $status

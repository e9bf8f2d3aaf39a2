#!/usr/bin/env bash
# Continue the paper's ResNet-20 / CIFAR-100 pair (baseline and Tf-FD, `--recipe paper`, seed 0, bf16) on one GPU
# within one device call: both runs side by side on the same card, data resident on the GPU, augmentation as
# batched tensor ops (tffd_viz.train), a resume state written after every epoch, and each run stopping by itself
# (resumable) before LIMIT seconds of training. Whatever it reached is continued by the next call or by the CPU
# path (`tffd-viz train ... --resume`), the same command and the same files.
#
#   mkdir -p data && cp ../shared/data/cifar100-jpeg.npz data/     # 53.6 MiB; data/ is git-ignored
#   bash bench/train_gpu.sh 480                                    # on the device: OUT=<folder to bring back>
#   TFFD_GPU_SMOKE=1 DEVICE=cpu bash bench/train_gpu.sh 20          # here: a tiny run through the same path
#
# Starting states: $OUT/<stem>.resume.pt if present, else checkpoints/<stem>.resume.pt (copied to $OUT), else
# epoch 0. Results in $OUT: <stem>.resume.pt, <stem>.log and, once epoch 240 is done, <stem>.safetensors/.json.
# Needs only torch, torchvision, numpy and the library's core (no streamlit, plotly or captum).
set -uo pipefail
cd "$(dirname "$0")/.."

LIMIT=${1:-480}
OUT_DIR=${OUT:-runs/gpu}
DATA=${TFFD_GPU_DATA:-data}
DEVICE=${DEVICE:-cuda}
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ] && .venv/bin/python -c "import torch" 2>/dev/null; then PY=.venv/bin/python; else PY=python3; fi
fi
EXTRA=()
if [ -n "${TFFD_GPU_SMOKE:-}" ]; then EXTRA=(--limit-train 256 --probe-size 16); fi
mkdir -p "$OUT_DIR"
export PYTHONUNBUFFERED=1

pids=()
for method in baseline tffd; do
  stem="cifar100_resnet20_${method}_paper240_s0"
  if [ ! -f "$OUT_DIR/$stem.resume.pt" ] && [ -f "checkpoints/$stem.resume.pt" ] && [ -z "${TFFD_GPU_SMOKE:-}" ]; then
    cp "checkpoints/$stem.resume.pt" "$OUT_DIR/"
  fi
  "$PY" -m tffd_viz train --recipe paper --dataset cifar100 --data-root "$DATA" --method "$method" \
    --precision bf16 --seed 0 --device "$DEVICE" --threads 4 --resume --time-limit "$LIMIT" \
    --out "$OUT_DIR/$stem.safetensors" "${EXTRA[@]}" >"$OUT_DIR/$stem.log" 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
for method in baseline tffd; do
  stem="cifar100_resnet20_${method}_paper240_s0"
  echo "[train_gpu] $stem: $(grep -c '^epoch ' "$OUT_DIR/$stem.log") epochs this call; last: $(grep '^epoch ' "$OUT_DIR/$stem.log" | tail -n 1 | cut -c1-60)"
  tail -n 3 "$OUT_DIR/$stem.log" | grep -iE 'error|Traceback' && status=1
done
exit "$status"

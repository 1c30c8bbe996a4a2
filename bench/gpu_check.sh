#!/usr/bin/env bash
# The GPU check, ready to run on one CUDA GPU in under 8 minutes: CUDA AMP training of yolov5n and yolov5n-decoupled
# (1 epoch each), the same under torchrun (DDP, 1 process), val.py / detect.py / export.py with --half, and training
# images/s ours vs YOLOv5 v7.0 on the same GPU when a YOLOv5 is given; one table at the end (and $OUT/gpu_check.md).
#
#   bash bench/gpu_check.sh [--out DIR] [--yolov5 DIR --python PY] [--device 0] [--dry-run]
#
# --dry-run prints the commands without running them (tests/test_bench.py checks them on the CPU: every script and
# flag exists). Each step's log is $OUT/<step>.log; a failed step is marked FAIL in the table and the rest still run.
# Missing Python packages on a machine without network (pycocotools, thop): put their wheels in .whl/ and they are
# installed into /tmp/site first (see /work/.library/device/README.md's notes).
set -uo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-runs/gpu_check}
DEVICE=0
YOLOV5=""
PY=${PYTHON:-python3}
REF_PY=""
DRY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT=$2; shift 2 ;;
    --device) DEVICE=$2; shift 2 ;;
    --yolov5) YOLOV5=$2; shift 2 ;;
    --python) REF_PY=$2; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
REF_PY=${REF_PY:-$PY}

if [ "$DRY" -eq 0 ]; then
  mkdir -p "$OUT"
  if ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
  fi
  if ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check.sh: no CUDA device visible to $PY (torch.cuda.is_available() is False): run it on a GPU machine" >&2
    exit 2
  fi
fi

ROWS=()
step() {  # step NAME COMMAND...: run (or print) one step, time it, record PASS/FAIL and the log's last figure line
  local name=$1; shift
  if [ "$DRY" -eq 1 ]; then echo "$*"; return; fi
  local t0=$SECONDS
  echo "== $name: $*"
  "$@" >"$OUT/$name.log" 2>&1
  local rc=$? status=PASS
  [ $rc -eq 0 ] || status="FAIL (rc $rc)"
  local fig
  fig=$(grep -E "all +[0-9]+ +[0-9]+|images/s|FPS|Export complete|mAP" "$OUT/$name.log" | tail -n 1 | tr -s ' ' | cut -c1-90)
  ROWS+=("| $name | $status | $((SECONDS - t0)) s | ${fig:-see $name.log} |")
}

COMMON=(--epochs 1 --imgsz 320 --batch-size 64 --device "$DEVICE" --project "$OUT" --exist-ok --workers 8)
step amp_yolov5n $PY train.py --cfg yolov5n.yaml "${COMMON[@]}" --name amp_yolov5n
step amp_yolov5n_decoupled $PY train.py --cfg yolov5n-decoupled.yaml "${COMMON[@]}" --name amp_yolov5n_decoupled
step ddp_yolov5n_decoupled $PY -m torch.distributed.run --nproc_per_node 1 train.py --cfg yolov5n-decoupled.yaml \
  "${COMMON[@]}" --name ddp_yolov5n_decoupled
W="$OUT/amp_yolov5n_decoupled/weights/best.pt"
step val_half $PY val.py --weights "$W" --half --device "$DEVICE" --project "$OUT" --name val_half --exist-ok
step detect_half $PY detect.py --weights "$W" --half --device "$DEVICE" --project "$OUT" --name detect_half --exist-ok
step export_half $PY export.py --weights "$W" --include onnx --half --device "$DEVICE"
step throughput_ours $PY bench/train_throughput.py --cfg yolov5n.yaml yolov5n-decoupled.yaml --device "$DEVICE"
if [ -n "$YOLOV5" ]; then
  step vs_yolov5_train $PY bench/vs_yolov5.py --yolov5 "$YOLOV5" --python "$REF_PY" --tasks train --train-rounds 1
fi

[ "$DRY" -eq 1 ] && exit 0
{
  echo "GPU check on $($PY -c 'import torch; print(torch.cuda.get_device_name(0), "| torch", torch.__version__)')"
  echo
  echo "| step | result | wall | last figure line |"
  echo "|---|---|---|---|"
  printf '%s\n' "${ROWS[@]}"
} | tee "$OUT/gpu_check.md"
grep -q FAIL "$OUT/gpu_check.md" && exit 1 || exit 0

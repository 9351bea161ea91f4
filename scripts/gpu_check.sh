#!/usr/bin/env bash
# The CUDA paths, measured in one go (at most about 5 minutes on one GPU machine); the last line is JSON:
#   gpu_name, gpu_count, benchmark.py train img/s of MobileNetV3 and ResNet50 at 224 px (bf16, channels_last),
#   one epoch of MobileNetV3 on UTKFace (seconds, test accuracies), an estimate of the 5-fold x 10-epoch
#   MobileNetV3 cross-validation, and with 2+ GPUs a 2-rank data-parallel and a parallel-folds smoke run.
#
#   scripts/gpu_check.sh                   # needs a CUDA GPU; UTKFACE=../shared/utkface by default
#   scripts/gpu_check.sh --cpu-dry-run     # the same steps on the CPU with the demo data and tiny sizes
#
# Environment: PYTHON (default .venv/bin/python, else python3), UTKFACE (the UTKFace folder).
# Exit status: 0 measured, 1 no GPU or a step failed (one sentence on stderr).
set -uo pipefail

cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY="$(command -v python3)"
DRY=0
case "${1:-}" in
  "") ;;
  --cpu-dry-run) DRY=1 ;;
  *) echo "error: unknown option ${1}; the only option is --cpu-dry-run." >&2; exit 2 ;;
esac
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
export AUDIENCE_HOME="$WORK/home" HF_HUB_OFFLINE=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

fail() { echo "error: $1" >&2; exit 1; }

"$PY" -c 'import json, torch
n = torch.cuda.device_count()
print(json.dumps({"gpu_count": n, "gpu_name": torch.cuda.get_device_name(0) if n else None,
                  "torch": torch.__version__, "cuda": torch.version.cuda}))' > "$WORK/gpu.json" \
  || fail "python with torch could not start ($PY); run make first or set PYTHON."
COUNT="$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["gpu_count"])' "$WORK/gpu.json")"
if [ "$DRY" = 0 ] && [ "$COUNT" = 0 ]; then
  fail "no CUDA GPU is visible (torch.cuda.device_count() is 0), so there is nothing to check; run it on a GPU machine, or with --cpu-dry-run to test the script on the CPU."
fi

if [ "$DRY" = 1 ]; then
  DATA=demo; ARCHS="tiny"; SIZE=32; BENCH=(--batches 2 --batch-size 8 --repeats 1 --device cpu --full-size 64)
  EPOCH=(--data demo --arch tiny --image-size 32 --batch-size 16 --max-train-batches 2 --device cpu)
  SMOKE=(--data demo --arch tiny --image-size 32 --batch-size 16 --max-train-batches 2 --device cpu)
  SMOKES=2  # the CPU stands in for two GPUs (gloo), so the multi-GPU steps run too
else
  DATA=demo; ARCHS="mobilenetv3_large_100 resnet50"; SIZE=224; BENCH=(--batches 20 --batch-size 128 --repeats 1)
  UTKFACE="${UTKFACE:-../shared/utkface}"
  [ -d "$UTKFACE" ] || fail "the UTKFace folder $UTKFACE does not exist; set UTKFACE=/path/to/UTKFace."
  EPOCH=(--data "$UTKFACE" --arch mobilenetv3_large_100 --image-size 224 --batch-size 128 --no-pretrained)
  SMOKE=(--data demo --arch mobilenetv3_large_100 --image-size 224 --batch-size 64 --max-train-batches 5)
  SMOKES="$COUNT"
fi

# benchmark.py train: on CUDA it times both archs with bf16 + channels_last (its "cuda" section).
for arch in $ARCHS; do
  "$PY" scripts/benchmark.py train --data "$DATA" --arch "$arch" --image-size "$SIZE" "${BENCH[@]}" \
    > "$WORK/bench-$arch.txt" 2> "$WORK/bench-$arch.err" \
    || fail "benchmark.py train failed for $arch: $(tail -n 1 "$WORK/bench-$arch.err")"
  tail -n 1 "$WORK/bench-$arch.txt" > "$WORK/bench-$arch.json"
  [ "$DRY" = 1 ] || break  # one benchmark run measures both archs on CUDA
done

timed_run() {  # name, then the train.py flags; writes $WORK/<name>.json with seconds and the run folder
  local name="$1"; shift
  local start end
  start="$(date +%s.%N)"
  "$@" --quiet --out "$WORK/runs-$name" > "$WORK/$name.out" 2> "$WORK/$name.err" \
    || fail "the $name run failed: $(grep -m 1 '^error' "$WORK/$name.err" || tail -n 1 "$WORK/$name.err")"
  end="$(date +%s.%N)"
  "$PY" -c 'import json, sys; print(json.dumps({"seconds": float(sys.argv[2]) - float(sys.argv[1]),
        "run_dir": open(sys.argv[3]).read().split("run folder: ")[-1].strip()}))' \
    "$start" "$end" "$WORK/$name.out" > "$WORK/$name.json"
}

timed_run epoch "$PY" scripts/train.py "${EPOCH[@]}" --folds 0 --epochs 1
if [ "$SMOKES" -ge 2 ]; then
  TORCHRUN=("$PY" -m torch.distributed.run --standalone --nproc_per_node 2)
  timed_run data_parallel "${TORCHRUN[@]}" scripts/train.py "${SMOKE[@]}" --folds 0 --epochs 1
  timed_run parallel_folds "${TORCHRUN[@]}" scripts/train.py "${SMOKE[@]}" --folds 0,1 --epochs 1 --parallel-folds
fi

"$PY" -m audience.bench.gpu_report "$WORK" $([ "$DRY" = 1 ] && echo --dry-run) \
  || fail "the report could not be made from $WORK."

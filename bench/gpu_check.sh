#!/usr/bin/env bash
# Every GPU check and figure in one run, for a machine with one CUDA GPU and PyTorch installed
# (the package itself is used from src/, no install needed):
#   CUDA tests (speed options train, float32 checkpoints, GPU predicts what the CPU predicts),
#   the training step in each speed setting at the seed's [48,148,148] x 8 and the full loop,
#   patch buffer build with several workers, the quick preset's probe, whole-volume prediction
#   (training tile vs automatic tile), torch.compile, and a
#   one-process NCCL run through torchrun.
#     bash bench/gpu_check.sh            # logs in ./gpu_logs (or $OUT)
# Each part is limited to PART_LIMIT seconds (default 150) so one hang cannot eat the rest;
# PARTS="tests predict" runs only those parts.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${OUT:-gpu_logs}
mkdir -p "$out"
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
limit=${PART_LIMIT:-150}

part() {
  local name=$1 start=$SECONDS
  shift
  [[ -z ${PARTS:-} || " $PARTS " == *" $name "* ]] || return 0
  echo "== $name: $*"
  timeout "$limit" "$@" 2>&1 | tee "$out/$name.log"
  echo "== $name: exit ${PIPESTATUS[0]} after $((SECONDS - start)) s"
}

nvidia-smi -L
"$py" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(), 'cores', __import__('os').cpu_count())"
size=(--device cuda --size-in 48 148 148 --batch 8 --iters 10)
part tests "$py" -m pytest -q -p no:cacheprovider -o filterwarnings=default tests/test_cuda.py
part step "$py" bench/bench_train_step.py "${size[@]}" --modes fp32 bf16 bf16+cl fp16 --loop bf16
part buffer "$py" bench/bench_buffer.py --workers 1 4 8
part quick "$py" -m napari_cellseg_trainer config template --preset quick --device cuda --minutes 10
part predict "$py" bench/bench_predict.py --device cuda --seconds 60
part compile "$py" bench/bench_train_step.py "${size[@]}" --modes bf16 bf16+compile bf16+cl+compile
part ddp "$py" bench/bench_ddp.py --device cuda --procs 1 --size-in 48 148 148 --batch 8 --epochs 3

#!/usr/bin/env bash
# The GPU figures of the README ("Measured on one H200") in one run, on a machine with one CUDA GPU:
#
#   OUT=outputs/gpu bash benchmarks/gpu_check.sh      # from the repository root, data/components present (~9 min)
#
# 1. edit latency, small and paper profile (benchmarks.edit), and fp32 against bf16 (benchmarks.dtype);
# 2. training steps at the paper profile, bf16 autocast, every stage and part (benchmarks.train_cost);
# 3. the sketch autoencoder of the mouth at the default params, plain and under torchrun (NCCL, DDP);
# 4. 8 images per step: bg's local stage, fusion, and the mouth's local stage in fp32;
# 5. the mouth at 1 image per step with autocast off and with cudnn.benchmark off.
# Each check has its own time limit and later ones are skipped past BUDGET seconds, so one
# failure or a slow machine still returns what ran. Everything goes to $OUT/gpu.log.
set -u
OUT=${OUT:-outputs/gpu}
BUDGET=${BUDGET:-500}  # seconds: no check starts later, so the run stays under 10 min
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 COLUMNS=170
exec > >(tee -a "$OUT/gpu.log") 2>&1

check() {  # check NAME LIMIT_S COMMAND...: runs it unless the budget is spent, reports its exit and time
    local name=$1 limit=$2 t0=$SECONDS
    shift 2
    if (( SECONDS > BUDGET )); then echo "== $name: skipped (${SECONDS} s spent, budget ${BUDGET} s)"; return; fi
    echo "== $name ($(date +%T))"
    timeout "$limit" "$@"
    echo "== $name: exit $?, $((SECONDS - t0)) s"
}

if [ -d .whl ]; then  # wheels of what the machine's Python lacks (here kornia and dvclive), installed aside
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || exit 2
    export PYTHONPATH=/tmp/site
fi
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
python3 -c "import torch, kornia, dvclive, pipeline.training.loop as L; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'cudnn', torch.backends.cudnn.version(), torch.cuda.get_device_name(), 'kornia', kornia.__version__)" || exit 3
lscpu | grep -E "^Model name|^CPU\(s\)"

check edit 90 python3 -m benchmarks.edit --device cuda --paper-iters 10
check dtype 120 python3 -m benchmarks.dtype --device cuda --iters 5 --no-onnx --no-commands
check train-cost 330 python3 -m benchmarks.train_cost --batches 1 --steps 10 --gpu h200 --gpus 8 --out "$OUT/cost_b1.json"

# The default params' sketch autoencoder of the mouth (small profile): one process, then torchrun.
ddp() {  # a function: `check` runs it through bash -c
    local t0
    for how in plain torchrun; do
        rm -rf checkpoints/sketch_ae/mouth.pt "/tmp/models_$how"
        t0=$SECONDS
        if [ $how = plain ]; then
            python3 -m stages.cli train-sketch-ae --part mouth --models "/tmp/models_$how" ${DDP_STEPS:+--steps $DDP_STEPS} \
                || return 1
        else
            python3 -m torch.distributed.run --standalone --nproc-per-node 1 \
                -m stages.cli train-sketch-ae --part mouth --models "/tmp/models_$how" ${DDP_STEPS:+--steps $DDP_STEPS} \
                || return 1
        fi
        echo "-- $how: $((SECONDS - t0)) s wall, dvclive/sketch_ae/mouth/metrics.json:"
        tr -d ' \n' < dvclive/sketch_ae/mouth/metrics.json; echo
    done
}
export -f ddp
check torchrun 150 bash -c ddp

# 8 images per step on one GPU (the recipe's global batch): the largest part's local stage and
# fusion (each on untrained upstream weights), then the mouth's local stage in fp32 against bf16.
check train-cost-b8-bg 90 python3 -m benchmarks.train_cost --parts bg --stages local --batches 8 --steps 5 --gpu h200 \
    --gpus 1 --out "$OUT/cost_b8_bg.json"
check train-cost-b8-fusion 120 python3 -m benchmarks.train_cost --stages fusion --batches 8 --steps 5 --gpu h200 --gpus 1 \
    --out "$OUT/cost_b8_fusion.json"
check train-cost-b8-fp32 90 python3 -m benchmarks.train_cost --parts mouth --stages local --batches 8 --steps 5 \
    --gpu h200 --gpus 1 --amp off --out "$OUT/cost_b8_fp32.json"
# At 1 image per step, the mouth in fp32 and with cuDNN's heuristic kernels (measured once: README).
check train-cost-fp32 90 python3 -m benchmarks.train_cost --parts mouth --batches 1 --steps 10 --gpu h200 --amp off \
    --out "$OUT/cost_fp32.json"
check train-cost-cudnn-off 90 python3 -m benchmarks.train_cost --parts mouth --batches 1 --steps 10 --gpu h200 \
    --no-cudnn-benchmark --out "$OUT/cost_cudnn_off.json"
echo "== done in ${SECONDS} s"

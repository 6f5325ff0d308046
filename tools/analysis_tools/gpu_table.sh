#!/usr/bin/env bash
# The GPU table of issue 12 (item 7) in one run of at most about 5 minutes:
# FcaFormer-L1..L4 against ConvNeXt-T, Swin-T and EfficientFormer-L3 as
# 1000-way classifiers at 224x224 (tools/analysis_tools/benchmark.py
# --table edge), in fp32, fp16 and bf16:
#   1. latency at batch 1 and throughput at batch 64 (the paper's RTX 3090
#      figure uses batch 64);
#   2. training step time and its peak memory (CUDA allocator) at batch 64.
#
# Usage: bash tools/analysis_tools/gpu_table.sh [OUT_DIR]
#   (default work_dirs/gpu_table). Each part writes OUT_DIR/<part>.json and
#   OUT_DIR/<part>.txt; a part that runs past its time limit is stopped and
#   reported, and the next one still runs.
# Settings through the environment (defaults for the GPU table): DEVICE
# (cuda), MODELS, PRECISIONS (fp32 fp16 bf16), SIZE (224 224), BATCH (64),
# TRAIN_BATCH (64), WARMUP (3), REPEATS (20), TRAIN_REPEATS (10),
# PART_LIMIT_S (140), PYTHON (python3).
set -uo pipefail

out=${1:-work_dirs/gpu_table}
device=${DEVICE:-cuda}
models=${MODELS:-fcaformer-l1 fcaformer-l2 fcaformer-l3 fcaformer-l4 convnext-t swin-t efficientformer-l3}
precisions=${PRECISIONS:-fp32 fp16 bf16}
size=${SIZE:-224 224}
limit=${PART_LIMIT_S:-140}
python=${PYTHON:-python3}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mkdir -p "$out"

if [[ $device == cuda* ]] && command -v nvidia-smi >/dev/null; then
    nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || true
fi

failed=()
part() {  # part NAME ARGS...: one benchmark run, stopped after $limit s
    local name=$1
    shift
    echo "== $name ($(date +%T))"
    # shellcheck disable=SC2086
    timeout "$limit" "$python" "$here/benchmark.py" --table edge \
        --device "$device" --models $models --precisions $precisions \
        --size $size --json "$out/$name.json" "$@" 2>&1 | tee "$out/$name.txt"
    local rc=${PIPESTATUS[0]}
    if [[ $rc -ne 0 ]]; then
        echo "== $name failed (exit $rc; 124: over its $limit s)"
        failed+=("$name")
    fi
}

part inference --metrics latency throughput --batch "${BATCH:-64}" \
    --warmup "${WARMUP:-3}" --repeats "${REPEATS:-20}"
part train --metrics train train-memory --train-batch "${TRAIN_BATCH:-64}" \
    --warmup "${WARMUP:-3}" --repeats "${TRAIN_REPEATS:-10}"

echo "== done ($(date +%T)): results in $out"
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "== failed parts: ${failed[*]}"
    exit 1
fi

#!/usr/bin/env bash
# Item 6 of the benchmarks: items 1 and 2 on a GPU at 224 px, with resnet50 and densenet121 (bf16 autocast and
# channels_last, as a GPU trial runs), the GPU's utilisation sampled for each side. About 5 minutes on one H100.
#
#   bash bench/gpu_item6.sh [DATA_DIR] [OUT_DIR]     # defaults: ../shared/data, bench/results
#
# DATA_DIR holds chest_xray_fullres/ and chest_xray/train/ (see ../shared/data/README.md). Needs torch with CUDA,
# timm and OpenCV; not Ray. Writes pipeline_speed_gpu.json and trial_efficiency_gpu.json to OUT_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-../shared/data}
out=${2:-bench/results}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
python3 -m bench.pipeline_speed --device cuda --data "$data/chest_xray_fullres" "$data/chest_xray/train" \
    --out "$out/pipeline_speed_gpu.json"
python3 -m bench.trial_efficiency --device cuda --size 224 --batch-size 64 --backbones resnet50 densenet121 \
    --data synthetic:1000 "$data/chest_xray/train" --out "$out/trial_efficiency_gpu.json"

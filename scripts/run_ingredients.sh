#!/usr/bin/env bash
# The docs/beyond_the_paper.md measurement: every ingredient alone and the preset against plain MRNet and pix2pix,
# one compare.py call per (dataset, budget). Usage: scripts/run_ingredients.sh DATASET_TAG DATAROOT SLICES [FLAGS]
# (short budget 40 training slices, long 200 = 5x); FLAGS go to compare.py last and win (the tuning sweeps:
# --models mrnet --model_args mrnet="--loss_region body" --ablation body_dilation=0,2,5). CPU-sized, smaller than
# the quick start: ngf/ndf 8, SAM input 256 with a small random SAM ViT (embed 96, depth 4), batch 1, one epoch,
# slices with >= 5 % body.
set -euo pipefail
cd "$(dirname "$0")/.."
tag=$1 root=$2 slices=$3
export OMP_NUM_THREADS=1
exec nice -n 10 python scripts/compare.py --name "ingredients_${tag}_${slices}" --ablation synthrad2025 --quiet \
  --dataroot "$root" --checkpoints_dir checkpoints/i20 --results_dir results/i20 --time_slices 5 \
  --ngf 8 --ndf 8 --sam_input_size 256 --sam_embed_dim 96 --sam_depth 4 --sam_num_heads 3 \
  --sam_global_attn_indexes 1,3 --batch_size 1 --lr 2e-4 --gpu_ids -1 --num_threads 0 --n_epochs 1 \
  --n_epochs_decay 0 --val_freq 0 --min_foreground 0.05 --display_id 0 --print_freq 10 \
  --max_dataset_size "$slices" "${@:4}"

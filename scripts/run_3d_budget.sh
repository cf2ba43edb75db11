#!/usr/bin/env bash
# The docs/beyond_the_paper.md measurement of the 3D row: plain MRNet, the --recipe synthrad2025 preset and the 3D
# U-Net (--model unet3d, 32^3 patches, sliding windows) at equal training time, one compare.py call per
# (dataset, budget). Usage: scripts/run_3d_budget.sh DATASET_TAG DATAROOT MINUTES [FLAGS]. CPU-sized as
# scripts/run_ingredients.sh (ngf/ndf 8, SAM input 256 with a small random SAM ViT, batch 1, slices with >= 5 % body);
# every row trains MINUTES of wall clock (--time_budget_min), with enough epochs for the budget to stop it.
set -euo pipefail
cd "$(dirname "$0")/.."
tag=$1 root=$2 minutes=$3
export OMP_NUM_THREADS=1
exec nice -n 10 python scripts/compare.py --name "b3d_${tag}_${minutes}min" --ablation synthrad2025=mrnet,recipe,unet3d \
  --quiet --dataroot "$root" --checkpoints_dir checkpoints/g3d --results_dir results/g3d --time_slices 5 \
  --ngf 8 --ndf 8 --sam_input_size 256 --sam_embed_dim 96 --sam_depth 4 --sam_num_heads 3 \
  --sam_global_attn_indexes 1,3 --batch_size 1 --lr 2e-4 --gpu_ids -1 --num_threads 0 --n_epochs 1000 \
  --n_epochs_decay 0 --val_freq 0 --min_foreground 0.05 --display_id 0 --print_freq 10 \
  --time_budget_min "$minutes" --patch_size 32 "${@:4}"

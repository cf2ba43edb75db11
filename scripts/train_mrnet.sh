#!/usr/bin/env bash
# Train MRNet with the paper's settings (section IV-B): 256x256 triplanar slices repeated to 3 channels, SAM ViT-B
# (frozen, 1024 input), 2 masks, LSGAN + 100 L1 + 0.1 feature + 0.05 mask losses, Adam lr 1e-4 (beta1 0.5, constant),
# batch 4, 40 epochs, seed 2024, 8:1:1 subject split, every slice (--min_foreground 0, Table I's counts), the val
# split scored after every epoch by the fused-volume MAE with the best networks kept (best_net_*.pth, the paper's
# early stopping; add --patience N to stop early).
#
#   bash scripts/train_mrnet.sh synthrad DATAROOT [SAM_CHECKPOINT] [more train.py flags]   # MR -> CT, x/y/z slices
#   bash scripts/train_mrnet.sh brats    DATAROOT [SAM_CHECKPOINT] [more train.py flags]   # FLAIR -> T2, axial slices
#
# SAM_CHECKPOINT defaults to sam_vit_b_01ec64.pth (https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth).
# NPROC=4 runs on 4 GPUs with torchrun, keeping the total batch at 4 (1 per process), as the paper's 4-GPU runs.
# Extra flags override these, e.g. --n_masks 3, --lambda_feature 0 --lambda_mask 0, --no_sam, --name NAME.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)   # paths stay relative to where you run this
source "$repo/scripts/mrnet_task.sh"

nproc=${NPROC:-1}
if (( 4 % nproc )); then echo "NPROC must divide the batch of 4 (1, 2 or 4), got $nproc" >&2; exit 2; fi
launch=(${PYTHON:-python})
if (( nproc > 1 )); then launch=(torchrun --standalone --nproc_per_node "$nproc"); fi

"${launch[@]}" "$repo/train.py" "${arch[@]}" \
  --netD basic --ndf 64 --gan_mode lsgan --lambda_L1 100 --lambda_feature 0.1 --lambda_mask 0.05 \
  --lr 1e-4 --beta1 0.5 --batch_size $((4 / nproc)) --n_epochs 40 --n_epochs_decay 0 --seed 2024 --split_seed 2024 \
  --min_foreground 0 --val_freq 1 \
  "${rest[@]}"

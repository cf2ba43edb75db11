#!/usr/bin/env bash
# Test an MRNet trained by scripts/train_mrnet.sh: result pages with every slice and mask, NIfTI volumes
# reassembled from the slices, and the metrics table (PSNR, SSIM; MAE in HU for CT).
#
#   bash scripts/test_mrnet.sh synthrad DATAROOT [SAM_CHECKPOINT] [more test.py flags]
#   bash scripts/test_mrnet.sh brats    DATAROOT [SAM_CHECKPOINT] [more test.py flags]
#
# Pass the same SAM_CHECKPOINT (and any architecture flag, e.g. --n_masks or --no_sam) as for training;
# the best validated checkpoint is tested (train_mrnet.sh scores the val split every epoch); --epoch latest or
# --epoch N tests another one, --phase val the validation subjects.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)   # paths stay relative to where you run this
source "$repo/scripts/mrnet_task.sh"

${PYTHON:-python} "$repo/test.py" "${arch[@]}" --phase test --epoch best --eval "${rest[@]}"

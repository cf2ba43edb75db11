#!/usr/bin/env bash
# Test an MRNet trained by scripts/train_mrnet.sh: result pages with every slice and mask, NIfTI volumes
# reassembled from the slices, and the metrics table (PSNR, SSIM; MAE in HU for CT).
#
#   bash scripts/test_mrnet.sh synthrad DATAROOT [SAM_CHECKPOINT] [more test.py flags]
#   bash scripts/test_mrnet.sh brats    DATAROOT [SAM_CHECKPOINT] [more test.py flags]
#
# Pass the same SAM_CHECKPOINT (and any architecture flag, e.g. --n_masks or --no_sam) as for training;
# --epoch N tests the checkpoint of epoch N instead of the latest, --phase val the validation subjects.
set -euo pipefail
cd "$(dirname "$0")/.."

usage="usage: bash scripts/test_mrnet.sh synthrad|brats DATAROOT [SAM_CHECKPOINT] [test.py flags]"
task=${1:?$usage}
dataroot=${2:?$usage}
shift 2
sam=sam_vit_b_01ec64.pth
if [[ $# -gt 0 && $1 != --* ]]; then sam=$1; shift; fi
case $task in
  synthrad) data=(--modality_A mr --modality_B ct --planes xyz); name=mrnet_synthrad_mr2ct ;;
  brats)    data=(--modality_A flair --modality_B t2 --planes z); name=mrnet_brats_flair2t2 ;;
  *) echo "$usage" >&2; exit 2 ;;
esac
if [[ ! -f $sam ]]; then
  echo "SAM checkpoint $sam not found: download https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth" >&2
  exit 1
fi

${PYTHON:-python} test.py --model mrnet --dataset_mode triplanar_aligned --dataroot "$dataroot" --name "$name" \
  "${data[@]}" --input_nc 3 --output_nc 3 --crop_size 256 --load_size 256 \
  --netG sam_unet --ngf 64 --norm instance --no_dropout --n_masks 2 \
  --sam_model_type vit_b --sam_checkpoint "$sam" --sam_input_size 1024 \
  --phase test --epoch latest --eval \
  "$@"

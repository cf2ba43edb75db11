# Shared by train_mrnet.sh and test_mrnet.sh (sourced, not run): reads "TASK DATAROOT [SAM_CHECKPOINT]" from the
# arguments and sets
#   dataroot, sam, name   the data folder, the SAM file and the experiment name
#   data                  the paper's data flags for the task (SynthRAD2023 MR->CT on x/y/z slices, BraTS FLAIR->T2 axial)
#   arch                  MRNet's architecture flags, identical for training and testing
#   rest                  the remaining arguments (passed on to train.py / test.py)
usage="usage: bash $0 synthrad|brats DATAROOT [SAM_CHECKPOINT] [more flags]"
task=${1:?$usage}
dataroot=${2:?$usage}
shift 2
sam=sam_vit_b_01ec64.pth
if [[ $# -gt 0 && $1 != --* ]]; then sam=$1; shift; fi
rest=("$@")
case $task in
  synthrad) data=(--modality_A mr --modality_B ct --planes xyz); name=mrnet_synthrad_mr2ct ;;
  brats)    data=(--modality_A flair --modality_B t2 --planes z); name=mrnet_brats_flair2t2 ;;
  *) echo "$usage" >&2; exit 2 ;;
esac
if [[ ! -f $sam ]]; then
  echo "SAM checkpoint $sam not found: download https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth" >&2
  exit 1
fi
arch=(--model mrnet --dataset_mode triplanar_aligned --dataroot "$dataroot" --name "$name" "${data[@]}"
      --input_nc 3 --output_nc 3 --crop_size 256 --load_size 256
      --netG sam_unet --ngf 64 --norm instance --no_dropout --n_masks 2
      --sam_model_type vit_b --sam_checkpoint "$sam" --sam_input_size 1024)

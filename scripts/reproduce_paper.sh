#!/usr/bin/env bash
# Reproduce the experiments of the MRNet paper (section IV) with scripts/compare.py:
#
#   table2  SynthRAD2023 brain MR -> CT: the eight rows (MRNet, pix2pix, CycleGAN, TCGAN, TransUNet, Swin-Unet,
#           ResViT, PPT; the five baselines as generators of pix2pix's cGAN)    (Table II, Figs. 3-4)
#   table3  BraTS FLAIR -> T2 (axial slices): the same eight rows              (Table III)
#   table4  MRNet with 1, 2, 3, 4, 6, 7 masks on SynthRAD2023                  (Table IV)
#   table5  MRNet trained with GAN + L1 only vs + feature + mask losses         (Table V)
#   sam     MRNet with and without the SAM branch                               (not in the paper)
#
# Usage (all steps, or the ones named):
#   SYNTHRAD=/data/synthrad2023/Task1/brain BRATS=/data/brats SAM=sam_vit_b_01ec64.pth \
#       VIT=R50+ViT-B_16.npz SWIN=swin_tiny_patch4_window7_224.pth \
#       bash scripts/reproduce_paper.sh [table2 table3 table4 table5 sam]
#
# What you need:
#   data   SynthRAD2023 Task 1 brain (180 subjects: <subject>/mr.nii.gz, ct.nii.gz, mask.nii.gz) and BraTS
#          (<subject>/<subject>_flair.nii.gz, _t2.nii.gz); each is split 8:1:1 per subject with seed 2024 on
#          first use (<dataroot>/splits/, keep it to compare later runs). The paper's BraTS split (371 training,
#          127 test subjects) is not 8:1:1 and not published: write your own splits/*.txt to follow it.
#   SAM    the official ViT-B checkpoint sam_vit_b_01ec64.pth
#          (https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth, 375 MB).
#   ViT    (optional) the ImageNet-21k R50+ViT-B_16.npz for TransUNet and ResViT
#          (https://storage.googleapis.com/vit_models/imagenet21k/R50%2BViT-B_16.npz), and Swin-T's
#          swin_tiny_patch4_window7_224.pth for Swin-Unet (https://github.com/SwinTransformer/storage/releases/
#          download/v1.0.0/swin_tiny_patch4_window7_224.pth); without them those baselines start from random
#          weights (said plainly at start-up) and will not match the paper. ResViT trains in one stage here
#          (see docs/models.md for its official two-stage recipe).
#   GPU    one GPU with 24 GB or more (the paper used one A100, or four GPUs); CPU-only is not practical.
#   disk   about 60 GB: the slice stores (~10 GB SynthRAD, ~5 GB BraTS) and, per run, test images and volumes.
#   time   the paper's settings are 40 epochs at batch 4 over ~95,600 SynthRAD training slices (x, y and z),
#          i.e. ~956,000 steps per run. Rough A100 estimates (measure yours with
#          `python scripts/benchmark.py train --device cuda`, which prints the hours of Tables II-III): pix2pix ~15 ms/step (~4 h per run),
#          CycleGAN ~35 ms (~10 h), MRNet with SAM at 1024 px ~40 ms (~11 h); the five baselines cost 1.3x
#          (Swin-Unet) to 11x (ResViT) a pix2pix step on a CPU (docs/gpu_and_benchmarks.md; measure them on your GPU with
#          `python scripts/benchmark.py train --models tcgan,transunet,swin_unet,resvit,ppt
#          --device cuda`). By step, for MRNet, pix2pix and CycleGAN alone: table2 ~25 h, table3 ~12 h (axial
#          BraTS slices, about half as many), table4 ~65 h (6 MRNet runs), table5 ~22 h, sam ~16 h: about 140 GPU
#          hours; the five baselines add several times that to table2 and table3 (estimates, not measurements). Each step can be stopped and
#          restarted: finished runs are reused and unfinished ones resume from their checkpoints.
#
# Results, under the current folder: results/compare_paper_<step>/table.md (the table), index.html (table, loss
# curves, box plots, slice strips as Figs. 3-4), table.csv; checkpoints/compare_paper_<step>_<run>/ per run.
# Put your numbers next to the paper's in the table of docs/comparisons.md.
set -euo pipefail

SYNTHRAD=${SYNTHRAD:-}
BRATS=${BRATS:-}
SAM=${SAM:-sam_vit_b_01ec64.pth}
VIT=${VIT:-}                        # R50+ViT-B_16.npz (TransUNet, ResViT)
SWIN=${SWIN:-}                      # swin_tiny_patch4_window7_224.pth (Swin-Unet)
GPU=${GPU:-0}                       # --gpu_ids
EXTRA=${EXTRA:-}                    # more shared options for every run, e.g. "--num_threads 8"
STEPS=${*:-table2 table3 table4 table5 sam}

ROOT=$(cd "$(dirname "$0")/.." && pwd)

fail() { echo "reproduce_paper.sh: $*" >&2; exit 1; }
[ -f "$SAM" ] || fail "SAM checkpoint '$SAM' not found: download sam_vit_b_01ec64.pth and set SAM=path"
needs_synthrad() { [ -n "$SYNTHRAD" ] && [ -d "$SYNTHRAD" ] || fail "set SYNTHRAD to the SynthRAD2023 Task 1 brain folder"; }
needs_brats() { [ -n "$BRATS" ] && [ -d "$BRATS" ] || fail "set BRATS to the BraTS folder"; }

# compare.py's defaults are the paper's settings (section IV-B): 3x256x256 triplanar slices, batch 4,
# Adam lr 1e-4 and beta1 0.5, 40 epochs, seed 2024, 70x70 PatchGAN with the LSGAN loss.
# --sam_checkpoint reaches MRNet only, --pretrained_vit TransUNet and ResViT, --pretrained_swin Swin-Unet.
WEIGHTS=()
[ -z "$VIT" ] || { [ -f "$VIT" ] || fail "VIT file '$VIT' not found"; WEIGHTS+=(--pretrained_vit "$VIT"); }
[ -z "$SWIN" ] || { [ -f "$SWIN" ] || fail "SWIN file '$SWIN' not found"; WEIGHTS+=(--pretrained_swin "$SWIN"); }
compare() { python "$ROOT/scripts/compare.py" --gpu_ids "$GPU" --sam_checkpoint "$SAM" $EXTRA "$@"; }

for step in $STEPS; do
    echo "=== $step ==="
    case $step in
        table2) needs_synthrad
                compare --dataroot "$SYNTHRAD" --name paper_table2 --models paper ${WEIGHTS[@]+"${WEIGHTS[@]}"} ;;
        table3) needs_brats
                compare --dataroot "$BRATS" --name paper_table3 --models paper ${WEIGHTS[@]+"${WEIGHTS[@]}"} \
                    --modality_A flair --modality_B t2 --planes z ;;
        table4) needs_synthrad
                compare --dataroot "$SYNTHRAD" --name paper_table4 --ablation n_masks=1,2,3,4,6,7 ;;
        table5) needs_synthrad
                compare --dataroot "$SYNTHRAD" --name paper_table5 --ablation losses ;;
        sam)    needs_synthrad
                compare --dataroot "$SYNTHRAD" --name paper_sam --ablation sam ;;
        *)      fail "unknown step '$step' (table2, table3, table4, table5, sam)" ;;
    esac
done
echo "done: results/compare_paper_*/table.md and index.html"

"""Speed and memory benchmarks (not tests: these machines are noisy, so compare ratios taken in one run).

    python scripts/benchmark.py train --device cuda              # every model of the paper's Tables II-III at
                                                                 # batch 4, 256x256 (MRNet: SAM 1024, cached and
                                                                 # not): fp32, bf16, bf16 + compile; slices/s, peak
                                                                 # memory, TFLOP/s, hours of the paper's protocol
    python scripts/benchmark.py train --models pix2pix,mrnet --code /tmp/main --threads 1
                                                                 # the same steps with another code tree, in turn:
                                                                 # the step-time ratio (CPU cost of a change)
    python scripts/benchmark.py data                             # triplanar slices/s with 0 and 2 workers
    python scripts/benchmark.py predict                          # seconds per ~256^3 volume, 3 planes: MRNet at
                                                                 # the quick-start settings on the CPU; with
                                                                 # --device cuda also SAM 1024 (bf16), ngf 64
    python scripts/benchmark.py cache                            # epochs: pix2pix, MRNet --no_sam, without /
                                                                 # building / reading the SAM feature cache (same
                                                                 # slices; rounds in turn, fastest epoch counts)
    python scripts/benchmark.py sam --device cuda --sam_size 1024 --sam_batch 8
                                                                 # SAM encoder images/s: segment_anything's
                                                                 # and ours (SDPA), bf16, with/without compile
    python scripts/benchmark.py dose                             # seconds per subject, photons and protons:
                                                                 # planning on the CT, recomputing on an sCT;
                                                                 # demo and SynthRAD brain size (--quick: demo)

Each configuration runs in a fresh process so its peak memory is its own (CPU: peak RSS; GPU: peak allocated).
Add ``--device cuda`` on a machine with a GPU; ``--quick`` shortens every run for a smoke check.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from scripts.benchmarks import cache, data_loader, dose, predict, sam, train  # noqa: E402
from scripts.benchmarks.train import TRAIN_ROWS  # noqa: E402


# what ``_one KIND CFG`` runs (in a fresh process, see scripts/benchmarks/timing.py), and each benchmark
RUNNERS = {'train': train.run_train_config, 'data': data_loader.run_data_config, 'predict': predict.run_predict_config,
           'epoch': cache.run_epoch_config, 'sam': sam.run_sam_config, 'dose': dose.run_dose_config}
BENCHES = {'train': train.bench_train, 'data': data_loader.bench_data, 'predict': predict.bench_predict,
           'cache': cache.bench_cache, 'sam': sam.bench_sam, 'dose': dose.bench_dose}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == '_one':
        cfg = json.loads(sys.argv[3])
        if cfg.get('code'):
            sys.path.insert(0, cfg['code'])     # import models/, data/, options/ from that tree
        print(json.dumps(RUNNERS[sys.argv[2]](cfg)))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('what', choices=sorted(BENCHES))
    parser.add_argument('--models', default='paper',
                        help=f'train: rows to measure, "paper" (the eight of Tables II-III and MRNet without the '
                             f'SAM cache) or some of {", ".join(TRAIN_ROWS)}')
    parser.add_argument('--amp_modes', default='',
                        help='train: precisions, e.g. off,bf16,bf16+compile (default on a GPU; the CPU: off)')
    parser.add_argument('--code', default='',
                        help='train: also run every configuration with the code tree DIR (e.g. a checkout of main), '
                             'in turn for --rounds rounds, and print the step-time ratio')
    parser.add_argument('--device', default='cpu', help='cpu or cuda')
    parser.add_argument('--iters', type=int, default=5, help='timed steps per configuration')
    parser.add_argument('--warmup', type=int, default=2, help='untimed steps before timing')
    parser.add_argument('--quick', action='store_true', help='one short run per configuration (smoke check)')
    parser.add_argument('--side', type=int, default=256, help='predict: side of the cubic test volume')
    parser.add_argument('--batch', type=int, default=None,
                        help='predict: slices per forward pass (16); cache, train: training batch size (4)')
    parser.add_argument('--skip_cpu', action='store_true', help='predict: only the GPU configuration')
    parser.add_argument('--slices', type=int, default=32, help='cache: training slices per epoch')
    parser.add_argument('--ngf', type=int, default=None,
                        help='cache: generator width of pix2pix and MRNet (16); train: of every row (default: each '
                             'model\'s own, 64)')
    parser.add_argument('--workers', type=int, default=0, help='cache: data loader workers')
    parser.add_argument('--threads', type=int, default=0,
                        help='cache, train: torch threads per process (0: torch\'s default)')
    parser.add_argument('--rounds', type=int, default=2,
                        help='cache: rounds of all configurations, taken in turn; train --code: --rounds x --iters '
                             'steps of each tree, in turn')
    parser.add_argument('--epochs', type=int, default=2,
                        help='cache: timed epochs per configuration and round (the uncached MRNet: 1)')
    parser.add_argument('--sam_size', type=int, default=None,
                        help='cache, sam, train: SAM input size (default: 1024, SAM\'s own and the paper\'s, for '
                             'train and sam; 256 for cache)')
    parser.add_argument('--sam_batch', type=int, default=8, help='cache: slices per SAM call when building; '
                        'sam: images per encoder call')
    parser.add_argument('--sam_model_type', default='vit_b', help='sam: vit_b, vit_l or vit_h')
    parser.add_argument('--precision', default='bf16', choices=['fp32', 'bf16', 'fp16'], help='sam: precision')
    parser.add_argument('--no_compile', action='store_true', help='sam: skip the torch.compile rows')
    parser.add_argument('--compile_reference', action='store_true',
                        help='sam: also torch.compile segment_anything\'s own encoder')
    args, extra = parser.parse_known_args()
    args.extra = extra  # passed on to the options parser, e.g. --ngf 32 --sam_checkpoint PATH
    if args.sam_size is None:
        args.sam_size = 1024 if args.what == 'train' else 256
    if args.ngf is None and args.what == 'cache':
        args.ngf = 16
    BENCHES[args.what](args)


if __name__ == '__main__':
    main()

"""Cost of each ingredient beyond the paper, as a ratio to plain MRNet in one run (a benchmark, not a test):

    python scripts/benchmark_ingredients.py [--rounds 3 --steps 3] [shared train flags: --ngf 8 --sam_input_size 256]

Training: seconds per optimisation step on a random 256x256 batch with its body mask, the input's (and target's)
SAM features given as the feature cache gives them. Prediction: seconds per slice of the whole test-time path on a
new slice (SAM run on it, as predict does): flip TTA runs 4 passes, a K-fold ensemble K members. The configurations
run in turn, ``--rounds`` times, and each keeps its fastest round, so a busy machine slows all of them alike.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# label -> (train flags, ensemble members); plain MRNet first (the reference)
CONFIGS = {
    'MRNet (paper)': (['--model', 'mrnet'], 1),
    'pix2pix': (['--model', 'pix2pix', '--dataset_mode', 'triplanar_aligned'], 1),
    '+ 2.5D (--context_slices 1)': (['--model', 'mrnet', '--context_slices', '1'], 1),
    '+ body loss': (['--model', 'mrnet', '--loss_region', 'body', '--body_margin_voxels', '1'], 1),
    '+ SAM perceptual': (['--model', 'mrnet', '--lambda_sam_perceptual', '10'], 1),
    '+ flip TTA': (['--model', 'mrnet', '--tta', 'flip'], 1),
    '2-fold ensemble': (['--model', 'mrnet'], 2),
    '--recipe synthrad2025': (['--model', 'mrnet', '--recipe', 'synthrad2025'], 1),
}


def build(flags: list[str], shared: list[str], tmp: str):
    """A training model for ``flags`` and a random batch for it (mask and cached SAM features included)."""
    import torch

    from models import create_model
    from options.train_options import TrainOptions
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        opt = TrainOptions().parse(['--gpu_ids', '-1', '--display_id', '0', '--checkpoints_dir', tmp, '--name',
                                    'bench', '--batch_size', '1', *shared, *flags], setup_device=False)
        model = create_model(opt)
    gen = torch.Generator().manual_seed(0)
    size = opt.crop_size
    batch = {'A': torch.rand(1, opt.input_nc, size, size, generator=gen) * 2 - 1,
             'B': torch.rand(1, opt.output_nc, size, size, generator=gen) * 2 - 1,
             'A_paths': ['x'], 'B_paths': ['x'], 'mask': torch.rand(1, 1, size, size, generator=gen) > 0.3}
    sam = getattr(model.unwrap('G'), 'sam', None)
    with torch.no_grad():
        if sam is not None:
            batch.update(sam_feature=sam(batch['A']), sam_cached=torch.ones(1, dtype=torch.bool))
        if getattr(model, 'perceptual_sam', None) is not None:
            batch.update(sam_target_feature=model.perceptual_sam(batch['B']),
                         sam_target_cached=torch.ones(1, dtype=torch.bool))
    return model, opt, batch


def seconds(fn, steps: int) -> float:
    fn()                                    # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - start) / steps


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--rounds', type=int, default=3)
    p.add_argument('--steps', type=int, default=3, help='timed steps (and predicted slices) per round')
    args, shared = p.parse_known_args(argv)
    import torch

    from inference.test_time import run_test
    with tempfile.TemporaryDirectory() as tmp:
        built = {label: build(flags, shared, tmp) for label, (flags, _) in CONFIGS.items()}
        best = {label: [float('inf'), float('inf')] for label in CONFIGS}
        for _ in range(args.rounds):
            for label, (model, opt, batch) in built.items():
                members = CONFIGS[label][1]

                def train_step():
                    model.set_input(batch)
                    model.optimize_parameters()

                def predict_slice():
                    model.set_input({k: v for k, v in batch.items() if not k.startswith('sam_')})
                    for _ in range(members):            # an ensemble runs every member on the slice
                        run_test(model)
                best[label][0] = min(best[label][0], seconds(train_step, args.steps))
                with torch.no_grad():
                    best[label][1] = min(best[label][1], seconds(predict_slice, args.steps))
    ref_train, ref_predict = best['MRNet (paper)']
    print(f'shared flags: {" ".join(shared) or "(defaults)"}; {args.rounds} rounds x {args.steps} steps, fastest '
          f'round; ensemble training counts its {CONFIGS["2-fold ensemble"][1]} members')
    print('| row | train s/step | x MRNet | predict s/slice | x MRNet |\n|---|---:|---:|---:|---:|')
    for label, (train, predict) in best.items():
        members = CONFIGS[label][1]
        print(f'| {label} | {train * members:.3f} | {train * members / ref_train:.2f} | {predict:.3f} | '
              f'{predict / ref_predict:.2f} |')


if __name__ == '__main__':
    main()

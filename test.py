"""Run a trained model on a test set:

    python test.py --dataroot DIR --name NAME --model pix2pix --direction BtoA
    python test.py --model mrnet --dataset_mode triplanar_aligned            # + NIfTI volumes and metrics

Writes ``results/NAME/<phase>_<epoch>/index.html`` with ``images/<name>_<visual>.png`` (``--save_raw``: also
float .npy/.tif), ``metrics.csv`` for paired data, what the dataset's evaluator adds (volumes), and ``cost.json``
(evaluation/test_cost.py: the model's seconds, the volumes scored, the peak memory, which compare.py reports).
``<name>`` is the input's file name without its extension (other dots kept); two inputs to be written (the first
``--num_test``) with the same name are refused before anything runs. A subject that fails does not stop the
others: the page and metrics.csv cover everything that worked, then the failures are reported (exit status 2).
"""
from __future__ import annotations

import os
import time

import torch

from data import create_dataset
from evaluation.result_page import ResultPage
from evaluation.scoring import make_evaluator, summary_sections
from evaluation.test_cost import write_test_cost
from evaluation.validation import BEST_LABEL, best_note
from inference.body_composite import checkpoint_composite
from inference.volume_model import SlidingWindowModel, check_checkpoint_kind
from inference.test_time import create_test_model, ensemble_result_name, run_test, write_members
from options.dose_options import dataset_dose_scorer
from options.ingredients import ensemble_names
from options.test_options import TestOptions
from util.cli import run_cli
from util.disk import check_writable
from util.html import HTML
from util.seed import seed_everything
from util.util import check_unique_names
from util.visualizer import save_images


def main(args: list[str] | None = None) -> str:
    """Returns the path of the result page."""
    options = TestOptions()
    opt = options.parse(args)
    names = ensemble_names(opt.name)
    volume = check_checkpoint_kind(opt, names)  # 3D checkpoints: whole volumes by sliding windows; refused mixes
    if volume:
        opt.batch_size = 1                      # whole volumes of different shapes, one at a time
    split = getattr(opt, 'split', '') or opt.phase      # --split all: results/NAME/all_<epoch>
    label = f'{split}_{opt.epoch}' + (f'_iter{opt.load_iter}' if opt.load_iter > 0 else '')
    web_dir = os.path.join(opt.results_dir, ensemble_result_name(names), label)
    check_writable(web_dir, os.path.join(web_dir, 'test_opt.txt'))     # a read-only --results_dir: before any work
    seed_everything(opt.seed)
    dataset = create_dataset(opt)
    opt.dose_scorer = dataset_dose_scorer(opt, dataset.dataset)     # --dose: no CT or no pyRadPlan refused now
    total = len(dataset) if opt.num_test <= 0 else min(opt.num_test, len(dataset))
    sources = dataset.dataset.item_sources()
    if sources:
        check_unique_names(sources[:total])     # only the items that will be written can clash (--num_test)
    options.save_table(web_dir)                 # test_opt.txt beside the results: the checkpoints may be read-only
    # --name a,b,c: an ensemble, fused voxel-wise (--ensemble_fuse)
    model = SlidingWindowModel(opt, names) if volume else create_test_model(opt, names)
    model.prepare_data(dataset)
    epoch = f'iter_{opt.load_iter}' if opt.load_iter > 0 else opt.epoch
    opt.body_composite = checkpoint_composite(opt.outside_body, opt.checkpoints_dir, names, epoch)  # the evaluator's
    if opt.body_composite:
        print(f'--outside_body {opt.outside_body}: {opt.body_composite.describe()}')
    if opt.epoch == BEST_LABEL:
        print(best_note(model.save_dir))
    webpage = HTML(web_dir, f'Experiment = {opt.name}, Phase = {opt.phase}, Epoch = {opt.epoch}')
    evaluator = make_evaluator(opt, web_dir, dataset.dataset)
    result_page = ResultPage(webpage, evaluator, opt)
    if len(names) > 1:
        write_members(os.path.join(web_dir, 'ensemble.json'), model.checkpoints(), opt.ensemble_fuse)
    if opt.eval:
        model.eval()
    if total < len(dataset):
        print(f'--num_test {opt.num_test}: testing {total} of {len(dataset)} items')
    done, volumes, predict_seconds = 0, 0, 0.0
    for data in dataset:
        if done >= total:
            break
        start = time.perf_counter()
        model.set_input(data)
        run_test(model)
        visuals = model.get_current_visuals()
        if opt.device.type == 'cuda':
            torch.cuda.synchronize(opt.device)
        predict_seconds += time.perf_counter() - start
        items = data.get('name', data['A_paths'])
        for j in range(min(len(items), total - done)):
            if result_page.shows(data, j):
                save_images(webpage, {k: v[j:j + 1] for k, v in visuals.items()}, [items[j]],
                            aspect_ratio=opt.aspect_ratio, width=opt.display_winsize, save_raw=opt.save_raw)
        for scored in evaluator.add(data, visuals, spread=getattr(model, 'spread', None)):  # --tta / ensemble spread
            result_page.add_subject(scored)
            volumes += 1
        done += len(items)
        if done % 50 < len(items):
            print(f'processing ({done:04d}/{total})-th item... {items[0]}')
    summary = evaluator.finish()
    result_page.finish()
    for label, scores in summary_sections(summary).items():
        print(f'{label}: ' + ', '.join(f'{k} {v:.4g}' for k, v in scores.items()))
    page = webpage.save()
    write_test_cost(web_dir, predict_seconds, done, volumes, opt.device)
    print(f'results: {page}')
    failed = evaluator.failed
    if failed:
        raise RuntimeError(f'{len(failed)} subject(s) failed: ' + '; '.join(f'{n}: {why}' for n, why in failed.items())
                           + f' (the results of the others are in {page})')
    return page


if __name__ == '__main__':
    run_cli(main)

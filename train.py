"""Train any model on any dataset:

    python train.py --dataroot DIR --name NAME --model pix2pix --direction BtoA
    python train.py --model mrnet --dataset_mode triplanar_aligned           # demo data when no --dataroot
    torchrun --nproc_per_node 2 train.py --model mrnet ...                   # several GPUs (or CPU processes)

Writes checkpoints, options, loss_log.txt and HTML pages under ``checkpoints/NAME/``. ``--continue_train``
resumes from the latest checkpoint with networks, optimisers, schedulers, pools, counters and RNG state.
"""
from __future__ import annotations

import time

from tqdm import tqdm

from data import create_dataset
from models import create_model
from options.train_options import TrainOptions
from util import distributed
from util.cli import run_cli
from util.flop_count import count_flops
from util.peak_memory import peak_memory
from util.seed import seed_everything
from evaluation.validation import Validator
from options.training_budget import TrainingBudget


def main(args: list[str] | None = None) -> None:
    options = TrainOptions()
    opt = options.parse(args, lock_run=True)    # one writer per run folder: a second run on --name stops here
    seed_everything(opt.seed + opt.rank)
    main_process = opt.rank == 0
    dataset = create_dataset(opt)
    model = create_model(opt)
    model.setup(opt)
    visualizer = None
    if main_process:
        from util.visualizer import Visualizer
        visualizer = Visualizer(opt)

    validator = Validator(opt) if main_process and opt.val_freq > 0 else None

    counters = {'epoch': opt.epoch_count, 'epoch_iter': 0, 'total_iters': 0}
    if opt.continue_train:
        counters = model.load_training_state('latest')
        if main_process:
            print(f'resuming at epoch {counters["epoch"]}, image {counters["epoch_iter"]} of that epoch, '
                  f'{counters["total_iters"]} images seen')
    if validator is not None:
        validator.load_state(counters.get('validation'))
    last_epoch = opt.n_epochs + opt.n_epochs_decay
    budget = TrainingBudget(opt.time_budget_min, counters.get('train_seconds', 0.0))    # --time_budget_min
    batches_per_epoch = -(-len(dataset) // opt.batch_size)
    total_iters = counters['total_iters']

    stop = validator is not None and validator.stopped
    count_first_step = main_process and total_iters == 0 and not opt.compile    # loss_log.jsonl's flops record
    for epoch in range(counters['epoch'], last_epoch + 1):
        if distributed.broadcast_flag(stop):
            break
        skip = counters['epoch_iter'] // opt.batch_size if epoch == counters['epoch'] else 0
        epoch_iter = skip * opt.batch_size * opt.world_size
        epoch_start = time.time()
        model.prepare_data(dataset)
        dataset.set_epoch(epoch, skip)
        progress = tqdm(total=batches_per_epoch, initial=skip, desc=f'epoch {epoch}/{last_epoch}', unit='it',
                        disable=not main_process, dynamic_ncols=True, leave=False)
        iter_data_time = time.time()
        budget.run()
        for data in dataset:
            if budget.spent():
                break
            iter_start = time.time()
            t_data = iter_start - iter_data_time
            n = data['A'].shape[0] * opt.world_size
            total_iters += n
            epoch_iter += n
            model.set_input(data)
            if count_first_step:            # the same step, its FLOPs counted (compare.py's FLOPs column)
                visualizer.training_log.flops(count_flops(model.train_step))
                count_first_step = False
            else:
                model.train_step()          # optimize_parameters under --amp; no wait for the GPU
            progress.update(1)

            if total_iters % opt.print_freq < n:
                losses = distributed.average_across_ranks(model.get_current_losses())
                if main_process:
                    t_comp = (time.time() - iter_start) / opt.batch_size
                    visualizer.print_current_losses(epoch, epoch_iter, losses, t_comp, t_data)
                    visualizer.plot_current_losses(epoch, epoch_iter / (len(dataset) * opt.world_size), losses)
                    progress.set_postfix({k: f'{v:.3f}' for k, v in losses.items()})
            if main_process and total_iters % opt.display_freq < n:
                save_result = total_iters % opt.update_html_freq < n
                visualizer.display_current_results(model.get_current_visuals(), epoch, save_result)
            if main_process and total_iters % opt.save_latest_freq < n:
                label = f'iter_{total_iters}' if opt.save_by_iter else 'latest'
                state = {'epoch': epoch, 'epoch_iter': epoch_iter // opt.world_size, 'total_iters': total_iters,
                         'train_seconds': budget.seconds()}
                if validator is not None:
                    state['validation'] = validator.state()
                model.save_training_state(label, state)
                if opt.save_by_iter:
                    model.save_training_state('latest', state)
            iter_data_time = time.time()
        progress.close()
        budget.pause()
        if budget.stopped:          # mid-epoch: the latest state says where, and that the budget is spent
            if main_process:
                model.save_training_state('latest', budget.counters(epoch, epoch_iter // opt.world_size, total_iters))
                print(budget.describe(total_iters))
            break

        model.update_learning_rate()
        counters = {'epoch': epoch + 1, 'epoch_iter': 0, 'total_iters': total_iters, 'train_seconds': budget.seconds()}
        if main_process:
            if validator is not None:
                if validator.due(epoch, last_epoch):
                    stop = validator.run(model, epoch, visualizer)
                counters['validation'] = validator.state()
            # the epoch's files first: the state that marks the epoch done comes last
            if epoch % opt.save_epoch_freq == 0 or epoch == last_epoch:
                model.save_networks(epoch)
            model.save_training_state('latest', counters)
            lr = model.optimizers[0].param_groups[0]['lr']
            print(f'End of epoch {epoch} / {last_epoch} \t Time Taken: {time.time() - epoch_start:.1f} sec, '
                  f'learning rate {lr:.7f}')
        distributed.barrier()
    if main_process:
        visualizer.training_log.end(budget.seconds(), total_iters, peak_memory(opt.device))
        if validator is not None and validator.best is not None:
            print(f'best validation {validator.metric} {validator.best:.4g} at epoch {validator.best_epoch}: '
                  f'{model.network_path("best", "G")} (test.py --epoch best)')
        print(f'training done: checkpoints in {model.save_dir}')
        options.run_lock.release()
    distributed.cleanup()


if __name__ == '__main__':
    run_cli(main)

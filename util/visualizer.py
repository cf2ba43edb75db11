"""Training display (visdom windows, HTML page, loss logs) and result saving for test.py.

Visdom is optional at run time and imported only when a display is asked for (``--display_id`` > 0; without
visdom installed that is one warning): with ``--display_id`` > 0 the Visualizer connects to the server named by
``--display_server``/``--display_port`` with short timeouts; if nobody answers (or the server goes away later)
it prints one warning and goes on without live display. ``--display_id 0`` never contacts a server.
"""
from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from collections import OrderedDict
from typing import Callable

import numpy as np
import torch

from util import util
from util.disk import writing
from util.html import HTML
from util.training_log import LOG_NAME, TrainingLog

# (connect, read) timeouts in seconds for every request to the visdom server
VISDOM_TIMEOUT_S = (3.0, 5.0)


def connect_visdom(server: str, port: int, env: str):
    """A visdom client connected to the server at ``server:port`` (env ``env``) whose HTTP requests time out
    instead of blocking training on a silent server, or None after one warning (no server answers, or visdom is
    not installed). visdom is imported here, only when a display is asked for."""
    try:
        import visdom
    except ImportError:
        print_warning('--display_id asks for live plots but visdom is not installed (pip install visdom, see '
                      'scripts/setup.sh), so training goes on without them; --display_id 0 turns the display off.')
        return None

    class TimeoutVisdom(visdom.Visdom):
        def _handle_post(self, url: str, data: object = None) -> str:
            return self.session.post(url, data={} if data is None else data, timeout=VISDOM_TIMEOUT_S).text

    logging.getLogger('visdom').setLevel(logging.ERROR)  # its per-session and no-socket chatter is not for users
    try:
        with warnings.catch_warnings():  # visdom 0.2.4 calls the deprecated logger.warn
            warnings.simplefilter('ignore', DeprecationWarning)
            return TimeoutVisdom(server=server, port=port, env=env, raise_exceptions=True, use_incoming_socket=False)
    except ConnectionError:
        print_warning(f'could not connect to a visdom server at {server}:{port}, so training goes on without '
                      f'live plots. Start one with `python -m visdom.server -port {port} -bind_local` before training, '
                      f'or pass --display_id 0 to turn the display off.')
        return None


def print_warning(message: str) -> None:
    print(f'WARNING: {message}', file=sys.stderr, flush=True)


def visuals_grid(visuals: OrderedDict[str, torch.Tensor]) -> np.ndarray:
    """First item of every visual as float (len(visuals), 3, H, W) in [0, 1]; gray is repeated to RGB and
    smaller images are padded (white) to the largest size so that visdom can lay them out in one grid."""
    images = []
    for t in visuals.values():
        im = util.tensor2im(t).astype(np.float32) / 255.0
        images.append(np.repeat(im[None], 3, axis=0) if im.ndim == 2 else im.transpose(2, 0, 1))
    h = max(im.shape[1] for im in images)
    w = max(im.shape[2] for im in images)
    return np.stack([np.pad(im, ((0, 0), (0, h - im.shape[1]), (0, w - im.shape[2])), constant_values=1.0)
                     for im in images])


class Visualizer:
    """Shows and saves what train.py produces. Call its methods from the writing process (rank 0) only.

    - display_current_results: current visuals in a visdom image grid (window ``display_id``) and, on save
      epochs, PNGs in ``<checkpoints_dir>/<name>/web/images`` listed by ``web/index.html`` newest epoch first;
    - plot_current_losses: the loss curves (window ``display_id + 1``), x in epochs;
    - print_current_losses: the classic loss line on stdout and in ``<checkpoints_dir>/<name>/loss_log.txt``,
      and its record in ``loss_log.jsonl`` (util.training_log: the same log for programs);
    - show_validation: the validation line (stdout and loss_log.txt) and record (loss_log.jsonl), its scores
      plotted (window ``display_id + 2``) and tabled at the top of the HTML page.
    """

    def __init__(self, opt) -> None:
        self.opt = opt
        self.name = opt.name
        self.display_id = opt.display_id
        self.use_html = opt.isTrain and not opt.no_html
        self.win_size = opt.display_winsize
        self.ncols = opt.display_ncols
        self.plot_data: dict[str, list] = {'X': [], 'Y': [], 'legend': []}
        self.validation: list[dict] = []        # [{'epoch', 'score', 'seconds', 'scores': {name: value}}]
        self.validation_metric = ''
        self.html_state: tuple[int, list[str]] | None = None   # (epoch, labels) of the last page written
        self.vis = connect_visdom(opt.display_server, opt.display_port, opt.display_env) if self.display_id > 0 \
            else None
        expr_dir = os.path.join(opt.checkpoints_dir, opt.name)
        self.web_dir = os.path.join(expr_dir, 'web')
        self.img_dir = os.path.join(self.web_dir, 'images')
        if self.use_html:
            util.mkdirs([self.web_dir, self.img_dir])
        self.log_name = os.path.join(expr_dir, 'loss_log.txt')
        self.training_log = TrainingLog(os.path.join(expr_dir, LOG_NAME))
        if opt.isTrain:
            util.mkdir(expr_dir)
            self.log(f'================ Training Loss ({time.strftime("%c")}) ================')
            self.training_log.start()

    def log(self, line: str) -> None:
        """Append ``line`` to loss_log.txt (a full or read-only disk: util.disk.WriteError naming it)."""
        with writing(self.log_name), open(self.log_name, 'a') as log_file:
            log_file.write(line + '\n')

    def _display(self, draw: Callable[[object], object]) -> None:
        """Run ``draw(client)`` if a server is connected; on a lost connection warn once and stop displaying."""
        if self.vis is None:
            return
        try:
            draw(self.vis)
        except ConnectionError:
            print_warning(f'lost the connection to the visdom server at {self.opt.display_server}:'
                          f'{self.opt.display_port}; training goes on without live plots.')
            self.vis = None

    def display_current_results(self, visuals: OrderedDict[str, torch.Tensor], epoch: int,
                                save_result: bool) -> None:
        """Show ``visuals`` (name -> Tensor (N, C, H, W) in [-1, 1], first item used) in visdom; with
        ``save_result`` also save them as ``web/images/epoch%.3d_<name>.png`` and rewrite the HTML page."""
        if not visuals:
            return
        ncols = self.ncols if self.ncols > 0 else len(visuals)
        title = f'{self.name} epoch {epoch}: ' + ' | '.join(visuals)
        self._display(lambda vis: vis.images(visuals_grid(visuals), nrow=ncols, padding=2,
                                             win=str(self.display_id), opts={'title': title}))
        if save_result and self.use_html:
            for label, image in visuals.items():
                util.save_image(util.tensor2im(image), os.path.join(self.img_dir, epoch_image_name(epoch, label)))
            self.write_html(epoch, list(visuals))

    def write_html(self, epoch: int, labels: list[str]) -> None:
        """Rewrite ``web/index.html`` with one row per epoch from ``epoch`` down to 1, listing saved images only."""
        self.html_state = (epoch, labels)
        webpage = HTML(self.web_dir, f'Experiment name = {self.name}', refresh=1)
        if self.validation:
            names = list(self.validation[-1]['scores'])
            webpage.add_header(f'Validation (best by {self.validation_metric})', top=True)
            webpage.add_table(['epoch', *names, 'seconds'],
                              [[v['epoch'], *(v['scores'].get(n) for n in names), v['seconds']]
                               for v in reversed(self.validation)], top=True)
        for n in range(epoch, 0, -1):
            names = [(label, epoch_image_name(n, label)) for label in labels]
            names = [(label, f) for label, f in names if os.path.isfile(os.path.join(self.img_dir, f))]
            if names:
                webpage.add_header(f'epoch [{n}]')
                files = [f for _, f in names]
                webpage.add_images(files, [label for label, _ in names], files, width=self.win_size)
        webpage.save()

    def plot_current_losses(self, epoch: int, counter_ratio: float, losses: OrderedDict[str, float]) -> None:
        """Add one point per loss at x = epoch + counter_ratio (fraction of the epoch done) and redraw the curves."""
        if self.vis is None or not losses:
            return
        legend = list(losses)
        if legend != self.plot_data['legend']:  # a new set of losses starts a new plot
            self.plot_data = {'X': [], 'Y': [], 'legend': legend}
        self.plot_data['X'].append(epoch + counter_ratio)
        self.plot_data['Y'].append([float(losses[k]) for k in legend])
        x = np.repeat(np.asarray(self.plot_data['X'], dtype=np.float64)[:, None], len(legend), axis=1)
        y = np.asarray(self.plot_data['Y'], dtype=np.float64)
        opts = {'title': f'{self.name} loss over time', 'legend': legend, 'xlabel': 'epoch', 'ylabel': 'loss'}
        self._display(lambda vis: vis.line(X=x, Y=y, win=str(self.display_id + 1), opts=opts))

    def show_validation(self, message: str, metric: str, history: list[dict]) -> None:
        """Print and log ``message`` (and the last entry of ``history`` in loss_log.jsonl), plot every score of
        ``history`` over the epochs and table it on the page."""
        print(message)
        self.log(message)
        if history:
            self.training_log.validation(metric, history[-1])
        self.validation, self.validation_metric = list(history), metric
        if self.use_html:
            epoch, labels = self.html_state or (0, [])
            self.write_html(epoch, labels)
        if self.vis is None or not history:
            return
        legend = list(history[-1]['scores'])
        x = np.asarray([[h['epoch']] * len(legend) for h in history], dtype=np.float64)
        y = np.asarray([[h['scores'].get(k, np.nan) for k in legend] for h in history], dtype=np.float64)
        opts = {'title': f'{self.name} validation (best by {metric})', 'legend': legend, 'xlabel': 'epoch',
                'ylabel': 'score'}
        self._display(lambda vis: vis.line(X=x, Y=y, win=str(self.display_id + 2), opts=opts))

    def print_current_losses(self, epoch: int, iters: int, losses: OrderedDict[str, float], t_comp: float,
                             t_data: float) -> None:
        """Print and log ``(epoch: E, iters: I, time: T, data: D) name: value ...``; the same as a record in
        loss_log.jsonl, unrounded.

        t_comp: seconds of computation per sample; t_data: seconds spent loading data.
        """
        message = f'(epoch: {epoch}, iters: {iters}, time: {t_comp:.3f}, data: {t_data:.3f}) '
        message += ' '.join(f'{k}: {float(v):.3f}' for k, v in losses.items())
        print(message)
        self.log(message)
        self.training_log.iteration(epoch, iters, losses, t_comp, t_data)


def epoch_image_name(epoch: int, label: str) -> str:
    """File name of a training visual saved at ``epoch``."""
    return f'epoch{epoch:03d}_{label}.png'


def save_images(webpage: HTML, visuals: OrderedDict[str, torch.Tensor], image_path: list[str] | str,
                aspect_ratio: float = 1.0, width: int = 256, save_raw: bool = False) -> None:
    """Save every item of a test batch as ``<stem>_<visual>.png`` in the page's image folder, one page row each.

    visuals: name -> Tensor (N, C, H, W) in [-1, 1]; image_path: the batch's N source paths (``<stem>`` is the
    file name without its file-type extension, other dots kept: :func:`util.util.output_name`; two inputs with
    the same name are a ValueError). One-channel visuals, and three equal channels (gray repeated to RGB), give
    1-channel PNGs. With ``save_raw`` the values are also
    written unquantised as float32 ``<stem>_<visual>.npy`` and ``.tif`` in the network's [-1, 1] range,
    shaped (H, W) for one channel and (H, W, C) otherwise.
    """
    paths = [image_path] if isinstance(image_path, str) else list(image_path)
    image_dir = webpage.get_image_dir()
    for i, path in enumerate(paths):
        stem = util.output_name(path)
        webpage.claim_name(stem, str(path))
        webpage.add_header(stem)
        ims, txts = [], []
        for label, batch in visuals.items():
            image = batch[i]
            name = f'{stem}_{label}'
            im = util.tensor2im(image)
            if im.ndim == 3 and (im == im[..., :1]).all():    # gray repeated to RGB (MRNet's 3 channels): 1 channel
                im = im[..., 0]
            util.save_image(im, os.path.join(image_dir, name + '.png'), aspect_ratio=aspect_ratio)
            if save_raw:
                raw = image.detach().float().cpu().numpy()
                util.save_raw(raw[0] if raw.shape[0] == 1 else raw.transpose(1, 2, 0), os.path.join(image_dir, name))
            ims.append(name + '.png')
            txts.append(label)
        webpage.add_images(ims, txts, ims, width=width)

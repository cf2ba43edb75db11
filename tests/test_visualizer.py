"""util.visualizer against a real visdom server, without one, and its files (loss logs, HTML page, results);
util.training_log, the log for programs it writes beside loss_log.txt.

The visdom server is started through ``visdom.server.run_server.main``: ``python -m visdom.server`` first
downloads the web UI's JS/CSS and, offline, dies on the MathJax download (visdom 0.2.4 lets that error escape).
``main`` is the very server ``-m`` starts after that step; its HTTP API needs none of the downloaded files.
"""
from __future__ import annotations

import base64
import errno
import io
import json
import re
import socket
import subprocess
import sys
import time
import uuid
from argparse import Namespace
from collections import OrderedDict
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import requests
import tifffile
import torch
import visdom
from PIL import Image

from util import util
from util.disk import WriteError
from util.html import HTML
from util.training_log import read_training_log
from util.visualizer import Visualizer, save_images, visuals_grid

SERVER_CMD = 'from visdom.server.run_server import main; main()'
# the plain visdom client used to read windows back calls the deprecated logger.warn
pytestmark = pytest.mark.filterwarnings("ignore:The 'warn' method is deprecated:DeprecationWarning")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def make_opt(tmp_path: Path, **overrides) -> Namespace:
    opt = Namespace(name='exp', checkpoints_dir=str(tmp_path / 'checkpoints'), isTrain=True, no_html=False,
                    display_id=0, display_server='http://localhost', display_port=free_port(), display_env='main',
                    display_ncols=2, display_winsize=64)
    vars(opt).update(overrides)
    return opt


def ramp_visuals(value: float = 0.0) -> OrderedDict[str, torch.Tensor]:
    """real_A (1 channel), fake_B and real_B (3 channels), 2 x ... x 8 x 8, in [-1, 1]."""
    base = torch.linspace(-1, 1, 64).reshape(1, 1, 8, 8)
    return OrderedDict(real_A=base.repeat(2, 1, 1, 1), fake_B=torch.full((2, 3, 8, 8), value),
                       real_B=-base.repeat(2, 3, 1, 1))


def warnings_in(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith('WARNING')]


@pytest.fixture
def visdom_server(tmp_path):
    """A real visdom server on a free localhost port; yields (port, process) and always stops it."""
    port = free_port()
    log = open(tmp_path / 'visdom.log', 'w')
    proc = subprocess.Popen([sys.executable, '-c', SERVER_CMD, '-port', str(port), '-bind_local',
                             '-env_path', str(tmp_path / 'visdom_env'), '-logging_level', 'WARNING'],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f'visdom server exited: {(tmp_path / "visdom.log").read_text()}'
            try:  # an API call, not the web UI (whose JS/CSS are not downloaded offline)
                answer = requests.post(f'http://127.0.0.1:{port}/win_exists', timeout=1,
                                       data=json.dumps({'win': 'none', 'eid': 'main'}))
                if answer.text == 'false':
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, 'visdom server did not answer within 60 s'
            time.sleep(0.2)
        yield port, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_real_visdom_server_gets_images_and_loss_curves(tmp_path, visdom_server, capsys):
    port, proc = visdom_server
    env = f'test_{uuid.uuid4().hex}'
    vis = Visualizer(make_opt(tmp_path, display_id=3, display_port=port, display_env=env, no_html=True))
    names = ['G_GAN', 'G_L1', 'D_real']
    points = []
    for epoch in (1, 2):
        vis.display_current_results(ramp_visuals(epoch - 1.0), epoch, save_result=False)
        for ratio in (0.25, 0.5):
            losses = OrderedDict((n, float(epoch + ratio + i)) for i, n in enumerate(names))
            vis.plot_current_losses(epoch, ratio, losses)
            points.append((epoch + ratio, list(losses.values())))
    assert warnings_in(capsys.readouterr().err) == []

    client = visdom.Visdom(server='http://127.0.0.1', port=port, env=env, raise_exceptions=True,
                           use_incoming_socket=False)
    assert client.win_exists('3', env=env) and client.win_exists('4', env=env)

    plot = json.loads(client.get_window_data(win='4', env=env))
    traces = plot['content']['data']
    assert [t['name'] for t in traces] == names
    for i, trace in enumerate(traces):
        assert trace['x'] == pytest.approx([x for x, _ in points])
        assert trace['y'] == pytest.approx([ys[i] for _, ys in points])

    images = json.loads(client.get_window_data(win='3', env=env))
    assert images['type'] == 'image'
    assert images['title'] == 'exp epoch 2: real_A | fake_B | real_B'
    png = base64.b64decode(images['content']['src'].split(',', 1)[1])
    grid = np.asarray(Image.open(io.BytesIO(png)))
    assert grid.shape == (2 * (8 + 4), 2 * (8 + 4), 3)  # 3 images, 2 per row, 2 px padding on each side
    real_a = util.tensor2im(ramp_visuals()['real_A']).astype(int)
    assert np.abs(grid[3:11, 3:11].astype(int) - real_a[..., None]).max() <= 1  # gray shown as RGB
    assert (grid[3:11, 15:23] == 255).all()  # epoch 2's fake_B (all 1.0), the latest display

    proc.terminate()  # the server goes away mid-run: one warning, then training goes on undisplayed
    proc.wait(timeout=10)
    for epoch in (3, 4):
        vis.display_current_results(ramp_visuals(), epoch, save_result=False)
        vis.plot_current_losses(epoch, 0.5, OrderedDict((n, 1.0) for n in names))
    warnings = warnings_in(capsys.readouterr().err)
    assert len(warnings) == 1 and f'http://localhost:{port}' in warnings[0] and 'lost the connection' in warnings[0]


def use_for_a_while(vis: Visualizer, iterations: int = 5) -> None:
    """What train.py does with a Visualizer during a few iterations."""
    for i in range(iterations):
        vis.display_current_results(ramp_visuals(), 1, save_result=False)
        vis.plot_current_losses(1, i / iterations, OrderedDict(G_GAN=1.0, D_real=0.5))
        vis.print_current_losses(1, i, OrderedDict(G_GAN=1.0, D_real=0.5), 0.1, 0.01)


def test_no_server_warns_once_and_goes_on(tmp_path, capsys):
    opt = make_opt(tmp_path, display_id=1)  # nothing listens on the free port
    start = time.monotonic()
    vis = Visualizer(opt)
    use_for_a_while(vis)
    assert time.monotonic() - start < 10
    assert vis.vis is None
    warnings = warnings_in(capsys.readouterr().err)
    assert len(warnings) == 1
    assert f'http://localhost:{opt.display_port}' in warnings[0]
    assert f'python -m visdom.server -port {opt.display_port}' in warnings[0] and '--display_id 0' in warnings[0]


def test_silent_server_times_out_instead_of_hanging(tmp_path, capsys):
    with socket.socket() as listener:  # accepts TCP connections (kernel backlog) but never answers HTTP
        listener.bind(('127.0.0.1', 0))
        listener.listen(8)
        opt = make_opt(tmp_path, display_id=1, display_port=listener.getsockname()[1])
        start = time.monotonic()
        use_for_a_while(Visualizer(opt))
        assert time.monotonic() - start < 10
    assert len(warnings_in(capsys.readouterr().err)) == 1


@pytest.mark.parametrize('display_id', [0, -1])
def test_display_off_never_contacts_a_server(tmp_path, capsys, display_id):
    with socket.socket() as listener:
        listener.bind(('127.0.0.1', 0))
        listener.listen(8)
        vis = Visualizer(make_opt(tmp_path, display_id=display_id, display_port=listener.getsockname()[1]))
        use_for_a_while(vis)
        listener.settimeout(0.3)
        with pytest.raises(socket.timeout):
            listener.accept()  # nobody knocked
    assert vis.vis is None
    assert warnings_in(capsys.readouterr().err) == []


def test_loss_log_lines(tmp_path, capsys):
    opt = make_opt(tmp_path)
    vis = Visualizer(opt)
    vis.print_current_losses(1, 10, OrderedDict(G_GAN=0.69314, G_L1=12.5, D_real=0.0004), 0.1234, 0.0101)
    line = '(epoch: 1, iters: 10, time: 0.123, data: 0.010) G_GAN: 0.693 G_L1: 12.500 D_real: 0.000'
    assert capsys.readouterr().out.strip() == line
    Visualizer(opt).print_current_losses(2, 20, OrderedDict(G_GAN=torch.tensor(1.0)), 1.0, 2.0)  # a resumed run
    lines = (tmp_path / 'checkpoints' / 'exp' / 'loss_log.txt').read_text().splitlines()
    header = re.compile(r'^=+ Training Loss \(.+\) =+$')
    assert len(lines) == 4
    assert header.match(lines[0]) and lines[1] == line
    assert header.match(lines[2]) and lines[3] == '(epoch: 2, iters: 20, time: 1.000, data: 2.000) G_GAN: 1.000'
    # the same in loss_log.jsonl, unrounded; the resumed run appends after a start record of its own
    records = read_training_log(str(tmp_path / 'checkpoints' / 'exp' / 'loss_log.jsonl'))
    assert [r['kind'] for r in records] == ['start', 'iteration', 'start', 'iteration']
    assert re.fullmatch(r'\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d', records[0]['date'])
    assert records[1] == {'kind': 'iteration', 'epoch': 1, 'iters': 10, 'time': 0.1234, 'data': 0.0101,
                          'losses': {'G_GAN': 0.69314, 'G_L1': 12.5, 'D_real': 0.0004}}
    assert records[3] == {'kind': 'iteration', 'epoch': 2, 'iters': 20, 'time': 1.0, 'data': 2.0,
                          'losses': {'G_GAN': 1.0}}


def test_validation_and_non_finite_values_in_the_jsonl_log(tmp_path, capsys):
    vis = Visualizer(make_opt(tmp_path, no_html=True))
    vis.print_current_losses(1, 4, OrderedDict(G_GAN=float('nan'), G_L1=float('inf')), 0.05, 0.0)
    history = [{'epoch': 1, 'score': float('nan'), 'seconds': 12.3, 'scores': {'psnr': float('nan'), 'mae': 81.5}}]
    vis.show_validation('(validation epoch: 1, time: 12.3 s) ...', 'psnr', history)
    path = tmp_path / 'checkpoints' / 'exp' / 'loss_log.jsonl'
    text = path.read_text()
    assert 'NaN' not in text and 'Infinity' not in text          # strict JSON: null instead
    assert [json.loads(line) for line in text.splitlines()][1:] == [
        {'kind': 'iteration', 'epoch': 1, 'iters': 4, 'time': 0.05, 'data': 0.0,
         'losses': {'G_GAN': None, 'G_L1': None}},
        {'kind': 'validation', 'epoch': 1, 'seconds': 12.3, 'metric': 'psnr', 'score': None,
         'scores': {'psnr': None, 'mae': 81.5}}]


def test_jsonl_log_skips_a_killed_runs_last_line_and_names_a_corrupt_one(tmp_path):
    vis = Visualizer(make_opt(tmp_path, no_html=True))
    vis.print_current_losses(1, 2, OrderedDict(G_L1=3.0), 0.05, 0.0)
    path = tmp_path / 'checkpoints' / 'exp' / 'loss_log.jsonl'
    with open(path, 'a') as f:
        f.write('{"kind": "iteration", "epoch": 1, "iters": 4, "ti')          # killed while writing
    assert [r['kind'] for r in read_training_log(str(path))] == ['start', 'iteration']
    Visualizer(make_opt(tmp_path, no_html=True)).print_current_losses(1, 4, OrderedDict(G_L1=2.0), 0.05, 0.0)
    records = read_training_log(str(path))                                   # the resume cut the unfinished line
    assert [(r['kind'], r.get('iters')) for r in records] == [('start', None), ('iteration', 2), ('start', None),
                                                               ('iteration', 4)]
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(''.join(lines[:2] + ['{"kind": "iteration", "epoch": 1, "iters": 3, "ti\n'] + lines[2:]))
    with pytest.raises(ValueError, match=re.escape(f'{path}, line 3: not JSON')):
        read_training_log(str(path))
    path.write_text(''.join(lines[:1] + ['[1, 2]\n'] + lines[1:]))
    with pytest.raises(ValueError, match=re.escape(f'{path}, line 2: not a training log record')):
        read_training_log(str(path))


def test_jsonl_log_on_a_full_disk_names_the_file(tmp_path, monkeypatch):
    vis = Visualizer(make_opt(tmp_path, no_html=True))
    path = str(tmp_path / 'checkpoints' / 'exp' / 'loss_log.jsonl')
    real_open = open

    def full_disk(file, *args, **kwargs):
        if str(file) == path:
            raise OSError(errno.ENOSPC, 'No space left on device', file)
        return real_open(file, *args, **kwargs)
    monkeypatch.setattr('builtins.open', full_disk)
    with pytest.raises(WriteError, match=f'no space left on .* while writing {re.escape(path)} '):
        vis.print_current_losses(1, 2, OrderedDict(G_L1=3.0), 0.05, 0.0)


class ImgHeaders(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.headers: list[str] = []
        self.srcs: list[str] = []
        self._in_h3 = False

    def handle_starttag(self, tag, attrs):
        self._in_h3 = tag == 'h3'
        if tag == 'img':
            self.srcs.append(dict(attrs)['src'])

    def handle_data(self, data):
        if self._in_h3:
            self.headers.append(data)
            self._in_h3 = False


def test_training_page_lists_saved_epochs_newest_first(tmp_path):
    vis = Visualizer(make_opt(tmp_path))
    for epoch, save in ((1, True), (2, False), (3, True), (4, True)):
        vis.display_current_results(ramp_visuals(value=epoch / 4), epoch, save_result=save)
    web = tmp_path / 'checkpoints' / 'exp' / 'web'
    page = ImgHeaders()
    page.feed((web / 'index.html').read_text())
    assert page.headers == ['epoch [4]', 'epoch [3]', 'epoch [1]']  # epoch 2 was not saved
    assert page.srcs[:3] == ['images/epoch004_real_A.png', 'images/epoch004_fake_B.png', 'images/epoch004_real_B.png']
    assert len(page.srcs) == 9 and all((web / src).is_file() for src in page.srcs)
    with Image.open(web / 'images' / 'epoch001_real_A.png') as im:
        assert im.mode == 'L'
    with Image.open(web / 'images' / 'epoch003_fake_B.png') as im:
        assert im.mode == 'RGB' and np.asarray(im)[0, 0].tolist() == [223, 223, 223]  # 0.75 -> 222.8


def test_no_html_writes_no_page(tmp_path):
    vis = Visualizer(make_opt(tmp_path, no_html=True))
    vis.display_current_results(ramp_visuals(), 1, save_result=True)
    assert not (tmp_path / 'checkpoints' / 'exp' / 'web').exists()


def test_save_images_pngs_and_lossless_raw(tmp_path):
    webpage = HTML(str(tmp_path / 'results'), 'test')
    torch.manual_seed(0)
    visuals = OrderedDict(real_A=torch.rand(2, 1, 8, 6) * 2 - 1, fake_B=torch.tanh(torch.randn(2, 3, 8, 6)))
    visuals['real_B'] = visuals['real_A'].expand(-1, 3, -1, -1)          # gray repeated to RGB
    save_images(webpage, visuals, ['/data/subj01_z_042.png', '/data/subj01_z_043.png'], save_raw=True)
    webpage.save()
    img_dir = Path(webpage.get_image_dir())
    for i, stem in enumerate(['subj01_z_042', 'subj01_z_043']):
        with Image.open(img_dir / f'{stem}_real_A.png') as im:
            assert im.mode == 'L'
            assert np.array_equal(np.asarray(im), util.tensor2im(visuals['real_A'][i]))
        with Image.open(img_dir / f'{stem}_real_B.png') as im:                # written as one channel
            assert im.mode == 'L' and np.array_equal(np.asarray(im), util.tensor2im(visuals['real_A'][i]))
        with Image.open(img_dir / f'{stem}_fake_B.png') as im:
            assert im.mode == 'RGB'
            assert np.array_equal(np.asarray(im), util.tensor2im(visuals['fake_B'][i]))
        gray = visuals['real_A'][i, 0].numpy()
        rgb = visuals['fake_B'][i].numpy().transpose(1, 2, 0)
        for name, expected in ((f'{stem}_real_A', gray), (f'{stem}_fake_B', rgb)):
            npy = np.load(img_dir / f'{name}.npy')
            tif = tifffile.imread(img_dir / f'{name}.tif')
            assert npy.dtype == tif.dtype == np.float32
            assert np.array_equal(npy, expected) and np.array_equal(tif, expected)
    page = ImgHeaders()
    page.feed((tmp_path / 'results' / 'index.html').read_text())
    assert page.headers == ['subj01_z_042', 'subj01_z_043']
    assert page.srcs == [f'images/subj01_z_04{i}_{v}.png' for i in (2, 3) for v in ('real_A', 'fake_B', 'real_B')]


def test_save_images_aspect_ratio_and_no_raw_by_default(tmp_path):
    webpage = HTML(str(tmp_path / 'results'), 'test')
    save_images(webpage, OrderedDict(fake_B=torch.zeros(1, 1, 8, 6)), ['a/b/case7.nii.png'], aspect_ratio=2.0)
    assert sorted(p.name for p in Path(webpage.get_image_dir()).iterdir()) == ['case7.nii_fake_B.png']
    with Image.open(Path(webpage.get_image_dir()) / 'case7.nii_fake_B.png') as im:
        assert im.size == (12, 8)


def test_visuals_grid_pads_smaller_images_white():
    grid = visuals_grid(OrderedDict(a=torch.full((1, 1, 4, 6), -1.0), b=torch.ones(1, 3, 2, 2)))
    assert grid.shape == (2, 3, 4, 6) and grid.dtype == np.float32
    assert (grid[0] == 0).all()
    assert (grid[1] == 1).all()  # the 2x2 white image, padded with white


def test_training_shows_visuals_and_losses_in_a_real_server(aligned_root, tmp_path, visdom_server):
    """train.py with a live server: the loss curve and the current visuals are readable through the client API."""
    from conftest import ROOT, run_script
    port = visdom_server[0]
    env = f'train_{uuid.uuid4().hex[:8]}'
    proc = run_script(str(ROOT / 'train.py'), '--model', 'pix2pix', '--name', 'live', '--dataroot', str(aligned_root),
                      '--netG', 'unet_128', '--ngf', '8', '--ndf', '8', '--load_size', '128', '--crop_size', '128',
                      '--gpu_ids', '-1', '--num_threads', '0', '--n_epochs', '3', '--n_epochs_decay', '0',
                      '--print_freq', '1', '--display_freq', '1', '--display_id', '5', '--display_port', str(port),
                      '--display_server', 'http://127.0.0.1', '--display_env', env, cwd=tmp_path)
    assert 'WARNING' not in proc.stderr
    client = visdom.Visdom(server='http://127.0.0.1', port=port, env=env, raise_exceptions=True,
                           use_incoming_socket=False)
    plot = json.loads(client.get_window_data(win='6', env=env))
    names = sorted(trace['name'] for trace in plot['content']['data'])
    assert names == ['D_fake', 'D_real', 'G_GAN', 'G_L1']
    assert all(len(trace['x']) == 3 for trace in plot['content']['data'])  # one point per iteration
    # loss_log.jsonl holds what loss_log.txt says: the same epochs, iterations, times and losses (unrounded)
    ckpt = tmp_path / 'checkpoints' / 'live'
    text = [line for line in (ckpt / 'loss_log.txt').read_text().splitlines() if line.startswith('(epoch')]
    records = [r for r in read_training_log(str(ckpt / 'loss_log.jsonl')) if r['kind'] == 'iteration']
    assert len(records) == len(text) == 3
    for line, r in zip(text, records):
        losses = ' '.join(f'{k}: {v:.3f}' for k, v in r['losses'].items())
        assert line == f"(epoch: {r['epoch']}, iters: {r['iters']}, time: {r['time']:.3f}, data: {r['data']:.3f}) " \
                       f"{losses}"
    assert [r['epoch'] for r in records] == [1, 2, 3] and sorted(r['losses']) == names
    assert client.win_exists('5', env=env)

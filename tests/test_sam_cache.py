"""The fast SAM encoder and the SAM feature cache (issue 11): SDPA attention equals segment_anything's, the
precision is recorded, and the cache gives the same training, is keyed by everything that changes a feature,
resumes, detects corruption, stays off under --augment, checks the disk and survives concurrent writers."""
from __future__ import annotations

import copy
import glob
import json
import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from segment_anything.modeling.image_encoder import Attention

from data import create_dataset
from data.splits import write_splits
from models import create_model
from models.encoders import sam_encoder
from data import sam_cache
from models.encoders.sam_attention import SdpaAttention, use_sdpa_attention
from models.generators.sam_unet import define_sam_unet
from models.encoders.sam_encoder import SamEncoderConfig, build_image_encoder
from options.test_options import TestOptions
from options.train_options import TrainOptions
from tests.sam_fixtures import (TINY_SAM, official_encoder_state, random_position_tables, save_official_checkpoint,
                                tiny_sam_options)
from tests.volume_fixtures import phantom, write_subject

ROOT = Path(__file__).resolve().parents[1]
TINY = ['--ngf', '4', '--ndf', '4', '--sam_input_size', '64', '--sam_embed_dim', '32', '--sam_depth', '2',
        '--sam_num_heads', '2', '--sam_global_attn_indexes', '1']


@pytest.fixture(autouse=True)
def quiet_random_sam(monkeypatch):
    monkeypatch.setattr(sam_encoder, '_random_sam_warned', True)


# ----------------------------------------------------------------------------- fast attention

@pytest.mark.parametrize('config, size', [(TINY_SAM, 64),                                   # windows padded 4 -> 14
                                          (SamEncoderConfig('custom', 64, 3, 4, (2,)), 224)])  # 14x14: exact windows
def test_sdpa_attention_equals_segment_anything(config, size):
    reference = build_image_encoder(config, size)
    random_position_tables(reference)
    fast = use_sdpa_attention(copy.deepcopy(reference))
    attentions = [m for m in fast.modules() if isinstance(m, Attention)]
    assert attentions and all(type(m) is SdpaAttention for m in attentions)
    assert list(fast.state_dict()) == list(reference.state_dict())
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, got = reference(x), fast(x)
    assert want.abs().max() > 0.5
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_fast_encoder_loads_the_official_checkpoint_and_equals_segment_anything(tmp_path):
    path = tmp_path / 'sam.pth'
    save_official_checkpoint(path, official_encoder_state(TINY_SAM))
    net = define_sam_unet(3, 3, 4, 'instance', False, 'normal', 0.02, tiny_sam_options(sam_checkpoint=str(path)))
    assert all(type(m) is SdpaAttention for m in net.sam.image_encoder.modules() if isinstance(m, Attention))
    reference = build_image_encoder(TINY_SAM, 64)
    reference.load_state_dict(net.sam.image_encoder.state_dict())      # same keys, same tensors
    x = torch.rand(3, 3, 256, 256) * 2 - 1
    with torch.no_grad():
        want = reference(net.sam.preprocess(x))
    torch.testing.assert_close(net.sam(x), want, atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- --sam_precision

def test_sam_precision_is_recorded_and_a_mismatch_warned():
    bf16 = define_sam_unet(3, 3, 4, 'instance', False, 'normal', 0.02, tiny_sam_options(sam_precision='bf16'))
    fp32 = define_sam_unet(3, 3, 4, 'instance', False, 'normal', 0.02, tiny_sam_options())
    assert bf16.checkpoint_meta()['sam_precision'] == 'bf16'
    assert fp32.checkpoint_meta()['sam_precision'] == 'fp32'   # auto on the CPU
    x = torch.rand(2, 3, 256, 256) * 2 - 1
    f16, f32 = bf16.sam(x), fp32.sam(x)
    assert f16.dtype == torch.float32 and next(bf16.sam.image_encoder.parameters()).dtype == torch.bfloat16
    assert 0 < (f16 - f32).abs().max() < 0.1 * f32.abs().max()     # bf16 rounding, not another function
    with pytest.warns(UserWarning, match=r'trained with SAM in bf16, this run computes SAM in fp32.*'
                                         r'--sam_precision bf16'):
        fp32.load_checkpoint_state(bf16.checkpoint_state(), bf16.checkpoint_meta())
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        fp32.load_checkpoint_state(fp32.checkpoint_state(), fp32.checkpoint_meta())
    with pytest.raises(SystemExit):
        TrainOptions().parse(['--model', 'mrnet', '--sam_precision', 'fp8'], setup_device=False)


# ----------------------------------------------------------------------------- the cache

@pytest.fixture
def dataroot(tmp_path: Path) -> Path:
    """Two training subjects (phantom heads), one test subject."""
    data = tmp_path / 'data'
    for i, name in enumerate(('a', 'b', 'c')):
        write_subject(data, name, volumes=phantom(seed=i))
    write_splits(str(data), {'train': ['a', 'b'], 'test': ['c']})
    return data


def make_run(tmp_path: Path, data: Path, *extra: str, train: bool = True):
    """(opt, loader, model) of a tiny MRNet on ``data``'s axial slices, its SAM cache under tmp_path/cache."""
    args = ['--model', 'mrnet', '--dataroot', str(data), '--checkpoints_dir', str(tmp_path / 'ckpt'),
            '--gpu_ids', '-1', '--num_threads', '0', '--planes', 'z', '--sam_cache', str(tmp_path / 'cache'), *TINY]
    args += ['--display_id', '0', '--batch_size', '2'] if train else []
    opt = (TrainOptions() if train else TestOptions()).parse([*args, *extra], setup_device=False)
    opt.device, opt.rank, opt.world_size = torch.device('cpu'), 0, 1
    loader = create_dataset(opt)
    torch.manual_seed(0)
    model = create_model(opt)
    model.setup(opt)
    return opt, loader, model


def chunk_files(tmp_path: Path) -> list[str]:
    return sorted(glob.glob(str(tmp_path / 'cache' / 'sam_*' / '*' / '*.npy')))


def train_losses(loader, model, steps: int = 2) -> list[dict]:
    model.prepare_data(loader)
    loader.set_epoch(1)
    out = []
    for data in loader:
        model.set_input(data)
        model.optimize_parameters()
        out.append(model.get_current_losses())
        if len(out) == steps:
            return out
    return out


def test_cached_training_gives_the_same_losses(tmp_path, dataroot):
    plain = train_losses(*make_run(tmp_path, dataroot, '--sam_cache', 'off')[1:])
    exact = train_losses(*make_run(tmp_path, dataroot, '--sam_cache_dtype', 'float32')[1:])
    _, loader, model = make_run(tmp_path, dataroot)      # float16 storage, the default
    half = train_losses(loader, model)
    assert len({os.path.dirname(os.path.dirname(f)) for f in chunk_files(tmp_path)}) == 2   # one cache per dtype
    assert model.sam_feature is not None and loader.dataset.sam_features is not None
    assert exact == plain                                 # float32 storage: bit-identical losses
    for got, want in zip(half, plain):                    # float16 storage: 2^-11 relative per feature value
        for k in want:
            assert got[k] == pytest.approx(want[k], rel=1e-3, abs=1e-5), k


def test_cache_is_reused_and_rebuilt_for_other_settings(tmp_path, dataroot, monkeypatch):
    opt, loader, model = make_run(tmp_path, dataroot)
    rng = torch.get_rng_state()
    model.prepare_data(loader)
    assert torch.equal(torch.get_rng_state(), rng)       # building leaves the run's random state alone (--seed)
    first = chunk_files(tmp_path)
    assert first and len(loader.dataset.sam_features) == len(loader.dataset)
    key = json.loads(Path(first[0]).parent.parent.joinpath('key.json').read_text())
    assert key['input_size'] == 64 and key['precision'] == 'fp32' and key['dtype'] == 'float16'
    assert key['sam_sha256'].startswith('random-init') and key['slices']['source'] == 'mr'

    calls = []
    real_build = sam_cache.build_chunks
    monkeypatch.setattr(sam_cache, 'build_chunks', lambda cache, chunks, *a, **k: (calls.append(len(chunks)),
                                                                                   real_build(cache, chunks, *a, **k)))
    _, loader, model = make_run(tmp_path, dataroot)       # a later run with the same settings reads it
    model.prepare_data(loader)
    assert calls == [] and chunk_files(tmp_path) == first

    sam_file = tmp_path / 'sam.pth'
    save_official_checkpoint(sam_file, official_encoder_state(TINY_SAM))
    for flags in (['--sam_input_size', '32'], ['--sam_checkpoint', str(sam_file)], ['--ct_window', '-500', '500'],
                  ['--direction', 'BtoA'], ['--crop_size', '512'], ['--preprocess', 'pad'],
                  ['--sam_precision', 'bf16']):
        before = set(chunk_files(tmp_path))
        _, loader, model = make_run(tmp_path, dataroot, *flags)
        model.prepare_data(loader)
        new = set(chunk_files(tmp_path)) - before
        assert new and not {os.path.dirname(os.path.dirname(f)) for f in new} & \
            {os.path.dirname(os.path.dirname(f)) for f in before}, flags   # a new cache folder, old one unread

    # a subject whose source file changed: its chunks are rebuilt, the other subject's kept
    calls.clear()
    write_subject(dataroot, 'b', volumes=phantom(seed=7))
    _, loader, model = make_run(tmp_path, dataroot)
    model.prepare_data(loader)
    now = chunk_files(tmp_path)
    assert [f for f in first if '/a/' in f] == [f for f in now if '/a/' in f and f in first]
    assert not set(f for f in first if '/b/' in f) & set(now) and any('/b/' in f for f in now if f not in first)
    assert calls == [len([f for f in first if '/b/' in f])]


def test_interrupted_build_resumes(tmp_path, dataroot, monkeypatch):
    monkeypatch.setattr(sam_cache, 'CHUNK_BYTES', 3 * 256 * 4 * 4 * 2)   # 3 slices a chunk
    written = []
    real_write = sam_cache.SamFeatureCache.write_chunk

    def write_then_die(self, chunk, *args):
        if len(written) == 2:
            raise KeyboardInterrupt
        written.append(chunk.indices)
        return real_write(self, chunk, *args)
    monkeypatch.setattr(sam_cache.SamFeatureCache, 'write_chunk', write_then_die)
    _, loader, model = make_run(tmp_path, dataroot)
    with pytest.raises(KeyboardInterrupt):
        model.prepare_data(loader)
    assert len(chunk_files(tmp_path)) == 2 and not glob.glob(str(tmp_path / 'cache' / '*' / '*' / '.*.tmp'))
    monkeypatch.setattr(sam_cache.SamFeatureCache, 'write_chunk', real_write)
    _, loader, model = make_run(tmp_path, dataroot)
    chunks_built = []
    real_build = sam_cache.build_chunks
    monkeypatch.setattr(sam_cache, 'build_chunks', lambda cache, chunks, *a, **k: (
        chunks_built.extend(chunks), real_build(cache, chunks, *a, **k)))
    model.prepare_data(loader)
    n = len(loader.dataset)
    assert sum(len(c.indices) for c in chunks_built) == n - 6      # only what the interrupted build left
    assert len(loader.dataset.sam_features) == n
    assert all(loader.dataset[i]['sam_cached'] for i in range(n))


def test_corrupt_chunk_is_detected_and_rebuilt(tmp_path, dataroot, capsys):
    _, loader, model = make_run(tmp_path, dataroot, '--num_threads', '1')
    model.prepare_data(loader)
    dataset = loader.dataset
    i = 3
    subject, plane, index = dataset.slice_key(i)
    good = dataset[i]['sam_feature'].float()
    stem = dataset.sam_features.index[(subject, plane, index)][0]
    row = dataset.sam_features.index[(subject, plane, index)][1]
    data = np.load(stem + '.npy', mmap_mode='r+')
    data[row, 7, 1, 2] += 1                                  # one value changed on disk
    data.flush()
    del data
    reader = dataset.sam_features
    dataset.use_sam_features('A', type(reader)(reader.index, reader.shape, reader.dtype))  # a fresh one: no open maps
    item = dataset[i]
    assert not item['sam_cached'] and not os.path.exists(stem + '.npy') and not os.path.exists(stem + '.json')
    assert 'damaged (checksum mismatch)' in capsys.readouterr().err
    # the model computes the feature of an uncached slice itself: the same as the cached one was
    batch = torch.utils.data.default_collate([item, dataset[i + 1]])
    model.set_input(batch)
    torch.testing.assert_close(model.sam_feature[0], good, atol=2e-3, rtol=2e-3)
    # the next epoch rebuilds the chunk, and workers read it
    model.prepare_data(loader)
    assert os.path.exists(dataset.sam_features.index[(subject, plane, index)][0] + '.npy')
    batches = list(torch.utils.data.DataLoader(dataset, batch_size=4, num_workers=1))
    assert all(b['sam_cached'].all() for b in batches)
    torch.testing.assert_close(dataset[i]['sam_feature'].float(), good, atol=0, rtol=0)


def test_augment_bypasses_the_cache(tmp_path, dataroot, capsys):
    _, loader, model = make_run(tmp_path, dataroot, '--augment')
    model.prepare_data(loader)
    model.prepare_data(loader)
    out = capsys.readouterr().out
    assert out.count('SAM feature cache off: --augment') == 1
    assert loader.dataset.sam_features is None and 'sam_feature' not in loader.dataset[0]
    assert not chunk_files(tmp_path)


def test_only_a_dataset_with_slice_keys_takes_feature_readers():
    """The cache hands its readers to the dataset through use_sam_features; a dataset without slice keys takes None
    alone (data/base_dataset.py)."""
    from data.aligned_dataset import AlignedDataset
    plain = AlignedDataset.__new__(AlignedDataset)
    plain.use_sam_features('A', None)
    with pytest.raises(TypeError, match='AlignedDataset cannot read cached SAM features'):
        plain.use_sam_features('A', sam_cache.CachedFeatures({}, (256, 4, 4), np.float16))


def test_build_refuses_when_the_disk_lacks_room(tmp_path, dataroot, monkeypatch):
    _, loader, model = make_run(tmp_path, dataroot)
    usage = sam_cache.shutil.disk_usage(str(tmp_path))
    monkeypatch.setattr(sam_cache.shutil, 'disk_usage', lambda p: usage._replace(free=10 << 20))
    with pytest.raises(RuntimeError, match=r'sam_\w+: \d+ slices need .* but the disk has 10.0 MiB free.*'
                                           r'--sam_cache off'):
        model.prepare_data(loader)
    assert not chunk_files(tmp_path)


BUILD_SCRIPT = """
import sys, torch
sys.path.insert(0, {root!r})
from tests.test_sam_cache import make_run
from pathlib import Path
_, loader, model = make_run(Path({tmp!r}), Path({data!r}))
model.prepare_data(loader)
print('slices', len(loader.dataset.sam_features))
"""


def test_two_processes_sharing_a_cache_do_not_corrupt_it(tmp_path, dataroot):
    script = BUILD_SCRIPT.format(root=str(ROOT), tmp=str(tmp_path), data=str(dataroot))
    make_run(tmp_path, dataroot)                          # the slice store, built once beforehand
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONPATH': str(ROOT)}
    procs = [subprocess.Popen([sys.executable, '-c', script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    _, loader, model = make_run(tmp_path, dataroot)
    model.prepare_data(loader)
    dataset = loader.dataset
    assert all(f'slices {len(dataset)}' in o[0] for o in outs)
    for f in chunk_files(tmp_path):                       # every chunk file whole and matching its manifest
        meta = json.loads(Path(f[:-4] + '.json').read_text())
        rows = np.load(f)
        assert [sam_cache._crc(r) for r in rows] == meta['crc32']
    assert all(dataset[i]['sam_cached'] for i in range(len(dataset)))


def test_torchrun_ranks_build_their_shares_and_train(tmp_path, dataroot):
    make_run(tmp_path, dataroot)
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_addr', '127.0.0.1',
           '--master_port', str(port),
           str(ROOT / 'train.py'), '--model', 'mrnet', '--dataroot', str(dataroot), '--name', 'ddp',
           '--checkpoints_dir', str(tmp_path / 'ckpt'), '--gpu_ids', '-1', '--num_threads', '0', '--planes', 'z',
           '--sam_cache', str(tmp_path / 'cache'), '--display_id', '0', '--batch_size', '2', '--n_epochs', '2',
           '--n_epochs_decay', '0', '--max_dataset_size', '4', '--val_freq', '0', *TINY]
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONPATH': str(ROOT)}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count('0 of 4 slices cached; computing 4') == 1     # built once, in epoch 1, by both ranks
    assert proc.stdout.count('End of epoch 2 / 2') == 1
    keys = []
    for f in chunk_files(tmp_path):
        meta = json.loads(Path(f[:-4] + '.json').read_text())
        keys += [(meta['subject'], i) for i in meta['indices']]
    assert len(keys) == len(set(keys)) == 4              # no slice written twice: each chunk built by one rank
    assert (tmp_path / 'ckpt' / 'ddp' / '2_net_G.pth').exists()


def test_test_phase_reads_its_own_cached_slices(tmp_path, dataroot):
    opt, loader, model = make_run(tmp_path, dataroot)
    model.save_networks('latest')
    opt, loader, model = make_run(tmp_path, dataroot, '--sam_batch_size', '16', train=False)
    model.prepare_data(loader)
    assert {k[0] for k in loader.dataset.sam_features.index} == {'c'}
    data = next(iter(loader))
    assert data['sam_cached'].all()
    model.set_input(data)
    model.test()
    cached = model.fake_B
    model.sam_feature = None                               # SAM run now instead
    model.test()
    torch.testing.assert_close(cached, model.fake_B, atol=1e-2, rtol=0)


def test_sam_precision_auto_follows_the_device(monkeypatch):
    """auto: fp32 on the CPU, bf16 on a GPU that supports it, fp16 on one that does not (the device query mocked,
    not the arithmetic); an explicit precision is kept on every device."""
    from models.encoders.sam_encoder import resolve_precision
    cuda, cpu = torch.device('cuda', 0), torch.device('cpu')
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda *a, **k: True)
    assert (resolve_precision('auto', cuda), resolve_precision('auto', cpu)) == ('bf16', 'fp32')
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda *a, **k: False)
    assert (resolve_precision('auto', cuda), resolve_precision('auto', cpu)) == ('fp16', 'fp32')
    assert [resolve_precision(p, cuda) for p in ('fp32', 'bf16', 'fp16')] == ['fp32', 'bf16', 'fp16']
    encoder = define_sam_unet(3, 3, 4, 'instance', False, 'normal', 0.02, tiny_sam_options()).sam
    assert encoder.cache_identity(cuda)['precision'] == 'fp16' and encoder.cache_identity()['precision'] == 'fp32'


def tiny_cache(tmp_path: Path):
    cache = sam_cache.SamFeatureCache(str(tmp_path / 'c'), {'test': 1}, (2, 2, 2), 'float32')
    cache.open()
    chunk = sam_cache.ChunkPlan('s', 'z', (3, 4), (0, 1))
    return cache, chunk, np.arange(16, dtype=np.float32).reshape(2, 2, 2, 2)


def test_a_chunk_cut_short_while_writing_its_data_leaves_nothing_readable(tmp_path, monkeypatch):
    """np.save dies after writing half of the data: no file under a chunk's name (data or manifest), nothing in the
    index; the next write of the chunk is whole and read back exactly."""
    cache, chunk, features = tiny_cache(tmp_path)
    real_save = np.save

    def save_half_then_die(f, array, *args, **kwargs):
        f.write(b'\x93NUMPY' + b'0' * 40)
        raise OSError('disk full')
    monkeypatch.setattr(np, 'save', save_half_then_die)
    with pytest.raises(OSError, match='disk full'):
        cache.write_chunk(chunk, 'fp', features)
    assert os.listdir(os.path.join(cache.folder, 's')) == []        # no partial file, no manifest
    assert cache.scan({'s': 'fp'}) == {}
    monkeypatch.setattr(np, 'save', real_save)
    stem = cache.write_chunk(chunk, 'fp', features)
    index = cache.scan({'s': 'fp'})
    assert set(index) == {('s', 'z', 3), ('s', 'z', 4)}
    reader = sam_cache.CachedFeatures(index, cache.shape, cache.dtype)
    feature, ok = reader.read(('s', 'z', 4))
    assert ok and np.array_equal(feature.numpy(), features[1]) and os.path.basename(stem).startswith('z0003-0004.')


def test_two_writers_of_one_chunk_never_share_a_file_name(tmp_path):
    """Each write gets its own random token in the name, so two runs building the same chunk at once write two
    files (never into one), and both are whole."""
    cache, chunk, features = tiny_cache(tmp_path)
    first, second = cache.write_chunk(chunk, 'fp', features), cache.write_chunk(chunk, 'fp', features + 1)
    assert first != second
    for stem, want in ((first, features), (second, features + 1)):
        assert np.array_equal(np.load(stem + '.npy'), want)
        assert json.loads(Path(stem + '.json').read_text())['indices'] == [3, 4]


def test_a_manifest_is_written_only_after_its_data(tmp_path, monkeypatch):
    """The manifest is what makes a chunk visible: when it is being written the data file is already whole under
    its final name."""
    cache, chunk, features = tiny_cache(tmp_path)
    real_dumps, seen = json.dumps, []

    def dumps_checking_data(obj, *args, **kwargs):
        if isinstance(obj, dict) and 'crc32' in obj:
            data = glob.glob(os.path.join(cache.folder, 's', 'z0003-0004.*.npy'))
            seen.append(len(data) == 1 and np.array_equal(np.load(data[0]), features))
        return real_dumps(obj, *args, **kwargs)
    monkeypatch.setattr(sam_cache.json, 'dumps', dumps_checking_data)
    cache.write_chunk(chunk, 'fp', features)
    assert seen == [True]

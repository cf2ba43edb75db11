"""Tests for the ingredients beyond the paper (docs/beyond_the_paper.md): 2.5D input, the body-restricted loss,
the SAM perceptual loss, flip TTA, folds and ensembles, the --recipe preset, and their bad inputs."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

import test as test_script
import train as train_script
from data.splits import fold_split, write_splits
from data.context import check_context, context_stack
from data.triplanar_aligned_dataset import TriplanarAlignedDataset
from models.losses.body_loss import masked_l1
from inference.loading import load_ensemble
from inference.predictor import translate
from models.encoders.sam_encoder import SamFeatureEncoder, sam_encoder_config
from models.losses.sam_perceptual import sam_perceptual_loss
from util.body_mask import dilate
from inference.reassembly import disagreement_map
from inference.test_time import ensemble_result_name, flip_average, flip_outputs, fuse, member_settings_conflict
from options.ingredients import RECIPES
from inference.loading import stored_training_options
from options.train_options import TrainOptions
from scripts import predict
from sam_fixtures import tiny_sam_options
from volume_fixtures import make_opt, phantom, write_subject

TINY_SAM = ['--sam_input_size', '64', '--sam_embed_dim', '32', '--sam_depth', '2', '--sam_num_heads', '2',
            '--sam_global_attn_indexes', '1']
# a tiny pix2pix on 32x32 slices with every ingredient that changes training on
MODEL = ['--model', 'pix2pix', '--netG', 'resnet_6blocks', '--ngf', '4', '--ndf', '4', '--crop_size', '32',
         '--load_size', '32', '--output_nc', '1', '--dataset_mode', 'triplanar_aligned', '--gpu_ids', '-1',
         '--num_threads', '0', '--no_dropout']
INGREDIENTS = ['--context_slices', '1', '--loss_region', 'body', '--body_margin_voxels', '1', '--body_dilation', '1',
               '--lambda_sam_perceptual', '0.5', '--tta', 'flip', *TINY_SAM]


def coded_volume(shape=(5, 6, 4)) -> np.ndarray:
    """Canonical volume whose voxel (x, y, z) holds 10000 x + 100 y + z, so a slice tells where it came from."""
    x, y, z = np.meshgrid(*[np.arange(n) for n in shape], indexing='ij')
    return (10000 * x + 100 * y + z).astype(np.float32)


# ----------------------------------------------------------------------------- 2.5D input

@pytest.mark.parametrize('axis', [0, 1, 2])
def test_each_context_channel_is_the_right_neighbour_with_edges_replicated(axis):
    vol = coded_volume()
    n = vol.shape[axis]
    for index in range(n):
        stack = context_stack(vol, axis, index, 2)
        assert stack.shape[0] == 5
        for c in range(5):
            expected = min(max(index - 2 + c, 0), n - 1)          # i-2 .. i+2, clipped at the edges
            coordinate = (stack[c] // 10000, stack[c] // 100 % 100, stack[c] % 100)[axis]
            assert np.all(coordinate == expected), (axis, index, c)


def test_dataset_items_carry_the_neighbouring_slices_in_every_plane(tmp_path):
    """A 2.5D item's channel c is the plain item of slice i-1+c (K = 1), edges replicated, in x, y and z."""
    ramp = phantom()
    ramp['mr'] = (ramp['mr'] + 40.0 * np.arange(ramp['mr'].shape[2])[None, None, :]).astype(np.float32)   # z-ramp
    write_subject(tmp_path / 'data', 's1', ramp)
    write_splits(str(tmp_path / 'data'), {'train': ['s1']})
    plain = TriplanarAlignedDataset(make_opt(tmp_path / 'data', '--input_nc', '1'))
    wide = TriplanarAlignedDataset(make_opt(tmp_path / 'data', '--context_slices', '1'))
    assert len(plain) == len(wide)
    by_key = {(plain[i]['plane'], plain[i]['slice_index']): plain[i]['A'][0] for i in range(len(plain))}
    counts = {p: sum(1 for k in by_key if k[0] == p) for p in 'xyz'}
    for i in range(len(wide)):
        item = wide[i]
        plane, index = item['plane'], item['slice_index']
        assert item['A'].shape == (3, 32, 32)
        for c in range(3):
            j = min(max(index - 1 + c, 0), counts[plane] - 1)
            assert torch.allclose(item['A'][c], by_key[(plane, j)]), (plane, index, c)
    assert make_opt(tmp_path / 'data', '--context_slices', '2').input_nc == 5


def test_context_larger_than_the_thinnest_axis_is_refused_naming_the_file(tmp_path):
    with pytest.raises(ValueError, match=r'--context_slices 11 is larger than the thinnest axis of .*mr.nii.gz '
                                         r'\(shape \(12, 14, 10\), 10 slices\)'):
        check_context(11, {'s1': (str(tmp_path / 's1' / 'mr.nii.gz'), (12, 14, 10))})
    write_subject(tmp_path / 'data', 's1')
    write_splits(str(tmp_path / 'data'), {'train': ['s1']})
    with pytest.raises(ValueError, match='thinnest axis of .*s1/mr.nii.gz'):
        TriplanarAlignedDataset(make_opt(tmp_path / 'data', '--context_slices', '11'))


def test_sam_sees_the_slice_and_its_nearest_neighbours():
    """K = 1: SAM's R, G, B are slices i-1, i, i+1; K = 2: the three central of the five channels."""
    opt = tiny_sam_options()
    sam = SamFeatureEncoder(sam_encoder_config(opt), 64, 5)
    x = torch.stack([torch.full((1, 8, 8), v) for v in (-0.8, -0.4, 0.0, 0.4, 0.8)], 1)    # (1, 5, 8, 8)
    rgb = (x[:, 1:4] + 1) * 127.5                                  # slices i-1, i, i+1 -> 0..255
    expected = (rgb - sam.pixel_mean) / sam.pixel_std
    assert torch.allclose(sam.preprocess(x), expected[..., :1, :1].expand(-1, -1, 64, 64), atol=1e-5)
    assert torch.allclose(sam.preprocess(x[:, 1:4]), sam.preprocess(x))
    with pytest.raises(ValueError, match='odd number'):
        SamFeatureEncoder(sam_encoder_config(opt), 64, 4)


def test_sam_cache_key_includes_the_context(tmp_path):
    write_subject(tmp_path / 'data', 's1')
    write_splits(str(tmp_path / 'data'), {'train': ['s1']})
    specs = [TriplanarAlignedDataset(make_opt(tmp_path / 'data', *a)).sam_cache_spec()['slices']
             for a in ([], ['--context_slices', '1'], ['--context_slices', '2'])]
    assert 'context' not in specs[0] and specs[1]['context'] == 1 and specs[2]['context'] == 2
    target = TriplanarAlignedDataset(make_opt(tmp_path / 'data', '--context_slices', '1')).sam_cache_spec('B')
    assert target['slices']['source'] == 'ct' and 'context' not in target['slices']


# ----------------------------------------------------------------------------- losses

def test_body_loss_ignores_differences_outside_the_body_and_dilation_widens_it():
    target = torch.zeros(1, 1, 6, 6)
    body = torch.zeros(1, 1, 6, 6, dtype=torch.bool)
    body[..., 2:4, 2:4] = True
    pred = target.clone()
    pred[..., 0, 0] = 5.0                       # far outside the body
    pred[..., 1, 2] = 2.0                       # one pixel above the body
    assert masked_l1(pred, target, body) == 0
    grown = dilate(body, 1)                     # 4x4 square rows/cols 1..4
    assert grown.sum() == 16 and grown[0, 0, 1, 1] == 1 and grown[0, 0, 0, 0] == 0
    assert masked_l1(pred, target, grown) == pytest.approx(2.0 / 16)
    pred[..., 2, 2] = 1.0                       # inside: |1 - 0| over 4 body pixels
    assert masked_l1(pred, target, body) == pytest.approx(1.0 / 4)


def test_body_margin_grows_the_mask_by_whole_voxels_before_resizing(tmp_path):
    """8^3 volume, crop 32 (4 pixels per voxel), body = the column x, y in 3..4: its z slices show pixels 12..19
    (bilinear, > 0.5; the corner pixels get 0.625^2 < 0.5); grown by one voxel (2..5) they show 8..23. In-plane only:
    an x slice outside the column stays empty. Without --loss_region body the margin changes nothing."""
    volumes = phantom((8, 8, 8))
    volumes['mask'] = np.zeros((8, 8, 8), np.uint8)
    volumes['mask'][3:5, 3:5, :] = 1
    write_subject(tmp_path / 'data', 's1', volumes)
    write_splits(str(tmp_path / 'data'), {'train': ['s1']})

    def masks(*args):
        ds = TriplanarAlignedDataset(make_opt(tmp_path / 'data', '--min_foreground', '0', *args))
        return {(ds[i]['plane'], ds[i]['slice_index']): ds[i]['mask'][0] for i in range(len(ds))}

    def square(lo, hi):
        m = torch.zeros(32, 32, dtype=torch.bool)
        m[lo:hi + 1, lo:hi + 1] = True
        m[[lo, lo, hi, hi], [lo, hi, lo, hi]] = False
        return m

    plain = masks('--loss_region', 'body')
    grown = masks('--loss_region', 'body', '--body_margin_voxels', '1')
    assert torch.equal(plain[('z', 4)], square(12, 19)) and torch.equal(grown[('z', 4)], square(8, 23))
    assert not plain[('x', 2)].any() and not grown[('x', 2)].any()
    assert grown[('x', 3)].sum() == 16 * 32                  # y 2..5 -> 16 rows of pixels, every z
    ignored = masks('--body_margin_voxels', '1')              # --loss_region slice
    assert all(torch.equal(ignored[k], plain[k]) for k in plain)
    with pytest.raises(ValueError, match=r'--body_margin_voxels -1: must be 0 or more'):
        masks('--body_margin_voxels', '-1')


def test_sam_perceptual_loss_is_zero_for_identical_slices_and_trains_the_generator_not_sam():
    opt = tiny_sam_options()
    sam = SamFeatureEncoder(sam_encoder_config(opt), 64, 1)
    gen = nn.Conv2d(1, 1, 3, padding=1)
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    fake = torch.tanh(gen(x))
    assert sam_perceptual_loss(sam, fake, sam(fake.detach())).item() == pytest.approx(0.0, abs=1e-6)
    loss = sam_perceptual_loss(sam, fake, sam(torch.rand(2, 1, 32, 32) * 2 - 1))
    assert loss.item() > 0
    loss.backward()
    assert gen.weight.grad is not None and gen.weight.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in sam.parameters())


# ----------------------------------------------------------------------------- test-time flips and fusion

class ShiftModel:
    """A model stub whose generator adds a fixed column ramp r: G(x) = x + r."""

    def __init__(self, x):
        self.opt = type('O', (), {'model': 'stub'})()
        self.real_A = x
        self.ramp = torch.arange(x.shape[-1], dtype=torch.float32).expand_as(x)
        self.identity = False

    def forward(self):
        self.fake_B = self.real_A if self.identity else self.real_A + self.ramp


def test_flip_tta_of_an_identity_generator_returns_the_input_and_averages_flips_by_hand():
    x = torch.rand(2, 1, 4, 6)
    model = ShiftModel(x)
    model.identity = True
    flip_average(model)
    assert torch.equal(model.fake_B, x) and torch.equal(model.real_A, x)
    assert model.spread.abs().max() < 1e-6
    model = ShiftModel(x)
    flip_average(model)
    # the left-right flips see the ramp reversed: mean of r and its mirror (5 - r) over 4 passes = x + 2.5
    assert torch.allclose(model.fake_B, x + 2.5)
    r = torch.arange(6.0)
    assert torch.allclose(model.spread[0, 0, 0], (r - 2.5).abs(), atol=1e-5)     # std of {r, r, 5-r, 5-r}
    passes = flip_outputs(lambda t: t + model.ramp, x)                          # predict's path
    assert passes.shape == (4, *x.shape) and torch.allclose(passes.mean(0), x + 2.5)
    assert torch.equal(flip_outputs(lambda t: t, x), x.expand(4, *x.shape))


def test_tta_refuses_a_model_whose_input_is_not_an_image_slice():
    model = ShiftModel(torch.rand(2, 6))
    with pytest.raises(ValueError, match=r"--tta flip flips image slices \(N, C, H, W\), but --model stub's input "
                                         r"is \(2, 6\)"):
        flip_average(model)


def test_fuse_mean_median_and_spread_by_hand():
    outputs = torch.tensor([1.0, 2.0, 6.0, 7.0]).view(4, 1, 1, 1, 1)
    fused, spread = fuse(outputs, 'median')
    assert fused.item() == pytest.approx(4.0)                   # average of the middle two
    assert spread.item() == pytest.approx(np.std([1, 2, 6, 7]))
    fused, spread = fuse(outputs, 'mean', [torch.full((1, 1, 1, 1), 3.0)])
    assert fused.item() == pytest.approx(4.0)
    assert spread.item() == pytest.approx(np.sqrt(np.var([1, 2, 6, 7]) + 9.0))


# ----------------------------------------------------------------------------- folds

def test_folds_are_disjoint_cover_the_non_test_subjects_and_never_touch_the_test_split(tmp_path):
    subjects = [f's{i}' for i in range(7)]
    vals = [fold_split(subjects, 3, i, 2024) for i in range(3)]
    assert sorted(s for v in vals for s in v['val']) == subjects                       # cover, each once
    for v in vals:
        assert not set(v['val']) & set(v['train']) and sorted(v['val'] + v['train']) == subjects
    assert fold_split(subjects, 3, 1, 2024) == vals[1]                                  # deterministic
    data = tmp_path / 'data'
    for name in ('a', 'b', 'c', 'd', 't'):
        write_subject(data, name)
    write_splits(str(data), {'train': ['a', 'b', 'c'], 'val': ['d'], 'test': ['t']})
    seen = []
    for fold in range(2):
        train = TriplanarAlignedDataset(make_opt(data, '--n_folds', '2', '--fold', str(fold)))
        val = TriplanarAlignedDataset(make_opt(data, '--n_folds', '2', '--fold', str(fold), '--phase', 'val'))
        assert not set(train.subjects) & set(val.subjects)
        assert sorted([*train.subjects, *val.subjects]) == ['a', 'b', 'c', 'd']
        seen += list(val.subjects)
        test = TriplanarAlignedDataset(make_opt(data, '--n_folds', '2', '--fold', str(fold), train=False))
        assert list(test.subjects) == ['t']
    assert sorted(seen) == ['a', 'b', 'c', 'd']
    with pytest.raises(ValueError, match=r'--fold 2 is out of range for --n_folds 2: use 0..1'):
        TriplanarAlignedDataset(make_opt(data, '--n_folds', '2', '--fold', '2'))


# ----------------------------------------------------------------------------- checkpoints, predict, ensembles

@pytest.fixture(scope='module')
def trained(tmp_path_factory) -> dict:
    """A tiny pix2pix trained with every training ingredient, and a copy of its run folder."""
    root = tmp_path_factory.mktemp('ingredients')
    data = root / 'data'
    write_subject(data, 'a')
    write_subject(data, 'b', phantom(seed=3))
    write_splits(str(data), {'train': ['a'], 'test': ['b']})
    ckpt = root / 'checkpoints'
    args = [*MODEL, '--dataroot', str(data), '--checkpoints_dir', str(ckpt)]
    train_script.main([*args, *INGREDIENTS, '--name', 'ing', '--display_id', '0', '--no_html', '--n_epochs', '1',
                       '--n_epochs_decay', '0', '--max_dataset_size', '4', '--batch_size', '2'])
    shutil.copytree(ckpt / 'ing', ckpt / 'ing_copy')
    return {'root': root, 'data': data, 'checkpoints': ckpt, 'args': args}


def test_every_flag_survives_save_and_load_and_reaches_test_and_predict(trained):
    stored = stored_training_options(str(trained['checkpoints']), 'ing', 'latest')
    assert (stored['context_slices'], stored['input_nc'], stored['loss_region'], stored['body_margin_voxels'],
            stored['body_dilation'], stored['lambda_sam_perceptual'],
            stored['tta']) == (1, 3, 'body', 1, 1, 0.5, 'flip')
    opt = make_opt(trained['data'], '--name', 'ing', *MODEL, train=False, checkpoints=trained['checkpoints'])
    assert (opt.context_slices, opt.input_nc, opt.tta) == (1, 3, 'flip')          # not repeated, inherited
    opt = make_opt(trained['data'], '--name', 'ing', '--tta', 'none', *MODEL, train=False,
                   checkpoints=trained['checkpoints'])
    assert opt.tta == 'none'                                                      # the command line wins
    generator = load_ensemble(str(trained['checkpoints']), ['ing'])
    assert (generator.settings.context, generator.settings.tta, generator.settings.input_nc) == (1, 'flip', 3)


def test_an_ensemble_of_two_copies_equals_its_checkpoint_in_test_and_predict(trained, tmp_path):
    results = tmp_path / 'results'
    base = [*trained['args'], '--results_dir', str(results), '--tta', 'none']
    test_script.main([*base, '--name', 'ing'])
    test_script.main([*base, '--name', 'ing,ing_copy', '--ensemble_fuse', 'median'])

    def volume_rows(name):
        with open(results / name / 'test_latest' / 'metrics.csv') as f:
            return [(r['subject'], r['plane'], r['mae']) for r in csv.DictReader(f) if r['level'] == 'volume']
    assert volume_rows(ensemble_result_name(['ing', 'ing_copy'])) == volume_rows('ing')
    record = json.loads((results / 'ing+ing_copy' / 'test_latest' / 'ensemble.json').read_text())
    assert [Path(m['checkpoint']).parent.name for m in record['members']] == ['ing', 'ing_copy']
    assert record['fuse'] == 'median'
    single = load_ensemble(str(trained['checkpoints']), ['ing'])
    pair = load_ensemble(str(trained['checkpoints']), ['ing', 'ing_copy'])
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        (a, spread_a), (b, spread_b) = translate(single, x), translate(pair, x)
    assert torch.allclose(a, b, atol=1e-6) and torch.allclose(spread_a, spread_b, atol=1e-6)
    out = tmp_path / 'pred'
    for names in ('ing', 'ing,ing_copy'):
        predict.main(['--name', names, '--checkpoints_dir', str(trained['checkpoints']), '--gpu_ids', '-1',
                      '--no_progress', '--input', str(trained['data'] / 'b'), '--disagreement',
                      '--output', str(out / names.replace(',', '+'))])
    import nibabel as nib
    one = nib.load(str(out / 'ing' / 'b_sct.nii.gz')).get_fdata()
    two = nib.load(str(out / 'ing+ing_copy' / 'b_sct.nii.gz')).get_fdata()
    assert np.allclose(one, two, atol=1e-3)
    members = json.loads((out / 'ing+ing_copy' / 'b_sct.nii.gz_members.json').read_text())
    assert [Path(m['checkpoint']).parent.name for m in members['members']] == ['ing', 'ing_copy']


def test_disagreement_map_by_hand():
    a, b = np.zeros((2, 2, 2), np.float32), np.full((2, 2, 2), 2.0, np.float32)
    assert disagreement_map([a], [], 2.0) is None                               # one plane, one pass: nothing
    np.testing.assert_allclose(disagreement_map([a, b], [], 2.0), 1.0)          # std of 0 and 2
    spread = np.full((2, 2, 2), 0.5, np.float32)                                 # 0.5 x scale 2 = 1 target unit
    np.testing.assert_allclose(disagreement_map([a, b], [spread, spread], 2.0), np.sqrt(2.0))
    np.testing.assert_allclose(disagreement_map([a], [spread], 2.0), 1.0)


def test_one_plane_with_flip_tta_has_a_disagreement_map_in_test_and_predict(trained, tmp_path):
    """With one plane there is no plane spread: the flips' spread is the map (values: test_evaluation.py)."""
    results, out = tmp_path / 'results', tmp_path / 'pred'
    base = [*trained['args'], '--results_dir', str(results), '--name', 'ing', '--planes', 'z']
    volumes = results / 'ing' / 'test_latest' / 'volumes'
    test_script.main([*base, '--tta', 'none'])
    assert not (volumes / 'b_fake_B_disagreement.nii.gz').exists()
    test_script.main([*base, '--tta', 'flip'])
    import nibabel as nib
    assert nib.load(str(volumes / 'b_fake_B_disagreement.nii.gz')).get_fdata().max() > 0
    run = ['--name', 'ing', '--checkpoints_dir', str(trained['checkpoints']), '--gpu_ids', '-1', '--no_progress',
           '--input', str(trained['data'] / 'b'), '--planes', 'z', '--disagreement']
    with pytest.raises(ValueError, match=r'--disagreement: with one plane \(z\), one experiment and no --tta flip'):
        predict.main([*run, '--tta', 'none', '--output', str(out / 'none')])
    assert not (out / 'none').exists()
    predict.main([*run, '--output', str(out / 'flip')])
    assert nib.load(str(out / 'flip' / 'b_sct_disagreement.nii.gz')).shape == (12, 14, 10)


def test_ensemble_members_with_different_settings_are_refused_naming_both(trained):
    assert member_settings_conflict(['a', 'b'], [{'context_slices': 1}, {'context_slices': 1}]) is None
    why = member_settings_conflict(['a', 'b'], [{'ct_window': [-1024, 3000]}, {'ct_window': [-1000, 2000]}])
    assert why.startswith('ensemble members a and b were trained with different --ct_window')
    for key, value in (('context_slices', 0), ('modality_A', 't1'), ('crop_size', 64)):
        assert f'different --{key}' in member_settings_conflict(['ing', 'x'], [{'context_slices': 1, 'crop_size': 32,
                                                                                  'modality_A': 'mr'},
                                                                                 {'context_slices': 1, 'crop_size': 32,
                                                                                  'modality_A': 'mr', key: value}])


def test_recipe_sets_its_ingredients_and_explicit_flags_win(tmp_path):
    base = ['--model', 'mrnet', '--gpu_ids', '-1', '--checkpoints_dir', str(tmp_path)]
    opt = TrainOptions().parse([*base, '--recipe', 'synthrad2025'], setup_device=False)
    # the preset docs/beyond_the_paper.md chose on the tuning set: the body loss with a one-voxel margin
    assert (opt.loss_region, opt.body_margin_voxels, opt.body_dilation, opt.tta, opt.context_slices,
            opt.lambda_sam_perceptual) == ('body', 1, 0, 'none', 0, 0.0)
    assert set(RECIPES['synthrad2025']) == {'loss_region', 'body_margin_voxels'}
    opt = TrainOptions().parse([*base, '--recipe', 'synthrad2025', '--body_margin_voxels', '0'], setup_device=False)
    assert (opt.loss_region, opt.body_margin_voxels) == ('body', 0)
    opt = TrainOptions().parse(base, setup_device=False)
    assert (opt.context_slices, opt.loss_region, opt.lambda_sam_perceptual, opt.tta) == (0, 'slice', 0.0, 'none')


def test_a_recipe_the_model_cannot_take_is_refused(tmp_path):
    # cycle_gan has no body loss: the recipe used to be recorded in train_opt.txt and silently not applied
    base = ['--gpu_ids', '-1', '--checkpoints_dir', str(tmp_path), '--name', 'cg']
    with pytest.raises(ValueError, match=r'--recipe synthrad2025 sets --loss_region body --body_margin_voxels 1, but '
                                         r'--model cycle_gan does not take --loss_region, --body_margin_voxels'):
        TrainOptions().parse([*base, '--model', 'cycle_gan', '--recipe', 'synthrad2025'], setup_device=False)
    assert not (tmp_path / 'cg').exists()
    assert TrainOptions().parse([*base, '--model', 'cycle_gan'], setup_device=False).recipe == 'paper'

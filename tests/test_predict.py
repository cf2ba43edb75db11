"""scripts/predict.py (inference/predictor.py): synthesis for new patients from an MR alone in every format, on the
input's own grid; the SynthRAD2025 and BraTS 2023+ layouts through train.py and test.py (--split all,
--metrics synthrad2025); each bad input a clear error with nothing written."""
from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import test as test_script
import train as train_script
from conftest import ROOT, run_script
from image_fixtures import itk_volume, write_dicom_series, write_itk
from scripts import predict
from data.demo_data import orient_as
from util.image_io import read_image, reference_image
from inference.export.volume_file import write_image
from inference.inputs import find_inputs
from volume_fixtures import phantom

# a tiny pix2pix on 32x32 slices (the SAM path is tested separately below)
MODEL = ['--model', 'pix2pix', '--netG', 'resnet_6blocks', '--ngf', '8', '--ndf', '8', '--crop_size', '32',
         '--load_size', '32', '--input_nc', '1', '--output_nc', '1', '--dataset_mode', 'triplanar_aligned',
         '--gpu_ids', '-1', '--num_threads', '0']
TINY = MODEL + ['--display_id', '0', '--no_html', '--n_epochs', '1', '--n_epochs_decay', '0', '--max_dataset_size',
                '6', '--batch_size', '2']
TINY_SAM = ['--sam_input_size', '64', '--sam_embed_dim', '32', '--sam_depth', '2', '--sam_num_heads', '2',
            '--sam_global_attn_indexes', '1']
HU = (-1024.0, 3000.0)


def write_case(folder: Path, names: dict[str, str], seed: int, ext: str, axcodes: str = 'LPS') -> Path:
    """One subject of the phantom (modality -> file stem) stored in ``axcodes`` orientation as ``ext`` files."""
    folder.mkdir(parents=True, exist_ok=True)
    for modality, stem in names.items():
        data, affine = orient_as(phantom(seed=seed)[modality].astype(np.float32), (1.0, 1.2, 2.0), axcodes)
        write_image(data, reference_image(data, affine), str(folder / f'{stem}{ext}'))
    return folder


@pytest.fixture(scope='module')
def trained(tmp_path_factory) -> dict:
    """A pix2pix MR -> CT trained for a few iterations on a SynthRAD2025-layout dataset (mr.mha, ct.mha, mask.mha),
    then tested with test.py on every subject (--split all) and scored with --metrics synthrad2025."""
    root = tmp_path_factory.mktemp('predict')
    data = root / 'synthrad2025'
    for i, axcodes in enumerate(('LPS', 'RAS')):
        write_case(data / f'1PA00{i}', {'mr': 'mr', 'ct': 'ct', 'mask': 'mask'}, i, '.mha', axcodes)
    args = ['--dataroot', str(data), '--name', 'p2p', '--checkpoints_dir', str(root / 'checkpoints')]
    train_script.main(TINY + args + ['--split', 'all'])
    page = test_script.main([*MODEL, *args, '--results_dir', str(root / 'results'),
                             '--split', 'all', '--metrics', 'synthrad2025'])
    return {'root': root, 'data': data, 'checkpoints': root / 'checkpoints', 'page': page}


def run_predict(trained: dict, *args: str) -> list[str]:
    return predict.main(['--name', 'p2p', '--checkpoints_dir', str(trained['checkpoints']), '--gpu_ids', '-1',
                         '--no_progress', *args])


# ----------------------------------------------------------------------------- layouts in train and test

def test_synthrad2025_layout_trains_and_every_subject_is_scored_with_ms_ssim(trained):
    result_dir = Path(trained['page']).parent
    assert result_dir.name == 'all_latest'
    with open(result_dir / 'metrics.csv') as f:
        rows = [r for r in csv.DictReader(f) if r['level'] == 'volume' and r['plane'] == 'fused']
    assert sorted(r['subject'] for r in rows) == ['1PA000', '1PA001']      # --split all: no 8:1:1 split
    assert not (trained['data'] / 'splits').exists()
    for r in rows:
        assert 0 < float(r['ms_ssim']) <= 1 and float(r['mae']) > 0 and r['ssim'] == ''
    assert 'MS-SSIM' in Path(trained['page']).read_text(encoding='utf-8')


def test_brats2023_layout_trains_and_tests(tmp_path):
    data = tmp_path / 'brats'
    for i in range(2):
        subject = f'BraTS-GLI-0000{i}-000'
        write_case(data / subject, {'mr': f'{subject}-t2f', 'ct': f'{subject}-t2w'}, i, '.nii.gz')
    args = ['--dataroot', str(data), '--name', 'brats', '--checkpoints_dir', str(tmp_path / 'ck'),
            '--modality_A', 't2f', '--modality_B', 't2w']
    train_script.main(TINY + args + ['--split', 'all', '--max_dataset_size', '2'])
    page = test_script.main([*MODEL, *args, '--results_dir', str(tmp_path / 'res'), '--split', 'all', '--planes', 'z'])
    volumes = sorted(os.listdir(Path(page).parent / 'volumes'))
    assert volumes == [f'BraTS-GLI-0000{i}-000_fake_B_{p}.nii.gz' for i in range(2) for p in ('fused', 'z')]


def test_read_only_dataroot_keeps_the_new_split_in_the_experiment_folder(tmp_path, monkeypatch, capsys):
    from data import splits
    data = tmp_path / 'shared'
    for i in range(3):
        write_case(data / f's{i}', {'mr': 'mr', 'ct': 'ct'}, i, '.nii.gz')
    real_write = splits.write_splits

    def write(root, chosen):
        if Path(root) == data:
            raise PermissionError(13, 'Permission denied', str(data / 'splits'))
        real_write(root, chosen)
    monkeypatch.setattr(splits, 'write_splits', write)
    experiment = tmp_path / 'ck' / 'exp'
    first = splits.load_split(str(data), 'test', ['s0', 's1', 's2'], 2024, fallback=str(experiment))
    assert 'cannot be written' in capsys.readouterr().err
    assert (experiment / 'splits' / 'test.txt').read_text().split() == first
    assert not (data / 'splits').exists()
    assert splits.load_split(str(data), 'test', ['s0', 's1', 's2'], 2024, fallback=str(experiment)) == first
    assert 'using the subject split kept in' in capsys.readouterr().out


# ----------------------------------------------------------------------------- prediction in every format

def mr_only(tmp_path: Path, fmt: str) -> Path:
    """The MR of a new phantom patient (oblique-free, permuted LPS geometry) in format ``fmt``."""
    mr = np.round(phantom(seed=7)['mr'])
    image = itk_volume(mr, origin=(-5.0, 12.5, 40.0), spacing=(1.0, 1.2, 2.0))
    if fmt == 'dicom':
        return write_dicom_series(tmp_path / 'patient_dicom', image)
    path = tmp_path / f'patient{fmt}'
    if fmt == '.nii.gz':
        data, ref = read_image(str(write_itk(tmp_path / 'tmp.mha', image)))
        write_image(data, ref, str(path))
        return path
    return write_itk(path, image)


@pytest.mark.parametrize('fmt, out_ext', [('.nii.gz', '.nii.gz'), ('.mha', '.mha'), ('.nrrd', '.nrrd'),
                                          ('dicom', '.nii.gz')])
def test_mr_only_volume_of_each_format_gives_hu_on_its_own_grid(trained, tmp_path, fmt, out_ext):
    source = mr_only(tmp_path, fmt)
    out = tmp_path / 'out'
    as_nifti = ['--format', '.nii.gz'] if fmt == 'dicom' else []      # a DICOM input's default is a DICOM series
    lines = run_predict(trained, '--input', str(source), '--output', str(out), '--save_planes', '--disagreement',
                        *as_nifti)
    name = 'patient_dicom' if fmt == 'dicom' else 'patient'
    fused_path = out / f'{name}_sct{out_ext}'
    assert len(lines) == 1 and str(fused_path) in lines[0] and '12x14x10 voxels' in lines[0]
    data, ref = read_image(str(source))
    fused, fused_ref = read_image(str(fused_path))
    assert fused.shape == data.shape
    np.testing.assert_allclose(fused_ref.affine, ref.affine, atol=1e-5)
    assert HU[0] <= fused.min() and fused.max() <= HU[1] and np.isfinite(fused).all()
    planes = np.stack([read_image(str(out / f'{name}_sct_{p}{out_ext}'))[0] for p in 'xyz'])
    disagreement, _ = read_image(str(out / f'{name}_sct_disagreement{out_ext}'))
    np.testing.assert_allclose(disagreement, planes.std(axis=0), atol=1e-2)
    inside = (planes > HU[0]).all(0) & (planes < HU[1]).all(0)
    np.testing.assert_allclose(fused[inside], planes.mean(axis=0)[inside], atol=1e-2)
    assert sorted(os.listdir(out)) == sorted([*(f'{name}_sct{s}{out_ext}' for s in ('', '_x', '_y', '_z',
                                                                                    '_disagreement')),
                                              f'{name}_sct{out_ext}_qa', 'predict_summary.csv'])


def test_folder_of_subjects_and_files_with_masks_and_output_file(trained, tmp_path):
    folder = tmp_path / 'new'
    write_case(folder / '1PB001', {'mr': 'mr', 'mask': 'mask'}, 3, '.mha')
    write_case(folder / '1PB002', {'mr': 'mr'}, 4, '.nrrd')
    write_case(folder, {'mr': 'loose'}, 5, '.nii.gz')
    lines = run_predict(trained, '--input', str(folder), '--output', str(tmp_path / 'out'), '--planes', 'z')
    assert len(lines) == 3
    assert sorted(os.listdir(tmp_path / 'out')) == ['1PB001_sct.mha', '1PB001_sct.mha_qa', '1PB002_sct.nrrd',
                                                    '1PB002_sct.nrrd_qa', 'loose_sct.nii.gz', 'loose_sct.nii.gz_qa',
                                                    'predict_summary.csv']
    items = {i.name: i for i in find_inputs([str(folder)], 'mr')}          # a subject's own mask file is used
    assert items['1PB001'].mask == str(folder / '1PB001' / 'mask.mha') and items['1PB002'].mask is None
    # one file to an explicit output file of another format
    run_predict(trained, '--input', str(folder / '1PB002'), '--output', str(tmp_path / 'one.mha'))
    assert read_image(str(tmp_path / 'one.mha'))[0].shape == read_image(str(folder / '1PB002' / 'mr.nrrd'))[0].shape


def test_ct_given_to_an_mr_model_is_warned_about(trained, tmp_path):
    ct = write_case(tmp_path / 'c', {'ct': 'ct'}, 1, '.nii.gz') / 'ct.nii.gz'
    with pytest.warns(UserWarning, match='as in a CT in Hounsfield units, but this model reads mr'):
        run_predict(trained, '--input', str(ct), '--output', str(tmp_path / 'o.nii.gz'), '--planes', 'z')


# ----------------------------------------------------------------------------- bad input

def bad_case(case: str, tmp_path: Path, trained: dict) -> tuple[list[str], str]:
    """Arguments of a failing call and the message part it must give."""
    good = mr_only(tmp_path, '.mha')
    if case == 'truncated':
        raw = good.read_bytes()
        good.write_bytes(raw[:len(raw) // 2])
        return ['--input', str(good)], f'{good}: cannot be read as MetaImage, truncated or corrupt'
    if case == '2D':
        flat = tmp_path / 'flat.nii.gz'
        import nibabel as nib
        nib.save(nib.Nifti1Image(np.zeros((8, 8), np.float32), np.eye(4)), str(flat))
        return ['--input', str(flat)], f'{flat}: expected a 3D volume'
    if case == '4D':
        four = tmp_path / 'four.mha'
        import SimpleITK as sitk
        sitk.WriteImage(sitk.GetImageFromArray(np.zeros((2, 4, 5, 6), np.float32), isVector=False), str(four))
        return ['--input', str(four)], f'{four}: expected a 3D volume, got a 4D image'
    if case == 'several series':
        folder = tmp_path / 'dicom'
        write_dicom_series(folder, itk_volume(np.zeros((6, 7, 5))), series_uid='1.2.3.4')
        write_dicom_series(folder, itk_volume(np.zeros((6, 7, 5))), series_uid='1.2.3.5')
        return ['--input', str(folder)], 'holds 2 DICOM series; choose one with --series UID:\n  1.2.3.4: MR'
    if case == 'empty folder':
        (tmp_path / 'empty').mkdir()
        return ['--input', str(tmp_path / 'empty')], f'--input {tmp_path / "empty"}: no volume found in this folder'
    if case == 'output exists':
        (tmp_path / 'out').mkdir()
        (tmp_path / 'out' / 'patient_sct.mha').write_bytes(b'old')
        return ['--input', str(good)], 'patient_sct.mha; pass --overwrite to replace it'
    if case == 'mask grid':
        mask = tmp_path / 'mask.mha'
        write_itk(mask, itk_volume(np.ones((12, 14, 9), np.float32)))
        return ['--input', str(good), '--mask', str(mask)], f'mask {mask} is not on the voxel grid of {good}: shapes'
    if case == 'no checkpoint':
        return ['--input', str(good), '--epoch', '7'], \
            f'checkpoint {trained["checkpoints"] / "p2p" / "7_net_G.pth"} does not exist; '
    raise AssertionError(case)


CASES = ['truncated', '2D', '4D', 'several series', 'empty folder', 'output exists', 'mask grid', 'no checkpoint']


@pytest.mark.parametrize('case', CASES)
def test_bad_input_is_a_clear_error_and_nothing_is_written(trained, tmp_path, case):
    args, message = bad_case(case, tmp_path, trained)
    out = tmp_path / 'out'
    before = sorted(os.listdir(out)) if out.exists() else []
    with pytest.raises((ValueError, FileNotFoundError, RuntimeError)) as info:
        run_predict(trained, *args, '--output', str(out))
    assert message in str(info.value)
    assert (sorted(os.listdir(out)) if out.exists() else []) == before


def test_command_line_exit_status_and_overwrite(trained, tmp_path):
    source = mr_only(tmp_path, '.nrrd')
    out = tmp_path / 'sct.nrrd'
    out.write_bytes(b'old')
    base = [str(ROOT / 'scripts' / 'predict.py'), '--name', 'p2p', '--checkpoints_dir', str(trained['checkpoints']),
            '--gpu_ids', '-1', '--input', str(source), '--output', str(out), '--planes', 'z']
    proc = run_script(*base, cwd=tmp_path, check=False)
    assert proc.returncode != 0 and 'predict.py: error: output file already exists' in proc.stderr
    assert 'Traceback' not in proc.stderr and out.read_bytes() == b'old'
    lines = predict.main(base[1:] + ['--overwrite', '--no_progress'])
    assert f'-> {out}' in lines[0] and read_image(str(out))[0].shape == (12, 14, 10)


def test_classic_checkpoint_asks_for_the_flags_it_needs(trained, tmp_path):
    state = torch.load(trained['checkpoints'] / 'p2p' / 'latest_net_G.pth', weights_only=True)['state_dict']
    (tmp_path / 'ck' / 'classic').mkdir(parents=True)
    torch.save(state, tmp_path / 'ck' / 'classic' / 'latest_net_G.pth')
    source = mr_only(tmp_path, '.mha')
    base = ['--name', 'classic', '--checkpoints_dir', str(tmp_path / 'ck'), '--gpu_ids', '-1', '--no_progress',
            '--input', str(source), '--output', str(tmp_path / 'o.mha'), '--planes', 'z']
    with pytest.raises(ValueError, match='stores no training options .* pass --netG ... --ngf ... --norm ... '
                                         '--input_nc ... --output_nc ... --modality_A ... --modality_B ... '
                                         '--crop_size ...'):
        predict.main(base)
    predict.main(base + ['--netG', 'resnet_6blocks', '--ngf', '8', '--norm', 'batch', '--input_nc', '1',
                         '--output_nc', '1', '--modality_A', 'mr', '--modality_B', 'ct', '--crop_size', '32'])
    assert read_image(str(tmp_path / 'o.mha'))[0].shape == (12, 14, 10)


# ----------------------------------------------------------------------------- MRNet: SAM from the checkpoint

def test_mrnet_prediction_checks_the_sam_file_it_was_trained_with(tmp_path):
    from sam_fixtures import official_encoder_state, save_official_checkpoint
    sam = tmp_path / 'sam_tiny.pth'
    save_official_checkpoint(sam, official_encoder_state())
    other = tmp_path / 'sam_other.pth'
    save_official_checkpoint(other, official_encoder_state())
    data = tmp_path / 'data'
    for i in range(2):
        write_case(data / f's{i}', {'mr': 'mr', 'ct': 'ct'}, i, '.nii.gz')
    ck = tmp_path / 'ck'
    train_script.main(['--model', 'mrnet', '--dataroot', str(data), '--name', 'mr', '--checkpoints_dir', str(ck),
                       '--gpu_ids', '-1', '--ngf', '8', '--ndf', '8', '--crop_size', '256', '--load_size', '256',
                       '--n_epochs', '1', '--n_epochs_decay', '0', '--max_dataset_size', '1', '--batch_size', '1',
                       '--display_id', '0', '--no_html', '--num_threads', '0', '--split', 'all',
                       '--sam_checkpoint', str(sam), *TINY_SAM])
    source = mr_only(tmp_path, '.mha')
    base = ['--name', 'mr', '--checkpoints_dir', str(ck), '--gpu_ids', '-1', '--no_progress', '--input', str(source),
            '--output', str(tmp_path / 'sct.mha'), '--planes', 'z', '--batch_size', '5']
    with pytest.raises(ValueError, match='was trained with the SAM weights sam_tiny.pth .* pass --sam_checkpoint'):
        predict.main(base)
    with pytest.raises(ValueError, match=f'--sam_checkpoint {other} .* is not the SAM file .* sam_tiny.pth'):
        predict.main(base + ['--sam_checkpoint', str(other)])
    lines = predict.main(base + ['--sam_checkpoint', str(sam)])
    assert ' slices (z), ' in lines[0] and '12x14x10 voxels' in lines[0]
    out, ref = read_image(str(tmp_path / 'sct.mha'))
    assert out.shape == (12, 14, 10) and HU[0] <= out.min() and out.max() <= HU[1]
    np.testing.assert_allclose(ref.affine, read_image(str(source))[1].affine, atol=1e-5)


# ----------------------------------------------------------------------------- content, with a known network

class KnownNet(torch.nn.Module):
    """Stands in for the trained generator: the identity on [-1, 1] slices (``values`` None), or, one slice per
    call, the constant ``values[k]`` for the k-th plane's slices (``counts[k]`` slices each, in plane order)."""

    def __init__(self, values=None, counts=None):
        super().__init__()
        self.values, self.counts, self.calls = values, counts, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.values is None:
            return x[:, :1].clone()
        plane = int(np.searchsorted(np.cumsum(self.counts), self.calls, side='right'))
        self.calls += x.shape[0]
        return torch.full_like(x[:, :1], self.values[plane])


def with_net(monkeypatch, net: torch.nn.Module) -> None:
    """Every generator predict loads (each member of an ensemble too) runs ``net`` instead of its trained network."""
    from inference import loading
    real = loading.load_generator

    def load(*args, **kwargs):
        generator = real(*args, **kwargs)
        generator.net = net
        return generator
    monkeypatch.setattr(loading, 'load_generator', load)


SHAPE = (32, 32, 10)     # axial slices of exactly the 32x32 training size: no resampling, an exact round trip


def ramp_mr(folder: Path, name: str = 'ramp', shift: float = 0.0) -> Path:
    """An MR that rises along every axis, left-right most (100 + 20 i + 3 j + k), on a RAS grid of 1 mm voxels
    (file order = canonical order), as NIfTI."""
    folder.mkdir(parents=True, exist_ok=True)
    i, j, k = np.meshgrid(*(np.arange(n) for n in SHAPE), indexing='ij')
    data = (100 + 20 * i + 3 * j + k + shift).astype(np.float32)
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = (-6.0, -7.0, 3.0)
    path = folder / f'{name}.nii.gz'
    write_image(data, reference_image(data, affine), str(path))
    return path


def box_mask(path: Path, z: tuple[int, int], like: Path) -> Path:
    mask = np.zeros(SHAPE, np.uint8)
    mask[:, :, z[0]:z[1]] = 1
    write_image(mask, read_image(str(like))[1], str(path))
    return path


def expected_ct(mr: np.ndarray, body: np.ndarray) -> np.ndarray:
    """By hand: MR -> [-1, 1] through its 0.5 and 99.5 body percentiles (clipped), the identity network, then
    [-1, 1] -> the HU window [-1024, 3000]."""
    low, high = np.percentile(mr[body], (0.5, 99.5))
    unit = np.clip(2 * (mr - low) / (high - low) - 1, -1, 1)
    return (unit + 1) / 2 * 4024 - 1024


def test_predicted_content_is_where_the_input_is_and_follows_the_body_mask(trained, tmp_path, monkeypatch):
    """The identity network on axial slices of the training size (32x32: not resampled, so they come back exactly):
    the synthetic CT equals the hand-computed map of the MR voxel by voxel (a left-right mirror would not), inside
    the --mask FILE's slices; slices without body are air (-1024 HU), never translated."""
    with_net(monkeypatch, KnownNet())
    source = ramp_mr(tmp_path)
    mask = box_mask(tmp_path / 'mask.nii.gz', (3, 7), source)
    out = tmp_path / 'sct.nii.gz'
    run_predict(trained, '--input', str(source), '--output', str(out), '--mask', str(mask), '--planes', 'z')
    mr, _ = read_image(str(source))
    sct, _ = read_image(str(out))
    body = read_image(str(mask))[0] > 0
    np.testing.assert_allclose(sct[body], expected_ct(mr, body)[body], atol=0.05)
    assert (sct[~body] == -1024).all()
    assert np.abs(sct[body] - expected_ct(mr[::-1], body)[body]).max() > 500      # a mirror is far off


def test_an_mr_target_is_written_in_the_networks_range(trained, tmp_path, monkeypatch):
    """An MR target (here --modality_B t2 over the checkpoint's ct) has no unit: the network's [-1, 1] is written
    as it is, so the identity network gives the input's normalised values, -1 to 1 (not [0, 1])."""
    with_net(monkeypatch, KnownNet())
    source = ramp_mr(tmp_path)
    out = tmp_path / 't2.nii.gz'
    run_predict(trained, '--input', str(source), '--output', str(out), '--planes', 'z',
                '--mask', str(box_mask(tmp_path / 'm.nii.gz', (0, 10), source)), '--modality_B', 't2')
    mr, _ = read_image(str(source))
    low, high = np.percentile(mr, (0.5, 99.5))
    t2, _ = read_image(str(out))
    np.testing.assert_allclose(t2, np.clip(2 * (mr - low) / (high - low) - 1, -1, 1), atol=1e-4)
    assert t2.min() == pytest.approx(-1) and t2.max() == pytest.approx(1)


def test_mask_folder_gives_each_input_its_own_mask(trained, tmp_path, monkeypatch):
    """--mask DIR: `<name>.<ext>` or `<name>/mask.<ext>` for each input of a folder."""
    with_net(monkeypatch, KnownNet())
    inputs, masks = tmp_path / 'in', tmp_path / 'masks'
    a, b = ramp_mr(inputs, 'a'), ramp_mr(inputs, 'b', shift=50)
    masks.mkdir()
    box_mask(masks / 'a.nii.gz', (2, 5), a)
    (masks / 'b').mkdir()
    box_mask(masks / 'b' / 'mask.nii.gz', (5, 9), b)
    run_predict(trained, '--input', str(inputs), '--output', str(tmp_path / 'out'), '--mask', str(masks),
                '--planes', 'z')
    for name, (z0, z1) in (('a', (2, 5)), ('b', (5, 9))):
        sct, _ = read_image(str(tmp_path / 'out' / f'{name}_sct.nii.gz'))
        outside = np.ones(SHAPE[2], bool)
        outside[z0:z1] = False
        assert (sct[:, :, outside] == -1024).all() and (sct[:, :, z0:z1] > -1024).mean() > 0.9, name


@pytest.mark.parametrize('fusion, hu', [('mean', (-0.2 + 1) / 2 * 4024 - 1024),      # mean of -0.8, 0, 0.2
                                        ('median', (0.0 + 1) / 2 * 4024 - 1024)])    # their median
def test_fusion_mean_and_median_of_the_planes(trained, tmp_path, monkeypatch, fusion, hu):
    """Planes predicting the constants -0.8 (x), 0 (y) and 0.2 (z): --fusion mean gives 585.6 HU, median 988 HU
    everywhere (hand values from the window [-1024, 3000])."""
    with_net(monkeypatch, KnownNet(values=(-0.8, 0.0, 0.2), counts=SHAPE))
    source = ramp_mr(tmp_path)
    out = tmp_path / 'sct.nii.gz'
    run_predict(trained, '--input', str(source), '--output', str(out), '--planes', 'xyz', '--fusion', fusion,
                '--batch_size', '1', '--mask', str(box_mask(tmp_path / 'm.nii.gz', (0, 10), source)))
    np.testing.assert_allclose(read_image(str(out))[0], hu, atol=0.05)


def test_format_sets_the_output_format_of_a_folder(trained, tmp_path):
    source = mr_only(tmp_path, '.mha')
    run_predict(trained, '--input', str(source), '--output', str(tmp_path / 'out'), '--format', '.nrrd',
                '--planes', 'z', '--no_qa')
    assert os.listdir(tmp_path / 'out') == ['patient_sct.nrrd']
    data, ref = read_image(str(tmp_path / 'out' / 'patient_sct.nrrd'))
    assert data.shape == read_image(str(source))[0].shape
    np.testing.assert_allclose(ref.affine, read_image(str(source))[1].affine, atol=1e-5)


def test_series_picks_one_dicom_series_of_a_folder(trained, tmp_path, monkeypatch):
    """Two series in one folder, of different sizes and contents: --series UID predicts from that one (its shape,
    and with the identity network its values' order)."""
    with_net(monkeypatch, KnownNet())
    folder = tmp_path / 'dicom'
    rising = np.broadcast_to(100 + 20 * np.arange(8)[:, None, None], (8, 7, 5)).astype(float)
    write_dicom_series(folder, itk_volume(np.full((6, 7, 5), 300.0)), series_uid='1.2.3.4')
    write_dicom_series(folder, itk_volume(rising), series_uid='1.2.3.5')
    out = tmp_path / 'sct.nii.gz'
    run_predict(trained, '--input', str(folder), '--series', '1.2.3.5', '--output', str(out), '--planes', 'z',
                '--preprocess', 'pad')
    sct, _ = read_image(str(out))
    source, _ = read_image(str(folder), '1.2.3.5')
    assert sct.shape == source.shape == (8, 7, 5)
    order = np.argsort(source[:, 3, 2])
    assert (np.diff(sct[:, 3, 2][order]) >= 0).all() and sct[:, 3, 2].max() - sct[:, 3, 2].min() > 1000

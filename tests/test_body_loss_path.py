"""The body-restricted L1 (--loss_region body, --body_dilation) as training computes it: a real training step
(``optimize_parameters``: forward, D step, generator loss) of a tiny pix2pix and MRNet on a batch whose body mask is
known, the stored G_L1 checked against the L1 computed by hand over that mask, grown by hand."""
import pytest
import torch

from models import create_model
from options.train_options import TrainOptions

ROWS, COLS = slice(12, 18), slice(10, 15)     # the body: a 6 x 5 box of the slice
MODELS = {      # (slice size, flags): MRNet's SAM U-Net takes multiples of 256
    'pix2pix': (32, ['--model', 'pix2pix', '--netG', 'resnet_6blocks', '--dataset_mode', 'triplanar_aligned']),
    'mrnet': (256, ['--model', 'mrnet', '--sam_input_size', '64', '--sam_embed_dim', '32', '--sam_depth', '2',
                    '--sam_num_heads', '2', '--sam_global_attn_indexes', '1']),
}


@pytest.fixture(autouse=True)
def quiet_random_sam(monkeypatch):
    from models.encoders import sam_encoder
    monkeypatch.setattr(sam_encoder, '_random_sam_warned', True)


def training_step(tmp_path, model_name: str, *extra: str):
    """One optimize_parameters() of a tiny model on a 2-slice batch with the body box as its mask."""
    torch.manual_seed(0)
    size, flags = MODELS[model_name]
    args = [*flags, '--name', 'tiny', '--checkpoints_dir', str(tmp_path), '--gpu_ids', '-1',
            '--ngf', '4', '--ndf', '4', '--crop_size', str(size), '--load_size', str(size), '--batch_size', '2',
            '--display_id', '0', *extra]
    opt = TrainOptions().parse(args, setup_device=False)
    model = create_model(opt)
    model.setup(opt)
    gen = torch.Generator().manual_seed(1)
    a = torch.rand(2, 3, size, size, generator=gen) * 2 - 1
    b = torch.rand(2, 3, size, size, generator=gen) * 2 - 1
    mask = torch.zeros(2, 1, size, size, dtype=torch.bool)
    mask[:, :, ROWS, COLS] = True
    model.set_input({'A': a, 'B': b, 'mask': mask, 'A_paths': ['a0', 'a1'], 'B_paths': ['b0', 'b1']})
    model.optimize_parameters()
    return model, opt


def hand_l1(model, grow: int) -> float:
    """lambda_L1 x mean |fake_B - real_B| over all channels of the pixels of the body box grown by ``grow``
    pixels on each side (None: the whole slice)."""
    diff = (model.fake_B.detach() - model.real_B).abs().numpy()
    if grow is None:
        return 100.0 * float(diff.mean())
    box = diff[:, :, ROWS.start - grow:ROWS.stop + grow, COLS.start - grow:COLS.stop + grow]
    return 100.0 * float(box.mean())


@pytest.mark.parametrize('model_name', sorted(MODELS))
def test_training_l1_is_averaged_over_the_body_mask_grown_by_body_dilation(tmp_path, model_name):
    model, opt = training_step(tmp_path, model_name, '--loss_region', 'body', '--body_dilation', '2')
    assert opt.lambda_L1 == 100.0
    for dilation in (2, 0):     # the training step's loss, then the same loss of its output without the margin
        if dilation != opt.body_dilation:
            opt.body_dilation = dilation
            with torch.no_grad():
                model.generator_loss()
        got = float(model.loss_G_L1.detach())
        assert got == pytest.approx(hand_l1(model, dilation), rel=1e-5), dilation
        # the other regions give clearly different values, so the check above tells them apart
        others = [hand_l1(model, g) for g in (None, 0, 2) if g != dilation]
        assert all(abs(got - other) > 1e-3 * got for other in others), (dilation, got, others)


def test_training_l1_of_the_paper_is_the_whole_slice_whatever_the_mask(tmp_path):
    model, _ = training_step(tmp_path, 'pix2pix', '--body_dilation', '2')      # --loss_region slice (default)
    got = float(model.loss_G_L1.detach())
    assert got == pytest.approx(hand_l1(model, None), rel=1e-5)
    assert abs(got - hand_l1(model, 2)) > 1e-3 * got


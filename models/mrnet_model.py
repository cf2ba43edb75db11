"""MRNet (paper section III): pix2pix's conditional GAN with the SAM-fused U-Net generator 'sam_unet'
and the mask losses of eqs. 8-11."""
from __future__ import annotations

import torch

from data.sam_cache import add_sam_cache_options, batch_features, prepare
from models.losses.mask_losses import feature_discard_loss, mask_sparsity_loss

from .generators.sam_unet import add_sam_options
from .pix2pix_model import Pix2PixModel


class MrnetModel(Pix2PixModel):
    """G = sam_unet (SAM-fused U-Net, SoftClamp, light decoder, n masks), D = conditional 70x70 PatchGAN.

    Generator loss (eq. 11): L_GAN (LSGAN, eq. 6) + lambda_L1 * L1 (eq. 7) + lambda_feature * L_feature
    (eq. 9) + lambda_mask * L_mask (eq. 10); D as in pix2pix. The stored losses G_L1, G_feature and
    G_mask are the weighted terms, as pix2pix stores G_L1.

    Defaults are the paper's (section IV-B): Adam lr 1e-4, beta1 0.5, batch 4, 40 epochs at a
    constant learning rate (n_epochs 40, n_epochs_decay 0; the paper mentions no decay), instance
    norm, seed 2024, 3-channel triplanar slices. The paper's decoder (transposed conv, InstanceNorm,
    ReLU) has no dropout, so --no_dropout is on.
    Ablations: --n_masks 0..7 (Table IV), --lambda_feature 0 --lambda_mask 0 (Table V, row A),
    --no_sam (the same U-Net without SAM).
    """

    @staticmethod
    def modify_commandline_options(parser, is_train=True):
        parser = Pix2PixModel.modify_commandline_options(parser, is_train)
        parser.set_defaults(netG='sam_unet', netD='basic', norm='instance', no_dropout=True,
                            dataset_mode='triplanar_aligned', input_nc=3, output_nc=3)
        if is_train:
            parser.set_defaults(gan_mode='lsgan', pool_size=0, lr=1e-4, beta1=0.5, batch_size=4,
                                n_epochs=40, n_epochs_decay=0, val_freq=1)
            parser.add_argument('--lambda_feature', type=float, default=0.1,
                                help='weight of the feature-discarding loss (eq. 9)')
            parser.add_argument('--lambda_mask', type=float, default=0.05,
                                help='weight of the mask sparsity loss (eq. 10)')
        return add_sam_cache_options(add_sam_options(parser))

    def __init__(self, opt):
        if opt.netG != 'sam_unet':
            raise ValueError(f'--model mrnet needs --netG sam_unet (its masks feed the MRNet losses); got '
                             f'{opt.netG!r}. Use --model pix2pix for other generators.')
        super().__init__(opt)
        self.loss_names = ['G_GAN', 'G_L1', 'G_feature', 'G_mask', 'D_real', 'D_fake']
        if self.perceptual_sam is not None:
            self.loss_names.insert(2, 'G_sam_perceptual')
        self.mask_names = [f'mask_{k}' for k in range(1, opt.n_masks + 1)]
        self.sam_feature = None         # the batch's cached SAM features, from set_input
        self.visual_names = ['real_A', 'fake_B', 'real_B'] + self.mask_names

    def prepare_data(self, dataset, opt=None) -> None:
        """Build (what is missing of) the frozen-SAM feature cache and attach it to the dataset (sam_cache.py);
        with --lambda_sam_perceptual also the target slices' cache. ``opt``: the options of that data (default: the
        model's)."""
        prepare(self.unwrap('G').sam, dataset, opt or self.opt)
        super().prepare_data(dataset, opt)

    def set_input(self, input: dict) -> None:
        """Also takes the cached SAM features of the batch (``sam_feature``, ``sam_cached``) when the dataset
        gives them; a slice whose feature is not cached gets it from SAM now."""
        super().set_input(input)      # also the body mask and the target's SAM feature
        self.sam_feature = None
        if 'sam_feature' in input:
            self.sam_feature = batch_features(input['sam_feature'], input['sam_cached'], self.real_A,
                                              self.unwrap('G').sam, self.to_device)

    def forward(self) -> None:
        """fake_B = y_n; also keeps [y_0..y_n] and [M_1..M_n], and the masks in [-1, 1] for display."""
        out = self.netG(self.real_A, return_all=True, sam_feature=self.sam_feature)
        self.fake_B, self.mask_steps, self.masks = out.image, out.steps, out.masks
        for name, mask in zip(self.mask_names, self.masks):
            setattr(self, name, mask.detach() * 2.0 - 1.0)

    def generator_loss(self) -> torch.Tensor:
        """Eq. 11: pix2pix's L_GAN + lambda_L1 * L1, plus lambda_feature * L_feature + lambda_mask * L_mask."""
        loss = super().generator_loss()
        self.loss_G_feature = feature_discard_loss(self.mask_steps, self.masks) * self.opt.lambda_feature
        self.loss_G_mask = mask_sparsity_loss(self.masks, self.fake_B) * self.opt.lambda_mask
        return loss + self.loss_G_feature + self.loss_G_mask

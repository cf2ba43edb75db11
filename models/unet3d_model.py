"""The 3D row (``--model unet3d``): nnU-Net's 3D U-Net (``--netG unet3d``, MONAI's DynUNet) trained on 3D patches
(``--dataset_mode patch3d``), the kind of model that won SynthRAD2025 Task 1.

Losses by default: the body-restricted L1 (``--loss_region body --body_margin_voxels 1``) alone, as the winner
(nnsyn) trains, without a discriminator: ``--lambda_GAN 0``. ``--lambda_GAN W`` > 0 adds a conditional 3D PatchGAN
(``--netD basic`` or ``n_layers``, Conv3d) and its ``--gan_mode`` loss times W, as pix2pix does in 2D.
"""
from __future__ import annotations

from collections import OrderedDict

import torch

from . import networks
from .base_model import BaseModel
from .losses.body_loss import add_loss_region_options, pixel_loss
from .losses.gan import GANLoss, cal_gradient_penalty


class Unet3dModel(BaseModel):
    """G(A) -> B on (N, C, X, Y, Z) patches; loss lambda_L1 * L1 (inside the body by default), plus
    lambda_GAN * L_GAN(G, D) with a 3D PatchGAN D when lambda_GAN > 0. Visuals are the patches' middle axial
    (z) slices, (N, C, X, Y), for the HTML page and visdom."""

    @staticmethod
    def modify_commandline_options(parser, is_train=True):
        parser.set_defaults(netG='unet3d', dataset_mode='patch3d', norm='instance', input_nc=1, output_nc=1, ngf=32,
                            batch_size=2, no_dropout=True)
        if is_train:
            parser.set_defaults(beta1=0.9, gan_mode='lsgan', pool_size=0)
            parser.add_argument('--lambda_L1', type=float, default=100.0, help='weight of the L1 loss')
            parser.add_argument('--lambda_GAN', type=float, default=0.0,
                                help='weight of the adversarial loss of a conditional 3D PatchGAN; 0 (default, as '
                                     'nnsyn): no discriminator, L1 only')
            add_loss_region_options(parser)
            parser.set_defaults(loss_region='body', body_margin_voxels=1)
        return parser

    def __init__(self, opt):
        super().__init__(opt)
        self.gan = self.isTrain and opt.lambda_GAN > 0
        self.loss_names = ['G_L1'] + (['G_GAN', 'D_real', 'D_fake'] if self.gan else [])
        self.visual_names = ['real_A', 'fake_B', 'real_B']
        self.model_names = ['G', 'D'] if self.gan else ['G']
        self.netG = networks.define_G(opt.input_nc, opt.output_nc, opt.ngf, opt.netG, opt.norm,
                                      not opt.no_dropout, opt.init_type, opt.init_gain, opt=opt)
        if not self.isTrain:
            return
        if opt.lambda_GAN < 0:
            raise ValueError(f'--lambda_GAN {opt.lambda_GAN}: must be 0 (no discriminator) or more')
        if opt.body_dilation:
            raise ValueError(f'--body_dilation {opt.body_dilation} counts pixels of a slice; grow the body of 3D '
                             f'patches with --body_margin_voxels')
        self.optimizer_G = self.adam(self.netG.parameters())
        self.optimizers = [self.optimizer_G]
        if self.gan:
            # conditional GAN: D sees input and output stacked along channels
            self.netD = networks.define_D(opt.input_nc + opt.output_nc, opt.ndf, opt.netD, opt.n_layers_D,
                                          opt.norm, opt.init_type, opt.init_gain, dims=3)
            self.criterionGAN = GANLoss(opt.gan_mode).to(self.device)
            self.optimizer_D = self.adam(self.netD.parameters())
            self.optimizers.append(self.optimizer_D)

    def set_input(self, input: dict) -> None:
        """Also keeps the body mask (``mask`` (N, 1, X, Y, Z), for --loss_region body)."""
        super().set_input(input)
        self.body = input['mask'].to(self.device) if 'mask' in input else None

    def forward(self) -> None:
        self.fake_B = self.netG(self.real_A).float()   # float32 for the losses and visuals under --amp

    def get_current_visuals(self) -> OrderedDict:
        """name -> the middle axial (z) slice of each patch, (N, C, X, Y) in [-1, 1]."""
        return OrderedDict((name, v[..., v.shape[-1] // 2]) for name, v in super().get_current_visuals().items())

    def backward_D(self) -> None:
        """D loss: fake pairs (generator detached) towards 0, real pairs towards 1, averaged."""
        fake_AB = torch.cat((self.real_A, self.fake_B), 1).detach()
        real_AB = torch.cat((self.real_A, self.real_B), 1)
        with self.autocast():
            self.loss_D_fake = self.criterionGAN(self.netD(fake_AB), False)
            self.loss_D_real = self.criterionGAN(self.netD(real_AB), True)
        self.loss_D = (self.loss_D_fake + self.loss_D_real) * 0.5
        if self.opt.gan_mode == 'wgangp':
            self.loss_D = self.loss_D + cal_gradient_penalty(self.netD, real_AB, fake_AB, self.device)[0]
        self.backward(self.loss_D)

    def generator_loss(self) -> torch.Tensor:
        """lambda_L1 * L1(G(A), B) over --loss_region, + lambda_GAN * L_GAN(G, D) with a discriminator."""
        self.loss_G_L1 = pixel_loss(self.fake_B, self.real_B, self.opt, self.body) * self.opt.lambda_L1
        if not self.gan:
            return self.loss_G_L1
        self.loss_G_GAN = self.criterionGAN(self.netD(torch.cat((self.real_A, self.fake_B), 1)), True) \
            * self.opt.lambda_GAN
        return self.loss_G_L1 + self.loss_G_GAN

    def optimize_parameters(self) -> None:
        self.conditional_gan_step(self.netD if self.gan else None)

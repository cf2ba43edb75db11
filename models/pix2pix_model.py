"""pix2pix (Isola et al. 2017): a conditional GAN learning A -> B from paired images."""
from __future__ import annotations

import torch

from . import networks
from .base_model import BaseModel


class Pix2PixModel(BaseModel):
    """Generator G(A) -> B judged by a conditional PatchGAN D(A, B); loss L_GAN + lambda_L1 * |B - G(A)|_1.

    Defaults as in the paper: U-Net 256 generator, batch norm, vanilla GAN loss, lambda_L1 100, aligned data.
    """

    @staticmethod
    def modify_commandline_options(parser, is_train=True):
        parser.set_defaults(norm='batch', netG='unet_256', dataset_mode='aligned')
        if is_train:
            parser.set_defaults(pool_size=0, gan_mode='vanilla')
            parser.add_argument('--lambda_L1', type=float, default=100.0, help='weight for L1 loss')
        return parser

    def __init__(self, opt):
        super().__init__(opt)
        self.loss_names = ['G_GAN', 'G_L1', 'D_real', 'D_fake']
        self.visual_names = ['real_A', 'fake_B', 'real_B']
        self.model_names = ['G', 'D'] if self.isTrain else ['G']
        self.netG = networks.define_G(opt.input_nc, opt.output_nc, opt.ngf, opt.netG, opt.norm,
                                      not opt.no_dropout, opt.init_type, opt.init_gain, opt=opt)
        if self.isTrain:
            # conditional GAN: D sees input and output stacked along channels
            self.netD = networks.define_D(opt.input_nc + opt.output_nc, opt.ndf, opt.netD, opt.n_layers_D,
                                          opt.norm, opt.init_type, opt.init_gain)
            self.criterionGAN = networks.GANLoss(opt.gan_mode).to(self.device)
            self.criterionL1 = torch.nn.L1Loss()
            self.optimizer_G = self.adam([p for p in self.netG.parameters() if p.requires_grad])
            self.optimizer_D = self.adam(self.netD.parameters())
            self.optimizers = [self.optimizer_G, self.optimizer_D]

    def forward(self) -> None:
        self.fake_B = self.netG(self.real_A).float()   # float32 for the losses and visuals under --amp

    def backward_D(self) -> None:
        """D loss: fake pairs (generator detached) towards 0, real pairs towards 1, averaged."""
        fake_AB = torch.cat((self.real_A, self.fake_B), 1)
        real_AB = torch.cat((self.real_A, self.real_B), 1)
        with self.autocast():
            self.loss_D_fake = self.criterionGAN(self.netD(fake_AB.detach()), False)
            self.loss_D_real = self.criterionGAN(self.netD(real_AB), True)
        self.loss_D = (self.loss_D_fake + self.loss_D_real) * 0.5
        if self.opt.gan_mode == 'wgangp':
            self.loss_D = self.loss_D + networks.cal_gradient_penalty(
                self.netD, real_AB, fake_AB.detach(), self.device)[0]
        self.backward(self.loss_D)

    def generator_loss(self) -> torch.Tensor:
        """L_GAN(G, D) + lambda_L1 * L1(G(A), B); subclasses add their own terms."""
        fake_AB = torch.cat((self.real_A, self.fake_B), 1)
        self.loss_G_GAN = self.criterionGAN(self.netD(fake_AB), True)
        self.loss_G_L1 = self.criterionL1(self.fake_B, self.real_B) * self.opt.lambda_L1
        return self.loss_G_GAN + self.loss_G_L1

    def optimize_parameters(self) -> None:
        with self.autocast():
            self.forward()
        self.set_requires_grad(self.netD, True)
        self.optimizer_D.zero_grad()
        self.backward_D()
        self.step(self.optimizer_D)
        self.set_requires_grad(self.netD, False)
        self.optimizer_G.zero_grad()
        with self.autocast():
            self.loss_G = self.generator_loss()
        self.backward(self.loss_G)
        self.step(self.optimizer_G)

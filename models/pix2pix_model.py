"""pix2pix (Isola et al. 2017): a conditional GAN learning A -> B from paired images."""
from __future__ import annotations

import torch

from . import networks
from .losses.gan import GANLoss, cal_gradient_penalty
from .base_model import BaseModel
from models.losses.body_loss import add_loss_region_options, pixel_loss
from data.sam_cache import batch_features, prepare
from models.losses.sam_perceptual import add_sam_perceptual_options, perceptual_encoder, sam_perceptual_loss


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
            add_loss_region_options(parser)
            add_sam_perceptual_options(parser)
        return parser

    def __init__(self, opt):
        super().__init__(opt)
        self.loss_names = ['G_GAN', 'G_L1', 'D_real', 'D_fake']
        self.visual_names = ['real_A', 'fake_B', 'real_B']
        self.model_names = ['G', 'D'] if self.isTrain else ['G']
        self.netG = networks.define_G(opt.input_nc, opt.output_nc, opt.ngf, opt.netG, opt.norm,
                                      not opt.no_dropout, opt.init_type, opt.init_gain, opt=opt)
        self.perceptual_sam = None      # the frozen SAM of --lambda_sam_perceptual (models/losses/sam_perceptual.py)
        self.body = None                # the batch's body mask (--loss_region body), from set_input
        if self.isTrain:
            # conditional GAN: D sees input and output stacked along channels
            self.netD = networks.define_D(opt.input_nc + opt.output_nc, opt.ndf, opt.netD, opt.n_layers_D,
                                          opt.norm, opt.init_type, opt.init_gain)
            self.criterionGAN = GANLoss(opt.gan_mode).to(self.device)
            self.optimizer_G = self.adam([p for p in self.netG.parameters() if p.requires_grad])
            self.optimizer_D = self.adam(self.netD.parameters())
            self.optimizers = [self.optimizer_G, self.optimizer_D]
            if opt.lambda_sam_perceptual > 0:
                self.perceptual_sam = perceptual_encoder(opt, self.unwrap('G')).to(self.device)
                self.loss_names.insert(2, 'G_sam_perceptual')

    def set_input(self, input: dict) -> None:
        """Also keeps the body mask (``mask``, for --loss_region body) and the target's cached SAM feature
        (``sam_target_feature``, for --lambda_sam_perceptual) when the batch has them."""
        super().set_input(input)
        self.body = input['mask'].to(self.device) if 'mask' in input else None
        self.target_feature = None
        if self.perceptual_sam is not None:
            self.target_feature = batch_features(input['sam_target_feature'], input['sam_target_cached'],
                                                 self.real_B, self.perceptual_sam, self.to_device) \
                if 'sam_target_feature' in input else self.perceptual_sam(self.real_B)

    def prepare_data(self, dataset, opt=None) -> None:
        """With --lambda_sam_perceptual: build (what is missing of) the target slices' SAM feature cache."""
        if self.perceptual_sam is not None:
            prepare(self.perceptual_sam, dataset, opt or self.opt, field='B')

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
            self.loss_D = self.loss_D + cal_gradient_penalty(
                self.netD, real_AB, fake_AB.detach(), self.device)[0]
        self.backward(self.loss_D)

    def generator_loss(self) -> torch.Tensor:
        """L_GAN(G, D) + lambda_L1 * L1(G(A), B); subclasses add their own terms."""
        fake_AB = torch.cat((self.real_A, self.fake_B), 1)
        self.loss_G_GAN = self.criterionGAN(self.netD(fake_AB), True)
        self.loss_G_L1 = pixel_loss(self.fake_B, self.real_B, self.opt, self.body) \
            * self.opt.lambda_L1
        loss = self.loss_G_GAN + self.loss_G_L1
        if self.perceptual_sam is not None:
            self.loss_G_sam_perceptual = sam_perceptual_loss(self.perceptual_sam, self.fake_B, self.target_feature) \
                * self.opt.lambda_sam_perceptual
            loss = loss + self.loss_G_sam_perceptual
        return loss

    def optimize_parameters(self) -> None:
        self.conditional_gan_step(self.netD)

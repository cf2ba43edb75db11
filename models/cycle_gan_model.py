"""CycleGAN (Zhu et al. 2017): two generators and two discriminators learning A <-> B from unpaired images."""
from __future__ import annotations

import itertools

import torch

from util.image_pool import ImagePool
from . import networks
from .losses.gan import GANLoss, cal_gradient_penalty
from .base_model import BaseModel


class CycleGANModel(BaseModel):
    """G_A: A -> B, G_B: B -> A, D_A judges B-domain images, D_B judges A-domain images.

    Generator loss: L_GAN(G_A, D_A) + L_GAN(G_B, D_B) + lambda_A |G_B(G_A(A)) - A|_1 + lambda_B |G_A(G_B(B)) - B|_1
    + identity terms lambda_identity * (lambda_B |G_A(B) - B|_1 + lambda_A |G_B(A) - A|_1).
    """

    @staticmethod
    def modify_commandline_options(parser, is_train=True):
        parser.set_defaults(no_dropout=True)  # the default CycleGAN generator has no dropout
        if is_train:
            parser.add_argument('--lambda_A', type=float, default=10.0, help='weight for cycle loss (A -> B -> A)')
            parser.add_argument('--lambda_B', type=float, default=10.0, help='weight for cycle loss (B -> A -> B)')
            parser.add_argument('--lambda_identity', type=float, default=0.5,
                                help='weight of the identity loss, relative to lambda_A/lambda_B; 0 turns it off')
        return parser

    def __init__(self, opt):
        super().__init__(opt)
        self.loss_names = ['D_A', 'G_A', 'cycle_A', 'idt_A', 'D_B', 'G_B', 'cycle_B', 'idt_B']
        visual_names_A = ['real_A', 'fake_B', 'rec_A']
        visual_names_B = ['real_B', 'fake_A', 'rec_B']
        if self.isTrain and opt.lambda_identity > 0.0:
            visual_names_A.append('idt_B')
            visual_names_B.append('idt_A')
        self.visual_names = visual_names_A + visual_names_B
        self.model_names = ['G_A', 'G_B', 'D_A', 'D_B'] if self.isTrain else ['G_A', 'G_B']
        g_args = (opt.ngf, opt.netG, opt.norm, not opt.no_dropout, opt.init_type, opt.init_gain)
        self.netG_A = networks.define_G(opt.input_nc, opt.output_nc, *g_args, opt=opt)
        self.netG_B = networks.define_G(opt.output_nc, opt.input_nc, *g_args, opt=opt)
        if self.isTrain:
            if opt.lambda_identity > 0.0 and opt.input_nc != opt.output_nc:
                raise ValueError('the identity loss needs --input_nc == --output_nc; set --lambda_identity 0')
            d_args = (opt.ndf, opt.netD, opt.n_layers_D, opt.norm, opt.init_type, opt.init_gain)
            self.netD_A = networks.define_D(opt.output_nc, *d_args)
            self.netD_B = networks.define_D(opt.input_nc, *d_args)
            self.fake_A_pool = ImagePool(opt.pool_size)
            self.fake_B_pool = ImagePool(opt.pool_size)
            self.criterionGAN = GANLoss(opt.gan_mode).to(self.device)
            self.criterionCycle = torch.nn.L1Loss()
            self.criterionIdt = torch.nn.L1Loss()
            self.optimizer_G = self.adam(itertools.chain(self.netG_A.parameters(), self.netG_B.parameters()))
            self.optimizer_D = self.adam(itertools.chain(self.netD_A.parameters(), self.netD_B.parameters()))
            self.optimizers = [self.optimizer_G, self.optimizer_D]

    def forward(self) -> None:
        # float32 outputs for the losses and visuals under --amp (no-ops otherwise)
        self.fake_B = self.netG_A(self.real_A).float()
        self.rec_A = self.netG_B(self.fake_B).float()
        self.fake_A = self.netG_B(self.real_B).float()
        self.rec_B = self.netG_A(self.fake_A).float()

    def backward_D_basic(self, netD, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """0.5 * (L_GAN(D(real), 1) + L_GAN(D(fake), 0)), plus the gradient penalty for wgangp; backpropagated."""
        with self.autocast():
            loss_D = (self.criterionGAN(netD(real), True) + self.criterionGAN(netD(fake.detach()), False)) * 0.5
        if self.opt.gan_mode == 'wgangp':
            loss_D = loss_D + cal_gradient_penalty(netD, real, fake.detach(), self.device)[0]
        self.backward(loss_D)
        return loss_D

    def backward_G(self) -> None:
        """The generator losses (under --amp autocast), then their backward."""
        with self.autocast():
            lambda_idt, lambda_A, lambda_B = self.opt.lambda_identity, self.opt.lambda_A, self.opt.lambda_B
            if lambda_idt > 0:
                self.idt_A = self.netG_A(self.real_B).float()
                self.loss_idt_A = self.criterionIdt(self.idt_A, self.real_B) * lambda_B * lambda_idt
                self.idt_B = self.netG_B(self.real_A).float()
                self.loss_idt_B = self.criterionIdt(self.idt_B, self.real_A) * lambda_A * lambda_idt
            else:
                self.loss_idt_A = self.loss_idt_B = torch.zeros((), device=self.device)
            self.loss_G_A = self.criterionGAN(self.netD_A(self.fake_B), True)
            self.loss_G_B = self.criterionGAN(self.netD_B(self.fake_A), True)
            self.loss_cycle_A = self.criterionCycle(self.rec_A, self.real_A) * lambda_A
            self.loss_cycle_B = self.criterionCycle(self.rec_B, self.real_B) * lambda_B
            self.loss_G = (self.loss_G_A + self.loss_G_B + self.loss_cycle_A + self.loss_cycle_B
                           + self.loss_idt_A + self.loss_idt_B)
        self.backward(self.loss_G)

    def optimize_parameters(self) -> None:
        with self.autocast():
            self.forward()
        self.set_requires_grad([self.netD_A, self.netD_B], False)
        self.optimizer_G.zero_grad()
        self.backward_G()
        self.step(self.optimizer_G)
        self.set_requires_grad([self.netD_A, self.netD_B], True)
        self.optimizer_D.zero_grad()
        self.loss_D_A = self.backward_D_basic(self.netD_A, self.real_B, self.fake_B_pool.query(self.fake_B))
        self.loss_D_B = self.backward_D_basic(self.netD_B, self.real_A, self.fake_A_pool.query(self.fake_A))
        self.step(self.optimizer_D)

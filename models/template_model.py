"""A starting point for a new model: copy this file to ``models/<name>_model.py``, rename the class to
``<Name>Model`` and fill in the four methods; ``--model <name>`` then finds it. This template is itself a
working model: a generator trained with an L1 loss only (a useful regression baseline)."""
from __future__ import annotations

import torch

from . import networks
from .base_model import BaseModel


class TemplateModel(BaseModel):
    """G(A) -> B trained with lambda_regression * |G(A) - B|_1 and no discriminator."""

    @staticmethod
    def modify_commandline_options(parser, is_train=True):
        """Add flags and change defaults (here: aligned data, U-Net generator)."""
        parser.set_defaults(dataset_mode='aligned', netG='unet_256')
        if is_train:
            parser.add_argument('--lambda_regression', type=float, default=1.0, help='weight of the L1 loss')
        return parser

    def __init__(self, opt):
        super().__init__(opt)
        self.loss_names = ['G']                        # printed and plotted as loss_G
        self.visual_names = ['real_A', 'fake_B', 'real_B']  # shown in visdom and the HTML pages
        self.model_names = ['G']                       # saved as <epoch>_net_G.pth
        self.netG = networks.define_G(opt.input_nc, opt.output_nc, opt.ngf, opt.netG, opt.norm,
                                      not opt.no_dropout, opt.init_type, opt.init_gain, opt=opt)
        if self.isTrain:
            self.criterionLoss = torch.nn.L1Loss()
            self.optimizer = self.adam(self.netG.parameters())
            self.optimizers = [self.optimizer]

    def forward(self) -> None:
        self.fake_B = self.netG(self.real_A).float()   # float32 for the loss and visuals under --amp

    def optimize_parameters(self) -> None:
        with self.autocast():                          # --amp: mixed precision (a no-op when off)
            self.forward()
            self.loss_G = self.criterionLoss(self.fake_B, self.real_B) * self.opt.lambda_regression
        self.optimizer.zero_grad()
        self.backward(self.loss_G)                     # loss.backward(), scaled under --amp fp16
        self.step(self.optimizer)                      # optimizer.step(), skipped on inf gradients (fp16)

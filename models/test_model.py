"""One direction of a trained generator, without a discriminator (e.g. G_A of a CycleGAN checkpoint)."""
from __future__ import annotations

from . import networks
from .base_model import BaseModel


class TestModel(BaseModel):
    """Loads ``<epoch>_net_G<model_suffix>.pth`` and translates single images: ``--model_suffix _A`` uses a
    CycleGAN's G_A (A -> B)."""

    @staticmethod
    def modify_commandline_options(parser, is_train=True):
        if is_train:
            raise ValueError('--model test is for test.py only (it has no discriminator or losses)')
        parser.set_defaults(dataset_mode='single')
        parser.add_argument('--model_suffix', type=str, default='',
                            help='the checkpoint [epoch]_net_G[model_suffix].pth is loaded as the generator')
        return parser

    def __init__(self, opt):
        super().__init__(opt)
        self.loss_names = []
        self.visual_names = ['real', 'fake']
        self.model_names = ['G' + opt.model_suffix]
        setattr(self, 'netG' + opt.model_suffix,
                networks.define_G(opt.input_nc, opt.output_nc, opt.ngf, opt.netG, opt.norm, not opt.no_dropout,
                                  opt.init_type, opt.init_gain, opt=opt))

    def set_input(self, input: dict) -> None:
        self.real = input['A'].to(self.device)
        self.image_paths = input['A_paths']

    def forward(self) -> None:
        self.fake = getattr(self, 'netG' + self.opt.model_suffix)(self.real)

    def optimize_parameters(self) -> None:
        raise RuntimeError('TestModel is for testing only')

"""Adversarial objectives for every model's discriminator: LSGAN (the paper's eq. 6), vanilla and WGAN-GP.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from models.layers import choices
from models.networks import GAN_MODES, GP_TYPES


class GANLoss(nn.Module):
    """Adversarial objective on raw discriminator outputs (logits of any shape).

    'lsgan': mean (D - t)^2 (MRNet eq. 6 is the generator's term, t = 1); 'vanilla': binary cross-entropy with logits
    against t; 'wgangp': -mean D for real, +mean D for fake. t is ``target_real_label`` for
    real and ``target_fake_label`` for fake, broadcast to the prediction's shape.
    """

    def __init__(self, gan_mode: str, target_real_label: float = 1.0, target_fake_label: float = 0.0):
        super().__init__()
        if gan_mode not in GAN_MODES:
            raise ValueError(f'gan mode {gan_mode!r} is not implemented; choose one of {choices(GAN_MODES)}')
        self.gan_mode = gan_mode
        self.register_buffer('real_label', torch.tensor(target_real_label))
        self.register_buffer('fake_label', torch.tensor(target_fake_label))
        losses = {'lsgan': nn.MSELoss(), 'vanilla': nn.BCEWithLogitsLoss(), 'wgangp': None}
        self.loss: nn.Module | None = losses[gan_mode]

    def get_target_tensor(self, prediction: torch.Tensor, target_is_real: bool) -> torch.Tensor:
        """Label tensor shaped like ``prediction``, on its device and in its dtype."""
        label = self.real_label if target_is_real else self.fake_label
        return label.to(prediction).expand_as(prediction)

    def forward(self, prediction: torch.Tensor, target_is_real: bool) -> torch.Tensor:
        """Scalar loss for ``prediction`` judged against real (True) or fake (False); a bf16/fp16 map (--amp) is
        judged in float32, any other dtype in its own."""
        if prediction.dtype in (torch.float16, torch.bfloat16):
            prediction = prediction.float()
        if self.loss is None:
            return -prediction.mean() if target_is_real else prediction.mean()
        return self.loss(prediction, self.get_target_tensor(prediction, target_is_real))


def cal_gradient_penalty(netD: nn.Module, real_data: torch.Tensor, fake_data: torch.Tensor, device: torch.device,
                         type: str = 'mixed', constant: float = 1.0,
                         lambda_gp: float = 10.0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """WGAN-GP penalty lambda_gp * mean_n (||grad_x D(x_n)||_2 - constant)^2.

    x is ``real_data`` ('real'), ``fake_data`` ('fake') or a per-sample random mix of both
    ('mixed'). The graph is kept (create_graph=True), so backpropagating the penalty trains D.
    Returns (penalty as a 0-d tensor, gradients flattened to (N, C*H*W)); with lambda_gp == 0
    the penalty is 0 and the gradients are None.
    """
    if type not in GP_TYPES:
        raise ValueError(f'gradient penalty type {type!r} is not supported; choose one of {choices(GP_TYPES)}')
    if lambda_gp <= 0.0:
        return torch.zeros((), device=device), None
    if type == 'real':
        points = real_data
    elif type == 'fake':
        points = fake_data
    else:
        alpha = torch.rand(real_data.shape[0], *([1] * (real_data.dim() - 1)), device=device)
        points = alpha * real_data + (1 - alpha) * fake_data
    points = points.detach().requires_grad_(True)
    scores = netD(points)
    gradients = torch.autograd.grad(outputs=scores, inputs=points, grad_outputs=torch.ones_like(scores),
                                    create_graph=True, retain_graph=True)[0]
    gradients = gradients.reshape(real_data.shape[0], -1)
    penalty = (((gradients + 1e-16).norm(2, dim=1) - constant) ** 2).mean() * lambda_gp
    return penalty, gradients

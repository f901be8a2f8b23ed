"""Training losses: L1, least-squares GAN, feature matching, activation L1, Lab L1, perceptual.

Discriminator outputs follow `MultiScaleDiscriminator`: a list per scale of every
intermediate feature, the last one being the patch logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "l1",
    "lsgan_d_loss",
    "lsgan_g_loss",
    "feature_matching_loss",
    "activation_l1",
    "rgb_to_lab_l1",
    "PerceptualLoss",
    "DEFAULT_PERCEPTUAL_LAYERS",
]

DiscOut = list[list[Tensor]]


def l1(a: Tensor, b: Tensor) -> Tensor:
    assert a.shape == b.shape, (a.shape, b.shape)
    return F.l1_loss(a, b)


def _check_disc(*outs: DiscOut) -> None:
    n = len(outs[0])
    assert n > 0 and all(len(o) == n for o in outs), [len(o) for o in outs]
    for o in outs:
        assert all(len(scale) >= 1 for scale in o)


def lsgan_d_loss(d_real: DiscOut, d_fake: DiscOut) -> Tensor:
    """0.5 * (E[(D(real) - 1)^2] + E[D(fake)^2]) on the last output of each scale, mean over scales.

    pix2pixHD sums over scales; the mean keeps the loss scale independent of `disc_scales`.
    """
    _check_disc(d_real, d_fake)
    real = torch.stack([F.mse_loss(s[-1], torch.ones_like(s[-1])) for s in d_real]).mean()
    fake = torch.stack([F.mse_loss(s[-1], torch.zeros_like(s[-1])) for s in d_fake]).mean()
    return 0.5 * (real + fake)


def lsgan_g_loss(d_fake: DiscOut) -> Tensor:
    """E[(D(fake) - 1)^2] on the last output of each scale, mean over scales."""
    _check_disc(d_fake)
    return torch.stack([F.mse_loss(s[-1], torch.ones_like(s[-1])) for s in d_fake]).mean()


def feature_matching_loss(d_real: DiscOut, d_fake: DiscOut) -> Tensor:
    """L1 between the intermediate discriminator features (not the logits), real detached.

    Averaged over layers within a scale, then over scales.
    """
    _check_disc(d_real, d_fake)
    per_scale = []
    for real, fake in zip(d_real, d_fake):
        assert len(real) == len(fake) >= 2, (len(real), len(fake))
        per_scale.append(torch.stack([l1(f, r.detach()) for r, f in zip(real[:-1], fake[:-1])]).mean())
    return torch.stack(per_scale).mean()


def activation_l1(acts_a: list[Tensor], acts_b: list[Tensor]) -> Tensor:
    """Sum over the N activations of their mean absolute difference (the image-encoder loss)."""
    assert len(acts_a) == len(acts_b) > 0, (len(acts_a), len(acts_b))
    return torch.stack([l1(a, b) for a, b in zip(acts_a, acts_b)]).sum()


# Lab ranges: L in [0, 100], a/b within about [-110, 110] for sRGB colours.
_LAB_SCALE = (100.0, 110.0, 110.0)


def rgb_to_lab_l1(a: Tensor, b: Tensor) -> Tensor:
    """L1 in CIE Lab for RGB images in [-1, 1], with L/100 and a, b/110 (roughly unit range)."""
    from kornia.color import rgb_to_lab

    assert a.shape == b.shape and a.dim() == 4 and a.shape[1] == 3, (a.shape, b.shape)
    scale = a.new_tensor(_LAB_SCALE)[None, :, None, None]
    # Clamp: the sRGB gamma's unused branch gives NaN gradients for values below 0.
    lab_a = rgb_to_lab(((a + 1) / 2).clamp(0, 1)) / scale
    lab_b = rgb_to_lab(((b + 1) / 2).clamp(0, 1)) / scale
    return F.l1_loss(lab_a, lab_b)


DEFAULT_PERCEPTUAL_LAYERS: dict[str, float] = {
    # pix2pixHD's VGG loss weights: deeper layers count more.
    "relu1_1": 1 / 32,
    "relu2_1": 1 / 16,
    "relu3_1": 1 / 8,
    "relu4_1": 1 / 4,
    "relu5_1": 1.0,
}


class PerceptualLoss(nn.Module):
    """Weighted L1 between VGG-19 features of x and y (y detached), inputs in [-1, 1].

    Without the ImageNet weights the loss is unavailable: `available` is False, `reason` says
    why, and calls return zero so training proceeds; callers record `available` in their
    metrics. The VGG is frozen and kept in eval mode.
    """

    def __init__(
        self,
        layers: dict[str, float] | None = None,
        device: torch.device | str | None = None,
        weights_path: str | None = None,
    ) -> None:
        super().__init__()
        from pipeline.models import vgg  # lazy: importing pipeline.models.losses needs no VGG

        self.layers = dict(layers or DEFAULT_PERCEPTUAL_LAYERS)
        try:
            self.vgg = vgg.load_vgg19(device=device, weights_path=weights_path, required=True)
        except vgg.MissingWeightsError as e:
            self.vgg = None
            self.reason = str(e)
        else:
            self.reason = ""
            self.vgg.eval()
            self.vgg.requires_grad_(False)

    @property
    def available(self) -> bool:
        return self.vgg is not None

    def train(self, mode: bool = True) -> PerceptualLoss:
        super().train(mode)
        if self.vgg is not None:
            self.vgg.eval()  # a loss network never leaves eval mode
        return self

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        assert x.shape == y.shape and x.dim() == 4 and x.shape[1] == 3, (x.shape, y.shape)
        if self.vgg is None:
            return x.new_zeros(())
        names = tuple(self.layers)
        fx = self.vgg(x, layers=names)
        with torch.no_grad():
            fy = self.vgg(y, layers=names)
        return sum(w * F.l1_loss(fx[n], fy[n]) for n, w in self.layers.items())

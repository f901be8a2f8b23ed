"""Losses on hand-made tensors: zero when they should be, known values, gradients where they belong."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from pipeline.models.losses import PerceptualLoss, activation_l1, feature_matching_loss, l1, lsgan_d_loss, lsgan_g_loss, rgb_to_lab_l1

HAS_VGG = importlib.util.find_spec("pipeline.models.vgg") is not None
needs_vgg = pytest.mark.skipif(not HAS_VGG, reason="pipeline.models.vgg not written yet")


def _disc(*scales: list[float], shape=(2, 3, 4, 4)) -> list[list[torch.Tensor]]:
    """Discriminator-like output: each scale a list of constant features, the last one 1-channel logits."""
    out = []
    for values in scales:
        feats = [torch.full(shape, v) for v in values[:-1]]
        feats.append(torch.full((shape[0], 1, *shape[2:]), values[-1]))
        out.append(feats)
    return out


def test_l1_known_value_and_shape_check() -> None:
    a = torch.tensor([[0.0, 1.0], [2.0, -3.0]])
    b = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    assert l1(a, a) == 0
    assert l1(a, b) == pytest.approx((1 + 0 + 2 + 3) / 4)
    with pytest.raises(AssertionError):
        l1(a, b[:1])


def test_lsgan_losses_on_known_logits() -> None:
    perfect_real, perfect_fake = _disc([0.3, 1.0], [7.0, 1.0]), _disc([5.0, 0.0], [-2.0, 0.0])
    assert lsgan_d_loss(perfect_real, perfect_fake) == 0  # intermediate features do not count
    assert lsgan_g_loss(perfect_real) == 0
    assert lsgan_g_loss(perfect_fake) == pytest.approx(1.0)
    # D(real) = 0.5 on both scales, D(fake) = 0.5 and 1.0: 0.5 * (0.25 + (0.25 + 1) / 2) = 0.4375
    real, fake = _disc([0.0, 0.5], [0.0, 0.5]), _disc([0.0, 0.5], [0.0, 1.0])
    assert lsgan_d_loss(real, fake) == pytest.approx(0.4375)
    assert lsgan_g_loss(fake) == pytest.approx((0.25 + 0.0) / 2)


def test_lsgan_gradients_push_fake_logits_towards_real() -> None:
    logits = torch.zeros(1, 1, 3, 3, requires_grad=True)
    lsgan_g_loss([[logits]]).backward()
    assert (logits.grad < 0).all()  # increasing D(fake) lowers the generator loss
    logits.grad = None
    lsgan_d_loss([[torch.ones(1, 1, 3, 3)]], [[logits + 0.5]]).backward()
    assert (logits.grad > 0).all()  # the discriminator lowers D(fake)


def test_feature_matching_ignores_logits_and_averages_layers_and_scales() -> None:
    real = _disc([1.0, 2.0, 9.0], [0.0, 0.0, 9.0])
    same_feats_other_logits = _disc([1.0, 2.0, -4.0], [0.0, 0.0, 100.0])
    assert feature_matching_loss(real, same_feats_other_logits) == 0
    fake = _disc([1.5, 4.0, 0.0], [1.0, 0.0, 0.0])
    # scale 0: mean(0.5, 2.0) = 1.25; scale 1: mean(1.0, 0.0) = 0.5; mean over scales 0.875
    assert feature_matching_loss(real, fake) == pytest.approx(0.875)


def test_feature_matching_gradient_reaches_fake_only() -> None:
    real_feat = torch.randn(1, 2, 4, 4, requires_grad=True)
    fake_feat = torch.randn(1, 2, 4, 4, requires_grad=True)
    logits = torch.zeros(1, 1, 4, 4, requires_grad=True)
    feature_matching_loss([[real_feat, logits]], [[fake_feat, logits * 2]]).backward()
    assert real_feat.grad is None
    assert fake_feat.grad is not None and fake_feat.grad.abs().sum() > 0
    assert logits.grad is None


def test_activation_l1_sums_per_activation_means() -> None:
    a = [torch.zeros(2, 4, 8, 8), torch.zeros(2, 3, 16, 16), torch.zeros(2, 3, 32, 32)]
    b = [torch.full_like(a[0], 1.0), torch.full_like(a[1], -2.0), a[2].clone()]
    assert activation_l1(a, a) == 0
    assert activation_l1(a, b) == pytest.approx(1.0 + 2.0 + 0.0)  # a sum, not a mean, over N
    with pytest.raises(AssertionError):
        activation_l1(a, b[:2])
    x = torch.zeros(1, 3, 4, 4, requires_grad=True)
    activation_l1([x, x * 3], [torch.ones(1, 3, 4, 4), torch.ones(1, 3, 4, 4)]).backward()
    torch.testing.assert_close(x.grad, torch.full_like(x, -(1 + 3) / x.numel()))


def test_rgb_to_lab_l1_known_values_and_gradient() -> None:
    white, black = torch.ones(1, 3, 4, 4), -torch.ones(1, 3, 4, 4)
    assert rgb_to_lab_l1(white, white) == 0
    # White vs black differs only in L (100 -> 1 after scaling): mean over 3 channels = 1/3.
    assert rgb_to_lab_l1(white, black).item() == pytest.approx(1 / 3, abs=1e-3)
    red = torch.tensor([1.0, -1.0, -1.0])[None, :, None, None].expand(1, 3, 4, 4)
    green = torch.tensor([-1.0, 1.0, -1.0])[None, :, None, None].expand(1, 3, 4, 4)
    # A colour change moves a/b: larger than the lightness-only difference of similar greys.
    grey1, grey2 = torch.full((1, 3, 4, 4), 0.0), torch.full((1, 3, 4, 4), 0.1)
    assert rgb_to_lab_l1(red, green) > 10 * rgb_to_lab_l1(grey1, grey2)
    x = (torch.rand(2, 3, 8, 8) * 1.8 - 0.9).requires_grad_()
    rgb_to_lab_l1(x, torch.zeros_like(x)).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@needs_vgg
def test_perceptual_loss_without_weights_is_unavailable_and_zero(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    loss = PerceptualLoss()
    assert not loss.available and loss.reason
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    out = loss(x, torch.rand(1, 3, 32, 32))
    assert out.dim() == 0 and out.item() == 0


# torchvision's vgg19 `features` indices of the 16 convs (ReLU and pooling layers in between).
_VGG19_CONVS = [
    (0, 3, 64), (2, 64, 64), (5, 64, 128), (7, 128, 128), (10, 128, 256), (12, 256, 256), (14, 256, 256),
    (16, 256, 256), (19, 256, 512), (21, 512, 512), (23, 512, 512), (25, 512, 512), (28, 512, 512),
    (30, 512, 512), (32, 512, 512), (34, 512, 512),
]


@needs_vgg
def test_perceptual_loss_with_random_torchvision_format_weights(tmp_path: Path, monkeypatch) -> None:
    g = torch.Generator().manual_seed(0)
    state = {}
    for i, cin, cout in _VGG19_CONVS:
        state[f"features.{i}.weight"] = torch.randn(cout, cin, 3, 3, generator=g) * (2 / (9 * cin)) ** 0.5
        state[f"features.{i}.bias"] = torch.zeros(cout)
    ckpt = tmp_path / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth"
    ckpt.parent.mkdir(parents=True)
    torch.save(state, ckpt)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    loss = PerceptualLoss()
    assert loss.available, loss.reason
    assert all(not p.requires_grad for p in loss.vgg.parameters())
    loss.train()
    assert not loss.vgg.training
    y = torch.rand(1, 3, 32, 32) * 2 - 1
    assert loss(y, y).item() == 0
    x = (torch.rand(1, 3, 32, 32) * 2 - 1).requires_grad_()
    value = loss(x, y)
    assert value.item() > 0
    value.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0

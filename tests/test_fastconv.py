"""Winograd convolutions (models.fastconv): fp32's output to its rounding, only where they apply,
the same parameters, and a whole render that stays the same image."""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.fastconv import MIN_CHANNELS, MIN_SIZE, OUT_BLOCK, WinogradConv2d, use_winograd
from tests.helpers_models import PROFILE, models  # noqa: F401  (fixture)


def _winograd(cin: int, cout: int, bias: bool = True, seed: int = 0) -> tuple[nn.Conv2d, WinogradConv2d]:
    torch.manual_seed(seed)
    conv = nn.Conv2d(cin, cout, 3, bias=bias)
    net = nn.Sequential(copy.deepcopy(conv))
    assert use_winograd(net) == 1
    return conv, net[0]


@pytest.mark.parametrize("batch,h,w,cout,bias", [
    (1, MIN_SIZE + 2, MIN_SIZE + 2, MIN_CHANNELS, True),  # whole 4x4 tiles
    (2, 21, 19, OUT_BLOCK * 4 + 44, True),  # tiles cut at the edge, a partial block of output channels
    (1, 23, 23, MIN_CHANNELS, False),
])
def test_winograd_agrees_with_the_convolution_to_fp32_rounding(batch, h, w, cout, bias):
    conv, fast = _winograd(MIN_CHANNELS, cout, bias)
    x = torch.randn(batch, MIN_CHANNELS, h, w)
    with torch.inference_mode():
        assert fast.winograd(x)
        got, direct = fast(x), conv(x)
        exact = F.conv2d(x.double(), conv.weight.double(), None if conv.bias is None else conv.bias.double())
    assert got.shape == direct.shape == (batch, cout, h - 2, w - 2)
    scale = float(exact.abs().max())
    err, direct_err = float((got - exact).abs().max()), float((direct - exact).abs().max())
    assert err < 1e-4 * scale, (err, scale)
    assert err < 100 * max(direct_err, 1e-7 * scale), (err, direct_err)  # rounding, not a wrong tile or channel
    assert not torch.equal(got, direct)  # the other algorithm did run


def test_winograd_runs_only_in_cpu_fp32_inference_at_its_size():
    conv, fast = _winograd(MIN_CHANNELS, MIN_CHANNELS)
    small = torch.randn(1, MIN_CHANNELS, MIN_SIZE + 1, MIN_SIZE + 1)  # a 15 px output: the direct kernel
    big = torch.randn(1, MIN_CHANNELS, MIN_SIZE + 2, MIN_SIZE + 2)
    with torch.inference_mode():
        assert not fast.winograd(small) and torch.equal(fast(small), conv(small))
        assert torch.equal(fast.to(torch.bfloat16)(big.bfloat16()), conv.to(torch.bfloat16)(big.bfloat16()))
    fast.float(), conv.float()
    with torch.enable_grad():  # training: autograd through the ordinary convolution
        assert not fast.winograd(big) and torch.equal(fast(big), conv(big))


def test_use_winograd_swaps_only_wide_unpadded_3x3_stride1_convs_and_keeps_the_parameters():
    net = nn.Sequential(
        nn.Conv2d(MIN_CHANNELS, MIN_CHANNELS, 3),  # swapped
        nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(MIN_CHANNELS, MIN_CHANNELS, 3, bias=False)),  # swapped, nested
        nn.Conv2d(MIN_CHANNELS, MIN_CHANNELS // 2, 3),  # too narrow
        nn.Conv2d(MIN_CHANNELS, MIN_CHANNELS, 3, stride=2),  # strided
        nn.Conv2d(MIN_CHANNELS, MIN_CHANNELS, 3, padding=1),  # zero-padded
        nn.Conv2d(MIN_CHANNELS, MIN_CHANNELS, 1),  # 1x1
    )
    before = {k: v.data_ptr() for k, v in net.state_dict().items()}
    assert use_winograd(net) == 2
    kinds = [type(m) for m in (net[0], net[1][1], net[2], net[3], net[4], net[5])]
    assert kinds == [WinogradConv2d] * 2 + [nn.Conv2d] * 4
    assert {k: v.data_ptr() for k, v in net.state_dict().items()} == before  # same tensors, same names
    assert use_winograd(net) == 0  # already swapped


def test_a_render_with_winograd_is_the_same_image():
    """A profile whose bg and fusion residual blocks are wide enough for Winograd at 32 px (the
    paper profile's case, at a test's size): the edit's uint8 output stays within fp32 rounding."""
    from benchmarks.dtype import psnr_uint8
    from benchmarks.edit import random_editor
    from pipeline.core.profiles import get_profile
    from pipeline.editing.edit import edit_aligned
    from pipeline.models.networks import validate_profile

    profile = replace(get_profile("micro"), name="wide", ngf=MIN_CHANNELS // 4, n_down=2, fuse_ngf=MIN_CHANNELS // 4,
                      fuse_down=2, enc_image_blocks=1, gen_blocks=1, fuse_blocks=1)
    validate_profile(profile)
    eager = random_editor(profile, torch.device("cpu"))
    fast = copy.deepcopy(eager).use_winograd()
    ran = []
    for m in fast.fusion.modules():
        if isinstance(m, WinogradConv2d):
            m.register_forward_hook(lambda mod, inp, out: ran.append(mod.winograd(inp[0])))
    rng = np.random.default_rng(0)
    geo, app = (rng.integers(0, 256, (128, 128, 3), dtype=np.uint8) for _ in range(2))
    with torch.inference_mode():
        a = edit_aligned(eager, app, geometry_photo=geo)
        b = edit_aligned(fast, app, geometry_photo=geo)
    assert ran and all(ran)  # the fusion net's residual block took the Winograd path
    assert psnr_uint8(a, b) > 60, psnr_uint8(a, b)


def test_small_profile_renders_stay_bit_for_bit_the_same():
    """The small profile's wide convolutions (its 256-channel latents) run at 8 px, below
    Winograd's size: the trained pipeline's outputs do not move."""
    from benchmarks.edit import random_editor, time_edit
    from pipeline.core.profiles import get_profile

    eager = random_editor(get_profile("small"), torch.device("cpu"))
    fast = copy.deepcopy(eager)
    swapped = sum(use_winograd(m) for m in {id(m): m for m in fast.networks()}.values())
    assert swapped > 0
    outs: list = []
    time_edit(eager, 1, 0, outputs=outs), time_edit(fast, 1, 0, outputs=outs)
    assert np.array_equal(outs[0], outs[1])


def test_load_editor_uses_winograd_on_the_cpu_torch_runtime(models, monkeypatch):  # noqa: F811
    from pipeline.models.editor import Editor, load_editor

    calls = []
    monkeypatch.setattr(Editor, "use_winograd", lambda self: calls.append(self) or self)
    editor = load_editor(models, PROFILE)
    assert calls == [editor]

"""Fast convolutions (models.fastconv): Winograd's matrices exact, fp32's output to its rounding,
only where they apply, the same parameters, and a whole render that stays the same image."""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.fastconv import (MIN_SIZE, OUT_BLOCK, WHOLE_BYTES, WINOGRAD, ThinConv2d, WinogradConv2d,
                                      toom_cook, use_fast_convs)
from tests.helpers_models import PROFILE, models  # noqa: F401  (fixture)

WIDE = WINOGRAD[3].min_channels  # 3x3 convolutions from this many channels run by Winograd
STEM = WINOGRAD[7].min_channels  # 7x7 ones from this many


def _fast(cin: int, cout: int, k: int = 3, bias: bool = True, seed: int = 0) -> tuple[nn.Conv2d, nn.Conv2d]:
    torch.manual_seed(seed)
    conv = nn.Conv2d(cin, cout, k, bias=bias)
    net = nn.Sequential(copy.deepcopy(conv))
    assert use_fast_convs(net) == 1
    return conv, net[0]


@pytest.mark.parametrize("m,r,points", [(4, 3, (0, 1, -1, 2, -2)), (2, 3, (0, 1, -1)),
                                        (4, 7, WINOGRAD[7].points)])
def test_toom_cook_matrices_compute_the_correlation_exactly(m, r, points):
    at, g, bt = toom_cook(m, r, points)
    assert at.shape == (m, m + r - 1) and g.shape == (m + r - 1, r) and bt.shape == (m + r - 1, m + r - 1)
    d, w = torch.randn(m + r - 1, dtype=torch.float64), torch.randn(r, dtype=torch.float64)
    direct = torch.stack([d[i:i + r] @ w for i in range(m)])
    assert torch.allclose(at @ ((g @ w) * (bt @ d)), direct, atol=1e-10)
    with pytest.raises(ValueError, match="distinct finite points"):
        toom_cook(m, r, points[:-1] + points[:1])


@pytest.mark.parametrize("k,cin,batch,h,w,cout,bias,blocked,tol", [
    (3, WIDE, 1, MIN_SIZE + 2, MIN_SIZE + 2, WIDE, True, False, 1e-4),  # whole 4x4 tiles
    # tiles cut at the edge; weights transformed by blocks of output channels, the last one partial
    (3, WIDE, 2, 21, 19, OUT_BLOCK * 7 + 44, True, True, 1e-4),
    (3, WIDE, 1, 23, 23, WIDE, False, False, 1e-4),
    (7, STEM, 1, 90, 75, STEM, True, False, 5e-4),  # weights transformed once, tile rows in strips, cut tiles
    (7, STEM, 2, MIN_SIZE + 6, MIN_SIZE + 9, STEM + 8, False, False, 5e-4),
])
def test_winograd_agrees_with_the_convolution_to_fp32_rounding(k, cin, batch, h, w, cout, bias, blocked, tol):
    conv, fast = _fast(cin, cout, k, bias)
    assert isinstance(fast, WinogradConv2d)
    assert (WINOGRAD[k].a ** 2 * cout * cin * 4 > WHOLE_BYTES) == blocked
    x = torch.randn(batch, cin, h, w).relu()  # non-negative, as after a ReLU: the sums do not cancel
    with torch.inference_mode():
        assert fast.fast(x)
        got, direct = fast(x), conv(x)
        exact = F.conv2d(x.double(), conv.weight.double(), None if conv.bias is None else conv.bias.double())
    assert got.shape == direct.shape == (batch, cout, h - k + 1, w - k + 1)
    scale = float(exact.abs().max())
    err = float((got - exact).abs().max())
    assert err < tol * scale, (err, scale)  # rounding, not a wrong tile, strip or channel (those are off by ~scale)
    assert not torch.equal(got, direct)  # the other algorithm did run


@pytest.mark.parametrize("batch,h,w,bias", [(1, 2 * ThinConv2d.ROWS + 15, 40, True), (2, MIN_SIZE + 6, 30, False)])
def test_thin_convolution_is_the_convolution(batch, h, w, bias):
    conv, fast = _fast(64, 3, 7, bias)
    assert isinstance(fast, ThinConv2d)
    x = torch.randn(batch, 64, h, w)
    with torch.inference_mode():
        assert fast.fast(x)
        got = fast(x)
        exact = F.conv2d(x.double(), conv.weight.double(), None if conv.bias is None else conv.bias.double())
    assert got.shape == (batch, 3, h - 6, w - 6)
    assert float((got - exact).abs().max()) < 1e-5 * float(exact.abs().max())  # no approximation: fp32 sums


@pytest.mark.parametrize("cin,cout,k", [(WIDE, WIDE, 3), (STEM, STEM, 7), (64, 3, 7)])
def test_fast_convs_run_only_in_cpu_fp32_inference_at_their_size(cin, cout, k):
    conv, fast = _fast(cin, cout, k)
    small = torch.randn(1, cin, MIN_SIZE + k - 2, MIN_SIZE + k - 2)  # an output of MIN_SIZE - 1 px: the direct kernel
    big = torch.randn(1, cin, MIN_SIZE + k - 1, MIN_SIZE + k - 1)
    with torch.inference_mode():
        assert fast.fast(big) and not fast.fast(small) and torch.equal(fast(small), conv(small))
        assert torch.equal(fast.to(torch.bfloat16)(big.bfloat16()), conv.to(torch.bfloat16)(big.bfloat16()))
    fast.float(), conv.float()
    with torch.enable_grad():  # training: autograd through the ordinary convolution
        assert not fast.fast(big) and torch.equal(fast(big), conv(big))


def test_use_fast_convs_swaps_only_where_one_applies_and_keeps_the_parameters():
    net = nn.Sequential(
        nn.Conv2d(WIDE, WIDE, 3),  # Winograd
        nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(WIDE, WIDE, 3, bias=False)),  # Winograd, nested
        nn.Conv2d(STEM, STEM, 7),  # Winograd F(4x4, 7x7)
        nn.Conv2d(64, 3, 7),  # thin
        nn.Conv2d(WIDE, WIDE // 2, 3),  # too narrow for Winograd, too wide for thin
        nn.Conv2d(WIDE, WIDE, 3, stride=2),  # strided
        nn.Conv2d(WIDE, WIDE, 3, padding=1),  # zero-padded
        nn.Conv2d(WIDE, WIDE, 1),  # 1x1
        nn.Conv2d(STEM // 2, STEM // 2, 7),  # a narrow 7x7
        nn.Conv2d(32, 3, 7),  # a head from too few channels
        nn.Conv2d(STEM, STEM, 5),  # no Winograd of that size
    )
    before = {k: v.data_ptr() for k, v in net.state_dict().items()}
    assert use_fast_convs(net) == 4
    kinds = [type(m) for m in (net[0], net[1][1], *net[2:])]
    assert kinds == [WinogradConv2d] * 3 + [ThinConv2d] + [nn.Conv2d] * 7
    assert {k: v.data_ptr() for k, v in net.state_dict().items()} == before  # same tensors, same names
    assert use_fast_convs(net) == 0  # already swapped


def test_a_render_with_fast_convs_is_the_same_image():
    """A profile whose bg and fusion residual blocks are wide enough for Winograd at 32 px, with a
    64-channel fusion stem and head (the paper profile's cases, at a test's size): the edit's
    uint8 output stays within fp32 rounding."""
    from benchmarks.dtype import psnr_uint8
    from benchmarks.edit import random_editor
    from pipeline.core.profiles import get_profile
    from pipeline.editing.edit import edit_aligned
    from pipeline.models.networks import validate_profile

    profile = replace(get_profile("micro"), name="wide", ngf=WIDE // 4, n_down=2, fuse_ngf=WIDE // 4,
                      fuse_down=2, enc_image_blocks=1, gen_blocks=1, fuse_blocks=1)
    validate_profile(profile)
    eager = random_editor(profile, torch.device("cpu"))
    fast = copy.deepcopy(eager).use_fast_convs()
    ran = []
    for m in fast.fusion.modules():
        if isinstance(m, (WinogradConv2d, ThinConv2d)):
            m.register_forward_hook(lambda mod, inp, out: ran.append((mod.kernel_size[0], mod.out_channels, mod.fast(inp[0]))))
    rng = np.random.default_rng(0)
    geo, app = (rng.integers(0, 256, (128, 128, 3), dtype=np.uint8) for _ in range(2))
    with torch.inference_mode():
        a = edit_aligned(eager, app, geometry_photo=geo)
        b = edit_aligned(fast, app, geometry_photo=geo)
    # the fusion net's residual block and 7x7 stem by Winograd, its 7x7 head to RGB as a thin convolution
    assert sorted(ran) == [(3, WIDE, True), (3, WIDE, True), (7, 3, True), (7, WIDE // 4, True)], ran
    assert psnr_uint8(a, b) > 60, psnr_uint8(a, b)


def test_small_profile_renders_stay_bit_for_bit_the_same():
    """The small profile's wide convolutions (its 256-channel latents) run at 8 px, below
    Winograd's size: the trained pipeline's outputs do not move."""
    from benchmarks.edit import random_editor, time_edit
    from pipeline.core.profiles import get_profile

    eager = random_editor(get_profile("small"), torch.device("cpu"))
    fast = copy.deepcopy(eager)
    swapped = sum(use_fast_convs(m) for m in {id(m): m for m in fast.networks()}.values())
    assert swapped > 0
    outs: list = []
    time_edit(eager, 1, 0, outputs=outs), time_edit(fast, 1, 0, outputs=outs)
    assert np.array_equal(outs[0], outs[1])


def test_load_editor_uses_fast_convs_on_the_cpu_torch_runtime(models, monkeypatch):  # noqa: F811
    from pipeline.models.editor import Editor, load_editor

    calls = []
    monkeypatch.setattr(Editor, "use_fast_convs", lambda self: calls.append(self) or self)
    editor = load_editor(models, PROFILE)
    assert calls == [editor]

"""Convolutions with fewer multiplies on the CPU: fp32's output to its rounding, the same parameters.

A paper-profile render is bound by its convolutions (80 % of its CPU time), which oneDNN already
runs near the CPU's peak, so only doing less work makes them faster. Two kinds pay:

- Winograd's minimal filtering F(m x m, r x r) (Lavin & Gray, 2016) computes each m x m output
  tile from an (m+r-1)^2 input tile: the tiles are transformed by fixed matrices, the products
  become (m+r-1)^2 matrix multiplies (a batched GEMM) and the results are transformed back.
  F(4x4, 3x3) takes 36 products per channel pair where a direct 3x3 takes 144: the 1024-channel
  residual blocks on bg's and the fusion net's 32 px latent (half a render's convolution time).
  F(4x4, 7x7) takes 100 where a 7x7 takes 784: the fusion net's 64-channel 7x7 stem at 512 px,
  the largest single convolution of a render (105 GFLOP).
- A convolution to a few output channels (the fusion net's 7x7 head to RGB) leaves oneDNN's
  kernels mostly idle: as one GEMM for every tap's products, then the taps' shifted planes
  summed, it takes half the time or less, with no approximation at all.

Winograd's weight transform (G g G^T, (m+r-1)^2 / r^2 the weights' size) is not kept: a layer's
whole transform is made per call when it is small (the stem: 1.6 MB), else per block of
OUT_BLOCK output channels just before that block's GEMM (a 1024-channel layer's would be
151 MB), so memory stays as it was. The modules are `nn.Conv2d`s with the same parameters and
state_dict; they take their path only in fp32 on the CPU without autograd (inference) at outputs
of MIN_SIZE px or more, else they are ordinary convolutions. Winograd's output agrees with
PyTorch's convolution to fp32 rounding (tests/test_fastconv.py: F(4x4, 3x3) about 5e-5 of the
activations' scale, where oneDNN's own AVX2 and AVX-512 kernels differ by 3e-5; F(4x4, 7x7),
whose larger tiles round more, about 1e-4). `python -m benchmarks.dtype` times a whole edit.
"""

from __future__ import annotations

from fractions import Fraction
from math import prod

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["WinogradConv2d", "ThinConv2d", "use_fast_convs", "toom_cook", "MIN_SIZE", "OUT_BLOCK", "WINOGRAD"]

MIN_SIZE = 16  # output px from which the transforms cost less than the products they save
OUT_BLOCK = 64  # output channels whose weights are transformed at a time (fastest of 32-1024 on 2 cores)
WHOLE_BYTES = 16 << 20  # a layer's weight transform up to this size is made once per call
STRIP_BYTES = 4 << 20  # then the input tiles go by strips of tile rows of about this size (cache)
# ThinConv2d: at most 4 output channels, from 64 input channels (the paper profile's heads; the
# small profile's 8-16-channel heads cost under 2 ms and keep the trained pipeline's outputs)
THIN_OUT, THIN_MIN_IN = 4, 64


def toom_cook(m: int, r: int, points: tuple) -> tuple[Tensor, Tensor, Tensor]:
    """Winograd's F(m, r) for correlation, y = A^T [(G g) * (B^T d)], from the m+r-2 finite
    interpolation points and infinity (Toom-Cook), computed in exact fractions: A^T (m x a),
    G (a x r), B^T (a x a), a = m+r-1, as float64."""
    pts = [Fraction(p).limit_denominator(1000) for p in points]
    a = m + r - 1
    if len(set(pts)) != a - 1:
        raise ValueError(f"F({m}, {r}) needs {a - 1} distinct finite points, got {points}")

    def monic(roots: list) -> list:  # coefficients, lowest first, of prod (x - root)
        c = [Fraction(1)]
        for q in roots:
            c = [-q * c[0]] + [c[i - 1] - q * c[i] for i in range(1, len(c))] + [c[-1]]
        return c

    at = [[p ** i for p in pts] + [Fraction(int(i == m - 1))] for i in range(m)]
    g = [[p ** j / prod(p - q for q in pts if q != p) for j in range(r)] for p in pts]
    g.append([Fraction(int(j == r - 1)) for j in range(r)])
    bt = [monic([q for q in pts if q != p]) + [Fraction(0)] for p in pts] + [monic(pts)]
    return tuple(torch.tensor([[float(v) for v in row] for row in t], dtype=torch.float64) for t in (at, g, bt))


class _Tiles:
    """One F(m x m, r x r): its 2-D transforms as matrices on flattened tiles, vec(X^T d X) =
    (X^T kron X^T) vec(d), so that each transform of every tile is one matrix multiply."""

    def __init__(self, m: int, r: int, points: tuple, min_channels: int) -> None:
        at, g, bt = toom_cook(m, r, points)
        self.m, self.r, self.a, self.points, self.min_channels = m, r, m + r - 1, points, min_channels
        self.input, self.weight, self.output = (torch.kron(t, t).float() for t in (bt, g, at))


# the kernel sizes Winograd runs, and from how many channels (narrower layers cost little here);
# F(4x4, 7x7)'s points: of the sets tried, 3/4 rounded least (8e-5 of the stem's scale; 3/2: 1.6e-4)
WINOGRAD = {3: _Tiles(4, 3, (0, 1, -1, 2, -2), min_channels=256),
            7: _Tiles(4, 7, (0, 1, -1, 2, -2, 1 / 2, -1 / 2, 3 / 4, -3 / 4), min_channels=64)}


def _plain(conv: nn.Module) -> bool:
    return (type(conv) is nn.Conv2d and conv.stride == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1
            and conv.padding == (0, 0) and conv.kernel_size[0] == conv.kernel_size[1])


class _FastConv2d(nn.Conv2d):
    """An nn.Conv2d that computes its output another way (`compute`) in CPU fp32 inference at
    outputs of MIN_SIZE px or more: the only place where the other way pays and is tested."""

    def fast(self, x: Tensor) -> bool:
        return (x.device.type == "cpu" and x.dtype == torch.float32 and self.weight.dtype == torch.float32
                and not torch.is_grad_enabled() and min(x.shape[-2:]) - self.kernel_size[0] + 1 >= MIN_SIZE)

    def forward(self, x: Tensor) -> Tensor:
        return self.compute(x) if self.fast(x) else super().forward(x)

    def compute(self, x: Tensor) -> Tensor:
        raise NotImplementedError


class WinogradConv2d(_FastConv2d):
    """A square, stride-1, unpadded convolution of a size in WINOGRAD, by Winograd's F(4x4, r x r)."""

    def compute(self, x: Tensor) -> Tensor:
        t = WINOGRAD[self.kernel_size[0]]
        m, r, a = t.m, t.r, t.a
        b, c, h, w = x.shape
        cout = self.out_channels
        oh, ow = h - r + 1, w - r + 1
        th, tw = -(-oh // m), -(-ow // m)
        x = F.pad(x, (0, tw * m + r - 1 - w, 0, th * m + r - 1 - h))  # whole tiles; the extra outputs are cut
        weight = self.weight.reshape(cout, c * r * r)

        def transformed(block: Tensor) -> Tensor:  # G g G^T of these output channels
            return (t.weight @ block.reshape(-1, r * r).T).view(a * a, block.shape[0], c)

        whole = transformed(weight) if a * a * cout * c * 4 <= WHOLE_BYTES else None
        step = cout if whole is not None else OUT_BLOCK
        # with the whole transform made once, strips of tile rows; else one strip, each block's transform made once
        rows = max(1, STRIP_BYTES // (a * a * c * tw * b * 4)) if whole is not None else th
        strips = []
        for s in range(0, th, rows):
            n = min(rows, th - s)
            tiles = x[:, :, s * m:(s + n) * m + r - 1].unfold(2, a, m).unfold(3, a, m)  # (B, C, n, tw, a, a)
            v = (t.input @ tiles.permute(4, 5, 1, 0, 2, 3).reshape(a * a, -1)).view(a * a, c, -1)  # B^T d B
            products = x.new_empty(-(-cout // step), a * a, step, v.shape[2])
            for i in range(0, cout, step):
                u = whole if whole is not None else transformed(weight[i:i + step])
                torch.bmm(u, v, out=products[i // step, :, :u.shape[1]])  # one GEMM per tile position
            products = products.permute(1, 0, 2, 3).reshape(a * a, -1, v.shape[2])[:, :cout].reshape(a * a, -1)
            y = (t.output @ products).view(m, m, cout, b, n, tw)  # A^T M A
            strips.append(y.permute(3, 2, 4, 0, 5, 1).reshape(b, cout, n * m, tw * m))
        y = (strips[0] if len(strips) == 1 else torch.cat(strips, 2))[:, :, :oh, :ow]
        return y if self.bias is None else y + self.bias[:, None, None]


class ThinConv2d(_FastConv2d):
    """A square, stride-1, unpadded convolution to at most THIN_OUT channels: one GEMM gives every
    tap's products for a strip of rows, then the k*k shifted planes are summed (exact; half
    oneDNN's time or less on a 64-to-3 7x7)."""

    ROWS = 32  # output rows per strip: its k*k*cout planes stay in cache

    def compute(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        k, cout = self.kernel_size[0], self.out_channels
        oh, ow = h - k + 1, w - k + 1
        taps = self.weight.permute(2, 3, 0, 1).reshape(k * k * cout, c)
        bias = self.bias if self.bias is not None else x.new_zeros(cout)
        y = bias.view(1, cout, 1, 1).expand(b, cout, oh, ow).contiguous()
        for s in range(0, oh, self.ROWS):
            n = min(self.ROWS, oh - s)
            planes = (taps @ x[:, :, s:s + n + k - 1].reshape(b, c, -1)).view(b, k, k, cout, n + k - 1, w)
            out = y[:, :, s:s + n]
            for i in range(k):
                for j in range(k):
                    out += planes[:, i, j, :, i:i + n, j:j + ow]
        return y


def _swap(conv: nn.Conv2d) -> nn.Conv2d | None:
    """The fast module for `conv` (same parameter tensors), or None where none applies."""
    if not _plain(conv):
        return None
    k = conv.kernel_size[0]
    if k in WINOGRAD and min(conv.in_channels, conv.out_channels) >= WINOGRAD[k].min_channels:
        kind = WinogradConv2d
    elif k > 1 and conv.out_channels <= THIN_OUT and conv.in_channels >= THIN_MIN_IN:
        kind = ThinConv2d
    else:
        return None
    fast = kind(conv.in_channels, conv.out_channels, k, bias=conv.bias is not None,
                padding_mode=conv.padding_mode, device="meta")
    fast.weight, fast.bias = conv.weight, conv.bias
    return fast.train(conv.training)


def use_fast_convs(module: nn.Module) -> int:
    """Make `module`'s convolutions WinogradConv2d or ThinConv2d where one applies, in place (the
    same parameter tensors, the same state_dict). Returns how many."""
    swapped = 0
    for name, child in list(module.named_children()):
        fast = _swap(child)
        if fast is not None:
            setattr(module, name, fast)
            swapped += 1
        else:
            swapped += use_fast_convs(child)
    return swapped

"""Wide 3x3 convolutions by Winograd's minimal filtering on the CPU: fewer multiplies, fp32's output.

A paper-profile render is bound by its convolutions (80 % of its CPU time), and half of that
sits in the 1024-channel residual blocks that run on bg's and the fusion net's 32 px latent:
19 GFLOP each, which oneDNN already runs near the CPU's peak. Winograd's F(4x4, 3x3) (Lavin &
Gray, 2016) computes each 4x4 output tile from a 6x6 input tile with 36 products per channel
pair instead of 144: the input and output tiles are transformed by fixed 6x6 / 4x6 matrices and
the products become 36 matrix multiplies (a batched GEMM).

The weights' transform (G g G^T, 4x the weights' size) is not stored: each block of 64 output
channels is transformed just before its GEMM and dropped, so memory stays as it was and the
9 MB block is still in cache when it is used. The module is an `nn.Conv2d` with the same
parameters and state_dict; it takes the Winograd path only in fp32 on the CPU without autograd
(inference) and where the output is at least MIN_SIZE px, else it is an ordinary convolution
(the other parts' 8-14 px latents: there the weights' memory traffic, not the multiplies,
sets the time). Its output agrees with PyTorch's convolution to fp32 rounding: about 5e-5 of
the activations' scale, where two fp32 kernels (oneDNN's AVX2 and AVX-512) differ by 3e-5
(tests/test_fastconv.py). `python -m benchmarks.dtype` times a whole edit with it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["WinogradConv2d", "use_winograd", "MIN_CHANNELS", "MIN_SIZE"]

MIN_CHANNELS = 256  # narrower convolutions cost little here: left as they are
MIN_SIZE = 16  # output px from which the transforms cost less than the products they save
OUT_BLOCK = 64  # output channels whose weights are transformed at a time (fastest of 32-1024 on 2 cores)

# F(4x4, 3x3) with interpolation points 0, ±1, ±2 and infinity: B^T, G, A^T.
_BT = [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
       [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]]
_G = [[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
      [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]]
_AT = [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]
M, A = 4, 6  # output and input tile sizes


def _kron(rows: list) -> Tensor:
    # vec(X^T d X) = (X^T kron X^T) vec(d): each 2-D transform of every tile is one matrix multiply
    t = torch.tensor(rows, dtype=torch.float64)
    return torch.kron(t, t).float()


_IN, _WEIGHT, _OUT = _kron(_BT), _kron(_G), _kron(_AT)  # (36, 36), (36, 9), (16, 36)


def _eligible(conv: nn.Module) -> bool:
    return (type(conv) is nn.Conv2d and conv.kernel_size == (3, 3) and conv.stride == (1, 1)
            and conv.dilation == (1, 1) and conv.groups == 1 and conv.padding == (0, 0)
            and min(conv.in_channels, conv.out_channels) >= MIN_CHANNELS)


class WinogradConv2d(nn.Conv2d):
    """A 3x3, stride-1, unpadded convolution that runs by Winograd F(4x4, 3x3) in CPU fp32
    inference at MIN_SIZE px or more, and as nn.Conv2d otherwise."""

    def winograd(self, x: Tensor) -> bool:
        return (x.device.type == "cpu" and x.dtype == torch.float32 and self.weight.dtype == torch.float32
                and not torch.is_grad_enabled() and min(x.shape[-2:]) - 2 >= MIN_SIZE)

    def forward(self, x: Tensor) -> Tensor:
        if not self.winograd(x):
            return super().forward(x)
        b, c, h, w = x.shape
        cout = self.out_channels
        oh, ow = h - 2, w - 2
        th, tw = -(-oh // M), -(-ow // M)
        x = F.pad(x, (0, tw * M + 2 - w, 0, th * M + 2 - h))  # whole tiles; the extra outputs are cut
        tiles = x.unfold(2, A, M).unfold(3, A, M)  # (B, C, th, tw, 6, 6), overlapping by 2
        v = (_IN @ tiles.permute(4, 5, 1, 0, 2, 3).reshape(A * A, -1)).view(A * A, c, -1)  # B^T d B
        blocks = -(-cout // OUT_BLOCK)
        prod = x.new_empty(blocks, A * A, OUT_BLOCK, v.shape[2])
        weight = self.weight.reshape(cout, c * 9)
        for i in range(blocks):
            block = weight[i * OUT_BLOCK:(i + 1) * OUT_BLOCK]
            n = block.shape[0]
            u = (_WEIGHT @ block.reshape(n * c, 9).T).view(A * A, n, c)  # G g G^T of this block
            torch.bmm(u, v, out=prod[i, :, :n])  # one GEMM per tile position
        prod = prod.permute(1, 0, 2, 3).reshape(A * A, blocks * OUT_BLOCK, -1)[:, :cout].reshape(A * A, -1)
        y = (_OUT @ prod).view(M, M, cout, b, th, tw)  # A^T M A
        y = y.permute(3, 2, 4, 0, 5, 1).reshape(b, cout, th * M, tw * M)[:, :, :oh, :ow]
        return y if self.bias is None else y + self.bias[:, None, None]


def use_winograd(module: nn.Module) -> int:
    """Make `module`'s wide 3x3 stride-1 unpadded convolutions WinogradConv2d, in place (the
    same parameter tensors, the same state_dict). Returns how many."""
    swapped = 0
    for name, child in list(module.named_children()):
        if _eligible(child):
            conv = WinogradConv2d(child.in_channels, child.out_channels, 3, bias=child.bias is not None,
                                  padding_mode=child.padding_mode, device="meta")
            conv.weight, conv.bias = child.weight, child.bias
            setattr(module, name, conv.train(child.training))
            swapped += 1
        else:
            swapped += use_winograd(child)
    return swapped

"""DeepFaceEditing networks, sized by a `Profile`.

The `paper` profile reproduces the released checkpoints exactly: every `nn.Sequential` below
is laid out so that its state_dict names and shapes equal those of the official files
(see tests/test_networks.py against specs/official-checkpoint-layout.json). Smaller
profiles scale widths and depths for CPU training.

Conventions: images and sketches are (B, 3, S, S) in [-1, 1] with S a multiple of 16; IN is
instance norm with a learnable affine; AdaIN is instance norm without affine followed by a
per-sample scale and shift predicted by the appearance encoder.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.core.profiles import NOSE_PASTE_FRACTION, Profile, part_boxes

__all__ = [
    "AdaIN",
    "ConvBlock",
    "ResBlock",
    "GeometryEncoder",
    "SketchDecoder",
    "AppearanceEncoder",
    "PartGenerator",
    "GlobalGenerator",
    "GlobalFusion",
    "PhotoToSketch",
    "NLayerDiscriminator",
    "MultiScaleDiscriminator",
    "MIN_APPEARANCE_SIZE",
    "MIN_LATENT_SIZE",
    "validate_profile",
    "sketch_encoder",
    "image_encoder",
    "fuse_canvas",
    "build_part_modules",
    "count_parameters",
]


# Instance norm (and the reflect pads around it) needs at least 2x2 latents; the appearance
# encoder's five stride-2 4x4 convs need at least 32 px crops.
MIN_LATENT_SIZE = 2
MIN_APPEARANCE_SIZE = 32


def validate_profile(profile: Profile) -> None:
    """Raise ValueError if some part crop of `profile` is too small for the networks."""
    stride = 2**profile.n_down
    problems = []
    for part, (_, _, size) in part_boxes(profile.resolution).items():
        if size % stride or size // stride < MIN_LATENT_SIZE:
            problems.append(f"{part} crop {size} px gives a {size / stride:g} px latent (need >= {MIN_LATENT_SIZE})")
        if size < MIN_APPEARANCE_SIZE:
            problems.append(f"{part} crop {size} px is below the appearance encoder's {MIN_APPEARANCE_SIZE} px")
    if profile.resolution % 2**profile.fuse_down:
        problems.append(f"resolution {profile.resolution} is not a multiple of 2**fuse_down")
    if problems:
        raise ValueError(f"profile {profile.name!r} does not fit its networks: " + "; ".join(problems))


def _instance_norm(c: int) -> nn.InstanceNorm2d:
    return nn.InstanceNorm2d(c, affine=True)


def _check_image(x: Tensor, channels: int, multiple: int, what: str) -> None:
    if x.dim() != 4 or x.shape[1] != channels or x.shape[2] != x.shape[3] or x.shape[2] % multiple:
        raise ValueError(
            f"{what}: expected (B, {channels}, S, S) with S a multiple of {multiple}, got {tuple(x.shape)}"
        )


class AdaIN(nn.Module):
    """Instance norm without affine, then out * w + b with (w, b) given per sample.

    The parameters are not learned here: `PartGenerator` assigns them before each decode
    (`set_params`) and clears them afterwards, so the module holds no state between calls.
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.weight: Tensor | None = None
        self.bias: Tensor | None = None

    def set_params(self, weight: Tensor | None, bias: Tensor | None) -> None:
        self.weight, self.bias = weight, bias

    def forward(self, x: Tensor) -> Tensor:
        if self.weight is None or self.bias is None:
            raise RuntimeError("AdaIN used before its parameters were assigned (call PartGenerator.decode)")
        b, c = x.shape[:2]
        assert c == self.num_features and self.weight.shape == (b, c), (x.shape, self.weight.shape)
        out = F.instance_norm(x, eps=self.eps)
        scale, shift = self.weight, self.bias
        if scale.dtype != out.dtype and not torch.is_autocast_enabled(out.device.type):
            scale, shift = scale.to(out.dtype), shift.to(out.dtype)  # a bf16 block of an fp32 generator stays bf16 (ResBlock)
        return out * scale[:, :, None, None] + shift[:, :, None, None]

    def extra_repr(self) -> str:
        return f"{self.num_features}"


class ConvBlock(nn.Module):
    """pad -> conv -> norm -> activation, registered as (pad, norm, act, conv).

    The registration order reproduces the released key order ('norm.*' before 'conv.*').
    """

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int,
        stride: int = 1,
        padding: int = 0,
        norm: str = "none",
        act: str = "relu",
    ) -> None:
        super().__init__()
        self.pad = nn.ReflectionPad2d(padding)
        if norm == "in":
            self.norm: nn.Module = _instance_norm(cout)
        elif norm == "adain":
            self.norm = AdaIN(cout)
        elif norm == "none":
            self.norm = nn.Identity()
        else:
            raise ValueError(f"unknown norm {norm!r}")
        self.act: nn.Module = nn.ReLU(inplace=True) if act == "relu" else nn.Identity()
        self.conv = nn.Conv2d(cin, cout, kernel, stride)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.norm(self.conv(self.pad(x))))


class ResBlock(nn.Module):
    """x + [pad, conv3, norm, ReLU, pad, conv3, norm]; no activation after the sum.

    `cast(dtype)` (Editor.cast_blocks: bf16 blocks in an fp32 net) computes the branch in that
    dtype, channels_last (where oneDNN's bf16 kernels are fast), and adds it to the input in the
    input's dtype, so the residual stream keeps fp32's precision.
    """

    def __init__(self, c: int, norm: str = "in") -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            ConvBlock(c, c, 3, 1, 1, norm=norm, act="relu"),
            ConvBlock(c, c, 3, 1, 1, norm=norm, act="none"),
        )
        self.branch_dtype: torch.dtype | None = None

    def cast(self, dtype: torch.dtype) -> "ResBlock":
        self.conv_block.to(dtype).to(memory_format=torch.channels_last)
        self.branch_dtype = dtype
        return self

    def forward(self, x: Tensor) -> Tensor:
        if self.branch_dtype is None or self.branch_dtype == x.dtype:
            return x + self.conv_block(x)
        branch = self.conv_block(x.to(self.branch_dtype, memory_format=torch.channels_last))
        return x + branch.to(x.dtype, memory_format=torch.contiguous_format)


def _down(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride=2, padding=1), _instance_norm(cout), nn.ReLU(inplace=True)]


def _up(cin: int, cout: int, norm: nn.Module) -> list[nn.Module]:
    return [nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1), norm, nn.ReLU(inplace=True)]


class GeometryEncoder(nn.Module):
    """E_sketch / E_image: image (B,3,S,S) -> geometry latent (B, latent_channels, S/2^n_down, ...)."""

    def __init__(self, profile: Profile, n_blocks: int) -> None:
        super().__init__()
        self.profile = profile
        c = profile.ngf
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(3, c, 7), _instance_norm(c), nn.ReLU(inplace=True)]
        for _ in range(profile.n_down):
            layers += _down(c, 2 * c)
            c *= 2
        layers += [ResBlock(c) for _ in range(n_blocks)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        stride = 2**self.profile.n_down
        _check_image(x, 3, stride, type(self).__name__)
        if x.shape[-1] // stride < MIN_LATENT_SIZE:
            raise ValueError(f"{type(self).__name__}: {x.shape[-1]} px input gives a latent below {MIN_LATENT_SIZE} px")
        return self.model(x)


def sketch_encoder(profile: Profile) -> GeometryEncoder:
    return GeometryEncoder(profile, profile.enc_sketch_blocks)


def image_encoder(profile: Profile) -> GeometryEncoder:
    return GeometryEncoder(profile, profile.enc_image_blocks)


class SketchDecoder(nn.Module):
    """D_sketch (not released; ours): mirrors the encoder, latent -> sketch (B,3,S,S)."""

    def __init__(self, profile: Profile) -> None:
        super().__init__()
        self.profile = profile
        c = profile.latent_channels
        layers: list[nn.Module] = [ResBlock(c)]
        for _ in range(profile.n_down):
            layers += _up(c, c // 2, _instance_norm(c // 2))
            c //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(c, 3, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, z: Tensor, return_activations: bool = False) -> Tensor | tuple[Tensor, list[Tensor]]:
        assert z.dim() == 4 and z.shape[1] == self.profile.latent_channels, z.shape
        acts = [z]
        h = self.model[0](z)
        acts.append(h)
        for i in range(self.profile.n_down):
            for layer in self.model[1 + 3 * i : 4 + 3 * i]:
                h = layer(h)
            acts.append(h)
        out = self.model[1 + 3 * self.profile.n_down :](h)
        acts.append(out)
        return (out, acts) if return_activations else out


class AppearanceEncoder(nn.Module):
    """conv7, 5x conv4 (no norm, ReLU), global average pool -> code; 1x1 conv -> AdaIN params.

    `model[:7]` computes the code, `model[7]` maps it to the AdaIN parameters.
    """

    def __init__(self, profile: Profile, num_adain_params: int) -> None:
        super().__init__()
        c = profile.app_ngf
        widths = [c, 2 * c, 4 * c, 4 * c, 4 * c, 4 * c]
        layers: list[nn.Module] = [ConvBlock(3, c, 7, 1, 3)]
        layers += [ConvBlock(cin, cout, 4, 2, 1) for cin, cout in zip(widths[:-1], widths[1:])]
        layers += [nn.AdaptiveAvgPool2d(1), nn.Conv2d(widths[-1], num_adain_params, 1)]
        self.model = nn.Sequential(*layers)
        self.code_dim = widths[-1]

    def code(self, x: Tensor) -> Tensor:
        if x.shape[-1] < MIN_APPEARANCE_SIZE:
            raise ValueError(f"AppearanceEncoder needs crops >= {MIN_APPEARANCE_SIZE} px, got {tuple(x.shape)}")
        return self.model[:7](x).flatten(1)

    def params(self, code: Tensor) -> Tensor:
        assert code.dim() == 2 and code.shape[1] == self.code_dim, code.shape
        return self.model[7](code[:, :, None, None]).flatten(1)


class PartGenerator(nn.Module):
    """Geometry latent + appearance image -> part RGB and its ngf-channel feature map."""

    def __init__(self, profile: Profile) -> None:
        super().__init__()
        self.profile = profile
        c = profile.latent_channels
        layers: list[nn.Module] = [ResBlock(c, norm="adain") for _ in range(profile.gen_blocks)]
        for _ in range(profile.n_down):
            layers += _up(c, c // 2, AdaIN(c // 2))
            c //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(c, 3, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)
        self._adain = [m for m in self.model.modules() if isinstance(m, AdaIN)]
        self.enc_style = AppearanceEncoder(profile, self.num_adain_params)
        # Index of the final reflect-pad: everything before it yields the fusion feature.
        self._head = profile.gen_blocks + 3 * profile.n_down

    @property
    def num_adain_params(self) -> int:
        return sum(2 * m.num_features for m in self._adain)

    def style(self, x: Tensor) -> Tensor:
        _check_image(x, 3, 1, "PartGenerator.style")
        return self.enc_style.code(x)

    def adain_params(self, code: Tensor) -> Tensor:
        return self.enc_style.params(code)

    def _assign(self, params: Tensor | None) -> None:
        if params is None:
            for m in self._adain:
                m.set_params(None, None)
            return
        assert params.shape[1] == self.num_adain_params, params.shape
        i = 0
        for m in self._adain:  # module order; per module: first C = bias, next C = weight
            c = m.num_features
            m.set_params(weight=params[:, i + c : i + 2 * c], bias=params[:, i : i + c])
            i += 2 * c

    def decode(self, z: Tensor, code: Tensor) -> tuple[Tensor, Tensor]:
        feature = self.feature(z, code)
        return self.model[self._head :](feature), feature

    def feature(self, z: Tensor, code: Tensor) -> Tensor:
        """The ngf-channel feature map alone (what the fusion net takes), without the RGB head."""
        assert z.dim() == 4 and z.shape[1] == self.profile.latent_channels, z.shape
        assert code.shape == (z.shape[0], self.enc_style.code_dim), (code.shape, z.shape)
        self._assign(self.adain_params(code))
        try:
            return self.model[: self._head](z)
        finally:
            self._assign(None)  # drop references to this batch's graph

    def forward(self, z: Tensor, appearance_image: Tensor) -> tuple[Tensor, Tensor]:
        return self.decode(z, self.style(appearance_image))


class GlobalGenerator(nn.Module):
    """pix2pixHD global generator: conv7, n_down stride-2 convs, residual blocks, mirror, tanh."""

    def __init__(self, cin: int, cout: int, ngf: int, n_down: int, n_blocks: int) -> None:
        super().__init__()
        self.cin, self.n_down = cin, n_down
        c = ngf
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(cin, c, 7), _instance_norm(c), nn.ReLU(True)]
        for _ in range(n_down):
            layers += _down(c, 2 * c)
            c *= 2
        layers += [ResBlock(c) for _ in range(n_blocks)]
        for _ in range(n_down):
            layers += _up(c, c // 2, _instance_norm(c // 2))
            c //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(c, cout, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        _check_image(x, self.cin, 2**self.n_down, type(self).__name__)
        return self.model(x)


class GlobalFusion(GlobalGenerator):
    """Fused part-feature canvas (B, ngf, R, R) -> face RGB (B, 3, R, R)."""

    def __init__(self, profile: Profile) -> None:
        super().__init__(profile.ngf, 3, profile.fuse_ngf, profile.fuse_down, profile.fuse_blocks)


class PhotoToSketch(GlobalGenerator):
    """The official photo-to-sketch generator (3 -> 3); same downsampling depth as fusion."""

    def __init__(self, profile: Profile) -> None:
        super().__init__(3, 3, profile.p2s_ngf, profile.fuse_down, profile.p2s_blocks)


def fuse_canvas(features: dict[str, Tensor], boxes: dict[str, tuple[int, int, int]]) -> Tensor:
    """Paste part features onto the bg feature map: mouth, nose (top rows only), eye1, eye2.

    Later pastes overwrite earlier ones. The inputs are not modified; gradients reach every
    pasted region of every part.
    """
    bg = features["bg"]
    assert bg.dim() == 4 and bg.shape[2] == bg.shape[3], bg.shape
    canvas = bg.clone()
    for part in ("mouth", "nose", "eye1", "eye2"):
        x0, y0, size = boxes[part]
        f = features[part]
        if f.shape[0] != bg.shape[0] or f.shape[1] != bg.shape[1] or f.shape[2:] != (size, size):
            raise ValueError(f"fuse_canvas: {part} feature {tuple(f.shape)} does not match box size {size}")
        if x0 < 0 or y0 < 0 or x0 + size > bg.shape[3] or y0 + size > bg.shape[2]:
            raise ValueError(f"fuse_canvas: {part} box {(x0, y0, size)} leaves the {bg.shape[2]} px canvas")
        rows = round(size * NOSE_PASTE_FRACTION) if part == "nose" else size
        canvas[:, :, y0 : y0 + rows, x0 : x0 + size] = f[:, :, :rows]
    return canvas


class NLayerDiscriminator(nn.Module):
    """PatchGAN: n_layers stride-2 4x4 convs, one stride-1 conv, 1-channel patch logits."""

    def __init__(self, in_channels: int, ndf: int, n_layers: int) -> None:
        super().__init__()
        blocks: list[nn.Sequential] = [
            nn.Sequential(nn.Conv2d(in_channels, ndf, 4, 2, 2), nn.LeakyReLU(0.2, inplace=True))
        ]
        c = ndf
        for _ in range(1, n_layers):
            c2 = min(2 * c, 512)
            blocks.append(nn.Sequential(nn.Conv2d(c, c2, 4, 2, 2), _instance_norm(c2), nn.LeakyReLU(0.2, inplace=True)))
            c = c2
        c2 = min(2 * c, 512)
        blocks.append(nn.Sequential(nn.Conv2d(c, c2, 4, 1, 2), _instance_norm(c2), nn.LeakyReLU(0.2, inplace=True)))
        blocks.append(nn.Sequential(nn.Conv2d(c2, 1, 4, 1, 2)))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = []
        for block in self.blocks:
            x = block(x)
            feats.append(x)
        return feats


class MultiScaleDiscriminator(nn.Module):
    """pix2pixHD multi-scale PatchGAN; scale 0 sees the full input, each next one a 2x avg-pool."""

    def __init__(self, profile: Profile, in_channels: int = 3) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.scales = nn.ModuleList(
            NLayerDiscriminator(in_channels, profile.disc_ndf, profile.disc_layers) for _ in range(profile.disc_scales)
        )
        self.downsample = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)

    def forward(self, x: Tensor) -> list[list[Tensor]]:
        assert x.dim() == 4 and x.shape[1] == self.in_channels, x.shape
        out = []
        for i, d in enumerate(self.scales):
            if i:
                x = self.downsample(x)
            out.append(d(x))
        return out


def build_part_modules(profile: Profile) -> dict[str, nn.Module]:
    """The four per-part networks of one facial part."""
    return {
        "sketch_encoder": sketch_encoder(profile),
        "sketch_decoder": SketchDecoder(profile),
        "image_encoder": image_encoder(profile),
        "generator": PartGenerator(profile),
    }


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())

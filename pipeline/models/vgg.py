"""VGG-19 feature extractor compatible with torchvision's ImageNet checkpoint.

torchvision cannot be imported on our CPU torch build, so the network is defined here with
the same `features.N` layout as `torchvision.models.vgg19`; its published ImageNet weights
(`vgg19-dcbb9e9d.pth`) then load by name. Used by DFI (relu3_1/4_1/5_1 features) and by the
perceptual loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.hub
from torch import Tensor, nn

WEIGHTS_FILE = "vgg19-dcbb9e9d.pth"
WEIGHTS_URL = f"https://download.pytorch.org/models/{WEIGHTS_FILE}"

# VGG-19 ("configuration E"): output channels per conv, "M" = 2x2 max pool.
_CFG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
    512, 512, 512, 512, "M", 512, 512, 512, 512, "M",
)  # fmt: skip

# ImageNet statistics the torchvision weights were trained with (RGB, [0, 1] input).
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


def _layer_index() -> dict[str, int]:
    """Map relu{block}_{conv} -> index of that ReLU inside `features` (torchvision numbering)."""
    names: dict[str, int] = {}
    idx, block, conv = 0, 1, 0
    for v in _CFG:
        if v == "M":
            idx += 1
            block, conv = block + 1, 0
        else:
            conv += 1
            names[f"relu{block}_{conv}"] = idx + 1  # conv at idx, its ReLU at idx + 1
            idx += 2
    return names


LAYER_INDEX: dict[str, int] = _layer_index()
DFI_LAYERS: tuple[str, ...] = ("relu3_1", "relu4_1", "relu5_1")


def vgg_weights_path() -> Path:
    """Where torchvision keeps `vgg19-dcbb9e9d.pth`: `$TORCH_HOME/hub/checkpoints/`.

    Resolved by `torch.hub.get_dir()` at call time, so TORCH_HOME, XDG_CACHE_HOME (TORCH_HOME
    defaults to `$XDG_CACHE_HOME/torch`, i.e. `~/.cache/torch`) and `torch.hub.set_dir` are
    honoured exactly as torch does.
    """
    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILE


class MissingWeightsError(FileNotFoundError):
    """The ImageNet VGG-19 weights are not on disk (we never download them implicitly)."""

    def __init__(self, path: Path) -> None:
        super().__init__(
            f"VGG-19 ImageNet weights not found: {path}. Put torchvision's published vgg19 "
            f"ImageNet checkpoint '{path.name}' ({WEIGHTS_URL}) in the directory {path.parent} "
            "(that is $TORCH_HOME/hub/checkpoints; TORCH_HOME defaults to ~/.cache/torch)."
        )
        self.path = path


class VGG19Features(nn.Module):
    """The convolutional part of VGG-19; `state_dict` keys are torchvision's `features.N.*`.

    `forward(x, layers)` takes RGB in [-1, 1], applies ImageNet mean/std normalisation, and
    returns the requested post-ReLU activations, stopping at the deepest one requested.
    """

    def __init__(self) -> None:
        super().__init__()
        modules: list[nn.Module] = []
        c_in = 3
        for v in _CFG:
            if v == "M":
                modules.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                assert isinstance(v, int)
                # Not in-place: returned activations must survive the following layers.
                modules += [nn.Conv2d(c_in, v, kernel_size=3, padding=1), nn.ReLU(inplace=False)]
                c_in = v
        self.features = nn.Sequential(*modules)
        # Non-persistent: the state_dict holds exactly torchvision's feature keys.
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: Tensor, layers: Sequence[str] = DFI_LAYERS) -> dict[str, Tensor]:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"VGG19Features wants (B, 3, H, W) RGB in [-1, 1], got {tuple(x.shape)}")
        unknown = [name for name in layers if name not in LAYER_INDEX]
        if unknown or not layers:
            raise ValueError(f"unknown VGG-19 layers {unknown or layers}; choose from {list(LAYER_INDEX)}")
        wanted = {LAYER_INDEX[name]: name for name in layers}
        last = max(wanted)
        h = ((x + 1) / 2 - self.mean) / self.std
        out: dict[str, Tensor] = {}
        for i, module in enumerate(self.features):
            h = module(h)
            if i in wanted:
                out[wanted[i]] = h
            if i == last:
                break
        return {name: out[name] for name in layers}


def load_vgg19(
    device: torch.device | str | None = None,
    weights_path: str | Path | None = None,
    required: bool = True,
) -> VGG19Features | None:
    """Build VGG-19 with torchvision-format ImageNet weights, frozen and in eval mode.

    `weights_path` defaults to `vgg_weights_path()`. When the file is absent this raises
    `MissingWeightsError` if `required`, else returns None (callers record the absence).
    Classifier keys in the checkpoint are ignored; every feature key must be present.
    """
    path = Path(weights_path) if weights_path is not None else vgg_weights_path()
    if not path.is_file():
        if required:
            raise MissingWeightsError(path)
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not a state_dict (got {type(state).__name__})")
    model = VGG19Features()
    features = {k: v for k, v in state.items() if k.startswith("features.")}
    model.load_state_dict(features, strict=True)
    model.eval().requires_grad_(False)
    return model.to(device) if device is not None else model

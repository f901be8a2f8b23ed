"""On-device kornia augmentations for the training stages.

Geometric transforms (a small random affine, and a horizontal flip where it is safe) are
sampled once and applied identically to a photo and its sketch, so the pair stays
registered. Photometric ones (colour jitter) touch photos only: sketches are binary ink.

Flip policy: a horizontal flip turns an image-left eye into an image-right eye, so flipping
eye1/eye2 crops would teach each eye's networks the other eye's shape; flips are therefore
used only for the mirror-symmetric parts (nose, mouth, bg). The global fusion stage uses no
geometric augmentation at all: the part crops, the fixed paste boxes and the whole-face
target must stay aligned, so it gets photometric jitter with one set of parameters shared
by all parts of the same face.

Random parameters come from torch's global RNG, which the trainer seeds and stores in its
checkpoints, so augmented runs repeat and resume exactly on CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import kornia.augmentation as K
import torch
from kornia.geometry.transform import warp_affine

SYMMETRIC_PARTS = frozenset({"nose", "mouth", "bg"})


@dataclass
class AugmentConfig:
    enabled: bool = True
    affine_p: float = 0.5  # probability of the random affine per sample
    degrees: float = 4.0
    translate: float = 0.04  # fraction of the crop size
    scale: float = 0.05  # zoom range 1 +- scale
    hflip: bool = True  # only ever applied to SYMMETRIC_PARTS
    jitter_p: float = 0.5
    brightness: float = 0.1
    contrast: float = 0.1
    saturation: float = 0.1
    hue: float = 0.02


class Augmenter(torch.nn.Module):
    """Augmentations for one part; all methods take and return tensors in [-1, 1]."""

    def __init__(self, cfg: AugmentConfig, part: str) -> None:
        super().__init__()
        self.cfg = cfg
        self.part = part
        affine = dict(
            degrees=cfg.degrees, translate=(cfg.translate, cfg.translate),
            scale=(1 - cfg.scale, 1 + cfg.scale), p=cfg.affine_p,
        )
        # Photos pad by reflection; sketch ink pads with zeros (= white paper). A sketch paired
        # with a photo replays the photo's sampled transform; a lone sketch samples its own.
        self.affine_photo = K.RandomAffine(**affine, padding_mode="reflection")
        self.affine_ink = K.RandomAffine(**affine, padding_mode="zeros")
        self.flip_photo = K.RandomHorizontalFlip(p=0.5)
        self.flip_ink = K.RandomHorizontalFlip(p=0.5)
        self.use_flip = cfg.hflip and part in SYMMETRIC_PARTS
        self.jitter = K.ColorJitter(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue, p=cfg.jitter_p)

    @property
    def active(self) -> bool:
        return self.cfg.enabled

    def geometric(
        self, photo: torch.Tensor | None = None, sketch: torch.Tensor | None = None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Same random affine (and flip) for a photo batch and its sketch batch; either may be None."""
        if not self.cfg.enabled:
            return photo, sketch
        ref = photo if photo is not None else sketch
        assert ref is not None and ref.ndim == 4, "expected (B,C,H,W) images"
        if sketch is not None:
            ink = (1.0 - sketch) * 0.5  # ink in [0,1]: zero padding adds white paper
        if photo is None:
            ink = self.affine_ink(ink)
            if self.use_flip:
                ink = self.flip_ink(ink)
            return None, 1.0 - 2.0 * ink
        photo = self.affine_photo(photo)
        if sketch is not None:
            # Replay the photo's sampled matrices with the functional warp kornia uses inside
            # RandomAffine (a second augmentation call would cost as much again).
            m = self.affine_photo.transform_matrix
            assert m is not None and m.shape == (ref.shape[0], 3, 3), "affine parameters missing"
            ink = warp_affine(ink, m[:, :2].to(ink.dtype), ink.shape[-2:], mode="bilinear",
                              padding_mode="zeros", align_corners=False)
        if self.use_flip:
            photo = self.flip_photo(photo)
            if sketch is not None:
                flipped = self.flip_photo._params["batch_prob"].to(ink.device).view(-1, 1, 1, 1) > 0.5
                ink = torch.where(flipped, ink.flip(-1), ink)
        return photo, None if sketch is None else 1.0 - 2.0 * ink

    def photometric(self, photo: torch.Tensor, params: dict | None = None) -> torch.Tensor:
        """Colour jitter on a photo batch; pass `params` (from `last_jitter_params`) to replay."""
        if not self.cfg.enabled:
            return photo
        x = (photo + 1.0) * 0.5
        x = self.jitter(x, params=params) if params is not None else self.jitter(x)
        return x * 2.0 - 1.0

    @property
    def last_jitter_params(self) -> dict:
        return self.jitter._params

    def photo(self, photo: torch.Tensor) -> torch.Tensor:
        """Geometric + photometric augmentation of a photo batch on its own."""
        photo, _ = self.geometric(photo=photo)
        assert photo is not None
        return self.photometric(photo)

    def pair(self, photo: torch.Tensor, sketch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A registered photo/sketch pair: shared geometry, jitter on the photo only."""
        photo_g, sketch_g = self.geometric(photo=photo, sketch=sketch)
        assert photo_g is not None and sketch_g is not None
        return self.photometric(photo_g), sketch_g

    def sketch(self, sketch: torch.Tensor) -> torch.Tensor:
        _, out = self.geometric(sketch=sketch)
        assert out is not None
        return out


    def faces(self, photos: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Colour jitter with one parameter set per face, shared by all its parts (fusion)."""
        if not self.cfg.enabled:
            return photos
        out: dict[str, torch.Tensor] = {}
        params = None
        for part, x in photos.items():
            out[part] = self.photometric(x, params=params)
            params = self.last_jitter_params
        return out

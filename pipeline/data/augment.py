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

Photos from anywhere (`PhotoShift`): every user's photo comes from another camera and light
than the London studio's, so photos also get the shifts of the `shifts` stage's evaluation
faces, drawn at random: white balance (per-channel gains in linear light), exposure and gamma,
a light from one side (a gain ramp), and camera degradations (blur, sensor noise). The light
and colour shifts are applied to a photo and to its reconstruction target alike (the model must
carry any photo's colours); the degradations to the network's input only (nobody wants the
noise back). The stage-2 target, the sketch latent, is never shifted: geometry must not move
with the light. Whole faces (the bg part, fusion) may also get another backdrop colour: the
studio's flat grey is keyed out by colour outside the head.

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
    # PhotoShift: each component applied to a sample with its probability (0 = off)
    cast_p: float = 0.0
    cast: float = 0.25  # std of the log channel gains in linear light (warm/cool/green/magenta casts)
    exposure_p: float = 0.0
    exposure: float = 1.2  # stops, uniform in +-exposure
    gamma: float = 0.3  # log gamma, uniform in +-gamma
    ramp_p: float = 0.0
    ramp: float = 0.6  # largest gain slope across the crop (a side light)
    blur_p: float = 0.0
    blur: float = 1.5  # largest Gaussian sigma in px at 128 px faces (scales with the crop's face size)
    noise_p: float = 0.0
    noise: float = 0.06  # largest noise std, images in [0, 1]
    backdrop_p: float = 0.0  # whole faces (bg, fusion) only: the flat studio backdrop repainted another colour
    backdrop_tolerance: float = 0.12  # max channel distance (images in [-1, 1]) from the border's colour that is backdrop

    @property
    def shifts(self) -> bool:
        return self.enabled and max(self.cast_p, self.exposure_p, self.ramp_p, self.blur_p, self.noise_p,
                                    self.backdrop_p) > 0


def _draw(n: int, p: float) -> torch.Tensor:
    """(n,) bool: which samples get a component (CPU draws: the same on any device)."""
    return torch.rand(n) < p


class PhotoShift(torch.nn.Module):
    """Shifts of real photos' light and camera on a batch (B,3,H,W) in [-1, 1].

    `sample(n, face_size)` draws one parameter set per sample; `light(x, params)` applies the
    colour and light part (input and target alike), `degrade(x, params)` the camera part (the
    input only). Parameters come from torch's global RNG on the CPU, so runs repeat and
    resume exactly on any device."""

    def __init__(self, cfg: AugmentConfig) -> None:
        super().__init__()
        self.cfg = cfg

    def sample(self, n: int, face_size: float = 1.0) -> dict[str, torch.Tensor]:
        """face_size: the crop's scale relative to a 128 px face (pixel sizes scale with it)."""
        c = self.cfg
        u = lambda lo, hi: lo + (hi - lo) * torch.rand(n)  # noqa: E731
        return {
            "gains": torch.where(_draw(n, c.cast_p)[:, None], torch.randn(n, 3) * c.cast, torch.zeros(n, 3)).exp(),
            "stops": torch.where(_draw(n, c.exposure_p), u(-c.exposure, c.exposure), torch.zeros(n)),
            "gamma": torch.where(_draw(n, c.exposure_p), u(-c.gamma, c.gamma), torch.zeros(n)).exp(),
            "ramp": torch.where(_draw(n, c.ramp_p), u(0, c.ramp), torch.zeros(n)),
            "angle": u(-torch.pi, torch.pi),
            "blur": torch.where(_draw(n, c.blur_p), u(0.3, c.blur) * face_size, torch.zeros(n)),
            "noise": torch.where(_draw(n, c.noise_p), u(0, c.noise), torch.zeros(n)),
            "noise_seed": torch.randint(0, 2**31 - 1, (1,)),
            "backdrop": _draw(n, c.backdrop_p),
            "backdrop_rgb": torch.rand(n, 3) * 2 - 1,
        }

    def light(self, x: torch.Tensor, p: dict[str, torch.Tensor], whole_face: bool = False) -> torch.Tensor:
        """Light and colour; `whole_face` (an aligned face, not a part crop) may also get a new backdrop."""
        dev, dt = x.device, x.dtype
        if whole_face and bool(p["backdrop"].any()):
            x = self.backdrop(x, p)
        lin = ((x + 1) * 0.5).clamp(0, 1) ** 2.2
        gain = p["gains"].to(dev, dt)[:, :, None, None] * (2.0 ** p["stops"].to(dev, dt))[:, None, None, None]
        h, w = x.shape[-2:]
        yy = torch.linspace(-1, 1, h, device=dev, dtype=dt)[:, None]
        xx = torch.linspace(-1, 1, w, device=dev, dtype=dt)[None, :]
        a = p["angle"].to(dev, dt)[:, None, None]
        ramp = 1 + p["ramp"].to(dev, dt)[:, None, None] * (xx * a.cos() + yy * a.sin())
        lin = (lin * gain * ramp.clamp(0.25, 2.0)[:, None]).clamp(0, 1)
        out = lin ** (p["gamma"].to(dev, dt)[:, None, None, None] / 2.2)
        return out * 2 - 1

    def backdrop(self, x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        """The studio's flat backdrop repainted: pixels within `backdrop_tolerance` of the median
        colour of the image's border and outside the central head ellipse take another colour
        (soft edge). A plain colour key: London's backdrop is flat grey."""
        b, _, h, w = x.shape
        border = torch.cat([x[..., :2, :].flatten(2), x[..., -2:, :].flatten(2), x[..., :, :2].flatten(2),
                            x[..., :, -2:].flatten(2)], 2)
        key = border.median(dim=2).values[:, :, None, None]
        near = ((x - key).abs().amax(1, keepdim=True) < self.cfg.backdrop_tolerance).to(x.dtype)
        yy = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype)[:, None]
        xx = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype)[None, :]
        head = ((xx / 0.62) ** 2 + ((yy - 0.12) / 0.85) ** 2) < 1  # face, neck and most hair stay
        mask = near * (~head).to(x.dtype)
        k = max(3, (h // 32) | 1)
        mask = torch.nn.functional.avg_pool2d(mask, k, stride=1, padding=k // 2, count_include_pad=False)
        mask = mask * p["backdrop"].to(x.device, x.dtype)[:, None, None, None]
        colour = p["backdrop_rgb"].to(x.device, x.dtype)[:, :, None, None]
        return x * (1 - mask) + colour * mask

    def degrade(self, x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        sigma = p["blur"].to(x.device, x.dtype)
        if bool((sigma > 0).any()):
            x = _gaussian_blur(x, sigma)
        std = p["noise"].to(x.device, x.dtype)
        if bool((std > 0).any()):
            g = torch.Generator().manual_seed(int(p["noise_seed"]))
            noise = torch.randn(x.shape, generator=g).to(x.device, x.dtype)
            x = (x + 2 * std[:, None, None, None] * noise).clamp(-1, 1)
        return x


def _gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-sample Gaussian blur (sigma (B,), 0 = untouched), one grouped separable convolution."""
    b, ch, h, w = x.shape
    radius = max(1, int(torch.ceil(3 * sigma.max()).item()))
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    s = sigma.clamp_min(1e-3)[:, None]
    k = torch.exp(-0.5 * (t[None] / s) ** 2)
    k = torch.where(sigma[:, None] > 0, k, (t[None] == 0).to(x.dtype))
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(ch, 0)  # (B*C, K)
    y = torch.nn.functional.pad(x.reshape(1, b * ch, h, w), (radius, radius, radius, radius), mode="reflect")
    y = torch.nn.functional.conv2d(y, k[:, None, None, :], groups=b * ch)
    y = torch.nn.functional.conv2d(y, k[:, None, :, None], groups=b * ch)
    return y.reshape(b, ch, h, w)


class Augmenter(torch.nn.Module):
    """Augmentations for one part; all methods take and return tensors in [-1, 1]."""

    def __init__(self, cfg: AugmentConfig, part: str, resolution: int = 128) -> None:
        super().__init__()
        self.cfg = cfg
        self.part = part
        self.face_size = resolution / 128  # PhotoShift's pixel sizes are for 128 px faces
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
        self.shift = PhotoShift(cfg)

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

    def photo(self, photo: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Geometric + photometric augmentation of a photo batch on its own: (network input,
        reconstruction target). Both carry the same light; only the input is degraded."""
        photo, _ = self.geometric(photo=photo)
        assert photo is not None
        return self.shifted(self.photometric(photo))

    def shifted(self, photo: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(input, target) of a photo batch under PhotoShift: light on both, camera on the input."""
        if not self.cfg.shifts:
            return photo, photo
        p = self.shift.sample(photo.shape[0], self.face_size)
        target = self.shift.light(photo, p, whole_face=self.part == "bg")
        return self.shift.degrade(target, p), target

    def pair(self, photo: torch.Tensor, sketch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A registered photo/sketch pair: shared geometry, jitter and PhotoShift on the photo only."""
        photo_g, sketch_g = self.geometric(photo=photo, sketch=sketch)
        assert photo_g is not None and sketch_g is not None
        return self.shifted(self.photometric(photo_g))[0], sketch_g

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

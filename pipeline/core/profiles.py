"""Model/data profiles: one param (`profile` in params.yaml) picks resolution and network sizes.

`paper` reproduces the released DeepFaceEditing shapes exactly (512 px, 1024-ch geometry
latents, ~1.23 B parameters); `small` trains on 2 CPU cores in minutes; `micro` (tiny
networks at 128 px: smaller crops give 1x1 latents) exists for tests and CI smoke runs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Profile:
    name: str
    resolution: int  # aligned face size; component boxes scale linearly from 512
    ngf: int  # geometry encoder stem width; bottleneck = ngf * 2**n_down
    n_down: int  # stride-2 convs in the geometry encoder (paper 4 -> S/16 latents)
    enc_sketch_blocks: int  # residual blocks after E_sketch's downsampling
    enc_image_blocks: int  # residual blocks after E_image's downsampling
    gen_blocks: int  # AdaIN residual blocks at the start of the part generator
    app_ngf: int  # appearance encoder stem width (paper 16 -> code of 4 * app_ngf = 64)
    fuse_ngf: int  # global fusion generator width
    fuse_down: int  # global fusion downsamplings
    fuse_blocks: int  # global fusion residual blocks
    p2s_ngf: int  # photo-to-sketch generator width
    p2s_blocks: int  # photo-to-sketch generator residual blocks
    disc_ndf: int  # PatchGAN discriminator width
    disc_layers: int  # stride-2 layers per PatchGAN scale
    disc_scales: int  # number of discriminator scales

    @property
    def latent_channels(self) -> int:
        return self.ngf * 2**self.n_down

    @property
    def app_code(self) -> int:
        return self.app_ngf * 4

    def to_dict(self) -> dict:
        return asdict(self)


PROFILES: dict[str, Profile] = {
    "paper": Profile(
        name="paper", resolution=512, ngf=64, n_down=4, enc_sketch_blocks=1,
        enc_image_blocks=6, gen_blocks=4, app_ngf=16, fuse_ngf=64, fuse_down=4,
        fuse_blocks=4, p2s_ngf=32, p2s_blocks=9, disc_ndf=64, disc_layers=3, disc_scales=3,
    ),
    "small": Profile(
        name="small", resolution=128, ngf=16, n_down=4, enc_sketch_blocks=1,
        enc_image_blocks=2, gen_blocks=2, app_ngf=8, fuse_ngf=16, fuse_down=3,
        fuse_blocks=2, p2s_ngf=8, p2s_blocks=2, disc_ndf=16, disc_layers=2, disc_scales=2,
    ),
    "micro": Profile(
        name="micro", resolution=128, ngf=4, n_down=4, enc_sketch_blocks=1,
        enc_image_blocks=1, gen_blocks=1, app_ngf=4, fuse_ngf=8, fuse_down=2,
        fuse_blocks=1, p2s_ngf=4, p2s_blocks=1, disc_ndf=8, disc_layers=2, disc_scales=2,
    ),
}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(
            f"unknown profile {name!r}; choose one of {sorted(PROFILES)} (params.yaml: profile)"
        ) from None


# The paper's component boxes on a 512 px aligned face: part -> (x0, y0, size).
BOXES_512: dict[str, tuple[int, int, int]] = {
    "eye1": (108, 156, 128),
    "eye2": (255, 156, 128),
    "nose": (182, 232, 160),
    "mouth": (169, 301, 192),
    "bg": (0, 0, 512),
}


def part_boxes(resolution: int, multiple: int = 16) -> dict[str, tuple[int, int, int]]:
    """The component boxes scaled to `resolution`: part -> (x0, y0, size).

    Sizes are rounded to a multiple of `multiple` (the geometry encoder's total stride) so a
    part's latent decodes back to exactly its crop size; boxes keep their centre and stay
    inside the face.
    """
    s = resolution / 512
    boxes = {}
    for part, (x, y, n) in BOXES_512.items():
        size = max(multiple, int(n * s / multiple + 0.5) * multiple)
        cx, cy = (x + n / 2) * s, (y + n / 2) * s
        x0 = min(max(0, round(cx - size / 2)), resolution - size)
        y0 = min(max(0, round(cy - size / 2)), resolution - size)
        boxes[part] = (x0, y0, size)
    return boxes


# Fusion pastes only the top 124 of the nose's 160 rows (the rest overlaps the mouth).
NOSE_PASTE_FRACTION = 124 / 160

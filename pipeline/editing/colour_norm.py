"""Colour normalisation in and back out: an Editor that sees every photo within the light it learned.

A photo's colour statistics (CIE Lab mean and spread of its central face region) that lie
outside the range of the training faces' (mean +- k std per statistic, `models/colour_range.json`
from the `colour_range` stage) are moved to the nearest edge of that range before the
encoders see the photo, and the render is moved back to the photo's own statistics. A photo
under a cast or an exposure the networks never saw is thus rendered in light they know, and its
own cast and exposure travel around them; a photo inside the range is left exactly as it is.

Moving every photo to the training mean instead (the first version, k = 0) carried the casts
but cost 1.9 dB of PSNR on the clean val faces (README "Photos from anywhere").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

STATS_KEY = "_lab_stats"  # rides along the appearance codes: (N,6) Lab mean and std of the photo

from pipeline.editing.compose import FACE_REGION  # the central face: skin, eyes, nose, mouth


def lab_stats(x: torch.Tensor) -> torch.Tensor:
    """(N,6) Lab mean and std of the central face region of (N,3,R,R) images in [-1, 1]."""
    import kornia.color

    r = x.shape[-1]
    left, top, right, bottom = (int(round(f * r)) for f in FACE_REGION)
    lab = kornia.color.rgb_to_lab(((x.float() + 1) / 2).clamp(0, 1))[..., top:bottom, left:right].flatten(2)
    return torch.cat([lab.mean(2), lab.std(2).clamp_min(1.0)], 1)


def move_stats(x: torch.Tensor, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """(N,3,R,R) images in [-1, 1] with their Lab statistics moved from `src` to `dst` ((N,6) each)."""
    import kornia.color

    lab = kornia.color.rgb_to_lab(((x.float() + 1) / 2).clamp(0, 1))
    m0, s0, m1, s1 = (t[:, :, None, None] for t in (src[:, :3], src[:, 3:], dst[:, :3], dst[:, 3:]))
    out = kornia.color.lab_to_rgb((lab - m0) / s0 * s1 + m1).clamp(0, 1)
    return (out * 2 - 1).to(x.dtype)


class ColourNormalised:
    """Wraps an `Editor`: the same interface; photos whose statistics leave [low, high] ((6,)
    each) are moved into it on the way in, and renders moved back to their appearance photo's
    own statistics on the way out. Samples inside the range pass through untouched."""

    def __init__(self, editor, low: np.ndarray | torch.Tensor, high: np.ndarray | torch.Tensor) -> None:
        self.editor = editor
        self.low = torch.as_tensor(np.asarray(low, np.float32))
        self.high = torch.as_tensor(np.asarray(high, np.float32))

    def __getattr__(self, name):  # profile, boxes, device, fusion, sketch_from_geometry, ...
        return getattr(self.editor, name)

    def _normalised(self, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(faces moved into the range, (N,12) their own statistics then the moved ones)."""
        stats = lab_stats(faces)
        target = torch.maximum(torch.minimum(stats, self.high.to(stats.device)), self.low.to(stats.device))
        outside = (target != stats).any(1)
        if bool(outside.any()):
            moved = move_stats(faces[outside], stats[outside], target[outside])
            faces = faces.clone()
            faces[outside] = moved
        return faces, torch.cat([stats, target], 1)

    def geometry_from_photo(self, faces: torch.Tensor):
        return self.editor.geometry_from_photo(self._normalised(faces)[0])

    def appearance_codes(self, faces: torch.Tensor):
        x, stats = self._normalised(faces)
        codes = dict(self.editor.appearance_codes(x))
        codes[STATS_KEY] = stats
        return codes

    def render(self, geometry, codes):
        plain = {k: v for k, v in codes.items() if k != STATS_KEY}
        out = self.editor.render(geometry, plain)
        stats = codes.get(STATS_KEY)
        if stats is None:
            return out
        own, moved = stats[:, :6].to(out.device), stats[:, 6:].to(out.device)
        back = (own != moved).any(1)
        if bool(back.any()):
            out = out.clone()
            out[back] = move_stats(out[back], moved[back], own[back])
        return out


RANGE_FILE = "colour_range.json"


@dataclass(frozen=True)
class ColourRangeConfig:
    """params.yaml `colour_range:`."""

    k: float = 1.0  # photos are moved into mean +- k std of the training faces' statistics


def colour_range(faces: np.ndarray, k: float, batch_size: int = 64) -> dict:
    """The training faces' light: mean and std of each face's Lab statistics over (N,R,R,3)
    uint8 faces, and the range mean +- k std that photos are moved into."""
    from pipeline.core.tensors import faces_to_tensor

    stats = torch.cat([lab_stats(faces_to_tensor(np.ascontiguousarray(faces[a:a + batch_size]), torch.device("cpu")))
                       for a in range(0, len(faces), batch_size)])
    mean, std = stats.mean(0), stats.std(0)
    return {"k": k, "n_faces": len(faces), "mean": mean.tolist(), "std": std.tolist(),
            "low": (mean - k * std).tolist(), "high": (mean + k * std).tolist(),
            "stats": "Lab mean L, a, b then std L, a, b of the central face region (colour_norm.FACE_REGION)"}


def with_colour_range(editor, models_dir):
    """`editor` wrapped in ColourNormalised when `models_dir` holds the training faces' colour
    range (the `colour_range` stage), else `editor` itself (e.g. the authors' weights)."""
    import json
    from pathlib import Path

    path = Path(models_dir) / RANGE_FILE
    if not path.exists():
        return editor
    r = json.loads(path.read_text())
    return ColourNormalised(editor, r["low"], r["high"])

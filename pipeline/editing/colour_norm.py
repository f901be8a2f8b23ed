"""Colour normalisation in and back out: an Editor that sees every photo in the training faces' light.

A photo's colour statistics (CIE Lab mean and spread of its central face region) are moved to
the training faces' average before the encoders see it, and the render is moved back to the
statistics of the photo its appearance came from. The networks then only ever see London's
light; the photo's own cast, exposure and skin tone travel around them, exactly. Measured on
the shifted val faces against the plain editor (README "Photos from anywhere"); `edit.colour_norm`
switches it on for every edit path and the evaluation.
"""

from __future__ import annotations

import numpy as np
import torch

STATS_KEY = "_lab_stats"  # rides along the appearance codes: (N,6) Lab mean and std of the photo

# The central face region of an FFHQ-aligned crop, fractions (left, top, right, bottom): skin,
# eyes, nose and mouth, little hair or background.
FACE_REGION = (0.28, 0.34, 0.72, 0.84)


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
    """Wraps an `Editor`: the same interface, photos normalised to `canonical` (6,) on the way
    in, renders moved back to their appearance photo's statistics on the way out."""

    def __init__(self, editor, canonical: np.ndarray | torch.Tensor) -> None:
        self.editor = editor
        self.canonical = torch.as_tensor(np.asarray(canonical, np.float32))

    def __getattr__(self, name):  # profile, boxes, device, fusion, sketch_from_geometry, ...
        return getattr(self.editor, name)

    def _normalised(self, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        stats = lab_stats(faces)
        canon = self.canonical.to(faces.device).expand_as(stats)
        return move_stats(faces, stats, canon), stats

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
        return move_stats(out, self.canonical.to(out.device).expand_as(stats), stats.to(out.device))


def canonical_stats(faces: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """(6,) the mean Lab statistics of (N,R,R,3) uint8 training faces: the light the networks learned."""
    from pipeline.core.tensors import faces_to_tensor

    stats = [lab_stats(faces_to_tensor(faces[a:a + batch_size], torch.device("cpu")))
             for a in range(0, len(faces), batch_size)]
    return torch.cat(stats).mean(0).numpy()

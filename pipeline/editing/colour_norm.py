"""Colour normalisation in and back out: an Editor that sees every photo within the light it learned.

A photo's light statistics (CIE Lab mean and spread of its central face region, and the
lightness slope across it: a light from one side) that lie outside the range of the training
faces' (mean +- k std per statistic, `models/colour_range.json` from the `colour_range` stage)
are moved to the nearest edge of that range before the encoders see the photo, and the render
is moved back to the photo's own statistics. (The slope took side-lit val faces from 15.3 to
19.6 dB, pooled shifted val PSNR 21.21 -> 21.61, clean unchanged.) A photo
under a cast or an exposure the networks never saw is thus rendered in light they know, and its
own cast and exposure travel around them; a photo inside the range is left exactly as it is.

Where the move is made (`region`): a cast or an exposure lies on the whole crop, backdrop
included, so the whole crop is moved; but statistics outside the range also come from people
(a dark skin is "far" from London's mean), and moving a white backdrop with such a face clips
it, so the move back greys it. `auto` moves the whole crop unless that pushes more than 5 % of
the backdrop out of gamut, then the face only (face_weight). On val: clean PSNR 21.50 (whole
crop always), 21.83 (face only), 22.10 (auto), 21.93 without the wrapper.

Moving every photo to the training mean instead (the first version, k = 0) carried the casts
but cost 1.9 dB of PSNR on the clean val faces (README "Photos from anywhere").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

STATS_KEY = "_lab_stats"  # rides along the appearance codes: (N,17) the photo's statistics, the moved ones, whole-crop flag
REGIONS = ("auto", "face", "all")

from pipeline.editing.compose import FACE_REGION  # the central face: skin, eyes, nose, mouth


N_STATS = 8  # Lab means (3), Lab spreads (3), the lightness slope across the face (x, y)


def _plane(r: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(R,R) x and y of the crop, centred on FACE_REGION and in units of its half-size: a
    lightness slope of 1 rises by 1 L unit from the face's centre to its edge."""
    left, top, right, bottom = FACE_REGION
    t = (torch.arange(r, device=device, dtype=torch.float32) + 0.5) / r
    x = (t - (left + right) / 2) / ((right - left) / 2)
    y = (t - (top + bottom) / 2) / ((bottom - top) / 2)
    return x[None, :].expand(r, r), y[:, None].expand(r, r)


def lab_stats(x: torch.Tensor) -> torch.Tensor:
    """(N,8) statistics of the central face region of (N,3,R,R) images in [-1, 1]: Lab mean;
    Lab spread (lightness: around its fitted plane); lightness slope in x and in y (a light
    from one side)."""
    import kornia.color

    r = x.shape[-1]
    left, top, right, bottom = (int(round(f * r)) for f in FACE_REGION)
    lab = kornia.color.rgb_to_lab(((x.float() + 1) / 2).clamp(0, 1))[..., top:bottom, left:right].flatten(2)
    px, py = (c[top:bottom, left:right].flatten() for c in _plane(r, x.device))
    px, py = px - px.mean(), py - py.mean()
    light = lab[:, 0] - lab[:, 0].mean(1, keepdim=True)
    sx, sy = (light * px).sum(1) / (px * px).sum(), (light * py).sum(1) / (py * py).sum()
    spread = lab.std(2)
    spread[:, 0] = (light - sx[:, None] * px - sy[:, None] * py).std(1)
    return torch.cat([lab.mean(2), spread.clamp_min(1.0), sx[:, None], sy[:, None]], 1)


def face_weight(r: int, device=None, reach: float = 0.12) -> torch.Tensor:
    """(1,1,R,R) in [0,1]: 1 over FACE_REGION (where the statistics are taken), falling to 0
    within `reach` of the crop beyond it, before most of the backdrop. The move is made (and
    undone) under this weight only: the statistics describe the face, and moving a bright
    backdrop with them clips it (a dark-skinned val face moved toward London's mean and back
    came out on a grey backdrop, 22.1 -> 14.6 dB)."""
    left, top, right, bottom = FACE_REGION
    t = torch.linspace(0, 1, r, device=device)
    dx = (left - t).clamp_min(0) + (t - right).clamp_min(0)
    dy = (top - t).clamp_min(0) + (t - bottom).clamp_min(0)
    dist = (dy[:, None] ** 2 + dx[None, :] ** 2).sqrt()
    return (1 - dist / reach).clamp(0, 1)[None, None]


def move_stats(x: torch.Tensor, src: torch.Tensor, dst: torch.Tensor, weight: torch.Tensor | None = None,
               clip_share: bool = False):
    """(N,3,R,R) images in [-1, 1] with their statistics (lab_stats) moved from `src` to `dst`
    ((N,8) each), under `weight` ((N or 1,1,R,R) in [0,1], default everywhere). With `clip_share`, also
    (N,) the share of pixels outside face_weight that the whole-crop move pushes out of gamut."""
    import kornia.color

    rgb = ((x.float() + 1) / 2).clamp(0, 1)
    lab = kornia.color.rgb_to_lab(rgb)
    m0, s0, m1, s1 = (t[:, :, None, None] for t in (src[:, :3], src[:, 3:6], dst[:, :3], dst[:, 3:6]))
    # Lightness around its plane: the slope goes out with the source's and in with the target's,
    # so that moving back (src and dst swapped) undoes the move exactly.
    px, py = _plane(x.shape[-1], x.device)

    def ramp(st: torch.Tensor) -> torch.Tensor:  # (N,3,R,R): the slope's plane on L, nothing on a and b
        plane = st[:, 6, None, None] * px + st[:, 7, None, None] * py
        return torch.stack([plane, torch.zeros_like(plane), torch.zeros_like(plane)], 1)

    raw = kornia.color.lab_to_rgb((lab - ramp(src) - m0) / s0 * s1 + m1 + ramp(dst), clip=False)
    out = raw.clamp(0, 1)
    if weight is not None:
        out = rgb + weight.to(out) * (out - rgb)
    out = (out * 2 - 1).to(x.dtype)
    if not clip_share:
        return out
    off = ((raw < -0.02) | (raw > 1.02)).any(1).float()  # (N,R,R)
    backdrop = face_weight(x.shape[-1], x.device)[:, 0] < 0.5
    return out, (off * backdrop).flatten(1).sum(1) / backdrop.sum()


def _padded(v, fill: float) -> torch.Tensor:
    """(N_STATS,) bounds; ranges written before the slopes existed get `fill` for them (any slope in range)."""
    v = torch.as_tensor(np.asarray(v, np.float32))
    return torch.cat([v, torch.full((N_STATS - len(v),), fill)]) if len(v) < N_STATS else v


class ColourNormalised:
    """Wraps an `Editor`: the same interface; photos whose statistics leave [low, high] ((8,)
    each, lab_stats) are moved into it on the way in, and renders moved back to their appearance photo's
    own statistics on the way out. Samples inside the range pass through untouched."""

    def __init__(self, editor, low: np.ndarray | torch.Tensor, high: np.ndarray | torch.Tensor,
                 trigger_low: np.ndarray | torch.Tensor | None = None,
                 trigger_high: np.ndarray | torch.Tensor | None = None, region: str = "auto",
                 max_clipped: float = 0.05, move_geometry: bool = True) -> None:
        if region not in REGIONS:
            raise ValueError(f"region must be one of {REGIONS}, got {region!r}")
        self.editor = editor
        # face: moved under face_weight, the backdrop left as it is; all: the whole crop; auto:
        # the whole crop unless that pushes more than `max_clipped` of the backdrop out of gamut.
        self.region, self.max_clipped = region, max_clipped
        self.move_geometry = move_geometry  # False: the geometry encoder sees the photo as it is
        self.low, self.high = _padded(low, -1e6), _padded(high, 1e6)
        # A photo is moved only once a statistic leaves [trigger_low, trigger_high] (wider than
        # [low, high]): photos from the training faces' own light pass untouched.
        self.trigger_low = self.low if trigger_low is None else _padded(trigger_low, -1e6)
        self.trigger_high = self.high if trigger_high is None else _padded(trigger_high, 1e6)

    def __getattr__(self, name):  # profile, boxes, device, fusion, sketch_from_geometry, ...
        return getattr(self.editor, name)

    def _weight(self, x: torch.Tensor, whole: torch.Tensor) -> torch.Tensor:
        """(N,1,R,R): the whole crop for samples whose `whole` flag is set, else the face only."""
        face = face_weight(x.shape[-1], x.device)
        return torch.where(whole.to(x.device).bool()[:, None, None, None], torch.ones_like(face), face)

    def _normalised(self, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(faces moved into the range, (N,17) their own statistics, the moved ones, and 1 where
        the whole crop was moved, 0 where the face only)."""
        stats = lab_stats(faces)
        dev = stats.device
        outside = ((stats < self.trigger_low.to(dev)) | (stats > self.trigger_high.to(dev))).any(1)
        target = torch.where(outside[:, None], torch.maximum(torch.minimum(stats, self.high.to(dev)), self.low.to(dev)), stats)
        whole = torch.full((len(faces),), float(self.region != "face"), device=dev)
        if bool(outside.any()):
            if self.region == "auto":  # the whole crop (a cast lies on the backdrop too) unless that clips the backdrop
                _, clipped = move_stats(faces[outside], stats[outside], target[outside], clip_share=True)
                whole[outside] = (clipped <= self.max_clipped).float()
            moved = move_stats(faces[outside], stats[outside], target[outside], self._weight(faces[outside], whole[outside]))
            faces = faces.clone()
            faces[outside] = moved
        return faces, torch.cat([stats, target, whole[:, None]], 1)

    def geometry_from_photo(self, faces: torch.Tensor):
        return self.editor.geometry_from_photo(self._normalised(faces)[0] if self.move_geometry else faces)

    def appearance_codes(self, faces: torch.Tensor):
        x, stats = self._normalised(faces)
        codes = dict(self.editor.appearance_codes(x))
        codes[STATS_KEY] = stats
        return codes

    def render(self, geometry, codes, part_features=None):
        plain = {k: v for k, v in codes.items() if k != STATS_KEY}
        out = self.editor.render(geometry, plain, **({"part_features": part_features} if part_features else {}))
        stats = codes.get(STATS_KEY)
        if stats is None:
            return out
        stats = stats.to(out.device)
        own, moved, whole = stats[:, :N_STATS], stats[:, N_STATS:2 * N_STATS], stats[:, 2 * N_STATS]
        back = (own != moved).any(1)
        if bool(back.any()):
            out = out.clone()
            out[back] = move_stats(out[back], moved[back], own[back], self._weight(out[back], whole[back]))
        return out


RANGE_FILE = "colour_range.json"


@dataclass(frozen=True)
class ColourRangeConfig:
    """params.yaml `colour_range:`."""

    k: float = 1.0  # photos' Lab means are moved into mean +- k std of the training faces'
    k_spread: float | None = 1.0  # ... and their Lab spreads into mean +- k_spread std; None: spreads never moved
    trigger: float | None = None  # a photo is moved only when a statistic leaves mean +- trigger std (None: = k)
    region: str = "auto"  # where the move is made and undone: face (face_weight) | all (the crop) | auto (all unless the backdrop clips)
    move_geometry: bool = True  # the geometry encoder sees the moved photo too (False: the photo as it is)


def colour_range(faces: np.ndarray, k: float, k_spread: float | None = None, trigger: float | None = None,
                 region: str = "auto", move_geometry: bool = True, batch_size: int = 64) -> dict:
    """The training faces' light: mean and std of each face's Lab statistics over (N,R,R,3)
    uint8 faces, and the range photos are moved into: mean +- k std for the three Lab means,
    mean +- k_spread std for the three spreads (k_spread None: any spread is in range); a photo
    is moved only once a statistic leaves mean +- trigger std (None: the range itself)."""
    from pipeline.core.tensors import faces_to_tensor

    stats = torch.cat([lab_stats(faces_to_tensor(np.ascontiguousarray(faces[a:a + batch_size]), torch.device("cpu")))
                       for a in range(0, len(faces), batch_size)])
    mean, std = stats.mean(0), stats.std(0)
    width = torch.tensor([k] * 3 + [k if k_spread is None else k_spread] * 3 + [k] * 2)

    def bounds(w: torch.Tensor) -> tuple[list[float], list[float]]:
        low, high = mean - w * std, mean + w * std
        if k_spread is None:  # spreads are >= 1 (lab_stats); 1e6 is beyond any image's
            low[3:6], high[3:6] = 0.0, 1e6
        return low.tolist(), high.tolist()

    low, high = bounds(width)
    out = {"k": k, "k_spread": k_spread, "trigger": trigger, "region": region, "move_geometry": move_geometry,
           "n_faces": len(faces), "mean": mean.tolist(), "std": std.tolist(), "low": low, "high": high}
    if trigger is not None:
        out["trigger_low"], out["trigger_high"] = bounds(torch.maximum(width, torch.full_like(width, trigger)))
    return {**out,
            "stats": "Lab mean L, a, b; spread L (around its plane), a, b; lightness slope x, y of the central "
                     "face region (colour_norm.FACE_REGION, lab_stats)"}


def load_photo_editor(models_dir, profile, device="cpu", dtype=None, runtime="torch"):
    """The editor every command that takes a user's photo uses: the weights under `models_dir`
    (models.editor.load_editor) with the training faces' colour range when the folder has one,
    so a photo in light the networks never saw is moved into their range and back. `dtype`: a
    torch.dtype, or the params/CLI name (auto | bf16 | bf16-fusion | bf16-mixed | fp32, core.config), None:
    fp32. `runtime`: torch, or onnx (ONNX Runtime on the CPU, fp32 but a bf16-fusion net: models.runtime)."""
    import torch

    from pipeline.core.config import resolve_dtypes
    from pipeline.models.editor import load_editor

    fusion_dtype = block_dtype = None
    if isinstance(dtype, str):
        from pipeline.core.config import emulated_bf16_warning
        from pipeline.core.progress import console

        warning = emulated_bf16_warning(dtype, device)
        if warning:
            console.print(f"[yellow]{warning}[/yellow]", soft_wrap=True)
        dtype, fusion_dtype, block_dtype = resolve_dtypes(dtype, device)
    editor = load_editor(models_dir, profile, device, dtype or torch.float32, fusion_dtype=fusion_dtype, runtime=runtime,
                         block_dtype=block_dtype)
    return with_colour_range(editor, models_dir)


def with_colour_range(editor, models_dir):
    """`editor` wrapped in ColourNormalised when `models_dir` holds the training faces' colour
    range (the `colour_range` stage), else `editor` itself (e.g. the authors' weights)."""
    import json
    from pathlib import Path

    path = Path(models_dir) / RANGE_FILE
    if not path.exists():
        return editor
    r = json.loads(path.read_text())
    return ColourNormalised(editor, r["low"], r["high"], r.get("trigger_low"), r.get("trigger_high"),
                            r.get("region", "all"),  # files written before `region` existed moved the whole crop
                            move_geometry=r.get("move_geometry", True))

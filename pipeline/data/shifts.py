"""shifts: the val and test faces as other cameras, rooms and lights would show them.

Every London photo comes from one studio: one camera, one grey background, one light. A
user's photo never does. This stage re-creates each val/test face under the shifts that
ordinary photos bring, so that every headline figure can also be measured out of the studio
(`evaluate` reports them as `val_shifted` / `test_shifted`):

| shift | what it imitates |
|---|---|
| warm, cool, green, magenta | white balance / colour cast of another light (per-channel gains in linear light; warm is the pinker, brighter studio) |
| dark, bright | under- and over-exposure with a gamma change |
| side_light | a light from one side: a gain ramp across the face |
| background | another backdrop colour (the studio's flat grey keyed out) |
| blur_jpeg | a soft lens and a heavily compressed file |
| noise | sensor noise of a small phone camera in dim light |
| framing | another crop: scale, offset and a small rotation before alignment |
| mixed | a phone photo: a random cast, exposure, noise, JPEG and framing together |

Each face is shifted on a canvas around its face (the aligned crop at `canvas_scale` x the
profile's resolution, with a margin for the framing shift), then found again by dlib and
aligned as the pipeline aligns any photo: detection and alignment are part of what a shift
tests. Beside each shifted face the stage stores the clean canvas aligned with the *same*
transform (registered, so colour statistics compare pixel for pixel). Seeded and
deterministic: face k under shift s draws its strengths from `seed`, s and k only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pandas as pd

SHIFTS = ("warm", "cool", "green", "magenta", "dark", "bright", "side_light", "background",
          "blur_jpeg", "noise", "framing", "mixed")

# Linear-light channel gains (R, G, B) at full strength; each face draws 70-100 % of them.
CASTS = {
    "warm": (1.30, 1.02, 0.78),  # tungsten-ish, pinker and brighter (another studio's light)
    "cool": (0.80, 0.98, 1.28),  # shade / overcast daylight
    "green": (0.86, 1.22, 0.86),  # fluorescent tubes
    "magenta": (1.18, 0.84, 1.16),
}
BACKDROPS = ((250, 250, 250), (40, 40, 45), (60, 95, 160), (70, 130, 80), (200, 170, 120), (150, 40, 50))


@dataclass(frozen=True)
class ShiftsConfig:
    """params.yaml `shifts:`."""

    seed: int = 0
    splits: tuple[str, ...] = ("val", "test")
    shifts: tuple[str, ...] = SHIFTS
    canvas_scale: int = 2  # the work canvas holds the aligned crop at this x the profile size (blur, noise, JPEG act there)
    strength: float = 1.0  # scales every shift (0 = the clean faces, realigned)
    upsample: int = 1  # dlib detector upsampling on the canvas

    def validate(self) -> None:
        unknown = set(self.shifts) - set(SHIFTS)
        if unknown:
            raise ValueError(f"unknown shifts {sorted(unknown)} in params.yaml shifts.shifts; choose from {', '.join(SHIFTS)}")
        bad = set(self.splits) - {"train", "val", "test"}
        if bad:
            raise ValueError(f"shifts.splits must name train, val or test, got {sorted(bad)}")


# ---------------------------------------------------------------- photometric helpers --------

def _to_linear(img: np.ndarray) -> np.ndarray:
    return (img.astype(np.float32) / 255.0) ** 2.2


def _to_srgb(lin: np.ndarray) -> np.ndarray:
    return (np.clip(lin, 0.0, 1.0) ** (1 / 2.2) * 255.0 + 0.5).astype(np.uint8)


def colour_cast(img: np.ndarray, gains, strength: float) -> np.ndarray:
    """Per-channel gains in linear light, `strength` of the way from 1."""
    g = np.exp(np.log(np.asarray(gains, np.float32)) * strength)
    return _to_srgb(_to_linear(img) * g)


def exposure(img: np.ndarray, stops: float, gamma: float) -> np.ndarray:
    """Exposure in stops (linear gain 2^stops, highlights clip) and a gamma on the result."""
    lin = np.clip(_to_linear(img) * 2.0 ** stops, 0, 1)
    return _to_srgb(lin ** gamma)


def light_ramp(img: np.ndarray, centre: np.ndarray, half_width: float, angle: float, strength: float) -> np.ndarray:
    """A light from one side: linear-light gain 1 + strength x (position along `angle`) / half_width."""
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    d = ((xx - centre[0]) * np.cos(angle) + (yy - centre[1]) * np.sin(angle)) / half_width
    gain = np.clip(1.0 + strength * d, 0.25, 2.0)[..., None]
    return _to_srgb(_to_linear(img) * gain)


def backdrop(img: np.ndarray, face_hull: np.ndarray, colour, tolerance: float = 22.0) -> np.ndarray:
    """The flat studio backdrop keyed out (Lab distance to the border's median colour, connected
    to the border, never inside the face hull) and replaced by `colour`, with a soft edge."""
    lab = cv2.cvtColor(img, cv2.COLOR_RGB2LAB).astype(np.float32)
    border = np.concatenate([lab[:4].reshape(-1, 3), lab[-4:].reshape(-1, 3),
                             lab[:, :4].reshape(-1, 3), lab[:, -4:].reshape(-1, 3)])
    ref = np.median(border, axis=0)
    close = (np.linalg.norm(lab - ref, axis=2) < tolerance).astype(np.uint8)
    cv2.fillConvexPoly(close, cv2.convexHull(face_hull.astype(np.int32)), 0)
    close = cv2.morphologyEx(close, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    n, labels = cv2.connectedComponents(close)
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    mask = np.isin(labels, edge[edge > 0]).astype(np.float32)
    mask = cv2.GaussianBlur(mask, (5, 5), 0)[..., None]
    out = img.astype(np.float32) * (1 - mask) + np.asarray(colour, np.float32) * mask
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def blur_jpeg(img: np.ndarray, sigma: float, quality: int) -> np.ndarray:
    out = cv2.GaussianBlur(img, (0, 0), sigma) if sigma > 0 else img
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(out, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    assert ok, "OpenCV could not encode a JPEG"
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def sensor_noise(img: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Signal-dependent (shot) plus read noise, stronger in the dark, some of it in colour."""
    x = img.astype(np.float32)
    std = sigma * np.sqrt(0.35 + (255.0 - x) / 255.0)
    grey = rng.standard_normal(img.shape[:2] + (1,)).astype(np.float32)
    chroma = rng.standard_normal(img.shape).astype(np.float32)
    return np.clip(x + std * (0.7 * grey + 0.5 * chroma) + 0.5, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- one shift -----------------

@dataclass
class Shift:
    """A shift drawn for one face: a geometric move of the canvas (3x3, identity for most
    shifts) and a photometric change applied after it."""

    name: str
    move: np.ndarray
    colour: Callable[[np.ndarray], np.ndarray]
    params: dict = field(default_factory=dict)


def draw_shift(name: str, rng: np.random.Generator, canvas: int, face_hull: np.ndarray, strength: float = 1.0) -> Shift:
    """Shift `name` with strengths drawn from `rng`, for a square canvas of side `canvas` whose
    face outline (landmark hull, canvas px) is `face_hull`."""
    move = np.eye(3)
    k = strength
    u = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731
    px = canvas / 384.0  # pixel sizes below are for a 384 px canvas (2 x 128 px faces + margin)
    if name in CASTS:
        s = u(0.7, 1.0) * k
        return Shift(name, move, lambda im: colour_cast(im, CASTS[name], s), {"strength": s})
    if name == "dark":
        stops, gamma = -u(0.8, 1.3) * k, 1 + u(0.1, 0.3) * k
        return Shift(name, move, lambda im: exposure(im, stops, gamma), {"stops": stops, "gamma": gamma})
    if name == "bright":
        stops, gamma = u(0.5, 0.9) * k, 1 - u(0.1, 0.25) * k
        return Shift(name, move, lambda im: exposure(im, stops, gamma), {"stops": stops, "gamma": gamma})
    if name == "side_light":
        angle = u(-0.5, 0.5) + (np.pi if rng.random() < 0.5 else 0.0)
        s = u(0.45, 0.65) * k
        centre = face_hull.mean(0)
        half = float(np.ptp(face_hull[:, 0])) / 2
        return Shift(name, move, lambda im: light_ramp(im, centre, half, angle, s), {"angle": angle, "strength": s})
    if name == "background":
        colour = BACKDROPS[int(rng.integers(len(BACKDROPS)))]
        mixed = tuple(int(round(128 + (c - 128) * min(1.0, k))) for c in colour)
        return Shift(name, move, lambda im: backdrop(im, face_hull, mixed), {"colour": mixed})
    if name == "blur_jpeg":
        sigma, q = u(1.2, 2.0) * px * k, int(round(100 - u(65, 80) * min(1.0, k)))
        return Shift(name, move, lambda im: blur_jpeg(im, sigma, q), {"sigma": sigma, "quality": q})
    if name == "noise":
        sigma, seed = u(10, 16) * k, int(rng.integers(2**31))
        return Shift(name, move, lambda im: sensor_noise(im, sigma, np.random.default_rng(seed)), {"sigma": sigma})
    if name == "framing":
        return Shift(name, _framing(rng, canvas, k), lambda im: im, {})
    if name == "mixed":
        gains = np.exp(rng.normal(0, 0.12 * k, 3))
        stops, gamma = u(-0.6, 0.5) * k, 1 + u(-0.15, 0.15) * k
        sigma, q, seed = u(4, 9) * k, int(round(100 - u(30, 60) * min(1.0, k))), int(rng.integers(2**31))
        m = _framing(rng, canvas, 0.5 * k)

        def phone(im: np.ndarray) -> np.ndarray:
            im = exposure(colour_cast(im, gains, 1.0), stops, gamma)
            return blur_jpeg(sensor_noise(im, sigma, np.random.default_rng(seed)), 0.0, q)

        return Shift(name, m, phone, {"gains": gains.round(3).tolist(), "stops": stops, "noise": sigma, "quality": q})
    raise ValueError(f"unknown shift {name!r}; choose from {', '.join(SHIFTS)}")


def _framing(rng: np.random.Generator, canvas: int, k: float) -> np.ndarray:
    """Scale 0.8-1.25, rotation up to 12 degrees, offset up to 8 % of the canvas (about its centre)."""
    scale = float(np.exp(rng.uniform(np.log(0.8), np.log(1.25)) * k))
    angle = float(rng.uniform(-12, 12) * k)
    shift = rng.uniform(-0.08, 0.08, 2) * canvas * k
    c = canvas / 2
    m = np.eye(3)
    m[:2] = cv2.getRotationMatrix2D((c, c), angle, scale)
    m[:2, 2] += shift
    return m


def apply_shift(shift: Shift, canvas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(shifted canvas, clean canvas moved the same way): the clean one is the registered reference."""
    side = canvas.shape[0]
    moved = canvas if np.allclose(shift.move, np.eye(3)) else cv2.warpAffine(
        canvas, shift.move[:2], (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    return shift.colour(moved), moved


# ---------------------------------------------------------------- the stage -----------------

def canvas_transform(transform: np.ndarray, resolution: int, canvas_scale: int) -> tuple[np.ndarray, int]:
    """Photo -> canvas (2x3) and the canvas side: the aligned crop at `canvas_scale` x
    `resolution`, with a quarter of the crop as margin on every side."""
    k = canvas_scale
    side = int(round(1.5 * k * resolution))
    m = transform.copy() * k
    m[:, 2] += 0.25 * k * resolution
    return m, side


def shift_face(photo: np.ndarray, photo_scale: float, transform: np.ndarray, landmarks: np.ndarray,
               name: str, rng: np.random.Generator, cfg: ShiftsConfig, resolution: int, detector):
    """One face under one shift -> (shifted aligned face, registered clean face, landmarks,
    params) or None when dlib no longer finds the face (the shift's own failure, recorded)."""
    from pipeline.data.align import alignment_transform, transform_points, warp_face

    m, side = canvas_transform(transform, resolution, cfg.canvas_scale)
    m_decoded = m.copy()
    m_decoded[:, :2] /= photo_scale  # the transform maps full-size photo pixels
    canvas = warp_face(photo, m_decoded, side)
    hull = transform_points(landmarks, m)
    shift = draw_shift(name, rng, side, hull, cfg.strength)
    shifted, clean = apply_shift(shift, canvas)
    det = detector.detect(np.ascontiguousarray(shifted))
    if det is None:
        return None
    a = alignment_transform(det.landmarks, resolution)
    return (warp_face(shifted, a, resolution), warp_face(clean, a, resolution),
            transform_points(det.landmarks, a), shift.params)


def run_shifts(cfg: ShiftsConfig, aligned_dir: Path, split_csv: Path, resolution: int, out_dir: Path) -> pd.DataFrame:
    """Shifted val/test faces: images.npy (N,R,R,3) uint8, clean.npy (the registered clean
    faces), landmarks.npy (N,68,2) aligned px, manifest.csv (id, identity, split, shift,
    source_row, params) and rejected.csv (faces dlib lost under a shift, with the reason)."""
    import json

    from pipeline.core.io import ImageDecodeError, load_image, load_npy, save_csv, save_npy
    from pipeline.core.progress import track
    from pipeline.data.landmarks import DlibBackend

    cfg.validate()
    manifest = pd.read_csv(aligned_dir / "manifest.csv", dtype={"id": str, "identity": str})
    split = pd.read_csv(split_csv, dtype={"id": str, "identity": str})[["id", "split"]]
    faces = manifest.merge(split, on="id")
    faces = faces[faces["split"].isin(cfg.splits)].sort_values(["split", "row"]).reset_index(drop=True)
    transforms = load_npy(aligned_dir / "transforms.npy")
    photo_lm = load_npy(aligned_dir / "landmarks.npy")  # aligned px; back to photo px below
    detector = DlibBackend(upsample=cfg.upsample)
    side = int(round(1.5 * cfg.canvas_scale * resolution))
    images, cleans, lms, rows, rejected = [], [], [], [], []
    for k, rec in enumerate(track(list(faces.itertuples()), "shift faces")):
        t = transforms[int(rec.row)]
        lm = cv2.transform(np.asarray(photo_lm[int(rec.row)], np.float64)[None],
                           cv2.invertAffineTransform(t))[0]
        try:  # decoded at about the canvas's scale: enough pixels, no full-size decode
            need = int(side * 1.2 / max(1e-6, np.sqrt(abs(np.linalg.det(t[:, :2]))) * resolution) * resolution)
            photo, s = load_image(rec.path, draft_side=max(64, need))
        except ImageDecodeError as e:
            rejected += [{"id": rec.id, "shift": name, "reason": f"unreadable: {e}"} for name in cfg.shifts]
            continue
        for j, name in enumerate(cfg.shifts):
            rng = np.random.default_rng([cfg.seed, SHIFTS.index(name), k])
            got = shift_face(photo, s, t, lm, name, rng, cfg, resolution, detector)
            if got is None:
                rejected.append({"id": rec.id, "shift": name, "reason": "no face found after the shift"})
                continue
            face, clean, landmarks, params = got
            images.append(face), cleans.append(clean), lms.append(landmarks)
            rows.append({"id": rec.id, "identity": rec.identity, "split": rec.split, "shift": name,
                         "source_row": int(rec.row), "params": json.dumps(params, default=float)})
    shape = (0, resolution, resolution, 3)
    save_npy(out_dir / "images.npy", np.stack(images) if images else np.zeros(shape, np.uint8))
    save_npy(out_dir / "clean.npy", np.stack(cleans) if cleans else np.zeros(shape, np.uint8))
    save_npy(out_dir / "landmarks.npy", np.stack(lms).astype(np.float32) if lms else np.zeros((0, 68, 2), np.float32))
    out = pd.DataFrame(rows, columns=["id", "identity", "split", "shift", "source_row", "params"])
    save_csv(out_dir / "manifest.csv", out.assign(row=np.arange(len(out))))
    save_csv(out_dir / "rejected.csv", pd.DataFrame(rejected, columns=["id", "shift", "reason"]))
    return out


def shift_sheet(images: np.ndarray, manifest: pd.DataFrame, path: Path, faces: int = 3) -> np.ndarray:
    """Rows: a few faces; columns: every shift (a DVC plot to look at the shifts)."""
    from pipeline.core.io import save_png
    from pipeline.core.viz import make_grid

    names = list(dict.fromkeys(manifest["shift"]))
    ids = list(dict.fromkeys(manifest["id"]))[:faces]
    cells = []
    for face_id in ids:
        for name in names:
            hit = manifest.index[(manifest["id"] == face_id) & (manifest["shift"] == name)]
            cells.append(images[hit[0]] if len(hit) else None)
    sheet = make_grid(cells, nrow=len(names), col_labels=names)
    save_png(path, sheet)
    return sheet

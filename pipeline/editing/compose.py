"""compose: the one composition step of every edit. The photo carries the person.

The networks cannot yet draw a person they never saw (a reconstruction is the same person for
dlib in about 1 test face in 8), so pasting their render hands the user a stranger. An edit
should change what the user changed and leave the rest of the photo as it was. Given the
photo and two renders of its face, `compose` puts only the change into the photo, at the
photo's own resolution:

- **geometry edits** (a redrawn sketch, strokes in the studio, an attribute that moves shape):
  `r0` is the render of the photo's own geometry, `r1` that of the edited geometry, both with
  the photo's appearance. The photo's own pixels are *moved* as the edit moves the face, then
  what a move cannot explain (a new line, an opened mouth) is added from the renders. The
  motion comes from the two sketches when there are sketches (a dense flow between their
  distance transforms, refined in a few passes: it follows the strokes, where a flow between
  blurred 128 px renders moves only part of the way) and applies near the strokes that
  changed; without sketches (attributes) it comes from the two renders and applies only where
  the *model* changed the face (`change_support`).
- **appearance edits** (another photo's colours, per part or for all): `a0` and `a1` are the
  renders of the same geometry with the photo's own and with the new appearance codes; their
  difference is added to the photo in CIE Lab, the lightness change damped (`lightness`),
  inside the inner-face mask (editing.blend), so skin tone and colours change while the
  photo's detail, light and identity stay.

Where an edit changes nothing the output is the photo, bit for bit. `render full` (the whole
render pasted with `edit.paste_edited`) stays available beside it. Used by `dfe edit`,
`dfe attribute`, `dfe studio` and the evaluate stage.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

RENDERS = ("compose", "full")


@dataclass(frozen=True)
class ComposeSettings:
    """How an edit is composed (params.yaml `edit.compose`; chosen on val, see README)."""

    flow_size: int = 256  # sketches and renders are compared at this size (px)
    dt_clip: float = 0.05  # sketch distance transforms clipped at this fraction of flow_size
    flow_smooth: float = 0.01  # Gaussian smoothing of the motion, fraction of the face
    flow_iterations: int = 3  # sketch motion refined in this many DIS passes (each flows the warped sketch the rest of the way)
    fold_limit: float = 0.3  # the motion is smoothed where it squeezes the face below this area ratio (or stretches past 1/it); 0: off
    stroke_reach: float = 0.08  # sketch motion reaches this fraction of the face beyond the changed strokes
    support_threshold: float = 6.0  # edits without sketches: render change (levels, max over RGB) where the model changed the face
    support_reach: float = 0.06  # the model's change region grown by this fraction of the face
    residual_low: float = 25.0  # residual below this many levels is what the move explains: dropped
    residual_high: float = 80.0  # ... above this it is added in full
    residual_inner: bool = True  # ... and only inside `residual_within` (the inner face): the small models' hair and ears are not the photo's
    lightness: float = 0.75  # appearance edits: share of the lightness change kept
    appearance_smooth: float = 0.03  # appearance edits: the renders' change is smoothed over this fraction of the face
    feather: float = 0.06  # inner-face mask feather (appearance edits), fraction of the face
    landmark_sigma: float = 0.06  # landmark motion (attributes): each point's move spreads over this fraction of the face
    landmark_passes: int = 3  # ... and is corrected this many times so that the points land on their moves (landmark_motion)

    @classmethod
    def from_params(cls, params: dict | None = None) -> "ComposeSettings":
        """params.yaml `edit.compose` (the working directory's params.yaml when not given)."""
        if params is None:
            from pipeline.core.config import load_params

            params = load_params()
        return cls(**((params.get("edit") or {}).get("compose") or {}))


# ---------------------------------------------------------------- motion ---------------------

def _ink_distance(sketch: np.ndarray, size: int, clip: float) -> np.ndarray:
    """uint8 distance-to-ink image of a sketch (R,R) at `size`: 0 on strokes, 255 far from them."""
    s = cv2.resize(sketch, (size, size), interpolation=cv2.INTER_LINEAR)
    dist = cv2.distanceTransform((s >= 128).astype(np.uint8), cv2.DIST_L2, 5)
    c = max(1.0, clip * size)
    return (np.clip(dist / c, 0, 1) * 255 + 0.5).astype(np.uint8)


def _dense_flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(H,W,2) float32 with a(x) ~ b(x + flow(x)) (OpenCV DIS, one grey uint8 image each)."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    return dis.calc(a, b, None)


def sketch_motion(own: np.ndarray, edited: np.ndarray, settings: ComposeSettings = ComposeSettings()) -> np.ndarray:
    """Backward motion (R,R,2) float32 in aligned px from two sketches (R,R) uint8: the edited
    face at x shows the photo's pixel at x + motion(x). Zero where the sketches agree."""
    r = own.shape[0]
    assert own.shape == edited.shape == (r, r) and own.dtype == edited.dtype == np.uint8, (own.shape, edited.shape)
    if np.array_equal(own, edited):
        return np.zeros((r, r, 2), np.float32)
    motion = _refined_motion(own, edited, lambda sk: _ink_distance(sk, settings.flow_size, settings.dt_clip), settings)
    # Only near strokes that changed: the flow drifts over blank paper, where nothing was drawn.
    return motion * _grown(np.abs(own.astype(np.int16) - edited.astype(np.int16)) > 64, settings.stroke_reach * r)[..., None]


def _refined_motion(source: np.ndarray, target: np.ndarray, prepare, settings: ComposeSettings) -> np.ndarray:
    """Backward motion (R,R,2) with target(x) ~ source(x + motion(x)); `prepare` turns an aligned
    image into the grey uint8 image (flow_size px) the flow compares. One DIS pass carries about
    60 % of a drawn move (val); each further pass flows the source, warped so far, the rest of
    the way, and the two moves are composed."""
    r, n = source.shape[0], settings.flow_size
    goal = prepare(target)
    motion = np.zeros((r, r, 2), np.float32)
    for k in range(max(1, settings.flow_iterations)):
        flow = _dense_flow(goal, prepare(warp_aligned(source, motion) if k else source))
        step = _smooth(cv2.resize(flow, (r, r), interpolation=cv2.INTER_AREA) * (r / n), settings.flow_smooth * r)
        motion = step + warp_aligned(motion, step) if k else step
    return motion


def _area_ratio(motion: np.ndarray) -> np.ndarray:
    """(R,R): how much the backward map x -> x + motion(x) scales area at each pixel (its
    Jacobian determinant); below 0 the map folds the photo over itself."""
    dxx, dxy = np.gradient(motion[..., 0], axis=1), np.gradient(motion[..., 0], axis=0)
    dyx, dyy = np.gradient(motion[..., 1], axis=1), np.gradient(motion[..., 1], axis=0)
    return (1 + dxx) * (1 + dyy) - dxy * dyx


def unfold(motion: np.ndarray, limit: float, passes: int = 6) -> np.ndarray:
    """`motion` smoothed where it squeezes area below `limit` or stretches it past 1/limit (a
    fold or a tear: where a flow between two very different drawings went wrong), more each pass,
    until no such place is left; elsewhere it is kept exactly."""
    if limit <= 0:
        return motion
    r = motion.shape[0]
    out = motion
    for k in range(passes):
        ratio = _area_ratio(out)
        bad = (ratio < limit) | (ratio > 1 / limit)
        if not bad.any():
            break
        sigma = (r / 128) * 1.5 * 2 ** k
        where = _grown(bad, 2 * sigma)[..., None]
        out = out * (1 - where) + cv2.GaussianBlur(out, (0, 0), sigma) * where
    return out.astype(np.float32)


def _grown(core: np.ndarray, reach: float) -> np.ndarray:
    """(R,R) float32 in [0,1]: `core` grown by `reach` px, 1 there and ramping off outside."""
    if not core.any():
        return np.zeros(core.shape, np.float32)
    k = 2 * max(1, round(reach)) + 1
    grown = cv2.dilate(core.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))).astype(np.float32)
    return np.clip(cv2.GaussianBlur(grown, (k, k), 0) * 1.5, 0, 1)


def render_motion(r0: np.ndarray, r1: np.ndarray, settings: ComposeSettings = ComposeSettings()) -> np.ndarray:
    """Backward motion (R,R,2) from the render of the edit `r1` to the unedited render `r0`
    (for edits without sketches: attributes)."""
    r = r0.shape[0]
    if np.array_equal(r0, r1):
        return np.zeros((r, r, 2), np.float32)
    n = settings.flow_size
    grey = lambda im: cv2.resize(cv2.cvtColor(im, cv2.COLOR_RGB2GRAY), (n, n), interpolation=cv2.INTER_CUBIC)  # noqa: E731
    # One pass: renders also change in tone, and further passes turned a pure brightening
    # into motion (tests/test_dfi_stage.py); sketches carry strokes only.
    return _refined_motion(r0, r1, grey, replace(settings, flow_iterations=1))


# A closed mouth's inner lip points (dlib's 60-67) lie on one line, and a smile parts them: no
# smooth field can carry the upper ones up and the lower ones down, so `landmark_motion`'s
# correction passes leave them to the plain splat.
INNER_LIPS = tuple(range(60, 68))


def landmark_motion(points: np.ndarray, shift: np.ndarray, size: int, sigma: float, passes: int = 0) -> np.ndarray:
    """Backward motion (size,size,2) float32 that moves landmarks `points` (68,2, aligned px) by
    `shift` (68,2): where a point lands the output shows the photo at the point; in between a
    Gaussian-weighted mean of the nearby points' moves (points that stay hold their
    neighbourhood still), fading to nothing beyond about `sigma` (fraction of the face) of every
    point. An attribute's landmark vector (the examples' mean shift) moves a photo's own pixels.

    The mean alone carries a point only part of its way where its neighbours move differently
    (a smile's mouth corners about 0.4 of it). Each of `passes` splats what is still missing at
    every point (but the inner lips, `INNER_LIPS`) the same way and adds it, so the points land
    nearer their moves."""
    assert points.shape == shift.shape == (len(points), 2), (points.shape, shift.shape)
    points, shift = np.asarray(points, np.float32), np.asarray(shift, np.float32)
    landed = points + shift
    motion = _splat(landed, -shift, size, sigma)
    if passes <= 0:
        return motion
    fitted = np.array([i not in INNER_LIPS for i in range(len(points))]) if len(points) == 68 else np.ones(len(points), bool)
    for _ in range(passes):
        # backward motion at a landed point should be minus its shift: the output there shows the point
        missing = (-shift - _at(motion, landed)) * fitted[:, None]
        motion = motion + _splat(landed, missing, size, sigma)
    return motion


def _splat(at: np.ndarray, values: np.ndarray, size: int, sigma: float) -> np.ndarray:
    """(size,size,2): `values` (N,2) spread from the pixels `at` (N,2) by a Gaussian-weighted
    mean, fading to zero beyond about `sigma` (fraction of size) of every point."""
    num = np.zeros((size, size, 2), np.float32)
    den = np.zeros((size, size), np.float32)
    for (x, y), d in zip(at, values):
        xi, yi = int(round(x)), int(round(y))
        if 0 <= xi < size and 0 <= yi < size:
            num[yi, xi] += d
            den[yi, xi] += 1
    s = sigma * size
    num, den = cv2.GaussianBlur(num, (0, 0), s), cv2.GaussianBlur(den, (0, 0), s)
    reach = np.clip(den * (2 * np.pi * s * s) * 2, 0, 1)  # 1 within about a sigma of a point
    return num / np.maximum(den, 1e-8)[..., None] * reach[..., None]


def _at(field: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """(N,2): a (H,W,2) field sampled bilinearly at the points `xy` (N,2) (0 outside)."""
    x, y = (np.ascontiguousarray(xy[:, k : k + 1], np.float32) for k in (0, 1))
    return cv2.remap(field, x, y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)[:, 0]


def _smooth(flow: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(flow, (0, 0), sigma) if sigma > 0 else flow


def change_support(r0: np.ndarray, r1: np.ndarray, settings: ComposeSettings = ComposeSettings()) -> np.ndarray:
    """(R,R) float32 in [0,1]: where the model's render changed (grown and softened)."""
    r = r0.shape[0]
    diff = np.abs(r0.astype(np.int16) - r1.astype(np.int16)).max(axis=2).astype(np.float32)
    return _grown(cv2.GaussianBlur(diff, (0, 0), max(0.5, r / 128)) > settings.support_threshold,
                  settings.support_reach * r)


def warp_aligned(image: np.ndarray, motion: np.ndarray) -> np.ndarray:
    """An aligned image moved by a backward motion field (same size)."""
    r = image.shape[0]
    yy, xx = np.mgrid[0:r, 0:r].astype(np.float32)
    return cv2.remap(image, xx + motion[..., 0], yy + motion[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


# ---------------------------------------------------------------- the photo's frame ----------

def _face_box(transform: np.ndarray, resolution: int, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): the photo pixels the aligned square covers, clipped to the photo."""
    inv = cv2.invertAffineTransform(transform)
    corners = np.array([[0, 0], [resolution, 0], [0, resolution], [resolution, resolution]], np.float64)
    pts = corners @ inv[:, :2].T + inv[:, 2]
    h, w = shape
    x0, y0 = np.floor(pts.min(0)).astype(int) - 1
    x1, y1 = np.ceil(pts.max(0)).astype(int) + 2
    return max(0, x0), max(0, y0), min(w, x1), min(h, y1)


def _aligned_coords(transform: np.ndarray, box: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Aligned-frame (x, y) of every photo pixel in `box`, float32 maps for cv2.remap."""
    x0, y0, x1, y1 = box
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    ax = transform[0, 0] * xx + transform[0, 1] * yy + transform[0, 2]
    ay = transform[1, 0] * xx + transform[1, 1] * yy + transform[1, 2]
    return ax.astype(np.float32), ay.astype(np.float32)


def _sample(aligned: np.ndarray, ax: np.ndarray, ay: np.ndarray) -> np.ndarray:
    """An aligned-frame float array sampled at photo pixels (0 outside the aligned square)."""
    return cv2.remap(aligned.astype(np.float32), ax, ay, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


# ---------------------------------------------------------------- composition ----------------

def compose(
    photo: np.ndarray, transform: np.ndarray, *,
    geometry: tuple[np.ndarray, np.ndarray] | None = None,
    sketches: tuple[np.ndarray, np.ndarray] | None = None,
    motion: np.ndarray | None = None,
    appearance: tuple[np.ndarray, np.ndarray] | None = None,
    inner_mask: np.ndarray | None = None,
    colour_shift: np.ndarray | None = None,
    within: np.ndarray | None = None,
    residual_within: np.ndarray | None = None,
    settings: ComposeSettings = ComposeSettings(),
) -> np.ndarray:
    """The edited photo (H,W,3) uint8.

    photo: (H,W,3) uint8 at its own resolution; transform: its 2x3 photo -> aligned (R px) map.
    geometry: (r0, r1) aligned renders (R,R,3) uint8 of the photo's own and the edited
      geometry, same appearance. sketches: (own, edited) (R,R) uint8 sketches behind them:
      the motion comes from them and the change stays near the strokes that changed; None
      (attributes): the motion comes from the renders, wherever the model changed the face.
    motion: (R,R,2) backward motion in aligned px that replaces the one from sketches or renders
      (attributes with a landmark vector: `landmark_motion`); the renders then add only what
      that move does not explain, where the model changed the face.
    appearance: (a0, a1) aligned renders of one geometry with the photo's own and the new
      appearance codes; the change goes in inside `inner_mask` (R,R) in [0,1] (required then).
    colour_shift: (R,R,3) Lab field (`photo_colour_shift`): the appearance photos' own colour
      difference, which replaces the mean of the renders' change (renders carry a blurred,
      training-set version of a skin tone; the donor photo carries the real one).
    within: (R,R) in [0,1], where a geometry change may go at all (attributes: the inner face).
    residual_within: (R,R) in [0,1], where the renders may add what the move does not explain
      (callers pass the inner face; with settings.residual_inner, else ignored).
    """
    assert photo.ndim == 3 and photo.shape[2] == 3 and photo.dtype == np.uint8, (photo.shape, photo.dtype)
    out = photo
    if geometry is not None:
        adds = residual_within if settings.residual_inner else None
        out = _compose_geometry(out, transform, *geometry, sketches, within, settings, motion, adds)
    if appearance is not None:
        if inner_mask is None:
            raise ValueError("an appearance edit needs the inner-face mask (editing.blend.inner_face_mask)")
        out = _compose_appearance(out, transform, *appearance, inner_mask, colour_shift, settings)
    return out


def geometry_change(r0: np.ndarray, r1: np.ndarray, sketches: tuple[np.ndarray, np.ndarray] | None,
                    settings: ComposeSettings = ComposeSettings(), within: np.ndarray | None = None,
                    motion: np.ndarray | None = None, residual_within: np.ndarray | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(motion, residual) in the aligned frame: the backward motion (`motion` when given, inside
    `within`), near the strokes that changed (with sketches) or where the model changed the face
    (without), and what that move does not explain (R,R,3 float32 levels), only where the model
    changed the face."""
    r = r0.shape[0]
    by_model = change_support(r0, r1, settings)
    if motion is not None:  # the move is given (a landmark vector): it applies wherever it is
        assert motion.shape == (r, r, 2), (motion.shape, r)
        moves = np.ones((r, r), np.float32)
        adds = by_model
    elif sketches is not None:  # the user's strokes say where the photo moves (gating them by the model's
        own, edited = sketches  # change too left eyes the networks barely redraw unmoved: val drawn/own 0.71 -> 0.60)
        strokes = _grown(np.abs(own.astype(np.int16) - edited.astype(np.int16)) > 64, settings.stroke_reach * r)
        moves, adds = strokes, by_model * strokes
    else:
        moves = adds = by_model
    if within is not None:
        moves, adds = moves * within, adds * within
    if residual_within is not None:
        adds = adds * residual_within
    if not moves.any():
        return np.zeros((r, r, 2), np.float32), np.zeros((r, r, 3), np.float32)
    if motion is None:
        motion = render_motion(r0, r1, settings) if sketches is None else sketch_motion(*sketches, settings)
    m = unfold(motion * moves[..., None], settings.fold_limit)
    if within is not None:  # smoothing a fold must not carry the move past where it may go
        m = m * (within > 1e-3)[..., None]
    # What the model drew that the move does not explain (a new line, an opened mouth). Only where
    # the model changed the face: elsewhere r1 - warp(r0) would merely undo the move.
    residual = r1.astype(np.float32) - warp_aligned(r0, m).astype(np.float32)
    size = np.abs(cv2.GaussianBlur(residual, (0, 0), max(0.5, r0.shape[0] / 128))).max(axis=2)
    keep = np.clip((size - settings.residual_low) / max(1e-3, settings.residual_high - settings.residual_low), 0, 1)
    return m, residual * (keep * adds)[..., None]


def _compose_geometry(photo, transform, r0, r1, sketches, within, settings, motion=None, residual_within=None):
    m, residual = geometry_change(r0, r1, sketches, settings, within, motion, residual_within)
    if not m.any() and not residual.any():
        return photo
    box = _face_box(transform, r0.shape[0], photo.shape[:2])
    x0, y0, x1, y1 = box
    ax, ay = _aligned_coords(transform, box)
    # photo pixel p shows p + A^-1 motion(T p): the motion taken back into photo pixels
    d = _sample(m, ax, ay)
    inv = np.linalg.inv(transform[:, :2])
    dx = inv[0, 0] * d[..., 0] + inv[0, 1] * d[..., 1]
    dy = inv[1, 0] * d[..., 0] + inv[1, 1] * d[..., 1]
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    moved = cv2.remap(photo, (xx + dx).astype(np.float32), (yy + dy).astype(np.float32), cv2.INTER_LINEAR,
                      borderMode=cv2.BORDER_REFLECT_101)
    region = photo[y0:y1, x0:x1].astype(np.float32)
    still = (np.abs(dx) < 1e-3) & (np.abs(dy) < 1e-3)
    region = np.where(still[..., None], region, moved.astype(np.float32)) + _sample(residual, ax, ay)
    out = photo.copy()
    out[y0:y1, x0:x1] = np.clip(region + 0.5, 0, 255).astype(np.uint8)
    return out


def _lab(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)


# The central face of an FFHQ-aligned crop (left, top, right, bottom fractions): mostly skin,
# whose colour the whole face's appearance swap carries.
FACE_REGION = (0.28, 0.34, 0.72, 0.84)


def _part_weight(box: tuple[int, int, int], r: int, inside: float = 9.0) -> np.ndarray:
    """(R,R) weight of a part's donor: `inside` over its box, falling off smoothly around it."""
    x, y, size = box
    weight = np.zeros((r, r), np.float32)
    weight[y:y + size, x:x + size] = inside
    return cv2.GaussianBlur(weight, (0, 0), max(1.0, size / 8))


def photo_colour_shift(own: np.ndarray, donors: dict[str, np.ndarray], boxes: dict[str, tuple[int, int, int]]
                       ) -> tuple[np.ndarray, np.ndarray]:
    """How far the appearance photos' colours are from the photo's own, part by part: the mean
    Lab of each donor's part box (for `bg`, the donor of every part: the central face) minus the
    photo's own there. Returns ((R,R,3) Lab shift, (R,R) in [0,1] where the appearance changes):
    the bg donor everywhere; a part's donor inside its box (9:1 against the rest), fading out
    around it."""
    r = own.shape[0]
    lab_own = _lab(own)

    def shift(face: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        return _lab(face)[y0:y1, x0:x1].reshape(-1, 3).mean(0) - lab_own[y0:y1, x0:x1].reshape(-1, 3).mean(0)

    base = np.zeros(3, np.float32)  # the rest of the face keeps its own colours ...
    where = np.zeros((r, r), np.float32)
    if "bg" in donors:  # ... unless one photo gives every part
        base = shift(donors["bg"], *(int(round(f * r)) for f in FACE_REGION))
        where[:] = 1.0
    num = np.broadcast_to(base, (r, r, 3)).astype(np.float32).copy()
    den = np.ones((r, r), np.float32)
    for part, face in donors.items():
        if part == "bg":
            continue
        x, y, size = boxes[part]
        w = _part_weight(boxes[part], r)
        num += w[..., None] * shift(face, x, y, x + size, y + size)
        den += w
        where = np.maximum(where, w / (1.0 + w))
    return num / den[..., None], np.clip(where / max(where.max(), 1e-6) if "bg" not in donors else where, 0, 1)


def _compose_appearance(photo, transform, a0, a1, inner_mask, colour_shift, settings):
    # The renders' change, low-passed: colour and tone move, the renders' own artefacts (a
    # green fringe round an eye) do not.
    delta = cv2.GaussianBlur(_lab(a1) - _lab(a0), (0, 0), max(1.0, settings.appearance_smooth * a0.shape[0]))
    if colour_shift is not None:  # the renders' own mean change gives way to the photos' real difference
        inside = inner_mask > 0.5
        delta = delta - delta[inside].mean(0) + colour_shift if inside.any() else delta + colour_shift
    delta[..., 0] *= settings.lightness
    delta *= inner_mask[..., None]
    if not delta.any():
        return photo
    box = _face_box(transform, a0.shape[0], photo.shape[:2])
    x0, y0, x1, y1 = box
    ax, ay = _aligned_coords(transform, box)
    d = _sample(delta, ax, ay)
    rgb = cv2.cvtColor(_lab(photo[y0:y1, x0:x1]) + d, cv2.COLOR_LAB2RGB)
    touched = np.abs(d).max(axis=2, keepdims=True) > 1e-4  # elsewhere the photo's exact pixels
    out = photo.copy()
    out[y0:y1, x0:x1] = np.where(touched, np.clip(rgb * 255 + 0.5, 0, 255).astype(np.uint8), photo[y0:y1, x0:x1])
    return out

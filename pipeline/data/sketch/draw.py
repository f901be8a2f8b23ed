"""The per-face half of sketch synthesis: from an FDoG line response to drawn strokes.

Threshold, thin to a skeleton, drop short fragments and spurs, trace polylines, bridge small
gaps, smooth, add landmark-guided feature strokes, and re-render with anti-aliased strokes of
varying width. Plain NumPy/OpenCV and no torch, so process-pool workers start quickly
(pipeline/data/sketch/synthesis.py computes the response on the device and farms this part out).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

import cv2
import numpy as np
from skimage.morphology import remove_small_objects, skeletonize

from pipeline.core.parallel import WORKERS_ENV, available_cores, resolve_workers

REF_RES = 256  # pixel-valued knobs are given at this resolution and scale linearly with R
_SUPERSAMPLE = 4  # strokes are rendered at 4x and area-downsampled: fractional widths, clean AA
_MIN_WIDTH = 1.1  # output pixels; thinner anti-aliased strokes fade to grey at 64-128 px


@dataclass(frozen=True)
class SketchStyle:
    """Sketch look. Pixel sizes are at 256 px and scale with the resolution."""

    sigma: float = 1.2  # DoG inner scale (line width / detail scale)
    k: float = 1.6  # DoG outer/inner scale ratio
    tau: float = 0.985  # DoG outer weight; < 1 keeps flat regions white
    flow_sigma: float = 3.0  # smoothing along the edge-tangent streamlines
    tensor_sigma: float = 2.5  # structure-tensor smoothing (edge direction field)
    threshold: float = 0.01  # line-detail threshold on normalised DoG (higher: fewer lines)
    min_length: float = 28.0  # drop traced strokes shorter than this (px)
    spur_length: float = 8.0  # drop dangling branches shorter than this (px)
    gap: float = 7.0  # join stroke ends facing each other across gaps up to this (px)
    smoothing: float = 2.0  # Gaussian smoothing of stroke coordinates (px along the stroke)
    width: float = 1.1  # base stroke width (px)
    width_variation: float = 0.35  # pressure variation of width with edge strength (0: constant)
    taper: float = 0.6  # how much strokes thin toward their free ends (0: none, 1: to a point)
    jitter: float = 0.0  # amplitude of low-frequency hand wobble (px)
    dropout: float = 0.0  # probability of dropping an FDoG stroke (features are kept)
    feature_strokes: bool = True  # draw eyes/brows/nose/lips/jaw from landmarks
    feature_width: float = 1.1  # width multiplier of landmark-guided strokes
    randomize: float = 0.0  # 0: fixed style; 1: full per-face random style

    def __post_init__(self) -> None:
        if not 0.0 <= self.randomize <= 1.0:
            raise ValueError(f"randomize must be in [0,1], got {self.randomize}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0,1), got {self.dropout}")
        if self.sigma <= 0 or self.k <= 1 or self.width <= 0:
            raise ValueError("sigma and width must be > 0 and k > 1")


def face_rng(seed: int, index: int) -> np.random.Generator:
    """The generator for face `index`: independent of batching, distinct across faces."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))


def sample_style(style: SketchStyle, rng: np.random.Generator) -> SketchStyle:
    """Perturb the style by `style.randomize` (log-uniform for scales, additive for rates)."""
    r = style.randomize
    if r == 0.0:
        return style

    def scale(v: float, spread: float) -> float:
        return float(v * np.exp(rng.uniform(-1.0, 1.0) * spread * r))

    return replace(
        style,
        threshold=scale(style.threshold, 0.5),
        min_length=scale(style.min_length, 0.5),
        width=scale(style.width, 0.45),
        width_variation=float(np.clip(style.width_variation + rng.uniform(-0.2, 0.3) * r, 0, 1)),
        taper=float(np.clip(style.taper + rng.uniform(-0.4, 0.4) * r, 0, 1)),
        jitter=style.jitter + float(rng.uniform(0.0, 1.2)) * r,
        dropout=float(np.clip(style.dropout + rng.uniform(0.0, 0.25) * r, 0, 0.9)),
        smoothing=scale(style.smoothing, 0.4),
        feature_width=scale(style.feature_width, 0.3),
        randomize=0.0,
    )


# ------------------------------------------------------------------------- polyline tracing

_NEIGHBOURS = ((0, 1), (1, 0), (0, -1), (-1, 0), (1, 1), (1, -1), (-1, 1), (-1, -1))  # 4-conn first


def trace_skeleton(skel: np.ndarray) -> list[tuple[np.ndarray, bool, bool, bool]]:
    """Split a one-pixel skeleton into ordered chains.

    Returns (points (K,2) float (x,y), closed, starts_at_junction, ends_at_junction) per chain.
    Junction pixels (>= 3 neighbours) are cut out, then appended to the chain ends that touch
    them, so strokes meeting at a junction still meet after re-rendering.
    """
    h, w = skel.shape
    sk = np.zeros((h + 2, w + 2), np.uint8)
    sk[1:-1, 1:-1] = skel
    nb = cv2.filter2D(sk, cv2.CV_16S, np.array([[1, 1, 1], [1, 0, 1], [1, 1, 1]], np.int16),
                      borderType=cv2.BORDER_CONSTANT)
    # A staircase pixel can have 3 neighbours without being a branch point, so a junction also
    # needs >= 3 separate neighbour groups around its 8-ring (crossing number).
    ring = [sk[1 + dy : h + 1 + dy, 1 + dx : w + 1 + dx] for dy, dx in
            ((-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1))]
    crossings = sum((ring[i] == 0) & (ring[(i + 1) % 8] > 0) for i in range(8))
    junction = np.zeros_like(sk, dtype=bool)
    junction[1:-1, 1:-1] = (sk[1:-1, 1:-1] > 0) & (nb[1:-1, 1:-1] >= 3) & (crossings >= 3)
    free = (sk > 0) & ~junction
    # The walk below is pure Python: flat indices into bytearrays index several times faster
    # than (y, x) into NumPy arrays.
    width = w + 2
    offsets = [dy * width + dx for dy, dx in _NEIGHBOURS]
    is_free = bytearray(free.ravel().tobytes())  # cleared as pixels are visited
    is_junction = bytearray(junction.ravel().tobytes())
    chains: list[tuple[np.ndarray, bool, bool, bool]] = []

    def junction_neighbour(p: int) -> int | None:
        for o in offsets:
            if is_junction[p + o]:
                return p + o
        return None

    # Visit endpoints first (so open chains are walked end to end), then whatever is left
    # (closed loops and chains whose both ends touch junctions).
    cnt = cv2.filter2D(free.astype(np.uint8), cv2.CV_16S, np.array([[1, 1, 1], [1, 0, 1], [1, 1, 1]], np.int16),
                       borderType=cv2.BORDER_CONSTANT)
    ys, xs = np.nonzero(free)
    order = np.argsort(cnt[ys, xs], kind="stable")
    for p0 in (ys[order] * width + xs[order]).tolist():
        if not is_free[p0]:
            continue
        path = [p0]
        is_free[p0] = 0
        p = p0
        while True:
            for o in offsets:  # the first free, unvisited neighbour, 4-connected ones first
                if is_free[p + o]:
                    p += o
                    break
            else:
                break
            is_free[p] = 0
            path.append(p)
        y0, x0 = divmod(p0, width)
        y1, x1 = divmod(path[-1], width)
        closed = len(path) > 2 and max(abs(y1 - y0), abs(x1 - x0)) <= 1 and junction_neighbour(p0) is None
        j0 = junction_neighbour(path[0]) if not closed else None
        j1 = junction_neighbour(path[-1]) if not closed else None
        if j0 is not None:
            path.insert(0, j0)
        if j1 is not None:
            path.append(j1)
        flat = np.asarray(path)
        pts = np.stack((flat % width, flat // width), 1).astype(np.float64) - 1.0  # padded -> (x,y)
        chains.append((pts, closed, j0 is not None, j1 is not None))
    return chains


Chain = tuple[np.ndarray, bool, bool, bool]  # (points (K,2) x,y; closed; start/end at junction)


def link_gaps(chains: list[Chain], max_gap: float, min_cos: float = 0.5) -> list[Chain]:
    """Join free chain ends that face each other across a small gap into one stroke.

    FDoG lines break where contrast dips for a few pixels (a hair line crossing a shadow); a
    person draws through such gaps. Two free ends are joined when they are closer than
    `max_gap`, point roughly at each other (outward directions within acos(min_cos) of the
    connecting line) — the closest such pair first, repeated until none is left.
    """
    chains = [c for c in chains]
    while True:
        ends = []  # (chain index, at_end, position, outward direction)
        for ci, (pts, closed, j0, j1) in enumerate(chains):
            if closed or len(pts) < 3:
                continue
            k = min(5, len(pts) - 1)
            for at_end, free, p, q in ((False, not j0, pts[0], pts[k]), (True, not j1, pts[-1], pts[-1 - k])):
                if free:
                    d = p - q
                    ends.append((ci, at_end, p, d / max(float(np.hypot(d[0], d[1])), 1e-9)))
        if len(ends) < 2:
            return chains
        cid = np.array([e[0] for e in ends])
        pos = np.array([e[2] for e in ends])
        out = np.array([e[3] for e in ends])
        v = pos[None, :, :] - pos[:, None, :]  # v[i, j] = p_j - p_i
        dist = np.linalg.norm(v, axis=2)
        u = v / np.maximum(dist, 1e-9)[..., None]
        facing = (np.einsum("ik,ijk->ij", out, u) > min_cos) & (np.einsum("jk,ijk->ij", -out, u) > min_cos)
        ok = (dist <= max_gap) & (facing | (dist < 1.5)) & (cid[:, None] != cid[None, :])
        if not ok.any():
            return chains
        i, j = np.unravel_index(np.argmin(np.where(ok, dist, np.inf)), dist.shape)
        best = (float(dist[i, j]), int(i), int(j))
        (ci, ei, _, _), (cj, ej, _, _) = ends[best[1]], ends[best[2]]
        a, b = chains[ci], chains[cj]
        pa = a[0] if ei else a[0][::-1]  # oriented so the joined end is last
        pb = b[0][::-1] if ej else b[0]  # oriented so the joined end is first
        start_j = a[3] if not ei else a[2]
        end_j = b[2] if not ej else b[3]
        merged: Chain = (np.concatenate((pa, pb)), False, start_j, end_j)
        chains = [c for k, c in enumerate(chains) if k not in (ci, cj)] + [merged]


def smooth_strokes(x: np.ndarray, off: np.ndarray, sigma: float, closed: np.ndarray, anchored: bool) -> np.ndarray:
    """Gaussian smoothing (scipy.ndimage.gaussian_filter1d, truncate 4) of per-point values x
    (P,) or (P,D) along each of several concatenated strokes (offsets (S+1,)), in one
    convolution: closed strokes wrap; open ones extend as 'nearest', after an odd reflection
    through their end points when `anchored` (so ends are not pulled inward; strokes under 3
    points then stay as they are). Ours so pool workers need not import scipy.ndimage (~0.4 s
    a worker)."""
    n = np.diff(off)
    if sigma <= 0 or not len(n):
        return x
    radius = int(4.0 * sigma + 0.5)
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    closed = np.asarray(closed, bool)
    ext = np.where(closed | (not anchored), 0, np.minimum(n - 1, int(np.ceil(3 * sigma))))  # odd-reflected points
    span = n + 2 * ext + 2 * radius
    start = np.cumsum(span) - span  # where each stroke's padded run begins
    sid = np.repeat(np.arange(len(n)), span)
    nn, e = n[sid], ext[sid]
    j = np.arange(int(span.sum())) - start[sid] - e - radius  # index within the stroke
    jc = np.clip(j, -e, nn + e - 1)  # 'nearest' beyond the (extended) ends
    before, after = jc < 0, jc > nn - 1
    local = np.where(closed[sid], j % nn, np.where(before, -jc, np.where(after, 2 * (nn - 1) - jc, jc)))
    first = off[:-1][sid]
    vals = x[first + local]
    if anchored:
        col = (slice(None),) + (None,) * (x.ndim - 1)
        vals = np.where(before[col], 2 * x[first] - vals, np.where(after[col], 2 * x[first + nn - 1] - vals, vals))
    at = np.repeat(start + ext, n) + (np.arange(len(x)) - np.repeat(off[:-1], n))  # outputs at j = 0..n-1
    if x.ndim == 1:
        out = np.convolve(vals, kernel, "valid")[at]
    else:
        out = np.stack([np.convolve(vals[:, c], kernel, "valid")[at] for c in range(x.shape[1])], 1)
    if anchored:
        out[np.repeat(n < 3, n)] = x[np.repeat(n < 3, n)]
    return out


def catmull_rom(ctrl: np.ndarray, closed: bool, per_segment: int = 8) -> np.ndarray:
    """Dense (centripetal-free, uniform) Catmull-Rom spline through control points (..., K, 2):
    one curve, or a batch of curves with the same number of points."""
    ctrl = np.asarray(ctrl, np.float64)
    if closed:
        p = np.concatenate((ctrl[..., -1:, :], ctrl, ctrl[..., :2, :]), -2)
        n_seg = ctrl.shape[-2]
    else:
        p = np.concatenate((2 * ctrl[..., :1, :] - ctrl[..., 1:2, :], ctrl, 2 * ctrl[..., -1:, :] - ctrl[..., -2:-1, :]), -2)
        n_seg = ctrl.shape[-2] - 1
    t = np.linspace(0, 1, per_segment, endpoint=False)[None, :, None]  # (1,T,1)
    p0, p1, p2, p3 = (p[..., i : i + n_seg, None, :] for i in range(4))  # (...,S,1,2) each
    curve = 0.5 * ((2 * p1) + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
                   + (-p0 + 3 * p1 - 3 * p2 + p3) * t**3)  # (...,S,T,2)
    curve = curve.reshape(*ctrl.shape[:-2], -1, 2)
    return curve if closed else np.concatenate((curve, ctrl[..., -1:, :]), -2)


# ---------------------------------------------------------------------- landmark features


@dataclass
class Stroke:
    pts: np.ndarray  # (K,2) float (x,y), pixels of the output image
    closed: bool
    width: float  # base width in output pixels
    taper_start: bool = True
    taper_end: bool = True
    widths: np.ndarray | None = None  # optional per-point width multiplier (K,)
    min_width: float = 0.0  # floor of the base width when a template is scaled (pupils)

    def scaled(self, width: float) -> Stroke:
        """This stroke of a unit-width template at base width `width`."""
        return Stroke(self.pts, self.closed, max(self.min_width, self.width * width), self.taper_start,
                      self.taper_end, self.widths)


def feature_strokes(lm: np.ndarray) -> list[list[Stroke]]:
    """Spline strokes through the 68 iBUG landmarks (x,y) of a batch of faces (B,68,2): jaw,
    brows, eyes, nose, lips; unit-width templates, in the same order for every face. The
    geometry is computed for the whole batch at once (per-face NumPy calls on a dozen short
    curves cost more than the maths)."""
    assert lm.ndim == 3 and lm.shape[1:] == (68, 2), lm.shape
    lm = lm.astype(np.float64)
    n = len(lm)
    eye_w = np.array([0.5 * (np.linalg.norm(f[39] - f[36]) + np.linalg.norm(f[45] - f[42])) for f in lm])
    per_face: list[list[Stroke]] = [[] for _ in range(n)]

    def add(pts: np.ndarray, closed: bool, width: float, *args, **kw) -> None:
        for i in range(n):
            per_face[i].append(Stroke(pts[i], closed, width, *args, **kw))

    add(catmull_rom(lm[:, 0:17], False), False, 1.1)
    for brow in (lm[:, 17:22], lm[:, 22:27]):
        # Brows as a tapered band: upper and lower edge meeting at the tail.
        c = catmull_rom(brow, False, 10)
        tangent = np.gradient(c, axis=1)
        normal = np.stack((tangent[..., 1], -tangent[..., 0]), -1)
        normal /= np.linalg.norm(normal, axis=2, keepdims=True).clip(1e-9)
        normal *= np.sign([f[:, 1].mean() for f in normal])[:, None, None]  # point down the face (+y)
        inner_first = abs(brow[:, 0, 0] - lm[:, 27, 0]) < abs(brow[:, -1, 0] - lm[:, 27, 0])
        c = np.where(inner_first[:, None, None], c, c[:, ::-1])
        normal = np.where(inner_first[:, None, None], normal, normal[:, ::-1])
        s = np.linspace(0, 1, c.shape[1])
        thick = 0.3 * eye_w[:, None] * (1.0 - 0.85 * s**1.5)  # full at the head, near zero at the tail
        upper, lower = c - 0.4 * thick[..., None] * normal, c + 0.6 * thick[..., None] * normal
        # One outline: along the top from the head to the tail, back along the bottom, and
        # closed at the head.
        add(np.concatenate((upper, lower[:, ::-1], upper[:, :1]), 1), False, 1.0, False, False)
    for eye in (lm[:, 36:42], lm[:, 42:48]):
        upper = catmull_rom(eye[:, 0:4], False, 10)
        lower = catmull_rom(np.concatenate((eye[:, 3:6], eye[:, 0:1]), 1), False, 10)
        add(upper, False, 1.5)
        add(lower, False, 0.9)
    # Nose as one stroke, as a person draws it: a light line down the shaded side of the
    # bridge flowing into the left alar wing, the bottom arc through the nostrils, the right wing.
    up = lm[:, 30] - lm[:, 33]
    side_l, side_r = lm[:, 31] - lm[:, 33], lm[:, 35] - lm[:, 33]
    wing_l = [lm[:, 31] + 1.4 * up + 0.15 * side_l, lm[:, 31] + 0.6 * up + 0.3 * side_l, lm[:, 31] + 0.2 * side_l]
    wing_r = [lm[:, 35] + 0.2 * side_r, lm[:, 35] + 0.6 * up + 0.3 * side_r, lm[:, 35] + 1.4 * up + 0.15 * side_r]
    bridge = [lm[:, 28] + 0.45 * side_l, lm[:, 29] + 0.45 * side_l]
    ctrl = np.stack(bridge + wing_l + [lm[:, k] for k in range(31, 36)] + wing_r, 1)
    nose = catmull_rom(ctrl, False, 6)
    weight = np.interp(np.arange(nose.shape[1]), [0, 2 * 6, 3 * 6, nose.shape[1] - 1], [0.5, 0.6, 1.0, 1.0])
    add(nose, False, 1.0, widths=weight)
    # Lips: outer contour, and the inner contour (the mouth line when closed).
    add(catmull_rom(lm[:, 48:60], True), True, 1.1, False, False)
    inner = np.concatenate((lm[:, 48:49], lm[:, 60:65], lm[:, 54:55], lm[:, 65:68]), 1)
    add(catmull_rom(inner, True), True, 1.2, False, False)
    return per_face


_CIRCLE = np.linspace(0, 2 * np.pi, 48, endpoint=False)
_UNIT_CIRCLE = np.stack((np.cos(_CIRCLE), np.sin(_CIRCLE)), 1)  # (48,2)


def inside_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Which of points (..., P, 2) lie inside the closed polygon (..., V, 2) of the same batch:
    even-odd crossings of a ray toward +x, for all points and edges at once."""
    a = polygon[..., None, :, :]  # (...,1,V,2)
    b = np.roll(polygon, -1, axis=-2)[..., None, :, :]
    x, y = points[..., :, None, 0], points[..., :, None, 1]  # (...,P,1)
    spans = (a[..., 1] > y) != (b[..., 1] > y)  # edges the horizontal line through the point crosses
    with np.errstate(divide="ignore", invalid="ignore"):
        cross_x = a[..., 0] + (y - a[..., 1]) * (b[..., 0] - a[..., 0]) / (b[..., 1] - a[..., 1])
    return (spans & (x < cross_x)).sum(-1) % 2 == 1


def iris_strokes(grays: np.ndarray, lm: np.ndarray) -> list[list[Stroke]]:
    """Iris circle (clipped to the eye opening) and a filled pupil for each eye of a batch of
    faces (grays (B,R,R), landmarks (B,68,2)); unit-width templates.

    The iris centre is the darkness-weighted centroid of the eye opening; its radius is a
    fixed fraction of the eye width (the visible iris spans about 40% of it).
    """
    lm = lm.astype(np.float64)
    n = len(lm)
    eyes = np.stack((lm[:, 36:42], lm[:, 42:48]), 1)  # (B,2,6,2)
    openings = catmull_rom(eyes, True, 6)  # (B,2,36,2)
    eye_w = np.array([[float(np.linalg.norm(e[3] - e[0])) for e in f] for f in eyes])  # (B,2)
    centres = np.zeros((n, 2, 2))
    usable = eye_w >= 4
    for i in range(n):
        for k in range(2):
            if not usable[i, k]:
                continue
            mask = np.zeros(grays[i].shape, np.uint8)
            cv2.fillPoly(mask, [np.round(openings[i, k]).astype(np.int32)], 1)
            ys, xs = np.nonzero(mask)
            if len(xs) < 4:
                usable[i, k] = False
                continue
            dark = (1.0 - grays[i][ys, xs]) ** 4
            centres[i, k] = np.array([np.sum(dark * xs), np.sum(dark * ys)]) / max(dark.sum(), 1e-9)
    radii = 0.21 * eye_w
    circles = centres[..., None, :] + radii[..., None, None] * _UNIT_CIRCLE  # (B,2,48,2)
    # In float32, as OpenCV's polygon test took them (same decisions on the London faces).
    f32 = lambda x: x.astype(np.float32).astype(np.float64)  # noqa: E731
    inside_all = inside_polygon(f32(circles), f32(openings))  # (B,2,48)
    per_face: list[list[Stroke]] = [[] for _ in range(n)]
    for i in range(n):
        for k in range(2):
            if not usable[i, k]:
                continue
            inside, circle, radius = inside_all[i, k], circles[i, k], radii[i, k]
            if inside.all():
                per_face[i].append(Stroke(circle, True, 0.8))
            elif inside.any():
                start = int(np.argmin(inside))  # rotate so runs of inside points are contiguous
                inside, circle = np.roll(inside, -start), np.roll(circle, -start, axis=0)
                edges = np.flatnonzero(np.diff(inside.astype(np.int8)))
                for lo, hi in zip(edges[::2] + 1, list(edges[1::2] + 1) + [len(inside)]):
                    if hi - lo >= 3:
                        per_face[i].append(Stroke(circle[lo:hi], False, 0.8))
            pupil_r = 0.35 * radius
            per_face[i].append(Stroke(centres[i, k] + 0.5 * pupil_r * _UNIT_CIRCLE, True, 1.0, min_width=pupil_r))
    return per_face


def feature_mask(lm: np.ndarray, strokes: list[Stroke], shape: tuple[int, int], res: int) -> np.ndarray:
    """Where landmark strokes replace FDoG ink: a band around each feature stroke (so a contour
    is never drawn twice, slightly apart) and the whole brow regions. FDoG ink elsewhere inside
    the features (irises, lid creases, nostrils) is kept: it is what makes a face individual."""
    mask = np.zeros(shape, np.uint8)
    band = max(1, int(round(0.025 * res)))
    for closed in (False, True):  # one call each: the mask only takes 1s, so order does not matter
        lines = [np.round(st.pts).astype(np.int32) for st in strokes if st.closed == closed]
        if lines:
            cv2.polylines(mask, lines, closed, 1, thickness=band)
    pad = max(1, int(round(0.02 * res)))
    for idx in (slice(17, 22), slice(22, 27)):
        hull = cv2.convexHull(np.round(lm[idx]).astype(np.int32))
        cv2.fillConvexPoly(mask, hull, 1)
        cv2.polylines(mask, [hull], True, 1, thickness=2 * pad + 1)
    return mask.astype(bool)


# ------------------------------------------------------------------------------- rendering


def _segment_lengths(pts: np.ndarray) -> np.ndarray:
    """Lengths of the K-1 segments of a (K,2) polyline (np.linalg.norm is slow on small arrays)."""
    d = pts[1:] - pts[:-1]
    return np.hypot(d[:, 0], d[:, 1])


def _concat(polylines: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Polylines (K_i,2) as one array for maths on all of a face's strokes at once (a face has
    ~30; per-stroke NumPy calls cost more than the maths): the points (P,2) and stroke
    offsets (S+1,)."""
    off = np.zeros(len(polylines) + 1, np.int64)
    np.cumsum(np.fromiter((len(p) for p in polylines), np.int64, len(polylines)), out=off[1:])
    return np.concatenate(polylines), off


def _concat_arcs(polylines: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """_concat, and each point's arc length from its stroke's start (P,)."""
    pts, off = _concat(polylines)
    lens = np.diff(off)
    seg = _segment_lengths(pts)
    seg[off[1:-1] - 1] = 0.0  # the step from one stroke's last point to the next one's first
    cum = np.zeros(len(pts))
    np.cumsum(seg, out=cum[1:])
    return pts, off, cum - np.repeat(cum[off[:-1]], lens)


def render_strokes(strokes: list[Stroke], res: int, taper: float) -> np.ndarray:
    """Black anti-aliased strokes on white (res,res) uint8, drawn at 4x then area-downsampled.

    Width along a stroke: its base width x its per-point multiplier, thinned toward free ends
    over a few widths (`taper`), never below _MIN_WIDTH."""
    ss = _SUPERSAMPLE
    canvas = np.full((res * ss, res * ss), 255, np.uint8)
    polylines, multipliers, kept = [], [], []
    for st in strokes:
        pts, mult = st.pts, st.widths
        if st.closed:  # back to the first point
            pts = np.concatenate((pts, pts[:1]))
            mult = None if mult is None else np.concatenate((mult, mult[:1]))
        if len(pts) >= 2:
            polylines.append(pts)
            multipliers.append(np.ones(len(pts)) if mult is None else mult[: len(pts)])
            kept.append(st)
    if kept:
        pts, off, arc = _concat_arcs(polylines)
        lens = np.diff(off)
        per_point = lambda v: np.repeat(np.asarray(v), lens)  # noqa: E731  (per-stroke -> per-point)
        width = np.array([st.width for st in kept])
        length = np.maximum(arc[off[1:] - 1], 1e-9)
        ramp = per_point(np.minimum(0.5 * length, 6.0 * width + 4.0))  # taper over a few widths
        prof = np.ones(len(pts))
        start = per_point([st.taper_start and not st.closed for st in kept])
        prof[start] = np.minimum(1.0, np.clip(arc[start] / ramp[start], 0, 1))
        end = per_point([st.taper_end and not st.closed for st in kept])
        prof[end] = np.minimum(prof[end], np.clip((per_point(length)[end] - arc[end]) / ramp[end], 0, 1))
        widths = np.maximum(per_point(width) * np.concatenate(multipliers) * (1.0 - taper + taper * np.sqrt(prof)),
                            _MIN_WIDTH)
        shift = 4  # cv2 fixed-point fraction bits: sub-pixel endpoints
        fixed = np.round((pts * ss + (ss - 1) / 2) * (1 << shift)).astype(np.int32)
        thick = np.maximum(1, np.round(0.5 * (widths[:-1] + widths[1:]) * ss)).astype(np.int64)  # per segment
        inside = np.ones(len(thick), bool)  # segments within a stroke, not between two
        inside[off[1:-1] - 1] = False
        # Runs of segments of one thickness within one stroke: [first, last] segment indices.
        change = np.ones(len(thick) + 1, bool)
        change[1:-1] = thick[1:] != thick[:-1]
        change[off[1:-1] - 1] = change[off[1:-1]] = True
        bounds = np.flatnonzero(change)
        first, last = bounds[:-1], bounds[1:] - 1
        ok = inside[first]
        runs: dict[int, list[np.ndarray]] = {}  # thickness -> polylines of segments that thick
        for a, b, th in zip(first[ok].tolist(), last[ok].tolist(), thick[first[ok]].tolist()):
            runs.setdefault(th, []).append(fixed[a : b + 2])
        # One call per thickness: a call per segment costs more in Python than the drawing.
        # Black anti-aliased ink darkens multiplicatively, so the drawing order does not matter.
        for th, lines in runs.items():
            cv2.polylines(canvas, lines, False, 0, th, cv2.LINE_AA, shift)
    return cv2.resize(canvas, (res, res), interpolation=cv2.INTER_AREA)


# --------------------------------------------------------------------------- per-face part

JitterDraws = tuple[np.ndarray, list[tuple[float, np.ndarray]]]  # whole-stroke shift; 2 x (wavelength, phases)


def _jitter_draws(n_points: int, amp: float, rng: np.random.Generator) -> JitterDraws | None:
    """The random numbers of one stroke's wobble, drawn in the stroke's turn."""
    if amp <= 0 or n_points < 2:
        return None
    shift = rng.normal(0, 0.5 * amp, 2)
    return shift, [(float(rng.uniform(30, 90)), rng.uniform(0, 2 * np.pi, 2)) for _ in range(2)]


def jitter_strokes(polylines: list[np.ndarray], draws: list[JitterDraws | None], amp: float) -> list[np.ndarray]:
    """Low-frequency hand wobble: each stroke shifted as a whole, plus two sine offsets along
    its arc with wavelengths that grow with its length."""
    idx = [i for i, d in enumerate(draws) if d is not None]
    if not idx:
        return polylines
    pts, off, arc = _concat_arcs([polylines[i] for i in idx])
    lens = np.diff(off)
    length = arc[off[1:] - 1]
    out = pts + np.repeat(np.stack([draws[i][0] for i in idx]), lens, axis=0)
    for k in range(2):
        wavelength = np.array([draws[i][1][k][0] for i in idx]) * (1 + length / 200)
        phase = np.stack([draws[i][1][k][1] for i in idx])
        out = out + amp * 0.5 * np.sin(2 * np.pi * arc[:, None] / np.repeat(wavelength, lens)[:, None]
                                       + np.repeat(phase, lens, axis=0))
    result = list(polylines)
    for i, piece in zip(idx, np.split(out, off[1:-1])):
        result[i] = piece
    return result


def feature_templates(grays: np.ndarray, landmarks: np.ndarray) -> list[list[Stroke]]:
    """Landmark-guided strokes (features, then irises) of a batch of faces, unit width."""
    return [a + b for a, b in zip(feature_strokes(landmarks), iris_strokes(grays, landmarks))]


def sketch_one(
    response: np.ndarray, gray: np.ndarray, landmarks: np.ndarray, style: SketchStyle, rng: np.random.Generator,
    templates: list[Stroke] | None = None,
) -> np.ndarray:
    """One face: FDoG response and normalised gray (R,R) float, landmarks (68,2) -> (R,R) uint8.
    `templates`: this face's feature_templates when computed with its batch's."""
    res = response.shape[0]
    px = res / REF_RES
    ink = response < -style.threshold
    features: list[Stroke] = []
    if style.feature_strokes:
        fw = style.width * style.feature_width * px
        if templates is None:
            templates = feature_templates(gray[None], landmarks[None])[0]
        features = [st.scaled(fw) for st in templates]
        ink &= ~feature_mask(landmarks, features, ink.shape, res)
    skel = remove_small_objects(skeletonize(ink), max_size=int(style.spur_length * px), connectivity=2)
    strength = np.clip(-response, 0, None)

    chains = [c for c in trace_skeleton(skel) if not (c[2] != c[3] and len(c[0]) < style.spur_length * px)]
    chains = link_gaps(chains, style.gap * px)
    amp = style.jitter * px
    # Which chains become strokes, drawing each one's random numbers in its turn; then the
    # maths on all of them at once.
    kept: list[Chain] = []
    draws: list[JitterDraws | None] = []
    if chains:
        _, off, arc = _concat_arcs([c[0] for c in chains])
        lengths = arc[off[1:] - 1].tolist()
        for chain, length in zip(chains, lengths):
            _, closed, j0, j1 = chain
            if not (j0 or j1 or closed) and length < style.min_length * px:
                continue
            if rng.random() < style.dropout:
                continue
            kept.append(chain)
            draws.append(_jitter_draws(len(chain[0]), amp, rng))
    smoothed: list[np.ndarray] = []
    pressures: list[np.ndarray] = []
    if kept:
        pts, off = _concat([c[0] for c in kept])
        closed = np.array([c[1] for c in kept])
        ij = np.clip(np.round(pts).astype(int), 0, res - 1)
        pressure = np.clip(strength[ij[:, 1], ij[:, 0]] / max(style.threshold, 1e-6), 0, 4)
        pressure = smooth_strokes(pressure, off, 3.0, np.zeros(len(kept), bool), anchored=False)
        widths = 1.0 + style.width_variation * (np.clip(pressure, 1, 3) - 2.0) / 1.0
        smoothed = np.split(smooth_strokes(pts, off, style.smoothing * px, closed, anchored=True), off[1:-1])
        pressures = np.split(widths, off[1:-1])
    draws += [_jitter_draws(len(st.pts), amp, rng) for st in features]
    wobbly = jitter_strokes(smoothed + [st.pts for st in features], draws, amp)
    strokes: list[Stroke] = []
    for (_, closed, j0, j1), widths, pts in zip(kept, pressures, wobbly):
        step = 2 if len(pts) > 4 else 1  # smoothed strokes are dense: every other point suffices
        strokes.append(Stroke(pts[::step], closed, style.width * px, not j0, not j1, widths[::step]))
    for st, pts in zip(features, wobbly[len(kept):]):
        st.pts = pts
        strokes.append(st)
    return render_strokes(strokes, res, style.taper)


def draw_faces(
    responses: np.ndarray, grays: np.ndarray, landmarks: np.ndarray, style: SketchStyle, seed: int, first_index: int
) -> np.ndarray:
    """Sketches of consecutive faces first_index, first_index+1, ...: responses and grays
    (B,R,R) float, landmarks (B,68,2) -> (B,R,R) uint8. A pool worker's unit of work."""
    out = np.empty(responses.shape, np.uint8)
    grays, landmarks = grays.astype(np.float64), landmarks.astype(np.float64)
    templates = feature_templates(grays, landmarks) if style.feature_strokes else [None] * len(responses)
    for j in range(len(responses)):
        rng = face_rng(seed, first_index + j)
        out[j] = sketch_one(responses[j].astype(np.float64), grays[j], landmarks[j], sample_style(style, rng), rng,
                            templates[j])
    return out


# Starting workers costs 2-3 s (each pool's fork server imports torch). On 2 cores a pool
# never paid (python -m benchmarks.sketch --n 32 --resolution 512 --batch-size 4 --workers 2
# vs 1: 4.4 vs 6.9 faces/s): one process already keeps both busy, drawing on one thread
# while torch computes the next responses on the other.
# Unless asked for, a pool is started only with this many cores and this much work.
POOL_MIN_CORES = 4
POOL_MIN_PIXELS = 10_000_000  # ~600 faces at 128 px, ~40 at 512


def sketch_workers(workers: int | None, n_faces: int, res: int, batch_size: int) -> int:
    """How many processes to sketch with. A count given here or in $DFE_WORKERS is obeyed (up
    to one per batch); otherwise all cores, only where a pool can pay for starting it."""
    asked = workers is not None or bool(os.environ.get(WORKERS_ENV, "").strip())
    if not asked and (available_cores() < POOL_MIN_CORES or n_faces * res * res < POOL_MIN_PIXELS):
        return 1
    return max(1, min(resolve_workers(workers), -(-n_faces // batch_size)))

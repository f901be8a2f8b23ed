"""Sketch synthesis (pipeline/data/sketch/synthesis.py) and stroke statistics (pipeline/data/sketch/strokes.py)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.data.sketch.synthesis import SketchStyle, synthesize_sketches
from pipeline.data.sketch.strokes import canny_sketch, compare_with_canny, stroke_stats

LONDON = Path(os.environ.get("DFE_LONDON_DIR", Path(__file__).resolve().parents[2] / "shared/datasets/london-faces"))


def _align(img: np.ndarray, lm: np.ndarray, res: int) -> tuple[np.ndarray, np.ndarray]:
    """FFHQ-style similarity crop (DESIGN.md §2 Alignment) of a photo and its landmarks."""
    el, er = lm[36:42].mean(0), lm[42:48].mean(0)
    e, m = (el + er) / 2, (lm[48] + lm[54]) / 2
    e2e, e2m = er - el, m - e
    x = e2e - np.array([-e2m[1], e2m[0]])
    x = x / np.linalg.norm(x) * max(2.0 * np.linalg.norm(e2e), 1.8 * np.linalg.norm(e2m))
    y = np.array([-x[1], x[0]])
    c = e + 0.1 * e2m
    a = cv2.getAffineTransform(np.float32([c - x - y, c + x - y, c + x + y]), np.float32([[0, 0], [res, 0], [res, res]]))
    out = cv2.warpAffine(img, a, (res, res), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT)
    return out, (lm @ a[:, :2].T + a[:, 2]).astype(np.float32)


@pytest.fixture(scope="module")
def faces() -> tuple[np.ndarray, np.ndarray]:
    """Three real London faces aligned at 256 px with dlib landmarks."""
    dlib = pytest.importorskip("dlib")
    spec = importlib.util.find_spec("face_recognition_models")
    photos = sorted((LONDON / "neutral").glob("*.jpg"))[:3]
    if spec is None or len(photos) < 3:
        pytest.skip("needs the London faces and the dlib 68-point model")
    model = Path(list(spec.submodule_search_locations)[0]) / "models/shape_predictor_68_face_landmarks.dat"
    detector, predictor = dlib.get_frontal_face_detector(), dlib.shape_predictor(str(model))
    images, landmarks = [], []
    for p in photos:
        img = cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)
        small = cv2.resize(img, None, fx=0.25, fy=0.25, interpolation=cv2.INTER_AREA)
        box = max(detector(small, 0), key=lambda r: r.area())
        box = dlib.rectangle(box.left() * 4, box.top() * 4, box.right() * 4, box.bottom() * 4)
        lm = np.array([[q.x, q.y] for q in predictor(img, box).parts()], np.float64)
        im, lm = _align(img, lm, 256)
        images.append(im)
        landmarks.append(lm)
    return np.stack(images), np.stack(landmarks)


def _resize(faces: tuple[np.ndarray, np.ndarray], res: int) -> tuple[np.ndarray, np.ndarray]:
    images, lms = faces
    out = np.stack([cv2.resize(im, (res, res), interpolation=cv2.INTER_AREA if res < 256 else cv2.INTER_CUBIC) for im in images])
    return out, (lms * (res / images.shape[1])).astype(np.float32)


@pytest.mark.parametrize("res", [64, 128, 256, 512])
def test_shapes_dtype_range(faces, res):
    images, lms = _resize(faces, res)
    out = synthesize_sketches(images[:1], lms[:1], SketchStyle(), seed=0)
    assert out.shape == (1, res, res) and out.dtype == np.uint8
    ink = out < 128
    assert 0.005 < ink.mean() < 0.25  # some strokes, mostly white paper
    assert out.max() == 255 and out.min() < 64  # white background, dark strokes


def test_deterministic_and_batch_independent(faces):
    images, lms = _resize(faces, 128)
    style = SketchStyle(randomize=0.7)
    a = synthesize_sketches(images, lms, style, seed=3, batch_size=3)
    b = synthesize_sketches(images, lms, style, seed=3, batch_size=1)
    c = synthesize_sketches(images, lms, style, seed=3, batch_size=2)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)


def test_randomisation_changes_output(faces):
    images, lms = _resize(faces, 128)
    fixed = synthesize_sketches(images[:1], lms[:1], SketchStyle(), seed=0)
    r0 = synthesize_sketches(images[:1], lms[:1], SketchStyle(randomize=1.0), seed=0)
    r1 = synthesize_sketches(images[:1], lms[:1], SketchStyle(randomize=1.0), seed=1)
    differs = lambda x, y: np.mean(np.abs(x.astype(int) - y.astype(int)) > 64) > 0.005  # noqa: E731
    assert differs(fixed, r0) and differs(r0, r1)
    # Randomised sketches are still sketches: similar ink, not noise.
    assert 0.3 < (r1 < 128).mean() / (fixed < 128).mean() < 3.0


def test_strokes_at_features_and_blank_elsewhere(faces):
    """On a flat grey photo only the landmark-guided features are drawn: ink at the eyes and
    mouth, paper white far from every landmark curve."""
    _, lms = faces
    lm = lms[:1]
    flat = np.full((1, 256, 256, 3), 128, np.uint8)
    out = synthesize_sketches(flat, lm, SketchStyle(), seed=0)[0]
    ink = out < 128
    for idx in (range(36, 42), range(42, 48), range(48, 60)):
        x0, y0 = np.floor(lm[0, list(idx)].min(0)).astype(int) - 2
        x1, y1 = np.ceil(lm[0, list(idx)].max(0)).astype(int) + 3
        assert ink[y0:y1, x0:x1].mean() > 0.05
    # Distance from every pixel to the nearest landmark polyline (all 68 points joined).
    guide = np.full((256, 256), 255, np.uint8)
    for seg in (range(0, 17), range(17, 22), range(22, 27), range(27, 36), range(36, 42), range(42, 48), range(48, 68)):
        cv2.polylines(guide, [np.round(lm[0, list(seg)]).astype(np.int32)], False, 0, 1)
    far = cv2.distanceTransform(guide, cv2.DIST_L2, 5) > 0.06 * 256
    assert far.mean() > 0.5 and not ink[far].any()
    # A flat photo has no image contours: no ink without landmark strokes at all.
    plain = synthesize_sketches(flat, lm, SketchStyle(feature_strokes=False), seed=0)[0]
    assert (plain == 255).all()


def _line_image(dashed: bool) -> np.ndarray:
    img = np.full((64, 200), 255, np.uint8)
    if dashed:
        for x in range(10, 190, 12):
            cv2.line(img, (x, 32), (x + 5, 32), 0, 2)
    else:
        cv2.line(img, (10, 32), (189, 32), 0, 2)
    return img


def test_stroke_stats_on_drawn_lines():
    solid = stroke_stats(_line_image(dashed=False))
    assert solid["n_fragments"] == 1
    assert 165 <= solid["mean_stroke_length"] <= 182  # a 180 px line, minus thinning at its ends
    dashed = stroke_stats(_line_image(dashed=True))
    assert dashed["n_fragments"] == 15
    assert dashed["mean_stroke_length"] < 10
    assert np.isclose(solid["ink_fraction"], (_line_image(False) < 128).mean())
    assert stroke_stats(255 - _line_image(False), black_on_white=False)["n_fragments"] == 1
    blank = stroke_stats(np.full((32, 32), 255, np.uint8))
    assert blank == {"mean_stroke_length": 0.0, "n_fragments": 0, "ink_fraction": 0.0}


def test_canny_sketch_is_black_on_white(faces):
    edges = canny_sketch(faces[0][0])
    assert edges.shape == (256, 256) and edges.dtype == np.uint8
    assert set(np.unique(edges)) <= {0, 255} and 0.005 < (edges == 0).mean() < 0.3


def test_longer_strokes_fewer_fragments_than_canny(faces):
    images, lms = faces
    sketches = synthesize_sketches(images, lms, SketchStyle(), seed=0)
    cmp = compare_with_canny(images, sketches)
    assert cmp["stroke_length_ratio"] > 1.3, cmp
    assert cmp["fragment_ratio"] > 1.7, cmp


def test_worker_pool_gives_identical_sketches(faces):
    """Drawing in worker processes (own pool or a caller's) changes nothing in the output."""
    from pipeline.core.parallel import process_pool

    images, lms = _resize(faces, 128)
    images, lms = np.concatenate([images, images]), np.concatenate([lms, lms])  # 6 batches of 1
    style = SketchStyle(randomize=0.7)
    serial = synthesize_sketches(images, lms, style, seed=5, batch_size=1, workers=1)
    np.testing.assert_array_equal(synthesize_sketches(images, lms, style, seed=5, batch_size=1, workers=2), serial)
    with process_pool(2) as pool:
        assert pool is not None
        np.testing.assert_array_equal(synthesize_sketches(images, lms, style, seed=5, batch_size=2, pool=pool), serial)


# One stroke at a time, the plain way: the references the batched smooth_strokes must equal.


def gaussian_smooth(x: np.ndarray, sigma: float, mode: str) -> np.ndarray:
    """Gaussian filter along axis 0, as scipy.ndimage.gaussian_filter1d (truncate 4) with mode
    'nearest' or 'wrap'."""
    radius = int(4.0 * sigma + 0.5)
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    n = len(x)
    idx = np.arange(-radius, n + radius)
    padded = x[np.clip(idx, 0, n - 1) if mode == "nearest" else idx % n]
    if x.ndim == 1:
        return np.convolve(padded, kernel, "valid")
    return np.stack([np.convolve(padded[:, c], kernel, "valid") for c in range(x.shape[1])], 1)


def smooth_polyline(pts: np.ndarray, sigma: float, closed: bool) -> np.ndarray:
    """Gaussian-smooth (K,2) coordinates along the curve; open ends stay anchored."""
    if sigma <= 0 or len(pts) < 3:
        return pts
    if closed:
        return gaussian_smooth(pts, sigma, "wrap")
    # Reflect through the end points ("odd" extension) so ends are not pulled inward.
    pad = min(len(pts) - 1, int(np.ceil(3 * sigma)))
    head = 2 * pts[0] - pts[pad:0:-1]
    tail = 2 * pts[-1] - pts[-2 : -pad - 2 : -1]
    ext = np.concatenate((head, pts, tail))
    return gaussian_smooth(ext, sigma, "nearest")[pad : pad + len(pts)]


def test_gaussian_smooth_matches_scipy():
    from scipy.ndimage import gaussian_filter1d

    rng = np.random.default_rng(0)
    for n in (3, 9, 50):  # shorter than the kernel too
        for sigma in (0.7, 3.0):
            for mode in ("nearest", "wrap"):
                x = rng.normal(size=(n, 2))
                np.testing.assert_allclose(gaussian_smooth(x, sigma, mode), gaussian_filter1d(x, sigma, axis=0, mode=mode), atol=1e-12)
                np.testing.assert_allclose(gaussian_smooth(x[:, 0], sigma, mode), gaussian_filter1d(x[:, 0], sigma, mode=mode), atol=1e-12)


def test_smooth_strokes_matches_one_stroke_at_a_time():
    """The batched smoothing of a face's strokes equals smoothing each stroke alone: closed
    ones wrap, open ones are anchored at their ends, strokes of 1-2 points stay put."""
    from pipeline.data.sketch.draw import smooth_strokes

    rng = np.random.default_rng(0)
    lengths, closed = [1, 2, 3, 5, 40, 12, 7, 60], np.array([False, False, True, False, True, False, True, False])
    strokes = [rng.normal(size=(k, 2)).cumsum(0) for k in lengths]
    off = np.concatenate(([0], np.cumsum(lengths)))
    for sigma in (0.8, 2.0, 5.0):
        batched = smooth_strokes(np.concatenate(strokes), off, sigma, closed, anchored=True)
        for k, (s, c) in enumerate(zip(strokes, closed)):
            np.testing.assert_allclose(batched[off[k]:off[k + 1]], smooth_polyline(s, sigma, bool(c)), atol=1e-12)
        values = [s[:, 0] for s in strokes]
        batched = smooth_strokes(np.concatenate(values), off, sigma, np.zeros(len(lengths), bool), anchored=False)
        for k, v in enumerate(values):
            np.testing.assert_allclose(batched[off[k]:off[k + 1]], gaussian_smooth(v, sigma, "nearest"), atol=1e-12)


def test_inside_polygon_agrees_with_opencv():
    """The vectorised even-odd test decides as cv2.pointPolygonTest on points off the edges."""
    from pipeline.data.sketch.draw import catmull_rom, inside_polygon

    rng = np.random.default_rng(0)
    # Eye-like closed splines (as the iris test uses) and random star-shaped polygons.
    eyes = np.array([[10, 20], [14, 16], [20, 15], [26, 19], [20, 23], [14, 23]], np.float64)
    polygons = [catmull_rom(eyes + rng.normal(0, 1.5, eyes.shape), True, 6) for _ in range(20)]
    angles = np.sort(rng.uniform(0, 2 * np.pi, (20, 12)), 1)
    polygons += [np.stack((np.cos(a), np.sin(a)), 1) * rng.uniform(3, 9, (12, 1)) + 20 for a in angles]
    checked = 0
    for poly in polygons:
        pts = rng.uniform(8, 32, (200, 2))
        ours = inside_polygon(pts, poly)
        for (x, y), got in zip(pts, ours):
            d = cv2.pointPolygonTest(poly.astype(np.float32), (float(x), float(y)), True)
            if abs(d) > 1e-3:  # on an edge either answer is right
                assert got == (d > 0)
                checked += 1
    assert checked > 7000
    batch = np.stack(polygons[:4])
    np.testing.assert_array_equal(inside_polygon(np.repeat(pts[None], 4, 0), batch),
                                  np.stack([inside_polygon(pts, p) for p in polygons[:4]]))


def test_catmull_rom_batch_equals_one_curve_at_a_time():
    from pipeline.data.sketch.draw import catmull_rom

    ctrl = np.random.default_rng(1).normal(0, 10, (5, 7, 2))
    for closed in (False, True):
        batch = catmull_rom(ctrl, closed, 6)
        for one, c in zip(batch, ctrl):
            np.testing.assert_array_equal(one, catmull_rom(c, closed, 6))
        assert batch.shape == (5, 7 * 6 if closed else 6 * 6 + 1, 2)


def test_quantile_rows_matches_torch_quantile():
    """The per-face 1% / 99% exposure stretch reads the same values torch.quantile would."""
    import torch

    from pipeline.data.sketch.synthesis import _quantile_rows

    g = torch.Generator().manual_seed(0)
    for n in (1, 2, 3, 7, 100, 128 * 128):
        x = torch.rand(4, n, generator=g)
        x[:, : n // 3] = 0.5  # ties
        for q in (0.0, 0.01, 0.3, 0.5, 0.99, 1.0):
            torch.testing.assert_close(_quantile_rows(x, q), torch.quantile(x, q, dim=1), rtol=0, atol=1e-6)


def test_overlap_batches_cover_every_face_once_in_order():
    from pipeline.data.sketch.synthesis import overlap_batches

    for n, size in [(0, 16), (1, 16), (5, 16), (16, 16), (17, 16), (40, 16), (204, 16), (10, 1), (7, 3)]:
        batches = overlap_batches(n, size)
        assert [i for a, b in batches for i in range(a, b)] == list(range(n))
        assert all(b - a <= size for a, b in batches)
    sizes = [b - a for a, b in overlap_batches(204, 16)]
    assert sizes[:4] == sizes[-4:] == [4, 4, 4, 4] and max(sizes) == 16  # short waits at both ends

"""editing.compose: the one composition step (the photo carries the person)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline.editing.compose import (ComposeSettings, change_support, compose, geometry_change, landmark_motion, sketch_motion,
                                      unfold, warp_aligned)

R = 64


def _sketch(x: int) -> np.ndarray:
    s = np.full((R, R), 255, np.uint8)
    cv2.line(s, (x, 12), (x, 52), 0, 1)
    return s


def _face(x: int, size: int = R) -> np.ndarray:
    """A grey face with a dark vertical bar at x (aligned px), drawn at `size` px."""
    k = size / R
    img = np.full((size, size, 3), 170, np.uint8)
    img += (np.arange(size)[None, :, None] % 7).astype(np.uint8)  # texture: moving pixels is visible
    cv2.rectangle(img, (int((x - 2) * k), int(12 * k)), (int((x + 2) * k), int(52 * k)), (40, 30, 30), -1)
    return img


def test_an_edit_that_changes_nothing_returns_the_photo_bit_for_bit():
    photo = _face(30, 4 * R)
    t = np.array([[0.25, 0, 0], [0, 0.25, 0]])
    r = _face(30)
    out = compose(photo, t, geometry=(r, r), sketches=(_sketch(30), _sketch(30)),
                  appearance=(r, r), inner_mask=np.ones((R, R), np.float32))
    assert np.array_equal(out, photo)


def test_sketch_motion_follows_the_moved_stroke():
    m = sketch_motion(_sketch(30), _sketch(35))
    # backward: the edited face at x=35 shows the photo's pixel at x=30
    assert m[32, 35, 0] == pytest.approx(-5, abs=1.5)
    assert np.abs(m[:, :10]).max() < 0.5 and np.abs(m[:, 55:]).max() < 0.5  # far from the strokes: still


def test_a_geometry_edit_moves_the_photos_own_pixels_and_nothing_else():
    photo = _face(30, 4 * R)
    t = np.array([[0.25, 0, 0], [0, 0.25, 0]])
    r0, r1 = _face(30), _face(35)
    out = compose(photo, t, geometry=(r0, r1), sketches=(_sketch(30), _sketch(35)))
    dark = out[4 * 32, :, 0] < 100
    centre = np.flatnonzero(dark).mean() / 4
    assert centre == pytest.approx(35, abs=1.5)  # the bar moved where the drawing moved it
    assert np.array_equal(out[:, : 4 * 12], photo[:, : 4 * 12])  # far from the edit: the photo itself
    assert np.array_equal(out[:, 4 * 52:], photo[:, 4 * 52:])


def test_the_drawing_moves_the_photo_even_where_the_networks_barely_redraw():
    """With sketches the strokes say where: a render that ignores the edit (r0 == r1, as the
    small models nearly do for a redrawn eye) still has the photo follow the drawing."""
    photo = _face(30, 4 * R)
    t = np.array([[0.25, 0, 0], [0, 0.25, 0]])
    r = _face(30)
    out = compose(photo, t, geometry=(r, r), sketches=(_sketch(30), _sketch(35)))
    centre = np.flatnonzero(out[4 * 32, :, 0] < 100).mean() / 4
    assert centre == pytest.approx(35, abs=1.5)


def test_edits_without_sketches_move_only_where_the_model_changed_the_face():
    """Attributes have no strokes: the renders' own change says where; none, and the photo stays."""
    photo = _face(30, 4 * R)
    t = np.array([[0.25, 0, 0], [0, 0.25, 0]])
    r = _face(30)
    assert not change_support(r, r).any()
    assert np.array_equal(compose(photo, t, geometry=(r, r)), photo)
    out = compose(photo, t, geometry=(r, _face(35)))
    centre = np.flatnonzero(out[4 * 32, :, 0] < 100).mean() / 4
    assert centre > 32  # the renders' motion carried the bar toward the edit


def test_landmark_motion_carries_each_point_by_its_shift_and_holds_the_rest():
    points = np.array([[20.0, 32.0], [44.0, 32.0], [32.0, 50.0]], np.float32)
    shift = np.array([[4.0, 0.0], [0.0, 0.0], [0.0, 0.0]], np.float32)
    m = landmark_motion(points, shift, R, sigma=0.06)
    # backward: where point 0 lands (24, 32), the output shows the photo at (20, 32)
    assert m[32, 24, 0] == pytest.approx(-4, abs=0.3) and abs(m[32, 24, 1]) < 0.3
    assert np.abs(m[32, 44]).max() < 0.3 and np.abs(m[50, 32]).max() < 0.3  # points that stay hold still
    assert np.abs(m[:, 56:]).max() < 0.1 and np.abs(m[:6]).max() < 0.1  # far from every point: nothing
    dot = np.full((R, R, 3), 200, np.uint8)
    dot[31:34, 19:22] = 0
    moved = warp_aligned(dot, m)
    assert moved[32, 24, 0] < 60 and moved[32, 20, 0] > 120  # the dot went with its point


def _smile_points(size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """68 dlib-ordered points (a ring of face points, a closed mouth) and a smile's shift: the
    corners out and up, the lips apart a little, every other point still."""
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    ring = np.stack([64 + 40 * np.cos(t), 60 + 44 * np.sin(t)], 1)  # 0-47: stand-ins for jaw, brows, nose, eyes
    a = np.linspace(np.pi, 0, 7)  # 48-54: upper outer lip, corner to corner
    upper = np.stack([64 + 16 * np.cos(a), 88 - 5 * np.sin(a)], 1)
    lower = np.stack([64 - 16 * np.cos(a[1:-1]), 88 + 6 * np.sin(a[1:-1])], 1)  # 55-59
    b = np.linspace(np.pi, 0, 5)
    inner_up = np.stack([64 + 12 * np.cos(b), 88 - 0.5 * np.sin(b)], 1)  # 60-64
    inner_lo = np.stack([64 - 12 * np.cos(b[1:-1]), 88 + 0.5 * np.sin(b[1:-1])], 1)  # 65-67
    points = np.concatenate([ring, upper, lower, inner_up, inner_lo]).astype(np.float32) * size / 128
    shift = np.zeros_like(points)
    shift[[48, 60]] = (-3, -2)
    shift[[54, 64]] = (3, -2)
    shift[49:54, 1], shift[55:60, 1] = -1, 1
    shift[61:64, 1], shift[65:68, 1] = -1.5, 1.5
    return points, shift


def test_landmark_motion_passes_land_the_points_on_their_moves_without_folding():
    """The plain splat carries a smile's mouth corners only part of the way (their neighbours
    move otherwise); correction passes land them, and the field does not fold. The inner lips
    are left to the splat: a closed mouth's upper and lower inner points nearly coincide."""
    from pipeline.editing.compose import INNER_LIPS, _area_ratio, _at

    points, shift = _smile_points()
    fitted = [i for i in range(68) if i not in INNER_LIPS]
    miss = {}
    for passes in (0, 3, 6):
        m = landmark_motion(points, shift, 128, sigma=0.06, passes=passes)
        miss[passes] = np.linalg.norm(_at(m, points + shift) + shift, axis=1)
        assert _area_ratio(m).min() > 0.2, passes  # no fold anywhere
    moving = [i for i in fitted if np.abs(shift[i]).max() > 0]
    mean = {k: v[moving].mean() for k, v in miss.items()}
    assert mean[0] > 0.5  # what the passes are for: the splat alone leaves points short of their moves
    assert mean[6] < mean[3] < 0.85 * mean[0], mean  # each pass brings them nearer
    still = [i for i in fitted if not np.abs(shift[i]).any()]
    assert miss[6][still].max() < 0.3  # points that stay still stay still
    assert np.array_equal(landmark_motion(points, shift, 128, 0.06, passes=0), landmark_motion(points, shift, 128, 0.06))


def test_a_given_motion_moves_the_photo_even_where_the_renders_agree():
    """An attribute's landmark motion: the photo moves by it inside `within`, exactly still outside;
    with renders that agree (r0 == r1) nothing is added, and a zero motion gives the photo back."""
    photo = _face(30, 4 * R)
    t = np.array([[0.25, 0, 0], [0, 0.25, 0]])
    r = _face(30)
    motion = np.zeros((R, R, 2), np.float32)
    assert np.array_equal(compose(photo, t, geometry=(r, r), motion=motion), photo)
    motion[..., 0] = -5.0  # everywhere: the face shows the photo 5 px to the left
    within = np.zeros((R, R), np.float32)
    within[:, 20:50] = 1.0
    out = compose(photo, t, geometry=(r, r), motion=motion, within=within)
    centre = np.flatnonzero(out[4 * 32, :, 0] < 100).mean() / 4
    assert centre == pytest.approx(35, abs=1.0)
    assert np.array_equal(out[:, : 4 * 19], photo[:, : 4 * 19]) and np.array_equal(out[:, 4 * 51 :], photo[:, 4 * 51 :])


def test_an_appearance_edit_changes_colour_inside_the_mask_only():
    photo = _face(30, 2 * R)
    t = np.array([[0.5, 0, 0], [0, 0.5, 0]])
    mask = np.zeros((R, R), np.float32)
    mask[16:48, 16:48] = 1.0
    a0 = np.full((R, R, 3), 150, np.uint8)
    a1 = a0.copy()
    a1[..., 0] = 200  # the donor's renders are redder
    out = compose(photo, t, appearance=(a0, a1), inner_mask=mask, settings=ComposeSettings(lightness=0.0))
    inside = (slice(2 * 20, 2 * 44), slice(2 * 20, 2 * 44))
    gain = out[inside].astype(int).mean((0, 1)) - photo[inside].astype(int).mean((0, 1))
    assert gain[0] > 15 and gain[2] < 5
    assert np.array_equal(out[:2 * 14], photo[:2 * 14])  # outside the mask: untouched
    with pytest.raises(ValueError, match="inner-face mask"):
        compose(photo, t, appearance=(a0, a1))


def test_photo_colour_shift_follows_each_parts_donor():
    """The appearance photos' own colour difference: the whole face's donor everywhere, a
    mouth donor inside the mouth box only."""
    from pipeline.core.profiles import part_boxes
    from pipeline.editing.compose import photo_colour_shift

    own = np.full((R, R, 3), 150, np.uint8)
    red = own.copy()
    red[..., 0] = 210
    boxes = part_boxes(R)
    everywhere, where = photo_colour_shift(own, {"bg": red}, boxes)
    assert (everywhere[..., 1] > 10).all() and (where == 1).all()  # a* up everywhere
    mouth_only, where = photo_colour_shift(own, {"mouth": red}, boxes)
    x, y, s = boxes["mouth"]
    assert mouth_only[y + s // 2, x + s // 2, 1] > 10 and abs(mouth_only[2, 2, 1]) < 0.5
    assert where[y + s // 2, x + s // 2] > 0.8 and where[2, 2] < 0.05  # the eyes and the rest keep their own


def _area_ratio(m: np.ndarray) -> np.ndarray:
    dxx, dxy = np.gradient(m[..., 0], axis=1), np.gradient(m[..., 0], axis=0)
    dyx, dyy = np.gradient(m[..., 1], axis=1), np.gradient(m[..., 1], axis=0)
    return (1 + dxx) * (1 + dyy) - dxy * dyx


def test_unfold_smooths_only_where_the_motion_folds_the_photo():
    """A flow gone wrong (a sharp step that folds the photo over itself) is smoothed until no
    fold is left; a gentle motion, and the motion far from the fold, stay exactly as they were."""
    gentle = np.zeros((R, R, 2), np.float32)
    gentle[..., 0] = np.sin(np.arange(R) / R * np.pi)[None, :] * 2  # stretches at most ~10 %
    assert np.array_equal(unfold(gentle, 0.3), gentle)
    fold = np.zeros((R, R, 2), np.float32)
    fold[20:44, 30:, 0] = -6.0  # a 6 px jump: the backward map runs back over itself at x = 30
    assert _area_ratio(fold).min() < 0
    out = unfold(fold, 0.3)
    assert _area_ratio(out).min() >= 0.3 - 1e-3
    assert np.array_equal(out[:, :10], fold[:, :10]) and np.array_equal(out[:, 55:][:5], fold[:, 55:][:5])
    assert np.abs(out[32, 45, 0] + 6.0) < 1.5  # the move itself survives, away from the step


def test_the_residual_goes_only_where_the_caller_allows():
    """What the move does not explain (here: a new dark patch the renders drew) is added inside
    `residual_within` only; with residual_inner off it goes wherever the model changed the face."""
    r0 = _face(30)
    r1 = r0.copy()
    cv2.rectangle(r1, (44, 8), (56, 20), (20, 20, 20), -1)  # something drawn that no move explains
    inner = np.zeros((R, R), np.float32)
    inner[:, :50] = 1.0  # the patch straddles the edge of the allowed region
    sk = (_sketch(30), _sketch(30))
    sk_edit = (sk[0], sk[1].copy())
    cv2.rectangle(sk_edit[1], (44, 8), (56, 20), 0, 1)
    _, res = geometry_change(r0, r1, sk_edit, ComposeSettings(), None, None, inner)
    assert np.abs(res[14, 46]).max() > 20 and np.abs(res[14, 54]).max() == 0
    _, everywhere = geometry_change(r0, r1, sk_edit, ComposeSettings(), None, None, None)
    assert np.abs(everywhere[14, 54]).max() > 20

"""Plain landmark line drawings and the similarity that moves one face's shape into another's frame."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.data.sketch.contours import anchor_points, contour_drawing, warp_into_frame
from tests.helpers_models import aligned_london

R = 128


@pytest.fixture(scope="module")
def two_faces(london):
    _, lms = aligned_london([london / "neutral" / "001_03.jpg", london / "neutral" / "004_03.jpg"], R)
    return lms


def test_contour_drawing_inks_the_landmark_contours_only(two_faces):
    lm = two_faces[0]
    d = contour_drawing(lm, R)
    assert d.shape == (R, R) and d.dtype == np.uint8
    ink = d < 128
    assert 0.01 < ink.mean() < 0.15  # thin lines, not a filled face
    for i in (8, 30, 36, 48, 62):  # chin, nose tip, an eye corner, a mouth corner, the lips
        x, y = np.round(lm[i]).astype(int)
        assert ink[y - 1 : y + 2, x - 1 : x + 2].any(), i
    assert not ink[:10].any() and not ink[:, :5].any()  # nothing on hair or background
    assert (contour_drawing(lm * 4, 4 * R) < 128).mean() == pytest.approx(ink.mean(), rel=0.35)  # width scales
    with pytest.raises(ValueError, match="68"):
        contour_drawing(lm[:5], R)


def test_warp_into_frame_keeps_b_shape_at_a_place(two_faces):
    a, b = two_faces
    moved = warp_into_frame(b, a)
    # B's anchors land on A's (a similarity cannot match 4 points exactly, but closely)...
    assert np.abs(anchor_points(moved) - anchor_points(a)).max() < 0.03 * R
    # ...while B's shape is kept: distances between points scale by one factor.
    d_b = np.linalg.norm(b[:, None] - b[None], axis=2)
    d_m = np.linalg.norm(moved[:, None] - moved[None], axis=2)
    k = d_m[d_b > 1] / d_b[d_b > 1]
    assert k.std() < 1e-6 * k.mean() + 1e-9
    # A known transform is recovered exactly.
    rot = np.array([[np.cos(0.1), -np.sin(0.1)], [np.sin(0.1), np.cos(0.1)]]) * 1.2
    shifted = b @ rot.T + [5.0, -3.0]
    np.testing.assert_allclose(warp_into_frame(b, shifted), shifted, atol=1e-3)

"""Paste-back: the inner-face mask and the Lab colour match (pipeline/editing/blend.py)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline.editing.blend import inner_face_mask, match_colour
from tests.helpers_models import aligned_london

R = 128


@pytest.fixture(scope="module")
def face(london):
    faces, lms = aligned_london([london / "neutral" / "001_03.jpg"], R)
    return faces[0], lms[0]


def test_inner_face_mask_covers_the_face_and_not_hair_or_background(face):
    _, lm = face
    mask = inner_face_mask(lm, R)
    assert mask.shape == (R, R) and mask.dtype == np.float32
    assert 0.0 <= mask.min() and mask.max() <= 1.0
    nose, mouth = lm[30].round().astype(int), lm[62].round().astype(int)
    assert mask[nose[1], nose[0]] > 0.99 and mask[mouth[1], mouth[0]] > 0.99
    for x, y in [(0, 0), (R - 1, 0), (0, R - 1), (R - 1, R - 1)]:  # background
        assert mask[y, x] == 0.0
    brow_top = lm[17:27, 1].min()
    hair = int(brow_top - 0.25 * R)
    assert hair >= 0 and mask[: max(hair, 1)].max() == 0.0  # well above the brows: hair, no edit
    # The soft edge lies inside the outline: on the jaw points the mask is already low.
    jaw = lm[2:15].round().astype(int)
    assert np.all(mask[jaw[:, 1].clip(0, R - 1), jaw[:, 0].clip(0, R - 1)] < 0.5)


def _lab_means(img, mask):
    lab = cv2.cvtColor(img, cv2.COLOR_RGB2LAB).astype(np.float64)
    return lab[mask > 0.5].mean(0)


def test_match_colour_moves_the_statistics_inside_the_mask(face):
    photo, lm = face
    mask = inner_face_mask(lm, R)
    tinted = np.clip(photo.astype(np.int16) * [0.7, 0.9, 1.2] + [0, 10, 30], 0, 255).astype(np.uint8)
    before = _lab_means(tinted, mask)
    target = _lab_means(photo, mask)
    assert np.abs(before - target).max() > 5  # the tint is visible
    full = match_colour(tinted, photo, mask)
    assert np.abs(_lab_means(full, mask) - target).max() < 1.5
    light = match_colour(tinted, photo, mask, lightness_only=True)
    got = _lab_means(light, mask)
    assert abs(got[0] - target[0]) < 1.5  # the photo's light...
    assert np.abs(got[1:] - before[1:]).max() < 1.5  # ...the other photo's colours
    tiny = np.zeros_like(mask)
    assert match_colour(tinted, photo, tiny) is tinted  # nothing to measure: unchanged

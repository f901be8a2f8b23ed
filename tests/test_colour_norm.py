"""editing.colour_norm: photos in light the networks never saw are moved into the training
faces' range on the way in and back on the way out; photos inside it pass untouched."""

from __future__ import annotations

import numpy as np
import torch

from pipeline.core.tensors import faces_to_tensor
from pipeline.editing.colour_norm import STATS_KEY, ColourNormalised, colour_range, lab_stats, with_colour_range


class Mirror:
    """Stand-in editor: its render is the appearance photo it was given (as the networks saw it)."""

    def __init__(self) -> None:
        self.seen = None

    def geometry_from_photo(self, faces):
        return {"bg": faces}

    def appearance_codes(self, faces):
        self.seen = faces
        return {"bg": faces}

    def render(self, geometry, codes):
        return codes["bg"]


def _faces(n: int = 6, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.full((n, 32, 32, 3), (180, 140, 120), np.float64) + rng.normal(0, 6, (n, 1, 1, 3))
    return np.clip(base + rng.normal(0, 10, (n, 32, 32, 3)), 0, 255).astype(np.uint8)


def test_photos_inside_the_range_pass_untouched_outside_are_moved_in_and_back():
    train = _faces(16)
    r = colour_range(train, k=2.0)
    mirror = Mirror()
    ed = ColourNormalised(mirror, r["low"], r["high"])
    inside = faces_to_tensor(train[:2], torch.device("cpu"))
    codes = ed.appearance_codes(inside)
    assert torch.equal(mirror.seen, inside) and torch.equal(ed.render({}, codes), inside)
    cast = train[:2].astype(np.float64)
    cast[..., 2] *= 0.5  # a strong yellow cast: far outside London's light
    x = faces_to_tensor(cast.astype(np.uint8), torch.device("cpu"))
    codes = ed.appearance_codes(x)
    seen = lab_stats(mirror.seen)
    assert (seen <= torch.tensor(r["high"]) + 0.5).all() and (seen >= torch.tensor(r["low"]) - 0.5).all()
    out = ed.render({}, codes)
    assert (out - x).abs().mean() < 0.02  # the photo's own cast comes back
    assert codes[STATS_KEY].shape == (2, 12)


def test_without_a_range_file_the_editor_is_used_as_it_is(tmp_path):
    import json

    ed = Mirror()
    assert with_colour_range(ed, tmp_path) is ed
    r = colour_range(_faces(8), k=1.0)
    (tmp_path / "colour_range.json").write_text(json.dumps(r))
    wrapped = with_colour_range(ed, tmp_path)
    assert isinstance(wrapped, ColourNormalised) and wrapped.editor is ed

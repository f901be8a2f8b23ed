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
    assert codes[STATS_KEY].shape == (2, 17)


def test_without_a_range_file_the_editor_is_used_as_it_is(tmp_path):
    import json

    ed = Mirror()
    assert with_colour_range(ed, tmp_path) is ed
    r = colour_range(_faces(8), k=1.0)
    (tmp_path / "colour_range.json").write_text(json.dumps(r))
    wrapped = with_colour_range(ed, tmp_path)
    assert isinstance(wrapped, ColourNormalised) and wrapped.editor is ed


def test_spreads_can_be_left_alone_while_means_are_moved():
    train = _faces(16)
    r = colour_range(train, k=1.0, k_spread=None)
    assert r["low"][3:6] == [0.0] * 3 and r["high"][3:6] == [1e6] * 3
    mirror = Mirror()
    ed = ColourNormalised(mirror, r["low"], r["high"])
    rng = np.random.default_rng(1)
    contrasty = train[:2].astype(np.float64) + rng.normal(0, 40, train[:2].shape)
    contrasty[..., 2] *= 0.5  # and a yellow cast
    x = faces_to_tensor(np.clip(contrasty, 0, 255).astype(np.uint8), torch.device("cpu"))
    before = lab_stats(x)
    assert (before[:, 2] > torch.tensor(r["high"][2]) + 5).all()
    ed.appearance_codes(x)
    seen = lab_stats(mirror.seen)
    assert torch.allclose(seen[:, 3:6], before[:, 3:6], atol=0.5)  # a spread far above the training faces' stays
    assert (seen[:, :3] <= torch.tensor(r["high"][:3]) + 0.5).all()  # means are still moved into the range
    tight = colour_range(train, k=1.0, k_spread=1.0)
    assert tight["high"][3:6] != [1e6] * 3


def test_a_trigger_leaves_photos_near_the_training_light_alone():
    """Moved only once a statistic leaves mean +- trigger std, and then into mean +- k std."""
    train = _faces(32)
    r = colour_range(train, k=0.5, k_spread=None, trigger=3.0)
    mirror = Mirror()
    ed = ColourNormalised(mirror, r["low"], r["high"], r["trigger_low"], r["trigger_high"])
    stats = lab_stats(faces_to_tensor(train, torch.device("cpu")))
    near = int(((stats[:, :3] < torch.tensor(r["low"][:3])) | (stats[:, :3] > torch.tensor(r["high"][:3]))).any(1)
               .nonzero()[0])  # outside the k range, inside the trigger range
    x = faces_to_tensor(train[near:near + 1], torch.device("cpu"))
    ed.appearance_codes(x)
    assert torch.equal(mirror.seen, x)
    cast = train[near:near + 1].astype(np.float64)
    cast[..., 2] *= 0.5
    x = faces_to_tensor(cast.astype(np.uint8), torch.device("cpu"))
    ed.appearance_codes(x)
    seen = lab_stats(mirror.seen)[0, :3]
    assert (seen <= torch.tensor(r["high"][:3]) + 0.5).all() and (seen >= torch.tensor(r["low"][:3]) - 0.5).all()


def test_auto_region_keeps_a_bright_backdrop_that_the_move_would_clip():
    """A dark face on a white backdrop (a person, not a cast) is moved over the face only; a
    cast that lies on the whole crop is moved with its backdrop, and both come back."""
    from pipeline.editing.colour_norm import face_weight

    r_px = 32
    train = _faces(16)
    rng = np.random.default_rng(2)
    dark = np.full((1, r_px, r_px, 3), 245, np.float64)  # white backdrop
    inside = face_weight(r_px)[0, 0].numpy() > 0.5
    dark[0][inside] = (70, 50, 40) + rng.normal(0, 6, (int(inside.sum()), 3))
    rng_range = colour_range(train, k=1.0, region="auto")
    mirror = Mirror()
    ed = ColourNormalised(mirror, rng_range["low"], rng_range["high"], region="auto")
    x = faces_to_tensor(np.clip(dark, 0, 255).astype(np.uint8), torch.device("cpu"))
    codes = ed.appearance_codes(x)
    assert float(codes[STATS_KEY][0, 16]) == 0.0  # the face only
    assert torch.allclose(mirror.seen[..., 0, 0], x[..., 0, 0], atol=1e-3)  # the backdrop as it was
    assert (ed.render({}, codes) - x).abs().mean() < 0.03
    cast = train[:1].astype(np.float64)
    cast[..., 2] *= 0.6  # yellow everywhere, backdrop included; nothing clips when it is taken out
    x = faces_to_tensor(cast.astype(np.uint8), torch.device("cpu"))
    codes = ed.appearance_codes(x)
    assert float(codes[STATS_KEY][0, 16]) == 1.0  # the whole crop
    assert not torch.allclose(mirror.seen[..., 0, 0], x[..., 0, 0], atol=1e-2)
    assert (ed.render({}, codes) - x).abs().mean() < 0.03


def test_a_light_from_one_side_is_evened_out_on_the_way_in_and_put_back():
    """The lightness slope across the face is one of the statistics: a side-lit photo reaches
    the networks nearly evenly lit, and the render gets the photo's own slope back."""
    train = _faces(16)
    r = colour_range(train, k=1.0, region="all")
    mirror = Mirror()
    ed = ColourNormalised(mirror, r["low"], r["high"], region="all")
    lit = train[:1].astype(np.float64)
    lit *= np.linspace(0.55, 1.25, lit.shape[2])[None, None, :, None]  # darker on the left
    x = faces_to_tensor(np.clip(lit, 0, 255).astype(np.uint8), torch.device("cpu"))
    slope = float(lab_stats(x)[0, 6])
    assert slope > r["high"][6] + 5
    codes = ed.appearance_codes(x)
    assert float(lab_stats(mirror.seen)[0, 6]) <= r["high"][6] + 0.5
    assert (ed.render({}, codes) - x).abs().mean() < 0.03

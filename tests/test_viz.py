"""viz: uint8 conversion, grid geometry and labels, boxes, sketch overlay, atomic PNG writing."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from pipeline.core import viz
from pipeline.core.viz import alpha_strip, draw_boxes, make_grid, overlay_sketch, save_png, swap_matrix_grid, to_uint8


def _tiles(n: int, h: int = 10, w: int = 12, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


# ---------------------------------------------------------------- to_uint8 -----------------


def test_to_uint8_maps_range_and_moves_channels_last():
    x = torch.tensor([-1.0, 0.0, 1.0, 3.0]).view(1, 1, 1, 4).expand(2, 3, 1, 4)
    out = to_uint8(x)
    assert out.shape == (2, 1, 4, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0, 0, :, 0], [0, 128, 255, 255])
    assert to_uint8(torch.zeros(2, 1, 5, 6)).shape == (2, 5, 6)  # one channel is dropped
    assert to_uint8(torch.zeros(3, 5, 6)).shape == (5, 6, 3)
    np.testing.assert_array_equal(to_uint8(np.array([[0.0, 0.5, 1.0]]), value_range=(0, 1)), [[0, 128, 255]])
    np.testing.assert_array_equal(to_uint8(np.array([[True, False]])), [[255, 0]])


# ---------------------------------------------------------------- make_grid ----------------


def test_make_grid_shape_and_placement():
    tiles = _tiles(5)
    grid = make_grid(tiles, nrow=3, pad=2, pad_value=7)
    # 2 rows x 3 cols of 10x12 tiles with 2-px gaps around every tile.
    assert grid.shape == (2 * 10 + 3 * 2, 3 * 12 + 4 * 2, 3)
    np.testing.assert_array_equal(grid[2:12, 2:14], tiles[0])
    np.testing.assert_array_equal(grid[14:24, 16:28], tiles[4])  # row 1, col 1
    assert (grid[14:24, 30:42] == 7).all()  # the empty sixth cell
    assert make_grid(tiles[:2], nrow=8, pad=0).shape == (10, 24, 3)  # cols = min(nrow, N)


def test_make_grid_gray_and_blank_cells():
    gray = np.full((4, 4), 90, np.uint8)
    grid = make_grid([None, gray], nrow=2, pad=1, pad_value=255)
    assert grid.shape == (6, 11, 3)
    assert (grid[1:5, 1:5] == 255).all() and (grid[1:5, 6:10] == 90).all()


def test_make_grid_labels_add_margins_and_draw_text():
    tiles = [np.full((64, 64, 3), 128, np.uint8) for _ in range(4)]
    plain = make_grid(tiles, nrow=2, pad=2)
    framed = make_grid(tiles, nrow=2, pad=2, row_labels=["r0", "r1"], col_labels=["c0", "c1"])
    top, left = framed.shape[0] - plain.shape[0], framed.shape[1] - plain.shape[1]
    assert top > 0 and left > 0
    # Tiles keep their size and sit at the bottom-right behind the margins.
    np.testing.assert_array_equal(framed[top:, left:], plain)
    assert (framed[:top, left:] != 255).any() and (framed[top:, :left] != 255).any()  # text drawn

    captioned = make_grid(tiles, nrow=2, pad=2, labels=["a", "", "c", "d"])
    assert captioned.shape == plain.shape
    assert (captioned[2:66, 2:66] != 128).any()  # tile 0 carries its caption
    np.testing.assert_array_equal(captioned[2:66, 68:132], tiles[1])  # empty caption: untouched


def test_make_grid_rejects_bad_inputs():
    tiles = _tiles(3)
    with pytest.raises(ValueError, match="labels"):
        make_grid(tiles, nrow=3, labels=["x"])
    with pytest.raises(ValueError, match="grid's tiles"):
        make_grid([*tiles, np.zeros((5, 5, 3), np.uint8)], nrow=2)
    with pytest.raises(TypeError, match="uint8"):
        make_grid([np.zeros((4, 4, 3), np.float32)])


def test_swap_matrix_puts_sources_in_first_row_and_column():
    geo, app = _tiles(2, 8, 8, seed=1), _tiles(3, 8, 8, seed=2)
    swaps = np.stack([np.stack(_tiles(3, 8, 8, seed=10 + i)) for i in range(2)])
    grid = swap_matrix_grid(geo, app, swaps, pad=2)
    plain = make_grid([None, *app, geo[0], *swaps[0], geo[1], *swaps[1]], nrow=4, pad=2)
    top, left = grid.shape[0] - plain.shape[0], grid.shape[1] - plain.shape[1]
    np.testing.assert_array_equal(grid[top:, left:], plain)
    with pytest.raises(ValueError, match="rows"):
        swap_matrix_grid(geo, app, swaps[:, :2])


def test_alpha_strip_is_one_row():
    strip = alpha_strip(_tiles(4, 32, 32), [0.0, 0.2, 0.4, 0.6], pad=2)
    assert strip.shape == (32 + 4, 4 * 32 + 5 * 2, 3)


# ---------------------------------------------------------------- boxes / overlay ----------


def test_draw_boxes_marks_outline_and_leaves_input():
    img = np.zeros((64, 64, 3), np.uint8)
    out = draw_boxes(img, {"nose": (10, 20, 30)}, color=(0, 255, 0), thickness=1)
    assert not img.any()
    assert tuple(out[20, 25]) == (0, 255, 0) and tuple(out[49, 25]) == (0, 255, 0)  # top, bottom edge
    assert not out[35, 25].any()  # interior below the label stays empty


def test_overlay_sketch_paints_strokes_only():
    img = np.full((16, 16, 3), 100, np.uint8)
    sketch = np.full((8, 8), 255, np.uint8)
    np.testing.assert_array_equal(overlay_sketch(img, sketch), img)
    sketch = np.full((16, 16), 255, np.uint8)
    sketch[5] = 0
    out = overlay_sketch(img, sketch, color=(255, 0, 0))
    assert tuple(out[5, 3]) == (255, 0, 0) and tuple(out[6, 3]) == (100, 100, 100)


# ---------------------------------------------------------------- save_png -----------------


@pytest.mark.parametrize("channels", [None, 3, 4])
def test_save_png_round_trips(tmp_path: Path, channels):
    rng = np.random.default_rng(3)
    shape = (9, 7) if channels is None else (9, 7, channels)
    img = rng.integers(0, 256, shape, dtype=np.uint8)
    path = tmp_path / "sub" / "x.png"
    save_png(path, img)
    back = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if channels == 3:
        back = cv2.cvtColor(back, cv2.COLOR_BGR2RGB)
    elif channels == 4:
        back = cv2.cvtColor(back, cv2.COLOR_BGRA2RGBA)
    np.testing.assert_array_equal(back, img)
    assert [p.name for p in path.parent.iterdir()] == ["x.png"]


def test_save_png_failed_encoding_leaves_old_file(tmp_path: Path, monkeypatch):
    path = tmp_path / "x.png"
    old = np.zeros((4, 4, 3), np.uint8)
    save_png(path, old)
    before = path.read_bytes()
    monkeypatch.setattr(viz.cv2, "imencode", lambda *a, **k: (False, None))
    with pytest.raises(OSError, match="encoding failed"):
        save_png(path, np.full((4, 4, 3), 200, np.uint8))
    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == [path]


def test_save_png_interrupted_write_leaves_no_partial_file(tmp_path: Path, monkeypatch):
    path = tmp_path / "new.png"

    def half_then_fail(self: Path, data: bytes) -> int:
        with open(self, "wb") as f:
            f.write(data[: len(data) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_bytes", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        save_png(path, np.zeros((32, 32, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_save_png_rejects_float():
    with pytest.raises(TypeError, match="uint8"):
        save_png("unused.png", np.zeros((4, 4, 3), np.float32))

"""Pictures people look at: contact sheets, reconstruction grids, swap matrices, DFI strips.

Conventions: torch tensors are channels-first (B,C,H,W) / (C,H,W) in [-1, 1]; numpy arrays
are channels-last (N,H,W,C) / (H,W,C) / (H,W), RGB. Everything returned is uint8 RGB.
PNGs are written atomically (encode fully in memory, write a temp file, rename).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import cv2
import numpy as np
import torch

from pipeline.core.io import save_png  # noqa: F401  (re-exported: viz users save what they draw

_FONT = cv2.FONT_HERSHEY_SIMPLEX


def to_uint8(x: torch.Tensor | np.ndarray, value_range: tuple[float, float] = (-1.0, 1.0)) -> np.ndarray:
    """Images -> uint8 channels-last: (B,C,H,W) -> (B,H,W,C), (C,H,W) -> (H,W,C); C = 1 is dropped.

    Float inputs are mapped linearly from `value_range` to 0..255 and clipped; uint8 arrays
    pass through; bool arrays become 0/255.
    """
    if isinstance(x, torch.Tensor):
        if x.ndim not in (2, 3, 4):
            raise ValueError(f"expected (B,C,H,W), (C,H,W) or (H,W) tensor, got {tuple(x.shape)}")
        t = x.detach().float().cpu()
        if t.ndim >= 3:
            if t.shape[-3] not in (1, 3):
                raise ValueError(f"expected 1 or 3 channels, got shape {tuple(x.shape)}")
            t = t.movedim(-3, -1)
        arr = t.numpy()
    else:
        arr = np.asarray(x)
    if arr.dtype == np.uint8:
        out = arr
    elif arr.dtype == np.bool_:
        out = arr.astype(np.uint8) * 255
    else:
        lo, hi = value_range
        out = np.clip((arr.astype(np.float32) - lo) / (hi - lo) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if out.ndim >= 3 and out.shape[-1] == 1:
        out = out[..., 0]
    return np.ascontiguousarray(out)


def _rgb(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.dtype != np.uint8:
        raise TypeError(f"expected uint8 images, got {img.dtype}: convert with to_uint8 first")
    if img.ndim == 2:
        return np.repeat(img[..., None], 3, axis=2)
    if img.ndim == 3 and img.shape[2] == 3:
        return img
    if img.ndim == 3 and img.shape[2] == 1:
        return np.repeat(img, 3, axis=2)
    raise ValueError(f"expected (H,W) or (H,W,3) image, got {img.shape}")


def _font_scale(tile_h: int) -> float:
    # Readable on 64-px tiles, not shouting on 512-px ones.
    return float(np.clip(tile_h / 320.0, 0.3, 0.8))


def _put_label(img: np.ndarray, text: str, org: tuple[int, int], scale: float) -> None:
    """White text on a darkened band so it reads on any face or background (in place)."""
    (tw, th), base = cv2.getTextSize(text, _FONT, scale, 1)
    x, y = org
    y0, y1 = max(y - th - 2, 0), min(y + base + 1, img.shape[0])
    x0, x1 = max(x - 2, 0), min(x + tw + 2, img.shape[1])
    img[y0:y1, x0:x1] = (img[y0:y1, x0:x1] * 0.35).astype(np.uint8)
    cv2.putText(img, text, org, _FONT, scale, (255, 255, 255), 1, cv2.LINE_AA)


def make_grid(
    images: Sequence[np.ndarray | None] | np.ndarray,
    nrow: int = 8,
    pad: int = 2,
    labels: Sequence[str] | None = None,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    pad_value: int = 255,
) -> np.ndarray:
    """Tile equal-sized uint8 images into one RGB image, `nrow` images per row.

    Size without labels: (rows*h + (rows+1)*pad, cols*w + (cols+1)*pad, 3) with
    cols = min(nrow, N), rows = ceil(N / nrow). `labels` caption each tile (inside, bottom
    left); `row_labels` / `col_labels` add a left / top margin with one label per row / column.
    A None entry leaves its cell blank (e.g. the corner of a swap matrix).
    """
    items = list(images)
    if not items or nrow < 1:
        raise ValueError("make_grid needs at least one image and nrow >= 1")
    first = next((im for im in items if im is not None), None)
    if first is None:
        raise ValueError("make_grid got only blank cells")
    h, w = _rgb(first).shape[:2]
    n = len(items)
    cols, rows = min(nrow, n), math.ceil(n / nrow)
    for name, lab, want in (("labels", labels, n), ("row_labels", row_labels, rows), ("col_labels", col_labels, cols)):
        if lab is not None and len(lab) != want:
            raise ValueError(f"{len(lab)} {name} given, the grid needs {want}")

    scale = _font_scale(h)
    (_, text_h), base = cv2.getTextSize("Ag", _FONT, scale, 1)
    top = text_h + base + 2 * pad if col_labels is not None else 0
    left = 0
    if row_labels is not None:
        left = max(cv2.getTextSize(s, _FONT, scale, 1)[0][0] for s in row_labels) + 2 * pad

    grid = np.full((top + rows * h + (rows + 1) * pad, left + cols * w + (cols + 1) * pad, 3), pad_value, np.uint8)
    for i, im in enumerate(items):
        r, c = divmod(i, nrow)
        y, x = top + pad + r * (h + pad), left + pad + c * (w + pad)
        if im is not None:
            tile = _rgb(im)
            if tile.shape[:2] != (h, w):
                raise ValueError(f"image {i} is {tile.shape[:2]}, the grid's tiles are {(h, w)}")
            grid[y : y + h, x : x + w] = tile
        if labels is not None and labels[i]:
            _put_label(grid, labels[i], (x + 2, y + h - base - 2), scale)
    dark = (0, 0, 0) if pad_value > 127 else (255, 255, 255)
    for r, s in enumerate(row_labels or []):
        y = top + pad + r * (h + pad) + (h + text_h) // 2
        cv2.putText(grid, s, (pad, y), _FONT, scale, dark, 1, cv2.LINE_AA)
    for c, s in enumerate(col_labels or []):
        x = left + pad + c * (w + pad)
        cv2.putText(grid, s, (x, pad + text_h), _FONT, scale, dark, 1, cv2.LINE_AA)
    return grid


def swap_matrix_grid(
    geometry: Sequence[np.ndarray],
    appearance: Sequence[np.ndarray],
    swaps: Sequence[Sequence[np.ndarray]] | np.ndarray,
    pad: int = 2,
) -> np.ndarray:
    """Swap matrix: cell (i, j) = geometry of `geometry[i]` with appearance of `appearance[j]`.

    Row 0 shows the appearance sources, column 0 the geometry sources; the corner is blank.
    `swaps` is (G, A) images, e.g. an array (G,A,H,W,3).
    """
    g, a = len(geometry), len(appearance)
    if len(swaps) != g or any(len(row) != a for row in swaps):
        raise ValueError(f"swaps must be {g} rows of {a} images")
    cells: list[np.ndarray | None] = [None, *appearance]
    for i in range(g):
        cells += [geometry[i], *swaps[i]]
    return make_grid(
        cells, nrow=a + 1, pad=pad,
        row_labels=["", *(f"geo {i}" for i in range(g))],
        col_labels=["geo \\ app", *(f"app {j}" for j in range(a))],
    )


def alpha_strip(images: Sequence[np.ndarray], alphas: Sequence[float], pad: int = 2) -> np.ndarray:
    """One row of DFI results, each tile captioned with its interpolation weight."""
    if len(images) != len(alphas):
        raise ValueError(f"{len(images)} images for {len(alphas)} alphas")
    return make_grid(images, nrow=len(images), pad=pad, labels=[f"a={a:+.2f}" for a in alphas])


def draw_boxes(
    img: np.ndarray,
    boxes: Mapping[str, tuple[int, int, int]] | Sequence[tuple[int, int, int]],
    color: tuple[int, int, int] = (255, 0, 0),
    thickness: int = 1,
) -> np.ndarray:
    """Copy of `img` with square boxes (x0, y0, size) drawn; a mapping's keys label the boxes."""
    out = _rgb(img).copy()
    items = boxes.items() if isinstance(boxes, Mapping) else ((None, b) for b in boxes)
    scale = _font_scale(out.shape[0]) * 0.8
    for name, (x0, y0, size) in items:
        x0, y0, size = int(x0), int(y0), int(size)
        cv2.rectangle(out, (x0, y0), (x0 + size - 1, y0 + size - 1), color, thickness)  # crisp: axis-aligned
        if name:
            cv2.putText(out, name, (x0 + 2, y0 + 12), _FONT, scale, color, 1, cv2.LINE_AA)
    return out


def overlay_sketch(
    img: np.ndarray, sketch: np.ndarray, color: tuple[int, int, int] = (255, 0, 0), opacity: float = 1.0
) -> np.ndarray:
    """Paint a sketch's strokes (dark on white, uint8) over a photo in `color`.

    Stroke darkness is the blend weight, so anti-aliased edges stay smooth; the sketch is
    resized to the photo when their sizes differ.
    """
    base = _rgb(img)
    sk = np.asarray(sketch)
    if sk.dtype != np.uint8:
        raise TypeError(f"expected a uint8 sketch, got {sk.dtype}: convert with to_uint8 first")
    if sk.ndim == 3:
        sk = sk.min(axis=2)  # any dark channel is a stroke
    if sk.shape != base.shape[:2]:
        sk = cv2.resize(sk, (base.shape[1], base.shape[0]), interpolation=cv2.INTER_AREA)
    alpha = (1.0 - sk.astype(np.float32) / 255.0)[..., None] * float(opacity)
    out = base.astype(np.float32) * (1 - alpha) + np.asarray(color, np.float32) * alpha
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)



def text_image(lines: Sequence[str], width: int = 640) -> np.ndarray:
    """White RGB image with the given lines of text: a plot's stand-in that says why it is
    empty (DVC expects every declared plot file)."""
    img = np.full((24 * len(lines) + 16, width, 3), 255, np.uint8)
    for i, line in enumerate(lines):
        cv2.putText(img, line, (8, 24 * (i + 1)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return img

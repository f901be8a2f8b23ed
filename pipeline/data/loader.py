"""Training data: memory-mapped component arrays and a seeded, resumable index sampler.

The component stage stores every part of every face as one packed uint8 array
(`data/components/{split}/{part}_photo.npy` (N,s,s,3) RGB and `{part}_sketch.npy` (N,s,s),
black strokes on white), so a batch is a single fancy-index read of a memory map. The
arrays stay uint8 until they reach the device, where they become float in [-1, 1]: that moves
4x fewer bytes and makes DataLoader workers unnecessary (`benchmarks/train.py` measures the
data share of a step).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline import PARTS

MANIFEST_COLUMNS = ("row", "id", "identity", "label")


class ComponentData:
    """One split of `data/components`: photo and sketch tensors for index batches.

    `photos(part, idx)` -> (B,3,s,s) float in [-1,1]; `sketches(part, idx)` -> (B,3,s,s) with
    white paper = +1 and black ink = -1, replicated to 3 channels (the encoders' input width).
    """

    def __init__(
        self, root: str | Path, split: str, parts: tuple[str, ...] | list[str] = PARTS,
        device: torch.device | str = "cpu", load_sketches: bool = True,
    ) -> None:
        self.dir = Path(root) / split
        if not self.dir.is_dir():
            raise FileNotFoundError(
                f"{self.dir} missing: run `dvc repro components` (or `dfe components`) first"
            )
        unknown = set(parts) - set(PARTS)
        if unknown:
            raise ValueError(f"unknown parts {sorted(unknown)}; expected a subset of {PARTS}")
        self.parts = tuple(parts)
        self.device = torch.device(device)
        self.manifest = pd.read_csv(self.dir / "manifest.csv")
        missing = set(MANIFEST_COLUMNS) - set(self.manifest.columns)
        if missing:
            raise ValueError(f"{self.dir / 'manifest.csv'} lacks columns {sorted(missing)}")
        n = len(self.manifest)
        self._photo: dict[str, np.ndarray] = {}
        self._sketch: dict[str, np.ndarray] = {}
        for part in self.parts:
            photo = self._open(f"{part}_photo.npy")
            if photo.ndim != 4 or photo.shape[0] != n or photo.shape[3] != 3 or photo.shape[1] != photo.shape[2]:
                raise ValueError(f"{part}_photo.npy: expected ({n},s,s,3) uint8, got {photo.shape} {photo.dtype}")
            self._photo[part] = photo
            if load_sketches:
                sketch = self._open(f"{part}_sketch.npy")
                if sketch.shape != photo.shape[:3]:
                    raise ValueError(f"{part}_sketch.npy: expected {photo.shape[:3]}, got {sketch.shape}")
                self._sketch[part] = sketch

    def _open(self, name: str) -> np.ndarray:
        path = self.dir / name
        if not path.exists():
            raise FileNotFoundError(f"{path} missing: run `dvc repro components` (or `dfe components`)")
        arr = np.load(path, mmap_mode="r")
        if arr.dtype != np.uint8:
            raise ValueError(f"{path}: expected uint8, got {arr.dtype}")
        return arr

    def __len__(self) -> int:
        return len(self.manifest)

    def size(self, part: str) -> int:
        return int(self._photo[part].shape[1])

    def _rows(self, arr: np.ndarray, idx: torch.Tensor) -> torch.Tensor:
        # Memmap fancy indexing reads the rows in one go; sorting keeps the reads sequential,
        # the inverse permutation restores the sampler's order.
        idx_np = idx.cpu().numpy()
        order = np.argsort(idx_np, kind="stable")
        rows = np.empty((len(idx_np),) + arr.shape[1:], dtype=np.uint8)
        rows[order] = arr[idx_np[order]]
        t = torch.from_numpy(rows)
        if self.device.type == "cuda":
            t = t.pin_memory().to(self.device, non_blocking=True)
        return t

    def photos(self, part: str, idx: torch.Tensor) -> torch.Tensor:
        x = self._rows(self._photo[part], idx)  # (B,s,s,3) uint8
        return x.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0).contiguous()

    def sketches(self, part: str, idx: torch.Tensor) -> torch.Tensor:
        if part not in self._sketch:
            raise KeyError(f"sketches for {part!r} were not loaded (load_sketches=False)")
        x = self._rows(self._sketch[part], idx)  # (B,s,s) uint8
        return x.unsqueeze(1).float().div_(127.5).sub_(1.0).expand(-1, 3, -1, -1).contiguous()


class IndexSampler:
    """Seeded random index batches over `n` rows, resumable exactly from `state_dict()`.

    Draws epochs as random permutations (every face once per epoch) from its own
    torch.Generator, independent of the global RNG that augmentations and dropout use.

    `batch_size` is the global batch. Under DDP every rank draws the same stream (same seed)
    and keeps its own `batch_size // world_size` slice, so the ranks see disjoint faces, their
    union is exactly what one process with the whole batch sees, and the state is the same on
    every rank (one saved state resumes any number of ranks).
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 groups: np.ndarray | None = None) -> None:
        """groups: (n,) person ids; `pairs()` then never pairs two photos of one person."""
        if n < 1:
            raise ValueError("empty split: no faces to train on")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside a world of {world_size}")
        if batch_size % world_size:
            raise ValueError(f"batch_size {batch_size} does not split over {world_size} processes: "
                             f"use a multiple of {world_size}")
        self.n, self.batch_size = n, batch_size
        local = batch_size // world_size
        self._slice = slice(rank * local, (rank + 1) * local)
        self.groups = None
        if groups is not None:
            codes = np.unique(np.asarray(groups), return_inverse=True)[1].reshape(-1)
            if len(codes) != n:
                raise ValueError(f"{len(codes)} groups for {n} rows")
            self.groups = torch.from_numpy(codes.astype(np.int64))
        self.generator = torch.Generator().manual_seed(seed * 1_000_003)
        self._perm = torch.randperm(n, generator=self.generator)
        self._pos = 0

    def _take(self, k: int) -> torch.Tensor:
        out = []
        while k > 0:
            if self._pos == self.n:
                self._perm = torch.randperm(self.n, generator=self.generator)
                self._pos = 0
            chunk = self._perm[self._pos : self._pos + k]
            self._pos += len(chunk)
            k -= len(chunk)
            out.append(chunk)
        return torch.cat(out)

    def batch(self) -> torch.Tensor:
        """(batch_size // world_size,) int64 row indices: this rank's slice of the global batch."""
        return self._take(self.batch_size)[self._slice]

    def pairs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Two index batches with a[i] != b[i] (different faces, for the swap losses) and, with
        `groups`, different people: a person's neutral and smiling photos share a face shape,
        so such a "swap" would teach nothing about taking geometry from one and colours from
        the other. Drawn for the global batch (every rank the same draws), then sliced."""
        a = self._take(self.batch_size)
        if self.n == 1:
            raise ValueError("swap training needs at least 2 faces")
        if self.groups is not None and int(self.groups.max()) == 0:
            raise ValueError("swap training needs photos of at least 2 people")
        offset = torch.randint(1, self.n, (len(a),), generator=self.generator)
        b = (a + offset) % self.n
        if self.groups is not None:
            same = self.groups[a] == self.groups[b]
            while same.any():  # redraw only the clashes; a person has few photos, so this ends fast
                b[same] = (a[same] + torch.randint(1, self.n, (int(same.sum()),), generator=self.generator)) % self.n
                same = self.groups[a] == self.groups[b]
        return a[self._slice], b[self._slice]

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "perm": self._perm.clone(), "pos": self._pos}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self._perm = state["perm"].clone()
        self._pos = int(state["pos"])


def synthetic_components(
    root: str | Path, resolution: int, n_train: int = 16, n_test: int = 4, seed: int = 0, n_val: int = 4,
    aligned_dir: str | Path | None = None,
) -> Path:
    """Write a tiny cartoon-face `components` dir (same layout as the real stage) for tests and
    benchmarks: random skin/eye/lip colours and feature shapes, the sketch is their outline.
    With `aligned_dir`, 68 landmarks on those shapes go to `aligned_dir/landmarks.npy` (rows in
    split order train, val, test) and the manifests get `source_row`, as the real stages write."""
    import cv2

    from pipeline.core.io import save_csv, save_npy
    from pipeline.core.profiles import part_boxes

    rng = np.random.default_rng(seed)
    boxes = part_boxes(resolution)
    R = resolution
    all_landmarks: list[np.ndarray] = []
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        first_row = len(all_landmarks)
        photos = np.empty((n, R, R, 3), np.uint8)
        sketches = np.full((n, R, R), 255, np.uint8)
        for i in range(n):
            img = np.empty((R, R, 3), np.uint8)
            img[:] = rng.integers(40, 120, 3)  # backdrop
            skin = tuple(int(v) for v in rng.integers(120, 240, 3))
            eye = tuple(int(v) for v in rng.integers(0, 90, 3))
            lip = tuple(int(v) for v in rng.integers(100, 230, 3))
            sk = sketches[i]
            c, ax = (R // 2, R // 2 + int(rng.integers(-R // 32, R // 32 + 1))), (int(R * rng.uniform(0.3, 0.4)), int(R * 0.45))
            shapes = [(c, ax, skin)]
            for part, color in (("eye1", eye), ("eye2", eye), ("mouth", lip)):
                x0, y0, s = boxes[part]
                cx, cy = x0 + s // 2 + int(rng.integers(-s // 8, s // 8 + 1)), y0 + s // 2
                a = (max(2, int(s * rng.uniform(0.15, 0.3))), max(1, int(s * rng.uniform(0.06, 0.14))))
                shapes.append(((cx, cy), a, color))
            all_landmarks.append(_shape_landmarks(shapes, boxes["nose"]))
            for centre, axes, color in shapes:
                cv2.ellipse(img, centre, axes, 0, 0, 360, color, -1, cv2.LINE_AA)
                cv2.ellipse(sk, centre, axes, 0, 0, 360, 0, max(1, R // 128), cv2.LINE_AA)
            x0, y0, s = boxes["nose"]
            nx = x0 + s // 2
            cv2.line(img, (nx, y0 + s // 4), (nx + s // 10, y0 + 2 * s // 3), tuple(v // 2 for v in skin), 2)
            cv2.line(sk, (nx, y0 + s // 4), (nx + s // 10, y0 + 2 * s // 3), 0, max(1, R // 128))
            photos[i] = img
        d = Path(root) / split
        for part, (x0, y0, s) in boxes.items():
            save_npy(d / f"{part}_photo.npy", photos[:, y0 : y0 + s, x0 : x0 + s])
            save_npy(d / f"{part}_sketch.npy", sketches[:, y0 : y0 + s, x0 : x0 + s])
        save_csv(d / "manifest.csv", pd.DataFrame({
            "row": np.arange(n), "id": [f"{split}{i:04d}" for i in range(n)],
            "identity": [f"p{i // 2:04d}" for i in range(n)], "label": ["neutral", "smiling"] * (n // 2) + ["neutral"] * (n % 2),
            **({"source_row": np.arange(first_row, first_row + n)} if aligned_dir is not None else {}),
        }))
    if aligned_dir is not None:
        save_npy(Path(aligned_dir) / "landmarks.npy", np.stack(all_landmarks).astype(np.float32))
    return Path(root)


def _shape_landmarks(shapes, nose_box) -> np.ndarray:
    """68 iBUG-ordered points on a cartoon face: jaw on the face ellipse's lower half, brows
    above the eyes, eye and lip rings on their ellipses, the nose on its box's midline."""
    (c, ax, _), (e1, a1, _), (e2, a2, _), (mc, am, _) = shapes
    ring = lambda centre, axes, t: np.stack([centre[0] + axes[0] * np.cos(t), centre[1] + axes[1] * np.sin(t)], 1)
    jaw = ring(c, ax, np.linspace(np.pi, 0, 17) * -1 + np.pi)  # left to right along the bottom
    brows = np.concatenate([ring(e, (a[0], a[1] + 3), np.linspace(-0.9 * np.pi, -0.1 * np.pi, 5)) for e, a in ((e1, a1), (e2, a2))])
    x0, y0, s = nose_box
    nose = np.concatenate([np.stack([np.full(4, x0 + s / 2), np.linspace(y0 + s / 4, y0 + 2 * s / 3, 4)], 1),
                           np.stack([np.linspace(x0 + s / 3, x0 + 2 * s / 3, 5), np.full(5, y0 + 2 * s / 3)], 1)])
    eyes = np.concatenate([ring(e, a, np.linspace(np.pi, 3 * np.pi, 6, endpoint=False)) for e, a in ((e1, a1), (e2, a2))])
    lips = np.concatenate([ring(mc, am, np.linspace(np.pi, 3 * np.pi, 12, endpoint=False)),
                           ring(mc, (am[0] * 0.6, am[1] * 0.4), np.linspace(np.pi, 3 * np.pi, 8, endpoint=False))])
    return np.concatenate([jaw, brows, nose, eyes, lips])

"""Evaluation metrics: reconstruction quality, disentanglement and identity.

- Reconstruction: per-image PSNR and SSIM (kornia) on images in [-1, 1].
- Disentanglement: a swap must keep the geometry source's landmarks (`landmark_nme`) and
  the appearance source's per-part colour (`part_lab_stats` + `lab_stat_distance`).
- Identity: dlib's 128-d face embedding (`DlibFaceEmbedder`); Euclidean distance below 0.6
  is dlib's "same person" rule, cosine similarity is reported beside it.
- FID / LPIPS need pretrained weights we neither ship nor download: `optional_metric_status`
  says whether they could run here, so the evaluate stage can record them as absent.

Torch functions run on the inputs' device (CUDA when the caller put them there).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from pipeline.data.landmarks import dlib_model, dlib_model_dir

# 68-point iBUG index groups, for `landmark_nme(idx=...)`.
LANDMARK_GROUPS: dict[str, tuple[int, ...]] = {
    "jaw": tuple(range(0, 17)),
    "brows": tuple(range(17, 27)),
    "nose": tuple(range(27, 36)),
    "eyes": tuple(range(36, 48)),
    "mouth": tuple(range(48, 68)),
}
OUTER_EYE_CORNERS = (36, 45)

DLIB_SAME_PERSON_THRESHOLD = 0.6
"""dlib's documented rule: descriptors closer than 0.6 (Euclidean) are the same person."""

# Detector box of an FFHQ-style aligned face (DESIGN §2 alignment), as fractions of the crop
# side (left, top, right, bottom): the mean dlib detection on aligned London faces at
# 128/256/512 px. Using it skips detection with descriptors as close to the photo's as
# detected boxes (mean distance 0.04 at 512 px, 0.11 at 128 px, over 14 faces), whereas the
# whole-image rectangle misplaces the 5-point landmarks (distances up to 0.9).
ALIGNED_FACE_BOX = (0.22, 0.29, 0.80, 0.87)

FID_WEIGHT_FILES = (
    "pt_inception-2015-12-05-6726825d.pth",  # pytorch-fid
    "weights-inception-2015-12-05-6726825d.pth",  # torch-fidelity
)
# LPIPS net -> the torchvision ImageNet backbone file its linear heads sit on.
LPIPS_NETS = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}


# ---------------------------------------------------------------- reconstruction ----------


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if a.ndim != 4 or a.shape[1] != 3 or a.shape != b.shape:
        raise ValueError(f"expected two (B,3,H,W) batches of equal shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    # [-1, 1] -> [0, 1] so SSIM's stability constants match their usual data range of 1.
    a01 = (a.detach().float().clamp(-1, 1) + 1) / 2
    b01 = (b.detach().to(a.device).float().clamp(-1, 1) + 1) / 2
    return a01, b01


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB, shape (B,), of images in [-1, 1]; inf where an image pair is identical.

    Aggregate a test set by the mean of these per-image values.
    """
    import kornia.metrics

    a01, b01 = _check_pair(a, b)
    # kornia's psnr averages the MSE over the whole batch, so call it per image.
    return torch.stack([kornia.metrics.psnr(x[None], y[None], max_val=1.0) for x, y in zip(a01, b01)])


def ssim(a: torch.Tensor, b: torch.Tensor, window_size: int = 11) -> torch.Tensor:
    """Per-image mean SSIM, shape (B,), of images in [-1, 1] (Gaussian window, data range 1)."""
    import kornia.metrics

    a01, b01 = _check_pair(a, b)
    smap = kornia.metrics.ssim(a01, b01, window_size=window_size, max_val=1.0)
    return smap.mean(dim=(1, 2, 3))


# ---------------------------------------------------------------- geometry ----------------


def landmark_nme(
    pred: np.ndarray, ref: np.ndarray, idx: Sequence[int] | None = None
) -> np.ndarray:
    """Normalised mean error (N,): mean point distance over `idx` / reference inter-ocular distance.

    The inter-ocular distance is between the outer eye corners (36, 45) of `ref`, the usual
    300-W normalisation. A face with NaN landmarks (none detected) gets NaN.
    """
    pred = np.asarray(pred, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if pred.shape != ref.shape or pred.ndim != 3 or pred.shape[1:] != (68, 2):
        raise ValueError(f"expected two (N,68,2) arrays, got {pred.shape} and {ref.shape}")
    iod = np.linalg.norm(ref[:, OUTER_EYE_CORNERS[0]] - ref[:, OUTER_EYE_CORNERS[1]], axis=1)
    if np.any(iod <= 0):
        raise ValueError("reference landmarks with zero inter-ocular distance")
    sel = list(range(68)) if idx is None else list(idx)
    err = np.linalg.norm(pred[:, sel] - ref[:, sel], axis=2).mean(axis=1)
    return err / iod


# ---------------------------------------------------------------- appearance --------------


def _images_to_unit_rgb(images: np.ndarray | torch.Tensor, device: torch.device | str | None) -> torch.Tensor:
    """uint8 (N,H,W,3) arrays or [-1, 1] (N,3,H,W) tensors -> float (N,3,H,W) in [0, 1]."""
    if isinstance(images, torch.Tensor):
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected a (N,3,H,W) tensor in [-1, 1], got {tuple(images.shape)}")
        x = (images.detach().float().clamp(-1, 1) + 1) / 2
        return x.to(device) if device is not None else x
    arr = np.asarray(images)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[3] != 3:
        raise ValueError(f"expected uint8 (N,H,W,3) RGB images, got {arr.dtype} {arr.shape}")
    x = torch.from_numpy(np.ascontiguousarray(arr)).to(device or "cpu")
    return x.permute(0, 3, 1, 2).float() / 255.0


def part_lab_stats(
    images: np.ndarray | torch.Tensor,
    boxes: Mapping[str, tuple[int, int, int]],
    device: torch.device | str | None = None,
    batch_size: int = 64,
) -> dict[str, np.ndarray]:
    """Per-part CIE Lab colour statistics: {part: (N,6) = mean L, a, b then std L, a, b}.

    `images`: uint8 RGB (N,H,W,3) or a (N,3,H,W) tensor in [-1, 1]; sRGB is converted to
    Lab (D65) by kornia. `boxes`: {part: (x0, y0, size)} in the images' pixel coordinates
    (scale the 512-px component table to the resolution first). Boxes are clipped to the image.
    """
    n = len(images)
    out = {part: np.empty((n, 6), dtype=np.float64) for part in boxes}
    for start in range(0, n, batch_size):
        lab = _lab_batch(images[start : start + batch_size], device)
        h, w = lab.shape[2:]
        for part, (x0, y0, size) in boxes.items():
            xa, ya, xb, yb = max(int(x0), 0), max(int(y0), 0), min(int(x0 + size), w), min(int(y0 + size), h)
            if xb <= xa or yb <= ya:
                raise ValueError(f"box {part}={(x0, y0, size)} lies outside the {w}x{h} image")
            crop = lab[:, :, ya:yb, xa:xb].flatten(2)
            stats = torch.cat([crop.mean(dim=2), crop.std(dim=2, unbiased=False)], dim=1)
            out[part][start : start + len(lab)] = stats.double().cpu().numpy()
    return out


def _lab_batch(images: np.ndarray | torch.Tensor, device: torch.device | str | None) -> torch.Tensor:
    import kornia.color

    return kornia.color.rgb_to_lab(_images_to_unit_rgb(images, device))


def lab_stat_distance(
    stats_a: Mapping[str, np.ndarray], stats_b: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Per-part colour difference (N,): Euclidean distance between mean Lab colours (CIE76 ΔE).

    Only the means (columns 0-2) enter; a ΔE of about 2.3 is a just-noticeable difference.
    """
    missing = set(stats_a) ^ set(stats_b)
    if missing:
        raise KeyError(f"parts present in only one of the two stats: {sorted(missing)}")
    dist = {}
    for part, a in stats_a.items():
        b = stats_b[part]
        if a.shape != b.shape or a.ndim != 2 or a.shape[1] != 6:
            raise ValueError(f"{part}: expected two (N,6) arrays, got {a.shape} and {b.shape}")
        dist[part] = np.linalg.norm(a[:, :3] - b[:, :3], axis=1)
    return dist


# ---------------------------------------------------------------- identity ----------------


def _model_file(name: str, models_dir: Path) -> str:
    path = models_dir / name
    if not path.is_file():
        raise FileNotFoundError(
            f"dlib model file {name} not found in {models_dir}: install the PyPI package "
            "face-recognition-models (pip install face-recognition-models) or set "
            "DFE_DLIB_MODELS to a folder holding it"
        )
    return str(path)


BoxSpec = Literal["detect", "aligned", "full"] | Sequence[tuple[int, int, int, int] | None]


class DlibFaceEmbedder:
    """dlib's ResNet face descriptor (128-d; LFW accuracy 99.38 % per dlib).

    Faces are found with dlib's HOG frontal detector (highest-scoring face wins), landmarked
    with the 5-point (default, what the descriptor was trained with) or 68-point predictor,
    and embedded. The model files carry dlib's licence terms (the 68-point one is research-only).
    """

    def __init__(
        self,
        models_dir: str | os.PathLike | None = None,
        landmarks: Literal[5, 68] = 5,
        upsample: int = 1,
        num_jitters: int = 0,
    ) -> None:
        try:
            import dlib
        except ImportError as e:
            raise ImportError("DlibFaceEmbedder needs dlib: pip install dlib-bin") from e
        if landmarks not in (5, 68):
            raise ValueError(f"landmarks must be 5 or 68, got {landmarks}")
        # Shared with the landmarks stage: $DFE_DLIB_MODELS, else face_recognition_models/models,
        # found without importing that package (its __init__ needs pkg_resources).
        mdir = Path(models_dir) if models_dir is not None else dlib_model_dir()
        self._dlib = dlib
        self._detector = dlib_model("detector")
        self._predictor = dlib_model("shape_predictor", _model_file(f"shape_predictor_{landmarks}_face_landmarks.dat", mdir))
        # the descriptor network keeps per-call state and cannot be copied; reading it takes ~0.1 s
        self._encoder = dlib.face_recognition_model_v1(_model_file("dlib_face_recognition_resnet_model_v1.dat", mdir))
        self.upsample = upsample  # 1 finds faces down to ~40 px: our 128-px aligned crops need it
        self.num_jitters = num_jitters

    def embed(self, images: Sequence[np.ndarray] | np.ndarray, boxes: BoxSpec = "detect") -> np.ndarray:
        """Descriptors (N,128) float32 of uint8 RGB images (H,W,3); a NaN row where no face is found.

        boxes: "detect" runs the detector; "aligned" uses the fixed face box of an
        FFHQ-style aligned crop (our dataset and generator outputs), skipping detection;
        "full" uses the whole image as the face box: only for crops as tight as a detector
        box (on aligned crops it misplaces the landmarks: descriptor distance to the source
        photo up to 0.9, measured on London faces, so use "aligned" there);
        or one (left, top, right, bottom) box per image, None for "no face".
        """
        if not isinstance(boxes, str) and len(boxes) != len(images):
            raise ValueError(f"{len(boxes)} boxes for {len(images)} images")
        if isinstance(boxes, str) and boxes not in ("detect", "aligned", "full"):
            raise ValueError(f"boxes must be 'detect', 'aligned', 'full' or a list, got {boxes!r}")
        out = np.full((len(images), 128), np.nan, dtype=np.float32)
        for i, img in enumerate(images):
            img = np.asarray(img)
            if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
                raise ValueError(f"image {i}: expected uint8 RGB (H,W,3), got {img.dtype} {img.shape}")
            img = np.ascontiguousarray(img)
            rect = self._face_rect(img, boxes if isinstance(boxes, str) else boxes[i])
            if rect is None:
                continue
            shape = self._predictor(img, rect)
            out[i] = np.asarray(self._encoder.compute_face_descriptor(img, shape, self.num_jitters), dtype=np.float32)
        return out

    def _face_rect(self, img: np.ndarray, spec):
        dlib = self._dlib
        h, w = img.shape[:2]
        if spec is None:
            return None
        if spec == "detect":
            rects, scores, _ = self._detector.run(img, self.upsample, 0.0)
            return rects[int(np.argmax(scores))] if len(rects) else None
        if spec == "aligned":
            l, t, r, b = ALIGNED_FACE_BOX
            return dlib.rectangle(round(l * w), round(t * h), round(r * w), round(b * h))
        if spec == "full":
            return dlib.rectangle(0, 0, w - 1, h - 1)
        l, t, r, b = (int(v) for v in spec)
        return dlib.rectangle(l, t, r, b)


def finite_mean(x: np.ndarray) -> float:
    """Mean over the finite values (a face dlib missed is NaN and is counted apart); NaN if none."""
    x = np.asarray(x, np.float64)
    x = x[np.isfinite(x)]
    return float(x.mean()) if len(x) else float("nan")


def identity_distance(e1: np.ndarray, e2: np.ndarray) -> np.ndarray:
    """Euclidean distance (N,) between dlib descriptors; < 0.6 means same person. NaN propagates."""
    e1, e2 = np.asarray(e1, np.float64), np.asarray(e2, np.float64)
    if e1.shape != e2.shape or e1.ndim != 2:
        raise ValueError(f"expected two (N,D) arrays, got {e1.shape} and {e2.shape}")
    return np.linalg.norm(e1 - e2, axis=1)


def identity_similarity(e1: np.ndarray, e2: np.ndarray) -> np.ndarray:
    """Cosine similarity (N,) between descriptors, in [-1, 1] (1 = same direction). NaN propagates.

    Reported beside `identity_distance`, whose 0.6 threshold is the calibrated decision.
    """
    e1, e2 = np.asarray(e1, np.float64), np.asarray(e2, np.float64)
    if e1.shape != e2.shape or e1.ndim != 2:
        raise ValueError(f"expected two (N,D) arrays, got {e1.shape} and {e2.shape}")
    return (e1 * e2).sum(1) / (np.linalg.norm(e1, axis=1) * np.linalg.norm(e2, axis=1))


# ---------------------------------------------------------------- optional metrics --------


def _has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def optional_metric_status() -> dict[str, str]:
    """Whether FID and LPIPS can run here: {'fid': 'available: ...' | 'absent: <why>', 'lpips': ...}.

    Both need pretrained weights we neither ship nor download, plus torchvision-based code;
    we only look for them (torch hub cache, installed packages) and never fetch anything.
    """
    hub = Path(torch.hub.get_dir()) / "checkpoints"

    fid_weights = [hub / f for f in FID_WEIGHT_FILES if (hub / f).is_file()]
    fid_impl = [m for m in ("pytorch_fid", "torch_fidelity") if _has_module(m)]
    why = []
    if not fid_weights:
        why.append(f"no Inception weights ({' or '.join(FID_WEIGHT_FILES)}) in {hub}")
    if not fid_impl:
        why.append("neither pytorch-fid nor torch-fidelity installed")
    if not _has_module("torchvision"):
        why.append("torchvision not installed")
    fid = f"available: {fid_impl[0]} with {fid_weights[0]}" if not why else "absent: " + "; ".join(why)

    why = []
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        why.append("lpips package not installed")
        pairs = []
    else:
        lin_dir = Path(list(spec.submodule_search_locations)[0]) / "weights" / "v0.1"
        pairs = [
            (lin_dir / f"{net}.pth", hub / backbone)
            for net, backbone in LPIPS_NETS.items()
            if (lin_dir / f"{net}.pth").is_file() and (hub / backbone).is_file()
        ]
        if not pairs:
            why.append(
                f"no LPIPS net with both its linear weights in {lin_dir} and its backbone "
                f"({' or '.join(LPIPS_NETS.values())}) in {hub}"
            )
    if not _has_module("torchvision"):
        why.append("torchvision not installed")
    lp = f"available: lpips with {pairs[0][0]} and {pairs[0][1]}" if not why else "absent: " + "; ".join(why)
    return {"fid": fid, "lpips": lp}


# ---------------------------------------------------------------- sketches ----------------


def sketch_fscore(pred: np.ndarray, ref: np.ndarray, tolerance: float, ink: int = 128) -> np.ndarray:
    """Stroke F-score (N,) of sketches (N,H,W) uint8, black ink on white: a predicted ink
    pixel counts as right when a reference ink pixel lies within `tolerance` px (precision),
    and a reference ink pixel as found when a predicted one does (recall); F = 2PR/(P+R).
    A chamfer-style match, so a stroke drawn a pixel off still counts. Faces where both
    sketches are blank score 1, one blank 0."""
    import cv2

    pred, ref = np.asarray(pred), np.asarray(ref)
    if pred.shape != ref.shape or pred.ndim != 3:
        raise ValueError(f"expected two (N,H,W) arrays, got {pred.shape} and {ref.shape}")
    out = np.empty(len(pred))
    for i, (p, r) in enumerate(zip(pred, ref)):
        p_ink, r_ink = p < ink, r < ink
        if not p_ink.any() or not r_ink.any():
            out[i] = float(p_ink.any() == r_ink.any())
            continue
        # distance of every pixel to the nearest ink pixel of the other sketch
        d_to_r = cv2.distanceTransform((~r_ink).astype(np.uint8), cv2.DIST_L2, 3)
        d_to_p = cv2.distanceTransform((~p_ink).astype(np.uint8), cv2.DIST_L2, 3)
        precision = float((d_to_r[p_ink] <= tolerance).mean())
        recall = float((d_to_p[r_ink] <= tolerance).mean())
        out[i] = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return out


# ---------------------------------------------------------------- gates -------------------

# The bars a trained model must clear on the test split, each against its null (issue 12 of
# the project; README "What the small profile reaches"). Ratios are model / null.
GATES: dict[str, tuple[str, str, float]] = {
    # name: (metric path, comparison, bar)
    "recon_same_person": ("identity.recon_same_person", ">=", 0.6),
    "recon_landmarks_vs_mean_face": ("ratios.recon_over_mean_face", "<=", 0.6),
    "swap_follows_geometry": ("ratios.swap_over_ignores_geometry", "<=", 0.75),
    # The mean face scores ~0.7 of "ignores geometry" on London: a swap must also beat it.
    "swap_beats_mean_face": ("ratios.swap_over_mean_face", "<=", 0.8),
    "swap_not_appearance_shape": ("ratios.swap_appearance_over_geometry", ">=", 1.25),
    "swap_takes_appearance_colour": ("lab.swap_follows_appearance", ">=", 0.9),
    "decoded_sketch_beats_mean_sketch": ("ratios.sketch_over_mean_sketch", ">=", 1.25),
    # A plain line drawing of B's contours in A's frame: the output is clearly closer to B's shape.
    "line_drawing_followed": ("ratios.drawing_over_own", "<=", 0.8),
    # Out of the studio (the `shifts` stage's faces, evaluation.shifted): a user's photo.
    "shifted_psnr_within_1db": ("shifted.psnr_drop", "<=", 1.0),
    # The reconstruction's inner-face colour is nearer the shifted photo than the same face clean is.
    "shifted_colour_carried": ("shifted.pooled.recon_colour_over_shift", "<=", 1.0),
    "shifted_swap_takes_appearance_colour": ("shifted.pooled.swap_follows_appearance", ">=", 0.9),
    "shifted_swap_follows_geometry": ("shifted.pooled.swap_over_ignores_geometry", "<=", 0.75),
    # Edits as users make them, composed into the photo (editing.compose, evaluation.edits):
    # a redrawn feature lands nearer the drawing than the photo's own ...
    "edit_follows_drawing": ("edits.local.compose.pooled.feature_over_own", "<=", 0.6),
    # ... keeps the person and leaves the rest of the photo as it was;
    "edit_keeps_person": ("edits.local.compose.pooled.same_person", ">=", 0.9),
    "edit_keeps_rest": ("edits.local.compose.pooled.psnr_outside", ">=", 35.0),
    # another photo's appearance brings its colours and keeps the geometry photo's person.
    "edit_swap_takes_colour": ("edits.swap.compose.follows_appearance", ">=", 0.9),
    "edit_swap_keeps_person": ("edits.swap.compose.same_person_geometry", ">=", 0.6),
}


def _lookup(metrics: Mapping, path: str) -> float | None:
    node: object = metrics
    for key in path.split("."):
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return None if node is None else float(node)


# The dfi stage's bars (reports/dfi.json): the test smile composed into each photo at its own size.
DFI_GATES: dict[str, tuple[str, str, float]] = {
    # the mouth lands nearer the person's real smile: 15 % below the unedited photo's error ...
    "smile_follows": ("photo_size.chosen.mouth_over_photo", "<=", 0.85),
    # ... and every face stays the same person for dlib.
    "smile_keeps_person": ("photo_size.chosen.same_person", ">=", 1.0),
    # The same two bars on the test photos under the shifts of ordinary photos, pooled.
    "shifted_smile_follows": ("photo_size_shifted.pooled.composed.mouth_over_photo", "<=", 0.85),
    "shifted_smile_keeps_person": ("photo_size_shifted.pooled.composed.same_person", ">=", 1.0),
}


def gates(metrics: Mapping, table: Mapping[str, tuple[str, str, float]] = GATES) -> dict[str, bool]:
    """Each bar of `table` (the evaluate stage's `GATES` unless given) as passed (True) or not;
    a missing or NaN figure fails."""
    out = {}
    for name, (path, op, bar) in table.items():
        v = _lookup(metrics, path)
        ok = v is not None and np.isfinite(v) and (v >= bar if op == ">=" else v <= bar)
        out[name] = bool(ok)
    return out

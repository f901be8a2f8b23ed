"""align: FFHQ-style similarity alignment from 68-point landmarks, and pasting edits back.

The crop is the square c ± x ± y built from the eye centres and mouth corners (the FFHQ
recipe); we keep the 2x3 photo->aligned transform so an edited face can be pasted back.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from pipeline.core.io import ImageDecodeError, load_image, load_npy, npy_writer, release, save_csv, save_npy, save_rows
from pipeline.core.parallel import thread_imap


@dataclass(frozen=True)
class AlignConfig:
    resolution: int = 128


def alignment_quad(landmarks: np.ndarray) -> np.ndarray:
    """Corners (top-left, bottom-left, bottom-right, top-right) of the aligned crop, (4, 2)."""
    lm = np.asarray(landmarks, np.float64)
    assert lm.shape == (68, 2), lm.shape
    eye_left, eye_right = lm[36:42].mean(0), lm[42:48].mean(0)
    eye_avg = (eye_left + eye_right) / 2
    eye_to_eye = eye_right - eye_left
    mouth_avg = (lm[48] + lm[54]) / 2
    eye_to_mouth = mouth_avg - eye_avg
    rot90 = lambda v: np.array([-v[1], v[0]])  # noqa: E731  (90° turn, image y pointing down)
    x = eye_to_eye - rot90(eye_to_mouth)
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = rot90(x)
    c = eye_avg + eye_to_mouth * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def alignment_transform(landmarks: np.ndarray, resolution: int) -> np.ndarray:
    """The 2x3 similarity mapping photo pixels to aligned-face pixels."""
    quad = alignment_quad(landmarks).astype(np.float32)
    dst = np.array([[0, 0], [0, resolution], [resolution, resolution]], np.float32)
    return cv2.getAffineTransform(quad[:3], dst).astype(np.float64)


def warp_face(image: np.ndarray, transform: np.ndarray, resolution: int, paper: int | None = None) -> np.ndarray:
    """Resample the aligned face. Large reductions go through an area pre-shrink (no aliasing:
    thin sketch strokes fade to grey instead of vanishing). Outside the image: reflected
    pixels, or the constant `paper` (255 for sketches)."""
    scale = np.sqrt(abs(np.linalg.det(transform[:, :2])))
    m = transform
    if scale < 0.5:
        shrink = int(np.floor(1 / scale))
        h, w = image.shape[:2]
        small = cv2.resize(image, (max(1, w // shrink), max(1, h // shrink)), interpolation=cv2.INTER_AREA)
        # photo (u, v) -> small (u*sx, v*sy), so aligned = M . diag(1/sx, 1/sy) . small
        sx, sy = small.shape[1] / w, small.shape[0] / h
        m = transform.copy()
        m[:, 0] /= sx
        m[:, 1] /= sy
        image = small
    if paper is None:
        return cv2.warpAffine(image, m, (resolution, resolution), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REFLECT_101)
    return cv2.warpAffine(image, m, (resolution, resolution), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=paper)


def warp_photo(path: str, transform: np.ndarray, resolution: int, short_side: int) -> np.ndarray:
    """The aligned face from a photo file: decoded only as large as the output needs (2x
    oversampling for a clean resample), then warped. `transform` maps full-size photo pixels
    (short side `short_side`); raises ImageDecodeError."""
    need = int(2 * np.sqrt(abs(np.linalg.det(transform[:, :2]))) * short_side)
    image, s = load_image(path, draft_side=min(short_side, max(64, need)))
    m = transform.copy()
    m[:, :2] /= s  # the photo transform applied to decoded (scaled) pixels
    return warp_face(image, m, resolution)


def transform_points(points: np.ndarray, transform: np.ndarray) -> np.ndarray:
    pts = np.asarray(points, np.float64)
    return (pts @ transform[:, :2].T + transform[:, 2]).astype(np.float32)


def paste_back(
    photo: np.ndarray, aligned: np.ndarray, transform: np.ndarray, mask: np.ndarray | None = None,
    feather: float = 0.06,
) -> np.ndarray:
    """Put an edited aligned face back into the photo it came from.

    `mask` (R,R) float in [0,1] says where the edit applies in the aligned frame (default: an
    ellipse over the face); its edge is feathered by `feather` x R so no seam shows.
    """
    r = aligned.shape[0]
    if mask is None:
        mask = np.zeros((r, r), np.float32)
        cv2.ellipse(mask, (r // 2, int(r * 0.54)), (int(r * 0.36), int(r * 0.44)), 0, 0, 360, 1.0, -1)
    if feather > 0:  # feather=0: the mask is already soft (editing.blend.inner_face_mask)
        k = max(3, int(feather * r) | 1)
        mask = cv2.GaussianBlur(mask.astype(np.float32), (k, k), 0)
    h, w = photo.shape[:2]
    inv = cv2.invertAffineTransform(transform)
    face = cv2.warpAffine(aligned, inv, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    alpha = cv2.warpAffine(mask, inv, (w, h), flags=cv2.INTER_LINEAR, borderValue=0.0)[..., None]
    out = photo.astype(np.float32) * (1 - alpha) + face.astype(np.float32) * alpha
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def run_align(
    cfg: AlignConfig, ingest_manifest: pd.DataFrame, lm_manifest: pd.DataFrame, landmarks: np.ndarray,
    out_dir: Path, workers: int | None = None,
) -> pd.DataFrame:
    """Aligned faces (N,R,R,3) uint8, their landmarks, transforms and a manifest.

    Photos are decoded and warped on `workers` threads (None: $DFE_WORKERS or all cores)."""
    r = cfg.resolution
    found = lm_manifest[lm_manifest["status"] == "ok"].merge(
        ingest_manifest[["id", "identity", "label", "path", "width", "height", "age", "gender", "ethnicity"]], on="id"
    )
    n = len(found)

    def warp(rec) -> tuple[np.ndarray | None, str]:
        try:
            return warp_photo(rec.path, alignment_transform(landmarks[int(rec.row)], r), r, min(rec.width, rec.height)), ""
        except ImageDecodeError as e:
            return None, str(e)

    aligned_lm = np.zeros((n, 68, 2), np.float32)
    transforms = np.zeros((n, 2, 3), np.float64)
    keep = np.zeros(n, bool)
    reasons = [""] * n
    records = list(found.itertuples())
    # Faces go straight into a memory-mapped file as they come: a full-scale set need not fit in memory.
    with npy_writer(out_dir / "images.npy", (n, r, r, 3), np.uint8) as images:
        for i, (rec, (face, reason)) in enumerate(zip(records, thread_imap(warp, records, "align", workers))):
            if face is None:
                reasons[i] = reason
                continue
            lm = landmarks[int(rec.row)]
            m = alignment_transform(lm, r)
            images[i] = face
            if i % 256 == 255:
                release(images)  # memory stays a few faces deep, whatever the set's size
            aligned_lm[i] = transform_points(lm, m)
            transforms[i] = m
            keep[i] = True
    if not keep.all():  # a photo that no longer decodes (changed since ingest): drop its row
        save_rows(out_dir / "images.npy", load_npy(out_dir / "images.npy"), np.flatnonzero(keep))
    out = found.assign(status=np.where(keep, "ok", "rejected"), reason=reasons)
    ok = out[keep].reset_index(drop=True).assign(row=np.arange(int(keep.sum())))
    save_npy(out_dir / "landmarks.npy", aligned_lm[keep])
    save_npy(out_dir / "transforms.npy", transforms[keep])
    cols = ["row", "id", "identity", "label", "path", "age", "gender", "ethnicity"]
    save_csv(out_dir / "manifest.csv", ok[cols])
    return out

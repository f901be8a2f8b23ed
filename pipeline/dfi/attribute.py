"""attribute: DFI on any photo (`dfe attribute`), with vectors from `pipeline.dfi.vectors`.

A photo of any size is decoded, its face found and aligned (as `dfe edit` does), edited along
one or more attribute vectors, and put back into the photo's own frame inside the inner-face
mask of `dfe edit`: by default only the change (edit minus the unedited output, added to the
photo at its own resolution by the one composition step, `editing.compose`, through
`editing.edit.paste_change`: the photo's own pixels move as the renders move), so at alpha 0 the photo comes back
unchanged and its detail and identity stay where the attribute leaves the face alone; with
blend "face", the edited face's pixels with the colour match of `dfe edit` (`paste_edited`).
On the London val identities with the small CPU models, "face" kept dlib's same-person verdict
for 10-20 % of the edits (the reconstruction itself for 20 %), "change" for 90-100 %.

- fast: the photo's per-part geometry latents and appearance codes move by alpha times each
  vector (`interpolation.apply_learned_dfi`, every vector in turn) and go through the
  generators and fusion once. The edited geometry decodes to an editable sketch.
- classic: for each vector, the K nearest examples on each side by landmark shape (the points
  the attribute moves least, `AttributeVector.shape_points`) give w = mean phi(T) - mean
  phi(S) in VGG-19 space; the target phi(x) + sum_i alpha_i w_i is reconstructed by L-BFGS
  with the TV prior (`interpolation.dfi_reconstruct`), on the VGG's device.

Several vectors combine (smile + open mouth). Alphas: vector i moves by its own `weight` (the
ALPHA of `--vector V:ALPHA`) if given, else by the request's `alpha`, else by the alpha the
vector records (chosen on validation faces by the dfi stage). A sweep (`strip`) of values s
moves vector i by s x weight_i (weight 1 when not given), all rows in one batch.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import torch

from pipeline.core.config import synchronize
from pipeline.dfi.vectors import AttributeVector, VectorFileError

METHODS = ("fast", "classic")
# How an edit goes back into the photo: "change" adds only what the edit changed (edit minus
# the unedited output) to the photo at its own resolution, so the photo's detail and identity
# stay; "face" pastes the edited face's pixels over the inner face, as `dfe edit` does.
BLENDS = ("change", "face")
# Where the "change" blend's motion comes from (fast DFI): "landmarks" moves the photo's own pixels
# by the vectors' landmark shift (their examples' mean landmarks with minus without), the renders
# adding what a move cannot explain (teeth); "renders" takes the motion from the renders alone,
# which move a 128 px mouth about half as far as the examples' own smiles (see README).
MOTIONS = ("landmarks", "renders")


@dataclass
class VectorUse:
    vector: AttributeVector
    weight: float | None = None  # ALPHA of --vector V:ALPHA


def parse_vector_spec(spec: str) -> tuple[str, float | None]:
    """'smile.safetensors:1.5' -> ('smile.safetensors', 1.5); a suffix that is not a number
    stays part of the path (C:\\vectors\\smile.safetensors)."""
    head, sep, tail = spec.rpartition(":")
    if sep and head:
        try:
            return head, float(tail)
        except ValueError:
            pass
    return spec, None


def main_alphas(uses: Sequence[VectorUse], alpha: float | None) -> list[float]:
    """Each vector's step for the edit: its weight, else `alpha`, else its recorded alpha."""
    return [u.weight if u.weight is not None else alpha if alpha is not None else u.vector.alpha for u in uses]


def sweep_alphas(uses: Sequence[VectorUse], value: float) -> list[float]:
    """Each vector's step for one sweep value s: s x its weight (1 when none was given)."""
    return [value * (1.0 if u.weight is None else u.weight) for u in uses]


@torch.inference_mode()
def fast_edits(editor, face: np.ndarray, uses: Sequence[VectorUse], rows: Sequence[Sequence[float]]
               ) -> tuple[np.ndarray, dict[str, torch.Tensor]]:
    """Edited aligned faces (S,R,R,3) uint8, one per row of per-vector alphas, and their
    geometry latents (part -> (S,C,h,w)); one encode and one batched render."""
    from pipeline.core.tensors import faces_to_tensor, tensor_to_faces
    from pipeline.dfi.interpolation import apply_learned_dfi

    x = faces_to_tensor(face[None], editor.device)
    z, codes = editor.geometry_from_photo(x), editor.appearance_codes(x)
    zs, cs = [], []
    for alphas in rows:
        zi, ci = z, codes
        for use, a in zip(uses, alphas):
            v = use.vector
            zi, ci = apply_learned_dfi(zi, ci, v.learned, float(a), parts=v.parts, spaces=v.spaces)
        zs.append(zi)
        cs.append(ci)
    zb = {p: torch.cat([zi[p] for zi in zs]) for p in z}
    cb = {p: torch.cat([ci[p] for ci in cs]) for p in codes}
    return tensor_to_faces(editor.render(zb, cb)), zb


def landmark_motions(landmarks: np.ndarray | None, req: AttributeRequest, rows: Sequence[Sequence[float]],
                     resolution: int) -> list[np.ndarray] | None:
    """Per row of per-vector alphas, the aligned backward motion (R,R,2) of the vectors'
    landmark shifts (sum of alpha_i x shift_i) from the face's own landmarks (aligned px at
    `resolution`); None when the request asks for render motion, the face has no landmarks (an
    aligned crop) or a vector has no examples to take the shift from."""
    from pipeline.editing.compose import ComposeSettings, landmark_motion

    shifts = [u.vector.landmark_shift for u in req.uses]
    if req.motion != "landmarks" or landmarks is None or any(s is None for s in shifts):
        return None
    settings = req.compose or ComposeSettings()
    points = np.asarray(landmarks, np.float32)
    return [landmark_motion(points, sum(float(a) * s for a, s in zip(alphas, shifts)), resolution,
                            settings.landmark_sigma, settings.landmark_passes)
            for alphas in rows]


def classic_directions(vgg, landmarks: np.ndarray, uses: Sequence[VectorUse], k: int) -> list[torch.Tensor]:
    """Per vector: the unit VGG-19 direction from the K nearest examples on each side by
    landmark shape (fewer when a side has fewer than K)."""
    from pipeline.core.tensors import faces_to_tensor
    from pipeline.dfi.interpolation import attribute_vector, mean_dfi_features, nearest_split, normalise_landmarks

    device = next(vgg.parameters()).device
    out = []
    for use in uses:
        v = use.vector
        if not v.has_examples:
            raise VectorFileError(f"{v.path} keeps no example faces, which classic DFI picks its neighbours from: "
                                  "relearn it with `dfe attribute-vector` (or use --method fast)")
        ex_s, ex_t = v.examples["without"], v.examples["with"]
        pts = list(v.shape_points)
        pool = np.concatenate([ex_s.landmarks, ex_t.landmarks])[:, pts]
        feats = normalise_landmarks(np.concatenate([landmarks[None, pts], pool]))
        has = np.r_[np.zeros(len(ex_s), bool), np.ones(len(ex_t), bool)]
        nb = nearest_split(feats[0], feats[1:], has, max(1, min(k, len(ex_s), len(ex_t))))
        faces = np.concatenate([ex_s.faces, ex_t.faces])
        phi_s = mean_dfi_features(vgg, faces_to_tensor(faces[nb.source], device))
        phi_t = mean_dfi_features(vgg, faces_to_tensor(faces[nb.target], device))
        out.append(attribute_vector(phi_t, phi_s))
    return out


def classic_edits(vgg, face: np.ndarray, landmarks: np.ndarray, uses: Sequence[VectorUse],
                  rows: Sequence[Sequence[float]], k: int, iters: int, tv_weight: float) -> np.ndarray:
    """Classic DFI: (S,R,R,3) uint8, one per row of per-vector alphas, all rows in one L-BFGS run."""
    from pipeline.core.tensors import faces_to_tensor, tensor_to_faces
    from pipeline.dfi.interpolation import dfi_features, dfi_reconstruct

    device = next(vgg.parameters()).device
    ws = classic_directions(vgg, landmarks, uses, k)
    x = faces_to_tensor(face[None], device)
    with torch.no_grad():
        phi_x = dfi_features(vgg, x)[0]
    targets = torch.stack([phi_x + sum(float(a) * w for a, w in zip(alphas, ws)) for alphas in rows])
    res = dfi_reconstruct(vgg, x, targets, iters=iters, tv_weight=tv_weight)
    return tensor_to_faces(res.images)


@dataclass
class AttributeRequest:
    photo: str
    uses: list[VectorUse]
    alpha: float | None = None  # for vectors given without :ALPHA (None: each vector's own)
    method: str = "fast"
    blend: str = "change"  # BLENDS
    strip: tuple[float, ...] = ()  # sweep values
    aligned: bool = False  # the photo is an aligned face crop; outputs stay aligned
    feather: float = 0.06
    sketch: bool = False  # decode the edited geometry to a sketch (needs D_sketch)
    k: int = 10  # classic: neighbours per side
    iters: int = 50  # classic: L-BFGS iterations
    tv_weight: float = 5e-10  # classic: TV prior, official 0-255 scale
    compose: Any = None  # editing.compose.ComposeSettings of the "change" blend (None: the defaults)
    motion: str = "landmarks"  # MOTIONS; "landmarks" falls back to "renders" where a vector has no examples


@dataclass
class AttributeResult:
    image: np.ndarray  # the edit in the photo's frame (the aligned face with aligned=True)
    aligned: np.ndarray  # (R,R,3) the edited aligned face
    alphas: list[float]  # each vector's step in `image`
    transform: np.ndarray  # (2,3) photo -> aligned
    strip: np.ndarray | None = None  # labelled sweep image
    sketch: np.ndarray | None = None  # the edited geometry's sketch: photo frame, or aligned (R,R)
    seconds: dict[str, float] = field(default_factory=dict)  # read_align, model, paste
    sweep: list[np.ndarray] = field(default_factory=list)  # per strip value: the edit in the photo's frame


def face_crop_box(transform: np.ndarray, resolution: int, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): a square around the aligned face's footprint in the photo, inside it."""
    inv = cv2.invertAffineTransform(transform)
    r = resolution
    corners = np.array([[0, 0], [r, 0], [0, r], [r, r]], np.float64) @ inv[:, :2].T + inv[:, 2]
    (x0, y0), (x1, y1) = corners.min(0), corners.max(0)
    h, w = shape
    side = int(round(min(max(x1 - x0, y1 - y0), w, h)))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left = int(round(np.clip(cx - side / 2, 0, w - side)))
    top = int(round(np.clip(cy - side / 2, 0, h - side)))
    return left, top, left + side, top + side


def strip_image(photo: np.ndarray, panels: Sequence[np.ndarray], values: Sequence[float], box, tile: int,
                names: Sequence[str]) -> np.ndarray:
    """The photo and one panel per sweep value, cropped to `box`, `tile` px, labelled."""
    from pipeline.core.viz import make_grid, text_image

    x0, y0, x1, y1 = box

    def crop(img: np.ndarray) -> np.ndarray:
        c = img[y0:y1, x0:x1]
        return cv2.resize(c, (tile, tile), interpolation=cv2.INTER_AREA if c.shape[0] > tile else cv2.INTER_LINEAR)

    what = names[0] if len(names) == 1 else "+".join(names)
    labels = ["photo", *(f"a={v:g}" for v in values)]
    grid = make_grid([crop(photo), *(crop(p) for p in panels)], nrow=len(panels) + 1, col_labels=labels)
    return np.concatenate([text_image([f"{what}: alpha sweep"], width=grid.shape[1]), grid])


def run_attribute(req: AttributeRequest, editor, detector, vgg=None) -> AttributeResult:
    """Decode, align, edit along the vectors, paste back; the strip and sketch when asked.

    `detector` may be None only with req.aligned; `vgg` (VGG19Features) is needed for classic.
    """
    from pipeline.editing.edit import EditInputError, align_image, paste_change, paste_edited, read_image

    if req.method not in METHODS:
        raise ValueError(f"unknown method {req.method!r}; choose from {', '.join(METHODS)}")
    if req.blend not in BLENDS:
        raise ValueError(f"unknown blend {req.blend!r}; choose from {', '.join(BLENDS)}")
    if req.motion not in MOTIONS:
        raise ValueError(f"unknown motion {req.motion!r}; choose from {', '.join(MOTIONS)}")
    if not req.uses:
        raise ValueError("no attribute vectors given")
    if req.method == "classic" and vgg is None:
        raise ValueError("classic DFI needs the VGG-19 network")
    r = editor.profile.resolution
    t0 = time.perf_counter()
    image = read_image(req.photo)
    target = align_image(image, r, None if req.aligned else detector, req.photo)
    landmarks = target.landmarks
    if landmarks is None and req.method == "classic":  # an aligned crop: its landmarks, for the neighbours
        if detector is None:
            raise ValueError("classic DFI on an aligned crop needs a FaceDetector for its landmarks")
        landmarks = detector.landmarks(target.face, req.photo)
    t1 = time.perf_counter()

    alphas = main_alphas(req.uses, req.alpha)
    rows = [alphas, *(sweep_alphas(req.uses, s) for s in req.strip)]
    device = editor.device
    synchronize(device)
    t_model = time.perf_counter()
    if req.method == "fast":  # row 0: the reconstruction, what "change" measures the edit against
        edits, geometry = fast_edits(editor, target.face, req.uses, [[0.0] * len(req.uses), *rows])
        reference, edits = edits[0], edits[1:]
        geo_main = {p: g[1:2] for p, g in geometry.items()}
    else:  # classic starts from the photo itself
        edits = classic_edits(vgg, target.face, landmarks, req.uses, rows, req.k, req.iters, req.tv_weight)
        reference, geo_main = target.face, None
    sketch = None
    if req.sketch:
        from pipeline.core.tensors import faces_to_tensor
        from pipeline.core.viz import to_uint8

        if geo_main is None:  # classic: the geometry of the edited image
            geo_main = editor.geometry_from_photo(faces_to_tensor(edits[:1], device))
        sketch = to_uint8(editor.sketch_from_geometry(geo_main).mean(dim=1, keepdim=True))[0]
    synchronize(next(vgg.parameters()).device if req.method == "classic" else device)
    t2 = time.perf_counter()

    if req.blend == "change":
        motions = landmark_motions(target.landmarks, req, rows, r) if req.method == "fast" else None
        shown = [paste_change(target, e, reference, req.feather, req.compose, m)
                 for e, m in zip(edits, motions or [None] * len(edits))]
    elif target.landmarks is None:
        shown = list(edits)
    else:
        shown = [paste_edited(target, e, req.feather, own_colours=True) for e in edits]
    if req.aligned or target.landmarks is None:
        photo_frame = target.face
        transform = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    else:
        photo_frame = target.photo
        transform = target.transform
        if sketch is not None:
            from pipeline.editing.edit import sketch_to_photo_frame

            sketch = sketch_to_photo_frame(sketch, target.transform, target.photo.shape[:2])
    strip = None
    if req.strip:
        box = face_crop_box(transform, r, photo_frame.shape[:2])
        strip = strip_image(photo_frame, shown[1:], req.strip, box, max(r, 256),
                            [u.vector.name or "vector" for u in req.uses])
    t3 = time.perf_counter()
    if shown[0].shape != photo_frame.shape:  # never: paste-back keeps the frame
        raise EditInputError(f"{req.photo}: output {shown[0].shape} differs from the photo {photo_frame.shape}")
    return AttributeResult(shown[0], edits[0], alphas, transform, strip, sketch,
                           {"read_align": t1 - t0, "model": t2 - t_model, "paste": t3 - t2}, shown[1:])


def save_image(path, img: np.ndarray) -> None:
    """Write an RGB (H,W,3) or gray (H,W) uint8 image in the format its suffix names (.jpg: JPEG
    at quality 95; .png and anything else cv2 has no encoder for: PNG), atomically."""
    from pathlib import Path

    from pipeline.core.io import save_bytes, save_png

    suffix = Path(path).suffix.lower()
    if suffix in ("", ".png") or not cv2.haveImageWriter(f"x{suffix}"):
        save_png(path, img)
        return
    bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR) if img.ndim == 3 else img
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if suffix in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(suffix, np.ascontiguousarray(bgr), params)
    if not ok:
        raise OSError(f"encoding {path} failed")
    save_bytes(path, buf.tobytes())

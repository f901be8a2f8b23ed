"""edit: sketch/photo-driven face editing on ordinary photos, and editable sketches of a photo.

A photo of any size is decoded, its face found (dlib, 68 points), aligned FFHQ-style at the
profile's resolution, edited there (geometry from a photo via E_image or from a sketch via
E_sketch; appearance codes per part from one or more photos), and pasted back into the
original frame with a feathered mask, so pixels outside the mask keep their exact values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from pipeline import PARTS


class EditInputError(ValueError):
    """An input the edit cannot use; the message names the file and the reason."""


class FaceNotFoundError(EditInputError):
    pass


@dataclass
class AlignedFace:
    photo: np.ndarray  # (H,W,3) uint8, the decoded input
    face: np.ndarray  # (R,R,3) uint8 aligned face
    transform: np.ndarray  # (2,3) photo px -> aligned px
    landmarks: np.ndarray | None  # (68,2) aligned px; None for inputs given already aligned


def read_image(path: str | Path) -> np.ndarray:
    """RGB uint8 (H,W,3) of any common image file; EditInputError naming the file otherwise."""
    from pipeline.core.io import ImageDecodeError, load_image

    try:
        image, _ = load_image(path, min_side=16)
    except ImageDecodeError as e:
        raise EditInputError(f"cannot read {path}: {e}") from None
    return image


class FaceDetector:
    """dlib's detector + 68-point predictor run on a copy shrunk to `detect_side` (speed);
    landmarks come back in the full image's pixels."""

    def __init__(self, upsample: int = 1, detect_side: int = 512) -> None:
        from pipeline.data.landmarks import DlibBackend

        self.backend = DlibBackend(upsample=upsample)
        self.detect_side = detect_side

    def landmarks(self, image: np.ndarray, name: str) -> np.ndarray:
        h, w = image.shape[:2]
        k = min(1.0, self.detect_side / min(h, w))
        small = image if k == 1.0 else cv2.resize(image, (round(w * k), round(h * k)), interpolation=cv2.INTER_AREA)
        det = self.backend.detect(np.ascontiguousarray(small))
        if det is None:
            raise FaceNotFoundError(f"no face found in {name}")
        return det.landmarks.astype(np.float64) * np.array([w / small.shape[1], h / small.shape[0]])


def align_image(image: np.ndarray, resolution: int, detector: FaceDetector | None, name: str) -> AlignedFace:
    """Align a photo's face; with detector=None the image is taken as an aligned crop (resized)."""
    from pipeline.data.align import alignment_transform, transform_points, warp_face

    assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8, (image.shape, image.dtype)
    if detector is None:
        h, w = image.shape[:2]
        m = np.array([[resolution / w, 0, 0], [0, resolution / h, 0]], np.float64)
        face = cv2.resize(image, (resolution, resolution), interpolation=cv2.INTER_AREA if w > resolution else cv2.INTER_LINEAR)
        return AlignedFace(image, face, m, None)
    lm = detector.landmarks(image, name)
    m = alignment_transform(lm, resolution)
    return AlignedFace(image, warp_face(image, m, resolution), m, transform_points(lm, m).astype(np.float64))


def warp_sketch(sketch: np.ndarray, transform: np.ndarray, resolution: int) -> np.ndarray:
    """A sketch drawn in a photo's frame -> the aligned frame (R,R) uint8, white where it had no paper."""
    from pipeline.data.align import warp_face

    gray = cv2.cvtColor(sketch, cv2.COLOR_RGB2GRAY) if sketch.ndim == 3 else sketch
    return warp_face(gray, transform, resolution, paper=255)


def sketch_to_photo_frame(sketch: np.ndarray, transform: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """An aligned sketch (R,R) uint8 mapped onto the photo's pixels (H,W); white outside the face crop."""
    assert sketch.ndim == 2 and sketch.dtype == np.uint8, (sketch.shape, sketch.dtype)
    inv = cv2.invertAffineTransform(transform)
    h, w = shape
    return cv2.warpAffine(sketch, inv, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_CONSTANT, borderValue=255)


def looks_like_sketch(image: np.ndarray) -> bool:
    """Black-on-white line art: grey (channels equal) and mostly paper-white."""
    img = image.astype(np.int16)
    grey = np.abs(img - img.mean(axis=2, keepdims=True)).max(axis=2) <= 8
    return bool(grey.mean() > 0.99 and (img.mean(axis=2) > 200).mean() > 0.6)


def _sketch_tensor(sketch: np.ndarray, device: torch.device) -> torch.Tensor:
    assert sketch.ndim == 2 and sketch.dtype == np.uint8, (sketch.shape, sketch.dtype)
    x = torch.from_numpy(np.ascontiguousarray(sketch)).to(device).float().div(127.5).sub(1.0)
    return x[None, None].expand(1, 3, -1, -1).contiguous()  # white paper = +1, 3 channels


def edit_aligned(
    editor,
    appearance: np.ndarray,
    geometry_photo: np.ndarray | None = None,
    geometry_sketch: np.ndarray | None = None,
    part_appearance: dict[str, np.ndarray] | None = None,
    renders=None,
) -> np.ndarray:
    """The edited aligned face (R,R,3) uint8.

    Geometry from `geometry_sketch` (R,R) uint8 via E_sketch when given, else from
    `geometry_photo` (R,R,3) via E_image; appearance codes of every part from `appearance`,
    replaced per part by `part_appearance[part]` (all aligned (R,R,3) uint8 faces).
    `renders` (editing.renders.EditRenders) shares the work of several renders of one edit.
    """
    from pipeline.editing.renders import EditRenders

    r = editor.profile.resolution
    overrides = dict(part_appearance or {})
    unknown = set(overrides) - set(PARTS)
    if unknown:
        raise ValueError(f"unknown parts {sorted(unknown)}; choose from {', '.join(PARTS)}")
    faces = [appearance, *overrides.values()]
    if any(f.shape != (r, r, 3) for f in faces):
        raise ValueError(f"appearance faces must be ({r},{r},3), got {[f.shape for f in faces]}")
    if geometry_sketch is not None:
        assert geometry_sketch.shape == (r, r), geometry_sketch.shape
    elif geometry_photo is not None:
        assert geometry_photo.shape == (r, r, 3), geometry_photo.shape
    else:
        raise ValueError("edit_aligned needs a geometry photo or a geometry sketch")
    renders = renders or EditRenders(editor)
    assert renders.editor is editor, "EditRenders belongs to another editor"
    return renders.render(appearance, geometry_photo if geometry_sketch is None else None, geometry_sketch, overrides)


SKETCH_RECORD = "dfe:sketch"  # PNG tEXt key: how `dfe sketch` drew a sketch (sketcher, profile, frame)


@dataclass
class EditRequest:
    geometry: str  # photo (or, with aligned=True, a photo or sketch) whose frame the output keeps
    appearance: str
    part_appearance: dict[str, str] = field(default_factory=dict)
    geometry_sketch: str | None = None  # in the geometry photo's frame, or aligned with aligned=True
    aligned: bool = False  # inputs are aligned crops; the output is the aligned face
    feather: float = 0.06
    render: str = "compose"  # compose: only the edit goes into the photo (editing.compose) | full: the whole render


@dataclass
class EditResult:
    image: np.ndarray  # the output: input-sized photo, or the aligned face with aligned=True
    aligned: np.ndarray  # (R,R,3) the edited aligned face
    transform: np.ndarray  # (2,3) photo -> aligned


def run_edit(req: EditRequest, editor, detector: FaceDetector | None, own_sketch=None, settings=None) -> EditResult:
    """Decode, align, edit and put the edit into the photo. `detector` may be None only with
    req.aligned. With req.render "compose" (the default) the photo carries the person
    (editing.compose): a geometry sketch is compared with the photo's own sketch, drawn by
    `own_sketch(AlignedFace) -> (R,R) uint8` as `dfe sketch` draws it; "full" pastes the
    network's whole render."""
    from pipeline.editing.compose import RENDERS, ComposeSettings
    from pipeline.editing.renders import EditRenders

    r = editor.profile.resolution
    if req.render not in RENDERS:
        raise ValueError(f"unknown render {req.render!r}; choose {' or '.join(RENDERS)}")
    if not req.aligned and detector is None:
        raise ValueError("a FaceDetector is needed unless the inputs are aligned")
    det = None if req.aligned else detector

    geo_img = read_image(req.geometry)
    sketch = None
    if req.geometry_sketch is None and looks_like_sketch(geo_img):
        if not req.aligned:
            raise EditInputError(
                f"{req.geometry} looks like a sketch: a sketch as the main input must be an aligned face "
                "(pass --aligned), or give the photo and the sketch with --geometry-sketch"
            )
        sketch = warp_sketch(geo_img, align_image(geo_img, r, None, req.geometry).transform, r)
        target = None
    else:
        target = align_image(geo_img, r, det, req.geometry)
        if req.geometry_sketch is not None:
            drawn = read_image(req.geometry_sketch)
            if not req.aligned and drawn.shape[:2] != geo_img.shape[:2]:
                raise EditInputError(
                    f"{req.geometry_sketch} is {drawn.shape[1]}x{drawn.shape[0]} but {req.geometry} is "
                    f"{geo_img.shape[1]}x{geo_img.shape[0]}: draw on the photo's own frame (`dfe sketch "
                    "--in-photo-frame`) or pass --aligned with aligned inputs"
                )
            m = target.transform if not req.aligned else align_image(drawn, r, None, req.geometry_sketch).transform
            sketch = warp_sketch(drawn, m, r)

    own_colours = Path(req.appearance).resolve() == Path(req.geometry).resolve() and not req.part_appearance
    app = target.face if own_colours and target is not None else \
        align_image(read_image(req.appearance), r, det, req.appearance).face
    parts = {p: align_image(read_image(path), r, det, path).face for p, path in req.part_appearance.items()}
    renders = EditRenders(editor)  # the edit and the composition's renders share their work
    out = edit_aligned(editor, app, None if target is None else target.face, sketch, parts, renders)
    if target is None:  # an aligned sketch alone: there is no photo to keep
        return EditResult(out, out, np.array([[1.0, 0, 0], [0, 1.0, 0]]))
    if req.render == "full":
        if req.aligned:
            return EditResult(out, out, target.transform)
        return EditResult(paste_edited(target, out, req.feather, own_colours), out, target.transform)
    s0 = None
    if sketch is not None:
        if target.landmarks is None:
            raise EditInputError("composing a sketch edit of an aligned input needs its landmarks: "
                                 "give the photo without --aligned, or pass --render full")
        if own_sketch is None:
            raise ValueError("composing a sketch edit needs the photo's own sketch (own_sketch)")
        s0 = own_sketch(target)
        if not req.aligned:  # through the photo's frame and back, as the drawn sketch came
            s0 = warp_sketch(sketch_to_photo_frame(s0, target.transform, target.photo.shape[:2]), target.transform, r)
    image = compose_edit(editor, target, out, sketch, s0, None if own_colours else (app, parts),
                         settings or ComposeSettings(), req.feather, renders)
    return EditResult(image, out, target.transform)


def compose_edit(editor, target: AlignedFace, edited: np.ndarray, sketch: np.ndarray | None, own_sketch: np.ndarray | None,
                 appearance: tuple[np.ndarray, dict[str, np.ndarray]] | None, settings, feather: float = 0.06,
                 renders=None) -> np.ndarray:
    """`edit_aligned`'s result put into the photo by editing.compose: the geometry change from
    the photo's own sketch to `sketch` (when given), then the appearance change to `appearance`
    ((all-part face, per-part faces), None: the photo's own). `renders`: the EditRenders that
    made `edited`, so the reference renders reuse its work."""
    from pipeline.editing.blend import inner_face_mask
    from pipeline.editing.compose import compose

    r = editor.profile.resolution
    geometry = sketches = changes = None
    own = target.face
    if sketch is not None:
        r0 = edit_aligned(editor, own, geometry_sketch=own_sketch, renders=renders)
        r1 = edit_aligned(editor, own, geometry_sketch=sketch, renders=renders)
        geometry, sketches = (r0, r1), (own_sketch, sketch)
        changes = (r1, edited) if appearance is not None else None
    elif appearance is not None:
        changes = (edit_aligned(editor, own, geometry_photo=own, renders=renders), edited)
    mask = np.ones((r, r), np.float32) if target.landmarks is None else inner_face_mask(target.landmarks, r, feather)
    shift = None
    if appearance is not None:  # the appearance photos' own colours, part by part ("bg": the one for every part)
        from pipeline.editing.compose import photo_colour_shift

        shift, _ = photo_colour_shift(own, {"bg": appearance[0], **appearance[1]}, editor.boxes)
    within = None
    if geometry is not None and target.landmarks is not None:  # the face moves; hair and background stay
        from pipeline.editing.blend import face_region_mask

        within = face_region_mask(target.landmarks, r)
    return compose(target.photo, target.transform, geometry=geometry, sketches=sketches, appearance=changes,
                   inner_mask=mask, colour_shift=shift, within=within,
                   residual_within=None if target.landmarks is None else mask, settings=settings)


def paste_edited(target: AlignedFace, edited: np.ndarray, feather: float = 0.06, own_colours: bool = True) -> np.ndarray:
    """An edited aligned face (R,R,3) in `target`'s photo frame, as `dfe edit` shows it: the
    inner-face mask (editing.blend), the output's Lab statistics moved to the photo's when the
    appearance is the photo's own (colours must not drift), left as rendered when it comes from
    another photo (its colours and skin tone are the point of the edit), pasted back."""
    from pipeline.data.align import paste_back
    from pipeline.editing.blend import inner_face_mask, match_colour

    assert target.landmarks is not None, "paste-back needs the photo's landmarks"
    mask = inner_face_mask(target.landmarks, edited.shape[0], feather=feather)
    shown = match_colour(edited, target.face, mask) if own_colours else edited
    return paste_back(target.photo, shown, target.transform, mask=mask, feather=0.0)


def paste_change(target: AlignedFace, edited: np.ndarray, reference: np.ndarray, feather: float = 0.06,
                 settings=None, motion: np.ndarray | None = None) -> np.ndarray:
    """An edit without sketches (an attribute) put into the photo by editing.compose:
    `reference` is the unedited output (the reconstruction) and `edited` the edit's; the
    photo's own pixels move as the renders move (or by `motion`, (R,R,2) aligned px, when
    given: an attribute's landmark vector), and what the move does not explain is added,
    inside the inner-face mask. An edit that changes nothing returns the photo itself.
    Aligned inputs (no landmarks): the aligned face, everywhere."""
    from pipeline.editing.blend import inner_face_mask
    from pipeline.editing.compose import ComposeSettings, compose

    settings = settings or ComposeSettings()
    if target.landmarks is None:
        return compose(target.face, np.array([[1.0, 0, 0], [0, 1.0, 0]]), geometry=(reference, edited),
                       motion=motion, settings=settings)
    within = inner_face_mask(target.landmarks, edited.shape[0], feather=feather)
    return compose(target.photo, target.transform, geometry=(reference, edited), motion=motion, within=within,
                   settings=settings)


def photo_sketch(
    path: str, resolution: int, style, detector: FaceDetector, in_photo_frame: bool = False,
    device: torch.device | str = "cpu", photo_to_sketch: torch.nn.Module | None = None,
) -> np.ndarray:
    """The editable sketch of a photo's face: aligned (R,R) uint8, or photo-sized (H,W) with
    `in_photo_frame` (white outside the face crop) to draw on and feed back as a geometry sketch.

    Drawn by `photo_to_sketch` (the authors' generator, `load_photo_to_sketch`) when given,
    else by our synthesis in `style`, a SketchStyle (randomize=0: the fixed look the encoders
    see on average).
    """
    face = align_image(read_image(path), resolution, detector, path)
    sketch = draw_face_sketch(face, style, device, photo_to_sketch)
    if not in_photo_frame:
        return sketch
    return sketch_to_photo_frame(sketch, face.transform, face.photo.shape[:2])


def draw_face_sketch(face: AlignedFace, style, device: torch.device | str = "cpu",
                     photo_to_sketch: torch.nn.Module | None = None) -> np.ndarray:
    """An aligned face's editable sketch (R,R) uint8: by the authors' photo-to-sketch generator
    when given, else by our synthesis in `style` (randomize=0: the fixed look). `dfe sketch`,
    `dfe edit -s` (the photo's own sketch to compare with) and the studio draw it here."""
    if photo_to_sketch is not None:
        from pipeline.core.tensors import faces_to_tensor
        from pipeline.core.viz import to_uint8
        from pipeline.models.editor import sketch_of_face

        x = faces_to_tensor(face.face[None], next(photo_to_sketch.parameters()).device)
        return to_uint8(sketch_of_face(photo_to_sketch, x))[0]  # rounded to nearest
    from pipeline.data.sketch.synthesis import synthesize_sketches

    return synthesize_sketches(face.face[None], face.landmarks[None].astype(np.float32), style, seed=0,
                               device=device)[0]

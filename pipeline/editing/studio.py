"""studio: the edit step behind `dfe studio`, the browser face editor, as plain functions.

A person opens a photo; its face is found and aligned, and its editable sketch is drawn as
`dfe sketch` draws it (`Studio.face_sketch`: our synthesis with randomize=0, or the authors'
photo-to-sketch generator when it was imported). They draw on that sketch; every change runs
`Studio.render`: E_sketch on the edited sketch, the appearance codes of each part (the
photo's own, one photo for every part, or one photo per part group: eyes, nose, mouth, rest),
optional attribute steps along DFI vectors, then the edit goes into the photo's own frame by
the composition of `dfe edit` (editing.compose): the photo's own pixels move as the strokes
move the face, what a move cannot explain is added near the strokes, another photo's
appearance comes in as a colour change, and everywhere else the photo stays itself. A
donor's codes are computed once, when it is chosen; an update re-runs the sketch encoder and
generator only of the parts whose box a stroke crosses (`PartCache`), then the fusion net. Unticking "Change the face only near my strokes"
(`Studio.render(local=False)`) shows the networks' whole render instead.

Everything here runs without a browser (tests/test_studio.py); `build_app` wraps it in a
Gradio page and imports gradio only there (`pip install -e ".[studio]"`).

Attribute vectors (the sliders): a `.safetensors` file with tensors `<part>.geometry`
(C,h,w: a step in that part's geometry latent) and/or `<part>.appearance` (A,: a step in its
appearance code), parts from PARTS, as the dfi stage writes them
(`outputs/dfi/vectors.safetensors`). Optional string metadata: `parts` (comma-separated
parts the slider moves; default every part in the file), `spaces` (comma-separated from
geometry, appearance; default both), `alphas` (a list such as "[0.0, 1.0, 2.0]": the slider
runs from -max|alpha| to +max|alpha|; default 3) and `name` (the slider's label; default the
file's stem, or the folder's name for a file called vectors.safetensors).
"""

from __future__ import annotations

import re
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from pipeline.dfi.vectors import IMAGE_SUFFIXES
from pipeline.editing.edit import AlignedFace, EditInputError, FaceDetector, align_image, read_image
from pipeline.editing.renders import PartCache

# The appearance slots a person fills: one photo for every part, or one per group of parts.
ALL = "all"
GROUPS: dict[str, tuple[str, ...]] = {"eyes": ("eye1", "eye2"), "nose": ("nose",), "mouth": ("mouth",), "rest": ("bg",)}
SLOTS: tuple[str, ...] = (ALL, *GROUPS)
SLOT_LABELS = {ALL: "Every part", "eyes": "Eyes", "nose": "Nose", "mouth": "Mouth",
               "rest": "Rest (skin, hair, background)"}



# --------------------------------------------------------------------------- attribute vectors


@dataclass
class AttributeVector:
    """One slider: per-part steps in the geometry latents and/or appearance codes."""

    name: str
    path: Path
    vectors: dict[str, dict[str, torch.Tensor]]  # part -> {"geometry": (C,h,w), "appearance": (A,)}
    parts: tuple[str, ...]
    spaces: tuple[str, ...]
    limit: float  # the slider runs over [-limit, limit]
    landmark_shift: np.ndarray | None = None  # (68,2) aligned px: its examples' mean landmark shift (None: none kept)

    def apply(self, geometry: dict[str, torch.Tensor], codes: dict[str, torch.Tensor], alpha: float
              ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """geometry + alpha * v_geometry, codes + alpha * v_appearance for this vector's parts."""
        out_g, out_c = dict(geometry), dict(codes)
        for part in self.parts:
            for space, source, out in (("geometry", geometry, out_g), ("appearance", codes, out_c)):
                v = self.vectors[part].get(space)
                if space in self.spaces and v is not None:
                    x = source[part]
                    out[part] = x + alpha * v.to(device=x.device, dtype=x.dtype)
        return out_g, out_c


def read_attribute_vector(path: str | Path, shapes: Mapping[str, Mapping[str, tuple[int, ...]]] | None = None
                          ) -> AttributeVector:
    """A slider from an attribute vector file (read by `pipeline.dfi.vectors.load_vector`, the
    one format); `shapes` (part -> space -> shape, from `Studio.latent_shapes`) checks that it
    fits the loaded models. ValueError naming the file."""
    from pipeline.dfi.vectors import load_vector

    vector = load_vector(path)
    for part, spaces in vector.learned.items():
        for space, t in spaces.items():
            want = None if shapes is None else tuple(shapes[part][space])
            if want is not None and tuple(t.shape) != want:
                raise ValueError(f"{path}: {part}.{space} is {tuple(t.shape)} but the models' is {want} "
                                 "(another profile?)")
    limit = max([abs(a) for a in vector.alphas if np.isfinite(a)] or [3.0]) or 3.0
    return AttributeVector(vector.name, Path(path), vector.learned, vector.parts, vector.spaces, float(limit),
                           vector.landmark_shift)


def find_attribute_vectors(folder: str | Path | None, shapes=None) -> tuple[list[AttributeVector], list[str]]:
    """Every usable `.safetensors` vector file directly in `folder` (sorted), and one line per
    file that was skipped and why."""
    if folder is None or not Path(folder).is_dir():
        return [], []
    found, skipped = [], []
    for path in sorted(Path(folder).glob("*.safetensors")):
        try:
            found.append(read_attribute_vector(path, shapes))
        except ValueError as e:
            skipped.append(str(e))
    return found, skipped


# --------------------------------------------------------------------------- the edit step


@dataclass
class OpenedPhoto:
    name: str  # what the person called it (the file name)
    face: AlignedFace  # the photo, its aligned face, photo -> aligned transform, landmarks
    sketch: np.ndarray  # (R,R) uint8: the photo's own editable sketch
    mask: np.ndarray  # (R,R) float32: where the edit is pasted (inner face)
    codes: dict[str, torch.Tensor]  # the photo's own appearance codes, part -> (1,A)
    # The render of the photo's own sketch under the latest appearance and attribute choice
    # (key, colour-matched face): what stays where nobody drew.
    base: tuple[Any, np.ndarray] | None = None
    small: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # side -> (photo, transform)
    parts: PartCache = field(default_factory=PartCache)  # per-part latents and features of its updates

    def photo_at(self, side: int | None) -> tuple[np.ndarray, np.ndarray]:
        """The photo shrunk to fit `side` (None: as it is) and its photo -> aligned transform."""
        photo, m = self.face.photo, self.face.transform
        k = 1.0 if side is None else min(1.0, side / max(photo.shape[:2]))
        if k == 1.0:
            return photo, m
        if side not in self.small:
            h, w = photo.shape[:2]
            size = (max(1, round(w * k)), max(1, round(h * k)))
            small = cv2.resize(photo, size, interpolation=cv2.INTER_AREA)
            scaled = m.copy()
            scaled[:, 0] *= w / size[0]
            scaled[:, 1] *= h / size[1]
            self.small[side] = (small, scaled)
        return self.small[side]


@dataclass
class Donor:
    name: str
    face: np.ndarray  # (R,R,3) uint8 aligned
    codes: dict[str, torch.Tensor]


@dataclass
class Rendered:
    face: np.ndarray  # (R,R,3) uint8: the edited aligned face, colour-matched as pasted
    photo: np.ndarray | None  # (H,W,3) uint8: pasted into the photo (None with paste=False)
    sketch: np.ndarray  # (R,R) uint8: the sketch that gave the geometry
    region: np.ndarray | None  # (R,R) float32: where the strokes' render was blended in (None: everywhere)
    model_seconds: float  # encoders + render (0 when nothing had to be run)
    seconds: float  # the whole step
    recipe: "Composition | None" = None  # how the edit goes into a photo (None: the whole render was pasted)


@dataclass
class Composition:
    """One studio edit as editing.compose takes it, to apply at any size of the photo."""

    g0: np.ndarray  # (R,R,3) render of the photo's own sketch and appearance
    g1: np.ndarray  # ... of the edited sketch (and attributes), the photo's appearance
    a1: np.ndarray | None  # ... of the same with the donors' appearance (None: no donor)
    sketches: tuple[np.ndarray, np.ndarray] | None  # (own, edited) when strokes alone moved the face
    motion: np.ndarray | None  # (R,R,2) when attributes alone moved it and their vectors carry landmark shifts
    inner: np.ndarray  # (R,R) the inner-face mask: where an attribute may move the face
    mask: np.ndarray  # (R,R) where the appearance may change: the inner face (within the donors' parts)
    region: np.ndarray  # (R,R) the face with its outline (blend.face_region_mask): where strokes may move it
    colour_shift: np.ndarray | None  # (R,R,3) Lab: the donors' photos' colours against the photo's own
    settings: Any

    def apply(self, photo: np.ndarray, transform: np.ndarray) -> np.ndarray:
        from pipeline.editing.compose import compose

        geometry = None if self.g1 is self.g0 else (self.g0, self.g1)
        appearance = None if self.a1 is None else (self.g1, self.a1)
        # where a geometry edit may move the photo: attributes the inner face, strokes the whole face
        within = None if geometry is None else (self.inner if self.sketches is None else self.region)
        return compose(photo, transform, geometry=geometry, sketches=self.sketches, motion=self.motion,
                       appearance=appearance, inner_mask=self.mask, colour_shift=self.colour_shift, within=within,
                       residual_within=self.inner, settings=self.settings)


def friendly(error: BaseException, names: Mapping[str, str] | None = None) -> str:
    """One line for the page: what went wrong and what to do, with temporary upload paths
    replaced by the names the person gave the files."""
    text = str(error)
    for path, name in (names or {}).items():
        text = text.replace(path, name)
    from pipeline.editing.edit import FaceNotFoundError

    hint = None
    if isinstance(error, FaceNotFoundError):
        hint = "choose a photo with a face seen from the front."
    elif isinstance(error, EditInputError) and text.startswith("cannot read"):
        hint = "choose a photo (JPEG, PNG or WebP)."
    return text if hint is None or text.endswith(hint) else f"{text}: {hint}"


class Studio:
    """The loaded models and the settings of one studio; the methods are the edit step.

    `problem` (a one-line message) replaces the editor when the models could not be loaded:
    every method then raises EditInputError with it, so the page shows it and keeps running."""

    def __init__(
        self, editor=None, detector: FaceDetector | None = None, style=None, device: torch.device | str = "cpu",
        photo_to_sketch: torch.nn.Module | None = None, feather: float = 0.06,
        vectors: Sequence[AttributeVector] = (), problem: str | None = None, faces: Sequence[Path] = (),
        out_dir: str | Path | None = None, reach: float = 0.08, compose_settings=None,
    ) -> None:
        from pipeline.editing.compose import ComposeSettings

        if editor is None and problem is None:
            raise ValueError("a Studio needs an editor or a problem to show")
        self.editor, self.detector, self.style = editor, detector, style
        self.device = torch.device(device)
        self.photo_to_sketch, self.feather = photo_to_sketch, feather
        self.vectors = list(vectors)
        self.problem = problem
        self.reach = reach  # how far around a stroke `Rendered.region` marks the edit, x R
        self.compose_settings = compose_settings or ComposeSettings()  # params.yaml edit.compose
        self.faces = list(faces)  # photos a person may pick instead of uploading
        self.out_dir = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="dfe-studio-"))

    # -- helpers
    def _ready(self) -> None:
        if self.problem is not None:
            raise EditInputError(self.problem)

    @property
    def resolution(self) -> int:
        self._ready()
        return self.editor.profile.resolution

    def latent_shapes(self) -> dict[str, dict[str, tuple[int, ...]]]:
        """part -> {"geometry": (C,h,w), "appearance": (A,)} of the loaded models."""
        from pipeline.dfi.vectors import latent_shapes

        return latent_shapes(self.editor)

    def _align(self, path: str | Path, name: str) -> AlignedFace:
        image = read_image(path)
        return align_image(image, self.resolution, self.detector, name)

    # -- the steps
    def face_sketch(self, face: AlignedFace) -> np.ndarray:
        """The aligned face's editable sketch (R,R) uint8, drawn as `dfe sketch` draws it."""
        from pipeline.editing.edit import draw_face_sketch

        return draw_face_sketch(face, self.style, self.device, self.photo_to_sketch)

    def _codes(self, face: np.ndarray) -> dict[str, torch.Tensor]:
        from pipeline.core.tensors import faces_to_tensor

        return self.editor.appearance_codes(faces_to_tensor(face[None], self.editor.device))

    def _aligned(self, path: str | Path, name: str | None) -> tuple[str, AlignedFace]:
        """The upload's display name and its aligned face; EditInputError in the page's words."""
        self._ready()
        name = name or Path(path).name
        try:
            return name, self._align(path, name)
        except EditInputError as e:
            raise type(e)(friendly(e, {str(path): name})) from None

    def open(self, path: str | Path, name: str | None = None) -> OpenedPhoto:
        """Decode a photo, find and align its face, draw its sketch; EditInputError (one line,
        naming `name`) for a file that is not an image or a photo without a face."""
        from pipeline.editing.blend import inner_face_mask

        name, face = self._aligned(path, name)
        sketch = self.face_sketch(face)
        mask = inner_face_mask(face.landmarks, self.resolution, feather=self.feather)
        return OpenedPhoto(name, face, sketch, mask, self._codes(face.face))

    def donor(self, path: str | Path, name: str | None = None) -> Donor:
        """An appearance photo: aligned once, its codes kept."""
        name, face = self._aligned(path, name)
        return Donor(name, face.face, self._codes(face.face))

    def appearance(self, opened: OpenedPhoto, donors: Mapping[str, Donor | None]) -> dict[str, torch.Tensor]:
        """part -> code: the photo's own, replaced by the `all` donor, then by each group's."""
        unknown = set(donors) - set(SLOTS)
        if unknown:
            raise ValueError(f"unknown appearance slots {sorted(unknown)}; choose from {', '.join(SLOTS)}")
        codes = dict(opened.codes)
        if donors.get(ALL) is not None:
            codes.update(donors[ALL].codes)
        for group, parts in GROUPS.items():
            if donors.get(group) is not None:
                codes.update({p: donors[group].codes[p] for p in parts})
        return codes

    def stroke_region(self, changed: np.ndarray) -> np.ndarray:
        """(R,R) float32 in [0,1]: the changed sketch pixels widened by `reach` x R, soft-edged."""
        r = self.resolution
        k = 2 * max(1, round(self.reach * r)) + 1
        grown = cv2.dilate(changed.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
        soft = cv2.GaussianBlur(grown.astype(np.float32), (k, k), 0)
        return np.clip(np.maximum(soft, grown), 0.0, 1.0)  # 1 on the widened strokes, ramping off outside

    def _forward(self, sketch: np.ndarray, codes: dict[str, torch.Tensor],
                 steps: Sequence[tuple[AttributeVector, float]], cache: PartCache | None = None) -> np.ndarray:
        """The render of `sketch` with `codes` after the attribute `steps`; with `cache` (the
        opened photo's), only the parts whose sketch crop, code or step changed are re-run."""
        from pipeline.core.tensors import tensor_to_faces

        cache = cache or PartCache()
        geometry = cache.geometry(self.editor, sketch)
        for vector, alpha in steps:
            geometry, codes = vector.apply(geometry, codes, alpha)
        return tensor_to_faces(cache.render(self.editor, geometry, codes))[0]

    def render(
        self, opened: OpenedPhoto, sketch: np.ndarray | None = None, donors: Mapping[str, Donor | None] | None = None,
        alphas: Mapping[str, float] | None = None, local: bool = True, paste: bool = True,
        paste_side: int | None = None,
    ) -> Rendered:
        """The edit of `opened` with geometry from `sketch` ((R,R) uint8; default its own),
        appearance from `donors` (slot -> Donor) and attribute steps `alphas` (vector name ->
        alpha), put into the photo (shrunk to fit `paste_side`; None: full size) unless
        paste=False.

        local=True (the default) composes the edit into the photo as `dfe edit` does
        (editing.compose): the photo's own pixels move as the strokes move the face, what a
        move cannot explain is added only near the strokes, another photo's appearance comes
        in as a colour change, and where nothing was edited the photo stays itself.
        local=False shows the networks' whole new render, as `dfe edit --render full`."""
        from pipeline.data.align import paste_back
        from pipeline.editing.blend import match_colour

        self._ready()
        t0 = time.perf_counter()
        r = self.resolution
        sketch = opened.sketch if sketch is None else sketch
        if sketch.shape != (r, r) or sketch.dtype != np.uint8:
            raise ValueError(f"the sketch must be ({r},{r}) uint8, got {sketch.shape} {sketch.dtype}")
        donors = {k: v for k, v in (donors or {}).items() if v is not None}
        codes = self.appearance(opened, donors)
        by_name = {v.name: v for v in self.vectors}
        missing = [n for n in (alphas or {}) if n not in by_name]
        if missing:
            raise ValueError(f"unknown attribute vectors {missing}; loaded: {sorted(by_name)}")
        steps = [(by_name[n], float(a)) for n, a in sorted((alphas or {}).items()) if a]
        changed = np.abs(sketch.astype(np.int16) - opened.sketch.astype(np.int16)) > 8
        model_seconds = 0.0

        def forward(sk: np.ndarray, c, st) -> np.ndarray:
            nonlocal model_seconds
            t = time.perf_counter()
            out = self._forward(sk, c, st, opened.parts)
            model_seconds += time.perf_counter() - t
            return out

        if not local:  # the whole render, colour-matched as `dfe edit --render full` pastes it
            foreign_skin = any(s in donors for s in (ALL, "rest"))
            face = match_colour(forward(sketch, codes, steps), opened.face.face, opened.mask, lightness_only=foreign_skin)
            photo = None
            if paste:
                target, m = opened.photo_at(paste_side)
                photo = paste_back(target, face, m, mask=opened.mask, feather=0.0)
            return Rendered(face, photo, sketch, None, model_seconds, time.perf_counter() - t0)

        # The renders the composition compares: the photo's own sketch and appearance (cached:
        # it never changes), the edited geometry and attributes with the photo's appearance,
        # and the same with the donors' appearance.
        if opened.base is None:
            opened.base = ("own", forward(opened.sketch, opened.codes, []))
        g0 = opened.base[1]
        g1 = g0 if not (changed.any() or steps) else forward(sketch, opened.codes, steps)
        a1 = forward(sketch, codes, steps) if donors else None
        shift, appearance_mask = None, opened.mask
        if donors:  # the donors' own colours, part by part, where their parts are (editing.compose.photo_colour_shift)
            from pipeline.editing.compose import photo_colour_shift

            faces = {"bg": donors[ALL].face} if ALL in donors else {}
            faces.update({p: donors[g].face for g, parts in GROUPS.items() if g in donors for p in parts})
            shift, where = photo_colour_shift(opened.face.face, faces, self.editor.boxes)
            appearance_mask = opened.mask * where
        from pipeline.editing.blend import face_region_mask

        motion = None
        if steps and not changed.any() and all(v.landmark_shift is not None for v, _ in steps):
            # attributes alone: the photo's pixels move by the vectors' landmark shifts, as `dfe attribute`
            from pipeline.editing.compose import landmark_motion

            moved = sum(a * v.landmark_shift for v, a in steps)
            motion = landmark_motion(np.asarray(opened.face.landmarks, np.float32), moved, r,
                                     self.compose_settings.landmark_sigma, self.compose_settings.landmark_passes)
        recipe = Composition(g0, g1, a1, (opened.sketch, sketch) if changed.any() and not steps else None, motion,
                             opened.mask, appearance_mask, face_region_mask(opened.face.landmarks, r), shift,
                             self.compose_settings)
        face = recipe.apply(opened.face.face, np.array([[1.0, 0, 0], [0, 1.0, 0]]))
        photo = recipe.apply(*opened.photo_at(paste_side)) if paste else None
        region = self.stroke_region(changed) if changed.any() else None
        return Rendered(face, photo, sketch, region, model_seconds, time.perf_counter() - t0, recipe)

    def save(self, opened: OpenedPhoto, rendered: Rendered) -> list[Path]:
        """The result PNGs for download: the edited photo, the edited sketch (aligned) and the
        sketch in the photo's frame (`dfe edit PHOTO --geometry-sketch` takes it back)."""
        from pipeline.core.io import save_png
        from pipeline.data.align import paste_back
        from pipeline.editing.edit import sketch_to_photo_frame

        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(opened.name).stem) or "photo"
        folder = Path(tempfile.mkdtemp(prefix="result-", dir=self.out_dir))
        photo = rendered.photo
        if photo is None or photo.shape != opened.face.photo.shape:  # the edit again, at the photo's full size
            photo = rendered.recipe.apply(opened.face.photo, opened.face.transform) if rendered.recipe is not None else \
                paste_back(opened.face.photo, rendered.face, opened.face.transform, mask=opened.mask, feather=0.0)
        paths = [folder / f"{stem}_edited.png", folder / f"{stem}_sketch.png", folder / f"{stem}_sketch_in_photo.png"]
        save_png(paths[0], photo)
        save_png(paths[1], rendered.sketch)
        save_png(paths[2], sketch_to_photo_frame(rendered.sketch, opened.face.transform, opened.face.photo.shape[:2]))
        return paths


# --------------------------------------------------------------------------- the sketch canvas


def canvas_size(resolution: int, at_least: int = 256) -> int:
    """The drawing canvas side: the aligned size times the smallest whole factor reaching `at_least`."""
    return resolution * max(1, -(-at_least // resolution))


def sketch_on_canvas(sketch: np.ndarray, side: int) -> np.ndarray:
    """(R,R) uint8 sketch -> (side,side,3) uint8 picture to draw on."""
    big = cv2.resize(sketch, (side, side), interpolation=cv2.INTER_LINEAR if side > sketch.shape[0] else cv2.INTER_AREA)
    return np.repeat(big[..., None], 3, axis=2)


def sketch_from_layers(base: np.ndarray, layers: Sequence[np.ndarray | None]) -> np.ndarray:
    """The edited sketch (R,R) uint8: the drawn layers (canvas-sized RGBA, or RGB as opaque),
    shrunk to the aligned size, laid in order over the photo's own sketch `base` (R,R).

    The layers are shrunk with alpha premultiplied, so a thin pen line becomes a thinner grey
    one and an empty layer leaves `base` exactly as it was."""
    r = base.shape[0]
    out = base.astype(np.float32)
    for layer in layers:
        if layer is None:
            continue
        layer = np.asarray(layer)
        if layer.ndim == 2:
            layer = np.repeat(layer[..., None], 3, axis=2)
        rgb = layer[..., :3].astype(np.float32)
        alpha = layer[..., 3].astype(np.float32) / 255.0 if layer.shape[2] == 4 else np.ones(layer.shape[:2], np.float32)
        if not alpha.any():
            continue
        grey = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
        if layer.shape[:2] != (r, r):
            interp = cv2.INTER_AREA if layer.shape[0] > r else cv2.INTER_LINEAR
            grey_a = cv2.resize(grey * alpha, (r, r), interpolation=interp)
            alpha = cv2.resize(alpha, (r, r), interpolation=interp)
        else:
            grey_a = grey * alpha
        out = out * (1.0 - alpha) + grey_a
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


# The drawing canvas of the page: a gr.HTML with its own script (no npm build). The photo's
# sketch is its background; the person's strokes stay in the page as lists of points, and
# when the pen lifts the page sends only those (JSON, a few hundred bytes), not a PNG export
# of the canvas: exporting and uploading the canvas took about 1 s of the 1.4 s from a stroke
# to its preview in headless Chromium (benchmarks.studio). The server draws the strokes onto
# the sketch with OpenCV (`strokes_layer`).
TOOLS = ("pen", "paper")  # black lines; white pen: paints paper over the photo's own lines
CANVAS_HTML = """
<div class="dfe-draw">
  <div class="dfe-tools">
    <button type="button" data-tool="pen" class="on" title="draw lines">Pen</button>
    <button type="button" data-tool="paper" title="paint paper over the photo's own lines">White pen</button>
    <button type="button" data-tool="eraser" title="remove your strokes where you rub">Eraser</button>
    <label>size <input type="range" min="1" max="16" value="3"></label>
    <button type="button" data-act="undo" title="take back the last stroke">Undo</button>
  </div>
  <canvas width="${side}" height="${side}"></canvas>
</div>
"""
CANVAS_CSS = """
.dfe-draw { display: flex; flex-direction: column; gap: 6px; }
.dfe-tools { display: flex; gap: 6px; align-items: center; flex-wrap: wrap; font-size: 14px; }
.dfe-tools button { padding: 3px 10px; border: 1px solid #999; border-radius: 4px; background: #f4f4f4; cursor: pointer; }
.dfe-tools button.on { background: #333; color: #fff; }
.dfe-draw canvas { width: 100%; max-width: 560px; aspect-ratio: 1; border: 1px solid #bbb; touch-action: none;
                   cursor: crosshair; background: #fff; }
"""
CANVAS_JS = """
const canvas = element.querySelector('canvas');
const ctx = canvas.getContext('2d');
const W = canvas.width;
let background = null, strokes = [], current = null, tool = 'pen';
const size = element.querySelector('input[type=range]');
function paint(s) {
  ctx.strokeStyle = s.tool === 'paper' ? '#fff' : '#000';
  ctx.lineWidth = s.width; ctx.lineCap = 'round'; ctx.lineJoin = 'round';
  ctx.beginPath();
  s.points.forEach(([x, y], i) => i ? ctx.lineTo(x, y) : ctx.moveTo(x, y));
  if (s.points.length === 1) ctx.lineTo(s.points[0][0] + 0.01, s.points[0][1]);
  ctx.stroke();
}
function redraw() {
  ctx.fillStyle = '#fff'; ctx.fillRect(0, 0, W, W);
  if (background) ctx.drawImage(background, 0, 0, W, W);
  strokes.forEach(paint);
  if (current) paint(current);
  canvas.dataset.strokes = String(strokes.length);
}
function at(e) {
  const r = canvas.getBoundingClientRect();
  return [Math.round((e.clientX - r.left) * W / r.width * 10) / 10, Math.round((e.clientY - r.top) * W / r.height * 10) / 10];
}
function send() {
  canvas.dataset.strokes = String(strokes.length);
  props.value = JSON.stringify({side: W, strokes: strokes});
  trigger('input');
}
function rub(p) {  // the eraser takes away the strokes it touches
  const reach = Math.max(4, Number(size.value) * 2);
  const kept = strokes.filter(s => !s.points.some(([x, y]) => Math.hypot(x - p[0], y - p[1]) < reach + s.width / 2));
  const changed = kept.length !== strokes.length;
  strokes = kept;
  if (changed) redraw();
  return changed;
}
let rubbed = false;
canvas.addEventListener('pointerdown', e => {
  canvas.setPointerCapture(e.pointerId);
  if (tool === 'eraser') { rubbed = rub(at(e)) || rubbed; return; }
  current = {tool: tool, width: Number(size.value), points: [at(e)]};
  redraw();
});
canvas.addEventListener('pointermove', e => {
  if (!(e.buttons & 1)) return;
  if (tool === 'eraser') { rubbed = rub(at(e)) || rubbed; return; }
  if (!current) return;
  const p = at(e), last = current.points[current.points.length - 1];
  current.points.push(p);
  paint({tool: current.tool, width: current.width, points: [last, p]});  // only the new segment
});
function lift() {
  if (current) { strokes.push(current); current = null; send(); }
  else if (rubbed) { rubbed = false; send(); }
}
canvas.addEventListener('pointerup', lift);
canvas.addEventListener('pointercancel', lift);
element.querySelectorAll('[data-tool]').forEach(b => b.addEventListener('click', () => {
  tool = b.dataset.tool;
  element.querySelectorAll('[data-tool]').forEach(o => o.classList.toggle('on', o === b));
}));
element.querySelector('[data-act=undo]').addEventListener('click', () => {
  if (strokes.length) { strokes.pop(); redraw(); send(); }
});
function load() {  // a value from the server (a photo opened, cleared): its sketch and strokes
  let v = {};
  try { v = JSON.parse(props.value || '{}'); } catch (err) { return; }
  if (v.background === undefined) return;  // our own strokes coming back
  strokes = v.strokes || []; current = null;
  if (!v.background) { background = null; redraw(); return; }
  const img = new Image();
  img.onload = () => { background = img; redraw(); canvas.dataset.ready = String(Date.now()); };
  img.src = v.background;
}
watch('value', load);
load();
redraw();
"""


def canvas_value(sketch: np.ndarray, side: int) -> str:
    """The canvas's value as the server sends it (a photo opened, a clear): the sketch (R,R) as
    its background (a PNG data URL at `side` px) and no strokes."""
    import base64
    import json

    ok, png = cv2.imencode(".png", sketch_on_canvas(sketch, side)[..., 0])
    if not ok:
        raise RuntimeError("encoding the sketch as PNG failed")
    return json.dumps({"background": "data:image/png;base64," + base64.b64encode(png.tobytes()).decode("ascii"),
                       "strokes": []})


def strokes_layer(value: str | None, side: int) -> np.ndarray | None:
    """The canvas's strokes (its value: JSON {"side", "strokes": [{"tool": "pen" | "paper",
    "width": px, "points": [[x, y], ...]}]} in canvas pixels) drawn as one RGBA layer of
    `side` px for `sketch_from_layers`; None when nothing is drawn. ValueError (one line) for
    a value that is not such strokes."""
    import json

    if not value:
        return None
    try:
        data = json.loads(value)
        strokes = data.get("strokes") or []
        k = side / float(data.get("side") or side)
        layer = np.zeros((side, side, 4), np.uint8)
        for st in strokes:
            if st.get("tool") not in TOOLS:
                raise ValueError(f"unknown tool {st.get('tool')!r}")
            pts = np.round(np.asarray(st["points"], np.float64).reshape(-1, 2) * k * 16).astype(np.int32)
            width = max(1, round(float(st.get("width", 3)) * k))
            colour = (0, 0, 0, 255) if st["tool"] == "pen" else (255, 255, 255, 255)
            if len(pts) == 1:  # a dot
                cv2.circle(layer, tuple(int(v) for v in pts[0]), max(1, width * 8), colour, -1, cv2.LINE_AA, shift=4)
            else:
                cv2.polylines(layer, [pts], False, colour, width, cv2.LINE_AA, shift=4)
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise ValueError(f"the drawing could not be read ({e}); clear it and draw again") from None
    return layer if strokes else None


def shown(image: np.ndarray, side: int) -> np.ndarray:
    """An image scaled to fit `side` (aligned faces are enlarged to the canvas size)."""
    h, w = image.shape[:2]
    k = side / max(h, w)
    if k == 1:
        return image
    size = (max(1, round(w * k)), max(1, round(h * k)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR)


def list_faces(folder: str | Path | None, limit: int = 2000) -> list[Path]:
    """Photos a person may pick: the image files under `folder` (sorted, at most `limit`)."""
    if folder is None or not Path(folder).is_dir():
        return []
    found = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    return found[:limit]


# --------------------------------------------------------------------------- the page


@dataclass
class Session:
    """One person's open photo and choices (kept in the page's gr.State)."""

    opened: OpenedPhoto | None = None
    donors: dict[str, Donor | None] = field(default_factory=dict)


def build_app(studio: Studio, title: str = "dfe studio"):
    """The Gradio page of `studio` (see `dfe studio`). Model work runs one request at a time
    and the live preview keeps only the newest pending request (trigger_mode="always_last")."""
    import gradio as gr

    r = None if studio.problem else studio.resolution
    side = canvas_size(r or 128)
    names = [v.name for v in studio.vectors]
    face_choices = [(str(p.relative_to(p.parents[1])) if len(p.parents) > 1 else p.name, str(p)) for p in studio.faces]
    live = dict(concurrency_limit=1, concurrency_id="model", show_progress="hidden")

    def sketch_of(session: Session, value: Any) -> np.ndarray:
        return sketch_from_layers(session.opened.sketch, [strokes_layer(value, side)])

    def alphas_of(values: Sequence[float]) -> dict[str, float]:
        return {n: float(a or 0.0) for n, a in zip(names, values)}

    def update(session: Session, value: Any, local: bool, *alpha_values: float):
        if session is None or session.opened is None:
            return gr.skip(), gr.skip(), gr.skip(), session
        try:
            out = studio.render(session.opened, sketch_of(session, value), session.donors, alphas_of(alpha_values),
                                local=bool(local), paste_side=512)
        except (EditInputError, ValueError) as e:
            return gr.skip(), gr.skip(), f"**{friendly(e)}**", session
        msg = (f"{session.opened.name}: updated in {1000 * out.seconds:.0f} ms "
               f"(models {1000 * out.model_seconds:.0f} ms)")
        return shown(out.face, max(side, 512)), out.photo, msg, session

    def open_photo(session: Session | None, path: str | None, local: bool, *alpha_values: float):
        session = session or Session()
        if not path:
            return (session, gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip())
        name = Path(path).name
        try:
            opened = studio.open(path, name)
        except (EditInputError, ValueError) as e:  # the page keeps what it showed
            return (session, gr.skip(), gr.skip(), gr.skip(), gr.skip(), f"**{friendly(e, {path: name})}**")
        session = Session(opened, dict(session.donors))
        editor_value = canvas_value(opened.sketch, side)
        preview, result, msg, session = update(session, editor_value, local, *alpha_values)
        return (session, editor_value, shown(opened.face.photo, 512), preview, result, msg)

    def set_donor(slot: str):
        def fn(session: Session | None, path: str | None, value: Any, local: bool, *alpha_values: float):
            session = session or Session()
            if not path:
                session.donors[slot] = None
            else:
                try:
                    session.donors[slot] = studio.donor(path, Path(path).name)
                except (EditInputError, ValueError) as e:
                    session.donors[slot] = None
                    return gr.skip(), gr.skip(), f"**{friendly(e)}**", session
            return update(session, value, local, *alpha_values)

        return fn

    def clear(session: Session | None, local: bool, *alpha_values: float):
        if session is None or session.opened is None:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), session
        value = canvas_value(session.opened.sketch, side)
        return value, *update(session, value, local, *alpha_values)

    def save(session: Session | None, value: Any, local: bool, *alpha_values: float):
        if session is None or session.opened is None:
            return gr.skip(), "**Open a photo first.**"
        try:
            out = studio.render(session.opened, sketch_of(session, value), session.donors, alphas_of(alpha_values),
                                local=bool(local))
            paths = studio.save(session.opened, out)
        except (EditInputError, ValueError) as e:
            return gr.skip(), f"**{friendly(e)}**"
        return [str(p) for p in paths], f"saved {', '.join(p.name for p in paths)}"

    banner = (f"**The models could not be loaded: {studio.problem}**" if studio.problem else
              "Open a photo, then draw on its sketch: black pen draws lines, the white pen paints paper "
              "over the photo's own lines, the eraser removes your strokes. The preview follows.")
    with gr.Blocks(title=title, analytics_enabled=False) as app:
        session = gr.State(None)
        gr.Markdown(f"## {title}")
        gr.Markdown(banner, elem_id="studio-banner")
        with gr.Row():
            with gr.Column(scale=1, min_width=240):
                upload = gr.UploadButton("Open a photo…", file_types=["image"], type="filepath", variant="primary",
                                         elem_id="photo-upload")
                picker = gr.Dropdown(choices=face_choices, value=None, label="…or a face from the data set",
                                     visible=bool(face_choices), elem_id="photo-pick")
                photo = gr.Image(label="The photo", interactive=False, elem_id="photo", format="png", height=260,
                                 buttons=[])
                sliders = [gr.Slider(-v.limit, v.limit, value=0.0, step=0.1, label=v.name,
                                     info=f"attribute vector {v.path.name}", elem_id=f"attribute-{k}")
                           for k, v in enumerate(studio.vectors)]
                if not sliders:
                    gr.Markdown("No attribute sliders: no vectors found (`--vectors DIR` of .safetensors; the dfi "
                                "stage writes outputs/dfi/vectors.safetensors).")
            with gr.Column(scale=2, min_width=320):
                gr.Markdown("**Sketch**: draw here")
                editor = gr.HTML(value="", html_template=CANVAS_HTML, css_template=CANVAS_CSS, js_on_load=CANVAS_JS,
                                 apply_default_css=False, elem_id="sketch", side=side)
                with gr.Row():
                    clear_btn = gr.Button("Clear back to the photo's sketch", elem_id="clear")
                    local = gr.Checkbox(value=True, label="Change the face only near my strokes", elem_id="local",
                                        info="off: the whole face follows the new sketch, as `dfe edit` renders it")
            with gr.Column(scale=2, min_width=320):
                preview = gr.Image(label="Preview (aligned face)", interactive=False, format="png", elem_id="preview",
                                   height=560, buttons=["download"])
                message = gr.Markdown("", elem_id="studio-status")
        gr.Markdown("**Appearance** (each optional; the photo's own by default): one photo for every part, "
                    "and/or one per part")
        with gr.Row():
            slots = {s: gr.Image(label=SLOT_LABELS[s], type="filepath", sources=["upload"], height=170,
                                 elem_id=f"appearance-{s}") for s in SLOTS}
        with gr.Row():
            with gr.Column(scale=2):
                result = gr.Image(label="Result (pasted into the photo)", interactive=False, format="png",
                                  elem_id="result", height=480, buttons=["download", "fullscreen"])
            with gr.Column(scale=1):
                save_btn = gr.Button("Save the result", elem_id="save", variant="primary")
                files = gr.File(label="Downloads: the edited photo (full size) and its sketch", file_count="multiple",
                                interactive=False, elem_id="downloads")

        outs = [preview, result, message, session]
        open_outs = [session, editor, photo, preview, result, message]
        upload.upload(open_photo, [session, upload, local, *sliders], open_outs, **live)
        picker.input(open_photo, [session, picker, local, *sliders], open_outs, **live)
        editor.input(update, [session, editor, local, *sliders], outs, trigger_mode="always_last", **live)
        for trigger in (local, *sliders):
            trigger.change(update, [session, editor, local, *sliders], outs, trigger_mode="always_last", **live)
        for s, comp in slots.items():
            comp.change(set_donor(s), [session, comp, editor, local, *sliders], outs, trigger_mode="always_last",
                        **live)
        clear_btn.click(clear, [session, local, *sliders], [editor, *outs], **live)
        save_btn.click(save, [session, editor, local, *sliders], [files, message], concurrency_limit=1,
                       concurrency_id="model")
    return app

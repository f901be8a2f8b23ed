"""Attribute vector files: one format for `dfe attribute-vector`, the `dfi` stage and `dfe studio`.

A vector is a `.safetensors` file holding:

- `<part>.geometry` (C,h,w) and `<part>.appearance` (A,): fast DFI, the mean difference of
  the learned geometry latents (E_image) and appearance codes of the examples with and
  without the attribute (`interpolation.learned_attribute_vectors`), for every part;
- `classic.w` (D,): the unit-norm VGG-19 feature vector over all examples (mean phi(with) -
  mean phi(without), `interpolation.attribute_vector`), only when the ImageNet VGG-19 weights
  were present when it was learned;
- `examples.{with,without}.faces` (N,R,R,3) uint8 and `examples.{with,without}.landmarks`
  (N,68,2) float32: the aligned example faces, kept so that classic DFI can pick each photo's
  K nearest examples on each side by landmark shape (and compute w from those, on the device)
  whether or not VGG-19 was present at learning time.

Its string metadata records how it was made: `format`/`version`, `name`, `profile`,
`resolution`, `parts` and `spaces` (what an edit moves by default, comma-separated), `normalise`,
`alpha` (the default step) and `alpha_source` (how it was chosen), `alphas` (the sweep it was
judged on; `dfe studio`'s slider range), `with`/`without` (the folders or dataset selections),
`n_with`/`n_without`, `skipped_with`/`skipped_without` (JSON: file -> reason),
`files_with`/`files_without` (JSON lists), `classic` (the VGG vector's layers, or why it is
absent), `shape_points` (landmarks used for neighbour selection), `models` (the weights folder)
and `models_fingerprint` (a digest of those weights: a vector only means something in the
spaces of the models that learned it), `made_by`.

Files with only `<part>.<space>` tensors (before this format) still load, as fast-only vectors
whose profile is checked by shape.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline import PARTS
from pipeline.dfi.interpolation import SPACES

FORMAT = "dfe-attribute-vector"
VERSION = "1"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
SIDES = ("with", "without")
# Points the attribute moves most are left out of the neighbour shape (DFI matches faces by what
# the attribute does NOT change): 20 of 68, as many as the mouth has.
MOVED_POINTS = 20


class VectorFileError(ValueError):
    """A vector file that cannot be used here; the message names the file and the fix."""


class ExampleFolderError(ValueError):
    """An example folder that gives no usable face; the message names the folder and the fix."""


def _learn_hint(path: str | Path) -> str:
    return f"make one with `dfe attribute-vector --with DIR --without DIR -o {path}`"


@dataclass
class ExampleSet:
    faces: np.ndarray  # (N,R,R,3) uint8 aligned faces
    landmarks: np.ndarray  # (N,68,2) float32, aligned px
    files: list[str] = field(default_factory=list)  # where each came from (provenance)
    skipped: dict[str, str] = field(default_factory=dict)  # file -> why it was not used
    source: str = ""  # the folder, or the dataset selection

    def __len__(self) -> int:
        return len(self.faces)


@dataclass
class AttributeVector:
    """An attribute (e.g. smile) in the learned spaces, and optionally in VGG-19 space."""

    learned: dict[str, dict[str, torch.Tensor]]  # part -> {"geometry": (C,h,w), "appearance": (A,)}
    profile: str | None  # None: a file from before this format (checked by shape only)
    resolution: int | None
    parts: tuple[str, ...] = PARTS  # parts an edit moves by default
    spaces: tuple[str, ...] = SPACES
    alpha: float = 1.0  # the default step
    alpha_source: str = "default"
    alphas: tuple[float, ...] = ()  # the sweep it was judged on / the slider range
    name: str = ""
    normalise: bool = False
    examples: dict[str, ExampleSet] = field(default_factory=dict)  # "with" / "without"
    classic: torch.Tensor | None = None  # (D,) unit VGG-19 vector over all examples
    classic_status: str = "absent"
    shape_points: tuple[int, ...] = tuple(range(68))
    models: str = ""
    models_fingerprint: str = ""
    made_by: str = ""
    path: Path | None = None  # where it was read from

    @property
    def has_examples(self) -> bool:
        return all(s in self.examples and len(self.examples[s]) > 0 for s in SIDES)

    @property
    def landmark_shift(self) -> np.ndarray | None:
        """(68,2) float32 aligned px at `resolution`: the attribute in landmark space, the mean
        landmarks of the examples with it minus those without (None without examples). It
        moves a photo's own pixels (`editing.compose.landmark_motion`) where the learned
        vectors' renders move a face only part of the way."""
        if not self.has_examples:
            return None
        w, wo = self.examples["with"].landmarks, self.examples["without"].landmarks
        return np.asarray(w.mean(0) - wo.mean(0), np.float32)

    def metadata(self) -> dict[str, str]:
        meta = {
            "format": FORMAT, "version": VERSION, "name": self.name, "profile": self.profile or "",
            "resolution": str(self.resolution or ""), "parts": ",".join(self.parts), "spaces": ",".join(self.spaces),
            "normalise": str(self.normalise).lower(), "alpha": f"{self.alpha:g}", "alpha_source": self.alpha_source,
            "alphas": json.dumps([float(a) for a in self.alphas]), "classic": self.classic_status,
            "shape_points": ",".join(str(i) for i in self.shape_points), "models": self.models,
            "models_fingerprint": self.models_fingerprint, "made_by": self.made_by,
        }
        for side in SIDES:
            ex = self.examples.get(side)
            meta[side] = ex.source if ex else ""
            meta[f"n_{side}"] = str(len(ex) if ex else 0)
            meta[f"files_{side}"] = json.dumps(ex.files if ex else [])
            meta[f"skipped_{side}"] = json.dumps(ex.skipped if ex else {})
        return meta

    def describe(self) -> str:
        """One line: what the file is and how it was made."""
        n = {s: len(self.examples[s]) if s in self.examples else 0 for s in SIDES}
        src = {s: self.examples[s].source if s in self.examples else "?" for s in SIDES}
        return (f"{self.name or '?'}: profile {self.profile or '?'}, parts {','.join(self.parts)}, spaces "
                f"{','.join(self.spaces)}, alpha {self.alpha:g} ({self.alpha_source}); {n['with']} faces with "
                f"({src['with']}), {n['without']} without ({src['without']}); classic: {self.classic_status}")


# --------------------------------------------------------------------------- file I/O


def save_vector(vector: AttributeVector, path: str | Path) -> Path:
    """Write `vector` atomically (format in the module docstring)."""
    from safetensors.torch import save_file

    from pipeline.core.io import atomic_path

    tensors: dict[str, torch.Tensor] = {}
    for part, spaces in vector.learned.items():
        for space, v in spaces.items():
            tensors[f"{part}.{space}"] = v.detach().float().cpu().contiguous()
    if vector.classic is not None:
        tensors["classic.w"] = vector.classic.detach().float().cpu().contiguous()
    for side, ex in vector.examples.items():
        tensors[f"examples.{side}.faces"] = torch.from_numpy(np.ascontiguousarray(ex.faces, dtype=np.uint8))
        tensors[f"examples.{side}.landmarks"] = torch.from_numpy(np.ascontiguousarray(ex.landmarks, dtype=np.float32))
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=vector.metadata())
    return path


def _names(text: str | None, allowed: Sequence[str], what: str, path: Path) -> tuple[str, ...] | None:
    if not text:
        return None
    items = tuple(s.strip() for s in text.split(",") if s.strip())
    bad = [s for s in items if s not in allowed]
    if bad:
        raise VectorFileError(f"{path}: metadata {what} names {bad}; choose from {', '.join(allowed)}: "
                              f"{_learn_hint(path)}")
    return items


def load_vector(path: str | Path) -> AttributeVector:
    """Read a vector file; VectorFileError (one line naming the file and the fix) otherwise."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise VectorFileError(f"{path} not found: {_learn_hint(path)}")
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise VectorFileError(f"{path} is not an attribute vector (not a safetensors file: {reason}): "
                              f"{_learn_hint(path)}") from None
    if meta.get("format", FORMAT) != FORMAT:
        raise VectorFileError(f"{path} is a {meta['format']!r} file, not an attribute vector: {_learn_hint(path)}")
    if meta.get("version", VERSION) != VERSION:
        raise VectorFileError(f"{path} has format version {meta['version']}, this dfe reads {VERSION}: relearn it "
                              f"with `dfe attribute-vector`")
    learned: dict[str, dict[str, torch.Tensor]] = {}
    examples: dict[str, dict[str, torch.Tensor]] = {}
    classic = None
    for key, t in tensors.items():
        head, _, rest = key.partition(".")
        if head in PARTS and rest in SPACES:
            learned.setdefault(head, {})[rest] = t.float()
        elif key == "classic.w":
            classic = t.float()
        elif head == "examples" and rest.partition(".")[0] in SIDES and rest.partition(".")[2] in ("faces", "landmarks"):
            side, _, what = rest.partition(".")
            examples.setdefault(side, {})[what] = t
        else:
            raise VectorFileError(f"{path}: unexpected tensor {key!r} (not an attribute vector): {_learn_hint(path)}")
    if not learned:
        raise VectorFileError(f"{path} holds no learned vectors (<part>.geometry / <part>.appearance): "
                              f"{_learn_hint(path)}")
    parts = _names(meta.get("parts"), tuple(learned), "parts", path) or tuple(p for p in PARTS if p in learned)
    spaces = _names(meta.get("spaces"), SPACES, "spaces", path) or SPACES
    try:
        alpha = float(meta.get("alpha") or 1.0)
        alphas = tuple(float(a) for a in json.loads(meta["alphas"])) if meta.get("alphas") else ()
        resolution = int(meta["resolution"]) if meta.get("resolution") else None
        shape_points = (tuple(int(i) for i in meta["shape_points"].split(",")) if meta.get("shape_points")
                        else tuple(range(68)))
    except (ValueError, TypeError, json.JSONDecodeError) as e:
        raise VectorFileError(f"{path}: bad metadata ({e}): {_learn_hint(path)}") from None
    sets: dict[str, ExampleSet] = {}
    for side, d in examples.items():
        if set(d) != {"faces", "landmarks"}:
            raise VectorFileError(f"{path}: examples.{side} lacks faces or landmarks: {_learn_hint(path)}")
        faces, lms = d["faces"].numpy(), d["landmarks"].numpy()
        if faces.ndim != 4 or lms.shape != (len(faces), 68, 2):
            raise VectorFileError(f"{path}: examples.{side} shapes {faces.shape}, {lms.shape}: {_learn_hint(path)}")
        files = json.loads(meta.get(f"files_{side}") or "[]")
        skipped = json.loads(meta.get(f"skipped_{side}") or "{}")
        sets[side] = ExampleSet(faces, lms.astype(np.float32), files, skipped, meta.get(side, ""))
    name = meta.get("name") or (path.parent.name if path.stem == "vectors" else path.stem)
    return AttributeVector(
        learned=learned, profile=meta.get("profile") or None, resolution=resolution, parts=parts, spaces=spaces,
        alpha=alpha, alpha_source=meta.get("alpha_source", "default"), alphas=alphas, name=name,
        normalise=meta.get("normalise", "false") == "true", examples=sets, classic=classic,
        classic_status=meta.get("classic", "absent"), shape_points=shape_points, models=meta.get("models", ""),
        models_fingerprint=meta.get("models_fingerprint", ""), made_by=meta.get("made_by", ""), path=path,
    )


def models_fingerprint(models_dir: str | Path) -> str:
    """A short digest of the weights fast DFI's spaces come from (image encoders, part
    generators, fusion): size and first/last MiB of each file, so paper-profile files hash in
    milliseconds. '' when a file is missing."""
    h = hashlib.sha256()
    files = [Path(models_dir) / stage / f"{p}.safetensors" for stage in ("image_encoder", "local") for p in PARTS]
    files.append(Path(models_dir) / "fusion" / "fusion.safetensors")
    for f in files:
        if not f.is_file():
            return ""
        size = f.stat().st_size
        h.update(f"{f.parent.name}/{f.name}:{size}".encode())
        with f.open("rb") as fh:
            h.update(fh.read(1 << 20))
            if size > 2 << 20:
                fh.seek(-(1 << 20), 2)
                h.update(fh.read())
    return h.hexdigest()[:16]


def check_fits(vector: AttributeVector, editor, models_dir: str | Path | None = None) -> str | None:
    """VectorFileError where `vector` cannot apply to `editor`'s models (another profile or
    latent shapes); returns a warning line where it comes from other weights of the same
    profile (it still applies, but its directions were learned in those weights' spaces)."""
    where = vector.path or "the vector"
    profile = editor.profile
    if vector.profile is not None and vector.profile != profile.name:
        raise VectorFileError(
            f"{where} was learned with profile {vector.profile!r} models, these are {profile.name!r}: relearn it "
            f"with `dfe attribute-vector --profile {profile.name} --models DIR ...`, or use --profile "
            f"{vector.profile} with that profile's models")
    if vector.resolution is not None and vector.resolution != profile.resolution:
        raise VectorFileError(f"{where} is for {vector.resolution} px faces, the models make {profile.resolution} px: "
                              f"relearn it with `dfe attribute-vector --profile {profile.name}`")
    shapes = latent_shapes(editor)
    for part, spaces in vector.learned.items():
        for space, v in spaces.items():
            if tuple(v.shape) != shapes[part][space]:
                raise VectorFileError(
                    f"{where}: {part}.{space} is {tuple(v.shape)} but the models' is {shapes[part][space]} "
                    f"(another profile?): relearn it with `dfe attribute-vector --profile {profile.name}`")
    missing = [p for p in vector.parts if p not in vector.learned]
    if missing:
        raise VectorFileError(f"{where}: parts {missing} have no vectors: {_learn_hint(where)}")
    if models_dir is not None and vector.models_fingerprint:
        mine = models_fingerprint(models_dir)
        if mine and mine != vector.models_fingerprint:
            return (f"warning: {where} was learned with other weights ({vector.models or '?'}) than {models_dir}: "
                    "its directions belong to those weights' latent spaces; relearn it with these models")
    return None


def latent_shapes(editor) -> dict[str, dict[str, tuple[int, ...]]]:
    """part -> space -> the shape of one face's geometry latent / appearance code."""
    r = editor.profile.resolution
    face = torch.zeros(1, 3, r, r, device=editor.device)
    geo, codes = editor.geometry_from_photo(face), editor.appearance_codes(face)
    return {p: {"geometry": tuple(geo[p].shape[1:]), "appearance": tuple(codes[p].shape[1:])} for p in PARTS}


# --------------------------------------------------------------------------- learning


def list_photos(folder: str | Path, side: str) -> list[Path]:
    """Photos directly in or below `folder`, sorted; ExampleFolderError when none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ExampleFolderError(f"{folder} is not a folder: --{side} wants a folder of photos "
                                 f"{'with' if side == 'with' else 'without'} the attribute")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    if not files:
        raise ExampleFolderError(
            f"{folder} holds no photos ({', '.join(IMAGE_SUFFIXES)}): put photos of faces "
            f"{'with' if side == 'with' else 'without'} the attribute in it (--{side})")
    return files


def align_folder(folder: str | Path, side: str, resolution: int, detector) -> ExampleSet:
    """Decode, detect and align every photo of a folder as the pipeline does; unreadable photos
    and photos without a face are skipped and listed. ExampleFolderError when none is left."""
    from pipeline.core.progress import track
    from pipeline.editing.edit import EditInputError, align_image, read_image

    folder = Path(folder)
    files = list_photos(folder, side)
    faces, lms, used, skipped = [], [], [], {}
    for path in track(files, f"align --{side} ({folder.name})"):
        rel = str(path.relative_to(folder))
        try:
            a = align_image(read_image(path), resolution, detector, str(path))
        except EditInputError as e:
            skipped[rel] = str(e)
            continue
        faces.append(a.face)
        lms.append(a.landmarks)
        used.append(rel)
    if not faces:
        first = next(iter(skipped.values()))
        raise ExampleFolderError(f"{folder}: none of its {len(files)} photos gives a face (e.g. {first}): "
                                 f"--{side} wants photos of faces")
    return ExampleSet(np.stack(faces), np.stack(lms).astype(np.float32), used, skipped, str(folder))


def stable_points(with_lm: np.ndarray, without_lm: np.ndarray, moved: int = MOVED_POINTS) -> tuple[int, ...]:
    """The landmarks the attribute moves least (68 - `moved` of them): the mean shape of each
    side (centred, unit RMS radius) compared point by point."""
    from pipeline.dfi.interpolation import normalise_landmarks

    mean_w = normalise_landmarks(with_lm).reshape(len(with_lm), 68, 2).mean(0)
    mean_wo = normalise_landmarks(without_lm).reshape(len(without_lm), 68, 2).mean(0)
    shift = np.linalg.norm(mean_w - mean_wo, axis=1)
    keep = np.sort(np.argsort(shift, kind="stable")[: 68 - moved])
    return tuple(int(i) for i in keep)


def learn_vector(
    editor,
    examples: Mapping[str, ExampleSet],
    *,
    parts: Sequence[str] = PARTS,
    spaces: Sequence[str] = SPACES,
    normalise: bool = False,
    alpha: float = 1.0,
    alpha_source: str = "default",
    alphas: Sequence[float] = (),
    name: str = "",
    vgg=None,
    vgg_status: str = "",
    shape_points: Sequence[int] | None = None,
    models_dir: str | Path | None = None,
    made_by: str = "",
    batch_size: int = 16,
) -> AttributeVector:
    """The attribute vector of two aligned example sets, in `editor`'s learned spaces (every
    part), plus the classic VGG-19 vector when `vgg` is given (else `vgg_status` says why not)."""
    from pipeline.dfi.interpolation import attribute_vector, learned_attribute_vectors, mean_dfi_features
    from pipeline.core.tensors import faces_to_tensor
    from pipeline.models.editor import encode

    for side in SIDES:
        if side not in examples or len(examples[side]) == 0:
            raise ExampleFolderError(f"no example faces {side} the attribute")
    device = editor.device
    geo_w, app_w = encode(editor, examples["with"].faces, batch_size, device, "encode with")
    geo_wo, app_wo = encode(editor, examples["without"].faces, batch_size, device, "encode without")
    # The parts' codes only: the photo editor's colour range adds each photo's colour statistics
    # to its codes (editing.colour_norm.STATS_KEY), which belong to the photo, not to the attribute.
    app_w, app_wo = ({p: a[p] for p in geo_w} for a in (app_w, app_wo))
    learned = learned_attribute_vectors(geo_w, geo_wo, app_w, app_wo, normalise=normalise)
    classic, status = None, vgg_status or "absent"
    if vgg is not None:
        from pipeline.models.vgg import DFI_LAYERS

        vdev = next(vgg.parameters()).device
        phi_t = mean_dfi_features(vgg, faces_to_tensor(examples["with"].faces, vdev), batch_size=batch_size)
        phi_s = mean_dfi_features(vgg, faces_to_tensor(examples["without"].faces, vdev), batch_size=batch_size)
        classic = attribute_vector(phi_t, phi_s).cpu()
        status = f"vgg19 {','.join(DFI_LAYERS)} unit-norm, all examples"
    if shape_points is None:
        shape_points = stable_points(examples["with"].landmarks, examples["without"].landmarks)
    return AttributeVector(
        learned={p: {s: v.float().cpu() for s, v in d.items()} for p, d in learned.items()},
        profile=editor.profile.name, resolution=editor.profile.resolution, parts=tuple(parts), spaces=tuple(spaces),
        alpha=float(alpha), alpha_source=alpha_source, alphas=tuple(float(a) for a in alphas), name=name,
        normalise=normalise, examples=dict(examples), classic=classic, classic_status=status,
        shape_points=tuple(int(i) for i in shape_points), models=str(models_dir or ""),
        models_fingerprint=models_fingerprint(models_dir) if models_dir is not None else "", made_by=made_by,
    )


def dump_info(vector: AttributeVector) -> dict[str, Any]:
    """The metadata as JSON-ready values (for printing)."""
    meta = vector.metadata()
    for k in ("files_with", "files_without", "skipped_with", "skipped_without", "alphas"):
        meta[k] = json.loads(meta[k])
    return meta

"""The dfi stage: attribute edits (default: London neutral -> smiling) by fast and classic DFI.

Attribute vectors come from the TRAINING split only; fast DFI's alpha is chosen on the VAL
split's faces (`choose_alpha`); the reported figures are the TEST split's faces without the
attribute, so test identities never contribute to the vectors or to any choice. The vector is
written in the one attribute-vector format (`pipeline.dfi.vectors`), the training faces as its
example sets and the chosen alpha as its default step, so `dfe attribute --vector
outputs/dfi/vectors.safetensors` applies it to any photo.

- Fast DFI (`pipeline.dfi.interpolation.learned_attribute_vectors` / `apply_learned_dfi`): mean difference
  of the learned per-part geometry latents (E_image) and appearance codes between training
  faces with and without the attribute; a test face's latents move by alpha times it and go
  through the generators and fusion once. The edited geometry also decodes to a sketch.
- Classic DFI (VGG-19 features + L-BFGS reconstruction, `pipeline.dfi.interpolation.dfi_edit`) with K
  gender-matched neighbours per face, only when the ImageNet VGG-19 weights are on disk;
  otherwise the metrics record why it is absent.

Evaluation uses what no DFI paper had: the test person's real photo WITH the attribute (London
pairs). For each method and alpha: mouth landmark NME of the edit (dlib on the 128 px output)
against the real smiling photo's aligned landmarks, and dlib identity distance / cosine
similarity to the unedited photo. 'Before' baselines: the neutral photo itself (stored and
dlib-at-output-size landmarks) and the real smiling photo's identity figures. Fast DFI is
scored at 128 px twice: `fast`, the model's edited face itself, and `fast_change`, the photo
plus what the edit changed (`change_blend`, how `dfe attribute` puts an edit back by default).
And as the user gets it (`photo_size`, where alpha is chosen): each edit composed into the
person's photo cut out at `measure_size` px, its motion the attribute's landmark shift
(`dfi.motion`), beside the unedited photo, the whole render pasted, the renders' own motion
and the ceiling of moving dlib's points themselves; `metrics.DFI_GATES` judge it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import torch

from pipeline import PARTS
from pipeline.dfi.interpolation import SPACES, apply_learned_dfi, learned_attribute_vectors
from pipeline.dfi.vectors import AttributeVector, ExampleSet, models_fingerprint, save_vector
from pipeline.data.landmarks import detect_landmarks
from pipeline.models.editor import encode
from pipeline.core.config import synchronize
from pipeline.core.tensors import faces_to_tensor, tensor_to_faces
from pipeline.core.io import load_npy, save_csv, save_json, save_npy, save_png
from pipeline.core.progress import track

PLOT_FILES = ("fast.png", "photo_size.png", "photo_size_shifted.png", "classic.png")
MOUTH = "mouth"
# Landmarks that smiling leaves (nearly) in place: everything but the mouth, for neighbour
# selection by face shape (the mouth would match smiles with smiles).
NON_MOUTH_POINTS = tuple(i for i in range(68) if i not in range(48, 68))


@dataclass(frozen=True)
class DFIConfig:
    profile: str = "small"
    attribute: str = "label"  # manifest column in data/aligned/manifest.csv
    source_value: str = "neutral"  # faces WITHOUT the attribute (edited, and the S side)
    target_value: str = "smiling"  # faces WITH it (the T side; a test person's real target photo)
    # Fast DFI, tuned on the small-profile London models (mouth NME down, identity kept):
    # alpha 1 = the full raw mean shift of the training faces; 2 was best.
    alphas: tuple[float, ...] = (0.0, 1.0, 2.0, 3.0)
    parts: tuple[str, ...] = ("mouth", "nose", "bg")  # parts whose latents move
    spaces: tuple[str, ...] = ("geometry", "appearance")  # geometry and/or appearance
    normalise: bool = False  # True: vectors scaled to the mean latent norm (learned_attribute_vectors)
    max_faces: int = 0  # first N test (and val) faces without the attribute, 0 = all
    # alpha is chosen on the val split: the lowest val mouth NME among alphas whose edits dlib
    # still calls the same person (descriptor distance < 0.6) in at least this share of val faces.
    min_same_person: float = 0.8
    # What the choice and the `fast_change` figures judge: "change" = the photo plus what the
    # edit changed (edit - reconstruction) inside the inner-face mask, as `dfe attribute` puts
    # an edit back by default; "face" = the model's edited face itself (the `fast` figures).
    blend: str = "change"
    # Where the change blend's motion comes from (attribute.MOTIONS): "landmarks" moves the photo's
    # pixels by the examples' mean landmark shift times alpha, "renders" by the flow between the
    # two 128 px renders (which carries about half of it).
    motion: str = "landmarks"
    # Edits are also composed into each val/test photo cut out at this size (px) in its alignment,
    # as `dfe attribute` composes them at the photo's own size, and measured there (dlib finds a
    # 128 px smile's 1.5 px mouth move barely above its own jitter); alpha is chosen at this
    # size. 0: only at the aligned size.
    measure_size: int = 512
    # ... and the test smile again on each test photo under these shifts of ordinary photos
    # (pipeline.data.shifts; found and aligned anew by dlib, as a user's photo is): `photo_size_shifted`.
    shifts: tuple[str, ...] = ("warm", "cool", "green", "magenta", "dark", "bright", "side_light", "background",
                               "blur_jpeg", "noise", "framing", "mixed")
    shift_seed: int = 0  # face k under shift s draws its strengths from (shift_seed, s, k)
    grid_faces: int = 6  # rows of the PNG grids
    batch_size: int = 16
    landmark_upsample: int = 1  # dlib detector upsampling on 128 px outputs
    gender_key: str = "gender"  # classic neighbours: same value only ('' = no matching)
    numeric: tuple[str, ...] = ("age",)  # classic neighbours: distance attributes
    categorical: tuple[str, ...] = ("ethnicity",)
    classic_faces: int = 4  # test faces edited by classic DFI (L-BFGS through VGG-19 is slow)
    classic_k: int = 10  # neighbours per side (paper: 100)
    classic_alphas: tuple[float, ...] = (0.4,)  # on unit-norm VGG features (DESIGN: ~0.4)
    classic_iters: int = 50  # L-BFGS iterations (paper: 500; 150 for its timing)
    classic_tv_weight: float = 5e-10  # on the official 0-255 scale (see dfi_reconstruct)
    classic_landmark_weight: float = 1.0  # non-mouth landmark shape vs one numeric attribute
    device: str = "auto"  # auto | cpu | cuda: where run_dfi runs unless its `device` says otherwise

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> DFIConfig:
        """From the params.yaml `dfi:` section (+ `profile`); lists become tuples, unknown keys raise."""
        names = {f.name for f in fields(cls)}
        unknown = set(params) - names
        if unknown:
            raise ValueError(f"dfi params: unknown keys {sorted(unknown)}; known: {sorted(names)}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}
        cfg = cls(**values)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if not self.alphas:
            raise ValueError("dfi.alphas is empty")
        bad_parts = set(self.parts) - set(PARTS)
        if bad_parts or not self.parts:
            raise ValueError(f"dfi.parts {list(self.parts)}: choose from {PARTS}")
        bad_spaces = set(self.spaces) - set(SPACES)
        if bad_spaces or not self.spaces:
            raise ValueError(f"dfi.spaces {list(self.spaces)}: choose from {SPACES}")
        if self.source_value == self.target_value:
            raise ValueError("dfi.source_value and dfi.target_value are the same")
        if not 0.0 <= self.min_same_person <= 1.0:
            raise ValueError(f"dfi.min_same_person {self.min_same_person}: want a share in [0, 1]")
        from pipeline.dfi.attribute import BLENDS, MOTIONS

        if self.blend not in BLENDS:
            raise ValueError(f"dfi.blend {self.blend!r}: choose {' or '.join(BLENDS)}")
        if self.motion not in MOTIONS:
            raise ValueError(f"dfi.motion {self.motion!r}: choose {' or '.join(MOTIONS)}")
        from pipeline.data.shifts import SHIFTS

        if set(self.shifts) - set(SHIFTS):
            raise ValueError(f"dfi.shifts: unknown {sorted(set(self.shifts) - set(SHIFTS))}; choose from {', '.join(SHIFTS)}")
        if self.measure_size < 0:
            raise ValueError(f"dfi.measure_size {self.measure_size}: want a size in px, or 0 for the aligned size only")


@dataclass
class DFIData:
    manifest: pd.DataFrame  # aligned manifest (+ `split`), index = row in images.npy
    images: np.ndarray  # (N,R,R,3) uint8 aligned faces
    landmarks: np.ndarray  # (N,68,2) aligned px
    train_with: np.ndarray  # rows: training faces with the attribute
    train_without: np.ndarray  # rows: training faces without it
    test: np.ndarray  # rows: test faces without it (the ones edited)
    pair: np.ndarray  # per test face: row of the same identity's test photo WITH it, -1 if none
    val: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # rows: val faces without it (alpha is chosen on them)
    val_pair: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # per val face, as `pair`
    transforms: np.ndarray | None = None  # (N,2,3) photo px -> aligned px (data/aligned/transforms.npy), if present

    @property
    def landmark_shift(self) -> np.ndarray:
        """(68,2) aligned px: the attribute in landmark space, the training faces' mean landmarks
        with it minus without (what `AttributeVector.landmark_shift` gives for the stage's vector)."""
        return np.asarray(self.landmarks[self.train_with].mean(0) - self.landmarks[self.train_without].mean(0), np.float32)


def load_dfi_data(data_dir: str | Path, cfg: DFIConfig, resolution: int) -> DFIData:
    """data_dir/aligned/{images.npy, landmarks.npy, manifest.csv} and data_dir/split/split.csv."""
    data_dir = Path(data_dir)
    man_path, split_path = data_dir / "aligned" / "manifest.csv", data_dir / "split" / "split.csv"
    for p, stage in ((man_path, "align"), (split_path, "split")):
        if not p.exists():
            raise FileNotFoundError(f"{p} missing: run `dvc repro {stage}` (or `dfe {stage}`)")
    manifest = pd.read_csv(man_path, dtype={"identity": str, "id": str})
    split = pd.read_csv(split_path, dtype={"identity": str, "id": str})
    if cfg.attribute not in manifest.columns:
        raise ValueError(f"{man_path} has no column {cfg.attribute!r} (dfi.attribute)")
    manifest = manifest.merge(split[["id", "split"]], on="id", how="left", validate="one_to_one")
    manifest.index = manifest["row"].to_numpy(dtype=np.int64) if "row" in manifest else np.arange(len(manifest))
    images = load_npy(data_dir / "aligned" / "images.npy")
    landmarks = load_npy(data_dir / "aligned" / "landmarks.npy")
    if images.shape[1:] != (resolution, resolution, 3) or landmarks.shape[1:] != (68, 2):
        raise ValueError(f"aligned arrays {images.shape}, {landmarks.shape}: want (N,{resolution},{resolution},3), (N,68,2)")
    if len(images) != len(landmarks) or manifest.index.max() >= len(images):
        raise ValueError(f"{man_path} rows do not match images.npy ({len(images)} faces)")

    value = manifest[cfg.attribute].astype(str)
    is_src, is_tgt = value == str(cfg.source_value), value == str(cfg.target_value)
    train, val, test = (manifest["split"] == s for s in ("train", "val", "test"))
    rows = {k: manifest.index[m].to_numpy() for k, m in
            (("with", train & is_tgt), ("without", train & is_src), ("test", test & is_src))}
    for k, r in rows.items():
        if len(r) == 0:
            raise ValueError(f"no {k} faces for {cfg.attribute}={cfg.source_value}->{cfg.target_value} in {data_dir}")

    def edited(split: pd.Series) -> tuple[np.ndarray, np.ndarray]:
        """The split's faces without the attribute and, per face, the row of the same identity's
        (first) photo WITH it in that split (-1 if none): its real target photo."""
        r = manifest.index[split & is_src].to_numpy()
        r = r[: cfg.max_faces] if cfg.max_faces > 0 else r
        first_target: dict[str, int] = {}
        if "identity" in manifest:
            targets = manifest[split & is_tgt]
            first_target = dict(zip(targets["identity"][::-1], targets.index[::-1]))
        pair = np.array([first_target.get(manifest.at[i, "identity"], -1) if first_target else -1 for i in r],
                        dtype=np.int64)
        return r, pair

    test_rows, pair = edited(test)
    val_rows, val_pair = edited(val)
    tr_path = data_dir / "aligned" / "transforms.npy"
    transforms = load_npy(tr_path) if tr_path.exists() else None
    if transforms is not None and transforms.shape != (len(images), 2, 3):
        raise ValueError(f"{tr_path} {transforms.shape}: want ({len(images)}, 2, 3), one per aligned face")
    return DFIData(manifest, np.asarray(images), np.asarray(landmarks, dtype=np.float64),
                   rows["with"], rows["without"], test_rows, pair, val_rows, val_pair, transforms)


# --------------------------------------------------------------------------- tensors


def _sketch_uint8(x: torch.Tensor) -> np.ndarray:
    """(B,C,R,R) sketches in [-1,1] (one channel replicated) -> (B,R,R) uint8."""
    from pipeline.core.viz import to_uint8

    assert x.ndim == 4, x.shape
    return to_uint8(x.mean(dim=1, keepdim=True))


# --------------------------------------------------------------------------- fast DFI


@dataclass
class FastResult:
    recon: np.ndarray  # (N,R,R,3) uint8: unedited reconstructions
    edits: np.ndarray  # (N,A,R,R,3) uint8, one per alpha
    sketches: np.ndarray  # (N,A,R,R) uint8 sketches decoded from the edited geometry
    vectors: dict[str, dict[str, torch.Tensor]]
    seconds_per_image: float  # encode + every alpha's render + sketch, per test face


def fast_vectors(editor, data: DFIData, cfg: DFIConfig, device: torch.device) -> dict[str, dict[str, torch.Tensor]]:
    """Learned-space attribute vectors (every part) from the training split."""
    geo_w, app_w = encode(editor, data.images[data.train_with], cfg.batch_size, device, "encode train (with)")
    geo_wo, app_wo = encode(editor, data.images[data.train_without], cfg.batch_size, device, "encode train (without)")
    return learned_attribute_vectors(geo_w, geo_wo, app_w, app_wo, normalise=cfg.normalise)


def fast_edits(editor, faces: np.ndarray, vectors: Mapping[str, Mapping[str, torch.Tensor]], cfg: DFIConfig,
               device: torch.device, sketches: bool = True, what: str = "fast DFI"
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, float]:
    """Reconstructions (N,R,R,3), edits (N,A,R,R,3) for every cfg alpha and (with `sketches`)
    the edited geometry's sketches (N,A,R,R) of aligned faces; seconds per face."""
    recon, edits, sketch_rows = [], [], []
    synchronize(device)
    start_time = time.perf_counter()
    for start in track(range(0, len(faces), cfg.batch_size), what):
        face = faces_to_tensor(faces[start : start + cfg.batch_size], device)
        z, codes = editor.geometry_from_photo(face), editor.appearance_codes(face)
        recon.append(tensor_to_faces(editor.render(z, codes)))
        per_alpha, per_alpha_sketch = [], []
        for alpha in cfg.alphas:
            z_e, c_e = apply_learned_dfi(z, codes, vectors, alpha, parts=cfg.parts, spaces=cfg.spaces)
            per_alpha.append(tensor_to_faces(editor.render(z_e, c_e)))
            if sketches:
                per_alpha_sketch.append(_sketch_uint8(editor.sketch_from_geometry(z_e)))
        edits.append(np.stack(per_alpha, axis=1))
        if sketches:
            sketch_rows.append(np.stack(per_alpha_sketch, axis=1))
    synchronize(device)
    elapsed = time.perf_counter() - start_time
    return (np.concatenate(recon), np.concatenate(edits), np.concatenate(sketch_rows) if sketches else None,
            elapsed / max(len(faces), 1))


def fast_dfi(editor, data: DFIData, cfg: DFIConfig, device: torch.device) -> FastResult:
    """Learned-space attribute vectors from the training split; edits of every test face."""
    vectors = fast_vectors(editor, data, cfg, device)
    recon, edits, sketches, seconds = fast_edits(editor, data.images[data.test], vectors, cfg, device)
    assert sketches is not None
    out = FastResult(recon, edits, sketches, vectors, seconds)
    r = editor.profile.resolution
    assert out.edits.shape == (len(data.test), len(cfg.alphas), r, r, 3), out.edits.shape
    return out


def change_blend(photos: np.ndarray, recon: np.ndarray, edits: np.ndarray, landmarks: np.ndarray,
                 feather: float = 0.06, settings=None, shift: np.ndarray | None = None,
                 alphas: Sequence[float] = ()) -> np.ndarray:
    """(N,A,S,S,3) uint8: each photo (N,S,S,3), cut out in its alignment at any size S, with each
    edit (N,A,R,R,3) composed into it as `dfe attribute` does (`editing.edit.paste_change`: the
    reconstruction as the unedited render, inside the inner-face mask of the aligned
    `landmarks`), with `settings` (a ComposeSettings; None: params.yaml `edit.compose`, as `dfe
    attribute` uses it). With `shift` (68,2), the attribute's landmark vector (or (N,68,2), one per
    face), edit k's motion is
    alphas[k] x shift from each face's landmarks (`--motion landmarks`); without, the renders'."""
    from pipeline.editing.compose import ComposeSettings, landmark_motion
    from pipeline.editing.edit import AlignedFace, paste_change

    settings = settings or ComposeSettings.from_params()
    n, a, r = len(photos), edits.shape[1], edits.shape[2]
    side = photos.shape[1]
    assert edits.shape == (n, a, r, r, 3) and recon.shape == (n, r, r, 3), (edits.shape, recon.shape)
    assert shift is None or len(alphas) == a, (len(alphas), a)
    scale = np.array([[r / side, 0, 0], [0, r / side, 0]])  # the photo crop -> the aligned frame
    out = np.empty((n, a, side, side, 3), np.uint8)
    for i in range(n):
        face = photos[i] if side == r else cv2.resize(photos[i], (r, r), interpolation=cv2.INTER_AREA)
        target = AlignedFace(photos[i], face, scale, landmarks[i])
        for k in range(a):
            motion = None if shift is None else landmark_motion(
                np.asarray(landmarks[i], np.float32), alphas[k] * (shift if shift.ndim == 2 else shift[i]), r,
                settings.landmark_sigma, settings.landmark_passes)
            out[i, k] = paste_change(target, edits[i, k], recon[i], feather, settings, motion)
    return out


def full_paste(photos: np.ndarray, edits: np.ndarray, landmarks: np.ndarray, feather: float = 0.06) -> np.ndarray:
    """(N,S,S,3): each edit's whole render (N,R,R,3) pasted into its photo crop (N,S,S,3) inside
    the inner-face mask with the photo's colours (`editing.edit.paste_edited`, `--render full`)."""
    from pipeline.editing.edit import AlignedFace, paste_edited

    r, side = edits.shape[1], photos.shape[1]
    scale = np.array([[r / side, 0, 0], [0, r / side, 0]])
    return np.stack([paste_edited(AlignedFace(p, cv2.resize(p, (r, r), interpolation=cv2.INTER_AREA), scale, lm), e, feather)
                     for p, e, lm in zip(photos, edits, landmarks)])


def photo_crops(data: DFIData, rows: np.ndarray, side: int, resolution: int
                ) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    """(N,S,S,3) uint8: each row's photo (manifest `path`) cut out at `side` px in its
    alignment (transforms.npy x side/R); (N,) bool, which were read; {path: why} for the rest
    (their crops stay black; callers leave those faces out)."""
    from pipeline.editing.edit import EditInputError, read_image

    crops = np.zeros((len(rows), side, side, 3), np.uint8)
    ok = np.zeros(len(rows), bool)
    skipped: dict[str, str] = {}
    for i, row in enumerate(rows):
        path = str(data.manifest.at[row, "path"]) if "path" in data.manifest else f"row {row}"
        if data.transforms is None:
            skipped[path] = "no data/aligned/transforms.npy (run `dvc repro align`)"
            continue
        try:
            photo = read_image(path)
        except EditInputError as e:
            skipped[path] = str(e)
            continue
        ok[i] = True
        crops[i] = cv2.warpAffine(photo, data.transforms[row] * (side / resolution), (side, side),
                                  flags=cv2.INTER_AREA if side < resolution else cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_REFLECT)
    return crops, ok, skipped


def choose_alpha(editor, data: DFIData, cfg: DFIConfig, device: torch.device,
                 vectors: Mapping[str, Mapping[str, torch.Tensor]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fast DFI's alpha, chosen on the val split (never on the reported test faces): the lowest
    val mouth NME among alphas whose edits dlib calls the same person as the unedited photo in
    at least `min_same_person` of the val faces; where none does, the alpha that keeps identity
    best. Returns the choice (for the metrics) and the val figures (for outputs/, not metrics)."""
    n_pairs = int((data.val_pair >= 0).sum())
    choice: dict[str, Any] = {"chosen": None, "on": "val", "n_val": len(data.val), "n_val_pairs": n_pairs,
                              "rule": f"lowest val mouth NME with same_person >= {cfg.min_same_person:g}",
                              "blend": cfg.blend}
    if n_pairs == 0:
        choice["why"] = "no val faces with a real target photo (split.val_fraction 0?): alpha not chosen"
        return choice, {}
    recon, edits, _, _ = fast_edits(editor, data.images[data.val], vectors, cfg, device, sketches=False,
                                    what="fast DFI (val, alpha choice)")
    if cfg.blend == "change" and cfg.measure_size > 0:  # judged as the user gets it: at the photo's size
        block, _ = measure_at_photo_size(data, data.val, data.val_pair, recon, edits, cfg, "evaluate val (alpha choice)")
        if isinstance(block, dict):
            choice["measured_at"] = f"{cfg.measure_size} px photo crops"
            chosen, why = pick_alpha({a: block[_alpha_key(a)] for a in cfg.alphas}, cfg.min_same_person)
            choice["chosen"] = chosen
            if why:
                choice["why"] = why
            return choice, block
        choice["measured_at_photo_size"] = block  # why not: measured at the aligned size instead
    if cfg.blend == "change":
        edits = change_blend(data.images[data.val], recon, edits, data.landmarks[data.val], **_motion(data, cfg))
    ev = Evaluator.aligned(data, data.val, data.val_pair, cfg.landmark_upsample)
    sets = {"recon": recon, **{_alpha_key(a): edits[:, k] for k, a in enumerate(cfg.alphas)}}
    figures, n_common = ev.compare(sets, "evaluate val (alpha choice)")
    choice["measured_at"] = f"{data.images.shape[1]} px aligned faces"
    chosen, why = pick_alpha({a: figures[_alpha_key(a)] for a in cfg.alphas}, cfg.min_same_person)
    choice["chosen"] = chosen
    if why:
        choice["why"] = why
    return choice, {"n_common": n_common, **figures}


def _motion(data: DFIData, cfg: DFIConfig) -> dict[str, Any]:
    """change_blend's motion arguments for cfg.motion."""
    return {"shift": data.landmark_shift, "alphas": cfg.alphas} if cfg.motion == "landmarks" else {}


def ratio_interval(errors: np.ndarray, base: np.ndarray, draws: int = 2000, seed: int = 0,
                   groups: np.ndarray | None = None) -> list[float] | None:
    """90 % bootstrap interval (over faces) of mean(errors) / mean(base), paired per face: how
    far a ratio from ~20 test people can be trusted against a bar. With `groups` (one label per
    item: the same face under several shifts) whole groups are drawn, so that one face seen 12
    times does not pass for 12 people."""
    if groups is not None:
        labels, inverse = np.unique(groups, return_inverse=True)
        errors, base = np.bincount(inverse, errors, len(labels)), np.bincount(inverse, base, len(labels))
    if len(errors) < 2:
        return None
    idx = np.random.default_rng(seed).integers(0, len(errors), (draws, len(errors)))
    ratios = errors[idx].sum(1) / np.maximum(base[idx].sum(1), 1e-12)
    return [float(np.quantile(ratios, 0.05)), float(np.quantile(ratios, 0.95))]


@dataclass
class PhotoSizeEdits:
    crops: np.ndarray  # (M,S,S,3) the unedited photos, cut out at S px in their alignment
    composed: np.ndarray  # (M,A,S,S,3) every alpha's edit composed into them
    keep: np.ndarray  # (M,) indices into the measured rows (faces whose photos were read)
    evaluator: Evaluator  # over those faces: their target photos' landmarks, dlib and the embedder


def measure_at_photo_size(data: DFIData, rows: np.ndarray, pair: np.ndarray, recon: np.ndarray, edits: np.ndarray,
                          cfg: DFIConfig, what: str, chosen: float | None = None
                          ) -> tuple[dict[str, Any] | str, PhotoSizeEdits | None]:
    """The edits (N,A,R,R,3) of `rows` composed into each face's photo cut out at
    cfg.measure_size px (`change_blend` with cfg.motion, as `dfe attribute` composes at the
    photo's size) and measured there (`Evaluator.at_photo_size`). Figures per set: `photo` (the
    unedited photo: the null of every change) and each alpha's composed edit; with `chosen` (one
    of cfg.alphas) also that edit's `full` render pasted (`--render full`: the null of keeping
    the person) and, under landmark motion, `renders_motion` (the motion from the renders
    instead). Each set's `mouth_over_photo` is its mouth NME over the photo's. A string says why
    nothing could be measured (no photo readable)."""
    ev, keep, crops, skipped = Evaluator.at_photo_size(data, rows, pair, cfg.measure_size)
    if len(keep) == 0 or not ev.has_pair.any():
        return (f"absent: none of the {len(rows)} photos and their pairs could be read at {cfg.measure_size} px"
                f" (first: {next(iter(skipped.items()), ('', 'no pairs'))})"), None
    lm = data.landmarks[rows[keep]]
    composed = change_blend(crops, recon[keep], edits[keep], lm, **_motion(data, cfg))
    sets = {"photo": crops, **{_alpha_key(a): composed[:, k] for k, a in enumerate(cfg.alphas)}}
    figures, n_common = _against_photo(ev, sets, what)
    if chosen is not None:  # each null beside the photo on the faces dlib finds in both (a blurred
        k = list(cfg.alphas).index(chosen)  # full render is missed more often: it must not thin the rest)
        nulls = {"full": full_paste(crops, edits[keep, k], lm)}
        if cfg.motion == "landmarks":
            nulls["renders_motion"] = change_blend(crops, recon[keep], edits[keep, k : k + 1], lm)[:, 0]
        for name, images in nulls.items():
            f, n = _against_photo(ev, {"photo": crops, name: images}, what)
            figures[name] = {**f[name], "n_common": n}
    # The ceiling of a population smile: dlib's own points on the photo moved by alpha x the
    # landmark shift, no image at all (what a perfect render of the mean smile would score).
    ceiling = dict(zip(map(_alpha_key, cfg.alphas), points_moved_ratio(
        ev, detect_landmarks(crops, ev.backend, None), data.landmark_shift, cfg.alphas, cfg.measure_size / data.images.shape[1])))
    block = {"side": cfg.measure_size, "motion": cfg.motion, "n_faces": len(keep), "n_pairs": int(ev.has_pair.sum()),
             "n_common": n_common, "skipped": skipped, "points_moved_over_photo": ceiling, **figures}
    return block, PhotoSizeEdits(crops, composed, keep, ev)


def points_moved_ratio(ev: "Evaluator", own: np.ndarray, shift: np.ndarray, alphas: Sequence[float], scale: float
                       ) -> list[float | None]:
    """Per alpha, the ceiling of a population smile: dlib's own points on the photos (`own`,
    (N,68,2) at the photos' size) moved by alpha x `shift` ((68,2) aligned px, or (N,68,2) one per
    face) x `scale`, their mouth NME over the unmoved points'; None where no face has both."""
    found = ev.mouth_errors(own)
    out = []
    for a in alphas:
        moved = ev.mouth_errors(own + a * shift * scale)
        ok = np.isfinite(found) & np.isfinite(moved)
        out.append(float(moved[ok].mean() / found[ok].mean()) if ok.any() else None)
    return out


def _against_photo(ev: Evaluator, sets: Mapping[str, np.ndarray], what: str) -> tuple[dict[str, dict[str, Any]], int]:
    """ev.compare of `sets` (one of them "photo"), each set's mouth NME also over the photo's
    (`mouth_over_photo`) with its 90 % bootstrap interval over the faces."""
    per_face: dict[str, np.ndarray] = {}
    figures, n_common = ev.compare(sets, what, per_face)
    base = figures["photo"]["mouth_nme"]
    for name, f in figures.items():
        f["mouth_over_photo"] = f["mouth_nme"] / base if f["mouth_nme"] is not None and base else None
        f["mouth_over_photo_ci90"] = ratio_interval(per_face[name], per_face["photo"])
    return figures, n_common


def pick_alpha(figures: Mapping[float, Mapping[str, Any]], min_same_person: float) -> tuple[float | None, str]:
    """The rule of `choose_alpha` on per-alpha figures (mouth_nme, same_person; None = not
    measured): (alpha or None, why when the plain rule did not decide)."""
    scored = [(a, f) for a, f in figures.items() if f.get("mouth_nme") is not None]
    if not scored:
        return None, "dlib found no val edit's landmarks: alpha not chosen"
    keep = [(a, f) for a, f in scored if (f.get("same_person") or 0.0) >= min_same_person]
    if keep:
        return float(min(keep, key=lambda af: (af[1]["mouth_nme"], abs(af[0])))[0]), ""
    best = max(scored, key=lambda af: (af[1].get("same_person") or 0.0, -abs(af[0])))[0]
    return float(best), f"no alpha keeps same_person >= {min_same_person:g} on val: the one that keeps identity best"


# --------------------------------------------------------------------------- classic DFI


@dataclass
class ClassicResult:
    rows: np.ndarray  # (M,) aligned rows of the edited test faces (the first M of data.test)
    edits: np.ndarray  # (M,A,R,R,3) uint8
    seconds_per_image: float  # neighbours' features + L-BFGS for all alphas, per face


def classic_dfi(vgg, data: DFIData, cfg: DFIConfig, device: torch.device) -> ClassicResult:
    """VGG-19 DFI on the first `classic_faces` test faces, neighbours from the training split."""
    from pipeline.dfi.interpolation import attribute_vector, dfi_edit, mean_dfi_features, select_neighbours

    pool = np.concatenate([data.train_without, data.train_with])
    pool_attrs = data.manifest.loc[pool].reset_index(drop=True)
    has_attr = np.r_[np.zeros(len(data.train_without), bool), np.ones(len(data.train_with), bool)]
    rows = data.test[: cfg.classic_faces]
    pts = list(NON_MOUTH_POINTS)
    edits = []
    synchronize(device)
    start_time = time.perf_counter()
    for row in track(rows, "classic DFI"):
        nb = select_neighbours(
            data.manifest.loc[row], pool_attrs, has_attr, cfg.classic_k,
            gender_key=cfg.gender_key or None, numeric=cfg.numeric, categorical=cfg.categorical,
            query_landmarks=data.landmarks[row][pts], pool_landmarks=data.landmarks[pool][:, pts],
            landmark_weight=cfg.classic_landmark_weight,
        )  # fmt: skip
        phi_s = mean_dfi_features(vgg, faces_to_tensor(data.images[pool[nb.source]], device), batch_size=cfg.batch_size)
        phi_t = mean_dfi_features(vgg, faces_to_tensor(data.images[pool[nb.target]], device), batch_size=cfg.batch_size)
        w = attribute_vector(phi_t, phi_s)
        x = faces_to_tensor(data.images[row : row + 1], device)
        res = dfi_edit(vgg, x, w, cfg.classic_alphas, iters=cfg.classic_iters, tv_weight=cfg.classic_tv_weight)
        edits.append(tensor_to_faces(res.images))
    synchronize(device)
    elapsed = time.perf_counter() - start_time
    return ClassicResult(rows, np.stack(edits), elapsed / max(len(rows), 1))


# --------------------------------------------------------------------------- evaluation


class Evaluator:
    """Mouth NME vs the real target photo and identity vs the unedited photo, for test faces.

    dlib misses some generated 128 px faces, and which ones differs between alphas: mouth NME
    is therefore averaged over the paired faces found in EVERY compared image set (`common`),
    so the figures of one method compare like with like; `missed` counts each set's misses.
    `sources` (N,S,S,3) are the unedited faces, `has_pair` (N,) which have a target photo and
    `ref_lm` (P,68,2) the target photos' landmarks at size S (NaN: not found, left out).
    """

    def __init__(self, sources: np.ndarray, has_pair: np.ndarray, ref_lm: np.ndarray, upsample: int) -> None:
        from pipeline.data.landmarks import DlibBackend
        from pipeline.evaluation.metrics import DlibFaceEmbedder

        assert ref_lm.shape == (int(has_pair.sum()), 68, 2), (ref_lm.shape, int(has_pair.sum()))
        self.backend = DlibBackend(upsample=upsample)
        self.embedder = DlibFaceEmbedder()
        self.has_pair = has_pair
        self.ref_lm = ref_lm
        self.e_source = self.embedder.embed(sources, boxes="aligned")

    @classmethod
    def aligned(cls, data: DFIData, rows: np.ndarray, pair: np.ndarray, upsample: int) -> "Evaluator":
        """At the aligned size R: the stored faces, the target photos' stored landmarks."""
        return cls(data.images[rows], pair >= 0, data.landmarks[pair[pair >= 0]], upsample)

    @classmethod
    def at_photo_size(cls, data: DFIData, rows: np.ndarray, pair: np.ndarray, side: int
                      ) -> tuple["Evaluator", np.ndarray, np.ndarray, dict[str, str]]:
        """At the photo's own size: each face's photo and its pair's target photo cut out at
        `side` px in their alignment (`photo_crops`), dlib (no upsampling) on those. Returns (the
        evaluator over the faces whose photos were read, their indices into `rows`, their crops
        (M,S,S,3), {photo: why} for the rest)."""
        from pipeline.data.landmarks import DlibBackend

        r = data.images.shape[1]
        crops, ok, skipped = photo_crops(data, rows, side, r)
        paired = pair >= 0
        targets, ok_t, skipped_t = photo_crops(data, pair[paired], side, r)
        ok[np.flatnonzero(paired)[~ok_t]] = False  # a face whose target photo is unreadable is left out too
        keep = np.flatnonzero(ok)
        has_pair = paired[keep]
        ref = targets[np.isin(np.flatnonzero(paired), keep)]  # the kept faces' targets, all read
        ref_lm = detect_landmarks(ref, DlibBackend(upsample=0), None) if len(ref) else np.zeros((0, 68, 2))
        return cls(crops[keep], has_pair, ref_lm, 0), keep, crops[keep], {**skipped, **skipped_t}

    def mouth_errors(self, lm: np.ndarray) -> np.ndarray:
        """Mouth NME (P,) of the paired rows of `lm` (N,68,2) vs the target photos; NaN = missed."""
        from pipeline.evaluation.metrics import LANDMARK_GROUPS, landmark_nme

        return landmark_nme(lm[self.has_pair], self.ref_lm, LANDMARK_GROUPS[MOUTH])

    def identity(self, images: np.ndarray, against: np.ndarray | None = None) -> dict[str, float | None]:
        from pipeline.evaluation.metrics import DLIB_SAME_PERSON_THRESHOLD, identity_distance, identity_similarity

        e = self.embedder.embed(images, boxes="aligned")
        ref = self.e_source if against is None else against
        dist, sim = identity_distance(e, ref), identity_similarity(e, ref)
        ok = np.isfinite(dist)
        if not ok.any():
            return {"id_distance": None, "id_similarity": None, "same_person": None}
        return {"id_distance": float(dist[ok].mean()), "id_similarity": float(sim[ok].mean()),
                "same_person": float((dist[ok] < DLIB_SAME_PERSON_THRESHOLD).mean())}

    def compare(self, sets: Mapping[str, np.ndarray], what: str, per_face: dict[str, np.ndarray] | None = None
                ) -> tuple[dict[str, dict[str, Any]], int]:
        """Figures per named image set (each (N,R,R,3), rows = this evaluator's faces) and the
        number of paired faces found in all of them (the faces mouth NME averages over); with
        `per_face`, it receives each set's mouth NME of those faces."""
        errors = {name: self.mouth_errors(detect_landmarks(images, self.backend, None)) for name, images in track(sets.items(), what)}
        common = np.logical_and.reduce([np.isfinite(e) for e in errors.values()])
        if per_face is not None:
            per_face.update({name: e[common] for name, e in errors.items()})
        out = {}
        for name, images in sets.items():
            err = errors[name]
            out[name] = {"mouth_nme": float(err[common].mean()) if common.any() else None,
                         "missed": int((~np.isfinite(err)).sum()), **self.identity(images)}
        return out, int(common.sum())


def _alpha_key(alpha: float) -> str:
    """'alpha_1p5': no dots, which DVC would read as nesting."""
    return "alpha_" + f"{alpha:g}".replace("-", "m").replace(".", "p")


# --------------------------------------------------------------------------- grids


def _wrap(text: str, width: int = 90) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width) or [""]


def photo_size_sheet(data: DFIData, cfg: DFIConfig, fast: FastResult, at_size: PhotoSizeEdits | None,
                     chosen: float | None, why: Any) -> np.ndarray:
    """The test smiles as the user gets them, 256 px tiles of the photo-size crops: the photo,
    the composed edit at the chosen alpha, the same with the renders' motion, the whole render
    pasted, the person's real smiling photo."""
    from pipeline.core.viz import make_grid, text_image

    if at_size is None or chosen is None:
        return text_image(["no photo-size sheet:", *_wrap(str(why) if at_size is None else "alpha not chosen on val")])
    k = list(cfg.alphas).index(chosen)
    tile = min(256, cfg.measure_size)
    shrink = lambda im: cv2.resize(im, (tile, tile), interpolation=cv2.INTER_AREA)  # noqa: E731
    shown = at_size.keep[: cfg.grid_faces]
    lm = data.landmarks[data.test[shown]]
    paired = data.pair[shown] >= 0
    reals, _, _ = photo_crops(data, data.pair[shown][paired], cfg.measure_size, data.images.shape[1])
    real_of = dict(zip(np.flatnonzero(paired), reals))
    cells: list[np.ndarray | None] = []
    for j, i in enumerate(shown):
        photo = at_size.crops[j]
        renders = change_blend(photo[None], fast.recon[i : i + 1], fast.edits[i : i + 1, k : k + 1], lm[j : j + 1])[0, 0]
        full = full_paste(photo[None], fast.edits[i : i + 1, k], lm[j : j + 1])[0]
        real = real_of.get(j)
        cells += [shrink(photo), shrink(at_size.composed[j, k]), shrink(renders), shrink(full),
                  None if real is None else shrink(real)]
    cols = ["photo", f"composed a={chosen:g}", "renders' motion", "full render", "real smile"]
    return make_grid(cells, nrow=len(cols), col_labels=cols)


# --------------------------------------------------------------------------- the vector file


def stage_vector(data: DFIData, cfg: DFIConfig, vectors: Mapping[str, Mapping[str, torch.Tensor]],
                 choice: Mapping[str, Any], vgg, editor, data_dir: str | Path, models_dir: str | Path,
                 device: torch.device) -> AttributeVector:
    """The stage's vector in the format of `dfe attribute-vector` (pipeline.dfi.vectors): the
    learned vectors, the training faces as the example sets, the VGG-19 vector over them when
    the weights are present, and the alpha chosen on val (1 where none could be chosen)."""
    from pipeline.dfi.interpolation import attribute_vector, mean_dfi_features
    from pipeline.models.vgg import DFI_LAYERS, vgg_weights_path

    def examples(rows: np.ndarray, value: str) -> ExampleSet:
        return ExampleSet(np.asarray(data.images[rows]), data.landmarks[rows].astype(np.float32),
                          [str(i) for i in data.manifest.loc[rows, "id"]], {},
                          f"{Path(data_dir) / 'aligned'}: train split, {cfg.attribute}={value}")

    ex = {"with": examples(data.train_with, cfg.target_value), "without": examples(data.train_without, cfg.source_value)}
    classic, status = None, f"absent: VGG-19 ImageNet weights not found at {vgg_weights_path()}"
    if vgg is not None:
        phi_t = mean_dfi_features(vgg, faces_to_tensor(ex["with"].faces, device), batch_size=cfg.batch_size)
        phi_s = mean_dfi_features(vgg, faces_to_tensor(ex["without"].faces, device), batch_size=cfg.batch_size)
        classic, status = attribute_vector(phi_t, phi_s).cpu(), f"vgg19 {','.join(DFI_LAYERS)} unit-norm, all examples"
    chosen = choice.get("chosen")
    source = (f"chosen on val ({choice['n_val_pairs']} pairs): {choice['rule']}" if chosen is not None
              else f"default 1 ({choice.get('why', 'not chosen')})")
    return AttributeVector(
        learned={p: {s: v.float().cpu() for s, v in d.items()} for p, d in vectors.items()},
        profile=editor.profile.name, resolution=editor.profile.resolution, parts=cfg.parts, spaces=cfg.spaces,
        alpha=1.0 if chosen is None else float(chosen), alpha_source=source, alphas=cfg.alphas,
        name=str(cfg.target_value), normalise=cfg.normalise, examples=ex, classic=classic, classic_status=status,
        shape_points=NON_MOUTH_POINTS, models=str(models_dir), models_fingerprint=models_fingerprint(models_dir),
        made_by="dfi stage",
    )


# --------------------------------------------------------------------------- stage


def run_dfi(
    params: Mapping[str, Any] | DFIConfig,
    data_dir: str | Path = "data",
    models_dir: str | Path = "models",
    out_dir: str | Path = "outputs/dfi",
    reports_dir: str | Path = "reports",
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Fast (+ classic when VGG-19 weights exist) DFI on the test split; returns the metrics.

    Writes reports_dir/dfi.json (metrics), reports_dir/dfi/{fast,photo_size,classic}.png (grids) and
    out_dir/{test.csv, recon.npy, fast_edits.npy (N,A,R,R,3), fast_sketches.npy (N,A,R,R),
    vectors.safetensors (pipeline.dfi.vectors), val.json (the val figures alpha was chosen
    on)[, classic_edits.npy (M,A,R,R,3)]}.
    """
    from pipeline.core.config import resolve_device
    from pipeline.core.profiles import get_profile
    from pipeline.models.editor import load_editor
    from pipeline.models.vgg import MissingWeightsError, load_vgg19, vgg_weights_path
    from pipeline.core.viz import make_grid, text_image

    cfg = params if isinstance(params, DFIConfig) else DFIConfig.from_params(params)
    cfg.validate()
    device = cfg.device if device is None else device
    dev = resolve_device(device) if isinstance(device, str) else device
    profile = get_profile(cfg.profile)
    # The edited geometry is also decoded to sketches: weights without a sketch decoder (the
    # authors' release) fail here, in one line naming the command that trains one.
    editor = load_editor(models_dir, profile, dev, sketch_decoder=True)
    data = load_dfi_data(data_dir, cfg, profile.resolution)
    out_dir, reports_dir = Path(out_dir), Path(reports_dir)

    fast = fast_dfi(editor, data, cfg, dev)
    ev = Evaluator.aligned(data, data.test, data.pair, cfg.landmark_upsample)
    paired = data.pair[data.pair >= 0]
    # The unedited neutral photo goes through the same dlib-at-128-px measurement ('photo').
    sets = {"photo": data.images[data.test], "recon": fast.recon,
            **{_alpha_key(a): fast.edits[:, k] for k, a in enumerate(cfg.alphas)}}
    figures, n_common = ev.compare(sets, "evaluate fast DFI")
    photo = figures.pop("photo")
    stored = ev.mouth_errors(data.landmarks[data.test])
    baseline: dict[str, Any] = {
        # Before any edit: the neutral photo against the same person's smiling photo, with its
        # stored (full-resolution) landmarks (all pairs) and with dlib at 128 px (common faces).
        "source_mouth_nme": float(stored.mean()) if len(stored) else None,
        "source_mouth_nme_detected": photo["mouth_nme"],
        "source_missed": photo["missed"],
    }
    if len(paired):  # how far the real smiling photo is from the neutral one in identity
        target_id = ev.identity(data.images[paired], against=ev.e_source[ev.has_pair])
        baseline.update({f"target_{k}": v for k, v in target_id.items()})
    fast_metrics: dict[str, Any] = {
        "seconds_per_image": fast.seconds_per_image,
        "seconds_per_edit": fast.seconds_per_image / len(cfg.alphas),
        "n_common": n_common,
        **figures,
    }
    # The photo plus only what each edit changed (dfe attribute's default paste-back).
    changed = change_blend(data.images[data.test], fast.recon, fast.edits, data.landmarks[data.test], **_motion(data, cfg))
    figures_c, n_common_c = ev.compare({_alpha_key(a): changed[:, k] for k, a in enumerate(cfg.alphas)},
                                       "evaluate fast DFI (change)")
    change_metrics: dict[str, Any] = {"n_common": n_common_c, **figures_c}
    # alpha is chosen on the val split's faces; the figures reported stay the test faces'.
    choice, val_figures = choose_alpha(editor, data, cfg, dev, fast.vectors)
    if choice["chosen"] is not None:
        block, figs = (change_metrics, figures_c) if cfg.blend == "change" else (fast_metrics, figures)
        block["chosen"] = {"alpha": choice["chosen"], **figs[_alpha_key(choice["chosen"])]}
    # The test faces' edits as the user gets them: composed into the photo at its own size.
    photo_size: dict[str, Any] | str = "absent: dfi.measure_size is 0"
    at_size = None
    if cfg.measure_size > 0:
        photo_size, at_size = measure_at_photo_size(data, data.test, data.pair, fast.recon, fast.edits, cfg,
                                                    "evaluate fast DFI (photo size)", choice["chosen"])
        if isinstance(photo_size, dict) and choice["chosen"] is not None:
            photo_size["chosen"] = {"alpha": choice["chosen"], **photo_size[_alpha_key(choice["chosen"])]}
    # The same smile on the test photos under other lights and cameras (a user's photo never is London's).
    shifted: dict[str, Any] | str = "absent: dfi.shifts is empty" if not cfg.shifts else "absent: no photo-size edits"
    shifted_grid = None
    if cfg.shifts and at_size is not None and choice["chosen"] is not None:
        from pipeline.dfi.shifted import measure_shifted, shifted_sheet

        shifted, faces, shifted_sets = measure_shifted(editor, data, cfg, fast.vectors, dev, data.test[at_size.keep],
                                                       at_size.evaluator, choice["chosen"])
        shifted_grid = shifted_sheet(faces, shifted_sets)

    vgg = load_vgg19(dev, required=False)
    classic_metrics: dict[str, Any] | str
    classic: ClassicResult | None = None
    if vgg is None:
        classic_metrics = f"absent: {MissingWeightsError(vgg_weights_path())}"
    elif cfg.classic_faces <= 0:
        classic_metrics = "absent: dfi.classic_faces is 0"
    else:
        classic = classic_dfi(vgg, data, cfg, dev)
        m = len(classic.rows)
        ev_c = Evaluator.aligned(data, classic.rows, data.pair[:m], cfg.landmark_upsample)
        sets = {"photo": data.images[classic.rows],
                **{_alpha_key(a): classic.edits[:, k] for k, a in enumerate(cfg.classic_alphas)}}
        figures, n_common = ev_c.compare(sets, "evaluate classic DFI")
        classic_metrics = {"n_faces": m, "n_common": n_common, "seconds_per_image": classic.seconds_per_image,
                           "iters": cfg.classic_iters, "k": cfg.classic_k, **figures}

    metrics: dict[str, Any] = {
        "n_train_with": len(data.train_with),
        "n_train_without": len(data.train_without),
        "n_test": len(data.test),
        "n_pairs": len(paired),
        "alpha": choice,
        "baseline": baseline,
        "fast": fast_metrics,
        "fast_change": change_metrics,
        "photo_size": photo_size,
        "photo_size_shifted": shifted,
        "classic": classic_metrics,
    }
    from pipeline.evaluation.metrics import DFI_GATES, gates

    metrics["gates"] = gates(metrics, DFI_GATES)

    # Outputs (edits for later inspection), then grids and metrics.
    save_csv(out_dir / "test.csv", pd.DataFrame({
        "row": data.test, "id": data.manifest.loc[data.test, "id"].to_numpy(), "pair_row": data.pair}))
    save_npy(out_dir / "recon.npy", fast.recon)
    save_npy(out_dir / "fast_edits.npy", fast.edits)
    save_npy(out_dir / "fast_sketches.npy", fast.sketches)
    save_json(out_dir / "val.json", {"alpha": choice, "fast": val_figures})
    save_vector(stage_vector(data, cfg, fast.vectors, choice, vgg, editor, data_dir, models_dir, dev),
                out_dir / "vectors.safetensors")
    if classic is not None:
        save_npy(out_dir / "classic_edits.npy", classic.edits)

    def target_cell(i: int) -> np.ndarray | None:
        return data.images[data.pair[i]] if data.pair[i] >= 0 else None

    g = min(cfg.grid_faces, len(data.test))
    a_max = int(np.argmax(np.abs(cfg.alphas)))
    cells: list[np.ndarray | None] = []
    for i in range(g):
        cells += [data.images[data.test[i]], fast.recon[i], *fast.edits[i], fast.sketches[i, a_max], target_cell(i)]
    cols = ["photo", "recon", *[f"a={a:g}" for a in cfg.alphas], f"sketch a={cfg.alphas[a_max]:g}", "real"]
    save_png(reports_dir / "dfi" / "fast.png", make_grid(cells, nrow=len(cols), col_labels=cols))
    save_png(reports_dir / "dfi" / "photo_size.png", photo_size_sheet(data, cfg, fast, at_size, choice["chosen"], photo_size))
    save_png(reports_dir / "dfi" / "photo_size_shifted.png", shifted_grid if shifted_grid is not None else
             text_image(["no shifted-photo sheet:", *_wrap(str(shifted))]))
    if classic is not None:
        cells = []
        for i in range(min(g, len(classic.rows))):
            cells += [data.images[classic.rows[i]], *classic.edits[i], target_cell(i)]
        cols = ["photo", *[f"a={a:g}" for a in cfg.classic_alphas], "real"]
        save_png(reports_dir / "dfi" / "classic.png", make_grid(cells, nrow=len(cols), col_labels=cols))
    else:
        assert isinstance(classic_metrics, str)
        save_png(reports_dir / "dfi" / "classic.png", text_image(["classic DFI not run:", *_wrap(classic_metrics)]))
    save_json(reports_dir / "dfi.json", metrics)
    return metrics

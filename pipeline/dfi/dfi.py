"""The dfi stage: attribute edits (default: London neutral -> smiling) by fast and classic DFI.

Attribute vectors come from the TRAINING split only; the edited faces are the test split's
faces without the attribute, so test identities never contribute to the vectors.

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
dlib-at-output-size landmarks) and the real smiling photo's identity figures.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from pipeline import PARTS
from pipeline.dfi.interpolation import SPACES, apply_learned_dfi, learned_attribute_vectors
from pipeline.data.landmarks import detect_landmarks
from pipeline.models.editor import encode
from pipeline.core.tensors import faces_to_tensor, tensor_to_faces
from pipeline.core.io import atomic_path, load_npy, save_csv, save_json, save_npy, save_png
from pipeline.core.progress import track

PLOT_FILES = ("fast.png", "classic.png")
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
    max_faces: int = 0  # first N test faces without the attribute, 0 = all
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


@dataclass
class DFIData:
    manifest: pd.DataFrame  # aligned manifest (+ `split`), index = row in images.npy
    images: np.ndarray  # (N,R,R,3) uint8 aligned faces
    landmarks: np.ndarray  # (N,68,2) aligned px
    train_with: np.ndarray  # rows: training faces with the attribute
    train_without: np.ndarray  # rows: training faces without it
    test: np.ndarray  # rows: test faces without it (the ones edited)
    pair: np.ndarray  # per test face: row of the same identity's test photo WITH it, -1 if none


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
    train, test = manifest["split"] == "train", manifest["split"] == "test"
    rows = {k: manifest.index[m].to_numpy() for k, m in
            (("with", train & is_tgt), ("without", train & is_src), ("test", test & is_src))}
    for k, r in rows.items():
        if len(r) == 0:
            raise ValueError(f"no {k} faces for {cfg.attribute}={cfg.source_value}->{cfg.target_value} in {data_dir}")
    test_rows = rows["test"][: cfg.max_faces] if cfg.max_faces > 0 else rows["test"]
    # A test face's real target photo: the same identity's (first) test row with the attribute.
    first_target: dict[str, int] = {}
    if "identity" in manifest:
        targets = manifest[test & is_tgt]
        first_target = dict(zip(targets["identity"][::-1], targets.index[::-1]))
    pair = np.array([first_target.get(manifest.at[r, "identity"], -1) if first_target else -1 for r in test_rows],
                    dtype=np.int64)
    return DFIData(manifest, np.asarray(images), np.asarray(landmarks, dtype=np.float64),
                   rows["with"], rows["without"], test_rows, pair)


# --------------------------------------------------------------------------- tensors


def _sketch_uint8(x: torch.Tensor) -> np.ndarray:
    """(B,C,R,R) sketches in [-1,1] (one channel replicated) -> (B,R,R) uint8."""
    from pipeline.core.viz import to_uint8

    assert x.ndim == 4, x.shape
    return to_uint8(x.mean(dim=1, keepdim=True))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------- fast DFI


@dataclass
class FastResult:
    recon: np.ndarray  # (N,R,R,3) uint8: unedited reconstructions
    edits: np.ndarray  # (N,A,R,R,3) uint8, one per alpha
    sketches: np.ndarray  # (N,A,R,R) uint8 sketches decoded from the edited geometry
    vectors: dict[str, dict[str, torch.Tensor]]
    seconds_per_image: float  # encode + every alpha's render + sketch, per test face


def fast_dfi(editor, data: DFIData, cfg: DFIConfig, device: torch.device) -> FastResult:
    """Learned-space attribute vectors from the training split; edits of every test face."""
    geo_w, app_w = encode(editor, data.images[data.train_with], cfg.batch_size, device, "encode train (with)")
    geo_wo, app_wo = encode(editor, data.images[data.train_without], cfg.batch_size, device, "encode train (without)")
    vectors = learned_attribute_vectors(geo_w, geo_wo, app_w, app_wo, normalise=cfg.normalise)

    recon, edits, sketches = [], [], []
    n_alpha = len(cfg.alphas)
    _sync(device)
    start_time = time.perf_counter()
    for start in track(range(0, len(data.test), cfg.batch_size), "fast DFI"):
        face = faces_to_tensor(data.images[data.test[start : start + cfg.batch_size]], device)
        z, codes = editor.geometry_from_photo(face), editor.appearance_codes(face)
        recon.append(tensor_to_faces(editor.render(z, codes)))
        per_alpha, per_alpha_sketch = [], []
        for alpha in cfg.alphas:
            z_e, c_e = apply_learned_dfi(z, codes, vectors, alpha, parts=cfg.parts, spaces=cfg.spaces)
            per_alpha.append(tensor_to_faces(editor.render(z_e, c_e)))
            per_alpha_sketch.append(_sketch_uint8(editor.sketch_from_geometry(z_e)))
        edits.append(np.stack(per_alpha, axis=1))
        sketches.append(np.stack(per_alpha_sketch, axis=1))
    _sync(device)
    elapsed = time.perf_counter() - start_time
    out = FastResult(np.concatenate(recon), np.concatenate(edits), np.concatenate(sketches), vectors,
                     elapsed / len(data.test))
    r = editor.profile.resolution
    assert out.edits.shape == (len(data.test), n_alpha, r, r, 3), out.edits.shape
    return out


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
    _sync(device)
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
    _sync(device)
    elapsed = time.perf_counter() - start_time
    return ClassicResult(rows, np.stack(edits), elapsed / max(len(rows), 1))


# --------------------------------------------------------------------------- evaluation


class Evaluator:
    """Mouth NME vs the real target photo and identity vs the unedited photo, for test faces.

    dlib misses some generated 128 px faces, and which ones differs between alphas: mouth NME
    is therefore averaged over the paired faces found in EVERY compared image set (`common`),
    so the figures of one method compare like with like; `missed` counts each set's misses.
    """

    def __init__(self, data: DFIData, rows: np.ndarray, pair: np.ndarray, upsample: int) -> None:
        from pipeline.data.landmarks import DlibBackend
        from pipeline.evaluation.metrics import DlibFaceEmbedder

        self.backend = DlibBackend(upsample=upsample)
        self.embedder = DlibFaceEmbedder()
        self.has_pair = pair >= 0
        self.ref_lm = data.landmarks[pair[self.has_pair]]  # real target photos' aligned landmarks
        self.e_source = self.embedder.embed(data.images[rows], boxes="aligned")

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

    def compare(self, sets: Mapping[str, np.ndarray], what: str) -> tuple[dict[str, dict[str, Any]], int]:
        """Figures per named image set (each (N,R,R,3), rows = this evaluator's faces) and the
        number of paired faces found in all of them (the faces mouth NME averages over)."""
        errors = {name: self.mouth_errors(detect_landmarks(images, self.backend, None)) for name, images in track(sets.items(), what)}
        common = np.logical_and.reduce([np.isfinite(e) for e in errors.values()])
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

    Writes reports_dir/dfi.json (metrics), reports_dir/dfi/{fast,classic}.png (grids) and
    out_dir/{test.csv, recon.npy, fast_edits.npy (N,A,R,R,3), fast_sketches.npy (N,A,R,R),
    vectors.safetensors[, classic_edits.npy (M,A,R,R,3)]}.
    """
    from safetensors.torch import save_file

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
    ev = Evaluator(data, data.test, data.pair, cfg.landmark_upsample)
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
        ev_c = Evaluator(data, classic.rows, data.pair[:m], cfg.landmark_upsample)
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
        "baseline": baseline,
        "fast": fast_metrics,
        "classic": classic_metrics,
    }

    # Outputs (edits for later inspection), then grids and metrics.
    save_csv(out_dir / "test.csv", pd.DataFrame({
        "row": data.test, "id": data.manifest.loc[data.test, "id"].to_numpy(), "pair_row": data.pair}))
    save_npy(out_dir / "recon.npy", fast.recon)
    save_npy(out_dir / "fast_edits.npy", fast.edits)
    save_npy(out_dir / "fast_sketches.npy", fast.sketches)
    flat = {f"{p}.{s}": v.detach().cpu().contiguous() for p, d in fast.vectors.items() for s, v in d.items()}
    with atomic_path(out_dir / "vectors.safetensors") as tmp:
        save_file(flat, str(tmp), metadata={"alphas": str(list(cfg.alphas)), "parts": ",".join(cfg.parts)})
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

"""evaluate: reconstruction, disentanglement, identity and sketch metrics on the test split,
each beside its nulls on the same faces, plus image grids.

A figure means nothing without what a model that learned nothing would score:
- floor: the photo itself (dlib on the photo against the stored landmarks; a person's other
  photo for identity);
- "learned nothing": the training set's mean face (landmarks), mean image (identity, PSNR) and
  mean sketch (decoded sketches);
- "ignores geometry": a swap (geometry of face i, appearance of face j) that just returned j
  would score j's own landmarks against i's.
`ratios` divides each model figure by its null and `gates` checks the bars of
`metrics.GATES`, so a mean-face model cannot read as a success.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from pipeline import PARTS
from pipeline.core.config import resolve_device
from pipeline.core.io import load_npy, save_json, save_png
from pipeline.core.progress import track
from pipeline.core.tensors import faces_to_tensor, tensor_to_faces
from pipeline.data.landmarks import detect_landmarks
from pipeline.models.editor import encode

PLOT_FILES = ("reconstructions.png", "swaps.png", "swap_pairs.png", "sketches.png", "line_drawings.png", "shifted.png", "edits.png")


@dataclass(frozen=True)
class EvalConfig:
    profile: str = "small"
    components: str = "data/components"  # test manifest: rows of the split, `source_row` into aligned
    aligned: str = "data/aligned"  # images.npy (N,R,R,3), landmarks.npy (N,68,2) aligned px
    sketches: str = "data/sketches/sketches.npy"  # (N,R,R) dataset sketches, same rows as aligned
    shifted: str = "data/shifted"  # the `shifts` stage: the split's faces under real photos' shifts
    photo_side: int = 512  # edits are composed into the faces re-aligned from their photos at this size
    models_dir: str = "models"
    metrics_path: str = "reports/evaluate.json"
    plots_dir: str = "reports/evaluate"
    split: str = "test"  # faces evaluated: test (reported) | val (where choices are made)
    max_faces: int = 0  # 0 = the whole split
    swaps_per_face: int = 2  # appearance donors per geometry source (other identities)
    grid_faces: int = 6  # faces in the image grids (swap matrix is grid_faces^2)
    batch_size: int = 16
    landmark_upsample: int = 1  # dlib detector upsampling: 1 finds the faces of 128 px crops
    device: str = "auto"

    def validate(self) -> None:
        """Called by stages.common.config_from and by evaluate()."""
        if self.split not in ("test", "val"):
            raise ValueError(f"evaluate split must be 'test' or 'val', got {self.split!r}")


@dataclass
class TestSet:
    ids: list[str]
    identities: list[str]
    faces: np.ndarray  # (N,R,R,3) uint8 aligned photos
    landmarks: np.ndarray  # (N,68,2) aligned px
    sketches: np.ndarray | None  # (N,R,R) uint8 dataset sketches


def load_test_set(cfg: EvalConfig, resolution: int, split: str = "test") -> TestSet:
    manifest_path = Path(cfg.components) / split / "manifest.csv"
    if not manifest_path.exists():
        raise FileNotFoundError(f"{manifest_path} missing: run `dvc repro components` (or `dfe components`)")
    manifest = pd.read_csv(manifest_path, dtype={"identity": str})
    if "source_row" not in manifest.columns:
        raise ValueError(f"{manifest_path} lacks `source_row` (the row in {cfg.aligned}/images.npy)")
    if cfg.max_faces > 0 and split != "train":
        manifest = manifest.iloc[: cfg.max_faces]
    if len(manifest) < 2:
        raise ValueError(f"{manifest_path}: the {split} split needs at least 2 faces for swaps, has {len(manifest)}")
    rows = manifest["source_row"].to_numpy(dtype=np.int64)
    images = load_npy(Path(cfg.aligned) / "images.npy")
    landmarks = load_npy(Path(cfg.aligned) / "landmarks.npy")
    if images.shape[1:] != (resolution, resolution, 3):
        raise ValueError(
            f"{cfg.aligned}/images.npy holds {images.shape[1:]} faces but the profile is {resolution} px: "
            "re-run `dvc repro align` with the same profile"
        )
    sketch_path = Path(cfg.sketches)
    sketches = np.asarray(load_npy(sketch_path)[rows]) if sketch_path.exists() else None
    return TestSet(
        ids=manifest["id"].astype(str).tolist(),
        identities=manifest["identity"].astype(str).tolist(),
        faces=np.asarray(images[rows]),
        landmarks=np.asarray(landmarks[rows], dtype=np.float64),
        sketches=sketches,
    )


def swap_pairs(identities: list[str], per_face: int) -> np.ndarray:
    """(P,2) pairs (geometry i, appearance j): for each i the next `per_face` faces, cyclically,
    of a different identity (a person's neutral and smiling photos would flatter the swap)."""
    n = len(identities)
    pairs = []
    for i in range(n):
        donors = [(i + k) % n for k in range(1, n) if identities[(i + k) % n] != identities[i]]
        pairs += [(i, j) for j in donors[:per_face]]
    if not pairs:
        raise ValueError("every test face has the same identity: no cross-identity swaps possible")
    return np.asarray(pairs, dtype=np.int64)


def _index(latents: dict[str, torch.Tensor], idx: np.ndarray) -> dict[str, torch.Tensor]:
    t = torch.as_tensor(idx, device=next(iter(latents.values())).device)
    return {p: v.index_select(0, t) for p, v in latents.items()}


def _render_pairs(editor, geometry, codes, pairs: np.ndarray, batch_size: int, what: str) -> np.ndarray:
    """Faces (P,R,R,3) uint8 from geometry of pairs[:,0] and appearance of pairs[:,1], batched."""
    out = []
    for start in track(range(0, len(pairs), batch_size), what):
        chunk = pairs[start : start + batch_size]
        out.append(tensor_to_faces(editor.render(_index(geometry, chunk[:, 0]), _index(codes, chunk[:, 1]))))
    return np.concatenate(out)


def _nme(pred: np.ndarray, ref: np.ndarray) -> tuple[float, int]:
    """Mean NME over detected faces, and the number of faces with no detection."""
    from pipeline.evaluation.metrics import landmark_nme

    err = landmark_nme(pred, ref)
    found = np.isfinite(err)
    return (float(err[found].mean()) if found.any() else float("nan")), int((~found).sum())


def _lab(images: np.ndarray, boxes, device) -> dict[str, np.ndarray]:
    from pipeline.evaluation.metrics import part_lab_stats

    return part_lab_stats(images, boxes, device=device)


def _rows(stats: dict[str, np.ndarray], idx: np.ndarray) -> dict[str, np.ndarray]:
    return {p: v[idx] for p, v in stats.items()}


def _mean_parts(dist: dict[str, np.ndarray]) -> np.ndarray:
    return np.mean(np.stack([dist[p] for p in PARTS]), axis=0)


def _json_safe(d: dict[str, Any]) -> dict[str, Any]:
    """NaN (e.g. NME when dlib found no face in any output) -> None: strict JSON has no NaN."""
    return {k: _json_safe(v) if isinstance(v, dict) else (None if isinstance(v, float) and not np.isfinite(v) else v)
            for k, v in d.items()}


def _rate(x: np.ndarray) -> float:
    """Mean of a boolean condition over the finite entries (NaN = no face found: not counted)."""
    return float(np.mean(x[np.isfinite(x)] < 0.6)) if np.isfinite(x).any() else float("nan")


def _groups(pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    from pipeline.evaluation.metrics import LANDMARK_GROUPS, landmark_nme

    out = {}
    for g, idx in LANDMARK_GROUPS.items():
        err = landmark_nme(pred, ref, idx)
        out[g] = float(np.nanmean(err)) if np.isfinite(err).any() else float("nan")
    return out


def _ratio(a: float, b: float) -> float:
    return float(a / b) if np.isfinite(a) and np.isfinite(b) and b > 0 else float("nan")


def _other_photo(identities: list[str]) -> np.ndarray:
    """For each face, another face of the same person (-1 when there is none)."""
    out = np.full(len(identities), -1)
    for i, who in enumerate(identities):
        same = [j for j, w in enumerate(identities) if w == who and j != i]
        if same:
            out[i] = same[0]
    return out


@dataclass
class Nulls:
    """What a model that learned nothing would output, from the training split."""

    mean_face: np.ndarray  # (68,2) aligned px: mean training landmarks
    mean_image: np.ndarray  # (R,R,3) uint8: mean training photo
    mean_sketch: np.ndarray | None  # (R,R) uint8: mean training sketch


def _source_rows(cfg: EvalConfig, split: str) -> np.ndarray:
    """Rows in data/aligned of the split's faces (as load_test_set reads them)."""
    manifest = pd.read_csv(Path(cfg.components) / split / "manifest.csv")
    if cfg.max_faces > 0:
        manifest = manifest.iloc[: cfg.max_faces]
    return manifest["source_row"].to_numpy(dtype=np.int64)


def _editable_style():
    """The sketch style `dfe sketch` draws a photo's editable sketch in (params.yaml sketches.style, fixed look)."""
    from dataclasses import replace

    from pipeline.core.config import load_params
    from pipeline.data.sketch.draw import SketchStyle

    style = (load_params().get("sketches") or {}).get("style") or {}
    return replace(SketchStyle(**style), randomize=0.0)


def _compose_settings():
    """params.yaml `edit.compose` (editing.compose.ComposeSettings)."""
    from pipeline.editing.compose import ComposeSettings

    return ComposeSettings.from_params()


def training_nulls(cfg: EvalConfig, resolution: int) -> Nulls:
    train = load_test_set(cfg, resolution, split="train")
    mean_sketch = None
    if train.sketches is not None:
        mean_sketch = (train.sketches.astype(np.float64).mean(0) + 0.5).astype(np.uint8)
    return Nulls(train.landmarks.mean(0), (train.faces.astype(np.float64).mean(0) + 0.5).astype(np.uint8), mean_sketch)


def evaluate(cfg: EvalConfig, editor=None) -> dict[str, Any]:
    """Run every metric on the test split; write `cfg.metrics_path` and the PNG grids; return the metrics.

    `editor`: anything with the `Editor` interface (tests pass stand-ins such as a model that
    outputs the mean face); by default the trained models under `cfg.models_dir`.
    """
    from pipeline.evaluation import metrics as M
    from pipeline.core.profiles import get_profile
    from pipeline.core.viz import make_grid, swap_matrix_grid, to_uint8

    profile = get_profile(cfg.profile)
    device = resolve_device(cfg.device)
    if editor is None:
        from pipeline.editing.colour_norm import load_photo_editor

        editor = load_photo_editor(cfg.models_dir, profile, device)
    cfg.validate()
    data = load_test_set(cfg, profile.resolution, split=cfg.split)
    nulls = training_nulls(cfg, profile.resolution)
    n = len(data.ids)
    bs = cfg.batch_size

    geo, app = encode(editor, data.faces, bs, device, "encode test faces")

    self_pairs = np.stack([np.arange(n), np.arange(n)], axis=1)
    recon = _render_pairs(editor, geo, app, self_pairs, bs, "reconstruct")
    pairs = swap_pairs(data.identities, cfg.swaps_per_face)
    swaps = _render_pairs(editor, geo, app, pairs, bs, "swap")
    gi, aj = pairs[:, 0], pairs[:, 1]
    mean_images = np.broadcast_to(nulls.mean_image, data.faces.shape)

    # Reconstruction fidelity, beside the mean training image's.
    photo_t = faces_to_tensor(data.faces, device)
    recon_t = faces_to_tensor(recon, device)
    mean_t = faces_to_tensor(np.ascontiguousarray(mean_images), device)
    psnr = M.psnr(recon_t, photo_t).cpu().numpy()
    ssim = M.ssim(recon_t, photo_t).cpu().numpy()

    # Geometry: dlib landmarks of the outputs against the stored landmarks of the source. The
    # same detector on the photos gives the floor (detection noise at this size).
    from pipeline.data.landmarks import DlibBackend

    dlib = DlibBackend(upsample=cfg.landmark_upsample)  # loading it takes ~1.7 s: once
    lm_photo = detect_landmarks(data.faces, dlib, "landmarks: photos")
    lm_recon = detect_landmarks(recon, dlib, "landmarks: reconstructions")
    lm_swap = detect_landmarks(swaps, dlib, "landmarks: swaps")
    lm_geo, lm_app = data.landmarks[gi], data.landmarks[aj]
    lm_mean = np.broadcast_to(nulls.mean_face, data.landmarks.shape)
    nme_photo, miss_photo = _nme(lm_photo, data.landmarks)
    nme_recon, miss_recon = _nme(lm_recon, data.landmarks)
    nme_swap, miss_swap = _nme(lm_swap, lm_geo)
    nme_swap_app, _ = _nme(lm_swap, lm_app)
    nme_mean, _ = _nme(lm_mean, data.landmarks)
    nme_ignores, _ = _nme(lm_app, lm_geo)

    # Sketches a person draws: person B's landmark contours as a plain line drawing, moved
    # into A's frame (similarity on eyes and mouth corners), as A's geometry with A's own
    # appearance. The output should take B's shape; the null ignores the drawing (A's recon).
    from pipeline.data.sketch.contours import contour_drawing, warp_into_frame

    drawn_lm = np.stack([warp_into_frame(data.landmarks[b], data.landmarks[a]) for a, b in pairs])
    drawings = np.stack([contour_drawing(lm, profile.resolution) for lm in drawn_lm])
    drawn_out = []
    for start in track(range(0, len(pairs), bs), "line drawings"):
        chunk = pairs[start : start + bs]
        sk = faces_to_tensor(np.repeat(drawings[start : start + bs, ..., None], 3, axis=3), device)
        drawn_out.append(tensor_to_faces(editor.render(editor.geometry_from_sketch(sk), _index(app, chunk[:, 0]))))
    drawn_out = np.concatenate(drawn_out)
    lm_drawn_out = detect_landmarks(drawn_out, dlib, "landmarks: line-drawing edits")
    line_drawing = {
        "output_to_drawn": _nme(lm_drawn_out, drawn_lm)[0],
        "output_to_own": _nme(lm_drawn_out, lm_geo)[0],
        "drawn_to_own": _nme(drawn_lm, lm_geo)[0],
        "null_ignores_drawing": _nme(lm_recon[gi], drawn_lm)[0],
        "missed": _nme(lm_drawn_out, drawn_lm)[1],
    }

    # Appearance: per-part mean Lab colour distance (CIE76 dE).
    boxes = editor.boxes
    lab_photo = _lab(data.faces, boxes, device)
    lab_recon = _lab(recon, boxes, device)
    lab_swap = _lab(swaps, boxes, device)
    d_recon = M.lab_stat_distance(lab_recon, lab_photo)
    d_swap_app = M.lab_stat_distance(lab_swap, _rows(lab_photo, aj))
    d_swap_geo = M.lab_stat_distance(lab_swap, _rows(lab_photo, gi))
    d_src = M.lab_stat_distance(_rows(lab_photo, aj), _rows(lab_photo, gi))  # how far apart the sources are

    # Identity: dlib descriptors on the fixed aligned face box; distance < 0.6 = same person.
    embedder = M.DlibFaceEmbedder()
    e_photo = embedder.embed(data.faces, boxes="aligned")
    e_recon = embedder.embed(recon, boxes="aligned")
    e_swap = embedder.embed(swaps, boxes="aligned")
    e_mean = embedder.embed(nulls.mean_image[None], boxes="aligned")
    other = _other_photo(data.identities)
    has_other = other >= 0
    dist_recon = M.identity_distance(e_recon, e_photo)
    identity = {
        "recon_same_person": _rate(dist_recon),
        "recon_distance": float(np.nanmean(dist_recon)),
        "recon_similarity": float(np.nanmean(M.identity_similarity(e_recon, e_photo))),
        # floor: two real photos of one person (neutral vs smiling) at this resolution
        "other_photo_same_person": _rate(M.identity_distance(e_photo[has_other], e_photo[other[has_other]]))
        if has_other.any() else float("nan"),
        # null: the mean training photo against every test photo
        "null_mean_image_same_person": _rate(M.identity_distance(np.repeat(e_mean, n, 0), e_photo)),
        "swap_same_person_geometry": _rate(M.identity_distance(e_swap, e_photo[gi])),
        "swap_same_person_appearance": _rate(M.identity_distance(e_swap, e_photo[aj])),
        # null: the two sources of a swap are different people
        "null_sources_same_person": _rate(M.identity_distance(e_photo[aj], e_photo[gi])),
        "swap_similarity_geometry": float(np.nanmean(M.identity_similarity(e_swap, e_photo[gi]))),
        "swap_similarity_appearance": float(np.nanmean(M.identity_similarity(e_swap, e_photo[aj]))),
    }

    # Decoded sketches: D_sketch(E_image(photo)) against the dataset sketch of the same face.
    sketch: dict[str, Any] = {}
    decoded = None
    if data.sketches is not None:
        from pipeline.models.editor import MissingSketchDecoderError

        try:
            decoded = np.concatenate([
                to_uint8(editor.sketch_from_geometry(_index(geo, np.arange(a, min(a + bs, n)))).mean(1, keepdim=True))
                for a in range(0, n, bs)])
        except MissingSketchDecoderError as e:  # imported weights: no D_sketch; its gate then fails
            from pipeline.core.progress import console

            console.print(f"[yellow]decoded-sketch metrics skipped: {e}[/yellow]")
    if decoded is not None:
        tol = max(1.0, profile.resolution / 64)  # 2 px at 128, 8 px at 512
        others = np.roll(np.arange(n), 1)
        if nulls.mean_sketch is not None:
            mean_sk = np.broadcast_to(nulls.mean_sketch, data.sketches.shape)
            sketch["null_mean_sketch_fscore"] = float(M.sketch_fscore(mean_sk, data.sketches, tol).mean())
        sketch.update({
            "decoded_fscore": float(M.sketch_fscore(decoded, data.sketches, tol).mean()),
            "null_other_face_fscore": float(M.sketch_fscore(data.sketches[others], data.sketches, tol).mean()),
            "tolerance_px": tol,
        })

    metrics: dict[str, Any] = {
        "n_test": n,
        "n_swaps": len(pairs),
        "recon": {
            "psnr": float(psnr.mean()), "ssim": float(ssim.mean()),
            "null_mean_image_psnr": float(M.psnr(mean_t, photo_t).mean()),
            "null_mean_image_ssim": float(M.ssim(mean_t, photo_t).mean()),
        },
        "landmarks": {
            "photo": nme_photo, "recon": nme_recon,
            "swap_to_geometry": nme_swap, "swap_to_appearance": nme_swap_app,
            "null_mean_face": nme_mean, "null_ignores_geometry": nme_ignores,
            "missed_photo": miss_photo, "missed_recon": miss_recon, "missed_swap": miss_swap,
            "groups": {
                **{f"recon_{g}": v for g, v in _groups(lm_recon, data.landmarks).items()},
                **{f"null_mean_face_{g}": v for g, v in _groups(lm_mean, data.landmarks).items()},
                **{f"swap_{g}": v for g, v in _groups(lm_swap, lm_geo).items()},
                **{f"null_ignores_geometry_{g}": v for g, v in _groups(lm_app, lm_geo).items()},
            },
        },
        "ratios": {
            "recon_over_mean_face": _ratio(nme_recon, nme_mean),
            "swap_over_ignores_geometry": _ratio(nme_swap, nme_ignores),
            "swap_over_mean_face": _ratio(nme_swap, nme_mean),
            "swap_appearance_over_geometry": _ratio(nme_swap_app, nme_swap),
            "drawing_over_own": _ratio(line_drawing["output_to_drawn"], line_drawing["output_to_own"]),
            "drawing_over_ignored": _ratio(line_drawing["output_to_drawn"], line_drawing["null_ignores_drawing"]),
            "sketch_over_mean_sketch": _ratio(sketch.get("decoded_fscore", float("nan")),
                                              sketch.get("null_mean_sketch_fscore", float("nan"))),
        },
        "lab": {
            "recon_to_photo": float(_mean_parts(d_recon).mean()),
            "swap_to_appearance": float(_mean_parts(d_swap_app).mean()),
            "swap_to_geometry": float(_mean_parts(d_swap_geo).mean()),
            "sources_apart": float(_mean_parts(d_src).mean()),
            "swap_follows_appearance": float((_mean_parts(d_swap_app) < _mean_parts(d_swap_geo)).mean()),
            **{f"swap_to_appearance_{p}": float(d_swap_app[p].mean()) for p in PARTS},
            **{f"swap_to_geometry_{p}": float(d_swap_geo[p].mean()) for p in PARTS},
            **{f"recon_to_photo_{p}": float(d_recon[p].mean()) for p in PARTS},
        },
        "identity": identity,
        "sketch": sketch,
        "line_drawing": line_drawing,
    }
    # The same figures out of the studio: the split's faces as other cameras and lights show them.
    from pipeline.evaluation.shifted import shifted_faces_present, shifted_figures

    shifted_pictures = None
    if shifted_faces_present(cfg.shifted, cfg.split):
        shifted = shifted_figures(editor, cfg, cfg.split, nulls, dlib, embedder, device, bs)
        shifted_pictures = shifted.pop("_pictures")
        shifted["psnr_drop"] = float(psnr.mean()) - shifted["pooled"]["psnr"]
        metrics["shifted"] = shifted
    else:  # its gates then fail: a figure that was not measured never passes
        from pipeline.core.progress import console

        console.print(f"[yellow]no {cfg.split} faces in {cfg.shifted}: no shifted figures (`dvc repro shifts`)[/yellow]")
    # Edits, not reconstructions: local redraws, appearance swaps and new drawings, composed
    # into photos larger than the model's faces (the default of every edit path) and pasted whole.
    from pipeline.evaluation.edits import edit_figures, photo_faces

    rows = _source_rows(cfg, cfg.split)
    photos, scale = photo_faces(cfg.aligned, rows, data.faces, cfg.photo_side)
    metrics["edits"], edit_pictures = edit_figures(
        editor, data.faces, data.landmarks, data.identities, photos, scale, _editable_style(), dlib, embedder,
        device, _compose_settings(), bs)
    # FID and LPIPS need weights we neither ship nor download: absent, never a string here.
    metrics["gates"] = M.gates(_json_safe(metrics))

    # Image grids (DVC image plots).
    plots = Path(cfg.plots_dir)
    g = min(cfg.grid_faces, n)
    cells = [im for k in range(g) for im in (data.faces[k], recon[k])]
    save_png(plots / "reconstructions.png", make_grid(cells, nrow=2, col_labels=["photo", "reconstruction"]))
    matrix = np.stack(np.meshgrid(np.arange(g), np.arange(g), indexing="ij"), axis=-1).reshape(-1, 2)
    grid_swaps = _render_pairs(editor, geo, app, matrix, bs, "swap matrix").reshape(g, g, *recon.shape[1:])
    save_png(plots / "swaps.png", swap_matrix_grid(list(data.faces[:g]), list(data.faces[:g]), grid_swaps))
    shown = np.arange(0, len(pairs), max(1, cfg.swaps_per_face))[: 2 * g]  # one pair per geometry source
    pair_cells = [im for k in shown for im in (data.faces[gi[k]], swaps[k], data.faces[aj[k]])]
    save_png(plots / "swap_pairs.png", make_grid(
        pair_cells, nrow=3, col_labels=["geometry source", "swap", "appearance source"]))
    line_cells = [im for k in shown for im in (
        data.faces[gi[k]], np.repeat(drawings[k][..., None], 3, axis=2), drawn_out[k], data.faces[aj[k]])]
    save_png(plots / "line_drawings.png", make_grid(
        line_cells, nrow=4, col_labels=["face A", "B's contours in A's frame", "output", "person B"]))
    sketch_cells = []
    for k in range(g):
        dataset = data.sketches[k] if data.sketches is not None else None
        sketch_cells += [data.faces[k], dataset, decoded[k] if decoded is not None else None]
    save_png(plots / "sketches.png", make_grid(
        sketch_cells, nrow=3, col_labels=["photo", "dataset sketch", "from geometry"]))
    from pipeline.evaluation.edits import edit_sheet

    edit_sheet(edit_pictures, plots / "edits.png", faces=g)
    if shifted_pictures is not None:
        from pipeline.evaluation.shifted import shifted_sheet

        shifted_sheet(*shifted_pictures, plots / "shifted.png")

    metrics = _json_safe(metrics)
    save_json(cfg.metrics_path, metrics)
    return metrics


# Each headline figure with its nulls: (label, model path, [(null label, path)], gate or None).
NULL_TABLE: tuple[tuple[str, str, tuple[tuple[str, str], ...], str | None], ...] = (
    ("reconstruction landmark error (NME)", "landmarks.recon",
     (("photo itself (floor)", "landmarks.photo"), ("training mean face", "landmarks.null_mean_face")),
     "recon_landmarks_vs_mean_face"),
    ("swap landmark error to its geometry source", "landmarks.swap_to_geometry",
     (("appearance source's own ('ignores geometry')", "landmarks.null_ignores_geometry"),
      ("training mean face", "landmarks.null_mean_face")), "swap_follows_geometry"),
    ("swap landmark error to its appearance source", "landmarks.swap_to_appearance",
     (("same swap to its geometry source", "landmarks.swap_to_geometry"),), "swap_not_appearance_shape"),
    ("reconstruction same-person rate (dlib)", "identity.recon_same_person",
     (("a person's other photo (floor)", "identity.other_photo_same_person"),
      ("training mean image", "identity.null_mean_image_same_person")), "recon_same_person"),
    ("swap same-person rate, geometry source", "identity.swap_same_person_geometry",
     (("two different people", "identity.null_sources_same_person"),), None),
    ("swap same-person rate, appearance source", "identity.swap_same_person_appearance",
     (("two different people", "identity.null_sources_same_person"),), None),
    ("swaps closer in colour to the appearance source", "lab.swap_follows_appearance", (), "swap_takes_appearance_colour"),
    ("reconstruction PSNR (dB)", "recon.psnr", (("training mean image", "recon.null_mean_image_psnr"),), None),
    ("reconstruction SSIM", "recon.ssim", (("training mean image", "recon.null_mean_image_ssim"),), None),
    ("decoded sketch F-score", "sketch.decoded_fscore",
     (("training mean sketch", "sketch.null_mean_sketch_fscore"), ("another face's sketch", "sketch.null_other_face_fscore")),
     "decoded_sketch_beats_mean_sketch"),
    ("line drawing of B in A's frame: output to B (NME)", "line_drawing.output_to_drawn",
     (("output to A", "line_drawing.output_to_own"), ("drawing ignored (A's reconstruction to B)", "line_drawing.null_ignores_drawing"),
      ("B to A", "line_drawing.drawn_to_own")), "line_drawing_followed"),
    # Out of the studio: the split's faces under the `shifts` stage's shifts (pooled).
    ("shifted: reconstruction PSNR (dB)", "shifted.pooled.psnr",
     (("the clean faces", "recon.psnr"), ("training mean image", "shifted.pooled.null_mean_image_psnr")),
     "shifted_psnr_within_1db"),
    ("shifted: inner-face colour error of the reconstruction (ΔE)", "shifted.pooled.recon_colour_error",
     (("the same face unshifted (London's light)", "shifted.pooled.clean_vs_shifted_colour"),), "shifted_colour_carried"),
    ("shifted: swaps closer in colour to the appearance photo", "shifted.pooled.swap_follows_appearance", (),
     "shifted_swap_takes_appearance_colour"),
    ("shifted: swap landmark error to its geometry source", "shifted.pooled.landmarks_swap",
     (("appearance source's own ('ignores geometry')", "shifted.pooled.null_ignores_geometry"),
      ("training mean face", "shifted.pooled.null_mean_face")), "shifted_swap_follows_geometry"),
    ("shifted: reconstruction landmark error (NME)", "shifted.pooled.landmarks_recon",
     (("photo itself (floor)", "shifted.pooled.landmarks_photo"), ("training mean face", "shifted.pooled.null_mean_face")), None),
    ("shifted: reconstruction same-person rate (dlib)", "shifted.pooled.recon_same_person", (), None),
)

SHIFT_COLUMNS = (("PSNR", "psnr"), ("mean image PSNR", "null_mean_image_psnr"), ("colour ΔE", "recon_colour_error"),
                 ("unshifted ΔE", "clean_vs_shifted_colour"), ("swap colour follows", "swap_follows_appearance"),
                 ("swap / ignores geometry", "swap_over_ignores_geometry"), ("recon / mean face", "recon_over_mean_face"),
                 ("same person", "recon_same_person"))


def shifted_table_markdown(metrics: dict[str, Any]) -> str:
    """Per-shift figures of an evaluate.json (rows: shifts, then pooled), as a Markdown table."""
    shifted = metrics.get("shifted")
    if not shifted:
        return "(no shifted figures: run `dvc repro shifts` and evaluate again)"
    rows = ["| shift | " + " | ".join(c for c, _ in SHIFT_COLUMNS) + " |", "|---" * (len(SHIFT_COLUMNS) + 1) + "|"]
    groups = {**shifted["per_shift"], "**pooled**": shifted["pooled"]}
    for name, g in groups.items():
        rows.append(f"| {name} | " + " | ".join(_fmt(g, key) for _, key in SHIFT_COLUMNS) + " |")
    return "\n".join(rows)


def _fmt(metrics: dict[str, Any], path: str) -> str:
    """A figure of an evaluate.json for the tables: 3 decimals, n/a when absent or infinite."""
    from pipeline.evaluation.metrics import _lookup

    v = _lookup(metrics, path)
    return "n/a" if v is None or not np.isfinite(v) else f"{v:.3f}"


def _bar(gate: str) -> str:
    """A gate as it reads in the tables, e.g. `recon_over_mean_face <= 0.6`."""
    from pipeline.evaluation.metrics import GATES

    ratio_path, op, value = GATES[gate]
    return f"{ratio_path.split('.')[-1]} {op} {value}"


def null_table_markdown(metrics: dict[str, Any]) -> str:
    """The headline figures of an evaluate.json beside their nulls, as a Markdown table."""
    from pipeline.evaluation.metrics import GATES

    rows = ["| figure | model | nulls | bar | passes |", "|---|---|---|---|---|"]
    gates = metrics.get("gates", {})
    for label, path, nulls, gate in NULL_TABLE:
        null_text = "; ".join(f"{name} {_fmt(metrics, p)}" for name, p in nulls) or "—"
        bar = "—" if gate is None else f"{_bar(gate)} (is {_fmt(metrics, GATES[gate][0])})"
        passed = "—" if gate is None else ("yes" if gates.get(gate) else "**no**")
        rows.append(f"| {label} | {_fmt(metrics, path)} | {null_text} | {bar} | {passed} |")
    return "\n".join(rows)


def compare_table_markdown(runs: dict[str, dict[str, Any]]) -> str:
    """Several evaluate.json (name -> metrics) side by side: one column per run, the nulls
    (once where the runs agree, else per run, in column order), and the bar."""
    from pipeline.evaluation.metrics import GATES

    def passed(m: dict[str, Any], gate: str | None) -> str:
        return "" if gate is None else (" ✓" if m.get("gates", {}).get(gate) else " ✗")

    rows = ["| figure | " + " | ".join(runs) + " | nulls | bar |", "|---" * (len(runs) + 3) + "|"]
    for label, path, nulls, gate in NULL_TABLE:
        values = [_fmt(m, path) + passed(m, gate) for m in runs.values()]
        # Nulls computed from the data are the same in every run on the same faces; those that
        # involve the model (e.g. a drawing ignored = its own reconstruction) are shown per run.
        null_text = "; ".join(f"{name} {' / '.join(dict.fromkeys(_fmt(m, p) for m in runs.values()))}"
                              for name, p in nulls) or "—"
        bar = "—" if gate is None else _bar(gate)
        rows.append(f"| {label} | " + " | ".join(values) + f" | {null_text} | {bar} |")
        if gate is not None and GATES[gate][0] != path:  # the ratio the bar judges, per run
            ratio = GATES[gate][0]
            rows.append(f"| ↳ {ratio.split('.')[-1]} | " + " | ".join(_fmt(m, ratio) for m in runs.values()) + " | | |")
    for gate in sorted(set(GATES) - {g for *_, g in NULL_TABLE}):  # bars with no row of their own
        values = [_fmt(m, GATES[gate][0]) + passed(m, gate) for m in runs.values()]
        rows.append(f"| bar {gate} | " + " | ".join(values) + f" | — | {_bar(gate)} |")
    return "\n".join(rows)


if __name__ == "__main__":
    # python -m pipeline.evaluation.evaluate reports/evaluate.json        (one run beside its nulls)
    # python -m pipeline.evaluation.evaluate old=a.json new=b.json        (runs side by side)
    import json
    import sys

    args = sys.argv[1:] or ["reports/evaluate.json"]
    if len(args) == 1 and "=" not in args[0]:
        from pipeline.evaluation.edits import edits_table_markdown

        one = json.loads(Path(args[0]).read_text())
        print(null_table_markdown(one), shifted_table_markdown(one), edits_table_markdown(one), sep="\n\n")
    else:
        named = dict(a.split("=", 1) if "=" in a else (Path(a).stem, a) for a in args)
        print(compare_table_markdown({k: json.loads(Path(v).read_text()) for k, v in named.items()}))

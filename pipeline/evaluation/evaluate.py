"""evaluate: reconstruction, disentanglement and identity metrics on the test split, plus image grids.

Every figure for geometry/appearance swaps sits beside the same figure for reconstructions,
which is the floor a swap can reach: a swap (geometry of face i, appearance of face j) should
keep i's landmarks about as well as i's reconstruction does, and take j's part colours
(its Lab distance to j below its distance to i).
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

PLOT_FILES = ("reconstructions.png", "swaps.png", "sketches.png")


@dataclass(frozen=True)
class EvalConfig:
    profile: str = "small"
    components: str = "data/components"  # test manifest: rows of the split, `source_row` into aligned
    aligned: str = "data/aligned"  # images.npy (N,R,R,3), landmarks.npy (N,68,2) aligned px
    sketches: str = "data/sketches/sketches.npy"  # (N,R,R) dataset sketches, same rows as aligned
    models_dir: str = "models"
    metrics_path: str = "reports/evaluate.json"
    plots_dir: str = "reports/evaluate"
    max_faces: int = 0  # 0 = the whole test split
    swaps_per_face: int = 2  # appearance donors per geometry source (other identities)
    grid_faces: int = 6  # faces in the image grids (swap matrix is grid_faces^2)
    batch_size: int = 16
    landmark_upsample: int = 1  # dlib detector upsampling: 1 finds the faces of 128 px crops
    device: str = "auto"


@dataclass
class TestSet:
    ids: list[str]
    identities: list[str]
    faces: np.ndarray  # (N,R,R,3) uint8 aligned photos
    landmarks: np.ndarray  # (N,68,2) aligned px
    sketches: np.ndarray | None  # (N,R,R) uint8 dataset sketches


def load_test_set(cfg: EvalConfig, resolution: int) -> TestSet:
    manifest_path = Path(cfg.components) / "test" / "manifest.csv"
    if not manifest_path.exists():
        raise FileNotFoundError(f"{manifest_path} missing: run `dvc repro components` (or `dfe components`)")
    manifest = pd.read_csv(manifest_path, dtype={"identity": str})
    if "source_row" not in manifest.columns:
        raise ValueError(f"{manifest_path} lacks `source_row` (the row in {cfg.aligned}/images.npy)")
    if cfg.max_faces > 0:
        manifest = manifest.iloc[: cfg.max_faces]
    if len(manifest) < 2:
        raise ValueError(f"{manifest_path}: the test split needs at least 2 faces for swaps, has {len(manifest)}")
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


def evaluate(cfg: EvalConfig) -> dict[str, Any]:
    """Run every metric on the test split; write `cfg.metrics_path` and the PNG grids; return the metrics."""
    from pipeline.evaluation import metrics as M
    from pipeline.core.profiles import get_profile
    from pipeline.models.editor import load_editor
    from pipeline.core.viz import make_grid, swap_matrix_grid, to_uint8

    profile = get_profile(cfg.profile)
    device = resolve_device(cfg.device)
    editor = load_editor(cfg.models_dir, profile, device)
    data = load_test_set(cfg, profile.resolution)
    n = len(data.ids)
    bs = cfg.batch_size

    geo, app = encode(editor, data.faces, bs, device, "encode test faces")

    self_pairs = np.stack([np.arange(n), np.arange(n)], axis=1)
    recon = _render_pairs(editor, geo, app, self_pairs, bs, "reconstruct")
    pairs = swap_pairs(data.identities, cfg.swaps_per_face)
    swaps = _render_pairs(editor, geo, app, pairs, bs, "swap")
    gi, aj = pairs[:, 0], pairs[:, 1]

    # Reconstruction fidelity.
    photo_t = faces_to_tensor(data.faces, device)
    recon_t = faces_to_tensor(recon, device)
    psnr = M.psnr(recon_t, photo_t).cpu().numpy()
    ssim = M.ssim(recon_t, photo_t).cpu().numpy()

    # Geometry: landmarks found on the outputs vs the geometry source's landmarks. The same
    # detector on the aligned photos themselves gives the floor (detection noise at this size).
    from pipeline.data.landmarks import DlibBackend

    dlib = DlibBackend(upsample=cfg.landmark_upsample)  # loading it takes ~1.7 s: once
    lm_photo = detect_landmarks(data.faces, dlib, "landmarks: photos")
    lm_recon = detect_landmarks(recon, dlib, "landmarks: reconstructions")
    lm_swap = detect_landmarks(swaps, dlib, "landmarks: swaps")
    nme_photo, miss_photo = _nme(lm_photo, data.landmarks)
    nme_recon, miss_recon = _nme(lm_recon, data.landmarks)
    nme_swap, miss_swap = _nme(lm_swap, data.landmarks[gi])

    # Appearance: per-part mean Lab colour distance (CIE76 dE).
    boxes = editor.boxes
    lab_photo = _lab(data.faces, boxes, device)
    lab_recon = _lab(recon, boxes, device)
    lab_swap = _lab(swaps, boxes, device)
    d_recon = M.lab_stat_distance(lab_recon, lab_photo)
    d_swap_app = M.lab_stat_distance(lab_swap, _rows(lab_photo, aj))
    d_swap_geo = M.lab_stat_distance(lab_swap, _rows(lab_photo, gi))
    d_src = M.lab_stat_distance(_rows(lab_photo, aj), _rows(lab_photo, gi))  # how far apart the sources are

    # Identity: dlib descriptors on the fixed aligned face box.
    embedder = M.DlibFaceEmbedder()
    e_photo = embedder.embed(data.faces, boxes="aligned")
    e_recon = embedder.embed(recon, boxes="aligned")
    e_swap = embedder.embed(swaps, boxes="aligned")

    optional = M.optional_metric_status()
    metrics: dict[str, Any] = {
        "n_test": n,
        "n_swaps": len(pairs),
        "recon": {"psnr": float(psnr.mean()), "ssim": float(ssim.mean())},
        "landmarks": {
            "nme_photo": nme_photo, "nme_recon": nme_recon, "nme_swap": nme_swap,
            "missed_photo": miss_photo, "missed_recon": miss_recon, "missed_swap": miss_swap,
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
        "identity": {
            "recon_similarity": float(np.nanmean(M.identity_similarity(e_recon, e_photo))),
            "recon_distance": float(np.nanmean(M.identity_distance(e_recon, e_photo))),
            "recon_same_person": float(np.nanmean(M.identity_distance(e_recon, e_photo) < 0.6)),
            "swap_similarity_geometry": float(np.nanmean(M.identity_similarity(e_swap, e_photo[gi]))),
            "swap_similarity_appearance": float(np.nanmean(M.identity_similarity(e_swap, e_photo[aj]))),
        },
        "fid": optional["fid"],
        "lpips": optional["lpips"],
    }

    # Image grids (DVC image plots).
    plots = Path(cfg.plots_dir)
    g = min(cfg.grid_faces, n)
    cells = [im for k in range(g) for im in (data.faces[k], recon[k])]
    save_png(plots / "reconstructions.png", make_grid(cells, nrow=2, col_labels=["photo", "reconstruction"]))
    matrix = np.stack(np.meshgrid(np.arange(g), np.arange(g), indexing="ij"), axis=-1).reshape(-1, 2)
    grid_swaps = _render_pairs(editor, geo, app, matrix, bs, "swap matrix").reshape(g, g, *recon.shape[1:])
    save_png(plots / "swaps.png", swap_matrix_grid(list(data.faces[:g]), list(data.faces[:g]), grid_swaps))
    # Sketches are one channel (replicated to 3 for the encoders): show the channel mean.
    decoded = to_uint8(editor.sketch_from_geometry(_index(geo, np.arange(g))).mean(dim=1, keepdim=True))
    sketch_cells = []
    for k in range(g):
        dataset = data.sketches[k] if data.sketches is not None else None
        sketch_cells += [data.faces[k], dataset, decoded[k]]
    save_png(plots / "sketches.png", make_grid(
        sketch_cells, nrow=3, col_labels=["photo", "dataset sketch", "from geometry"]))

    metrics = _json_safe(metrics)
    save_json(cfg.metrics_path, metrics)
    return metrics

"""The headline figures on faces shifted the way real photos differ (`data/shifted`, the
`shifts` stage): `val_shifted` / `test_shifted`, pooled and per shift, beside the same nulls.

- reconstruction PSNR/SSIM against the *shifted* photo (a model must reproduce the photo's
  own colours and light, not London's), beside the training mean image;
- inner-face colour error: Lab ΔE between the mean colours of the reconstruction's inner face
  and the shifted photo's, beside the distance of the shifted photo from the same face clean
  (what a model that renders London's light would score at best);
- swaps between shifted faces: geometry of one face under one shift, appearance of another
  person under the next shift, so the appearance photo's light differs from the geometry
  photo's: landmarks to the geometry source beside "ignores geometry", and the share of swaps
  closer in colour to the appearance photo;
- identity: dlib same-person rate of the reconstruction against the shifted photo.
Per-shift figures group reconstructions by their photo's shift and swaps by the appearance
photo's shift (what the swap has to carry).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core.io import load_npy


def load_shifted(shifted_dir: str | Path, split: str, max_faces: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    """(manifest, shifted faces, registered clean faces, landmarks) of one split; max_faces
    keeps the first N source faces (under every shift)."""
    d = Path(shifted_dir)
    if not (d / "manifest.csv").exists():
        raise FileNotFoundError(f"{d}/manifest.csv missing: run `dvc repro shifts` (or `dfe shifts`)")
    man = pd.read_csv(d / "manifest.csv", dtype={"id": str, "identity": str})
    sel = man[man["split"] == split]
    if max_faces > 0:
        sel = sel[sel["id"].isin(list(dict.fromkeys(sel["id"]))[:max_faces])]
    rows = sel["row"].to_numpy(np.int64)
    return (sel.reset_index(drop=True), np.asarray(load_npy(d / "images.npy")[rows]),
            np.asarray(load_npy(d / "clean.npy")[rows]), np.asarray(load_npy(d / "landmarks.npy")[rows], np.float64))


def shifted_faces_present(shifted_dir: str | Path, split: str) -> bool:
    """Whether the `shifts` stage left at least two faces of `split` (enough for a swap)."""
    path = Path(shifted_dir) / "manifest.csv"
    return path.exists() and int((pd.read_csv(path, usecols=["split"])["split"] == split).sum()) >= 2


def shifted_pairs(manifest: pd.DataFrame) -> np.ndarray:
    """(P,2) swaps (geometry item, appearance item): each item's appearance comes from the next
    face of another person, under the next shift (cyclically), so lights differ."""
    shifts = list(dict.fromkeys(manifest["shift"]))
    by_shift = {s: manifest.index[manifest["shift"] == s].to_numpy() for s in shifts}
    pairs = []
    for i, rec in manifest.iterrows():
        nxt = by_shift[shifts[(shifts.index(rec["shift"]) + 1) % len(shifts)]]
        start = int(np.searchsorted(nxt, i))
        for k in range(len(nxt)):
            j = nxt[(start + k) % len(nxt)]
            if manifest.at[j, "identity"] != rec["identity"]:
                pairs.append((i, j))
                break
    if not pairs:
        raise ValueError("the shifted split has a single identity: no swaps possible")
    return np.asarray(pairs, np.int64)


def inner_lab_means(images: np.ndarray, landmarks: np.ndarray, device) -> np.ndarray:
    """(N,3) mean CIE Lab colour of each face's inner face (editing.blend.inner_face_mask)."""
    import torch

    from pipeline.editing.blend import inner_face_mask
    from pipeline.evaluation.metrics import _lab_batch

    out = np.empty((len(images), 3))
    r = images.shape[1]
    for a in range(0, len(images), 64):
        lab = _lab_batch(images[a:a + 64], device)
        masks = torch.from_numpy(np.stack([inner_face_mask(lm, r) > 0.5 for lm in landmarks[a:a + 64]])).to(lab.device)
        w = masks[:, None].float()
        out[a:a + 64] = ((lab * w).sum((2, 3)) / w.sum((2, 3)).clamp_min(1)).double().cpu().numpy()
    return out


def _group(idx: np.ndarray, v: dict[str, np.ndarray]) -> dict[str, float]:
    """Figures of one group of items (recon arrays indexed by item, swap arrays by pair)."""
    from pipeline.evaluation.evaluate import _rate, _ratio
    from pipeline.evaluation.metrics import finite_mean as mean

    r, s = idx["recon"], idx["swap"]
    d = {
        "psnr": mean(v["psnr"][r]), "ssim": mean(v["ssim"][r]),
        "null_mean_image_psnr": mean(v["null_psnr"][r]),
        "recon_colour_error": mean(v["recon_de"][r]), "clean_vs_shifted_colour": mean(v["shift_de"][r]),
        "landmarks_recon": mean(v["nme_recon"][r]), "landmarks_photo": mean(v["nme_photo"][r]),
        "null_mean_face": mean(v["nme_mean"][r]),
        "landmarks_swap": mean(v["nme_swap"][s]), "null_ignores_geometry": mean(v["nme_ignores"][s]),
        "swap_follows_appearance": mean(v["follows"][s].astype(float)),
        "recon_same_person": _rate(v["id_dist"][r]),
    }
    d["recon_colour_over_shift"] = _ratio(d["recon_colour_error"], d["clean_vs_shifted_colour"])
    d["swap_over_ignores_geometry"] = _ratio(d["landmarks_swap"], d["null_ignores_geometry"])
    d["recon_over_mean_face"] = _ratio(d["landmarks_recon"], d["null_mean_face"])
    return d


def shifted_figures(editor, cfg, split: str, nulls, dlib, embedder, device, batch_size: int) -> dict[str, Any]:
    """Every figure above on `<split>_shifted`, pooled and per shift."""
    from pipeline.core.tensors import faces_to_tensor
    from pipeline.data.landmarks import detect_landmarks
    from pipeline.evaluation import metrics as M
    from pipeline.evaluation.evaluate import _render_pairs, _rows, _mean_parts
    from pipeline.models.editor import encode

    man, faces, clean, lm = load_shifted(cfg.shifted, split, cfg.max_faces)
    n = len(man)
    if n < 2:
        raise ValueError(f"{cfg.shifted}: the {split} split has {n} shifted faces; run `dvc repro shifts`")
    geo, app = encode(editor, faces, batch_size, device, f"encode {split}_shifted")
    recon = _render_pairs(editor, geo, app, np.stack([np.arange(n)] * 2, 1), batch_size, "reconstruct shifted")
    pairs = shifted_pairs(man)
    swaps = _render_pairs(editor, geo, app, pairs, batch_size, "swap shifted")
    gi, aj = pairs[:, 0], pairs[:, 1]

    photo_t, recon_t = faces_to_tensor(faces, device), faces_to_tensor(recon, device)
    mean_t = faces_to_tensor(np.ascontiguousarray(np.broadcast_to(nulls.mean_image, faces.shape)), device)
    lm_recon = detect_landmarks(recon, dlib, "landmarks: shifted reconstructions")
    lm_swap = detect_landmarks(swaps, dlib, "landmarks: shifted swaps")
    lm_photo = detect_landmarks(faces, dlib, "landmarks: shifted photos")
    lm_mean = np.broadcast_to(nulls.mean_face, lm.shape)
    boxes = editor.boxes
    lab_photo, lab_swap = M.part_lab_stats(faces, boxes, device=device), M.part_lab_stats(swaps, boxes, device=device)
    to_app = _mean_parts(M.lab_stat_distance(lab_swap, _rows(lab_photo, aj)))
    to_geo = _mean_parts(M.lab_stat_distance(lab_swap, _rows(lab_photo, gi)))
    inner_photo, inner_recon, inner_clean = (inner_lab_means(x, lm, device) for x in (faces, recon, clean))
    e_photo, e_recon = embedder.embed(faces, boxes="aligned"), embedder.embed(recon, boxes="aligned")
    values = {
        "psnr": M.psnr(recon_t, photo_t).cpu().numpy(), "ssim": M.ssim(recon_t, photo_t).cpu().numpy(),
        "null_psnr": M.psnr(mean_t, photo_t).cpu().numpy(),
        "recon_de": np.linalg.norm(inner_recon - inner_photo, axis=1),
        "shift_de": np.linalg.norm(inner_clean - inner_photo, axis=1),
        "nme_recon": M.landmark_nme(lm_recon, lm), "nme_photo": M.landmark_nme(lm_photo, lm),
        "nme_mean": M.landmark_nme(lm_mean, lm),
        "nme_swap": M.landmark_nme(lm_swap, lm[gi]), "nme_ignores": M.landmark_nme(lm[aj], lm[gi]),
        "follows": to_app < to_geo,
        "id_dist": M.identity_distance(e_recon, e_photo),
    }
    out: dict[str, Any] = {"split": f"{split}_shifted", "n": n, "n_swaps": len(pairs),
                           "pooled": _group({"recon": np.arange(n), "swap": np.arange(len(pairs))}, values)}
    shift_of = man["shift"].to_numpy()
    out["per_shift"] = {s: _group({"recon": np.flatnonzero(shift_of == s),
                                   "swap": np.flatnonzero(shift_of[aj] == s)}, values)
                        for s in dict.fromkeys(shift_of)}
    out["_pictures"] = (man, faces, recon, swaps, pairs)  # for the sheet; dropped before saving
    return out


def shifted_sheet(man: pd.DataFrame, faces: np.ndarray, recon: np.ndarray, swaps: np.ndarray, pairs: np.ndarray,
                  path: str | Path, per_shift: int = 1) -> np.ndarray:
    """One row per shift: shifted photo, its reconstruction, appearance photo, the swap."""
    from pipeline.core.io import save_png
    from pipeline.core.viz import make_grid

    cells, labels = [], []
    for s in dict.fromkeys(man["shift"]):
        for k in np.flatnonzero(man["shift"].to_numpy() == s)[:per_shift]:
            p = int(np.flatnonzero(pairs[:, 0] == k)[0])
            cells += [faces[k], recon[k], faces[pairs[p, 1]], swaps[p]]
            labels.append(s)
    sheet = make_grid(cells, nrow=4, row_labels=labels,
                      col_labels=["shifted photo", "reconstruction", "appearance photo", "swap"])
    save_png(path, sheet)
    return sheet


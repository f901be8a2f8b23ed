"""Edits, not reconstructions: what a user does with the models, measured on the split's faces
for the composed output (editing.compose, the default of every edit path) and for the full
render pasted (`--render full`), each beside its nulls.

Each face is edited as a photo larger than the model's faces (`photo_side` px, aligned from
its original file), so that keeping the photo's own pixels can show.

- **local edits**: on the face's own editable sketch (drawn as `dfe sketch` draws it), one
  feature (mouth; eyes; nose; jaw line) is erased and another person's contour of it drawn in
  its place, moved into the face by a similarity fit on the landmarks that stay. Reported: the
  feature's landmark error to the drawn shape and to the photo's own (null: the unedited
  photo, an edit that was ignored), the error of all other landmarks (null: 0; floor: dlib on
  the photo itself), dlib same-person rate to the photo, and PSNR outside the edited region.
- **appearance swaps**: the photo with another person's appearance codes: the share of swaps
  whose inner-face colour is nearer the appearance photo's than the geometry photo's, and the
  same-person rate to the geometry photo.
- **whole new drawings**: another person's landmarks drawn in a style the encoders never
  trained on (jittered splines of varying width, with a hairline and ears); the output's
  landmarks against the drawing and against the photo.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

FEATURES: dict[str, tuple[int, ...]] = {
    "mouth": tuple(range(48, 68)),
    "eyes": tuple(range(36, 48)),
    "nose": tuple(range(27, 36)),
    "jaw": tuple(range(0, 17)),
}
# The contour strokes (pipeline.data.sketch.contours.STROKES) that draw each feature.
# Which of the editable sketch's landmark strokes (pipeline.data.sketch.draw.feature_strokes:
# jaw, two brows, upper and lower lid of each eye, nose, outer and inner lips) draw a feature.
_FEATURE_STROKES = {"jaw": (0,), "eyes": (3, 4, 5, 6), "nose": (7,), "mouth": (8, 9)}


@dataclass
class LocalEdit:
    sketch: np.ndarray  # (R,R) uint8: the edited sketch
    drawn: np.ndarray  # (68,2): the face's landmarks with the feature replaced by the drawn one
    region: np.ndarray  # (R,R) bool: the erased and drawn area (the edited region)


def _feature_area(lm: np.ndarray, feature: str, r: int, grow: float) -> np.ndarray:
    """(R,R) bool around a feature's landmarks (hulls; a band along the jaw), grown by grow x R."""
    area = np.zeros((r, r), np.uint8)
    if feature == "jaw":
        cv2.polylines(area, [np.round(lm[0:17]).astype(np.int32)], False, 1, max(1, round(2 * grow * r)))
    else:
        groups = [lm[36:42], lm[42:48]] if feature == "eyes" else [lm[list(FEATURES[feature])]]
        for pts in groups:
            cv2.fillConvexPoly(area, cv2.convexHull(np.round(pts).astype(np.int32)), 1)
    k = 2 * max(1, round(grow * r)) + 1
    return cv2.dilate(area, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))).astype(bool)


def local_edit(sketch: np.ndarray, own: np.ndarray, other: np.ndarray, feature: str, style=None) -> LocalEdit:
    """Erase `feature` from a face's sketch and draw `other` person's contour of it, moved into
    the face by the similarity that best maps the other's remaining landmarks onto `own`,
    with the editable sketch's own pen (its landmark strokes in `style`, a SketchStyle), as a
    person redrawing that feature on the sketch would."""
    from pipeline.data.sketch.draw import REF_RES, SketchStyle, feature_strokes, render_strokes

    r = sketch.shape[0]
    idx = list(FEATURES[feature])
    stay = [k for k in range(68) if k not in idx]
    m, _ = cv2.estimateAffinePartial2D(other[stay].astype(np.float32), own[stay].astype(np.float32), method=cv2.LMEDS)
    if m is None:
        raise ValueError("no similarity fits these landmarks")
    drawn = own.astype(np.float64).copy()
    drawn[idx] = other[idx] @ m[:, :2].T + m[:, 2]
    erase = _feature_area(own, feature, r, 0.025) | _feature_area(drawn, feature, r, 0.025)
    edited = sketch.copy()
    edited[erase] = 255
    style = style or SketchStyle()
    strokes = feature_strokes(drawn[None])[0]
    pen = style.width * style.feature_width * r / REF_RES
    ink = render_strokes([strokes[k].scaled(pen) for k in _FEATURE_STROKES[feature]], r, style.taper)
    return LocalEdit(np.minimum(edited, ink), drawn, erase | _feature_area(drawn, feature, r, 0.0))


def unseen_style_drawing(lm: np.ndarray, r: int, rng: np.random.Generator) -> np.ndarray:
    """(R,R) uint8: landmarks drawn as a person might, in a style the encoders never saw:
    jittered Catmull-Rom splines of varying width through the contours, plus a hairline arc
    over the brows and an ear on each side."""
    from pipeline.data.sketch.contours import STROKES

    out = np.full((r, r), 255, np.uint8)
    jitter = 0.004 * r

    def spline(pts: np.ndarray, closed: bool) -> np.ndarray:
        p = pts + rng.normal(0, jitter, pts.shape)
        if closed:
            p = np.concatenate([p[-1:], p, p[:2]])
        else:
            p = np.concatenate([p[:1], p, p[-1:]])
        t = np.linspace(0, 1, 8, endpoint=False)[:, None]
        seg = [0.5 * ((2 * p[i]) + (-p[i - 1] + p[i + 1]) * t + (2 * p[i - 1] - 5 * p[i] + 4 * p[i + 1] - p[i + 2]) * t ** 2
                      + (-p[i - 1] + 3 * p[i] - 3 * p[i + 1] + p[i + 2]) * t ** 3) for i in range(1, len(p) - 2)]
        return np.concatenate(seg + [p[-2:-1]])

    def stroke(curve: np.ndarray) -> None:
        widths = np.clip(rng.normal(1.0, 0.35, len(curve)), 0.4, 1.8) * max(1.0, r / 96)
        for (a, b, w) in zip(curve[:-1], curve[1:], widths):
            cv2.line(out, tuple(np.round(a * 16).astype(int)), tuple(np.round(b * 16).astype(int)), 0,
                     max(1, int(round(w))), cv2.LINE_AA, 4)

    for a, b, closed in STROKES:
        stroke(spline(lm[a:b + 1], closed))
    jaw_w = lm[16, 0] - lm[0, 0]
    brow_y = lm[17:27, 1].min()
    centre = np.array([(lm[0, 0] + lm[16, 0]) / 2, brow_y - 0.05 * jaw_w])
    hair = np.stack([centre + np.array([np.cos(t) * 0.62 * jaw_w, -np.sin(t) * 0.45 * jaw_w])
                     for t in np.linspace(0.15, np.pi - 0.15, 12)])
    stroke(spline(hair, False))
    for side, k in ((-1, 0), (1, 16)):
        top, h = lm[k] + np.array([0.0, -0.02 * jaw_w]), 0.22 * jaw_w
        ear = np.stack([top + np.array([side * np.sin(t) * 0.07 * jaw_w, h * (1 - np.cos(t)) / 2])
                        for t in np.linspace(0, np.pi, 7)])
        stroke(spline(ear, False))
    return out


def photo_faces(aligned_dir: str | Path, rows: np.ndarray, faces: np.ndarray, side: int) -> tuple[np.ndarray, float]:
    """The faces as photos larger than the model's (N,S,S,3) and the scale S/R: re-aligned from
    their original files at `side` px when data/aligned records them, else the aligned faces."""
    import pandas as pd

    from pipeline.core.io import ImageDecodeError, load_npy
    from pipeline.data.align import warp_photo

    r = faces.shape[1]
    d = Path(aligned_dir)
    k = max(1, side // r)
    if k == 1 or not (d / "transforms.npy").exists() or not (d / "manifest.csv").exists():
        return faces, 1.0
    man = pd.read_csv(d / "manifest.csv").set_index("row")
    if "path" not in man.columns:
        return faces, 1.0
    transforms = load_npy(d / "transforms.npy")
    out = np.empty((len(rows), k * r, k * r, 3), np.uint8)
    from pipeline.core.io import image_size

    missing = []
    for i, row in enumerate(rows):
        path = str(man.at[int(row), "path"])
        try:
            w, h = image_size(path)
            out[i] = warp_photo(path, transforms[int(row)] * k, k * r, min(w, h))
        except (ImageDecodeError, OSError):  # the original moved: the aligned face, upsampled
            out[i] = cv2.resize(faces[i], (k * r, k * r), interpolation=cv2.INTER_CUBIC)
            missing.append(path)
    if missing:  # the edit figures then measure those faces at the model's resolution, upsampled
        from pipeline.core.progress import console

        console.print(f"[yellow]{len(missing)} of {len(rows)} original photos unreadable (first: {missing[0]}); "
                      f"those faces are edited as their aligned {r} px crops, upsampled[/yellow]", soft_wrap=True)
    return out, float(k)


def _psnr_outside(a: np.ndarray, b: np.ndarray, keep: np.ndarray) -> float:
    diff = (a.astype(np.float64) - b.astype(np.float64))[keep]
    mse = float((diff ** 2).mean()) if diff.size else 0.0
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def edit_figures(editor, faces: np.ndarray, landmarks: np.ndarray, identities: list[str], photos: np.ndarray,
                 scale: float, style, dlib, embedder, device, settings, batch_size: int = 16,
                 seed: int = 0) -> tuple[dict[str, Any], dict[str, Any]]:
    """Local edits, appearance swaps and new drawings of every face; (metrics, pictures)."""
    from pipeline.core.tensors import faces_to_tensor, tensor_to_faces
    from pipeline.data.landmarks import detect_landmarks
    from pipeline.data.sketch.synthesis import synthesize_sketches
    from pipeline.editing.blend import face_region_mask, inner_face_mask
    from pipeline.editing.compose import compose, photo_colour_shift
    from pipeline.editing.edit import AlignedFace, _sketch_tensor, paste_edited
    from pipeline.evaluation import metrics as M
    from pipeline.evaluation.evaluate import _rate
    from pipeline.evaluation.shifted import inner_lab_means

    n, r = len(faces), faces.shape[1]
    s = photos.shape[1]
    t_photo = np.array([[1 / scale, 0, 0], [0, 1 / scale, 0]])  # photo px -> aligned px
    own_sketch = synthesize_sketches(faces, landmarks.astype(np.float32), style, seed=0, device=device)
    codes = editor.appearance_codes(faces_to_tensor(faces, device))
    geo_photo = editor.geometry_from_photo(faces_to_tensor(faces, device))
    other = [next((i + k) % n for k in range(1, n) if identities[(i + k) % n] != identities[i]) for i in range(n)]

    def renders(sketches: np.ndarray, idx: np.ndarray) -> np.ndarray:
        out = []
        for a in range(0, len(idx), batch_size):
            sk = torch.cat([_sketch_tensor(x, device) for x in sketches[a:a + batch_size]])
            geo = editor.geometry_from_sketch(sk)
            c = {p: v[torch.as_tensor(idx[a:a + batch_size], device=v.device)] for p, v in codes.items()}
            out.append(tensor_to_faces(editor.render(geo, c)))
        return np.concatenate(out)

    def full(i: int, render: np.ndarray, own: bool = True) -> np.ndarray:
        target = AlignedFace(photos[i], faces[i], t_photo, landmarks[i])
        return paste_edited(target, render, own_colours=own)

    base = renders(own_sketch, np.arange(n))
    regions = [face_region_mask(landmarks[i], r) for i in range(n)]  # where a geometry edit may move the photo
    inner = [inner_face_mask(landmarks[i], r, feather=settings.feather) for i in range(n)]  # where the renders may add
    if s >= 256 and dlib.upsample > 0:  # photo-sized faces need no upsampling (and take 4x longer with it)
        dlib = dlib.copy()
        dlib.upsample = 0
    lm_photo = detect_landmarks(photos, dlib, "landmarks: edit photos") / scale
    e_photo = embedder.embed(photos, boxes="aligned")

    # -- local edits
    metrics: dict[str, Any] = {"n_faces": n, "photo_side": s}
    pictures: dict[str, Any] = {}
    local: dict[str, dict[str, dict[str, float]]] = {"compose": {}, "full": {}}
    null_local: dict[str, dict[str, float]] = {}
    all_rows: dict[str, list] = {"compose": [], "full": []}
    for feature, idx in FEATURES.items():
        edits = [local_edit(own_sketch[i], landmarks[i], landmarks[other[i]], feature, style) for i in range(n)]
        r1 = renders(np.stack([e.sketch for e in edits]), np.arange(n))
        outs = {"compose": np.stack([compose(photos[i], t_photo, geometry=(base[i], r1[i]),
                                             sketches=(own_sketch[i], edits[i].sketch), within=regions[i],
                                             residual_within=inner[i], settings=settings) for i in range(n)]),
                "full": np.stack([full(i, r1[i]) for i in range(n)])}
        drawn = np.stack([e.drawn for e in edits])
        rest = [k for k in range(68) if k not in idx]
        null_local[feature] = {
            "photo_to_drawn": float(np.nanmean(M.landmark_nme(lm_photo, drawn, idx))),
            "photo_to_own": float(np.nanmean(M.landmark_nme(lm_photo, landmarks, idx))),
            "photo_others": float(np.nanmean(M.landmark_nme(lm_photo, landmarks, rest))),
            "drawn_to_own": float(np.nanmean(M.landmark_nme(drawn, landmarks, idx))),
        }
        for kind, out in outs.items():
            lm_out = detect_landmarks(out, dlib, f"landmarks: {feature} edits ({kind})") / scale
            dist = M.identity_distance(embedder.embed(out, boxes="aligned"), e_photo)
            keep = [~cv2.resize(cv2.dilate(e.region.astype(np.uint8), np.ones((9, 9), np.uint8)), (s, s),
                                interpolation=cv2.INTER_NEAREST).astype(bool) for e in edits]
            psnr = np.array([_psnr_outside(out[i], photos[i], keep[i]) for i in range(n)])
            row = {
                "feature_to_drawn": M.landmark_nme(lm_out, drawn, idx),
                "feature_to_own": M.landmark_nme(lm_out, landmarks, idx),
                "others_to_own": M.landmark_nme(lm_out, landmarks, rest),
                "distance": dist, "psnr_outside": np.minimum(psnr, 99.0),
            }
            all_rows[kind].append(row)
            local[kind][feature] = _summary(row)
        if feature == "mouth":
            pictures["local"] = (photos, own_sketch, np.stack([e.sketch for e in edits]), outs["full"], outs["compose"])
    for kind in local:
        pooled = {k: np.concatenate([row[k] for row in all_rows[kind]]) for k in all_rows[kind][0]}
        local[kind]["pooled"] = _summary(pooled)
    null_local["pooled"] = {k: float(np.mean([null_local[f][k] for f in FEATURES])) for k in null_local["mouth"]}
    null_local["pooled"]["photo_over_own"] = null_local["pooled"]["photo_to_drawn"] / null_local["pooled"]["photo_to_own"]
    metrics["local"] = {**local, "nulls": null_local}

    # -- appearance swaps: geometry of face i (its photo), appearance of face other[i]
    idx_other = torch.as_tensor(other, device=device)
    swap_codes = {p: v.index_select(0, idx_other) for p, v in codes.items()}
    a0 = tensor_to_faces(editor.render(geo_photo, codes))
    a1 = tensor_to_faces(editor.render(geo_photo, swap_codes))
    photo_lm = landmarks * scale
    swaps = {"compose": np.stack([compose(photos[i], t_photo, appearance=(a0[i], a1[i]), inner_mask=inner[i],
                                          colour_shift=photo_colour_shift(faces[i], {"bg": faces[other[i]]}, editor.boxes)[0],
                                          settings=settings) for i in range(n)]),
             "full": np.stack([full(i, a1[i], own=False) for i in range(n)])}
    lab_photo = inner_lab_means(photos, photo_lm, device)
    lab_other = lab_photo[other]
    metrics["swap"] = {"nulls": {"sources_apart": float(np.linalg.norm(lab_photo - lab_other, axis=1).mean()),
                                 "sources_same_person": _rate(M.identity_distance(e_photo, e_photo[other]))}}
    for kind, out in swaps.items():
        lab = inner_lab_means(out, photo_lm, device)
        to_app, to_geo = np.linalg.norm(lab - lab_other, axis=1), np.linalg.norm(lab - lab_photo, axis=1)
        e = embedder.embed(out, boxes="aligned")
        metrics["swap"][kind] = {"follows_appearance": float((to_app < to_geo).mean()),
                                 "colour_to_appearance": float(to_app.mean()), "colour_to_geometry": float(to_geo.mean()),
                                 "same_person_geometry": _rate(M.identity_distance(e, e_photo)),
                                 "same_person_appearance": _rate(M.identity_distance(e, e_photo[other]))}
    pictures["swap"] = (photos, swaps["full"], swaps["compose"], photos[other])

    # -- whole new drawings in an unseen style
    from pipeline.data.sketch.contours import warp_into_frame

    rng = np.random.default_rng(seed)
    drawn_lm = np.stack([warp_into_frame(landmarks[other[i]], landmarks[i]) for i in range(n)])
    drawings = np.stack([unseen_style_drawing(drawn_lm[i], r, rng) for i in range(n)])
    r1 = renders(drawings, np.arange(n))
    outs = {"compose": np.stack([compose(photos[i], t_photo, geometry=(base[i], r1[i]),
                                         sketches=(own_sketch[i], drawings[i]), within=regions[i],
                                         residual_within=inner[i], settings=settings)
                                 for i in range(n)]),
            "full": np.stack([full(i, r1[i]) for i in range(n)])}
    metrics["drawing"] = {"nulls": {"drawn_to_own": float(np.nanmean(M.landmark_nme(drawn_lm, landmarks))),
                                    "photo_to_drawn": float(np.nanmean(M.landmark_nme(lm_photo, drawn_lm)))}}
    for kind, out in outs.items():
        lm_out = detect_landmarks(out, dlib, f"landmarks: new drawings ({kind})") / scale
        to_drawn, to_own = M.landmark_nme(lm_out, drawn_lm), M.landmark_nme(lm_out, landmarks)
        metrics["drawing"][kind] = {"to_drawn": float(np.nanmean(to_drawn)), "to_own": float(np.nanmean(to_own)),
                                    "drawn_over_own": float(np.nanmean(to_drawn) / np.nanmean(to_own)),
                                    "missed": int(np.isnan(to_drawn).sum())}
    pictures["drawing"] = (photos, drawings, outs["full"], outs["compose"])
    return metrics, pictures


def _summary(row: dict[str, np.ndarray]) -> dict[str, float]:
    from pipeline.evaluation.evaluate import _rate
    from pipeline.evaluation.metrics import finite_mean as mean

    out = {k: mean(row[k]) for k in ("feature_to_drawn", "feature_to_own", "others_to_own", "psnr_outside")}
    out["same_person"] = _rate(row["distance"])
    out["missed"] = int(np.isnan(row["feature_to_drawn"]).sum())
    out["feature_over_own"] = out["feature_to_drawn"] / out["feature_to_own"] if out["feature_to_own"] else float("nan")
    return out


def edit_sheet(pictures: dict[str, Any], path: str | Path, faces: int = 4) -> np.ndarray:
    """Local mouth edits at the photo's size: photo, its sketch, the edited sketch, the full
    render pasted, the composed output; then new drawings and appearance swaps."""
    from pipeline.core.io import save_png
    from pipeline.core.viz import make_grid

    photos, own, edited, full, composed = pictures["local"]
    s = photos.shape[1]
    up = lambda sk: np.repeat(cv2.resize(sk, (s, s), interpolation=cv2.INTER_NEAREST)[..., None], 3, 2)  # noqa: E731
    k = min(faces, len(photos))
    cells = [im for i in range(k) for im in (photos[i], up(own[i]), up(edited[i]), full[i], composed[i])]
    ph, drawings, dfull, dcomp = pictures["drawing"]
    cells += [im for i in range(min(2, k)) for im in (ph[i], up(own[i]), up(drawings[i]), dfull[i], dcomp[i])]
    ph, sfull, scomp, donor = pictures["swap"]
    cells += [im for i in range(min(2, k)) for im in (ph[i], donor[i], None, sfull[i], scomp[i])]
    sheet = make_grid(cells, nrow=5, col_labels=["photo", "its sketch", "edited / drawing / donor", "full render",
                                                 "composed (default)"])
    save_png(path, sheet)
    return sheet


def _f(metrics: dict[str, Any], path: str) -> str:
    node: Any = metrics
    for k in path.split("."):
        node = node.get(k) if isinstance(node, dict) else None
    return "n/a" if node is None or not np.isfinite(node) else f"{node:.3f}"


EDIT_ROWS = (
    # (label, path under edits.* with KIND for compose/full, nulls (label, path), bar)
    ("local edit: feature to the drawn shape (NME)", "local.KIND.pooled.feature_to_drawn",
     (("unedited photo (the edit ignored)", "local.nulls.pooled.photo_to_drawn"),), None),
    ("local edit: feature to the photo's own", "local.KIND.pooled.feature_to_own",
     (("unedited photo (dlib floor)", "local.nulls.pooled.photo_to_own"), ("drawn shape", "local.nulls.pooled.drawn_to_own")), None),
    ("↳ feature_over_own", "local.KIND.pooled.feature_over_own",
     (("unedited photo", "local.nulls.pooled.photo_over_own"),), "feature_over_own <= 0.6"),
    ("local edit: other landmarks moved (NME)", "local.KIND.pooled.others_to_own",
     (("null 0; unedited photo (dlib floor)", "local.nulls.pooled.photo_others"),), None),
    ("local edit: same person (dlib)", "local.KIND.pooled.same_person", (), "same_person >= 0.9"),
    ("local edit: PSNR outside the edited region (dB)", "local.KIND.pooled.psnr_outside", (), "psnr_outside >= 35"),
    ("appearance swap: colour nearer the appearance photo", "swap.KIND.follows_appearance", (), "follows_appearance >= 0.9"),
    ("appearance swap: same person as the geometry photo", "swap.KIND.same_person_geometry",
     (("two different people", "swap.nulls.sources_same_person"),), "same_person_geometry >= 0.6"),
    ("new drawing (unseen style): landmarks to the drawing", "drawing.KIND.to_drawn",
     (("unedited photo", "drawing.nulls.photo_to_drawn"),), None),
    ("↳ drawn_over_own", "drawing.KIND.drawn_over_own", (), None),
)


def edits_table_markdown(metrics: dict[str, Any]) -> str:
    """The edit figures of an evaluate.json: composed (the default) and full render, beside their nulls."""
    e = metrics.get("edits")
    if not e:
        return "(no edit figures)"
    rows = ["| edit figure | composed (default) | full render | nulls | bar |", "|---|---|---|---|---|"]
    for label, path, nulls, bar in EDIT_ROWS:
        null_text = "; ".join(f"{n} {_f(e, p)}" for n, p in nulls) or "—"
        rows.append(f"| {label} | {_f(e, path.replace('KIND', 'compose'))} | {_f(e, path.replace('KIND', 'full'))} "
                    f"| {null_text} | {bar or '—'} |")
    for feature in FEATURES:
        rows.append(f"| {feature}: to drawn / to own / same person | "
                    + " | ".join(" / ".join(_f(e, f"local.{kind}.{feature}.{k}") for k in
                                            ("feature_to_drawn", "feature_to_own", "same_person"))
                                 for kind in ("compose", "full"))
                    + f" | unedited {_f(e, f'local.nulls.{feature}.photo_to_drawn')} / "
                      f"{_f(e, f'local.nulls.{feature}.photo_to_own')} | — |")
    return "\n".join(rows)

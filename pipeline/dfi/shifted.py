"""The smile off the studio: the dfi stage's test edit on photos under other lights and cameras.

Every London photo shares the training faces' studio. `photo_size` measures the smile on
those photos only, so it says little about a user's photo. Here each test face's photo is
re-created under the shifts of ordinary photos (`pipeline.data.shifts`: colour casts,
exposure, a side light, another backdrop, blur + JPEG, sensor noise, another framing, a phone
photo), at the photo-size canvas, then treated as a user's photo is: dlib finds the face,
it is aligned, the models render its reconstruction and its smile at the alpha chosen on
clean val faces, and the smile is composed into the shifted photo (`change_blend`, the
attribute's landmark motion). Each set is measured as `photo_size` is: mouth landmark error
against the person's real (unshifted) smiling photo, each in its own alignment, and dlib's
same-person rate to the shifted photo itself. Beside the composed smile stand its nulls:
the shifted photo unedited (the mouth figure every edit is a ratio of) and the whole render
pasted (`--render full`).

Face k under shift s draws its strengths from (seed, s, the face's row) only, as the shifts
stage draws them, so the figures are deterministic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import torch

from pipeline.core.progress import track

if TYPE_CHECKING:
    from pipeline.dfi.dfi import DFIConfig, DFIData, Evaluator


@dataclass
class ShiftedFaces:
    """The photo-size faces under each shift, found and aligned again by dlib."""

    shift: list[str]  # (M,) the shift of each item
    face: np.ndarray  # (M,) index into the measured faces (the photo-size evaluator's rows)
    crops: np.ndarray  # (M,S,S,3) the shifted photo cut out at S px in its own (detected) alignment
    faces: np.ndarray  # (M,R,R,3) the aligned faces the models see
    landmarks: np.ndarray  # (M,68,2) dlib's landmarks of the shifted photo, aligned px (R)
    rejected: list[dict[str, str]] = field(default_factory=list)  # {id, shift, reason}


def shift_photos(data: DFIData, rows: np.ndarray, shifts: Sequence[str], side: int, seed: int = 0) -> ShiftedFaces:
    """Each face of `rows` (aligned rows; their photos are read again) under every shift of
    `shifts`: the photo is cut out on the shifts stage's canvas (the face at `side` px with a
    quarter of it as margin), shifted, and dlib finds and aligns the face anew, as it does for
    a user's photo. Faces dlib loses under a shift, or whose photo cannot be read, are listed
    in `rejected` with the reason."""
    from pipeline.data.align import alignment_transform, transform_points, warp_face
    from pipeline.data.landmarks import DlibBackend
    from pipeline.data.shifts import SHIFTS, apply_shift, canvas_transform, draw_shift
    from pipeline.editing.edit import EditInputError, read_image

    if data.transforms is None:
        raise FileNotFoundError("data/aligned/transforms.npy missing: run `dvc repro align`")
    r = data.images.shape[1]
    k = side / r
    backend = DlibBackend(upsample=0)
    names, index, crops, faces, lms, rejected = [], [], [], [], [], []
    for i, row in enumerate(track(rows, "shift test photos")):
        face_id = str(data.manifest.at[row, "id"]) if "id" in data.manifest else str(row)
        try:
            photo = read_image(str(data.manifest.at[row, "path"]))
        except EditInputError as e:
            rejected += [{"id": face_id, "shift": s, "reason": f"unreadable: {e}"} for s in shifts]
            continue
        m, canvas_side = canvas_transform(data.transforms[row], r, k)
        canvas = warp_face(photo, m, canvas_side)
        hull = transform_points(data.landmarks[row], np.array([[k, 0, 0.25 * k * r], [0, k, 0.25 * k * r]]))
        for name in shifts:
            rng = np.random.default_rng([seed, SHIFTS.index(name), int(row)])
            shifted, _ = apply_shift(draw_shift(name, rng, canvas_side, hull), canvas)
            det = backend.detect(np.ascontiguousarray(shifted))
            if det is None:
                rejected.append({"id": face_id, "shift": name, "reason": "dlib found no face after the shift"})
                continue
            a = alignment_transform(det.landmarks, r)
            names.append(name)
            index.append(i)
            faces.append(warp_face(shifted, a, r))
            crops.append(warp_face(shifted, a * k, side))
            lms.append(transform_points(det.landmarks, a))
    empty = lambda *shape: np.zeros((0, *shape), np.uint8)  # noqa: E731
    return ShiftedFaces(names, np.asarray(index, np.int64),
                        np.stack(crops) if crops else empty(side, side, 3), np.stack(faces) if faces else empty(r, r, 3),
                        np.stack(lms).astype(np.float64) if lms else np.zeros((0, 68, 2)), rejected)


def _figures(errors: Mapping[str, np.ndarray], distances: Mapping[str, np.ndarray], paired: np.ndarray,
             where: np.ndarray, face: np.ndarray) -> dict[str, Any]:
    """Figures of the items `where` (M,) bool: per set its mouth NME over the faces dlib finds in
    every set, that over the unedited shifted photo's (with its 90 % interval, drawn over the
    people `face`), dlib's misses and the same-person rate to the shifted photo."""
    from pipeline.dfi.dfi import ratio_interval
    from pipeline.evaluation.metrics import DLIB_SAME_PERSON_THRESHOLD

    sel = where[paired]  # the paired items among `where`
    common = sel & np.logical_and.reduce([np.isfinite(e) for e in errors.values()])
    base = errors["photo"][common]
    out: dict[str, Any] = {"n_faces": int(where.sum()), "n_common": int(common.sum())}
    for name, err in errors.items():
        d = distances[name][where]
        d = d[np.isfinite(d)]
        mean = float(err[common].mean()) if common.any() else None
        out[name] = {
            "mouth_nme": mean,
            "mouth_over_photo": mean / float(base.mean()) if mean is not None and base.mean() > 0 else None,
            "mouth_over_photo_ci90": ratio_interval(err[common], base, groups=face[paired][common]),
            "missed": int((~np.isfinite(err[sel])).sum()),
            "same_person": float((d < DLIB_SAME_PERSON_THRESHOLD).mean()) if len(d) else None,
        }
    return out


def measure_shifted(editor, data: DFIData, cfg: DFIConfig, vectors, device: torch.device, rows: np.ndarray,
                    ev: Evaluator, alpha: float) -> tuple[dict[str, Any], ShiftedFaces, dict[str, np.ndarray]]:
    """The smile at `alpha` on the photos of `rows` (the photo-size evaluator `ev`'s faces, in
    its order) under each of cfg.shifts: figures pooled over every shifted face and per shift
    (`_figures`), the shifted faces, and the image sets {photo, composed, full} (M,S,S,3)."""
    from pipeline.dfi.dfi import _motion, change_blend, fast_edits, full_paste
    from pipeline.data.landmarks import detect_landmarks
    from pipeline.evaluation.metrics import identity_distance

    faces = shift_photos(data, rows, cfg.shifts, cfg.measure_size, cfg.shift_seed)
    block: dict[str, Any] = {"alpha": alpha, "shifts": list(cfg.shifts), "side": cfg.measure_size,
                             "n_photos": len(rows), "rejected": faces.rejected}
    if len(faces.face) == 0:
        block["pooled"] = "absent: dlib found no face under any shift"
        return block, faces, {}
    one = replace(cfg, alphas=(alpha,))
    recon, edits, _, _ = fast_edits(editor, faces.faces, vectors, one, device, sketches=False,
                                    what="fast DFI (shifted photos)")
    sets = {"photo": faces.crops,
            "composed": change_blend(faces.crops, recon, edits, faces.landmarks, **_motion(data, one))[:, 0],
            "full": full_paste(faces.crops, edits[:, 0], faces.landmarks)}
    # Each shifted face against its person's real smile (ev.ref_lm: the paired faces' in ev's order).
    paired = ev.has_pair[faces.face]
    ref_of = np.cumsum(ev.has_pair) - 1
    ref = ev.ref_lm[ref_of[faces.face[paired]]]
    from pipeline.evaluation.metrics import LANDMARK_GROUPS, landmark_nme

    errors, distances = {}, {}
    own = ev.embedder.embed(sets["photo"], boxes="aligned")
    for name, images in track(sets.items(), "evaluate fast DFI (shifted photos)"):
        lm = detect_landmarks(images, ev.backend, None)
        errors[name] = landmark_nme(lm[paired], ref, LANDMARK_GROUPS["mouth"])
        distances[name] = identity_distance(own if name == "photo" else ev.embedder.embed(images, boxes="aligned"), own)
    shift = np.asarray(faces.shift)
    block["pooled"] = _figures(errors, distances, paired, np.ones(len(shift), bool), faces.face)
    block["per_shift"] = {s: _figures(errors, distances, paired, shift == s, faces.face)
                          for s in cfg.shifts if (shift == s).any()}
    return block, faces, sets


def shifted_sheet(faces: ShiftedFaces, sets: Mapping[str, np.ndarray], shown: int = 2, tile: int = 160) -> np.ndarray | None:
    """Rows: the shifts; per shown face the shifted photo, then its mouth (a square around the
    aligned mouth) in the shifted photo, the composed smile and the whole render pasted. None
    when nothing was shifted."""
    from pipeline.core.viz import make_grid

    if not sets:
        return None
    side = faces.crops.shape[1]
    # The aligned mouth sits near (0.5, 0.72) of the crop in every alignment (FFHQ-style quad).
    h = int(0.17 * side)
    cx, cy = side // 2, int(0.72 * side)
    shrink = lambda im: cv2.resize(im, (tile, tile), interpolation=cv2.INTER_AREA)  # noqa: E731
    mouth = lambda im: shrink(im[cy - h : cy + h, cx - h : cx + h])  # noqa: E731
    who = list(dict.fromkeys(faces.face.tolist()))[:shown]
    names = list(dict.fromkeys(faces.shift))
    cells: list[np.ndarray | None] = []
    for name in names:
        for f in who:
            hit = np.flatnonzero((faces.face == f) & (np.asarray(faces.shift) == name))
            cells += ([shrink(sets["photo"][hit[0]]), *(mouth(sets[k][hit[0]]) for k in ("photo", "composed", "full"))]
                      if len(hit) else [None] * 4)
    cols = [c for j in range(len(who)) for c in (f"photo {j + 1}", "its mouth", "composed smile", "full render")]
    return make_grid(cells, nrow=len(cols), col_labels=cols, row_labels=names)

"""The smile edit measured at the size the user gets it. (issue: DFI through the composition,
mouth error 15 % below the unedited photo's.)

    python notebooks/dfi_photo_size.py --split val
    python notebooks/dfi_photo_size.py --split test      # report only; choices are made on val

The dfi stage measures its edits on 128 px aligned faces, where the London smile moves the mouth
points about 1.5 px, near dlib's own jitter. `dfe attribute` composes the edit into the photo at
the photo's own size (1024 px on London). Here each neutral val/test face with a smiling photo of
the same person goes through `dfe attribute`'s path (pipeline.dfi.attribute.run_attribute:
fast DFI with `outputs/dfi/vectors.safetensors`, the change blend, the photo editor with the
colour range) at every alpha; the photo, the outputs and the smiling photo are cut out at
`--side` px with the photo's alignment, and dlib finds the 68 points on each at that size. The
rows:
- photo: the unedited photo (the null);
- attribute a=A: the composed edits (`dfe attribute`, motion from the vector's landmark shift,
  the renders adding what that move does not explain);
- renders a=A: the same with `--motion renders` (the motion from the two 128 px renders);
- mean smile a=A: the photo's own pixels moved by A times the training people's mean landmark
  shift alone (editing.compose.landmark_motion, at this size): the population smile, no network.
Mouth NME is over the faces found in every set; same person is dlib's verdict against the
unedited photo's crop.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np


def main() -> None:
    import torch

    from pipeline.core.profiles import get_profile
    from pipeline.data.landmarks import DlibBackend, detect_landmarks
    from pipeline.dfi import dfi as D
    from pipeline.dfi.attribute import AttributeRequest, VectorUse, run_attribute
    from pipeline.dfi.vectors import load_vector
    from pipeline.editing.blend import inner_face_mask
    from pipeline.editing.colour_norm import load_photo_editor
    from pipeline.editing.compose import ComposeSettings, landmark_motion, warp_aligned
    from pipeline.editing.edit import FaceDetector, align_image, read_image
    from pipeline.evaluation.metrics import (DLIB_SAME_PERSON_THRESHOLD, LANDMARK_GROUPS, DlibFaceEmbedder,
                                             identity_distance, landmark_nme)
    from stages.common import config_from

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", choices=("val", "test"), default="val")
    ap.add_argument("--alphas", default="1,2,3")
    ap.add_argument("--side", type=int, default=512, help="crop size dlib measures at")
    ap.add_argument("--models", default="models")
    ap.add_argument("--vector", default="outputs/dfi/vectors.safetensors")
    ap.add_argument("--sigma", type=float, default=None, help="landmark motion smoothing, fraction of the face "
                    "(default: params.yaml edit.compose.landmark_sigma)")
    args = ap.parse_args()
    alphas = [float(a) for a in args.alphas.split(",")]
    cfg = replace(config_from("dfi", D.DFIConfig), alphas=[0.0, *alphas])
    profile = get_profile(cfg.profile)
    r, side = profile.resolution, args.side
    editor = load_photo_editor(args.models, profile, torch.device("cpu"))
    vector = load_vector(args.vector)
    data = D.load_dfi_data("data", cfg, r)
    rows, pair = (data.val, data.val_pair) if args.split == "val" else (data.test, data.pair)
    keep = pair >= 0
    rows, pair = rows[keep], pair[keep]
    smile = np.asarray(data.landmarks[data.train_with].mean(0) - data.landmarks[data.train_without].mean(0), np.float32)
    detector = FaceDetector()

    def crop(image: np.ndarray, transform: np.ndarray) -> np.ndarray:
        return cv2.warpAffine(image, transform * (side / r), (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)

    settings = ComposeSettings.from_params()
    if args.sigma is not None:
        settings = replace(settings, landmark_sigma=args.sigma)
    motions = ("landmarks", "renders")
    sets: dict[str, list[np.ndarray]] = {"photo": [], **{f"{m} a={a:g}": [] for m in motions for a in alphas},
                                         **{f"mean smile a={a:g}": [] for a in alphas}}
    targets = []
    for i, (row, other) in enumerate(zip(rows, pair)):
        path = data.manifest.at[row, "path"]
        print(f"{i + 1}/{len(rows)} {Path(path).name}", flush=True)
        photo = read_image(path)
        aligned = align_image(photo, r, detector, path)
        face = crop(photo, aligned.transform)
        sets["photo"].append(face)
        for m in motions:
            req = AttributeRequest(photo=path, uses=[VectorUse(vector)], strip=tuple(alphas), compose=settings, motion=m)
            res = run_attribute(req, editor, detector)
            for a, shown in zip(alphas, res.sweep):
                sets[f"{m} a={a:g}"].append(crop(shown, res.transform))
        marks = aligned.landmarks.astype(np.float32) * (side / r)
        mask = inner_face_mask(marks, side, feather=0.06)[..., None]
        for a in alphas:
            motion = landmark_motion(marks, a * smile * (side / r), side, settings.landmark_sigma,
                                    settings.landmark_passes) * mask
            sets[f"mean smile a={a:g}"].append(warp_aligned(face, motion))
        smiling_path = data.manifest.at[other, "path"]
        smiling = read_image(smiling_path)
        targets.append(crop(smiling, align_image(smiling, r, detector, smiling_path).transform))

    backend = DlibBackend(upsample=0)
    ref = detect_landmarks(np.stack(targets), backend, "dlib on the smiling photos")
    mouth = list(LANDMARK_GROUPS["mouth"])
    errors = {name: landmark_nme(detect_landmarks(np.stack(faces), backend, None), ref, mouth) for name, faces in sets.items()}
    common = np.logical_and.reduce([np.isfinite(e) for e in errors.values()])
    embedder = DlibFaceEmbedder()
    e_photo = embedder.embed(np.stack(sets["photo"]), boxes="aligned")
    base = errors["photo"][common].mean()
    print(f"\n{args.split}: {int(common.sum())} of {len(rows)} faces found in every set, dlib at {side} px")
    print(f"{'output':22}{'mouth NME':>10}{'vs photo':>10}{'same person':>13}")
    for name, faces in sets.items():
        dist = identity_distance(embedder.embed(np.stack(faces), boxes="aligned"), e_photo)
        same = float((dist[np.isfinite(dist)] < DLIB_SAME_PERSON_THRESHOLD).mean())
        err = errors[name][common].mean()
        print(f"{name:22}{err:10.4f}{err / base - 1:+10.1%}{same:13.2f}")


if __name__ == "__main__":
    main()

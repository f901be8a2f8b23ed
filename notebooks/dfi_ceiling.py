"""How far can a smile edit move the mouth toward the person's real smile? (issue: DFI through
the composition, mouth error 15 % below the unedited photo's.)

    python notebooks/dfi_ceiling.py --split val
    python notebooks/dfi_ceiling.py --split test      # report only; choices are made on val

For each neutral face with a smiling photo of the same person, dlib's mouth landmarks (68-point
48-67 at 128 px, over the inter-ocular distance, as the dfi stage measures them) are compared
with the smiling photo's, for:
- photo: the unedited photo (the null);
- composed a=A: fast DFI with the trained models (`models/`, params.yaml `dfi`), composed into
  the photo as `dfe attribute` does (editing.compose, motion from the renders);
- full a=A: the network's whole render, the person lost (same-person rate beside it);
- mean smile a=A: no network at all: the photo's own pixels moved by A times the training
  split's mean landmark shift from neutral to smiling (every one of the 68 points, a smooth
  motion field splatted from the points): what the best *population* smile reaches, with the
  person kept by construction.
If even the mean smile of the training people stays above the bar, the bar asks for a
person-specific smile, which a mean-difference vector cannot give.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import cv2
import numpy as np
import torch


def splat_motion(points: np.ndarray, shift: np.ndarray, size: int, sigma: float) -> np.ndarray:
    """Backward motion (size,size,2): where point i lands (points + shift) the output shows the
    photo at the point; in between, a Gaussian-weighted mean of the nearby points' moves
    (points that do not move hold their neighbourhood), fading out far from every point."""
    num = np.zeros((size, size, 2), np.float32)
    den = np.zeros((size, size), np.float32)
    for (x, y), d in zip(points + shift, -shift):
        xi, yi = int(round(x)), int(round(y))
        if 0 <= xi < size and 0 <= yi < size:
            num[yi, xi] += d
            den[yi, xi] += 1
    s = sigma * size
    num, den = cv2.GaussianBlur(num, (0, 0), s), cv2.GaussianBlur(den, (0, 0), s)
    reach = np.clip(den * (2 * np.pi * s * s) * 2, 0, 1)  # 1 within about a sigma of a point
    return num / np.maximum(den, 1e-8)[..., None] * reach[..., None]


def main() -> None:
    from pipeline.core.profiles import get_profile
    from pipeline.dfi import dfi as D
    from pipeline.editing.blend import inner_face_mask
    from pipeline.editing.compose import warp_aligned
    from pipeline.models.editor import load_editor
    from stages.common import config_from

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", choices=("val", "test"), default="val")
    ap.add_argument("--alphas", default="1,2,3,4")
    ap.add_argument("--models", default="models")
    ap.add_argument("--sigma", type=float, default=0.04, help="mean smile: motion smoothing, fraction of the face")
    args = ap.parse_args()
    alphas = [float(a) for a in args.alphas.split(",")]
    cfg = replace(config_from("dfi", D.DFIConfig), alphas=[0.0, *alphas])
    dev = torch.device("cpu")
    profile = get_profile(cfg.profile)
    r = profile.resolution
    editor = load_editor(args.models, profile, dev)
    data = D.load_dfi_data("data", cfg, r)
    rows, pair = (data.val, data.val_pair) if args.split == "val" else (data.test, data.pair)
    faces, marks = data.images[rows], np.asarray(data.landmarks[rows], np.float32)

    vectors = D.fast_vectors(editor, data, cfg, dev)
    recon, edits, _, _ = D.fast_edits(editor, faces, vectors, cfg, dev, sketches=False)
    composed = D.change_blend(faces, recon, edits, data.landmarks[rows])
    smile = np.asarray(data.landmarks[data.train_with].mean(0) - data.landmarks[data.train_without].mean(0), np.float32)

    sets = {"photo": faces}
    for k, a in enumerate(cfg.alphas):
        if a == 0:
            continue
        sets[f"composed a={a:g}"] = composed[:, k]
        sets[f"full a={a:g}"] = edits[:, k]
        moved = []
        for i in range(len(faces)):
            m = splat_motion(marks[i], a * smile, r, args.sigma) * inner_face_mask(marks[i], r, feather=0.06)[..., None]
            moved.append(warp_aligned(faces[i], m))
        sets[f"mean smile a={a:g}"] = np.stack(moved)
    ev = D.Evaluator(data, rows, pair, cfg.landmark_upsample)
    figures, n = ev.compare(sets, f"dlib on {args.split}")
    base = figures["photo"]["mouth_nme"]
    print(f"\n{args.split}: {n} faces with a smiling photo found in every set; mean training smile moves the "
          f"mouth points {np.linalg.norm(smile[48:68], axis=1).mean():.2f} px at {r} px")
    print(f"{'output':18}{'mouth NME':>10}{'vs photo':>10}{'same person':>13}")
    for name, f in figures.items():
        print(f"{name:18}{f['mouth_nme']:10.4f}{f['mouth_nme'] / base - 1:+10.1%}{f['same_person']:13.2f}")


if __name__ == "__main__":
    main()

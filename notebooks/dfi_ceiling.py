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

    python notebooks/dfi_ceiling.py --landmarks-only   # no pictures: is a person-specific smile predictable?

--landmarks-only asks that with the stored landmarks alone (no warp, no detection): each val and
test neutral face's mouth points moved by a predicted smile, against the same person's smiling
photo, for the training people's mean shift and for two person-specific predictors fitted on the
training people's own neutral -> smiling pairs: ridge regression from the whole neutral shape
(68 points, eye-centred, over the inter-ocular distance) to the mouth's shift, and the mean shift
of the k training people whose neutral shape is nearest.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np
import torch


def landmark_only_table(data, attribute: str, source, target) -> None:
    """Prints mouth NME change vs the photo per predictor and split (see the module docstring)."""
    from pipeline.evaluation.metrics import LANDMARK_GROUPS, landmark_nme

    m, lm, mouth = data.manifest, data.landmarks, list(LANDMARK_GROUPS["mouth"])

    def pairs(split: str) -> tuple[np.ndarray, np.ndarray]:
        rows = m[m["split"] == split]
        value = rows[attribute].astype(str)
        smiling = rows[value == str(target)]
        first = dict(zip(smiling["identity"][::-1], smiling.index[::-1]))
        neutral = rows[value == str(source)]
        both = [(i, first[who]) for i, who in zip(neutral.index, neutral["identity"]) if who in first]
        return np.array([a for a, _ in both], np.int64), np.array([b for _, b in both], np.int64)

    def shape(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = lm[rows] - lm[rows][:, [36, 45]].mean(1, keepdims=True)
        iod = np.linalg.norm(x[:, 36] - x[:, 45], axis=1)
        return (x / iod[:, None, None]).reshape(len(rows), -1), iod

    tr_n, tr_s = pairs("train")
    x_tr, iod_tr = shape(tr_n)
    y_tr = ((lm[tr_s] - lm[tr_n]) / iod_tr[:, None, None])[:, mouth].reshape(len(tr_n), -1)
    mean_shift = lm[data.train_with].mean(0) - lm[data.train_without].mean(0)
    print(f"{len(tr_n)} training people with both photos")
    for split in ("val", "test"):
        n, s = pairs(split)
        x, iod = shape(n)
        base = landmark_nme(lm[n], lm[s], mouth).mean()

        def moved(shift: np.ndarray) -> float:  # shift (N, 20*2) over the inter-ocular distance
            p = lm[n].copy()
            p[:, mouth] += shift.reshape(len(n), -1, 2) * iod[:, None, None]
            return landmark_nme(p, lm[s], mouth).mean() / base - 1

        rows = {f"mean smile a={a:g}": landmark_nme(lm[n] + a * mean_shift, lm[s], mouth).mean() / base - 1
                for a in (1.0, 1.5)}
        a = x_tr - x_tr.mean(0)
        for lam in (1.0, 10.0):
            w = np.linalg.solve(a.T @ a + lam * np.eye(a.shape[1]), a.T @ (y_tr - y_tr.mean(0)))
            rows[f"ridge lambda={lam:g}"] = moved((x - x_tr.mean(0)) @ w + y_tr.mean(0))
        near = np.argsort(((x[:, None] - x_tr[None]) ** 2).sum(-1), axis=1)
        for k in (8, 16):
            rows[f"nearest k={k}"] = moved(y_tr[near[:, :k]].mean(1))
        print(f"\n{split}: {len(n)} people, photo mouth NME {base:.4f} (stored landmarks)")
        for name, change in rows.items():
            print(f"  {name:18}{change:+8.1%}")


def main() -> None:
    from pipeline.core.profiles import get_profile
    from pipeline.dfi import dfi as D
    from pipeline.editing.blend import inner_face_mask
    from pipeline.editing.compose import landmark_motion, warp_aligned
    from pipeline.models.editor import load_editor
    from stages.common import config_from

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", choices=("val", "test"), default="val")
    ap.add_argument("--alphas", default="1,2,3,4")
    ap.add_argument("--models", default="models")
    ap.add_argument("--sigma", type=float, default=0.04, help="mean smile: motion smoothing, fraction of the face")
    ap.add_argument("--landmarks-only", action="store_true", help="predicted smiles on stored landmarks, no pictures")
    args = ap.parse_args()
    alphas = [float(a) for a in args.alphas.split(",")]
    cfg = replace(config_from("dfi", D.DFIConfig), alphas=[0.0, *alphas])
    if args.landmarks_only:
        data = D.load_dfi_data("data", cfg, get_profile(cfg.profile).resolution)
        return landmark_only_table(data, cfg.attribute, cfg.source_value, cfg.target_value)
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
            m = landmark_motion(marks[i], a * smile, r, args.sigma) * inner_face_mask(marks[i], r, feather=0.06)[..., None]
            moved.append(warp_aligned(faces[i], m))
        sets[f"mean smile a={a:g}"] = np.stack(moved)
    ev = D.Evaluator.aligned(data, rows, pair, cfg.landmark_upsample)
    figures, n = ev.compare(sets, f"dlib on {args.split}")
    base = figures["photo"]["mouth_nme"]
    print(f"\n{args.split}: {n} faces with a smiling photo found in every set; mean training smile moves the "
          f"mouth points {np.linalg.norm(smile[48:68], axis=1).mean():.2f} px at {r} px")
    print(f"{'output':18}{'mouth NME':>10}{'vs photo':>10}{'same person':>13}")
    for name, f in figures.items():
        print(f"{name:18}{f['mouth_nme']:10.4f}{f['mouth_nme'] / base - 1:+10.1%}{f['same_person']:13.2f}")


if __name__ == "__main__":
    main()

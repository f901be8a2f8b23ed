"""The smile's landmark motion, tuned at the photo's size (dfi stage, `dfi.motion: landmarks`).

    python notebooks/tune_dfi_motion.py --split train          # the choices: 72 training pairs, leave-one-out
    python notebooks/tune_dfi_motion.py --split val            # ... and the 10 val pairs
    python notebooks/tune_dfi_motion.py --split test           # report only, once the choice is made

For every setting, each neutral face's fast DFI renders (models/, params.yaml `dfi`) are
composed into its photo cut out at `dfi.measure_size` px (pipeline.dfi.dfi.change_blend, what
the stage measures) and dlib's mouth NME against the same person's smiling photo is printed
over the unedited photo's (90 % bootstrap interval over the faces), with the dlib same-person
rate, per alpha; `points moved` is the ceiling: the photo's own dlib points moved by alpha x
the shift, no image.
- sigma: how far each landmark's move spreads (edit.compose.landmark_sigma, fraction of the face);
- passes: how many times the motion is corrected so the points land on their moves
  (edit.compose.landmark_passes, `editing.compose.landmark_motion`);
- residual on/off (`--residual both`): whether the renders add what the landmark move does not
  explain (off: the residual thresholds raised past any change).

`--split train` measures the training people who have a neutral and a smiling photo (72 on the
London set), each with the landmark shift learned WITHOUT that person (leave-one-identity-out);
the val split has 10 pairs, too few to choose between motions (its 90 % intervals span 0.2).
The models and the learned-space DFI vectors did see the training faces, which changes only the
residual the renders add (on/off moves val by under half a point).

`--warp piecewise` replaces the Gaussian splat (`editing.compose.landmark_motion`) by a
piecewise-affine warp through the landmarks (scikit-image's PiecewiseAffineTransform, the
aligned square's border held still): every point lands exactly on its move, so the closed
lips' inner points, which the splat averages to nothing, open. Tried and not kept: on val it
scored 0.845 / 0.878 at alpha 1 / 1.5 against the splat's 0.823 / 0.787 (sigma 0.06, residual
on); the lips grow taller rather than part, and 0-6 of a face's triangles fold.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np


def main() -> None:
    import torch

    from pipeline.core.profiles import get_profile
    from pipeline.data.landmarks import detect_landmarks
    from pipeline.dfi import dfi as D
    from pipeline.editing.compose import ComposeSettings
    from pipeline.models.editor import load_editor
    from stages.common import config_from

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", choices=("train", "val", "test"), default="val")
    ap.add_argument("--sigmas", default="0.06")
    ap.add_argument("--passes", default="0,6,12")
    ap.add_argument("--alphas", default="0.5,0.75,1,1.25,1.5")
    ap.add_argument("--residual", choices=("on", "off", "both"), default="on")
    ap.add_argument("--warp", choices=("splat", "piecewise"), default="splat")
    args = ap.parse_args()
    cfg = config_from("dfi", D.DFIConfig)
    cfg = replace(cfg, alphas=tuple(float(a) for a in args.alphas.split(",")))
    profile = get_profile(cfg.profile)
    dev = torch.device("cpu")
    editor = load_editor("models", profile, dev)
    data = D.load_dfi_data("data", cfg, profile.resolution)
    rows, pair = split_pairs(data, cfg, args.split)
    shifts = leave_one_out_shifts(data, rows) if args.split == "train" else np.repeat(data.landmark_shift[None], len(rows), 0)
    vectors = D.fast_vectors(editor, data, cfg, dev)
    recon, edits, _, _ = D.fast_edits(editor, data.images[rows], vectors, cfg, dev, sketches=False)
    ev, keep, crops, _ = D.Evaluator.at_photo_size(data, rows, pair, cfg.measure_size)
    lm, shifts, recon, edits = data.landmarks[rows[keep]], shifts[keep], recon[keep], edits[keep]
    base = ComposeSettings.from_params()
    print(f"{args.split}: {int(ev.has_pair.sum())} pairs; mouth NME over the photo's (90 % interval), same person")
    moved = D.points_moved_ratio(ev, detect_landmarks(crops, ev.backend, None), shifts, cfg.alphas,
                                 cfg.measure_size / profile.resolution)
    print("points moved (the ceiling): " + "  ".join(f"a={a:g} {r:.3f}" for a, r in zip(cfg.alphas, moved)))
    for sigma in (float(s) for s in args.sigmas.split(",")):
        for passes in (int(p) for p in args.passes.split(",")):
            for residual in {"on": (True,), "off": (False,), "both": (True, False)}[args.residual]:
                settings = replace(base, landmark_sigma=sigma, landmark_passes=passes)
                if not residual:
                    settings = replace(settings, residual_low=1e4, residual_high=1e4 + 1)
                cells = [f"a={a:g} {r:.3f} [{lo:.2f},{hi:.2f}] {same:.2f}"
                         for a, (r, (lo, hi), same) in zip(cfg.alphas, measure(D, ev, crops, recon, edits, lm, shifts, cfg.alphas,
                                                                               settings, args.warp))]
                print(f"{args.warp} sigma {sigma:.2f} passes {passes:2d} residual {'on ' if residual else 'off'}  " + "  ".join(cells),
                      flush=True)


def split_pairs(data, cfg, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(rows, pair): the split's neutral faces that have a smiling photo of the same person, and
    that photo's row."""
    if split == "val":
        rows, pair = data.val, data.val_pair
    elif split == "test":
        rows, pair = data.test, data.pair
    else:
        man = data.manifest
        smiling = dict(zip(man.loc[data.train_with, "identity"][::-1], data.train_with[::-1]))
        rows = data.train_without
        pair = np.array([smiling.get(man.at[r, "identity"], -1) for r in rows], np.int64)
    return rows[pair >= 0], pair[pair >= 0]


def leave_one_out_shifts(data, rows: np.ndarray) -> np.ndarray:
    """(N,68,2): per row, the training faces' mean landmarks with the attribute minus without,
    every photo of that row's person left out."""
    who = data.manifest["identity"]
    out = []
    for r in rows:
        w = data.train_with[(who[data.train_with] != who[r]).to_numpy()]
        wo = data.train_without[(who[data.train_without] != who[r]).to_numpy()]
        out.append(data.landmarks[w].mean(0) - data.landmarks[wo].mean(0))
    return np.asarray(out, np.float32)


def piecewise_motion(points, shift, size, sigma=None, passes=None, border=8):
    """landmark_motion's backward field from a piecewise-affine warp: the moved points (and the
    square's border, held still) triangulated, each target triangle sampled from its source
    (`sigma` and `passes` unused: the warp is exact at the points)."""
    from skimage.transform import PiecewiseAffineTransform

    t = np.linspace(0, size - 1, border + 1)
    z, e = np.zeros_like(t), np.full_like(t, size - 1)
    edge = np.concatenate([np.stack([t, z], 1), np.stack([t, e], 1), np.stack([z, t], 1)[1:-1], np.stack([e, t], 1)[1:-1]])
    src = np.concatenate([np.asarray(points, np.float64), edge])
    dst = np.concatenate([np.asarray(points, np.float64) + shift, edge])
    warp = PiecewiseAffineTransform()
    if not warp.estimate(dst, src):  # target -> source: where each output pixel samples the photo
        raise ValueError("the landmarks could not be triangulated")
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    grid = np.stack([xx.ravel(), yy.ravel()], 1)
    back = warp(grid)
    outside = (back == -1).all(1)  # scikit-image's mark for a point outside the mesh
    motion = np.where(outside[:, None], 0.0, back - grid)
    return motion.reshape(size, size, 2).astype(np.float32)


def measure(D, ev, crops, recon, edits, lm, shifts, alphas, settings, warp="splat"):
    """Per alpha (mouth NME over the photo's, its 90 % interval, same-person rate): every face
    composed as the stage composes it (`change_blend`) with its own shift and these settings;
    with `warp` piecewise, the piecewise-affine landmark motion instead of the splat."""
    from unittest import mock

    from pipeline.data.landmarks import detect_landmarks
    from pipeline.editing import compose as C

    motion = piecewise_motion if warp == "piecewise" else C.landmark_motion
    with mock.patch.object(C, "landmark_motion", motion):
        composed = D.change_blend(crops, recon, edits, lm, settings=settings, shift=shifts, alphas=alphas)
    base = ev.mouth_errors(detect_landmarks(crops, ev.backend, None))
    out = []
    for k in range(len(alphas)):
        err = ev.mouth_errors(detect_landmarks(composed[:, k], ev.backend, None))
        ok = np.isfinite(base) & np.isfinite(err)
        out.append((float(err[ok].mean() / base[ok].mean()), D.ratio_interval(err[ok], base[ok]) or [np.nan, np.nan],
                    ev.identity(composed[:, k])["same_person"]))
    return out


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()

"""The smile's landmark motion, tuned on val at the photo's size (dfi stage, `dfi.motion: landmarks`).

    python notebooks/tune_dfi_motion.py                 # val: the choices
    python notebooks/tune_dfi_motion.py --split test    # report only, once the choice is made

For every setting, each val neutral face's fast DFI renders (models/, params.yaml `dfi`) are
composed into its photo cut out at `dfi.measure_size` px (pipeline.dfi.dfi.measure_at_photo_size,
what the stage measures) and dlib's mouth NME against the same person's smiling photo is printed
over the unedited photo's, with the dlib same-person rate, per alpha:
- sigma: how far each landmark's move spreads (edit.compose.landmark_sigma, fraction of the face);
- residual on/off: whether the renders add what the landmark move does not explain (off: the
  residual thresholds raised past any change, so only the photo's own pixels move).

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
    from pipeline.dfi import dfi as D
    from pipeline.editing.compose import ComposeSettings
    from pipeline.models.editor import load_editor
    from stages.common import config_from

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", choices=("val", "test"), default="val")
    ap.add_argument("--sigmas", default="0.03,0.04,0.06")
    ap.add_argument("--alphas", default="0.75,1,1.25,1.5")
    ap.add_argument("--warp", choices=("splat", "piecewise"), default="splat")
    args = ap.parse_args()
    cfg = config_from("dfi", D.DFIConfig)
    cfg = replace(cfg, alphas=tuple(float(a) for a in args.alphas.split(",")))
    profile = get_profile(cfg.profile)
    dev = torch.device("cpu")
    editor = load_editor("models", profile, dev)
    data = D.load_dfi_data("data", cfg, profile.resolution)
    rows, pair = (data.val, data.val_pair) if args.split == "val" else (data.test, data.pair)
    vectors = D.fast_vectors(editor, data, cfg, dev)
    recon, edits, _, _ = D.fast_edits(editor, data.images[rows], vectors, cfg, dev, sketches=False)
    base = ComposeSettings.from_params()
    print(f"{args.split}: {int((pair >= 0).sum())} pairs; mouth NME over the photo's (90 % interval), same person")
    for sigma in (float(s) for s in args.sigmas.split(",")):
        for residual in (True, False):
            settings = replace(base, landmark_sigma=sigma)
            if not residual:
                settings = replace(settings, residual_low=1e4, residual_high=1e4 + 1)
            block, _ = measure(D, data, rows, pair, recon, edits, cfg, settings, args.warp)
            cells = []
            for a in cfg.alphas:
                f = block[D._alpha_key(a)]
                lo, hi = f["mouth_over_photo_ci90"]
                cells.append(f"a={a:g} {f['mouth_over_photo']:.3f} [{lo:.2f},{hi:.2f}] {f['same_person']:.2f}")
            print(f"{args.warp} sigma {sigma:.2f} residual {'on ' if residual else 'off'}  " + "  ".join(cells), flush=True)


def piecewise_motion(points, shift, size, sigma=None, border=8):
    """landmark_motion's backward field from a piecewise-affine warp: the moved points (and the
    square's border, held still) triangulated, each target triangle sampled from its source
    (`sigma` unused: the warp is exact at the points)."""
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


def measure(D, data, rows, pair, recon, edits, cfg, settings, warp="splat"):
    """measure_at_photo_size with these compose settings (the stage reads params.yaml's) and,
    with `warp` piecewise, the piecewise-affine landmark motion instead of the splat."""
    from unittest import mock

    from pipeline.editing import compose as C

    real = D.change_blend

    def blend(*a, **k):
        k["settings"] = settings
        return real(*a, **k)

    with mock.patch.object(D, "change_blend", blend), \
            mock.patch.object(C, "landmark_motion", piecewise_motion if warp == "piecewise" else C.landmark_motion):
        return D.measure_at_photo_size(data, rows, pair, recon, edits, cfg, "dlib")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()

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
            block, _ = measure(D, data, rows, pair, recon, edits, cfg, settings)
            cells = []
            for a in cfg.alphas:
                f = block[D._alpha_key(a)]
                lo, hi = f["mouth_over_photo_ci90"]
                cells.append(f"a={a:g} {f['mouth_over_photo']:.3f} [{lo:.2f},{hi:.2f}] {f['same_person']:.2f}")
            print(f"sigma {sigma:.2f} residual {'on ' if residual else 'off'}  " + "  ".join(cells), flush=True)


def measure(D, data, rows, pair, recon, edits, cfg, settings):
    """measure_at_photo_size with these compose settings (the stage reads params.yaml's)."""
    from unittest import mock

    real = D.change_blend

    def blend(*a, **k):
        k["settings"] = settings
        return real(*a, **k)

    with mock.patch.object(D, "change_blend", blend):
        return D.measure_at_photo_size(data, rows, pair, recon, edits, cfg, "dlib")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()

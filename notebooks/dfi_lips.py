"""Which mouth points the composed smile moves, and how far (dfi stage, `dfi.motion: landmarks`).

    python notebooks/dfi_lips.py --split val
    python notebooks/dfi_lips.py --split test --alpha 1.5     # report only

Each neutral face with a smiling photo of the same person is composed at the photo's size
(pipeline.dfi.dfi.measure_at_photo_size's path: `change_blend` with the landmark shift, 512 px
crops); dlib finds the 68 points on the photo and on the edit. Printed: the mouth NME against
the smiling photo for the outer lips (48-59), the inner lips (60-67) and both, for the photo,
the composed edit and the photo's own points moved by alpha x the shift (no image: the ceiling);
then, per mouth point, the share of the intended move (alpha x shift) the edit's points made.
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
    from pipeline.evaluation.metrics import landmark_nme
    from pipeline.models.editor import load_editor
    from stages.common import config_from

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", choices=("val", "test"), default="val")
    ap.add_argument("--alpha", type=float, default=1.5)
    ap.add_argument("--side", type=int, default=512)
    args = ap.parse_args()
    cfg = replace(config_from("dfi", D.DFIConfig), alphas=(args.alpha,), measure_size=args.side)
    dev = torch.device("cpu")
    editor = load_editor("models", get_profile(cfg.profile), dev)
    data = D.load_dfi_data("data", cfg, editor.profile.resolution)
    rows, pair = (data.val, data.val_pair) if args.split == "val" else (data.test, data.pair)
    vectors = D.fast_vectors(editor, data, cfg, dev)
    recon, edits, _, _ = D.fast_edits(editor, data.images[rows], vectors, cfg, dev, sketches=False)
    ev, keep, crops, _ = D.Evaluator.at_photo_size(data, rows, pair, args.side)
    composed = D.change_blend(crops, recon[keep], edits[keep], data.landmarks[rows[keep]],
                              shift=data.landmark_shift, alphas=cfg.alphas)[:, 0]
    own, out = detect_landmarks(crops, ev.backend, None), detect_landmarks(composed, ev.backend, None)
    want = args.alpha * data.landmark_shift * (args.side / editor.profile.resolution)
    ideal = own + want[None]
    print(f"{args.split}: {int(ev.has_pair.sum())} pairs, alpha {args.alpha:g}, dlib at {args.side} px")
    for name, idx in (("outer lips 48-59", range(48, 60)), ("inner lips 60-67", range(60, 68)), ("mouth 48-67", range(48, 68))):
        e0, e1, ei = (np.nanmean(landmark_nme(x[ev.has_pair], ev.ref_lm, list(idx)))
                      for x in (own, out, ideal))
        print(f"  {name:17} photo {e0:.4f}  composed {e1:.4f} ({e1 / e0 - 1:+.1%})  points moved {ei:.4f} ({ei / e0 - 1:+.1%})")
    moved = (out - own)[:, 48:68]
    share = np.nanmean((moved * want[48:68]).sum(-1), 0) / (want[48:68] ** 2).sum(-1)
    print("  share of the intended move, points 48-67:", " ".join(f"{s:.2f}" for s in share))


if __name__ == "__main__":
    main()

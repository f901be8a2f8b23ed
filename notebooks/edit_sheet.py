"""`dfe edit` on whole London test photos, as one picture to look at.

    python notebooks/edit_sheet.py --models models --out outputs/edit_sheet.png
    python notebooks/edit_sheet.py --models before=old/models --models after=models --out outputs/before_after.png

For each geometry photo (original size, not aligned) it runs what `dfe edit A -a A` (a
reconstruction) and `dfe edit A -a B` (a swap: B's appearance) run, once per models folder, and
lays them out per row: photo | (reconstruction | swap) per models folder | appearance source.
The default pairs are test identities of the default split (20 % of people, seed 0).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import cv2
import numpy as np

PAIRS = (("006", "009"), ("009", "010"), ("010", "006"))  # (geometry, appearance) test identities
ROW_HEIGHT = 384


def _label(image: np.ndarray, text: str) -> np.ndarray:
    out = image.copy()
    (w, h), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.6, 1)
    cv2.rectangle(out, (0, 0), (w + 12, h + 14), (255, 255, 255), -1)
    cv2.putText(out, text, (6, h + 7), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    return out


def _fit(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    return cv2.resize(image, (round(w * ROW_HEIGHT / h), ROW_HEIGHT), interpolation=cv2.INTER_AREA)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", action="append", required=True,
                    help="weights folder, or NAME=FOLDER to label its columns (repeat: before, after)")
    ap.add_argument("--out", type=Path, required=True, help="PNG to write")
    ap.add_argument("--london", type=Path, default=Path(os.environ.get("DFE_LONDON_DIR", "../shared/datasets/london-faces")))
    ap.add_argument("--profile", default="small")
    args = ap.parse_args(argv)

    import torch

    from pipeline.core.io import save_png
    from pipeline.editing.edit import EditRequest, FaceDetector, read_image, run_edit
    from pipeline.models.editor import load_editor

    detector = FaceDetector(1, 512)
    photos = {i: args.london / "neutral" / f"{i}_03.jpg" for pair in PAIRS for i in pair}
    for path in photos.values():
        if not path.is_file():
            raise SystemExit(f"{path} not found: pass --london (the London set folder) or set DFE_LONDON_DIR")
    rows: list[list[np.ndarray]] = [[_label(_fit(read_image(photos[a])), f"photo {a}")] for a, _ in PAIRS]
    for spec in args.models:
        name, _, models = spec.rpartition("=")
        name = name or Path(models).name
        editor = load_editor(models, args.profile, torch.device("cpu"), torch.float32)
        for row, (a, b) in zip(rows, PAIRS):
            for appearance, what in ((a, "recon"), (b, f"swap {b}")):
                req = EditRequest(str(photos[a]), str(photos[appearance]), {}, None, False, 0.06)
                row.append(_label(_fit(run_edit(req, editor, detector).image), f"{name}: {what}"))
    for row, (_, b) in zip(rows, PAIRS):
        row.append(_label(_fit(read_image(photos[b])), f"appearance {b}"))
    strips = [np.concatenate(r, 1) for r in rows]
    width = max(s.shape[1] for s in strips)
    sheet = np.concatenate([np.pad(s, ((0, 0), (0, width - s.shape[1]), (0, 0)), constant_values=255) for s in strips])
    save_png(args.out, sheet)
    print(f"wrote {args.out} (per row: photo | reconstruction, swap per models folder | appearance source)")


if __name__ == "__main__":
    main()

"""Does blur alone cost dlib's same-person call? The test photos, blurred, against themselves.

    python notebooks/identity_vs_blur.py

Reads data/aligned and data/split (after `dvc repro split`), blurs each 128 px test face with a
Gaussian of each sigma, and prints its PSNR to the photo, dlib's same-person rate (descriptor
distance < 0.6, the evaluation's rule) and the mean distance. Set beside the reconstructions'
figures in reports/evaluate.json, it says whether soft outputs or wrong content lose identity.
"""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd

from pipeline.core.io import load_npy
from pipeline.evaluation import metrics as M


def main() -> None:
    faces = load_npy("data/aligned/images.npy")
    split = pd.read_csv("data/split/split.csv")
    manifest = pd.read_csv("data/aligned/manifest.csv")
    test_ids = set(split.loc[split["split"] == "test", "id"])
    rows = manifest.index[manifest["id"].isin(test_ids)].to_numpy()
    photos = np.asarray(faces[rows])
    embedder = M.DlibFaceEmbedder()
    reference = embedder.embed(photos, boxes="aligned")
    print(f"{len(rows)} test faces")
    for sigma in (1.0, 2.0, 3.0, 4.0):
        blurred = np.stack([cv2.GaussianBlur(f, (0, 0), sigma) for f in photos])
        mse = np.mean((blurred.astype(np.float64) - photos) ** 2)
        d = M.identity_distance(embedder.embed(blurred, boxes="aligned"), reference)
        print(f"sigma {sigma:.0f} px: PSNR {10 * np.log10(255**2 / mse):.1f} dB, "
              f"same person {np.mean(d < 0.6):.3f}, distance {np.nanmean(d):.3f}")


if __name__ == "__main__":
    main()

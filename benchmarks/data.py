"""Throughput of the data half on London photos: each stage, the whole build, and landmark
detection alone as the yardstick (the build should cost well under 2x detection alone).

    python -m benchmarks.data --n 204 --profile small
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.align import AlignConfig, run_align
from pipeline.components import run_components
from pipeline.ingest import IngestConfig, run_ingest
from pipeline.io import load_image
from pipeline.landmarks import DlibBackend, LandmarkConfig, run_landmarks
from pipeline.profiles import get_profile
from pipeline.sketch_stage import run_sketch
from pipeline.split import run_split


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--london", type=Path, default=Path(os.environ.get("DFE_LONDON_DIR", "../shared/datasets/london-faces")))
    ap.add_argument("--n", type=int, default=204, help="photos (identities x 2)")
    ap.add_argument("--profile", default="small")
    ap.add_argument("--detect-side", type=int, default=512)
    args = ap.parse_args()
    os.environ["DFE_NO_PROGRESS"] = "1"
    res = get_profile(args.profile).resolution
    t: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        s = time.perf_counter()
        ing = run_ingest(IngestConfig(source=str(args.london), limit=max(1, args.n // 2)), out / "ingest")
        t["ingest"] = time.perf_counter() - s
        ok = ing[ing.status == "ok"]
        n = len(ok)

        # Yardstick: detection alone on photos already decoded at the detection size.
        det = DlibBackend()
        decoded = [load_image(p, draft_side=args.detect_side)[0] for p in ok.path]
        s = time.perf_counter()
        for img in decoded:
            det.detect(img)
        t_detect = time.perf_counter() - s
        del decoded

        for name, fn in [
            ("landmarks", lambda: run_landmarks(LandmarkConfig(backend="dlib", detect_side=args.detect_side), ing, out / "landmarks", backend=det)),
            ("align", lambda: run_align(AlignConfig(res), ing, pd.read_csv(out / "landmarks" / "manifest.csv", dtype={"id": str}),
                                        np.load(out / "landmarks" / "landmarks.npy"), out / "aligned")),
            ("sketch", lambda: run_sketch({"continuity_faces": 0}, out / "aligned", out / "sketch", device="auto")),
            ("split", lambda: run_split(pd.read_csv(out / "aligned" / "manifest.csv", dtype={"id": str, "identity": str}), 0.2, 0, out / "split")),
            ("components", lambda: run_components(
                pd.read_csv(out / "aligned" / "manifest.csv", dtype={"id": str, "identity": str}),
                np.load(out / "aligned" / "images.npy"), np.load(out / "sketch" / "sketches.npy"),
                pd.read_csv(out / "split" / "split.csv", dtype={"id": str, "identity": str}), res, out / "components")),
        ]:
            s = time.perf_counter()
            fn()
            t[name] = time.perf_counter() - s

    total = sum(t.values())
    print(f"{n} photos, profile {args.profile} ({res} px), dlib landmarks at {args.detect_side} px, 1 process")
    print(f"{'stage':<12}{'seconds':>9}{'faces/s':>10}{'x detect':>10}")
    for name, sec in t.items():
        print(f"{name:<12}{sec:9.2f}{n / sec:10.1f}{sec / t_detect:10.2f}")
    print(f"{'detect only':<12}{t_detect:9.2f}{n / t_detect:10.1f}{1:10.2f}")
    print(f"{'whole build':<12}{total:9.2f}{n / total:10.1f}{total / t_detect:10.2f}")


if __name__ == "__main__":
    main()

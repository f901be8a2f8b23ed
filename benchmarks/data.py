"""Throughput of the data half on London photos: each stage, the whole build, and landmark
detection alone as the yardstick (the build should cost well under 2x detection alone).

Each stage runs as in `dvc repro` with params.yaml's settings, once with 1 worker everywhere
and once with the defaults (all cores). The build is ingest -> components, what training
reads; the sketch stage's continuity report (stage sketch_report) is timed beside it. Two
yardsticks, each ratio taken run by run so a drifting machine speed cancels:
- the landmarks stage of the same build (decode + detect);
- dlib alone on photos decoded beforehand at the detection size, on 1 thread and on all
  cores, timed just before each build (stricter: the decoding counts against the build).
Wall seconds and CPU seconds (all threads of this process) are both printed. Imports and
model loading happen before any timing.

    python -m benchmarks.data --n 204
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.data.align import AlignConfig, run_align
from pipeline.data.components import run_components
from pipeline.core.config import load_params, section
from pipeline.data.ingest import IngestConfig, run_ingest
from pipeline.core.io import load_image, load_npy
from pipeline.data.landmarks import DlibBackend, LandmarkConfig, run_landmarks
from pipeline.core.parallel import available_cores, resolve_workers
from pipeline.core.profiles import get_profile
from pipeline.data.sketch.synthesis import synthesize_sketches  # noqa: F401  (imports torch before timing, as dlib loads before
from pipeline.data.sketch.draw import SketchStyle
from pipeline.data.sketches import SketchesConfig, run_sketch
from pipeline.data.sketch_report import SketchReportConfig, run_sketch_report
from pipeline.data.split import run_split


Seconds = tuple[float, float]  # (wall, CPU)


def timed(fn) -> Seconds:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def detect_alone(det: DlibBackend, images: list[np.ndarray], workers: int) -> Seconds:
    copies = [det.copy() for _ in range(workers)]  # one detector per thread, made before timing
    with ThreadPoolExecutor(workers) as pool:
        return timed(lambda: list(pool.map(lambda k: [copies[k].detect(im) for im in images[k::workers]],
                                           range(workers))))


def build(london: Path, n_ids: int, res: int, sketch_cfg: SketchesConfig, report_cfg: SketchReportConfig,
          detect_side: int, workers: int | None, det: DlibBackend) -> tuple[dict[str, Seconds], int]:
    t: dict[str, Seconds] = {}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        man = lambda name: pd.read_csv(out / name, dtype={"id": str, "identity": str})  # noqa: E731
        # Each step reads what the one before wrote, as the stage commands do.
        steps = [
            ("ingest", lambda: run_ingest(IngestConfig(source=str(london), limit=n_ids), out / "ingest", workers)),
            ("landmarks", lambda: run_landmarks(LandmarkConfig(backend="dlib", detect_side=detect_side),
                                                man("ingest/manifest.csv"), out / "landmarks", backend=det,
                                                workers=workers)),
            ("align", lambda: run_align(AlignConfig(res), man("ingest/manifest.csv"), man("landmarks/manifest.csv"),
                                        np.load(out / "landmarks" / "landmarks.npy"), out / "aligned", workers)),
            ("sketch", lambda: run_sketch(sketch_cfg, out / "aligned", out / "sketches", workers=workers)),
            ("split", lambda: run_split(man("aligned/manifest.csv"), 0.2, 0, out / "split")),
            ("components", lambda: run_components(
                man("aligned/manifest.csv"), load_npy(out / "aligned" / "images.npy"),  # memory-mapped, as the stage
                load_npy(out / "sketches" / "sketches.npy"), man("split/split.csv"), res, out / "components")),
            (REPORT, lambda: run_sketch_report(report_cfg, sketch_cfg, out / "aligned", out / "sketches",
                                               out / "sheet.png", workers=workers)),
        ]
        for name, fn in steps:
            t[name] = timed(fn)
        return t, int((man("ingest/manifest.csv").status == "ok").sum())


REPORT = "sketch report"  # not part of the build: training never reads it


def build_seconds(t: dict[str, Seconds], i: int = 0) -> float:
    """The whole build's seconds (every step but the report): i = 0 wall, 1 CPU."""
    return sum(v[i] for k, v in t.items() if k != REPORT)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--london", type=Path, default=Path(os.environ.get("DFE_LONDON_DIR", "../shared/datasets/london-faces")))
    ap.add_argument("--n", type=int, default=204, help="photos (identities x 2)")
    ap.add_argument("--profile", default=None, help="default: params.yaml's profile")
    ap.add_argument("--repeat", type=int, default=3, help="runs per configuration; the best is kept")
    args = ap.parse_args()
    os.environ["DFE_NO_PROGRESS"] = "1"
    params = load_params()
    profile = args.profile or params.get("profile", "small")
    res = get_profile(profile).resolution
    # The stages' own configs from params.yaml, on the CPU.
    sketch_s = section(params, "sketches")
    sketch_cfg = SketchesConfig(seed=sketch_s["seed"], device="cpu", batch_size=sketch_s["batch_size"],
                                style=SketchStyle(**sketch_s["style"]))
    report_cfg = SketchReportConfig(**section(params, "sketch_report"))
    detect_side = int(section(params, "landmarks").get("detect_side", 512))
    det = DlibBackend()

    ing = run_ingest(IngestConfig(source=str(args.london), limit=max(1, args.n // 2)), Path(tempfile.mkdtemp()) / "i", 1)
    decoded = [load_image(p, draft_side=detect_side)[0] for p in ing[ing.status == "ok"].path]
    # 1 worker everywhere, then the default: threads on every core for decoding and
    # detection, and a sketch process pool only where the work pays for starting it.
    threads = resolve_workers(None)  # what the defaults use: $DFE_WORKERS or all cores
    configs = {"1 worker": (1, 1), f"default ({threads} threads)": (None, threads)}
    runs, ratios, stage_ratios = {}, {}, {}
    for label, (workers, threads) in configs.items():
        best: dict[str, Seconds] = {}
        dets, ratios[label], stage_ratios[label] = [], [], []
        for _ in range(args.repeat):  # the best of a few (by wall time): shared machines are noisy
            # Each build right after its yardstick, so a drifting machine speed cancels in the ratio.
            dets.append(detect_alone(det, decoded, threads))
            t, n = build(args.london, max(1, args.n // 2), res, sketch_cfg, report_cfg, detect_side, workers, det)
            best = {k: min(v, best.get(k, v)) for k, v in t.items()}
            ratios[label].append(build_seconds(t) / dets[-1][0])
            stage_ratios[label].append(build_seconds(t) / t["landmarks"][0])
        runs[label] = (best, min(dets))

    print(f"{n} photos, profile {profile} ({res} px), dlib at {detect_side} px, {available_cores()} cores, "
          f"best of {args.repeat}")
    for label, (t, t_det) in runs.items():
        whole = (build_seconds(t, 0), build_seconds(t, 1))
        print(f"\n{label}")
        print(f"{'stage':<16}{'wall s':>8}{'faces/s':>9}{'x detect':>10}{'CPU s':>8}{'x detect':>10}")
        row = lambda name, s: print(f"{name:<16}{s[0]:8.2f}{n / s[0]:9.1f}{s[0] / t_det[0]:10.2f}"  # noqa: E731
                                    f"{s[1]:8.2f}{s[1] / t_det[1]:10.2f}")
        for name, sec in t.items():
            if name != REPORT:
                row(name, sec)
        row("detect alone", t_det)
        row("whole build", whole)
        row(f"({REPORT})", t[REPORT])
        for name, rs in (("the landmarks stage", stage_ratios[label]), ("detection alone", ratios[label])):
            print(f"whole build / {name}, run by run: {', '.join(f'{r:.2f}' for r in rs)} (median {np.median(rs):.2f})")
    (t1, d1), (tn, dn) = runs.values()
    print(f"\nwhole build, default vs 1 worker: {build_seconds(t1) / build_seconds(tn):.2f}x faster; "
          f"default build vs detection alone on 1 core: {build_seconds(tn) / d1[0]:.2f}x")


if __name__ == "__main__":
    main()

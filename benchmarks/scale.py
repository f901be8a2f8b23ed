"""The data stages at thousands of faces: does time per face hold, and memory stay flat?

    python -m benchmarks.scale --faces 1000,4000            # photos made under /tmp/dfe-scale

Makes the largest size's distinct photos once from the London set (outside the repository:
`--photos`, default /tmp/dfe-scale): each a London photo under a random crop, scale, small
rotation, flip and colour change, re-encoded as JPEG at 512-1024 px, two photos per made-up
identity. Then, for each size in its own process (so that peak memory is that size's alone),
runs the build as `dvc repro` does, ingest -> landmarks -> align -> sketch -> split ->
components (benchmarks.data.build, default workers), and prints faces/s per stage and peak
resident memory. Bars: seconds per face within +-20 % across sizes; peak memory at the largest
size <= 1.3x at the smallest.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

TIME_BAR = 0.20  # seconds per face may differ by this fraction across sizes
MEMORY_BAR = 1.3  # peak memory at the largest size over the smallest


def make_photos(london: Path, out: Path, n: int, seed: int = 0) -> Path:
    """`n` distinct photos `<identity>_<k>.jpg` in `out` from the London set (kept if already made)."""
    import cv2

    from pipeline.core.progress import track

    done = out / f".made-{n}-{seed}"
    if done.exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    sources = sorted(p for p in london.rglob("*.jpg"))
    if not sources:
        raise FileNotFoundError(f"no .jpg under {london}: set DFE_LONDON_DIR or --london")
    rng = np.random.default_rng(seed)
    for i in track(range(n), description="scale: making photos"):
        img = cv2.imread(str(sources[i % len(sources)]))
        h, w = img.shape[:2]
        side = rng.uniform(0.8, 1.0) * min(h, w)  # a crop that keeps the face
        cx, cy = w / 2 + rng.uniform(-0.06, 0.06) * w, h / 2 + rng.uniform(-0.06, 0.06) * h
        m = cv2.getRotationMatrix2D((cx, cy), rng.uniform(-8, 8), 1.0)
        size = int(rng.integers(512, 1025))
        scale = size / side
        m[:, :2] *= scale  # rotate and scale about the crop's centre, which lands mid-photo
        m[:, 2] = np.array([size / 2, size / 2]) - m[:, :2] @ np.array([cx, cy])
        photo = cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT_101)
        if rng.random() < 0.5:
            photo = photo[:, ::-1]
        gains = rng.uniform(0.85, 1.15, 3) * rng.uniform(0.8, 1.2)
        photo = np.clip(photo.astype(np.float32) * gains + rng.normal(0, 2, photo.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(str(out / f"{i // 2:05d}_{i % 2}.jpg"), photo, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(80, 96))])
    done.touch()
    return out


def build_one(photos: Path, faces: int) -> dict:
    """The build on the first `faces` photos (faces / 2 identities), in this process."""
    from benchmarks.data import REPORT, build, build_seconds
    from benchmarks.train_cost import peak_rss
    from pipeline.core.config import load_params, section
    from pipeline.core.profiles import get_profile
    from pipeline.data.landmarks import DlibBackend
    from pipeline.data.sketch.draw import SketchStyle
    from pipeline.data.sketch_report import SketchReportConfig
    from pipeline.data.sketches import SketchesConfig

    params = load_params()
    res = get_profile(params.get("profile", "small")).resolution
    s = section(params, "sketches")
    sketch_cfg = SketchesConfig(seed=s["seed"], device="cpu", batch_size=s["batch_size"], style=SketchStyle(**s["style"]))
    report_cfg = SketchReportConfig(**{**section(params, "sketch_report"), "faces": 4})
    detect_side = int(section(params, "landmarks").get("detect_side", 512))
    idle = peak_rss()
    t, n = build(photos, faces // 2, res, sketch_cfg, report_cfg, detect_side, None, DlibBackend())
    return {"faces": faces, "accepted": n, "stages": {k: v[0] for k, v in t.items() if k != REPORT},
            "build_s": build_seconds(t), "peak_bytes": peak_rss(), "idle_bytes": idle}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--faces", default="1000,4000")
    ap.add_argument("--photos", type=Path, default=Path("/tmp/dfe-scale"), help="where the made photos go")
    ap.add_argument("--london", type=Path, default=Path(os.environ.get("DFE_LONDON_DIR", "../shared/datasets/london-faces")))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    os.environ["DFE_NO_PROGRESS"] = "1"
    if args.child:
        print(json.dumps(build_one(args.photos, int(args.child))))
        return
    sizes = sorted(int(f) for f in args.faces.split(","))
    make_photos(args.london, args.photos, max(sizes))
    rows = []
    for n in sizes:
        done = subprocess.run([sys.executable, "-m", "benchmarks.scale", "--photos", str(args.photos), "--child", str(n)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"the build at {n} faces failed:\n{done.stderr[-3000:]}")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"{n} faces: {r['build_s']:.0f} s, {r['accepted'] / r['build_s']:.1f} faces/s, "
              f"peak {r['peak_bytes'] / 1e9:.2f} GB", flush=True)
    stages = list(rows[0]["stages"])
    print(f"\n{'faces':>6} {'accepted':>9} " + " ".join(f"{s[:10]:>10}" for s in stages)
          + f" {'build s':>8} {'faces/s':>8} {'ms/face':>8} {'peak GB':>8}")
    for r in rows:
        print(f"{r['faces']:>6} {r['accepted']:>9} " + " ".join(f"{r['accepted'] / max(r['stages'][s], 1e-9):>10.1f}" for s in stages)
              + f" {r['build_s']:>8.0f} {r['accepted'] / r['build_s']:>8.1f} {1000 * r['build_s'] / r['accepted']:>8.1f}"
              f" {r['peak_bytes'] / 1e9:>8.2f}")
    print("(stage columns: faces/s)")
    per_face = [r["build_s"] / r["accepted"] for r in rows]
    spread = max(per_face) / min(per_face) - 1
    mem = rows[-1]["peak_bytes"] / rows[0]["peak_bytes"]
    print(f"time per face: {min(per_face) * 1000:.1f}-{max(per_face) * 1000:.1f} ms, spread {spread:.0%} "
          f"(bar {TIME_BAR:.0%}) {'PASS' if spread <= TIME_BAR else 'FAIL'}")
    print(f"peak memory {rows[-1]['faces']} / {rows[0]['faces']} faces: {mem:.2f}x (bar {MEMORY_BAR}x) "
          f"{'PASS' if mem <= MEMORY_BAR else 'FAIL'}")


if __name__ == "__main__":
    main()

"""How the val figures move with the number of training people (README: "More people").

    python notebooks/data_size.py run 18 36          # train the default pipeline on 18 and on 36 people
    python notebooks/data_size.py run 0              # 0 = every train person (72 on London): the
                                                     #   workspace's own models, evaluated on val
    python notebooks/data_size.py plot               # reports/data_size.{csv,png} from what ran

`run N` clones this repository's HEAD into `--workdir`/N (sharing this DVC cache, so the data
stages come from it), trains the four stages there with `dvc exp run -S
split.train_identities=N` (same steps, same val and test people; the other train people are
marked unused) and evaluates the models on the **val** split (`dfe evaluate --split val`) into
outputs/data_size/val_N.json. Each size costs a whole training run (about 27 min on 2 Xeon
cores with bf16). `plot` reads those files and writes the headline figures per size, beside
their nulls and with binomial standard errors where a figure is a rate over val faces, to
reports/data_size.csv (committed) and reports/data_size.png (one panel per figure, the null dashed);
`dvc plots show` draws the same from dvc.yaml's `plots`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from pipeline.core.io import save_csv

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "outputs" / "data_size"
TRAIN_STAGES = ("train_sketch_ae", "train_image_encoder", "train_local", "train_fusion")

# (key in reports/data_size.json, label, path in the evaluate metrics, null's path or None, rate?)
FIGURES = (
    ("recon_same_person", "reconstruction: same person (dlib)", "identity.recon_same_person",
     "identity.null_mean_image_same_person", True),
    ("recon_over_mean_face", "reconstruction landmark error / mean face's", "ratios.recon_over_mean_face", None, False),
    ("swap_over_ignores_geometry", "swap landmark error / 'ignores geometry'", "ratios.swap_over_ignores_geometry",
     None, False),
    ("decoded_sketch_f", "decoded-sketch F", "sketch.decoded_fscore", "sketch.null_mean_sketch_fscore", False),
    ("drawing_over_own", "line drawing: error to drawn / to own", "ratios.drawing_over_own", None, False),
    # beside the five: the reconstruction's PSNR and how often a swap takes the donor's colours
    ("recon_psnr", "reconstruction PSNR (dB)", "recon.psnr", "recon.null_mean_image_psnr", False),
    ("swap_colour_follows", "swap colour follows the appearance photo", "lab.swap_follows_appearance", None, True),
)


def _get(d: dict, path: str):
    for k in path.split("."):
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=cwd, env=env, check=True)


def run_size(n: int, workdir: Path) -> Path:
    """Train on `n` people (0 = all, the workspace's models) and evaluate on val; the metrics path."""
    OUT.mkdir(parents=True, exist_ok=True)
    out = OUT / f"val_{n}.json"
    env = dict(os.environ)
    if n == 0:
        _run(["dfe", "evaluate", "--split", "val", "--metrics", str(out), "--plots", str(OUT / "plots_0")], ROOT, env)
        return out
    clone = workdir / str(n)
    if not clone.exists():
        _run(["git", "clone", "-q", str(ROOT), str(clone)], workdir, env)
        _run(["dvc", "cache", "dir", "--local", str(ROOT / ".dvc" / "cache")], clone, env)
        _run(["dvc", "checkout", "--quiet"], clone, env)
    env["PYTHONPATH"] = str(clone)  # the clone's code, not this workspace's editable install
    _run(["dvc", "exp", "run", "-n", f"people{n}", "-S", f"split.train_identities={n}", *TRAIN_STAGES], clone, env)
    _run(["dfe", "evaluate", "--split", "val", "--metrics", str(out), "--plots", str(OUT / f"plots_{n}")], clone, env)
    return out


def people(n: int) -> int:
    """Train people behind a val_N.json: N, or (0) every train person of the workspace's split."""
    if n:
        return n
    import pandas as pd

    split = pd.read_csv(ROOT / "data" / "split" / "split.csv")
    return int(split.loc[split["split"] == "train", "identity"].nunique())


def plot(reports: Path) -> list[dict]:
    rows = []
    for path in sorted(OUT.glob("val_*.json")):
        n = int(path.stem.split("_")[1])
        m = json.loads(path.read_text())
        faces = int(m.get("n_test") or 0)  # the split evaluated (val here)
        row = {"people": people(n), "val_faces": faces}
        for key, _, where, null, rate in FIGURES:
            v = _get(m, where)
            row[key] = None if v is None else float(v)
            n = int(m.get("n_swaps") or 0) if key.startswith("swap") else faces  # a rate over swaps or over faces
            if rate and v is not None and n:
                row[f"{key}_se"] = float((v * (1 - v) / n) ** 0.5)
            if null:
                nv = _get(m, null)
                row[f"{key}_null"] = None if nv is None else float(nv)
        rows.append(row)
    if not rows:
        sys.exit(f"no {OUT}/val_*.json yet: run `python notebooks/data_size.py run 18 36 0` first")
    rows.sort(key=lambda r: r["people"])
    import pandas as pd

    from pipeline.core.io import save_png

    table = pd.DataFrame(rows)
    save_csv(reports / "data_size.csv", table)
    save_png(reports / "data_size.png", chart(rows))
    print(table.round(4).to_string(index=False))
    print(f"wrote {reports / 'data_size.csv'} and {reports / 'data_size.png'} "
          "(also: dvc plots show, declared in dvc.yaml)")
    return rows


def chart(rows: list[dict], w: int = 300, h: int = 230) -> np.ndarray:
    """One small panel per figure: the model's value per number of people (with its standard
    error where it has one) and the null as a dashed grey line. OpenCV only: no plotting library
    for five little line charts."""
    import cv2

    panels = []
    xs = [r["people"] for r in rows]
    for key, label, _, null, _ in FIGURES:
        img = np.full((h, w, 3), 255, np.uint8)
        ys = [r[key] for r in rows]
        se = [r.get(f"{key}_se", 0.0) for r in rows]
        lo_hi = [(max(0.0, y - e), y + e) if e else (y, y) for y, e in zip(ys, se)]  # rates: not below 0
        nulls = [r.get(f"{key}_null") for r in rows] if null else []
        vals = [v for pair in lo_hi for v in pair] + [v for v in nulls if v is not None]
        lo, hi = min(vals), max(vals)
        pad = (hi - lo) * 0.15 or 0.05
        lo, hi = lo - pad, hi + pad
        x0, x1, y0, y1 = 50, w - 15, h - 35, 30

        def at(x: float, y: float) -> tuple[int, int]:
            fx = 0.5 if len(xs) == 1 else (x - min(xs)) / (max(xs) - min(xs))
            return int(x0 + fx * (x1 - x0)), int(y0 + (y - lo) / (hi - lo) * (y1 - y0))

        cv2.rectangle(img, (x0, y1), (x1, y0), (200, 200, 200), 1)
        for t in (lo + pad, hi - pad):
            cv2.putText(img, f"{t:.3f}", (2, at(xs[0], t)[1] + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (90, 90, 90), 1,
                        cv2.LINE_AA)
        for x in xs:
            cv2.putText(img, str(x), (at(x, lo)[0] - 8, h - 18), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (60, 60, 60), 1,
                        cv2.LINE_AA)
        if nulls and all(v is not None for v in nulls):  # dashed, through each run's own null
            ends = [at(x, v) for x, v in zip(xs, nulls)] if len(xs) > 1 else [(x0, at(xs[0], nulls[0])[1]),
                                                                              (x1, at(xs[0], nulls[0])[1])]
            for pa, pb in zip(ends, ends[1:]):
                length = max(1.0, float(np.hypot(pb[0] - pa[0], pb[1] - pa[1])))
                for t in np.arange(0.0, length, 8.0):
                    a, b = t / length, min(1.0, (t + 4) / length)
                    cv2.line(img, (int(pa[0] + a * (pb[0] - pa[0])), int(pa[1] + a * (pb[1] - pa[1]))),
                             (int(pa[0] + b * (pb[0] - pa[0])), int(pa[1] + b * (pb[1] - pa[1]))), (150, 150, 150), 1)
        pts = [at(x, y) for x, y in zip(xs, ys)]
        for (x, (a, b)) in zip(xs, lo_hi):
            cv2.line(img, at(x, a), at(x, b), (200, 120, 40), 1, cv2.LINE_AA)
        for a, b in zip(pts, pts[1:]):
            cv2.line(img, a, b, (200, 90, 20), 2, cv2.LINE_AA)
        for p in pts:
            cv2.circle(img, p, 4, (200, 90, 20), -1, cv2.LINE_AA)
        cv2.putText(img, label[:44], (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(img, "training people", (w // 2 - 45, h - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (60, 60, 60), 1,
                    cv2.LINE_AA)
        panels.append(img)
    return np.concatenate(panels, axis=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="train on N people and evaluate on val")
    r.add_argument("sizes", type=int, nargs="+")
    r.add_argument("--workdir", type=Path, default=Path("/tmp/dfe_data_size"))
    sub.add_parser("plot", help="reports/data_size.{csv,png}")
    args = ap.parse_args()
    if args.cmd == "run":
        args.workdir.mkdir(parents=True, exist_ok=True)
        for n in args.sizes:
            print(f"{n} people -> {run_size(n, args.workdir)}", flush=True)
    else:
        plot(ROOT / "reports")


if __name__ == "__main__":
    main()

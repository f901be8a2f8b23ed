"""How the val figures move with the number of training people (README: "More people").

    python notebooks/data_size.py run 18 36          # train the default pipeline on 18 and on 36 people
    python notebooks/data_size.py run 0              # 0 = every train person (72 on London): the
                                                     #   workspace's own models, evaluated on val
    python notebooks/data_size.py plot               # reports/data_size.csv from what ran

`run N` clones this repository's HEAD into `--workdir`/N (sharing this DVC cache, so the data
stages come from it), trains the four stages there with `dvc exp run -S
split.train_identities=N` (same steps, same val and test people; the other train people are
marked unused) and evaluates the models on the **val** split (`dfe evaluate --split val`) into
outputs/data_size/val_N.json. Each size costs a whole training run (about 27 min on 2 Xeon
cores with bf16). `plot` reads those files and writes the headline figures per size, beside
their nulls and with binomial standard errors where a figure is a rate over val faces, to
reports/data_size.csv (committed; `dvc plots show reports/data_size.csv` draws it, dvc.yaml
declares the plot).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

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


def people(metrics_path: Path, n: int) -> int:
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
        row = {"people": people(path, n), "val_faces": faces}
        for key, _, where, null, rate in FIGURES:
            v = _get(m, where)
            row[key] = None if v is None else float(v)
            if rate and v is not None and faces:
                row[f"{key}_se"] = float((v * (1 - v) / faces) ** 0.5)
            if null:
                nv = _get(m, null)
                row[f"{key}_null"] = None if nv is None else float(nv)
        rows.append(row)
    if not rows:
        sys.exit(f"no {OUT}/val_*.json yet: run `python notebooks/data_size.py run 18 36 0` first")
    rows.sort(key=lambda r: r["people"])
    import pandas as pd

    table = pd.DataFrame(rows)
    save_csv(reports / "data_size.csv", table)
    print(table.round(4).to_string(index=False))
    print(f"wrote {reports / 'data_size.csv'}; the picture: dvc plots show reports/data_size.csv (dvc.yaml `plots`)")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="train on N people and evaluate on val")
    r.add_argument("sizes", type=int, nargs="+")
    r.add_argument("--workdir", type=Path, default=Path("/tmp/dfe_data_size"))
    sub.add_parser("plot", help="reports/data_size.csv")
    args = ap.parse_args()
    if args.cmd == "run":
        args.workdir.mkdir(parents=True, exist_ok=True)
        for n in args.sizes:
            print(f"{n} people -> {run_size(n, args.workdir)}", flush=True)
    else:
        plot(ROOT / "reports")


if __name__ == "__main__":
    main()

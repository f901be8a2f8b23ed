"""Does colour normalisation in and back out (pipeline/editing/colour_norm.py) carry a photo's
light better than the trained networks alone? Measured on the **val** faces, clean and shifted.

    python notebooks/colour_norm_val.py --models models --out outputs/colour_norm --k 0,1,2

Writes <out>/plain.json and <out>/k<K>.json (evaluate's metrics on val, the same models
without and with the wrapper, photos moved into the training faces' mean +- K std; K = 0 moves
every photo to the mean) and prints them side by side beside their nulls. The range comes from
the training faces (data/components/train/bg_photo.npy), as the `colour_range` stage makes it.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="models")
    ap.add_argument("--out", default="outputs/colour_norm")
    ap.add_argument("--k", default="0,2", help="comma-separated range widths to try")
    args = ap.parse_args()

    import numpy as np

    from pipeline.core.io import load_npy
    from pipeline.core.profiles import get_profile
    from pipeline.evaluation.evaluate import EvalConfig, compare_table_markdown, evaluate, shifted_table_markdown
    from pipeline.editing.colour_norm import ColourNormalised, colour_range
    from pipeline.models.editor import load_editor
    from stages.common import config_from

    out = Path(args.out)
    cfg = config_from("evaluate", EvalConfig, split="val", models_dir=args.models)
    editor = load_editor(args.models, get_profile(cfg.profile), "cpu")
    train = np.asarray(load_npy(Path(cfg.components) / "train" / "bg_photo.npy"))
    editors = {"plain": editor}
    for k in (float(v) for v in args.k.split(",")):
        r = colour_range(train, k)
        editors[f"k{k:g}"] = ColourNormalised(editor, r["low"], r["high"])
    runs = {}
    for name, ed in editors.items():
        runs[name] = evaluate(replace(cfg, metrics_path=str(out / f"{name}.json"), plots_dir=str(out / name)), editor=ed)
        print(f"{name}: done", flush=True)
    print(compare_table_markdown(runs))
    for name, m in runs.items():
        print(f"\n{name}\n" + shifted_table_markdown(m))
    (out / "runs.json").write_text(json.dumps({"models": args.models, "k": args.k}))


if __name__ == "__main__":
    main()

"""Does colour normalisation in and back out (pipeline/editing/colour_norm.py) carry a photo's
light better than the trained networks alone? Measured on the **val** faces, clean and shifted.

    python notebooks/colour_norm_val.py --models models --out outputs/colour_norm --k 0,1,2
    python notebooks/colour_norm_val.py --k 1,1/none,1/1/2 --skip-plain    # spreads left alone; a trigger

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
    ap.add_argument("--k", default="0,2", help="comma-separated range widths to try: K (means and spreads), "
                                               "K/KS (spreads at KS; KS 'none': spreads never moved) or K/KS/T "
                                               "(moved only once a statistic leaves mean +- T std)")
    ap.add_argument("--skip-plain", action="store_true", help="do not evaluate the models without the wrapper")
    ap.add_argument("--geometry-plain", action="store_true", help="the geometry encoder sees the photo unmoved")
    ap.add_argument("--region", default="auto", choices=("auto", "face", "all"), help="where the move is made (ColourRangeConfig)")
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
    editors = {} if args.skip_plain else {"plain": editor}
    for spec in args.k.split(","):
        k, ks, trigger = (spec.split("/") + [None, None])[:3]
        spread = float(k) if ks is None else None if ks == "none" else float(ks)
        r = colour_range(train, float(k), spread, None if trigger is None else float(trigger), args.region)
        editors[f"k{spec.replace('/', '_')}_{args.region}{'_geometry_plain' if args.geometry_plain else ''}"] = ColourNormalised(
            editor, r["low"], r["high"], r.get("trigger_low"), r.get("trigger_high"), args.region,
            move_geometry=not args.geometry_plain)
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

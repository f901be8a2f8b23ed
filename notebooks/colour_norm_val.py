"""Does colour normalisation in and back out (pipeline/editing/colour_norm.py) carry a photo's
light better than the trained networks alone? Measured on the **val** faces, clean and shifted.

    python notebooks/colour_norm_val.py --models models --out outputs/colour_norm

Writes <out>/plain.json and <out>/normalised.json (evaluate's metrics on val, the same
models with and without the wrapper) and prints them side by side beside their nulls. The
canonical statistics are the training faces' mean (data/components/train/bg_photo.npy).
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
    args = ap.parse_args()

    import numpy as np

    from pipeline.core.io import load_npy
    from pipeline.core.profiles import get_profile
    from pipeline.evaluation.evaluate import EvalConfig, compare_table_markdown, evaluate, shifted_table_markdown
    from pipeline.editing.colour_norm import ColourNormalised, canonical_stats
    from pipeline.models.editor import load_editor
    from stages.common import config_from

    out = Path(args.out)
    cfg = config_from("evaluate", EvalConfig, split="val", models_dir=args.models)
    editor = load_editor(args.models, get_profile(cfg.profile), "cpu")
    canonical = canonical_stats(np.asarray(load_npy(Path(cfg.components) / "train" / "bg_photo.npy")))
    runs = {}
    for name, ed in (("plain", editor), ("normalised", ColourNormalised(editor, canonical))):
        runs[name] = evaluate(replace(cfg, metrics_path=str(out / f"{name}.json"), plots_dir=str(out / name)), editor=ed)
    print(compare_table_markdown(runs))
    for name, m in runs.items():
        print(f"\n{name}\n" + shifted_table_markdown(m))
    (out / "canonical.json").write_text(json.dumps({"lab_mean_std": canonical.round(3).tolist()}))


if __name__ == "__main__":
    main()

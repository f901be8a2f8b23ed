"""Choose the composition's settings (params.yaml `edit.compose`) on the **val** faces.

    python notebooks/tune_compose.py                                  # the current settings
    python notebooks/tune_compose.py --try stroke_reach=0.05,0.12 --try lightness=0.3,1.0

Each `--try KEY=V1,V2` varies one ComposeSettings field from the current params (one at a
time, not a grid). Every candidate runs the evaluate stage's edit figures (evaluation.edits:
local redraws of mouth, eyes, nose and jaw; appearance swaps; new drawings) on the val split
with the trained models in `--models`, and prints one row per candidate; the rows are also
appended to outputs/tune_compose.jsonl. Test faces are never looked at here.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, replace
from pathlib import Path

COLUMNS = (("follows (feature/own)", "local.compose.pooled.feature_over_own"),
           ("same person", "local.compose.pooled.same_person"),
           ("PSNR outside", "local.compose.pooled.psnr_outside"),
           ("others moved", "local.compose.pooled.others_to_own"),
           ("swap colour follows", "swap.compose.follows_appearance"),
           ("swap same person", "swap.compose.same_person_geometry"),
           ("drawing: to drawn/own", "drawing.compose.drawn_over_own"))


def _get(d: dict, path: str) -> float:
    for k in path.split("."):
        d = d[k]
    return float(d)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="models")
    ap.add_argument("--try", dest="tries", action="append", default=[], help="FIELD=V1,V2,... (repeatable)")
    ap.add_argument("--max-faces", type=int, default=0)
    args = ap.parse_args()

    import torch

    from pipeline.core.profiles import get_profile
    from pipeline.data.landmarks import DlibBackend
    from pipeline.evaluation.edits import edit_figures, photo_faces
    from pipeline.evaluation.evaluate import (EvalConfig, _compose_settings, _editable_style, _source_rows,
                                              load_test_set)
    from pipeline.evaluation.metrics import DlibFaceEmbedder
    from pipeline.models.editor import load_editor
    from stages.common import config_from

    torch.set_num_threads(1)
    cfg = config_from("evaluate", EvalConfig, split="val", max_faces=args.max_faces, models_dir=args.models)
    profile = get_profile(cfg.profile)
    editor = load_editor(cfg.models_dir, profile, "cpu")
    data = load_test_set(cfg, profile.resolution, split="val")
    photos, scale = photo_faces(cfg.aligned, _source_rows(cfg, "val"), data.faces, cfg.photo_side)
    dlib, embedder = DlibBackend(upsample=cfg.landmark_upsample), DlibFaceEmbedder()
    base = _compose_settings()
    candidates = [("current", base)]
    for spec in args.tries:
        key, _, values = spec.partition("=")
        for v in values.split(","):
            kind = type(getattr(base, key))
            value = v.lower() in ("1", "true", "yes") if kind is bool else kind(v)
            candidates.append((f"{key}={v}", replace(base, **{key: value})))
    print("| candidate | " + " | ".join(c for c, _ in COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    out = Path("outputs/tune_compose.jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)
    for name, settings in candidates:
        m, _ = edit_figures(editor, data.faces, data.landmarks, data.identities, photos, scale, _editable_style(),
                            dlib, embedder, torch.device("cpu"), settings, cfg.batch_size)
        print(f"| {name} | " + " | ".join(f"{_get(m, p):.3f}" for _, p in COLUMNS) + " |", flush=True)
        with open(out, "a") as f:
            f.write(json.dumps({"candidate": name, "settings": asdict(settings), "models": args.models,
                                **{c: _get(m, p) for c, p in COLUMNS}}) + "\n")


if __name__ == "__main__":
    main()
